"""A finished turn, whole or stopped, is freed by reference counting on every door: nothing
of it is left in a cycle for the collector's full passes (tests/garbage.py)."""

from __future__ import annotations

import grpc
import httpx

from tests.fakes.openai import FakeOpenAI, Script
from tests.garbage import cyclic_garbage, kinds
from tests.integration.grpc_client import chat_stream
from tests.integration.http_client import AUTH, chat_sse, client, fake_settled
from tests.integration.test_stop_and_resume import SLOW, sse_until
from tests.support import grpc_target, new_user


def upstream_responses(objects: list[object], fake: FakeOpenAI) -> int:
    """httpx responses from the fake upstream (the test's own client talks to chatms)."""
    return sum(
        1 for o in objects
        if isinstance(o, httpx.Response) and str(o.request.url).startswith(fake.base_url)
    )


async def test_finished_turns_leave_nothing_for_the_cyclic_collector(
    start_app, fake_openai: FakeOpenAI
) -> None:
    app = await start_app()
    user = new_user()
    async with client(app) as http:
        await chat_stream(grpc_target(app), user, "warm up")  # pools and caches made here
        with cyclic_garbage() as garbage:
            first = await chat_stream(grpc_target(app), user, "one")
            again = await chat_stream(grpc_target(app), user, "two", chat_id=first.chat_id)
            sse = await chat_sse(http, {"user_id": user, "user_message": "three"})
            whole = await http.post("/chat", headers=AUTH,
                                    json={"user_id": user, "user_message": "four"})
            fake_openai.queue(Script(pieces=SLOW, gap=0.1))  # stopped after two deltas
            chat_id, _, _, response = await sse_until(http, user, 2)
            stop = await http.post(f"/chats/{chat_id}/stop", headers=AUTH, json={"user_id": user})
            stopped = await response.rest()
            await response.aclose()
            await fake_settled(fake_openai)
    assert first.code == again.code == grpc.StatusCode.OK, (first.details, again.details)
    assert sse.status == whole.status_code == stop.status_code == 200
    assert '"completion": "stopped"' in stopped
    assert not kinds(garbage, "chatms.")
    assert upstream_responses(garbage, fake_openai) == 0
