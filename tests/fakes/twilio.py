"""A fake Twilio REST API (Messages.json) on 127.0.0.1, and helpers to sign webhook posts.

It checks HTTP basic auth like Twilio, parses the form, answers 201 with a message resource,
records every accepted post, and fails on demand (429, 500) for the next requests.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections import deque
from dataclasses import dataclass
from urllib.parse import parse_qsl

from twilio.request_validator import RequestValidator

from tests.fakes.http11 import LoopbackFake, Reply, Request

ACCOUNT_SID = "AC" + "5f1e" * 8
AUTH_TOKEN = "fake-twilio-auth-token-9d8c7b6a"
OUR_NUMBER = "whatsapp:+14155238886"


@dataclass
class Post:
    form: dict[str, str]
    sid: str
    at: float


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

    @property
    def base_url(self) -> str:
        return self.origin

    def reset(self) -> None:
        self.posts.clear()
        self.failures.clear()
        self.attempts = 0

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
        self.attempts += 1
        auth = request.headers.get("authorization", "")
        good = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
        if auth != good:
            return _error(401, 20003, "Authenticate")
        if request.method != "POST" or request.path != expected:
            return _error(404, 20404, "The requested resource was not found")
        if self.failures:
            status = self.failures.popleft()
            return _error(status, 20429 if status == 429 else 20500, "Fake failure")
        form = dict(parse_qsl(request.body.decode(), keep_blank_values=True))
        for field in ("From", "To", "Body"):
            if not form.get(field):
                return _error(400, 21602 if field == "Body" else 21604, f"{field} is required")
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
                 account_sid: str = ACCOUNT_SID, to: str = OUR_NUMBER) -> dict[str, str]:
    """The full field set Twilio posts for an inbound WhatsApp message."""
    message_sid = sid or "SM" + uuid.uuid4().hex
    form = {
        "SmsMessageSid": message_sid, "NumMedia": str(num_media), "ProfileName": "Test User",
        "WaId": sender.removeprefix("whatsapp:+"), "SmsSid": message_sid, "SmsStatus": "received",
        "Body": body, "To": to, "NumSegments": "1", "ReferralNumMedia": "0",
        "MessageSid": message_sid, "AccountSid": account_sid, "From": sender,
        "ApiVersion": "2010-04-01",
    }
    if num_media:
        form["MediaContentType0"] = "image/jpeg"
        form["MediaUrl0"] = f"https://api.twilio.com/2010-04-01/Accounts/{account_sid}/Media/ME1"
    return form


def sign(url: str, form: dict[str, str], token: str = AUTH_TOKEN) -> str:
    return str(RequestValidator(token).compute_signature(url, form))


def new_sender() -> str:
    return f"whatsapp:+5511{uuid.uuid4().int % 10**9:09d}"
