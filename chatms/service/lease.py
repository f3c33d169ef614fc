"""A turn's hold on its chat: taken without leaking on cancel, renewed while the turn runs."""

from __future__ import annotations

import asyncio
import logging
import uuid

from chatms.domain.errors import ChatError
from chatms.domain.model import Chat
from chatms.service.lifecycle import Background
from chatms.service.ports import ChatRepository, Lease

log = logging.getLogger("chatms.turns")


class LeaseKeeper:
    """One lease (a fresh token) on one chat, for one turn.

    `acquire` takes it and loads the chat; `keep` renews it every third of its length until
    `stop`; committing the turn (the repository's `commit_turn`) or `release` gives it back.
    """

    def __init__(self, repo: ChatRepository, background: Background, seconds: float) -> None:
        self.repo = repo
        self.background = background
        self.lease = Lease(str(uuid.uuid4()), seconds)
        self._renewer: asyncio.Task[None] | None = None

    async def acquire(self, chat_id: str, owner: str) -> Chat:
        """Lease and load the chat; a caller cancelled meanwhile leaves no lease behind."""
        repo, lease = self.repo, self.lease
        leasing = asyncio.ensure_future(repo.acquire(chat_id, owner, lease))
        try:
            return await asyncio.shield(leasing)
        except asyncio.CancelledError:
            def give_back(done: asyncio.Future[Chat]) -> None:
                if not done.cancelled() and done.exception() is None:
                    self.background.spawn(repo.release(chat_id, lease))

            leasing.add_done_callback(give_back)
            raise

    async def release(self, chat_id: str) -> None:
        await self.repo.release(chat_id, self.lease)

    def keep(self, chat_id: str) -> None:
        """Renew the lease until `stop` (a new chat's row may not exist yet: renewing fails)."""
        self._renewer = asyncio.ensure_future(self._renew(chat_id))

    def stop(self) -> None:
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            # Not kept: the cancelled task's traceback holds the frame that holds this
            # keeper, a cycle that would wait for the cyclic collector's full passes.
            renewer.cancel()

    async def _renew(self, chat_id: str) -> None:
        while True:
            await asyncio.sleep(self.lease.seconds / 3)
            try:
                await self.repo.renew(chat_id, self.lease)
            except ChatError as exc:  # the database is away: the commit will say so
                log.warning("could not renew the lease on chat %s: %s", chat_id, exc)
