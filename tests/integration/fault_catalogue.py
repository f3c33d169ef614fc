"""The fault catalogue: each entry injects one fault and says what the service must do.

`tests/integration/test_fault_report.py` runs them all against one service and prints a
summary line: faults injected, survived, messages lost, cross-user reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
import httpx

from tests.fakes.openai import FakeOpenAI, Script
from tests.fakes.twilio import FakeTwilio, inbound_form, new_sender, sign
from tests.integration.grpc_client import StreamResult, chat_stream
from tests.support import AUTH_TOKEN, new_user

OK, UNAVAILABLE = grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE
SLOW = [f"s{i} " for i in range(40)]


@dataclass
class Ledger:
    """What the service accepted (must be stored) and what it must have refused."""

    accepted: list[str] = field(default_factory=list)
    cross_user_reads: int = 0
    outcomes: dict[str, str] = field(default_factory=dict)


@dataclass
class Env:
    target: str
    http_url: str
    fake: FakeOpenAI
    twilio: FakeTwilio
    ledger: Ledger
    restart_db: Callable[[], Awaitable[None]]
    counter: int = 0

    async def turn(self, script: Script | None = None, *, user: str | None = None,
                   chat_id: str | None = None, deadline: float = 20,
                   text: str | None = None) -> StreamResult:
        """One turn; what the service accepted must end up stored.

        Accepted: a turn that answered, or sent any part of an answer, or continued an
        existing chat and then failed upstream. A new chat's first turn that failed before
        any answer is, by design, not stored (the client never learned its id).
        """
        if script is not None:
            self.fake.queue(script)
        self.counter += 1
        text = text or f"fault message {self.counter}"
        user = new_user() if user is None else user
        result = await chat_stream(self.target, user, text, chat_id, deadline=deadline)
        failed_upstream = result.code in (
            UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.CANCELLED,
        ) and "database" not in result.details
        if result.code == OK or result.messages or (chat_id is not None and failed_upstream):
            self.ledger.accepted.append(text)
        return result


async def upstream_429_then_ok(env: Env) -> bool:
    return (await env.turn(Script(status=429, retry_after="0"))).code == OK


async def upstream_5xx_every_time(env: Env) -> bool:
    for _ in range(3):
        env.fake.queue(Script(status=502))
    return (await env.turn()).code == UNAVAILABLE


async def cut_before_first_token(env: Env) -> bool:
    return (await env.turn(Script(cut_after=0))).code == OK


async def cut_after_first_token(env: Env) -> bool:
    r = await env.turn(Script(pieces=SLOW[:5], cut_after=2))
    return r.code == UNAVAILABLE and r.answer == "s0 s1 "


async def error_object_in_stream(env: Env) -> bool:
    return (await env.turn(Script(pieces=SLOW[:5], error_after=1))).code == UNAVAILABLE


async def malformed_sse(env: Env) -> bool:
    return (await env.turn(Script(raw_before=["data: {oops\n\n", ": ping\n\n"]))).code == OK


async def no_done_marker(env: Env) -> bool:
    return (await env.turn(Script(done=False))).code == OK


async def empty_answer(env: Env) -> bool:
    r = await env.turn(Script(pieces=[]))
    return r.code == OK and r.answer == ""


async def length_finish(env: Env) -> bool:
    return (await env.turn(Script(finish_reason="length"))).code == OK


async def idle_upstream(env: Env) -> bool:
    r = await env.turn(Script(pieces=SLOW[:3], gap=3))
    return r.code == grpc.StatusCode.DEADLINE_EXCEEDED


async def client_deadline(env: Env) -> bool:
    r = await env.turn(Script(pieces=SLOW, gap=0.05), deadline=0.5)
    return r.code == grpc.StatusCode.DEADLINE_EXCEEDED


async def racing_turns(env: Env) -> bool:
    user = new_user()
    chat_id = (await env.turn(user=user)).chat_id
    env.fake.queue(Script(pieces=SLOW[:4], gap=0.1), Script(pieces=SLOW[:4], gap=0.1))
    a, b = await asyncio.gather(env.turn(user=user, chat_id=chat_id),
                                env.turn(user=user, chat_id=chat_id))
    return sorted([a.code.name, b.code.name]) == ["ABORTED", "OK"]


async def foreign_chat(env: Env) -> bool:
    owned = await env.turn()
    r = await env.turn(chat_id=owned.chat_id)
    if r.code != grpc.StatusCode.NOT_FOUND:
        env.ledger.cross_user_reads += 1
    return r.code == grpc.StatusCode.NOT_FOUND


async def database_restart(env: Env) -> bool:
    user = new_user()
    chat_id = (await env.turn(user=user)).chat_id
    await env.restart_db()
    for _ in range(50):  # bounded: the pool must come back by itself
        r = await env.turn(user=user, chat_id=chat_id)
        if r.code == OK:
            return True
        await asyncio.sleep(0.1)
    return False


async def invalid_input(env: Env) -> bool:
    bad = [await env.turn(text="\x00"), await env.turn(chat_id="nope"),
           await env.turn(user="")]
    return all(r.code == grpc.StatusCode.INVALID_ARGUMENT for r in bad)


async def http_client_leaves_mid_stream(env: Env) -> bool:
    """The SSE client hangs up after two deltas: the turn is cancelled and stored."""
    env.fake.queue(Script(pieces=SLOW, gap=0.05))
    env.counter += 1
    text = f"fault message {env.counter}"
    async with httpx.AsyncClient(timeout=20) as http, http.stream(
        "POST", env.http_url + "/chat", json={"user_id": new_user(), "user_message": text},
        headers={"authorization": AUTH_TOKEN, "accept": "text/event-stream"},
    ) as reply:
        deltas = 0
        async for line in reply.aiter_lines():
            deltas += line.startswith("event: delta")
            if deltas == 2:
                break
    env.ledger.accepted.append(text)
    return reply.status_code == 200 and deltas == 2


async def http_garbage(env: Env) -> bool:
    async with httpx.AsyncClient(timeout=20) as http:
        replies = [await http.post(env.http_url + "/chat", content=body,
                                   headers={"authorization": AUTH_TOKEN})
                   for body in (b"{", b"[]", b'{"user_id": 1}', b"\xff\xfe")]
    return all(r.status_code == 400 and r.json()["error"]["code"] for r in replies)


async def webhook_redelivered_at_once(env: Env) -> bool:
    """Twilio delivers one message twice at the same moment: one answer goes out."""
    url = env.http_url + "/webhooks/twilio/whatsapp"
    form = inbound_form(new_sender(), "are you there?")
    headers = {"x-twilio-signature": sign(url, form)}
    async with httpx.AsyncClient(timeout=20) as http:
        a, b = await asyncio.gather(http.post(url, data=form, headers=headers),
                                    http.post(url, data=form, headers=headers))
    await env.twilio.wait_for(form["From"], 1)
    await asyncio.sleep(0.5)  # a second answer, if any, would have gone out by now
    return a.status_code == b.status_code == 200 and len(env.twilio.sent_to(form["From"])) == 1


async def webhook_forged(env: Env) -> bool:
    url = env.http_url + "/webhooks/twilio/whatsapp"
    form = inbound_form(new_sender(), "let me in")
    async with httpx.AsyncClient(timeout=20) as http:
        reply = await http.post(url, data=form, headers={"x-twilio-signature": "Zm9yZ2Vk"})
    await asyncio.sleep(0.3)
    return reply.status_code == 403 and env.twilio.sent_to(form["From"]) == []


MAX_ANSWER = 32 * 1024  # MAX_ANSWER_CHARS for the default MAX_TOKENS (1024)


async def unstorable_text_in_answer(env: Env) -> bool:
    """NUL and a lone surrogate from the model: replaced, and the turn completes."""
    r = await env.turn(Script(pieces=["a\x00", "\ud800b"]))
    return r.code == OK and r.answer == "a\ufffd\ufffdb"


async def huge_answer(env: Env) -> bool:
    """A 10 MB answer is cut at the answer limit; the turn ends OK, flagged too_long."""
    r = await env.turn(Script(pieces=["x" * 65536] * 160))
    return r.code == OK and len(r.answer) == MAX_ANSWER


async def endless_stream(env: Env) -> bool:
    r = await env.turn(Script(endless=True, pieces=["y" * 1000], burst=64))
    return r.code == OK and len(r.answer) == MAX_ANSWER


async def line_without_end(env: Env) -> bool:
    """64 MB without a newline: cut at the event limit, the text before it kept."""
    r = await env.turn(Script(pieces=["so far "], giant_line=64 * 1024 * 1024))
    return r.code == UNAVAILABLE and r.answer == "so far "


async def usage_beyond_int32(env: Env) -> bool:
    return (await env.turn(Script(usage_counts=(2**40, 2**63)))).code == OK


async def body_not_in_its_encoding(env: Env) -> bool:
    """`Content-Encoding: gzip` over plain text, every attempt: UNAVAILABLE, turn kept."""
    user = new_user()
    chat_id = (await env.turn(user=user)).chat_id
    for _ in range(3):
        env.fake.queue(Script(content_encoding="gzip"))
    return (await env.turn(user=user, chat_id=chat_id)).code == UNAVAILABLE


async def nested_json_and_odd_finish_reason(env: Env) -> bool:
    """JSON nested past the parser's depth is skipped; a NUL-laden 100 kB finish reason is
    bounded and stored."""
    nested = "data: " + "[" * 200_000 + "\n\n"
    r = await env.turn(Script(raw_before=[nested], finish_reason="stop\x00" + "z" * 100_000))
    return r.code == OK


HOSTILE_UPSTREAM = [
    unstorable_text_in_answer, huge_answer, endless_stream, line_without_end,
    usage_beyond_int32, body_not_in_its_encoding, nested_json_and_odd_finish_reason,
]

CATALOGUE: list[Callable[[Env], Awaitable[bool]]] = [
    upstream_429_then_ok, upstream_5xx_every_time, cut_before_first_token,
    cut_after_first_token, error_object_in_stream, malformed_sse, no_done_marker,
    empty_answer, length_finish, idle_upstream, client_deadline, racing_turns, foreign_chat,
    database_restart, invalid_input, http_client_leaves_mid_stream, http_garbage,
    webhook_redelivered_at_once, webhook_forged, *HOSTILE_UPSTREAM,
]
