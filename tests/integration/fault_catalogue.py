"""The fault catalogue: each entry injects one fault and says what the service must do.

`tests/integration/test_fault_report.py` runs them all against one service and prints a
summary line: faults injected, survived, messages lost, cross-user reads.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx

from chatms.service.inbound import UPSTREAM_REPLY
from chatms.service.inbound_media import FETCH_FAILED_REPLY, TRANSCRIBE_FAILED_REPLY
from tests.attackers import (
    ENHANCE_YOUR_CALM,
    closed_by_server,
    grpc_call,
    grpc_frame,
    rapid_reset,
    slow_post,
)
from tests.fakes.openai import FakeOpenAI, Script
from tests.fakes.twilio import FakeTwilio, inbound_form, new_sender, sign
from tests.integration.grpc_client import StreamResult, chat_stream
from tests.support import AUTH_TOKEN, ServeProcess, fetch, new_user

OGG = b"OggS\x00\x02" + bytes(range(256)) * 16

OK, UNAVAILABLE = grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE
SLOW = [f"s{i} " for i in range(40)]
SLOW_TEXT = "".join(SLOW)


@dataclass
class Ledger:
    """What the service accepted (must be stored) and what it must have refused.

    WhatsApp messages count as lost when their row is not closed or no answer went out, and
    as duplicated for every answer beyond one per turn.
    """

    accepted: list[str] = field(default_factory=list)
    cross_user_reads: int = 0
    outcomes: dict[str, str] = field(default_factory=dict)
    whatsapp_lost: int = 0
    duplicated_answers: int = 0


@dataclass
class Env:
    target: str
    http_url: str
    fake: FakeOpenAI
    twilio: FakeTwilio
    ledger: Ledger
    restart_db: Callable[[], Awaitable[None]]
    rows: Callable[[str], Awaitable[list[Any]]]
    counter: int = 0
    # Starts another replica, a real `chatms serve` process on the same database.
    spawn: Callable[[], ServeProcess] | None = None
    db_url: str = ""
    crash: dict[str, float] = field(default_factory=dict)  # what the crash cases measured

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

async def _post(env: Env, *forms: dict[str, str]) -> list[int]:
    """Deliver signed webhook posts at the same moment; their status codes."""
    url = env.http_url + "/webhooks/twilio/whatsapp"
    async with httpx.AsyncClient(timeout=20) as http:
        replies = await asyncio.gather(*(
            http.post(url, data=form, headers={"x-twilio-signature": sign(url, form)})
            for form in forms))
    return [r.status_code for r in replies]


async def _answered_once(env: Env, sender: str, sids: list[str], answers: int = 1) -> list[str]:
    """Bodies sent to `sender` once its messages are closed; lost and duplicated are booked."""
    closed = 0
    for _ in range(300):  # bounded: 15 s
        rows = await env.rows(sender)
        closed = sum(1 for r in rows if r["status"] == "done" and r["message_sid"] in sids)
        if closed == len(sids) and len(env.twilio.sent_to(sender)) >= answers:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # bounded observation window: a second answer would show up here
    sent = [p.form["Body"] for p in env.twilio.sent_to(sender)]
    env.ledger.whatsapp_lost += len(sids) - closed + max(0, answers - len(sent))
    env.ledger.duplicated_answers += max(0, len(sent) - answers)
    return sent


async def voice_note_fetch_fails(env: Env) -> bool:
    """The media host has lost the voice note: a polite reply, once, and no upstream call."""
    url = env.twilio.add_media("audio/ogg", OGG, status=404)
    form = inbound_form(new_sender(), "", media=[(url, "audio/ogg")])
    codes = await _post(env, form)
    sent = await _answered_once(env, form["From"], [form["MessageSid"]])
    return codes == [200] and sent == [FETCH_FAILED_REPLY] and env.fake.requests == []


async def voice_note_media_stalls(env: Env) -> bool:
    """The media CDN stalls past the media deadline: a polite reply, not a hang."""
    url = env.twilio.add_media("audio/ogg", OGG, stall=30)
    form = inbound_form(new_sender(), "", media=[(url, "audio/ogg")])
    codes = await _post(env, form)
    sent = await _answered_once(env, form["From"], [form["MessageSid"]])
    return codes == [200] and sent == [FETCH_FAILED_REPLY]


async def transcription_fails(env: Env) -> bool:
    env.fake.transcripts.append(503)
    url = env.twilio.add_media("audio/ogg", OGG)
    form = inbound_form(new_sender(), "", media=[(url, "audio/ogg")])
    codes = await _post(env, form)
    sent = await _answered_once(env, form["From"], [form["MessageSid"]])
    return codes == [200] and sent == [TRANSCRIBE_FAILED_REPLY] and env.fake.requests == []


async def burst_redelivered_while_typing_fails(env: Env) -> bool:
    """A burst of three, one of them delivered twice at once, while the typing indicator
    fails: one answer holding all three, every MessageSid closed once."""
    env.twilio.fail_typing(500, 500, 500)
    sender = new_sender()
    texts = [f"burst {uuid.uuid4().hex[:8]}" for _ in range(3)]
    forms = [inbound_form(sender, text) for text in texts]
    codes = await _post(env, forms[0])
    codes += await _post(env, forms[1], forms[1])
    codes += await _post(env, forms[2])
    sent = await _answered_once(env, sender, [f["MessageSid"] for f in forms])
    env.ledger.accepted.extend(texts)
    return codes == [200] * 4 and sent == ["You said: " + "\n".join(texts)]


async def voice_note_in_a_burst_with_upstream_failure(env: Env) -> bool:
    """Text and a voice note in one burst, and the model fails: one apology, nothing lost."""
    env.fake.queue(*[Script(status=500)] * 3)  # the first try and both retries
    sender = new_sender()
    url = env.twilio.add_media("audio/ogg", OGG)
    forms = [inbound_form(sender, "listen to this"),
             inbound_form(sender, "", media=[(url, "audio/ogg")])]
    codes = await _post(env, *forms)
    sent = await _answered_once(env, sender, [f["MessageSid"] for f in forms])
    return codes == [200, 200] and sent == [UPSTREAM_REPLY] and len(env.fake.requests) == 3

async def kill_9_mid_answers(env: Env) -> bool:
    """kill -9 of a replica with two turns running: one streaming a new chat's answer, one
    of an existing chat still waiting for its first token. Both questions and the flushed
    partial answer are kept, the answers are marked interrupted, and both chats take turns
    again (here, through the other replica) within about 15 s."""
    assert env.spawn is not None
    replica = await asyncio.to_thread(env.spawn)
    user = new_user()
    existing = (await env.turn(user=user)).chat_id
    env.fake.queue(Script(pieces=SLOW, gap=0.2), Script(pieces=["late"], first_delay=60))
    texts = [f"crash question {env.counter}-{n}" for n in (1, 2)]
    seen, new_chat = "", ""
    async with httpx.AsyncClient(timeout=20) as http, http.stream(
        "POST", replica.http_url + "/chat", json={"user_id": user, "user_message": texts[0]},
        headers={"authorization": AUTH_TOKEN, "accept": "text/event-stream"},
    ) as reply:
        async for line in reply.aiter_lines():
            if line.startswith("data: "):
                data = json.loads(line[6:])
                new_chat = data.get("chat_id") or new_chat
                seen += data["delta"]
                if len(seen) >= 9:
                    break
        waiting = asyncio.ensure_future(chat_stream(
            replica.grpc_target, user, texts[1], existing, deadline=60))
        await asyncio.sleep(1.0)  # the second turn is in, and a flush of the first is out
        assert replica.proc is not None
        replica.proc.kill()
        killed = time.monotonic()
    env.ledger.accepted += texts
    await waiting
    free = await _until_free(env, user, [new_chat, existing], killed)
    env.crash["chat_free_s"] = free
    rows = [await _last_two(env, chat_id) for chat_id in (new_chat, existing)]
    (q1, a1), (q2, a2) = rows
    return (free < 20 and (q1, q2) == tuple(texts) and a1[1] == a2[1] == "interrupted"
            and a1[0].startswith(seen) and SLOW_TEXT.startswith(a1[0]) and a2[0] == "")


async def _until_free(env: Env, user: str, chats: list[str], since: float) -> float:
    """Seconds from `since` until every chat takes a turn again (bounded)."""
    for chat_id in chats:
        for _ in range(120):
            if (await env.turn(user=user, chat_id=chat_id)).code == OK:
                break
            await asyncio.sleep(0.25)
    return time.monotonic() - since


async def _last_two(env: Env, chat_id: str) -> tuple[str, tuple[str, str]]:
    """The crashed turn of a chat: its question, and its answer with its completion."""
    rows = await fetch(env.db_url, "SELECT role, content, completion FROM messages"
                                   " WHERE chat_id = $1 ORDER BY seq", chat_id)
    # The crashed turn is the one before the turn that proved the chat free.
    question, answer = rows[-4], rows[-3]
    return question["content"], (answer["content"], answer["completion"])


def _grpc_port(env: Env) -> int:
    return int(env.target.rsplit(":", 1)[1])


async def rapid_reset_flood(env: Env) -> bool:
    """Two connections of HEADERS + RST_STREAM, no token: GOAWAY; a turn meanwhile is served."""
    floods = [asyncio.to_thread(rapid_reset, "127.0.0.1", _grpc_port(env), 10_000)
              for _ in range(2)]
    results, turn = await asyncio.gather(asyncio.gather(*floods), env.turn())
    return turn.code == OK and all(r.goaway == ENHANCE_YOUR_CALM for r in results)


async def slow_webhook_bodies(env: Env) -> bool:
    """Webhook bodies that never end are cut at the body deadline; probes answer meanwhile."""
    host, port = env.http_url.removeprefix("http://").split(":")
    clients = await asyncio.to_thread(
        lambda: [slow_post(host, int(port), "/webhooks/twilio/whatsapp") for _ in range(100)])
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            ready = (await http.get(env.http_url + "/readyz")).status_code == 200
        turn = await env.turn()
        cut = await asyncio.to_thread(lambda: [closed_by_server(c, 6) for c in clients])
    finally:
        for c in clients:
            c.close()
    return ready and turn.code == OK and all(cut)


async def hostile_grpc_frames(env: Env) -> bool:
    """A 200 MB length prefix, non-ASCII metadata, a mistyped field: INVALID_ARGUMENT each."""
    port, chat = _grpc_port(env), "/pb.ChatService/ChatStream"
    calls = [
        dict(body=grpc_frame(b"x" * 1024, declared=200_000_000), end=False),
        dict(body=grpc_frame(b"\x12\x01a\x1a\x01b"), extra=[(b"x-note", "ñ".encode())]),
        dict(body=grpc_frame(b"\x10\x05\x1a\x01b")),
    ]
    statuses = []
    for kwargs in calls:
        found, (sock, _) = await asyncio.to_thread(
            grpc_call, port, chat, token=AUTH_TOKEN, **kwargs)  # type: ignore[arg-type]
        sock.close()
        statuses.append(found and found.get(b"grpc-status"))
    return statuses == [b"3", b"3", b"3"]


NETWORK_EDGE = [rapid_reset_flood, slow_webhook_bodies, hostile_grpc_frames]


CATALOGUE: list[Callable[[Env], Awaitable[bool]]] = [
    upstream_429_then_ok, upstream_5xx_every_time, cut_before_first_token,
    cut_after_first_token, error_object_in_stream, malformed_sse, no_done_marker,
    empty_answer, length_finish, idle_upstream, client_deadline, racing_turns, foreign_chat,
    database_restart, invalid_input, http_client_leaves_mid_stream, http_garbage,
    webhook_redelivered_at_once, webhook_forged, *HOSTILE_UPSTREAM, voice_note_fetch_fails,
    voice_note_media_stalls, transcription_fails, burst_redelivered_while_typing_fails,
    voice_note_in_a_burst_with_upstream_failure, kill_9_mid_answers,
    *NETWORK_EDGE,
]
