"""PostgreSQL restarted under load: turns fail cleanly, the pool recovers, nothing is lost."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from chatms.builder import build_app
from chatms.config import load_settings
from tests.integration.grpc_client import chat_stream
from tests.support import OwnPostgres, base_env, fetch, new_user


@pytest.fixture
async def own_app(fake_openai):
    db = OwnPostgres()
    app = await build_app(load_settings(base_env(db.url, fake_openai.base_url,
                                                 DATABASE_ACQUIRE_TIMEOUT="1")))
    await app.start()
    try:
        yield app, db
    finally:
        await app.stop()
        db.close()


async def test_restart_under_load_loses_nothing_committed(own_app) -> None:
    """Turns that answered OK before, during and after a restart are all in the database."""
    app, db = own_app
    target = f"127.0.0.1:{app.settings.server.grpc_port}"
    user = new_user()
    chat_id = (await chat_stream(target, user, "first")).chat_id
    ok: list[str] = ["first"]
    failed: list[grpc.StatusCode] = []
    stop = asyncio.Event()

    async def load(worker: int) -> None:
        me, chat = new_user(), None
        for i in range(200):
            if stop.is_set():
                return
            text = f"w{worker}-{i}"
            result = await chat_stream(target, me, text, chat_id=chat, deadline=10)
            if result.code == grpc.StatusCode.OK:
                ok.append(text)
                chat = result.chat_id
            else:
                failed.append(result.code)
                await asyncio.sleep(0.05)

    workers = [asyncio.create_task(load(w)) for w in range(4)]
    await asyncio.sleep(0.5)
    await asyncio.to_thread(db.stop)
    during = await chat_stream(target, user, "while down", chat_id=chat_id, deadline=10)
    assert during.code == grpc.StatusCode.UNAVAILABLE, during.details
    await asyncio.sleep(0.5)
    await asyncio.to_thread(db.start)
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(*workers)

    after = await chat_stream(target, user, "after", chat_id=chat_id)
    assert after.code == grpc.StatusCode.OK, after.details  # the pool recovered by itself
    ok.append("after")
    # A chat whose last turn is still being stored in the background answers ABORTED (busy).
    assert failed and set(failed) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED}
    stored = {r["content"] for r in await fetch(
        db.url, "SELECT content FROM messages WHERE role = 'user'")}
    lost = [text for text in ok if text not in stored]
    assert lost == []
