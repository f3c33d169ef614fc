"""What the OpenAI API says when it refuses: statuses and error bodies as domain errors.

Clients get the status and the upstream's error code only; OpenAI's own text (which can
name the organization or quote part of the key) goes to our log, never further.
"""

from __future__ import annotations

import json
import logging
import time
from email.utils import parsedate_to_datetime

import httpx

from chatms.domain.errors import (
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)

log = logging.getLogger("chatms.openai")


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def error_code(body: bytes) -> str:
    """The upstream's error code ("rate_limit_exceeded"), safe to show a client."""
    try:
        error = json.loads(body)["error"]
        code = str(error.get("code") or error.get("type") or "")
    except (ValueError, KeyError, TypeError, AttributeError):
        return ""
    return code if code.replace("_", "").isalnum() and len(code) <= 64 else ""


def error_for_status(status: int, body: bytes) -> UpstreamError:
    """The domain error for an upstream status.

    Clients and our log get the status and the upstream's error code only: OpenAI's own text
    can name the organization or quote part of the key, and a proxy's may echo the prompt.
    """
    code = error_code(body)
    log.warning("upstream answered HTTP %d (%s)", status, code or "no error code")
    # A numeric code (some compatible servers send the status again) would only repeat it.
    suffix = f" ({code})" if code and not code.isdigit() else ""
    if status == 429:
        return UpstreamRateLimited(f"upstream rate limit reached{suffix}")
    if status in (401, 403):
        # OpenAI's own text quotes part of the key: it is not passed on.
        return UpstreamRejected(f"upstream rejected the credentials (HTTP {status}){suffix}")
    if status == 408:
        return UpstreamTimeout(f"upstream timed out (HTTP 408){suffix}")
    if status >= 500:
        return UpstreamUnavailable(f"upstream failed (HTTP {status}){suffix}")
    return UpstreamRejected(f"upstream rejected the request (HTTP {status}){suffix}")


def redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "[redacted]") if secret else text
