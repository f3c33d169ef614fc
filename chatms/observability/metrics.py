"""Prometheus metrics: one registry per App, fed once per turn from its `TurnReport`.

Nothing here runs per token: turn metrics come from the observer hook when a turn ends,
streams in flight are read from the service at scrape time, and query latency comes from
asyncpg's query logger.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from chatms.domain import errors
from chatms.service.reports import ContextReport, TurnReport

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Error class name -> the `kind` label; a closed set keeps the label's cardinality bounded.
UPSTREAM_KINDS = {
    errors.UpstreamRateLimited.__name__: "rate_limited",
    errors.UpstreamUnavailable.__name__: "unavailable",
    errors.UpstreamTimeout.__name__: "timeout",
    errors.UpstreamRejected.__name__: "rejected",
    errors.UpstreamError.__name__: "other",
}
STATEMENTS = frozenset({"select", "insert", "update", "delete", "with", "create"})

TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
QUERY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


class _StreamsInFlight(Collector):
    """Reads the service's per-transport count of turns in flight when scraped."""

    def __init__(self) -> None:
        self.source: Mapping[str, int] = {}

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "chatms_streams_in_flight", "Turns streaming right now", labels=["transport"]
        )
        for transport, count in sorted(self.source.items()):
            gauge.add_metric([transport], count)
        yield gauge


class Metrics:
    """The service's metrics in a registry of their own (several apps may share a process)."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self._turn_metrics(r)
        self._storage_metrics(r)
        self._context_metrics(r)
        self._streams = _StreamsInFlight()
        r.register(self._streams)

    def _turn_metrics(self, r: CollectorRegistry) -> None:
        self.turns = Counter(
            "chatms_turns", "Turns ended, by transport and outcome",
            ["transport", "outcome"], registry=r,
        )
        self.time_to_first_token = Histogram(
            "chatms_time_to_first_token_seconds", "From turn start to the first answer delta",
            ["transport"], buckets=TTFT_BUCKETS, registry=r,
        )
        self.turn_duration = Histogram(
            "chatms_turn_duration_seconds", "From turn start to the answer stored",
            ["transport"], buckets=DURATION_BUCKETS, registry=r,
        )
        self.upstream_errors = Counter(
            "chatms_upstream_errors", "Turns failed by the model provider, by kind",
            ["kind"], registry=r,
        )
        self.prompt_tokens = Counter(
            "chatms_prompt_tokens", "Prompt tokens reported by the model provider",
            ["transport"], registry=r,
        )
        self.completion_tokens = Counter(
            "chatms_completion_tokens", "Completion tokens reported by the model provider",
            ["transport"], registry=r,
        )
        self.limit_refusals = Counter(
            "chatms_limit_refusals", "Messages refused by a per-user limit, before any upstream"
            " call", ["limit", "transport"], registry=r,
        )

    def _storage_metrics(self, r: CollectorRegistry) -> None:
        """PostgreSQL statements and inbound answers given up on."""
        self.query_duration = Histogram(
            "chatms_db_query_duration_seconds", "PostgreSQL statement latency, by first keyword",
            ["statement"], buckets=QUERY_BUCKETS, registry=r,
        )
        self.query_errors = Counter(
            "chatms_db_query_errors", "PostgreSQL statements that raised", ["statement"],
            registry=r,
        )
        self.whatsapp_undelivered = Counter(
            "chatms_whatsapp_undelivered", "WhatsApp answers given up on, by reason"
            " (refused by Twilio, or not delivered by WHATSAPP_DELIVERY_DEADLINE)",
            ["reason"], registry=r,
        )
        for reason in ("refused", "deadline"):  # shown at 0 before the first failure
            self.whatsapp_undelivered.labels(reason)

    def _context_metrics(self, r: CollectorRegistry) -> None:
        """Summaries and titles."""
        self.summaries = Counter(
            "chatms_summaries", "Rolling summary attempts, by outcome (ok, error, timeout,"
            " empty, busy, stale)", ["outcome"], registry=r,
        )
        self.summary_tokens = Counter(
            "chatms_summary_tokens", "Tokens spent on summaries and titles, as the upstream"
            " reported them", ["kind", "direction"], registry=r,
        )
        self.titles = Counter(
            "chatms_titles", "Title attempts, by outcome", ["outcome"], registry=r,
        )

    def watch_streams(self, source: Mapping[str, int]) -> None:
        """Report `source` (transport -> turns in flight) as the streams-in-flight gauge."""
        self._streams.source = source

    def observe_turn(self, report: TurnReport) -> None:
        """The turn observer: called once when a turn ends."""
        transport = report.transport
        self.turns.labels(transport, report.outcome).inc()
        if report.first_token_at is not None:
            self.time_to_first_token.labels(transport).observe(
                report.first_token_at - report.started
            )
        self.turn_duration.labels(transport).observe(report.finished - report.started)
        kind = UPSTREAM_KINDS.get(report.error or "")
        if kind is not None:
            self.upstream_errors.labels(kind).inc()
        if report.usage.prompt_tokens:
            self.prompt_tokens.labels(transport).inc(report.usage.prompt_tokens)
        if report.usage.completion_tokens:
            self.completion_tokens.labels(transport).inc(report.usage.completion_tokens)

    def observe_undelivered(self, reason: str) -> None:
        """Called by the WhatsApp worker when it gives up on an answer."""
        self.whatsapp_undelivered.labels(reason).inc()

    def observe_context(self, report: ContextReport) -> None:
        """The summary and title observer: called once per job."""
        (self.summaries if report.kind == "summary" else self.titles).labels(
            report.outcome).inc()
        if report.usage.prompt_tokens:
            self.summary_tokens.labels(report.kind, "prompt").inc(report.usage.prompt_tokens)
        if report.usage.completion_tokens:
            self.summary_tokens.labels(report.kind, "completion").inc(
                report.usage.completion_tokens)

    def observe_refusal(self, limit: str, transport: str) -> None:
        """Called by the usage gate for each message a limit refused."""
        self.limit_refusals.labels(limit, transport).inc()

    def observe_query(self, query: str, elapsed: float, failed: bool) -> None:
        """Called by the database adapter after each statement."""
        word = query.lstrip().split(None, 1)[0].lower() if query.strip() else ""
        statement = word if word in STATEMENTS else "other"
        self.query_duration.labels(statement).observe(elapsed)
        if failed:
            self.query_errors.labels(statement).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
