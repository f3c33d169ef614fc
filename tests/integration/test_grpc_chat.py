"""ChatStream over the wire, with grpcio as the client, real PostgreSQL and the fake OpenAI."""

from __future__ import annotations

import asyncio
import itertools
import uuid

import grpc
import pytest

from tests.fakes.openai import FakeOpenAI, Script
from tests.integration.grpc_client import chat_stream
from tests.support import AUTH_TOKEN, grpcio_stubs, new_user
from tests.support import grpc_target as target


async def test_new_chat_streams_cumulative_content(start_app, fake_openai: FakeOpenAI) -> None:
    """A new chat streams the answer with each message holding the whole answer so far."""
    app = await start_app()
    user = new_user()
    fake_openai.queue(Script(gap=0.05))  # spaced events arrive as separate messages
    result = await chat_stream(target(app), user, "hello there")
    assert result.code == grpc.StatusCode.OK, result.details
    assert result.contents == ["You said:", "You said: hello", "You said: hello there"]
    assert all(m.user_id == user for m in result.messages)
    uuid.UUID(result.chat_id)
    sent = fake_openai.requests[0].body
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    # How the answer ended comes in the trailers: additions the course's clients ignore.
    assert result.trailers["chatms-completion"] == "complete"
    assert result.trailers["chatms-finish-reason"] == "stop"
    fake_openai.queue(Script(finish_reason="length"))
    cut = await chat_stream(target(app), user, "again", chat_id=result.chat_id)
    assert cut.trailers["chatms-finish-reason"] == "length"
    detached = await chat_stream(target(app), user, "alone", detach=True)
    assert detached.answer == "You said: alone"
    assert detached.trailers["chatms-completion"] == "complete"
    refused = await chat_stream(target(app), user, "")
    assert refused.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "chatms-completion" not in refused.trailers


async def test_continued_chat_sends_history_in_order(start_app, fake_openai: FakeOpenAI) -> None:
    """A continued chat sends the system message first, then the history in order."""
    app = await start_app(INITIAL_CHAT_MESSAGE="Be brief.")
    user = new_user()
    first = await chat_stream(target(app), user, "one")
    second = await chat_stream(target(app), user, "two", chat_id=first.chat_id)
    assert second.code == grpc.StatusCode.OK, second.details
    assert second.chat_id == first.chat_id
    messages = fake_openai.requests[-1].body["messages"]
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "You said: one"},
        {"role": "user", "content": "two"},
    ]


async def test_foreign_and_unknown_chats_look_the_same(start_app) -> None:
    """Another user's chat and an unknown chat both answer NOT_FOUND with one message."""
    app = await start_app()
    owned = await chat_stream(target(app), new_user(), "mine")
    foreign = await chat_stream(target(app), new_user(), "yours?", chat_id=owned.chat_id)
    unknown = await chat_stream(target(app), new_user(), "any?", chat_id=str(uuid.uuid4()))
    assert foreign.code == unknown.code == grpc.StatusCode.NOT_FOUND
    assert foreign.details == unknown.details


async def test_bad_requests_are_invalid_argument(start_app) -> None:
    """Malformed ids and empty fields answer INVALID_ARGUMENT and reach no upstream."""
    app = await start_app()
    bad_id = await chat_stream(target(app), new_user(), "hi", chat_id="not-a-uuid")
    no_user = await chat_stream(target(app), "", "hi")
    no_text = await chat_stream(target(app), new_user(), "   ")
    for result in (bad_id, no_user, no_text):
        assert result.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "UUID" in bad_id.details and "user_id" in no_user.details


async def test_wrong_or_missing_token_is_unauthenticated(start_app, fake_openai) -> None:
    """Calls without the service token are refused before any work."""
    app = await start_app()
    for token in (None, "", "wrong", "Bearer wrong", "test-service-token-3f9c2"):
        result = await chat_stream(target(app), new_user(), "hi", token=token)
        assert result.code == grpc.StatusCode.UNAUTHENTICATED
    assert fake_openai.requests == []
    ok = await chat_stream(target(app), new_user(), "hi", token="Bearer test-service-token-3f9c2a")
    assert ok.code == grpc.StatusCode.OK


