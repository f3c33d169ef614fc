"""Context that does not forget, against real `chatms serve` processes and the fake OpenAI:
rolling summaries that fold, titles, and a model per chat."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import grpc
import httpx
import pytest

from chatms.domain.context import SUMMARY_HEADING
from tests.e2e.grpc_sync import chat
from tests.fakes.openai import FakeOpenAI, WholeScript
from tests.support import AUTH_TOKEN, ServeProcess, fetch, new_user

SMALL_WINDOW = {"MODEL_MAX_TOKENS": "500", "MAX_TOKENS": "40"}
HINDI = "नमस्ते दुनिया"  # 5 tokens in o200k_base (gpt-4o-mini), 13 in cl100k_base (gpt-4)


def query(database_url: str, sql: str, *args: Any) -> list[Any]:
    return asyncio.run(fetch(database_url, sql, *args))


def summaries(database_url: str, chat_id: str) -> list[Any]:
    return query(database_url, "SELECT version, through_seq, content FROM chat_summaries"
                 " WHERE chat_id = $1 ORDER BY version", chat_id)


def wait_until(check: Callable[[], bool], seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def jobs_ended(procs: tuple[ServeProcess, ...]) -> float:
    """Summary and title attempts the processes have finished (stored or not), all counted."""
    return sum(metric(p, "chatms_summaries_total{") + metric(p, "chatms_titles_total{")
               for p in procs)


def settle(fake: FakeOpenAI, *procs: ServeProcess) -> None:
    """Wait until every summary or title the fake was asked for has been answered and its
    job has ended in chatms (its outcome counted once it was stored, or found stale)."""
    wait_until(lambda: all(s.finished for s in fake.whole_requests))
    wait_until(lambda: jobs_ended(procs) >= len(fake.whole_requests))


def topic_turn(target: str, user: str, i: int, chat_id: str | None, **kw: str) -> str:
    text = f"Tell me about topic-{i} " + "with a few more words of padding " * 4
    return chat(target, user, text, chat_id, **kw)[-1].chat_id


def metric(proc: ServeProcess, name: str) -> float:
    lines = httpx.get(proc.http_url + "/metrics", timeout=5).text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name))


def get_chat(proc: ServeProcess, user: str, chat_id: str) -> dict[str, Any]:
    response = httpx.get(f"{proc.http_url}/chats/{chat_id}", params={"user_id": user},
                         headers={"authorization": AUTH_TOKEN}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_a_long_chat_folds_its_summaries_and_keeps_every_original(
    serve, fake_openai: FakeOpenAI, database_url: str
) -> None:
    p = serve(**SMALL_WINDOW)
    user, chat_id = new_user(), None
    seen_before_turn: list[str | None] = []
    for i in range(1, 15):
        stored = summaries(database_url, chat_id) if chat_id else []
        seen_before_turn.append(stored[-1]["content"] if stored else None)
        chat_id = topic_turn(p.grpc_target, user, i, chat_id)
        settle(fake_openai, p)
    assert chat_id is not None
    stored = summaries(database_url, chat_id)
    assert len(stored) >= 3, "several evictions, several summaries"
    assert [s["version"] for s in stored] == list(range(1, len(stored) + 1))
    marks = [s["through_seq"] for s in stored]
    assert marks == sorted(marks) and len(set(marks)) == len(marks)
    # Each summary folds the previous one: the oldest topic survives every fold.
    assert all("topic-1 " in s["content"] + " " for s in stored)
    for later in fake_openai.summaries[1:]:
        assert "Previous summary:\nSummary: topic-1" in later.transcript
    # The upstream sees the summary in place: system, then the summary, then live messages
    # none of which the summary covers.
    for request, summary in zip(fake_openai.requests, seen_before_turn, strict=True):
        messages = request.body["messages"]
        assert messages[0]["role"] == "system" and SUMMARY_HEADING not in messages[0]["content"]
        if summary is None:
            assert all(SUMMARY_HEADING not in m["content"] for m in messages)
            continue
        assert messages[1] == {"role": "system", "content": SUMMARY_HEADING + summary}
        assert all(m["role"] != "system" for m in messages[2:])
    last = fake_openai.requests[-1].body["messages"]
    live_topics = [m["content"].split()[3] for m in last[2:] if m["role"] == "user"]
    used = next(s for s in stored if s["content"] == seen_before_turn[-1])
    # topic-i is asked in message 2i - 1.
    assert all(int(t.removeprefix("topic-")) * 2 - 1 > used["through_seq"] for t in live_topics)
    # Stored, never destructive: every original message, and the summary beside them.
    view = get_chat(p, user, chat_id)
    assert view["system_message"]["seq"] == 0  # the chat's own, beside its messages
    assert len(view["messages"]) == 2 * 14
    assert [m["content"].split()[3] for m in view["messages"][0::2]] == [
        f"topic-{i}" for i in range(1, 15)]
    assert view["summary"]["through_seq"] == stored[-1]["through_seq"]
    assert view["summary"]["content"] == stored[-1]["content"]
    assert view["summary"]["version"] == len(stored) and view["summary"]["tokens"] > 0
    assert metric(p, 'chatms_summaries_total{outcome="ok"}') == len(stored)
    assert metric(p, "chatms_summary_tokens_total") > 0


def test_a_failing_summary_leaves_the_chat_working_and_the_next_folds_everything(
    serve, fake_openai: FakeOpenAI, database_url: str
) -> None:
    p = serve(SUMMARY_TIMEOUT_SECONDS="1", TITLES_ENABLED="false", **SMALL_WINDOW)
    fake_openai.queue_whole("summary", WholeScript(status=500), WholeScript(delay=2.5),
                            WholeScript(null_content=True))
    user, chat_id = new_user(), None
    for i in range(1, 12):
        chat_id = topic_turn(p.grpc_target, user, i, chat_id)  # every turn answered
        settle(fake_openai, p)
    assert chat_id is not None
    assert metric(p, 'chatms_summaries_total{outcome="error"}') == 1
    assert metric(p, 'chatms_summaries_total{outcome="timeout"}') == 1
    assert metric(p, 'chatms_summaries_total{outcome="empty"}') == 1
    stored = summaries(database_url, chat_id)
    assert stored and stored[0]["content"].startswith("Summary: topic-1 topic-2")
    assert "topic-1" not in p.log() and "padding" not in p.log(), "no message text in logs"


def test_two_replicas_never_summarise_one_chat_at_once(
    serve, fake_openai: FakeOpenAI, database_url: str
) -> None:
    a = serve(TITLES_ENABLED="false", **SMALL_WINDOW)
    b = serve(TITLES_ENABLED="false", **SMALL_WINDOW)
    fake_openai.queue_whole("summary", *[WholeScript(delay=0.8) for _ in range(40)])
    user, chat_id = new_user(), None
    for i in range(1, 17):  # faster than a summary: the replicas contend for the claim
        chat_id = topic_turn((a, b)[i % 2].grpc_target, user, i, chat_id)
    assert chat_id is not None
    for i in range(17, 21):  # then one turn per summary
        settle(fake_openai, a, b)
        chat_id = topic_turn((a, b)[i % 2].grpc_target, user, i, chat_id)
    settle(fake_openai, a, b)
    spans = sorted((s.at, s.finished_at or 0.0) for s in fake_openai.summaries)
    assert len(spans) >= 2
    assert all(later[0] >= earlier[1] for earlier, later in pairwise(spans))
    assert metric(a, 'chatms_summaries_total{outcome="busy"}') + metric(
        b, 'chatms_summaries_total{outcome="busy"}') >= 1, "the replicas did contend"
    stored = summaries(database_url, chat_id)
    assert [s["version"] for s in stored] == list(range(1, len(stored) + 1))
    marks = [s["through_seq"] for s in stored]
    assert marks == sorted(marks) and len(set(marks)) == len(marks)


def test_titles_appear_after_the_first_exchange(serve, fake_openai: FakeOpenAI) -> None:
    p = serve()
    user = new_user()
    fake_openai.queue_whole("title", WholeScript(), WholeScript(status=500))
    first = chat(p.grpc_target, user, "Plan a trip to Lisbon in May please")[-1].chat_id
    wait_until(lambda: bool(fake_openai.titles) and fake_openai.titles[0].finished)
    second = chat(p.grpc_target, user, "Another question entirely")[-1].chat_id

    def titles() -> dict[str, str]:
        page = httpx.get(p.http_url + "/chats", params={"user_id": user},
                         headers={"authorization": AUTH_TOKEN}, timeout=10).json()
        return {c["chat_id"]: c["title"] for c in page["chats"]}

    wait_until(lambda: titles().get(first) == "Plan a trip to")
    wait_until(lambda: len(fake_openai.titles) == 2 and fake_openai.titles[1].finished)
    wait_until(lambda: metric(p, 'chatms_titles_total{outcome="error"}') == 1)
    assert titles()[second] == "Another question entirely", "a failed title keeps the fallback"
    assert get_chat(p, user, first)["title"] == "Plan a trip to"
    assert metric(p, 'chatms_titles_total{outcome="error"}') == 1


def test_a_chat_keeps_its_model_and_counts_with_its_encoding(
    serve, fake_openai: FakeOpenAI, database_url: str
) -> None:
    p = serve(MODELS="gpt-4", TITLES_ENABLED="false")
    user = new_user()
    own = chat(p.grpc_target, user, HINDI, model="gpt-4")[-1].chat_id
    assert fake_openai.requests[-1].body["model"] == "gpt-4"
    chat(p.grpc_target, user, HINDI, own)  # continued without naming it: still gpt-4
    assert fake_openai.requests[-1].body["model"] == "gpt-4"
    default = chat(p.grpc_target, user, HINDI)[-1].chat_id
    assert fake_openai.requests[-1].body["model"] == "gpt-4o-mini"
    tokens = {row["chat_id"]: row["tokens"] for row in query(
        database_url, "SELECT chat_id::text, tokens FROM messages WHERE role = 'user'"
        " AND chat_id = ANY($1::uuid[])", [own, default])}
    assert tokens == {own: 13 + 4, default: 5 + 4}  # content plus role and framing
    assert get_chat(p, user, own)["model"] == "gpt-4"

    with pytest.raises(grpc.RpcError) as refused:
        chat(p.grpc_target, user, "hi", model="gpt-5")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "gpt-4o-mini" in (refused.value.details() or "")
    assert "gpt-4" in (refused.value.details() or "")
    with pytest.raises(grpc.RpcError) as switched:
        chat(p.grpc_target, user, "hi", own, model="gpt-4o-mini")
    assert switched.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    http = httpx.post(p.http_url + "/chat", headers={"authorization": AUTH_TOKEN}, timeout=20,
                      json={"user_id": user, "user_message": "hi", "model": "nope"})
    assert http.status_code == 400 and http.json()["error"]["code"] == "invalid_argument"
    assert "gpt-4" in http.json()["error"]["message"]
    http = httpx.post(p.http_url + "/chat", headers={"authorization": AUTH_TOKEN}, timeout=20,
                      json={"user_id": user, "user_message": "hi", "model": "gpt-4"})
    assert http.status_code == 200 and fake_openai.requests[-1].body["model"] == "gpt-4"
