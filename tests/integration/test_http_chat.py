"""POST /chat over real HTTP (JSON and Server-Sent Events), real PostgreSQL and the fake OpenAI."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from tests.fakes.openai import FakeOpenAI, Script
from tests.integration.http_client import AUTH, chat_sse, client, fake_settled
from tests.support import AUTH_TOKEN, new_user, until


async def test_json_turn_and_continuation(start_app, fake_openai: FakeOpenAI) -> None:
    """A JSON turn answers the whole content; a second one with its chat id continues it."""
    app = await start_app()
    user = new_user()
    async with client(app) as http:
        first = await http.post("/chat", json={"user_id": user, "user_message": "hello there"},
                                headers={"authorization": f"Bearer {AUTH_TOKEN}"})
        assert first.status_code == 200, first.text
        body = first.json()
        assert body["content"] == "You said: hello there" and body["user_id"] == user
        again = await http.post("/chat", headers=AUTH, json={
            "chat_id": body["chat_id"], "user_id": user, "user_message": "and again"})
        assert again.json() == {"chat_id": body["chat_id"], "user_id": user,
                                "content": "You said: and again"}
    sent = fake_openai.requests[-1].body["messages"]
    assert [m["content"] for m in sent[1:]] == ["hello there", "You said: hello there",
                                                "and again"]


async def test_sse_stream_events_and_headers(start_app, fake_openai: FakeOpenAI) -> None:
    """SSE sends one delta event per delta (chat id in the first), then done with usage."""
    app = await start_app()
    user = new_user()
    fake_openai.queue(Script(gap=0.05))  # each delta in its own network read
    async with client(app) as http:
        result = await chat_sse(http, {"user_id": user, "user_message": "stream me now"})
        assert result.status == 200
        assert result.headers["cache-control"] == "no-cache"
        assert result.headers["x-accel-buffering"] == "no"
        names = [name for name, _ in result.events]
        assert names == ["delta"] * 4 + ["done"]
        deltas = result.named("delta")
        chat_id = deltas[0]["chat_id"]
        assert all(set(d) == {"delta"} for d in deltas[1:])
        assert [d["delta"] for d in deltas] == ["You said:", " stream", " me", " now"]
        done = result.named("done")[0]
        assert done == {"chat_id": chat_id, "content": "You said: stream me now",
                        "position": 23, "completion": "complete", "finish_reason": "stop",
                        "usage": {"prompt_tokens": 11, "completion_tokens": 4}}
        stored = (await http.get(f"/chats/{chat_id}", params={"user_id": user},
                                 headers=AUTH)).json()
        assert [m["content"] for m in stored["messages"]] == [
            "stream me now", "You said: stream me now"]


async def test_sse_deltas_that_arrive_together_are_one_event(
    start_app, fake_openai: FakeOpenAI
) -> None:
    """Deltas that one network read brings (a burst upstream) go out as one event."""
    app = await start_app()
    fake_openai.queue(Script(pieces=["a", "b", "c", "d"], burst=4))
    async with client(app) as http:
        result = await chat_sse(http, {"user_id": new_user(), "user_message": "burst"})
    assert [name for name, _ in result.events] == ["delta", "done"]
    assert result.named("delta")[0]["delta"] == "abcd"
    assert result.named("done")[0]["content"] == "abcd"


async def test_sse_error_event_midway_keeps_partial(start_app, fake_openai: FakeOpenAI) -> None:
    """An upstream cut midway ends the SSE stream with an error event; the partial is kept."""
    app = await start_app()
    user = new_user()
    fake_openai.queue(Script(pieces=["one", " two", " three", " four"], cut_after=2, gap=0.05))
    async with client(app) as http:
        result = await chat_sse(http, {"user_id": user, "user_message": "break please"})
        assert result.status == 200
        assert [name for name, _ in result.events] == ["delta", "delta", "error"]
        error = result.named("error")[0]["error"]
        assert error["code"] == "upstream_unavailable" and error["message"]
        chat_id = result.named("delta")[0]["chat_id"]
        stored = (await http.get(f"/chats/{chat_id}", params={"user_id": user},
                                 headers=AUTH)).json()
    answer = stored["messages"][-1]
    assert answer["role"] == "assistant" and answer["content"] == "one two"
    assert answer["completion"] == "upstream_error"


async def test_sse_client_disconnect_cancels_turn(start_app, fake_openai: FakeOpenAI) -> None:
    """With DISCONNECTED_TURNS=cancel, closing the connection mid-stream ends the turn and
    stores the partial as cancelled."""
    app = await start_app(DISCONNECTED_TURNS="cancel")
    user = new_user()
    # The second delta comes 60 s after the first: long past every wait below, so only the
    # turn's cancellation (which the fake sees as its client hanging up) can end this answer,
    # however slowly a loaded machine notices the disconnect (1.5 s was raced under load).
    fake_openai.queue(Script(pieces=["a", " b"], gap=60))
    chat_id = await _leave_after_first_delta(app, user)
    answer = await _final_answer(app, user, chat_id, seconds=10)
    assert answer["completion"] == "cancelled" and answer["content"] == "a"
    await fake_settled(fake_openai)  # the upstream was let go of, long before its answer ended
    assert not fake_openai.requests[-1].finished


async def test_sse_client_disconnect_lets_the_turn_finish_by_default(
    start_app, fake_openai: FakeOpenAI
) -> None:
    """By default (continue) the turn goes on without its client and is stored whole."""
    app = await start_app()
    user = new_user()
    fake_openai.queue(Script(pieces=["a", " b", " c"], gap=0.3))
    chat_id = await _leave_after_first_delta(app, user)
    answer = await _final_answer(app, user, chat_id, seconds=10)
    assert answer["completion"] == "complete" and answer["content"] == "a b c"
    assert fake_openai.requests[-1].finished
    assert not app.chats.detached  # the detached turn let go of its slot


async def _leave_after_first_delta(app, user: str) -> str:
    headers = {**AUTH, "accept": "text/event-stream"}
    async with client(app) as http:
        async with http.stream("POST", "/chat", headers=headers,
                               json={"user_id": user, "user_message": "go"}) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    return str(httpx.Response(200, content=line[6:]).json()["chat_id"])
    raise AssertionError("no delta")


async def _final_answer(app, user: str, chat_id: str, seconds: float) -> dict[str, object]:
    """The chat's answer once it is final (not 'streaming' any more); fails after `seconds`."""
    async with client(app) as http:
        async def final() -> dict[str, object] | None:
            reply = await http.get(f"/chats/{chat_id}", params={"user_id": user}, headers=AUTH)
            if reply.status_code == 404:  # a new chat's row may still be on its way
                return None
            messages = reply.json()["messages"]
            done = len(messages) == 2 and messages[-1]["completion"] != "streaming"
            return messages[-1] if done else None

        return await until(final, "the turn's answer to be final", seconds)


