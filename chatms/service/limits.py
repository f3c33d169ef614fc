"""The gate every door's messages pass before anything goes upstream: per-user limits.

Counting and checking is one statement in the store; spending is recorded after the
upstream reported what it cost. Limits that are off cost nothing: no statement runs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from chatms.domain.errors import LimitExceeded
from chatms.domain.limits import TokenRoom, UserLimits, check, token_room
from chatms.domain.model import Usage
from chatms.service.ports import UsageStore

log = logging.getLogger("chatms.limits")

# Told (limit, transport) for each refusal: the metric of refusals by limit.
RefusalObserver = Callable[[str, str], None]


class UsageGate:
    def __init__(
        self, store: UsageStore, on_refusal: RefusalObserver | None = None
    ) -> None:
        self.store = store
        self.on_refusal = on_refusal

    async def admit(
        self, user_id: str, limits: UserLimits, transport: str, messages: int = 1
    ) -> TokenRoom | None:
        """Count the message(s) and raise LimitExceeded when the user is over a limit; else
        the room left under the daily quota (None: no quota)."""
        if not limits.enabled:
            return None
        usage = await self.store.count_messages(user_id, messages)
        try:
            check(limits, usage)
        except LimitExceeded as refused:
            log.info("%s message refused: %s limit (retry in %ds)", transport, refused.limit,
                     refused.retry_after)
            self.refused(refused, transport)
            raise
        return token_room(limits, usage)

    def refused(self, refused: LimitExceeded, transport: str) -> None:
        """Count a refusal (also one found after admission: a prompt the quota cannot cover)."""
        if self.on_refusal is not None:
            self.on_refusal(refused.limit, transport)

    async def spend(self, user_id: str, limits: UserLimits, tokens: int) -> None:
        """Record tokens the upstream reported for the user (only under a daily quota)."""
        if limits.daily_tokens and tokens > 0:
            await self.store.spend_tokens(user_id, tokens)

    async def spend_reported(
        self, user_id: str, limits: UserLimits, reported: Usage | None
    ) -> None:
        """Add what the upstream reported a turn cost to the user's day."""
        if reported is not None:
            await self.spend(user_id, limits, reported.prompt_tokens + reported.completion_tokens)

    def spender(
        self, user_id: str, limits: UserLimits
    ) -> Callable[[int], Awaitable[None]] | None:
        """What adds a summary's or title's tokens to the user's day (None: no quota)."""
        if not limits.daily_tokens:
            return None

        async def spend(tokens: int) -> None:
            await self.spend(user_id, limits, tokens)

        return spend

    async def notice_due(self, user_id: str, refused: LimitExceeded) -> bool:
        """Whether to tell the user about this refusal now (once per limit window)."""
        return await self.store.notice_due(user_id, refused.limit, refused.retry_after)
