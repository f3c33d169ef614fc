"""Inbound media from Twilio: fetched with the account's credentials, on Twilio's API host only.

Twilio answers a media URL with a redirect to a short-lived signed URL on its CDN. The
redirect is followed without credentials (they go to the API host and nowhere else), the
body is counted while it streams and dropped the moment it passes the limit, and the whole
fetch has one deadline.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urljoin, urlsplit

import httpx

from chatms.adapters.twilio import rebase
from chatms.config import WhatsAppSettings
from chatms.domain.errors import MediaTooLarge, MediaUnavailable
from chatms.service.ports import Media

log = logging.getLogger("chatms.twilio")

# Media URLs name the canonical API host; requests go to TWILIO_API_BASE_URL instead (an edge
# in production, a loopback fake in tests), the same rule as every other REST call.
CANONICAL_API_HOST = "api.twilio.com"
MAX_REDIRECTS = 3
REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Counted bytes are wire bytes: no compression can turn a small body into a huge one.
IDENTITY = {"accept-encoding": "identity"}


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


class TwilioMediaFetcher:
    def __init__(self, settings: WhatsAppSettings, http: httpx.AsyncClient) -> None:
        assert settings.account_sid and settings.auth_token, "Twilio credentials are needed"
        self.http = http
        self._auth = (settings.account_sid, settings.auth_token)
        self.api_base_url = settings.api_base_url
        self.max_bytes = settings.max_media_bytes
        self.timeout = settings.media_timeout

    def api_url(self, media_url: str) -> str:
        """The URL to ask with credentials; only Twilio's API host is ever asked."""
        parts = urlsplit(media_url)
        if parts.scheme != "https" or parts.hostname != CANONICAL_API_HOST:
            raise MediaUnavailable("the media URL is not on Twilio's API host")
        return rebase(media_url, self.api_base_url)

    async def fetch(self, media_url: str, content_type: str) -> Media:
        url = self.api_url(media_url)
        try:
            async with asyncio.timeout(self.timeout):
                return Media(content_type, await self._follow(url))
        except TimeoutError:
            raise MediaUnavailable(f"the media took longer than {self.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise MediaUnavailable(f"the media could not be fetched ({type(exc).__name__})"
                                   ) from None

    async def _follow(self, url: str) -> bytes:
        api = _origin(url)
        for _ in range(MAX_REDIRECTS + 1):
            # Credentials only for the API host itself: never for where it redirects to.
            auth = self._auth if _origin(url) == api else None
            async with self.http.stream("GET", url, auth=auth, follow_redirects=False,
                                        headers=IDENTITY) as reply:
                if reply.status_code in REDIRECTS and "location" in reply.headers:
                    url = urljoin(url, reply.headers["location"])
                    if urlsplit(url).scheme not in ("http", "https"):
                        raise MediaUnavailable("the media redirect is not an http(s) URL")
                    continue
                if reply.status_code != 200:
                    raise MediaUnavailable(f"the media host answered HTTP {reply.status_code}")
                return await self._read(reply)
        raise MediaUnavailable("the media host redirected too often")

    async def _read(self, reply: httpx.Response) -> bytes:
        declared = reply.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise MediaTooLarge(
                f"the media is {int(declared)} bytes; the limit is {self.max_bytes}")
        body = bytearray()
        async for chunk in reply.aiter_raw():
            body += chunk
            if len(body) > self.max_bytes:
                raise MediaTooLarge(f"the media is over the limit of {self.max_bytes} bytes")
        return bytes(body)
