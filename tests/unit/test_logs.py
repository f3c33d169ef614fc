"""Log formatting: one parseable line per record, whatever the field values hold."""

from __future__ import annotations

import json
import logging

from chatms.domain.model import Usage
from chatms.observability.logs import JsonFormatter, TextFormatter, request_id_from
from chatms.service.reports import TurnReport


def record(**fields: object) -> logging.LogRecord:
    rec = logging.LogRecord("chatms.turn", logging.INFO, __file__, 1, "turn %s", ("ok",), None)
    rec.fields = fields
    return rec


def test_text_quotes_values_that_could_forge_fields() -> None:
    """Spaces, '=' and newlines in a value are quoted, so a user id cannot add a fake field."""
    line = TextFormatter().format(record(user_id='eve\noutcome=ok x="1"', chat_id="c-1", n=None))
    assert "\n" not in line
    assert line.endswith('user_id="eve\\noutcome=ok x=\\"1\\"" chat_id=c-1 n=-')
    assert " turn ok " in line


def test_json_is_one_object_per_line_with_the_fields() -> None:
    """The JSON line holds the message and every field, on one line."""
    line = JsonFormatter().format(record(user_id="a\nb", ttft_ms=1.5))
    assert "\n" not in line
    data = json.loads(line)
    assert data["msg"] == "turn ok" and data["user_id"] == "a\nb" and data["ttft_ms"] == 1.5
    assert data["level"] == "INFO" and data["logger"] == "chatms.turn"


def test_request_ids_are_honoured_only_when_short_and_plain() -> None:
    """A caller's request id is kept when plain and bounded, dropped otherwise."""
    assert request_id_from("req-1.a:b_c") == "req-1.a:b_c"
    assert request_id_from("x" * 128) == "x" * 128
    for bad in ("x" * 129, "", "a b", "a\nb", "ä", None):
        assert request_id_from(bad) is None


def test_turn_report_timings_in_milliseconds(caplog) -> None:
    """The turn line reports ttft and duration in milliseconds and the token counts."""
    from chatms.observability.logs import log_turn

    report = TurnReport("grpc", "chat", "user", True, "ok", usage=Usage(11, 4),
                        started=10.0, first_token_at=10.25, finished=11.5, request_id="r1")
    with caplog.at_level(logging.INFO, logger="chatms.turn"):
        log_turn(report)
    (rec,) = caplog.records
    fields = rec.fields  # type: ignore[attr-defined]
    assert fields["ttft_ms"] == 250.0 and fields["duration_ms"] == 1500.0
    assert fields["prompt_tokens"] == 11 and fields["completion_tokens"] == 4
    assert fields["request_id"] == "r1" and rec.levelno == logging.INFO
