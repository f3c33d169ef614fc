"""The per-user limit rules: which limit refuses, and when trying again helps."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from chatms.domain.errors import LimitExceeded
from chatms.domain.limits import DAILY_TOKENS, RATE, Usage, UserLimits, check, token_room

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


def test_an_answer_gets_what_the_quota_leaves_after_its_prompt() -> None:
    assert token_room(UserLimits(messages_per_minute=3), Usage(NOON, 1, 10**9)) is None
    room = token_room(UserLimits(daily_tokens=1000), Usage(NOON, 1, 700))
    assert room is not None and room.left == 300 and room.renews_in == 12 * 3600 - 45
    assert room.answer_tokens(100, 1024) == 200  # capped by the quota
    assert room.answer_tokens(100, 50) == 50  # MAX_TOKENS is lower: kept
    assert room.spent(250).answer_tokens(40, 1024) == 10  # a voice note's tokens came first
    with pytest.raises(LimitExceeded) as refused:
        room.answer_tokens(300, 1024)  # not even the prompt fits
    assert refused.value.limit == DAILY_TOKENS
    assert refused.value.retry_after == 12 * 3600 - 45
    assert "300 tokens left" in str(refused.value) and "midnight UTC" in str(refused.value)
