"""No input to the HTTP chat and history routes or the WhatsApp webhook produces a 500."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fakes.twilio import ACCOUNT_SID, AUTH_TOKEN, inbound_form, new_sender, sign
from tests.support import AUTH_TOKEN as SERVICE_TOKEN
from tests.support import ServeProcess

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=8,
)
FIELDS = st.fixed_dictionaries({}, optional={
    "user_id": JSON_VALUES, "user_message": JSON_VALUES, "chat_id": JSON_VALUES,
})


@pytest.fixture
def proc(serve, fake_twilio) -> Iterator[ServeProcess]:
    yield serve(TWILIO_ACCOUNT_SID=ACCOUNT_SID, TWILIO_AUTH_TOKEN=AUTH_TOKEN,
                TWILIO_API_BASE_URL=fake_twilio.base_url, MAX_MESSAGE_CHARS="200")


def answered_cleanly(reply: httpx.Response) -> None:
    assert reply.status_code < 500 or reply.status_code in (502, 503, 504), reply.text
    assert "Traceback" not in reply.text


@SETTINGS
@given(body=st.binary(max_size=300) | FIELDS.map(lambda d: json.dumps(d).encode()),
       stream=st.booleans(), token=st.sampled_from([SERVICE_TOKEN, "", "Bearer x"]))
def test_chat_route_never_fails_with_500(
    proc: ServeProcess, body: bytes, stream: bool, token: str
) -> None:
    """Any body, JSON or not, any field types, any token: a clear status, never a 500."""
    headers = {"authorization": token, "content-type": "application/json"}
    if stream:
        headers["accept"] = "text/event-stream"
    reply = httpx.post(proc.http_url + "/chat", content=body, headers=headers, timeout=20)
    answered_cleanly(reply)
    if reply.headers.get("content-type", "").startswith("application/json"):
        json.loads(reply.text)


@SETTINGS
@given(fields=st.dictionaries(st.text(max_size=12), st.text(max_size=40), max_size=6),
       body=st.text(max_size=300), signed=st.booleans())
def test_webhook_never_fails_with_500(
    proc: ServeProcess, fields: dict[str, str], body: str, signed: bool
) -> None:
    """Any extra fields and any text, signed or not: 200, 400 or 403, never a 500."""
    url = proc.http_url + "/webhooks/twilio/whatsapp"
    form = {**inbound_form(new_sender(), body), **fields}
    headers = {"x-twilio-signature": sign(url, form) if signed else "bm9wZQ=="}
    reply = httpx.post(url, data=form, headers=headers, timeout=20)
    answered_cleanly(reply)
    assert reply.status_code in (200, 400, 403)


@SETTINGS
@given(user=st.text(max_size=20), limit=st.text(max_size=4), cursor=st.text(max_size=40),
       chat_id=st.text(min_size=1, max_size=40).map(lambda s: quote(s, safe="")),
       body=st.binary(max_size=100) | FIELDS.map(lambda d: json.dumps(d).encode()))
def test_history_routes_never_fail_with_500(
    proc: ServeProcess, user: str, limit: str, cursor: str, chat_id: str, body: bytes
) -> None:
    """Any user id, limit, cursor, chat id or body on the history routes: never a 500."""
    auth = {"authorization": SERVICE_TOKEN}
    params = {"user_id": user, "limit": limit, "cursor": cursor}
    with httpx.Client(base_url=proc.http_url, headers=auth, timeout=20) as http:
        for reply in (http.get("/chats", params=params),
                      http.get(f"/chats/{chat_id}", params={"user_id": user}),
                      http.post(f"/chats/{chat_id}/end", content=body)):
            answered_cleanly(reply)
            assert reply.status_code in (200, 400, 404, 405, 413), reply.text


DEEP_JSON = st.integers(1, 20_000).flatmap(lambda depth: st.sampled_from([
    "[" * depth + "]" * depth,
    '{"a":' * depth + "1" + "}" * depth,
    '{"user_id": "u", "user_message": ' + "[" * depth + "]" * depth + "}",
])).map(str.encode)
ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=40,
).map(lambda value: json.dumps(value).encode())
ROUTES = [("POST", "/chat"), ("GET", "/chats"), ("GET", "/chats/{id}"),
          ("POST", "/chats/{id}/end"), ("POST", "/webhooks/twilio/whatsapp"),
          ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")]


@SETTINGS
@given(body=ANY_JSON | DEEP_JSON, chat_id=st.uuids().map(str) | st.just("nope"))
def test_any_json_to_every_route_never_fails_with_500(
    proc: ServeProcess, body: bytes, chat_id: str
) -> None:
    """Arbitrary JSON, nested as deep as the body limit allows, to every route and method."""
    headers = {"authorization": SERVICE_TOKEN, "content-type": "application/json"}
    # A connection per request: Hypercorn closes one whose request body went unread (a
    # 405, a GET with a body) without saying so, and a reused one would race that close.
    fresh = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=proc.http_url, headers=headers, timeout=20, limits=fresh) as http:
        for method, path in ROUTES:
            for verb in {method, "POST"}:
                reply = http.request(verb, path.format(id=chat_id), content=body)
                answered_cleanly(reply)
    assert "Traceback" not in proc.log()
