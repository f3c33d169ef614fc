"""The chat aggregate and its token budget, without any I/O."""

from __future__ import annotations

import pytest

from chatms.domain.budget import (
    MESSAGE_OVERHEAD,
    REPLY_PRIMING,
    ROLE_TOKENS,
    TokenBudget,
    known_context_window,
    message_tokens,
)
from chatms.domain.errors import ChatEnded, InvalidInput, MessageTooLarge
from chatms.domain.model import Chat, ChatConfig, Completion, Role, Usage

CONFIG = ChatConfig(
    model="gpt-4o-mini", temperature=1.0, top_p=1.0, max_tokens=1024, stop=(),
    presence_penalty=0.0, frequency_penalty=0.0,
)


def new_chat(system_tokens: int = 5) -> Chat:
    return Chat.start(id="c1", owner="u1", config=CONFIG, system_prompt="sys",
                      system_tokens=system_tokens)


def answer(chat: Chat, turn, text: str, tokens: int) -> None:
    chat.add_assistant_message(turn, text, tokens, Completion.COMPLETE, "stop", Usage(1, tokens))


def test_message_tokens_include_role_and_framing() -> None:
    """A message costs its content plus the role token and the per-message overhead."""
    assert message_tokens(10) == 10 + ROLE_TOKENS + MESSAGE_OVERHEAD == 14


def test_prompt_limit_reserves_the_reply_and_priming() -> None:
    """The prompt may use the window minus the reserved reply and the reply priming."""
    assert TokenBudget(1000, 200).prompt_limit == 1000 - 200 - REPLY_PRIMING


def test_budget_without_room_for_a_prompt_is_refused() -> None:
    """A reply reservation that fills the whole window is a configuration error."""
    with pytest.raises(ValueError, match="no room"):
        TokenBudget(100, 98)


def test_known_context_windows_match_dated_snapshots() -> None:
    """Dated snapshots find their family; unknown models find nothing."""
    assert known_context_window("gpt-4o-2024-08-06") == 128_000
    assert known_context_window("gpt-4-0613") == 8_192
    assert known_context_window("gpt-4o-mini") == 128_000
    assert known_context_window("llama3") is None


def test_prompt_starts_with_the_system_message() -> None:
    """The prompt is the system message, then the live window in order."""
    chat = new_chat()
    turn = chat.add_user_message("hi", 1, TokenBudget(1000, 100))
    answer(chat, turn, "hello", 1)
    assert list(chat.prompt()) == [("system", "sys"), ("user", "hi"), ("assistant", "hello")]
    assert [m.seq for m in chat.live] == [1, 2]


def test_oldest_messages_are_erased_and_the_system_message_kept() -> None:
    """When a message would overflow, the oldest non-system messages leave the window."""
    budget = TokenBudget(100, 40)  # prompt limit 57
    chat = new_chat(system_tokens=5)  # 9 tokens with framing
    first = chat.add_user_message("a", 16, budget)  # 20
    answer(chat, first, "b", 16)  # 20 -> 49 in all
    second = chat.add_user_message("c", 6, budget)  # 10 -> 59 > 57: erase seq 1
    assert second.erased_seqs == [1]
    assert chat.system.role is Role.SYSTEM and not chat.system.erased
    assert [m.seq for m in chat.live] == [2, 3]
    assert chat.live_tokens <= budget.prompt_limit


def test_message_that_cannot_fit_is_refused_with_its_size() -> None:
    """A message too large even beside the system message alone is refused, nothing erased."""
    budget = TokenBudget(100, 40)
    chat = new_chat(system_tokens=5)
    turn = chat.add_user_message("a", 10, budget)
    answer(chat, turn, "b", 10)
    with pytest.raises(MessageTooLarge) as refused:
        chat.add_user_message("huge", 45, budget)
    assert refused.value.tokens == 49 and refused.value.limit == 57 - 9
    assert "49 tokens" in str(refused.value)
    assert [m.seq for m in chat.live] == [1, 2] and not any(m.erased for m in chat.live)


def test_empty_partial_answers_are_not_sent_upstream() -> None:
    """An answer cancelled before its first token is stored but not shown to the model."""
    chat = new_chat()
    turn = chat.add_user_message("hi", 1, TokenBudget(1000, 100))
    chat.add_assistant_message(turn, "", 0, Completion.CANCELLED, None, Usage())
    assert list(chat.prompt()) == [("system", "sys")]
    assert turn.assistant is not None and turn.assistant.tokens == 0


def test_ended_chat_and_blank_messages_are_refused() -> None:
    """An ended chat takes no message, and a blank message is invalid."""
    chat = new_chat()
    with pytest.raises(InvalidInput):
        chat.add_user_message("  ", 1, TokenBudget(1000, 100))
    chat.end()
    with pytest.raises(ChatEnded):
        chat.add_user_message("hi", 1, TokenBudget(1000, 100))


def test_a_question_that_got_no_answer_is_not_asked_again() -> None:
    """A turn that failed before any answer stays in history but leaves the prompt."""
    chat = new_chat()
    budget = TokenBudget(1000, 100)
    failed = chat.add_user_message("poison", 1, budget)
    chat.add_assistant_message(failed, "", 0, Completion.UPSTREAM_ERROR, None, Usage())
    chat.add_user_message("next", 1, budget)
    assert list(chat.prompt()) == [("system", "sys"), ("user", "next")]
    assert [m.content for m in chat.live] == ["poison", "", "next"]
