"""Keeps secrets out of every log line, whoever writes it (our code or a library at DEBUG)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

# Libraries whose DEBUG output carries raw headers (hpack decodes `authorization`).
CHATTY_LIBRARIES = ("hpack", "h2", "httpcore", "httpx", "asyncio", "twilio.http_client")


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: Iterable[str | None]) -> None:
        super().__init__()
        # Short values would redact ordinary words; real secrets are long.
        self.secrets = tuple(s for s in secrets if s and len(s) >= 8)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        if any(secret in message for secret in self.secrets):
            for secret in self.secrets:
                message = message.replace(secret, "[redacted]")
            record.msg, record.args = message, None
        return True


def protect(handler: logging.Handler, secrets: Iterable[str | None]) -> None:
    """Redact `secrets` from everything `handler` writes; quiet the header-dumping libraries."""
    handler.addFilter(RedactSecrets(secrets))
    floor = max(logging.INFO, logging.getLogger().level)
    for name in CHATTY_LIBRARIES:
        library = logging.getLogger(name)
        library.setLevel(max(library.level, floor))
