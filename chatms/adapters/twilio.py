"""Twilio's Messages API through the `twilio` package, on httpx so the event loop never blocks.

`HttpxTwilioClient` implements the package's `AsyncHttpClient` interface and sends each request
to the base URL configured for the host the package chose: `TWILIO_API_BASE_URL` for the REST
API (api.twilio.com), `TWILIO_MESSAGING_BASE_URL` for the messaging host (the WhatsApp typing
indicator), so the same code talks to Twilio in production and to loopback fakes in tests.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit, urlunsplit

import httpx
from twilio.base.exceptions import TwilioRestException
from twilio.http import AsyncHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from chatms.config import WhatsAppSettings
from chatms.service.ports import SendFailed

log = logging.getLogger("chatms.twilio")

# The messaging host (typing indicator) has its own base URL; every other host is the API's.
MESSAGING_HOST = "messaging.twilio.com"


def build_twilio_http(connect_timeout: float = 5.0, timeout: float = 15.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=connect_timeout),
        limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
    )


def rebase(url: str, base_url: str) -> str:
    """`url` with its scheme and host replaced by those of `base_url` (path and query kept)."""
    target, base = urlsplit(url), urlsplit(base_url)
    path = base.path.rstrip("/") + target.path
    return urlunsplit((base.scheme, base.netloc, path, target.query, ""))


class HttpxTwilioClient(AsyncHttpClient):  # type: ignore[misc]  # twilio ships no types
    """The twilio package's async HTTP interface, backed by a shared httpx client."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, messaging_base_url: str) -> None:
        super().__init__(log, True, None)
        self.http = http
        self.base_url = base_url
        self.messaging_base_url = messaging_base_url

    def target(self, uri: str) -> str:
        """Where a request for `uri` goes: each Twilio host has its own base URL."""
        if urlsplit(uri).hostname == MESSAGING_HOST:
            return rebase(uri, self.messaging_base_url)
        return rebase(uri, self.base_url)

    async def request(
        self,
        method: str,
        uri: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (the twilio interface)
        allow_redirects: bool = False,
    ) -> Response:
        response = await self.http.request(
            method.upper(),
            self.target(uri),
            params=params,  # type: ignore[arg-type]  # twilio's dict vs httpx's QueryParamTypes
            data=data,
            headers=headers,
            auth=auth,
            timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            follow_redirects=allow_redirects,
        )
        return Response(response.status_code, response.text, response.headers)


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


# WhatsApp through Twilio takes bodies of at most 1600 characters, counted like Twilio does:
# in UTF-16 code units, so an emoji outside the BMP counts as two.
WHATSAPP_PART_LIMIT = 1600


class TwilioSender:
    """The WhatsApp channel's way out (a `MessageSender`): sends through Twilio's Messages
    API; retries 429, 5xx and network failures with bounded backoff."""

    part_limit = WHATSAPP_PART_LIMIT

    def __init__(
        self, settings: WhatsAppSettings, http: httpx.AsyncClient, max_backoff: float
    ) -> None:
        assert settings.configured, "Twilio needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"
        self._client = Client(
            settings.account_sid, settings.auth_token,
            http_client=HttpxTwilioClient(
                http, settings.api_base_url, settings.messaging_base_url),
        )
        self.attempts = settings.send_attempts
        self.backoff = settings.send_backoff
        self.max_backoff = max_backoff  # the queue's retry cap holds for every wait
        self.typing_timeout = settings.typing_timeout

    async def typing(self, message_sid: str) -> bool:
        """Show "typing..." to the sender of `message_sid` (and mark it read); best effort.

        Twilio's typing indicator is a public beta: any failure is logged at DEBUG and
        reported as False, never raised.
        """
        try:
            async with asyncio.timeout(self.typing_timeout):
                await self._client.messaging.v2.typing_indicator.create_async(
                    channel="whatsapp", message_id=message_sid
                )
        except (TwilioRestException, httpx.HTTPError, TimeoutError, ValueError) as exc:
            log.debug("typing indicator for %s failed: %s", message_sid, type(exc).__name__)
            return False
        return True

    async def send(self, from_: str, to: str, body: str) -> str:
        error = "no attempt made"
        for attempt in range(self.attempts):
            if attempt:
                await asyncio.sleep(min(self.backoff * 2 ** (attempt - 1), self.max_backoff))
            try:
                message = await self._client.messages.create_async(from_=from_, to=to, body=body)
            except TwilioRestException as exc:
                # Twilio's own error text names the code, never our credentials.
                error = f"Twilio answered HTTP {exc.status} (code {exc.code}): {exc.msg}"
                if not _retryable(exc.status):
                    raise SendFailed(error, retryable=False) from None
            except httpx.HTTPError as exc:
                error = f"Twilio unreachable: {type(exc).__name__}"
            else:
                return str(message.sid)
            log.warning("twilio send attempt %d/%d failed: %s", attempt + 1, self.attempts, error)
        raise SendFailed(error, retryable=True)