async def test_request_errors(start_app) -> None:
    """Malformed JSON, bad fields, bad tokens, bad paths and ended chats get JSON errors."""
    app = await start_app()
    user = new_user()
    async with client(app) as http:
        async def post(payload: object = None, content: bytes | None = None,
                       headers: dict[str, str] | None = None) -> httpx.Response:
            if content is None:
                return await http.post("/chat", json=payload, headers=headers or AUTH)
            return await http.post("/chat", content=content, headers=headers or AUTH)

        cases = {
            400: [await post(content=b"{not json"), await post(["a list"]),
                  await post({"user_id": 7, "user_message": "x"}),
                  await post({"user_id": user}),
                  await post({"user_id": user, "user_message": "  "}),
                  await post({"user_id": user, "user_message": "x", "chat_id": "nope"})],
            401: [await post({"user_id": user, "user_message": "x"}, headers={"x": "y"}),
                  await post({"user_id": user, "user_message": "x"},
                             headers={"authorization": "Bearer wrong"})],
        }
        for status, responses in cases.items():
            for response in responses:
                assert response.status_code == status, response.text
                error = response.json()["error"]
                assert error["code"] and error["message"]
                assert "Traceback" not in response.text and AUTH_TOKEN not in response.text
        assert cases[400][0].json()["error"]["message"] == "request body is not valid JSON"

        owned = (await post({"user_id": user, "user_message": "mine"})).json()["chat_id"]
        foreign = await post({"user_id": new_user(), "user_message": "x", "chat_id": owned})
        unknown = await post({"user_id": user, "user_message": "x",
                              "chat_id": str(uuid.uuid4())})
        assert foreign.status_code == unknown.status_code == 404
        assert foreign.json() == unknown.json()

        ended = await http.post(f"/chats/{owned}/end", json={"user_id": user}, headers=AUTH)
        assert ended.json() == {"chat_id": owned, "status": "ended"}
        refused = await post({"user_id": user, "user_message": "more", "chat_id": owned})
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "chat_ended"

        missing = await http.get("/nowhere", headers=AUTH)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        for path in ("/chats/%2F", "/chats/", "/healthz/"):  # not redirected to a guess
            slashed = await http.get(path, headers=AUTH)
            assert slashed.status_code == 404, path
            assert slashed.json()["error"]["code"] == "not_found"
        wrong = await http.get("/chat", headers=AUTH)
        assert wrong.status_code == 405
        assert wrong.json()["error"]["code"] == "method_not_allowed"


