"""A fake Twilio on 127.0.0.1: the REST API host, its media CDN and its messaging host.

Three loopback servers, three origins, like Twilio's three hosts:
- the API host takes Messages.json posts (HTTP basic auth, form, 201 with a message resource,
  failures on demand) and answers media URLs, with basic auth, by a redirect to a signed URL;
- the CDN serves those signed URLs without auth, and refuses a request that carries an
  Authorization header (as a presigned-URL store does), recording that it was sent one;
- the messaging host takes the WhatsApp typing indicator (`/v2/Indicators/Typing.json`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from twilio.request_validator import RequestValidator

from tests.fakes.http11 import LoopbackFake, LoopbackServer, Reply, Request, write_chunk

ACCOUNT_SID = "AC" + "5f1e" * 8
AUTH_TOKEN = "fake-twilio-auth-token-9d8c7b6a"
OUR_NUMBER = "whatsapp:+14155238886"


@dataclass
class Post:
    form: dict[str, str]
    sid: str
    at: float


@dataclass
class StoredMedia:
    content_type: str
    data: bytes
    status: int = 200  # what the API host answers (404: gone)
    stall: float = 0.0  # seconds the CDN waits before the body
    endless: bool = False  # the CDN repeats the data for ever, chunked (no Content-Length)
    fetches: int = 0


@dataclass
class Typing:
    form: dict[str, str]
    at: float


@dataclass
class Hosts:
    """What the two side hosts saw."""

    cdn_requests: list[Request] = field(default_factory=list)
    cdn_saw_credentials: int = 0
    typing: list[Typing] = field(default_factory=list)
    typing_failures: deque[int] = field(default_factory=deque)


def _basic_ok(request: Request) -> bool:
    good = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    return hmac.compare_digest(request.headers.get("authorization", ""), good)


def _error(status: int, code: int, message: str) -> Reply:
    body = {"code": code, "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status}
    return Reply(status, {"content-type": "application/json"}, json.dumps(body).encode())


class FakeTwilio(LoopbackFake):
    def __init__(self) -> None:
        super().__init__()
        self.posts: list[Post] = []
        self.attempts = 0
        self.failures: deque[int] = deque()
        self.media: dict[str, StoredMedia] = {}
        self.media_auth_failures = 0
        self.hosts = Hosts()
        self.cdn = LoopbackServer(self._cdn)
        self.messaging = LoopbackServer(self._messaging)

    def start(self) -> FakeTwilio:
        super().start()
        self.cdn.start()
        self.messaging.start()
        return self

    def stop(self) -> None:
        self.cdn.stop()
        self.messaging.stop()
        super().stop()

    @property
    def base_url(self) -> str:
        return self.origin

    @property
    def messaging_base_url(self) -> str:
        return f"http://127.0.0.1:{self.messaging.port}"

    def reset(self) -> None:
        self.posts.clear()
        self.failures.clear()
        self.attempts = 0
        self.media.clear()
        self.media_auth_failures = 0
        self.hosts = Hosts()

    def add_media(self, content_type: str, data: bytes, **how: object) -> str:
        """Store media; returns its URL as Twilio writes it in MediaUrl0 (the API host)."""
        sid = "ME" + uuid.uuid4().hex
        self.media[sid] = StoredMedia(content_type, data, **how)  # type: ignore[arg-type]
        return (f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/"
                f"MM{uuid.uuid4().hex}/Media/{sid}")

    def fail_typing(self, *statuses: int) -> None:
        self.hosts.typing_failures.extend(statuses)

    @property
    def typing(self) -> list[Typing]:
        return list(self.hosts.typing)

    def _signed_path(self, sid: str) -> str:
        expires = int(time.time()) + 300
        signature = hmac.new(AUTH_TOKEN.encode(), f"{sid}:{expires}".encode(),
                             hashlib.sha256).hexdigest()
        return f"/media/{sid}?Expires={expires}&Signature={signature}"

    async def _media(self, request: Request) -> Reply:
        """GET .../Media/ME...: basic auth, then a 307 to a signed URL on the CDN."""
        if not _basic_ok(request):
            self.media_auth_failures += 1
            return _error(401, 20003, "Authenticate")
        stored = self.media.get(request.path.rsplit("/", 1)[-1])
        if stored is None or stored.status == 404:
            return _error(404, 20404, "The requested resource was not found")
        if stored.status != 200:
            return _error(stored.status, 20500, "Fake failure")
        location = f"http://127.0.0.1:{self.cdn.port}" + self._signed_path(
            request.path.rsplit("/", 1)[-1])
        return Reply(307, {"location": location, "content-type": "text/html"}, b"")

    async def _cdn(self, request: Request) -> Reply:
        self.hosts.cdn_requests.append(request)
        if "authorization" in request.headers:
            self.hosts.cdn_saw_credentials += 1
            return Reply(400, {"content-type": "text/plain"},
                         b"Only one auth mechanism allowed")
        query = dict(parse_qsl(urlsplit(request.target).query))
        sid = request.path.removeprefix("/media/")
        try:
            expires = int(query.get("Expires", "0"))
        except ValueError:
            expires = 0
        want = hmac.new(AUTH_TOKEN.encode(), f"{sid}:{expires}".encode(),
                        hashlib.sha256).hexdigest()
        stored = self.media.get(sid)
        if (stored is None or expires < time.time()
                or not hmac.compare_digest(query.get("Signature", ""), want)):
            return Reply(403, {"content-type": "text/plain"}, b"Access denied")
        stored.fetches += 1
        if stored.stall or stored.endless:
            return Reply(200, {"content-type": stored.content_type},
                         stream=lambda w: self._slow_body(w, stored))
        return Reply(200, {"content-type": stored.content_type}, stored.data)

    @staticmethod
    async def _slow_body(writer: asyncio.StreamWriter, stored: StoredMedia) -> None:
        await asyncio.sleep(stored.stall)
        while True:  # an endless body ends when the client hangs up (the server cancels us)
            for i in range(0, len(stored.data), 65536):
                await write_chunk(writer, stored.data[i:i + 65536])
            if not stored.endless:
                break
        await write_chunk(writer, b"")

    async def _messaging(self, request: Request) -> Reply:
        if not _basic_ok(request):
            return _error(401, 20003, "Authenticate")
        if request.method != "POST" or request.path != "/v2/Indicators/Typing.json":
            return _error(404, 20404, "The requested resource was not found")
        if self.hosts.typing_failures:
            status = self.hosts.typing_failures.popleft()
            return _error(status, 20500, "Fake failure")
        form = dict(parse_qsl(request.body.decode(), keep_blank_values=True))
        if form.get("channel") != "whatsapp" or not form.get("messageId", "").startswith(
                ("SM", "MM")):
            return _error(400, 21211, "Invalid messageId or channel")
        self.hosts.typing.append(Typing(form, time.monotonic()))
        return Reply(200, {"content-type": "application/json"}, b'{"success": true}')

    def fail_next(self, *statuses: int) -> None:
        self.failures.extend(statuses)

    def sent_to(self, to: str) -> list[Post]:
        return [p for p in list(self.posts) if p.form.get("To") == to]

    async def wait_for(self, to: str, count: int, within: float = 15) -> list[Post]:
        """The posts to `to` once there are at least `count` (bounded wait)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            posts = self.sent_to(to)
            if len(posts) >= count:
                return posts
            await asyncio.sleep(0.05)
        raise AssertionError(f"{len(self.sent_to(to))} posts to {to}, expected {count}")

    async def _handle(self, request: Request) -> Reply:
        expected = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
        if request.method == "GET" and "/Media/" in request.path:
            return await self._media(request)
        self.attempts += 1
        if not _basic_ok(request):
            return _error(401, 20003, "Authenticate")
        if request.method != "POST" or request.path != expected:
            return _error(404, 20404, "The requested resource was not found")
        if self.failures:
            status = self.failures.popleft()
            return _error(status, 20429 if status == 429 else 20500, "Fake failure")
        form = dict(parse_qsl(request.body.decode(), keep_blank_values=True))
        for name in ("From", "To", "Body"):
            if not form.get(name):
                return _error(400, 21602 if name == "Body" else 21604, f"{name} is required")
        if len(form["Body"].encode("utf-16-le")) // 2 > 1600:
            return _error(400, 21617,
                          "The concatenated message body exceeds the 1600 character limit")
        sid = "SM" + uuid.uuid4().hex
        self.posts.append(Post(form, sid, time.monotonic()))
        now = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
        resource = {
            "account_sid": ACCOUNT_SID, "api_version": "2010-04-01", "body": form["Body"],
            "date_created": now, "date_sent": None, "date_updated": now,
            "direction": "outbound-api", "error_code": None, "error_message": None,
            "from": form["From"], "messaging_service_sid": None, "num_media": "0",
            "num_segments": "1", "price": None, "price_unit": None, "sid": sid,
            "status": "queued", "to": form["To"],
            "subresource_uris": {"media": f"{expected[:-5]}/{sid}/Media.json"},
            "uri": f"{expected[:-5]}/{sid}.json",
        }
        return Reply(201, {"content-type": "application/json"}, json.dumps(resource).encode())


