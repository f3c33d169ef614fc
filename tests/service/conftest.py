"""Service-level tests: `ChatService` over the in-memory ports, no I/O, milliseconds each."""

from __future__ import annotations

from dataclasses import dataclass, field

from chatms.config import ModelSettings, TurnSettings
from chatms.service.chats import ChatService
from chatms.service.reports import TurnReport
from tests.fakes.memory import MemoryChatRepository, Reply, ScriptedUpstream, WordCounter

MODEL = ModelSettings(model="m", context_window=1000, max_tokens=100).checked()


@dataclass
class Rig:
    chats: ChatService
    repo: MemoryChatRepository
    upstream: ScriptedUpstream
    reports: list[TurnReport] = field(default_factory=list)

    async def turn(self, user: str, text: str, chat_id: str | None = None) -> str:
        """One whole turn; returns the chat id."""
        async with self.chats.turn(user, chat_id, text, "test") as turn:
            async for _ in turn:
                pass
        return turn.chat_id


def rig(*replies: Reply, model: ModelSettings = MODEL, **limits: float) -> Rig:
    """A service over fresh fakes, with `limits` overriding `TurnSettings` fields."""
    repo, upstream = MemoryChatRepository(), ScriptedUpstream(*replies)
    reports: list[TurnReport] = []
    chats = ChatService(repo, upstream, WordCounter(), model, TurnSettings(**limits),
                        observers=(reports.append,))
    return Rig(chats, repo, upstream, reports)
