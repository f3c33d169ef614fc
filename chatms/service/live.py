"""The answers of the turns running in this process, for local resumers and for stop.

The turn appends each delta to its `LiveAnswer` (O(1), and a wake-up only when someone
here follows it); a resumer in this process reads it at full granularity, merging what it
missed while it was behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from chatms.domain.model import Completion
from chatms.domain.progress import AnswerLog


def _nothing_to_stop() -> None:
    """A finished answer's stop."""


@dataclass(frozen=True, slots=True)
class Piece:
    """Text of an answer going out to a client, and the answer's length after it."""

    text: str
    position: int


class LiveAnswer(AnswerLog):
    """A running turn's answer: the text so far, who follows it, and how to stop it."""

    __slots__ = ("_changed", "_followers", "_stop", "chat_id", "completion", "owner")

    def __init__(self, chat_id: str, owner: str, stop: Callable[[], None]) -> None:
        super().__init__()
        self.chat_id = chat_id
        self.owner = owner
        self.completion: Completion | None = None  # set once the answer is final
        self._stop = stop
        self._followers = 0
        self._changed = asyncio.Event()

    def append(self, delta: str) -> int:
        position = AnswerLog.append(self, delta)
        if self._followers:
            self._wake()
        return position

    def finish(self, completion: Completion) -> None:
        self.completion = completion
        # Nothing is left to stop. Dropped, the callback (a method of the turn, which holds
        # this answer) no longer makes the turn a cycle that only the cyclic collector frees.
        self._stop = _nothing_to_stop
        self._wake()

    def stop(self) -> None:
        """Stop the turn: its answer so far is stored with completion `stopped`."""
        self._stop()

    async def ended(self) -> Completion:
        while self.completion is None:
            await self._next_change()
        return self.completion

    async def follow(self, after: int) -> AsyncIterator[Piece]:
        """The answer past `after`, merged while the reader is behind, until it is final."""
        position = after
        while True:
            if self.length > position:
                text = self.after(position)
                position = self.length
                yield Piece(text, position)
                continue
            if self.completion is not None:
                return
            await self._next_change()

    async def _next_change(self) -> None:
        self._followers += 1
        try:
            await self._changed.wait()
        finally:
            self._followers -= 1

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


@dataclass(frozen=True, slots=True)
class StopOutcome:
    chat_id: str
    stopped: bool  # False: nothing was running
    position: int = 0  # length of the stored partial answer


class LiveAnswers:
    """This process's running answers by chat id."""

    def __init__(self) -> None:
        self._by_chat: dict[str, LiveAnswer] = {}

    def add(self, answer: LiveAnswer) -> None:
        self._by_chat[answer.chat_id] = answer

    def remove(self, answer: LiveAnswer) -> None:
        if self._by_chat.get(answer.chat_id) is answer:
            del self._by_chat[answer.chat_id]

    def get(self, chat_id: str, owner: str) -> LiveAnswer | None:
        answer = self._by_chat.get(chat_id)
        return answer if answer is not None and answer.owner == owner else None

    def stop(self, chat_id: str) -> None:
        """A stop signal from any replica: stop the chat's turn if it runs here."""
        answer = self._by_chat.get(chat_id)
        if answer is not None:
            answer.stop()
