"""Metrics carry the right values, not merely values that moved."""

from __future__ import annotations

from chatms.domain.model import Usage
from chatms.observability.metrics import Metrics
from chatms.service.reports import TurnReport


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_turn_is_recorded_with_its_own_timings_and_tokens() -> None:
    """Time to first token, duration and tokens are the report's, per transport."""
    metrics = Metrics()
    metrics.observe_turn(TurnReport(
        "grpc", "c", "u", True, "ok", usage=Usage(11, 4), started=10.0, first_token_at=10.25,
        finished=11.5,
    ))
    metrics.observe_turn(TurnReport("grpc", "c", "u", False, "cancelled", started=0.0,
                                    finished=0.125))  # no first token: no TTFT sample
    assert sample(metrics, "chatms_time_to_first_token_seconds_sum", transport="grpc") == 0.25
    assert sample(metrics, "chatms_time_to_first_token_seconds_count", transport="grpc") == 1
    assert sample(metrics, "chatms_turn_duration_seconds_sum", transport="grpc") == 1.625
    assert sample(metrics, "chatms_turns_total", transport="grpc", outcome="ok") == 1
    assert sample(metrics, "chatms_turns_total", transport="grpc", outcome="cancelled") == 1
    assert sample(metrics, "chatms_prompt_tokens_total", transport="grpc") == 11
    assert sample(metrics, "chatms_completion_tokens_total", transport="grpc") == 4


def test_failed_statements_are_counted_once_each_by_keyword() -> None:
    """Every statement is timed; only failed ones are counted as errors, under their keyword."""
    metrics = Metrics()
    metrics.observe_query("SELECT 1", 0.5, False)
    metrics.observe_query("  select * from chats", 0.25, True)
    metrics.observe_query("WITH x AS (SELECT 1) SELECT 1", 0.125, True)
    metrics.observe_query("VACUUM", 1.0, True)
    assert sample(metrics, "chatms_db_query_duration_seconds_sum", statement="select") == 0.75
    assert sample(metrics, "chatms_db_query_duration_seconds_count", statement="select") == 2
    assert sample(metrics, "chatms_db_query_errors_total", statement="select") == 1
    assert sample(metrics, "chatms_db_query_errors_total", statement="with") == 1
    assert sample(metrics, "chatms_db_query_errors_total", statement="other") == 1


def test_upstream_errors_are_counted_by_kind() -> None:
    """A turn failed upstream counts once under its kind; a turn that went well, nowhere."""
    metrics = Metrics()
    for error in ("UpstreamRateLimited", "UpstreamTimeout", None, "Unavailable"):
        metrics.observe_turn(TurnReport("http", "c", "u", True, "x", error=error))
    assert sample(metrics, "chatms_upstream_errors_total", kind="rate_limited") == 1
    assert sample(metrics, "chatms_upstream_errors_total", kind="timeout") == 1
    assert sample(metrics, "chatms_upstream_errors_total", kind="unavailable") is None