async def test_busy_chat_is_409(start_app, fake_openai: FakeOpenAI) -> None:
    """A second turn on a chat whose turn is still streaming answers 409 chat_busy."""
    app = await start_app()
    user = new_user()
    async with client(app) as http:
        chat_id = (await http.post("/chat", headers=AUTH, json={
            "user_id": user, "user_message": "start"})).json()["chat_id"]
        fake_openai.queue(Script(pieces=["slow", " answer"], gap=1.0))
        payload = {"chat_id": chat_id, "user_id": user, "user_message": "slow one"}
        slow = asyncio.ensure_future(http.post("/chat", json=payload, headers=AUTH))
        async def slow_reached_upstream() -> bool | None:
            return True if len(fake_openai.requests) == 2 else None

        await until(slow_reached_upstream, "the slow turn to reach the upstream")
        busy = await http.post("/chat", json=payload, headers=AUTH)
        assert busy.status_code == 409 and busy.json()["error"]["code"] == "chat_busy"
        assert (await slow).json()["content"] == "slow answer"


async def test_body_over_limit_is_413(start_app) -> None:
    """A body over MAX_BODY_BYTES is refused with 413, declared or streamed in chunks."""
    app = await start_app(MAX_BODY_BYTES="1024")
    big = {"user_id": new_user(), "user_message": "x" * 2000}
    async with client(app) as http:
        declared = await http.post("/chat", json=big, headers=AUTH)
    assert declared.status_code == 413, declared.text
    assert declared.json()["error"]["code"] == "payload_too_large"

    # No Content-Length: the limit applies while reading. A raw socket, so that the client
    # reads the answer even though the server stops reading the body early.
    reader, writer = await asyncio.open_connection("127.0.0.1", app.settings.server.web_port)
    chunk = b"c8\r\n" + b" " * 200 + b"\r\n"
    writer.write(b"POST /chat HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n"
                 + f"authorization: {AUTH_TOKEN}\r\ncontent-type: application/json\r\n\r\n"
                 .encode() + chunk * 6 + b"0\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.close()
    assert head.startswith(b"HTTP/1.1 413 "), head


async def test_upstream_failures_map_to_statuses(start_app, fake_openai: FakeOpenAI) -> None:
    """Upstream 429, 5xx, 4xx and a slow first token answer 429, 502, 502 and 504, JSON or SSE."""
    app = await start_app(UPSTREAM_FIRST_TOKEN_TIMEOUT="0.3")
    payload = {"user_id": new_user(), "user_message": "hi"}
    expected = [
        (Script(status=429, error_code="rate_limit_exceeded"), 429, "upstream_rate_limited"),
        (Script(status=500), 502, "upstream_unavailable"),
        (Script(status=400, error_code="invalid_request"), 502, "upstream_rejected"),
        (Script(first_delay=1.0), 504, "upstream_timeout"),
    ]
    async with client(app) as http:
        for script, status, code in expected:
            fake_openai.queue(script)
            response = await http.post("/chat", json=payload, headers=AUTH)
            assert response.status_code == status, (code, response.text)
            assert response.json()["error"]["code"] == code
            await fake_settled(fake_openai)
        # Before the first delta the stream has not started: still a plain JSON status.
        fake_openai.queue(Script(status=429))
        sse = await chat_sse(http, payload)
        assert sse.status == 429 and sse.body["error"]["code"] == "upstream_rate_limited"


async def test_missing_api_key_is_503(start_app) -> None:
    """Without OPENAI_API_KEY a turn answers 503 not_configured, naming no secret."""
    app = await start_app(OPENAI_API_KEY="")
    async with client(app) as http:
        response = await http.post(
            "/chat", json={"user_id": new_user(), "user_message": "hi"}, headers=AUTH)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "not_configured"
