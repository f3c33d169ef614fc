"""The per-user limit rules: which limit refuses, and when trying again helps."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from chatms.domain.errors import LimitExceeded
from chatms.domain.limits import DAILY_TOKENS, RATE, Usage, UserLimits, check

NOON = datetime(2026, 11, 30, 12, 0, 45, tzinfo=UTC)


def test_off_limits_never_refuse() -> None:
    check(UserLimits(), Usage(NOON, 10_000, 10**9))
    assert not UserLimits().enabled and UserLimits(messages_per_minute=1).enabled


def test_rate_refuses_past_the_limit_until_the_minute_ends() -> None:
    limits = UserLimits(messages_per_minute=3)
    check(limits, Usage(NOON, 3, 0))
    with pytest.raises(LimitExceeded) as refused:
        check(limits, Usage(NOON, 4, 0))
    assert refused.value.limit == RATE and refused.value.retry_after == 15


def test_quota_refuses_once_used_up_until_utc_midnight() -> None:
    limits = UserLimits(messages_per_minute=3, daily_tokens=1000)
    check(limits, Usage(NOON, 1, 999))
    with pytest.raises(LimitExceeded) as refused:
        check(limits, Usage(NOON, 9, 1000))  # the quota is named first
    assert refused.value.limit == DAILY_TOKENS
    assert refused.value.retry_after == 12 * 3600 - 45
    assert "midnight UTC" in str(refused.value)
