"""One turn, whatever the door: stored whole or partial, leased, limited, reported."""

from __future__ import annotations

import asyncio
import time

import pytest

from chatms.config import TurnSettings
from chatms.domain.errors import (
    ChatBusy,
    ChatNotFound,
    InvalidInput,
    PayloadTooLarge,
    Unavailable,
    UpstreamUnavailable,
)
from tests.fakes.memory import Reply
from tests.service.conftest import rig


async def test_a_whole_turn_is_stored_and_reported() -> None:
    """User message and answer are stored together; the result and report say how it ended."""
    r = rig(Reply(["Hi", " you"], finish_reason="stop"))
    async with r.chats.turn("ann", None, "hello there", "test") as turn:
        deltas = [d async for d in turn]
    assert deltas == ["Hi", " you"]
    result = turn.result
    assert (result.content, result.completion.value, result.finish_reason) == (
        "Hi you", "complete", "stop")
    assert result.usage.completion_tokens == 2  # as the upstream reported it
    detail = await r.chats.chat("ann", turn.chat_id)
    assert detail.system_message is not None
    assert detail.system_message.content == "You are a helpful assistant."
    assert [(m.role, m.content, m.completion) for m in detail.messages] == [
        ("user", "hello there", "complete"),
        ("assistant", "Hi you", "complete"),
    ]
    [report] = r.reports
    assert (report.outcome, report.transport, report.deltas, report.new_chat) == (
        "ok", "test", 2, True)
    assert report.first_token_at is not None and report.started <= report.first_token_at


async def test_without_reported_usage_the_answer_is_counted_here() -> None:
    """No usage from the upstream: the result counts the answer's tokens itself."""
    r = rig(Reply(["one two", " three"], usage_reported=False))
    async with r.chats.turn("ann", None, "count", "test") as turn:
        async for _ in turn:
            pass
    assert turn.result.usage.completion_tokens == 3
    assert r.reports[0].usage.completion_tokens == 0  # the report keeps the upstream's figure


async def test_a_new_chat_is_inserted_only_after_the_first_delta() -> None:
    """No database work stands between the upstream and the first delta of a new chat."""
    r = rig(Reply(["a", "b"]))
    async with r.chats.turn("ann", None, "go", "test") as turn:
        deltas = aiter(turn)
        await anext(deltas)
        assert "create" not in r.repo.calls
        await anext(deltas)
        await asyncio.sleep(0)  # the insert was started beside the rest of the answer
        assert "create" in r.repo.calls
        async for _ in deltas:
            pass


async def test_a_client_leaving_keeps_the_partial_answer_as_cancelled() -> None:
    """Cancelled mid-answer: the upstream is closed and the partial answer stored."""
    r = rig(Reply(["a", "b", "c"], gap=0.05))
    chat_id = await r.turn("ann", "first")

    async def client() -> None:
        async with r.chats.turn("ann", chat_id, "second", "test") as turn:
            async for delta in turn:
                if delta == "a":
                    await asyncio.Event().wait()  # the client stops reading here

    task = asyncio.create_task(client())
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    messages = (await r.chats.chat("ann", chat_id)).messages
    assert (messages[-1].content, messages[-1].completion) == ("a", "cancelled")
    assert r.upstream.closed == 2 and r.reports[-1].outcome == "cancelled"


async def test_a_new_chat_refused_upstream_before_any_answer_is_not_stored() -> None:
    """The client never learned the chat's id: storing it would leave an orphan per retry."""
    r = rig(Reply([], fail_after=0, error=UpstreamUnavailable("down")))
    with pytest.raises(UpstreamUnavailable):
        await r.turn("ann", "hello")
    assert r.repo.chats == {}
    assert r.reports[0].outcome == "upstream_error" and r.reports[0].error == "UpstreamUnavailable"


async def test_an_existing_chat_keeps_a_refused_question_out_of_the_next_prompt() -> None:
    """A question the upstream refused stays in the history but is not asked again."""
    r = rig(Reply(["ok"]), Reply([], fail_after=0, error=UpstreamUnavailable("down")),
            Reply(["fine"]))
    chat_id = await r.turn("ann", "first")
    with pytest.raises(UpstreamUnavailable):
        await r.turn("ann", "refused one", chat_id)
    await r.turn("ann", "third", chat_id)
    stored = [(m.content, m.completion) for m in (await r.chats.chat("ann", chat_id)).messages]
    assert ("refused one", "complete") in stored and ("", "upstream_error") in stored
    assert [c for _, c in r.upstream.prompts[-1]] == [
        "You are a helpful assistant.", "first", "ok", "third"]


