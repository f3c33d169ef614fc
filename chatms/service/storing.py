"""Storing a turn: a new chat's row (once), then the turn's messages, kept at through outages."""

from __future__ import annotations

import asyncio
import logging

from chatms.domain.errors import StorageRefused, Unavailable
from chatms.domain.model import Chat, PendingTurn
from chatms.service.lifecycle import Background
from chatms.service.ports import ChatRepository, Lease

log = logging.getLogger("chatms.turns")


class TurnStore:
    """Writes one turn of `chat` under `lease`.

    For a new chat (`new`), the chat's row is inserted first: as soon as `create_soon` is
    called (the first delta is out) or else at `store`. `store` commits the pending turn; if
    the database is away it keeps trying in the background for up to `retry_seconds` (and
    never past the lease) and raises Unavailable saying so.
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
    ) -> None:
        self.repo = repo
        self.background = background
        self.chat = chat
        self.pending = pending
        self.lease = lease
        self.new = new
        self.retry_seconds = retry_seconds
        self._created: asyncio.Task[None] | None = None

    def create_soon(self) -> None:
        """Start inserting a new chat's row now, beside the rest of the answer."""
        if self.new and self._created is None:
            self._created = asyncio.ensure_future(self.repo.create(self.chat, self.lease))

    async def store(self) -> None:
        try:
            await self._store_once()
        except StorageRefused:
            # Not an outage: retrying cannot help, and the chat must not wait for its lease
            # to run out.
            await self.repo.release(self.chat.id, self.lease)
            raise
        except Unavailable:
            # Keep trying while our lease lasts, so the answer the user saw is kept and the
            # chat is not left leased.
            self.background.spawn(self._store_later())
            raise Unavailable(
                "database unavailable while storing the turn; storing is retried in the background"
            ) from None

    async def _store_once(self) -> None:
        if self.new:
            self.create_soon()
            assert self._created is not None
            await self._created
        await self.repo.commit_turn(self.chat, self.pending, self.lease)

    async def _store_later(self) -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + min(self.retry_seconds, self.lease.seconds)
        delay = 0.25
        while True:
            await asyncio.sleep(delay)
            created = self._created
            if created is not None and (created.cancelled() or created.exception() is not None):
                self._created = None  # inserted again (the insert is idempotent)
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
