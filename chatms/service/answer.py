"""The answer as it streams in: text deltas handed on, kept, and how the upstream ended it."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable

from chatms.domain.model import Usage
from chatms.service.ports import UpstreamEvent


class AnswerStream:
    """Iterate it for the text deltas; `parts`, `finish_reason` and `usage` say the rest.

    `on_first_delta` runs once, right after the first delta was handed on (so nothing stands
    between the upstream and the client's first token). `aclose` closes the upstream request.
    At `limit` characters the answer is cut: what fits is handed on, the upstream request is
    closed, the stream ends and `cut` is set.
    """

    def __init__(
        self,
        events: AsyncGenerator[UpstreamEvent, None],
        on_first_delta: Callable[[], None] | None = None,
        limit: int | None = None,
    ) -> None:
        self.parts: list[str] = []
        self.limit = limit
        self.cut = False
        self.finish_reason: str | None = None
        self.usage: Usage | None = None  # as reported by the upstream
        self.first_delta_at: float | None = None  # time.perf_counter()
        self._events = events
        self._on_first_delta = on_first_delta
        self._deltas = self._relay()

    def __aiter__(self) -> AsyncGenerator[str, None]:
        return self._deltas

    @property
    def content(self) -> str:
        """The answer so far."""
        return "".join(self.parts)

    async def aclose(self) -> None:
        await self._deltas.aclose()

    async def _relay(self) -> AsyncGenerator[str, None]:
        parts = self.parts
        events = self._events
        room: float = self.limit if self.limit is not None else float("inf")
        try:
            async for event in events:
                if isinstance(event, str):
                    room -= len(event)
                    if room < 0:
                        self.cut = True
                        event = event[: len(event) + int(room)]
                        if not event:
                            return
                    if not parts:
                        self.first_delta_at = time.perf_counter()
                    parts.append(event)
                    yield event
                    if self._on_first_delta is not None:
                        first, self._on_first_delta = self._on_first_delta, None
                        first()
                    if self.cut:
                        return  # closing `events` below closes the upstream request
                else:
                    self.finish_reason, self.usage = event.finish_reason, event.usage
        finally:
            await events.aclose()
