"""The port of per-user usage counters (the rules are in chatms.domain.limits)."""

from __future__ import annotations

from typing import Protocol

from chatms.domain.limits import Usage


class UsageStore(Protocol):
    """Per-user counters shared by every replica. Raises Unavailable when it is away."""

    async def count_messages(self, user_id: str, messages: int) -> Usage:
        """Count `messages` in this minute; the counts returned include them."""
        ...

    async def spend_tokens(self, user_id: str, tokens: int) -> None:
        """Add `tokens` to today's (UTC) total of the user."""
        ...

    async def notice_due(self, user_id: str, limit: str, window_seconds: float) -> bool:
        """True at most once per `window_seconds` per user and limit."""
        ...
