"""A look at the upstream at start: warnings only, never a refusal to start.

Some OpenAI-compatible servers lack `GET /models`, and an upstream may come up after us; a
turn is always tried. What an operator should hear about early: no key at all, an upstream
that does not answer, and a MODEL it does not list.
"""

from __future__ import annotations

import asyncio
import logging

import httpx

from chatms.config import UpstreamSettings

log = logging.getLogger("chatms.upstream")

PROBE_SECONDS = 5.0
MAX_MODELS_BYTES = 4 * 1024 * 1024


async def models_warning(http: httpx.AsyncClient, settings: UpstreamSettings,
                         model: str) -> str | None:
    """Why turns with `model` may fail at this upstream, or None when it lists `model`."""
    url = f"{settings.base_url}/models"
    headers = {"authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    try:
        response = await http.get(url, headers=headers, timeout=PROBE_SECONDS)
    except httpx.TimeoutException:
        return (f"GET {url} got no answer within {PROBE_SECONDS:g}s: the upstream may be down"
                " or slow; check OPENAI_BASE_URL (turns are still tried)")
    except httpx.HTTPError as exc:
        return (f"GET {url} failed ({type(exc).__name__}): check OPENAI_BASE_URL"
                " (turns are still tried)")
    if response.status_code != 200:
        hint = "check OPENAI_API_KEY" if response.status_code in (401, 403) else (
            "some compatible servers have no /models")
        return (f"GET {url} answered HTTP {response.status_code}: {hint}"
                " (turns are still tried)")
    try:
        if len(response.content) > MAX_MODELS_BYTES:
            raise ValueError("too large")
        listed = {str(entry["id"]) for entry in response.json()["data"]}
    except (ValueError, KeyError, TypeError):
        return f"GET {url} did not answer a model list (turns are still tried)"
    if model not in listed:
        return (f"the upstream at {settings.base_url} does not list MODEL={model!r}: check"
                " MODEL (turns are still tried)")
    return None


def check_upstream(http: httpx.AsyncClient, settings: UpstreamSettings,
                   model: str) -> asyncio.Task[None] | None:
    """Warn now about a missing key; look at `/models` in the background (start is not held)."""
    if not settings.api_key:
        log.warning("OPENAI_API_KEY is not set: every turn fails with FAILED_PRECONDITION"
                    " until it is")
        return None

    async def probe() -> None:
        warning = await models_warning(http, settings, model)
        if warning:
            log.warning("%s", warning)
        else:
            log.debug("the upstream at %s lists MODEL=%r", settings.base_url, model)

    return asyncio.create_task(probe(), name="upstream-probe")