def inbound_form(sender: str, body: str, *, sid: str | None = None, num_media: int = 0,
                 account_sid: str = ACCOUNT_SID, to: str = OUR_NUMBER,
                 media: list[tuple[str, str]] | None = None) -> dict[str, str]:
    """The full field set Twilio posts for an inbound WhatsApp message.

    `media` is (url, content type) pairs, e.g. from `FakeTwilio.add_media`; a media message's
    sid starts with MM, a text message's with SM.
    """
    if media:
        num_media = len(media)
    message_sid = sid or ("MM" if num_media else "SM") + uuid.uuid4().hex
    form = {
        "SmsMessageSid": message_sid, "NumMedia": str(num_media), "ProfileName": "Test User",
        "WaId": sender.removeprefix("whatsapp:+"), "SmsSid": message_sid, "SmsStatus": "received",
        "Body": body, "To": to, "NumSegments": "1", "ReferralNumMedia": "0",
        "MessageSid": message_sid, "AccountSid": account_sid, "From": sender,
        "ApiVersion": "2010-04-01",
    }
    if media:
        for i, (url, content_type) in enumerate(media):
            form[f"MediaContentType{i}"] = content_type
            form[f"MediaUrl{i}"] = url
    elif num_media:
        form["MediaContentType0"] = "image/jpeg"
        form["MediaUrl0"] = (f"https://api.twilio.com/2010-04-01/Accounts/{account_sid}"
                             f"/Messages/{message_sid}/Media/ME1")
    return form


def sign(url: str, form: dict[str, str], token: str = AUTH_TOKEN) -> str:
    return str(RequestValidator(token).compute_signature(url, form))


def new_sender() -> str:
    return f"whatsapp:+5511{uuid.uuid4().int % 10**9:09d}"
