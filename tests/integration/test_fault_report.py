"""Runs the whole fault catalogue against one service and reports what survived."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from chatms.builder import build_app
from chatms.config import load_settings
from tests.fakes.openai import FakeOpenAI
from tests.fakes.twilio import ACCOUNT_SID, FakeTwilio
from tests.fakes.twilio import AUTH_TOKEN as TWILIO_TOKEN
from tests.integration.fault_catalogue import CATALOGUE, Env, Ledger
from tests.support import OwnPostgres, ServeProcess, base_env, fetch

REPORT: list[str] = []
MB = 1024 * 1024


@dataclass
class MemoryWatch:
    """Samples this process's resident memory on a thread (the service runs in it)."""

    start: int = 0
    peak: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.start = self.peak = psutil.Process().memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        process = psutil.Process()
        while not self.stop.wait(0.05):
            self.peak = max(self.peak, process.memory_info().rss)

    def growth_mb(self) -> int:
        self.stop.set()
        self._thread.join(5)
        return round((self.peak - self.start) / MB)


async def alive(http_url: str) -> bool:
    """The service still answers its liveness probe (a crash, or a stuck loop, would not)."""
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            return (await http.get(http_url + "/healthz")).status_code == 200
    except httpx.HTTPError:
        return False


async def test_fault_catalogue(
    fake_openai: FakeOpenAI, fake_twilio: FakeTwilio, tmp_path: Path
) -> None:
    """Every fault is survived, no accepted message is lost and no chat is read across users."""
    db = OwnPostgres()
    app = await build_app(load_settings(base_env(
        db.url, fake_openai.base_url, UPSTREAM_MAX_RETRIES="2", UPSTREAM_IDLE_TIMEOUT="0.5",
        DATABASE_ACQUIRE_TIMEOUT="1", BODY_TIMEOUT="2", TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=TWILIO_TOKEN, TWILIO_API_BASE_URL=fake_twilio.base_url,
        TWILIO_MESSAGING_BASE_URL=fake_twilio.messaging_base_url,
        WHATSAPP_MEDIA_TIMEOUT_SECONDS="1")))
    await app.start()

    async def restart_db() -> None:
        await asyncio.to_thread(db.stop)
        await asyncio.to_thread(db.start)

    async def rows(sender: str) -> list[Any]:
        return await fetch(db.url, "SELECT message_id AS message_sid, status FROM inbound_messages"
                           " WHERE sender = $1", sender)

    replicas: list[ServeProcess] = []

    def spawn() -> ServeProcess:
        """Another replica on the same database, a real process (to be killed)."""
        replica = ServeProcess(base_env(db.url, fake_openai.base_url),
                               tmp_path / f"replica-{len(replicas)}.log")
        replicas.append(replica)
        return replica.start()

    server = app.settings.server
    env = Env(f"127.0.0.1:{server.grpc_port}", f"http://127.0.0.1:{server.web_port}",
              fake_openai, fake_twilio, Ledger(), restart_db, rows, spawn=spawn, db_url=db.url)
    survived = []
    crashes = 0
    memory = MemoryWatch()
    try:
        for fault in CATALOGUE:
            fake_openai.reset()
            fake_twilio.reset()
            ok = await fault(env)
            if not await alive(env.http_url):
                crashes += 1
                ok = False
            env.ledger.outcomes[fault.__name__] = "survived" if ok else "FAILED"
            survived.append(ok)
        await app.chats.drain(grace=10)
        contents = [r["content"] for r in await fetch(
            db.url, "SELECT content FROM messages WHERE role = 'user'")]
        # A burst is stored as one message, its texts one per line.
        stored = set(contents) | {line for c in contents for line in c.split("\n")}
    finally:
        for replica in replicas:
            replica.kill()
        await app.stop()
        db.close()
    ledger = env.ledger
    lost = [text for text in ledger.accepted if text not in stored]
    REPORT.append(
        f"fault report: {len(CATALOGUE)} faults injected, {sum(survived)} survived, "
        f"{len(lost) + ledger.whatsapp_lost} messages lost, "
        f"{ledger.duplicated_answers} duplicated answers, {ledger.cross_user_reads} cross-user"
        f" reads, {crashes} crashes, peak memory growth {memory.growth_mb()} MB"
    )
    if "chat_free_s" in env.crash:
        REPORT.append(
            "crash report: kill -9 mid-answer kept both questions and the flushed partial,"
            f" marked interrupted; chats free again {env.crash['chat_free_s']:.1f} s after"
        )
    failed = [name for name, outcome in ledger.outcomes.items() if outcome != "survived"]
    assert failed == []
    assert lost == [] and ledger.whatsapp_lost == 0 and ledger.duplicated_answers == 0
    assert ledger.cross_user_reads == 0 and crashes == 0
