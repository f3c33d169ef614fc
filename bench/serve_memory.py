"""`chatms serve` with persistence switched off: the same App, built by the same builder,
over an in-memory storage.

Only for the benchmark's "TTFT with vs without persistence" comparison; same settings
(environment), same doors, same upstream client, same event loop choice.
Run: python -m bench.serve_memory
"""

from __future__ import annotations

import asyncio
import signal
import time

from chatms.builder import Storage, build_app
from chatms.config import Settings, load_settings
from chatms.domain.errors import ChatBusy, ChatEnded, ChatNotFound
from chatms.domain.model import Chat, ChatStatus, PendingTurn
from chatms.entrypoints.cli import configure_logging, run
from chatms.observability.metrics import Metrics
from chatms.service.ports import ChatPage, Lease, StoredMessage


class MemoryChatRepository:
    """chatms.service.ports.ChatRepository in a dict: leases honoured, nothing durable."""

    def __init__(self) -> None:
        self.chats: dict[str, Chat] = {}
        self.leases: dict[str, tuple[str, float]] = {}

    async def create(self, chat: Chat, lease: Lease) -> None:
        self.chats[chat.id] = chat
        self.leases[chat.id] = (lease.token, time.monotonic() + lease.seconds)

    async def acquire(self, chat_id: str, owner: str, lease: Lease) -> Chat:
        chat = self.chats.get(chat_id)
        if chat is None or chat.owner != owner:
            raise ChatNotFound()
        if chat.status is ChatStatus.ENDED:
            raise ChatEnded()
        held = self.leases.get(chat_id)
        if held is not None and held[1] > time.monotonic():
            raise ChatBusy()
        self.leases[chat_id] = (lease.token, time.monotonic() + lease.seconds)
        return chat

    async def commit_turn(self, chat: Chat, turn: PendingTurn, lease: Lease) -> None:
        await self.release(chat.id, lease)

    async def renew(self, chat_id: str, lease: Lease) -> bool:
        return True

    async def release(self, chat_id: str, lease: Lease) -> None:
        held = self.leases.get(chat_id)
        if held is not None and held[0] == lease.token:
            del self.leases[chat_id]

    async def list_chats(self, owner: str, limit: int, cursor: str | None) -> ChatPage:
        return ChatPage([])

    async def messages(self, chat_id: str, owner: str) -> list[StoredMessage]:
        raise ChatNotFound()

    async def end(self, chat_id: str, owner: str) -> None:
        chat = self.chats.get(chat_id)
        if chat is None or chat.owner != owner:
            raise ChatNotFound()
        chat.end()


async def memory_storage(settings: Settings, metrics: Metrics) -> Storage:
    """Chats in a dict; text channels off (they need PostgreSQL's queue)."""
    return Storage(chats=MemoryChatRepository(), inbound=None)


async def serve_forever() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    settings = load_settings()
    configure_logging(settings)
    app = await build_app(settings, storage=memory_storage)
    await app.start()
    try:
        await stop.wait()
    finally:
        await app.stop()


if __name__ == "__main__":
    run(serve_forever())
