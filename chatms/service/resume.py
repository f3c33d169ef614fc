"""Resume a chat's latest answer from a position, and stop a running turn, from any replica.

The replica running the turn serves its own resumers from memory (`LiveAnswer`). Any
other replica reads the flushed answer from the database and follows the turn's NOTIFY
signals; a signal it missed (or one too long to carry its text) makes it read again, and
with no signal for a while it reads again anyway, which is how it notices that the turn's
process died: the lease lapsed, and the answer is marked interrupted.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable

from chatms.domain.errors import ChatNotFound, InvalidInput, Unavailable
from chatms.domain.model import Completion
from chatms.domain.progress import Follower, Gap
from chatms.service.live import LiveAnswers, Piece, StopOutcome
from chatms.service.ports import AnswerState, ChatRepository, Signal, TurnSignals

END = 2**31 - 1  # a position past any answer: asks for its length only


class Resumed:
    """The pieces of a resumed answer; `completion` is set once it is final."""

    def __init__(self) -> None:
        self.pieces: AsyncIterator[Piece] | None = None
        self.completion: Completion | None = None

    def __aiter__(self) -> AsyncIterator[Piece]:
        assert self.pieces is not None
        return self.pieces


class AnswerStreams:
    def __init__(
        self,
        repo: ChatRepository,
        live: LiveAnswers,
        signals: TurnSignals | None,
        poll_seconds: float = 3.0,
        stop_wait: float = 5.0,
    ) -> None:
        self.repo = repo
        self.live = live
        self.signals = signals
        self.poll_seconds = poll_seconds
        self.stop_wait = stop_wait

    async def resume(self, owner: str, chat_id: str, after: int) -> Resumed:
        """The latest answer past `after`; errors (unknown chat, no answer) come first."""
        if after < 0:
            raise InvalidInput("after must not be negative")
        local = self.live.get(chat_id, owner)
        resumed = Resumed()
        if local is not None:

            async def from_memory() -> AsyncIterator[Piece]:
                async for piece in local.follow(after):
                    yield piece
                resumed.completion = local.completion

            resumed.pieces = from_memory()
            return resumed
        inbox: deque[Signal] = deque()
        wake = asyncio.Event()

        def heard(signal: Signal) -> None:
            inbox.append(signal)
            wake.set()

        unwatch = self.signals.watch(chat_id, heard) if self.signals else (lambda: None)
        try:
            state = await self.repo.latest_answer(chat_id, owner, after)
            if state.seq is None:
                raise ChatNotFound()
            if state.completion is not Completion.STREAMING and after > state.length:
                raise InvalidInput(f"after is {after}; the answer has {state.length} characters")
        except BaseException:
            unwatch()
            raise
        resumed.pieces = self._follow(owner, chat_id, after, state, inbox, wake, unwatch,
                                      resumed)
        return resumed

    async def _follow(
        self, owner: str, chat_id: str, after: int, state: AnswerState,
        inbox: deque[Signal], wake: asyncio.Event, unwatch: Callable[[], None], out: Resumed,
    ) -> AsyncIterator[Piece]:
        follower, seq = Follower(after), state.seq
        try:
            while True:
                if state.rest and state.length > follower.position:
                    # rest is the stored text past the reader's position
                    yield Piece(follower.take(follower.position, state.rest), follower.position)
                if state.completion is not Completion.STREAMING:
                    out.completion = state.completion
                    return
                if not state.leased:  # the turn's process died
                    await self.repo.interrupt_lapsed(chat_id)
                    out.completion = Completion.INTERRUPTED
                    return
                reload = False
                while not reload:
                    if not inbox:
                        wake.clear()
                        try:
                            async with asyncio.timeout(self.poll_seconds):
                                await wake.wait()
                        except TimeoutError:
                            break
                    while inbox and not reload:
                        signal = inbox.popleft()
                        if signal.kind == "progress" and signal.text is not None:
                            try:
                                text = follower.take(signal.start, signal.text)
                            except Gap:
                                reload = True
                                continue
                            if text:
                                yield Piece(text, follower.position)
                        else:
                            reload = True
                state = await self.repo.latest_answer(chat_id, owner, follower.position, seq)
        finally:
            unwatch()

    async def stop(self, owner: str, chat_id: str) -> StopOutcome:
        """Stop the chat's running turn wherever it runs; a no-op when nothing runs."""
        local = self.live.get(chat_id, owner)
        if local is not None and local.completion is None:
            local.stop()
            try:
                async with asyncio.timeout(self.stop_wait):
                    completion = await local.ended()
            except TimeoutError:
                raise Unavailable("the turn did not stop in time; please retry") from None
            return StopOutcome(chat_id, completion is Completion.STOPPED, local.length)
        ended = asyncio.Event()
        unwatch = (self.signals.watch(chat_id, lambda signal: ended.set())
                   if self.signals else (lambda: None))
        try:
            if not await self.repo.signal_stop(chat_id, owner):
                return StopOutcome(chat_id, False)
            state = await self.repo.latest_answer(chat_id, owner, END)
            deadline = asyncio.get_running_loop().time() + self.stop_wait
            while state.completion is Completion.STREAMING and state.leased:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    raise Unavailable("the turn did not stop in time; please retry")
                ended.clear()
                try:
                    async with asyncio.timeout(min(left, 0.5)):
                        await ended.wait()
                except TimeoutError:
                    pass
                state = await self.repo.latest_answer(chat_id, owner, END, state.seq)
        finally:
            unwatch()
        return StopOutcome(chat_id, state.completion is Completion.STOPPED, state.length)
