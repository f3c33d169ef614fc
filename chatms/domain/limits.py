"""Per-user limits that protect the bill: a message rate and a daily token quota. No I/O.

The counters live in a store (PostgreSQL, so replicas share them); these rules decide, from
what the store counted, whether a message may go upstream and, if not, when it may again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from chatms.domain.errors import DailyQuotaExceeded, UserRateLimited

RATE = UserRateLimited.limit
DAILY_TOKENS = DailyQuotaExceeded.limit
RATE_WINDOW_SECONDS = 60


@dataclass(frozen=True, slots=True)
class UserLimits:
    """0 switches a limit off."""

    messages_per_minute: int = 0
    daily_tokens: int = 0

    @property
    def enabled(self) -> bool:
        return self.messages_per_minute > 0 or self.daily_tokens > 0


@dataclass(frozen=True, slots=True)
class Usage:
    """What the store counted for a user at the moment of a check."""

    now: datetime  # the store's clock, UTC
    messages_this_minute: int  # this message (or burst) included
    tokens_today: int


@dataclass(frozen=True, slots=True)
class TokenRoom:
    """What a user may still spend today under the daily quota, as counted at admission."""

    left: int
    renews_in: int  # seconds until midnight UTC

    def spent(self, tokens: int) -> TokenRoom:
        return TokenRoom(self.left - max(tokens, 0), self.renews_in)

    def answer_tokens(self, prompt_tokens: int, max_tokens: int) -> int:
        """The most an answer may take so that its turn, prompt and answer, stays within the
        quota; raises DailyQuotaExceeded when not even the prompt fits."""
        room = self.left - prompt_tokens
        if room <= 0:
            raise DailyQuotaExceeded(
                self.renews_in,
                f"the daily token quota has {max(self.left, 0)} tokens left today; this chat's"
                f" prompt needs {prompt_tokens}. It renews at midnight UTC (in"
                f" {self.renews_in} s)",
            )
        return min(max_tokens, room)


def token_room(limits: UserLimits, usage: Usage) -> TokenRoom | None:
    """The room left under the daily quota; None when there is no quota."""
    if not limits.daily_tokens:
        return None
    renews_in = _seconds_until(next_midnight(usage.now), usage.now)
    return TokenRoom(limits.daily_tokens - usage.tokens_today, renews_in)


def minute_start(now: datetime) -> datetime:
    return now.replace(second=0, microsecond=0)


def next_midnight(now: datetime) -> datetime:
    """The next UTC midnight, when the daily quota starts again."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day + timedelta(days=1)


def _seconds_until(moment: datetime, now: datetime) -> int:
    return max(1, int((moment - now).total_seconds() + 0.999))


def check(limits: UserLimits, usage: Usage) -> None:
    """Raise UserRateLimited or DailyQuotaExceeded if `usage` is over `limits` (quota first)."""
    if limits.daily_tokens and usage.tokens_today >= limits.daily_tokens:
        raise DailyQuotaExceeded(
            _seconds_until(next_midnight(usage.now), usage.now),
            f"daily token quota of {limits.daily_tokens} used up; it renews at midnight UTC"
            f" (in {_seconds_until(next_midnight(usage.now), usage.now)} s)",
        )
    if limits.messages_per_minute and usage.messages_this_minute > limits.messages_per_minute:
        window_end = minute_start(usage.now) + timedelta(seconds=RATE_WINDOW_SECONDS)
        raise UserRateLimited(
            _seconds_until(window_end, usage.now),
            f"rate limit of {limits.messages_per_minute} messages per minute reached;"
            f" retry in {_seconds_until(window_end, usage.now)} s",
        )