async def test_a_second_turn_on_a_busy_chat_is_refused_at_once() -> None:
    """One turn at a time per chat: the second is refused, the first goes on."""
    r = rig(Reply(["a", "b"], gap=0.05))
    chat_id = await r.turn("ann", "first")
    async with r.chats.turn("ann", chat_id, "long", "test") as first:
        with pytest.raises(ChatBusy):
            await r.turn("ann", "meanwhile", chat_id)
        async for _ in first:
            pass
    assert len((await r.chats.chat("ann", chat_id)).messages) == 4


async def test_a_long_turn_renews_its_lease() -> None:
    """A turn longer than half its lease renews it, so a crashed process is the only way out."""
    r = rig(Reply(["a", "b", "c"], gap=0.1), lease_seconds=0.2)
    chat_id = await r.turn("ann", "first")
    r.repo.calls.clear()
    await r.turn("ann", "second", chat_id)
    assert r.repo.calls.count("renew") >= 2


async def test_another_users_chat_is_not_found() -> None:
    """A chat of another user is refused as if it did not exist."""
    r = rig()
    chat_id = await r.turn("ann", "mine")
    with pytest.raises(ChatNotFound):
        await r.turn("bob", "yours?", chat_id)
    with pytest.raises(ChatNotFound):
        await r.chats.chat("bob", chat_id)


async def test_input_limits_come_from_the_settings() -> None:
    """The limits are the ones set, not the defaults (here far below them)."""
    r = rig(max_message_chars=10, max_user_id_chars=3)
    await r.turn("ann", "x" * 10)
    with pytest.raises(PayloadTooLarge, match="the limit is 10"):
        await r.turn("ann", "x" * 11)
    with pytest.raises(PayloadTooLarge, match="longer than 3"):
        await r.turn("anna", "hi")
    for bad in ("", "   ", "nul\x00"):
        with pytest.raises(InvalidInput):
            await r.turn("ann", bad)
    assert TurnSettings().max_message_chars == 32_000  # the default stays what it was


async def test_the_turn_deadline_is_the_settings_turn_timeout() -> None:
    """The upstream is told the turn's deadline: now plus TURN_TIMEOUT_SECONDS."""
    r = rig(turn_timeout=42.0)
    start = time.monotonic()
    await r.turn("ann", "hello")
    assert start + 42.0 <= r.upstream.deadlines[0] <= time.monotonic() + 42.0


async def test_an_answer_the_database_cannot_take_is_stored_later() -> None:
    """Database away at the end of a turn: the client hears Unavailable, and the answer is
    stored in the background once the database is back."""
    r = rig(Reply(["kept"]))
    chat_id = await r.turn("ann", "first")
    with pytest.raises(Unavailable, match="retried in the background"):
        async with r.chats.turn("ann", chat_id, "second", "test") as turn:
            async for _ in turn:
                r.repo.unavailable = True
    assert r.reports[-1].outcome == "store_failed"
    r.repo.unavailable = False
    await r.chats.drain(grace=5)
    contents = [m.content for m in (await r.chats.chat("ann", chat_id)).messages]
    assert contents[-2:] == ["second", "kept"]


async def test_after_stop_accepting_new_turns_are_refused() -> None:
    """Shutdown: new turns get Unavailable; one cut afterwards is stored as shutdown."""
    r = rig(Reply(["a", "b"], gap=0.05))
    chat_id = await r.turn("ann", "first")

    async def running() -> None:
        async with r.chats.turn("ann", chat_id, "second", "test") as turn:
            async for _ in turn:
                r.chats.stop_accepting()
                await asyncio.Event().wait()

    task = asyncio.create_task(running())
    await asyncio.sleep(0.2)
    with pytest.raises(Unavailable, match="shutting down"):
        await r.turn("ann", "late")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    last = (await r.chats.chat("ann", chat_id)).messages[-1]
    assert (last.content, last.completion) == ("a", "shutdown")
    assert await r.chats.wait_idle(1.0)


async def test_pages_of_exactly_limit_chats_end_without_a_cursor() -> None:
    """Newest first; a last page holding exactly `limit` chats has no next cursor."""
    r = rig()
    ids = [await r.turn("ann", f"chat {n}") for n in range(4)]
    first = await r.chats.chats("ann", limit=2)
    assert [c.id for c in first.chats] == [ids[3], ids[2]] and first.next_cursor
    last = await r.chats.chats("ann", limit=2, cursor=first.next_cursor)
    assert [c.id for c in last.chats] == [ids[1], ids[0]] and last.next_cursor is None
    with pytest.raises(InvalidInput):
        await r.chats.chats("ann", limit=0)
