"""Running answers are flushed together: one write per interval for every answer of the process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest

from chatms.config import TurnSettings
from chatms.domain.errors import Unavailable
from chatms.service.chats import ChatService
from chatms.service.ports import Progress
from tests.fakes.memory import MemoryChatRepository, Reply, ScriptedUpstream, WordCounter
from tests.service.conftest import MODEL

SLOW = Reply([f" w{i}" for i in range(12)], gap=0.02)  # about a quarter of a second


class RecordingRepository(MemoryChatRepository):
    """Keeps each flush's size; `failures` flushes fail first; `gate` holds flushes back."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []
        self.failures = 0
        self.gate: asyncio.Event | None = None
        self.flushing = asyncio.Event()

    async def flush(self, progress: Sequence[Progress]) -> set[int]:
        self.batches.append(len(progress))
        self.flushing.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise Unavailable("database unavailable; please retry")
        return await super().flush(progress)


def service(repo: RecordingRepository, flush_ms: int = 20) -> ChatService:
    return ChatService(repo, ScriptedUpstream(SLOW), WordCounter(), MODEL,
                       TurnSettings(stream_flush_ms=flush_ms))


async def whole_turn(chats: ChatService, user: str) -> str:
    async with chats.turn(user, None, "go on", "test") as turn:
        async for _ in turn:
            pass
    return turn.chat_id


async def test_answers_running_together_share_each_write() -> None:
    repo = RecordingRepository()
    chats = service(repo)
    ids = await asyncio.gather(*(whole_turn(chats, f"u{i}") for i in range(4)))
    assert max(repo.batches) >= 2  # one statement carried several answers
    assert sum(repo.batches) > len(repo.batches)
    for chat_id in ids:  # each stored whole, whatever was flushed before
        assert repo.chats[chat_id].messages[-1].content == "".join(SLOW.deltas)
    assert len(chats.background) == 0  # the flusher stops once nothing is written


async def test_a_failed_flush_is_tried_again_and_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    repo = RecordingRepository()
    repo.failures = 3
    chats = service(repo)
    with caplog.at_level(logging.INFO, "chatms.turns"):
        async with chats.turn("ann", None, "go on", "test") as turn:
            seen = ""
            async for delta in turn:
                seen += delta
                stored = repo.chats.get(turn.chat_id)
                if stored is not None and stored.messages[-1].content and not repo.failures:
                    break  # a flush landed after the failures: the answer is being written
    assert len(repo.batches) >= 4
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["answers not flushed, trying again: database unavailable; please retry"]
    assert "answers flushed again" in caplog.text
    assert seen  # the turn went on meanwhile


async def test_the_commit_waits_for_a_flush_in_flight() -> None:
    repo = RecordingRepository()
    repo.gate = asyncio.Event()
    chats = service(repo)
    turn_done = asyncio.create_task(whole_turn(chats, "ann"))
    await asyncio.wait_for(repo.flushing.wait(), 5)
    await asyncio.sleep(0.4)  # the answer has ended; its commit waits for the flush
    assert not turn_done.done()
    repo.gate.set()
    chat_id = await asyncio.wait_for(turn_done, 5)
    answer = repo.chats[chat_id].messages[-1]
    assert (answer.content, answer.completion.value) == ("".join(SLOW.deltas), "complete")


async def test_the_flusher_starts_again_after_it_went_idle() -> None:
    repo = RecordingRepository()
    chats = service(repo)
    await whole_turn(chats, "ann")
    first = len(repo.batches)
    assert first >= 1 and len(chats.background) == 0
    await whole_turn(chats, "bob")
    assert len(repo.batches) > first


async def test_an_idle_flusher_ends_at_once_whatever_its_interval() -> None:
    repo = RecordingRepository()
    chats = service(repo, flush_ms=60_000)
    await whole_turn(chats, "ann")
    await asyncio.sleep(0.05)
    assert repo.batches == [] and len(chats.background) == 0