async def test_ended_chat_is_failed_precondition(start_app) -> None:
    """A chat that was ended refuses further messages."""
    app = await start_app()
    user = new_user()
    first = await chat_stream(target(app), user, "hi")
    await app.chats.end(user, first.chat_id)
    again = await chat_stream(target(app), user, "more", chat_id=first.chat_id)
    assert again.code == grpc.StatusCode.FAILED_PRECONDITION


async def test_upstream_statuses_map_to_grpc_codes(start_app, fake_openai: FakeOpenAI) -> None:
    """Upstream 429, 5xx and rejected keys become RESOURCE_EXHAUSTED, UNAVAILABLE and
    FAILED_PRECONDITION, without the key in the message."""
    app = await start_app()
    cases = [(429, grpc.StatusCode.RESOURCE_EXHAUSTED), (500, grpc.StatusCode.UNAVAILABLE),
             (401, grpc.StatusCode.FAILED_PRECONDITION)]
    for status, code in cases:
        fake_openai.queue(Script(status=status))
        result = await chat_stream(target(app), new_user(), "hi")
        assert result.code == code, (status, result.details)
        assert "sk-" not in result.details
    rejected = "credentials"
    fake_openai.queue(Script(status=401))
    result = await chat_stream(target(app), new_user(), "hi")
    assert rejected in result.details


async def test_missing_api_key_fails_the_turn_not_the_start(start_app) -> None:
    """Without OPENAI_API_KEY the service runs and a turn says what is missing."""
    app = await start_app(OPENAI_API_KEY="")
    result = await chat_stream(target(app), new_user(), "hi")
    assert result.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "OPENAI_API_KEY" in result.details


async def test_delta_mode_sends_only_new_text(start_app, fake_openai: FakeOpenAI) -> None:
    """With the opt-in delta field each message carries only the text new since the last."""
    from tests.support import AUTH_TOKEN, grpcio_stubs

    app = await start_app()
    pb2, pb2_grpc = grpcio_stubs()
    fake_openai.queue(Script(gap=0.05))
    request = pb2.ChatRequest(user_id=new_user(), user_message="a b", delta=True)
    async with grpc.aio.insecure_channel(target(app)) as channel:
        call = pb2_grpc.ChatServiceStub(channel).ChatStream(
            request, metadata=(("authorization", AUTH_TOKEN),))
        contents = [m.content async for m in call]
    assert contents == ["You said:", " a", " b"]


async def test_a_backlog_is_merged_into_fewer_messages(start_app, fake_openai) -> None:
    """Deltas that arrive together (a burst) go out as one message, none lost or reordered."""
    app = await start_app()
    words = [f" w{i}" for i in range(200)]
    fake_openai.queue(Script(pieces=words, burst=20))
    result = await chat_stream(target(app), new_user(), "burst")
    assert result.code == grpc.StatusCode.OK
    assert result.answer == "".join(words)
    assert len(result.messages) <= 20
    assert all(b.startswith(a) for a, b in zip(result.contents, result.contents[1:], strict=False))


@pytest.mark.parametrize("coalesce", ["true", "false"])
async def test_many_streams_on_one_connection_each_get_their_own_answer(
    start_app, fake_openai: FakeOpenAI, coalesce: str
) -> None:
    """Twenty calls multiplexed on one grpcio channel, their deltas written in the same loop
    iterations (coalesced into one send by default): each gets exactly its answer, in order."""
    app = await start_app(GRPC_COALESCE_WRITES=coalesce)
    pb2, pb2_grpc = grpcio_stubs()
    for _ in range(20):
        fake_openai.queue(Script(gap=0.01))
    words = "alpha beta gamma delta epsilon"

    async def one(stub: object, i: int) -> list[str]:
        request = pb2.ChatRequest(user_id=new_user(), user_message=f"m{i} {words}")
        call = stub.ChatStream(request, metadata=(("authorization", AUTH_TOKEN),), timeout=20)
        return [response.content async for response in call]

    async with grpc.aio.insecure_channel(target(app)) as channel:
        stub = pb2_grpc.ChatServiceStub(channel)
        answers = await asyncio.gather(*(one(stub, i) for i in range(20)))
    for i, contents in enumerate(answers):
        assert contents[-1] == f"You said: m{i} {words}"
        assert all(b.startswith(a) for a, b in itertools.pairwise(contents))
