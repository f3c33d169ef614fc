"""The pieces a turn is made of, each on its own: no database, no upstream, no door."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from chatms.domain.errors import Unavailable, UpstreamTimeout, UpstreamUnavailable
from chatms.domain.model import Completion, Usage
from chatms.service.answer import AnswerStream
from chatms.service.ending import completion_for
from chatms.service.lifecycle import Background, TurnGate
from chatms.service.ports import Finished, UpstreamEvent


class Upstream:
    """A scripted completion stream that records whether it was closed."""

    def __init__(self, *events: UpstreamEvent) -> None:
        self.events = events
        self.closed = False

    async def stream(self) -> AsyncGenerator[UpstreamEvent, None]:
        try:
            for event in self.events:
                yield event
        finally:
            self.closed = True


async def test_answer_stream_relays_deltas_and_keeps_how_it_ended() -> None:
    """Deltas pass through in order; the final event's reason and usage are kept, not relayed."""
    upstream = Upstream("Hel", "lo", Finished("stop", Usage(7, 2)))
    answer = AnswerStream(upstream.stream())
    assert [d async for d in answer] == ["Hel", "lo"]
    assert answer.content == "Hello" and answer.finish_reason == "stop"
    assert answer.usage == Usage(7, 2) and answer.first_delta_at is not None
    assert upstream.closed


async def test_first_delta_hook_runs_once_after_the_first_delta_went_out() -> None:
    """The hook (a new chat's insert) runs after the first delta was handed on, and once."""
    seen: list[str] = []
    answer = AnswerStream(Upstream("a", "b", "c").stream(), lambda: seen.append("hook"))
    async for delta in answer:
        seen.append(delta)
    assert seen == ["a", "hook", "b", "c"]


async def test_closing_the_answer_closes_the_upstream() -> None:
    """A client that leaves mid-answer closes the upstream request; the parts so far stay."""
    upstream = Upstream("a", "b", "c")
    answer = AnswerStream(upstream.stream())
    deltas = aiter(answer)
    assert await anext(deltas) == "a"
    await answer.aclose()
    assert upstream.closed and answer.content == "a" and answer.finish_reason is None


async def test_stop_ends_the_answer_cleanly_while_it_waits_for_the_upstream() -> None:
    """Stop cancels only the wait for the upstream: the answer ends as stopped, not failed."""
    gate = asyncio.Event()

    async def slow() -> AsyncGenerator[UpstreamEvent, None]:
        yield "a"
        await gate.wait()
        yield "never"

    answer = AnswerStream(slow())
    got: list[str] = []

    async def read() -> None:
        async for delta in answer:
            got.append(delta)

    reader = asyncio.ensure_future(read())
    await asyncio.sleep(0.01)
    answer.stop()
    await asyncio.wait_for(reader, 1)  # ends, and not with CancelledError
    assert got == ["a"] and answer.stopped and answer.content == "a"


async def test_stop_between_deltas_ends_after_the_delta_handed_on() -> None:
    answer = AnswerStream(Upstream("a", "b", "c").stream())
    got = []
    async for delta in answer:
        got.append(delta)
        answer.stop()
    assert got == ["a"] and answer.stopped


@pytest.mark.parametrize(
    ("exc", "accepting", "completion"),
    [
        (None, True, Completion.COMPLETE),
        (asyncio.CancelledError(), True, Completion.CANCELLED),
        (asyncio.CancelledError(), False, Completion.SHUTDOWN),
        (UpstreamTimeout("slow"), True, Completion.TIMEOUT),
        (TimeoutError(), True, Completion.TIMEOUT),
        (UpstreamUnavailable("down"), True, Completion.UPSTREAM_ERROR),
    ],
)
def test_completion_names_why_an_answer_ended(
    exc: BaseException | None, accepting: bool, completion: Completion
) -> None:
    """Each way an answer can end maps to the completion stored with it."""
    assert completion_for(exc, accepting) is completion


async def test_gate_counts_turns_and_closes_for_shutdown() -> None:
    """The gate counts turns per transport, reports idle, and refuses once closed."""
    gate = TurnGate()
    gate.started("grpc")
    assert gate.in_flight == 1 and gate.streaming["grpc"] == 1
    assert not await gate.wait_idle(0.01)
    gate.ended("grpc")
    assert await gate.wait_idle(0.01)
    gate.stop_accepting()
    with pytest.raises(Unavailable):
        gate.check_open()


async def test_background_drain_waits_then_cancels_what_is_left() -> None:
    """Shutdown waits for storing work within its grace, then cancels the rest."""
    background = Background()
    finished = asyncio.Event()

    async def quick() -> None:
        finished.set()

    async def stuck() -> None:
        await asyncio.Event().wait()

    background.spawn(quick())
    late = background.spawn(stuck())
    await background.drain(grace=0.05)
    await asyncio.gather(late, return_exceptions=True)
    assert finished.is_set() and late.cancelled() and len(background) == 0
