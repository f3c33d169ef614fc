"""Writes running turns' answers to the database as they grow, off the path of the deltas.

`AnswerWriter.start` stores the user message and an empty 'streaming' answer (beside the
upstream call, never before the first delta). Then the process's one `AnswerFlusher`, once
per flush interval, appends the text new since the last flush of every running answer to
its row, all of them in one statement: one write per interval, however many answers run.
A process killed mid-answer so leaves the question and the answer up to the last flush
behind, and other replicas can follow the answer. The turn's commit makes the row final;
the writer only has to leave the flusher before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from chatms.domain.budget import message_tokens
from chatms.domain.errors import ChatError
from chatms.domain.model import Chat, PendingTurn
from chatms.domain.progress import AnswerLog
from chatms.service.lifecycle import Background
from chatms.service.ports import ChatRepository, Lease, Progress, TokenCounter

log = logging.getLogger("chatms.turns")


class AnswerFlusher:
    """One per process: every `interval` seconds, what each running answer gained since its
    last flush, in one write. Runs only while some answer is being written."""

    def __init__(self, repo: ChatRepository, background: Background, interval: float) -> None:
        self._repo = repo
        self._background = background
        self._interval = interval
        self._writers: set[AnswerWriter] = set()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()  # set while no answer is being written
        self._in_flight: set[AnswerWriter] = set()
        self._landed = asyncio.Event()  # set while no write is in flight
        self._landed.set()
        self._failing = False

    def add(self, writer: AnswerWriter) -> None:
        self._writers.add(writer)
        self._idle.clear()
        if self._task is None or self._task.done():
            self._task = self._background.spawn(self._run())

    async def remove(self, writer: AnswerWriter) -> None:
        """Flush `writer` no more; returns once no write of its is in flight."""
        self._drop(writer)
        while writer in self._in_flight:
            await self._landed.wait()

    def _drop(self, writer: AnswerWriter) -> None:
        self._writers.discard(writer)
        if not self._writers:
            self._idle.set()  # so that the loop ends now, not an interval later

    async def _run(self) -> None:
        while self._writers:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._idle.wait()
            due = [w for w in self._writers if w.due]
            if due:
                await self._flush(due)

    async def _flush(self, due: list[AnswerWriter]) -> None:
        progress = [writer.progress() for writer in due]
        self._in_flight = set(due)
        self._landed.clear()
        try:
            landed = await self._repo.flush(progress)
        except Exception as exc:  # tried again next time (a flush can be sent again)
            if not self._failing:  # once per outage; never the text: errors may quote it
                reason = str(exc) if isinstance(exc, ChatError) else type(exc).__name__
                log.warning("answers not flushed, trying again: %s", reason)
            self._failing = True
            return
        finally:
            self._in_flight = set()
            self._landed.set()
        if self._failing:
            log.info("answers flushed again")
            self._failing = False
        for i, (writer, item) in enumerate(zip(due, progress, strict=True)):
            if i in landed:
                writer.flushed_to(item)
            else:  # its lease is gone, or its answer final: nothing more of it will land
                self._drop(writer)


class AnswerWriter:
    def __init__(
        self,
        repo: ChatRepository,
        flusher: AnswerFlusher,
        counter: TokenCounter,
        chat: Chat,
        turn: PendingTurn,
        lease: Lease,
        answer: AnswerLog,
    ) -> None:
        self._repo = repo
        self._flusher = flusher
        self._counter = counter
        self._chat = chat
        self._turn = turn
        self._lease = lease
        self._answer = answer
        self._task: asyncio.Task[None] | None = None
        self.begun = False
        self.flushed = 0  # the position up to which the database has the answer
        self._tokens = 0  # counted in the text flushed so far
        self._counting = 0  # the same, once the flush in flight lands

    def start(self, create: bool) -> None:
        """Begin now (beside the upstream call), then be flushed until `close`."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._run(create))

    async def _run(self, create: bool) -> None:
        try:
            await self._begin(create)
        except ChatError as exc:  # the database is away: the commit stores the turn whole
            log.warning("answer of chat %s not begun: %s", self._chat.id, exc)
        except Exception as exc:  # never the text: driver errors may quote it
            log.error("answer of chat %s not begun: %s", self._chat.id, type(exc).__name__)
        else:
            if self.begun:
                self._flusher.add(self)

    async def _begin(self, create: bool) -> None:
        self.begun = await self._repo.begin(self._chat, self._turn, self._lease, create)

    @property
    def due(self) -> bool:
        return self._answer.length > self.flushed

    def progress(self) -> Progress:
        """The text new since the last flush, with a running estimate of the answer's
        tokens for the context budget of a cut answer (tokens of pieces add up to at least
        the whole's); the commit stores the exact count."""
        start = self.flushed
        text = self._answer.after(start)
        try:
            self._counting = self._tokens + self._counter.count(text)
        except Exception as exc:  # an estimate only: the commit counts the answer itself
            log.error("answer of chat %s not counted: %s", self._chat.id, type(exc).__name__)
            self._counting = self._tokens + len(text)
        return Progress(self._chat.id, self._lease, self._turn.user.seq + 1, start, text,
                        message_tokens(self._counting))

    def flushed_to(self, progress: Progress) -> None:
        self.flushed = progress.start + len(progress.text)  # positions are code points
        self._tokens = self._counting

    async def close(self) -> None:
        """Stop being flushed; returns once no write of ours is in flight."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await self._flusher.remove(self)

    async def ensure_begun(self, create: bool) -> None:
        """Before the commit of a new chat: its row must exist (begin may have failed)."""
        await self.close()
        if create and not self.begun:
            await self._begin(create)
