"""Storing a turn: a new chat's row (once), then the turn's messages, kept at through outages."""

from __future__ import annotations

import asyncio
import logging

from chatms.domain.errors import StorageRefused, Unavailable
from chatms.domain.model import Chat, PendingTurn
from chatms.service.answer_writer import AnswerWriter
from chatms.service.lifecycle import Background
from chatms.service.ports import ChatRepository, Lease

log = logging.getLogger("chatms.turns")


class TurnStore:
    """Writes one turn of `chat` under `lease`.

    `writer` has stored (or is storing) the user message and the answer so far; for a new
    chat (`new`) it also inserts the chat's row, started by `create_soon` (the first delta
    is out) or else at `store`. `store` makes the answer final; if the database is away it
    keeps trying in the background for up to `retry_seconds` (past the lease too: the
    commit still lands while nobody else took the chat) and raises Unavailable saying so.
    """

    def __init__(
        self,
        repo: ChatRepository,
        background: Background,
        chat: Chat,
        pending: PendingTurn,
        lease: Lease,
        new: bool,
        retry_seconds: float,
        writer: AnswerWriter,
    ) -> None:
        self.repo = repo
        self.background = background
        self.chat = chat
        self.pending = pending
        self.lease = lease
        self.new = new
        self.retry_seconds = retry_seconds
        self.writer = writer

    def create_soon(self) -> None:
        """Start inserting a new chat's row now, beside the rest of the answer."""
        if self.new:
            self.writer.start(create=True)

    async def store(self) -> None:
        try:
            await self._store_once()
        except StorageRefused:
            # Not an outage: retrying cannot help, and the chat must not wait for its lease
            # to run out.
            await self.repo.release(self.chat.id, self.lease)
            raise
        except Unavailable:
            # Keep trying, so the answer the user saw is kept and the chat is not left leased.
            self.background.spawn(self._store_later())
            raise Unavailable(
                "database unavailable while storing the turn; storing is retried in the background"
            ) from None

    async def _store_once(self) -> None:
        await self.writer.ensure_begun(create=self.new)  # a new chat's row, if not there yet
        await self.repo.commit_turn(self.chat, self.pending, self.lease)

    async def _store_later(self) -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.retry_seconds
        delay = 0.25
        while True:
            await asyncio.sleep(delay)
            try:
                await self._store_once()
            except Unavailable:
                if loop.time() + delay > give_up:
                    log.error("turn of chat %s was not stored: database unavailable", self.chat.id)
                    return
                delay = min(delay * 2, 2.0)
            else:
                log.info("turn of chat %s stored after a database outage", self.chat.id)
                return
