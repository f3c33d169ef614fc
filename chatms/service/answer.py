"""The answer as it streams in: text deltas handed on, kept, and how the upstream ended it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable

from chatms.domain.model import Usage
from chatms.domain.progress import AnswerLog
from chatms.service.ports import UpstreamEvent


class AnswerStream:
    """Iterate it for the text deltas; `answer`, `finish_reason` and `usage` say the rest.

    Each delta is appended to `answer` (a `LiveAnswer` when others follow it) before it is
    handed on. `on_first_delta` runs once, right after the first delta was handed on (so
    nothing stands between the upstream and the client's first token). `aclose` closes the
    upstream request. At `limit` characters the answer is cut: what fits is handed on, the
    upstream request is closed, the stream ends and `cut` is set. `stop` ends the answer
    early but cleanly, as the stop route asks, and sets `stopped`.
    """

    def __init__(
        self,
        events: AsyncGenerator[UpstreamEvent, None],
        on_first_delta: Callable[[], None] | None = None,
        limit: int | None = None,
        answer: AnswerLog | None = None,
    ) -> None:
        self.answer = answer if answer is not None else AnswerLog()
        self.deltas = 0
        self.limit = limit
        self.cut = False
        self.finish_reason: str | None = None
        self.usage: Usage | None = None  # as reported by the upstream
        self.first_delta_at: float | None = None  # time.perf_counter()
        self.stopped = False  # ended by `stop`, not by the upstream
        self._events = events
        self._on_first_delta = on_first_delta
        self._stop_asked = False
        # The task reading the upstream, while it waits for it: only there does `stop`
        # cancel it, so the cancellation cannot land anywhere else.
        self._waiting: asyncio.Task[object] | None = None
        self._deltas = self._relay()

    def __aiter__(self) -> AsyncGenerator[str, None]:
        return self._deltas

    @property
    def content(self) -> str:
        """The answer so far."""
        return self.answer.text()

    async def aclose(self) -> None:
        await self._deltas.aclose()

    def stop(self) -> None:
        """End the answer after what has been handed on; the upstream request is closed."""
        self._stop_asked = True
        if self._waiting is not None:
            self._waiting.cancel()

    async def _relay(self) -> AsyncGenerator[str, None]:
        answer, events = self.answer, self._events
        room: float = self.limit if self.limit is not None else float("inf")
        reader = asyncio.current_task()
        try:
            while not self._stop_asked:
                self._waiting = reader
                try:
                    event = await anext(events)
                except StopAsyncIteration:
                    break
                except asyncio.CancelledError:
                    # Our own stop, unless someone else cancelled the reader as well.
                    if not self._stop_asked or (reader is not None and reader.uncancel()):
                        raise
                    break
                finally:
                    self._waiting = None
                if isinstance(event, str):
                    room -= len(event)
                    if room < 0:
                        self.cut = True
                        event = event[: len(event) + int(room)]
                        if not event:
                            return
                    if not self.deltas:
                        self.first_delta_at = time.perf_counter()
                    self.deltas += 1
                    answer.append(event)
                    yield event
                    if self._on_first_delta is not None:
                        first, self._on_first_delta = self._on_first_delta, None
                        first()
                    if self.cut:
                        return  # closing `events` below closes the upstream request
                else:
                    self.finish_reason, self.usage = event.finish_reason, event.usage
            self.stopped = self._stop_asked
        finally:
            await events.aclose()
