"""Log formatting (JSON or key=value text) and the one line logged per turn.

Structured fields travel in `extra={"fields": {...}}`; both formatters render them, so a
call site never knows the output format. Turn reports carry no message bodies and no
secrets, so nothing here can leak either.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from chatms.service.reports import ContextReport, TurnReport

turn_log = logging.getLogger("chatms.turn")

_BARE = re.compile(r"[A-Za-z0-9_.:/@+-]+")
# A caller's request id is honoured only when it is short and plain: it ends up in logs.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_from(value: str | None) -> str | None:
    """The caller's request id when usable, else None (the service then makes one)."""
    return value if value is not None and _REQUEST_ID.fullmatch(value) else None


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, dict) else {}


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(_fields(record))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def _text_value(value: Any) -> str:
    if value is None:
        return "-"
    text = str(value)
    # Quote (JSON-escaped) anything a reader could mistake: spaces, '=', newlines, quotes.
    return text if _BARE.fullmatch(text) else json.dumps(text, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger message key=value ...` on one line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        pairs = " ".join(f"{k}={_text_value(v)}" for k, v in _fields(record).items())
        return f"{line} {pairs}" if pairs else line


def configure(level: str, fmt: str) -> None:
    """Send every log record to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # httpx logs every upstream request at INFO: the turn line already says it, once.
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))


def _ms(start: float, end: float | None) -> float | None:
    return None if end is None else round((end - start) * 1000, 1)


def log_turn(report: TurnReport) -> None:
    """The turn observer: one line per finished turn, INFO when it went well."""
    fields = {
        "event": "turn",
        "request_id": report.request_id,
        "transport": report.transport,
        "chat_id": report.chat_id,
        "user_id": report.user_id,
        "new_chat": report.new_chat,
        "outcome": report.outcome,
        "error": report.error,
        "finish_reason": report.finish_reason,
        "ttft_ms": _ms(report.started, report.first_token_at),
        "duration_ms": _ms(report.started, report.finished),
        "prompt_tokens": report.usage.prompt_tokens,
        "completion_tokens": report.usage.completion_tokens,
        "deltas": report.deltas,
    }
    level = logging.INFO if report.outcome == "ok" else logging.WARNING
    turn_log.log(level, "turn %s", report.outcome, extra={"fields": fields})


context_log = logging.getLogger("chatms.context")


def log_context(report: ContextReport) -> None:
    """The summary and title observer: one line per job, never any text of the chat."""
    fields = {
        "event": report.kind,
        "chat_id": report.chat_id,
        "outcome": report.outcome,
        "error": report.error,
        "prompt_tokens": report.usage.prompt_tokens,
        "completion_tokens": report.usage.completion_tokens,
        "duration_ms": round(report.seconds * 1000, 1),
    }
    level = logging.INFO if report.outcome in ("ok", "busy", "stale") else logging.WARNING
    context_log.log(level, "%s %s", report.kind, report.outcome, extra={"fields": fields})
