"""Writes a running turn's answer to the database as it grows, off the path of the deltas.

`begin` stores the user message and an empty 'streaming' answer (beside the upstream call,
never before the first delta); then, at most once per flush interval, the text new since
the last flush is appended to that row. A process killed mid-answer so leaves the question
and the answer up to the last flush behind, and other replicas can follow the answer.
The turn's commit makes the row final; the writer only has to stop before it.
"""

from __future__ import annotations

import asyncio
import logging

from chatms.domain.budget import message_tokens
from chatms.domain.errors import ChatError
from chatms.domain.model import Chat, PendingTurn
from chatms.domain.progress import AnswerLog
from chatms.service.ports import ChatRepository, Lease, TokenCounter

log = logging.getLogger("chatms.turns")


class AnswerWriter:
    def __init__(
        self,
        repo: ChatRepository,
        counter: TokenCounter,
        chat: Chat,
        turn: PendingTurn,
        lease: Lease,
        answer: AnswerLog,
        interval: float,
    ) -> None:
        self._repo = repo
        self._counter = counter
        self._chat = chat
        self._turn = turn
        self._lease = lease
        self._answer = answer
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.begun = False
        self.flushed = 0  # the position up to which the database has the answer
        self._tokens = 0
        self.writes = 0

    def start(self, create: bool) -> None:
        """Begin now (beside the upstream call), then flush until `close`."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._run(create))

    async def _run(self, create: bool) -> None:
        try:
            await self._begin(create)
            while self.begun:
                try:
                    async with asyncio.timeout(self._interval):
                        await self._stopping.wait()
                    return
                except TimeoutError:
                    pass
                if self._answer.length > self.flushed:
                    await self._flush()
        except ChatError as exc:  # the database is away: the commit stores the turn whole
            log.warning("answer of chat %s not flushed: %s", self._chat.id, exc)
        except Exception as exc:  # never the text: driver errors may quote it
            log.error("answer of chat %s not flushed: %s", self._chat.id, type(exc).__name__)

    async def _begin(self, create: bool) -> None:
        self.writes += 1
        self.begun = await self._repo.begin(self._chat, self._turn, self._lease, create)

    async def _flush(self) -> None:
        start, end = self.flushed, self._answer.length
        text = self._answer.after(start)
        # A running estimate for the context budget of a cut answer (tokens of pieces add
        # up to at least the whole's); the commit stores the exact count.
        self._tokens += self._counter.count(text)
        self.writes += 1
        if await self._repo.flush(self._chat.id, self._lease, self._turn.user.seq + 1, start,
                                  text, message_tokens(self._tokens)):
            self.flushed = end
        else:
            self.begun = False  # the lease is gone: nothing more will land

    async def close(self) -> None:
        """Stop flushing; returns once no write of ours is in flight."""
        self._stopping.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def ensure_begun(self, create: bool) -> None:
        """Before the commit of a new chat: its row must exist (begin may have failed)."""
        await self.close()
        if create and not self.begun:
            await self._begin(create)
