"""Properties of the chat aggregate under any sequence of turns (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from chatms.domain.budget import TokenBudget, message_tokens
from chatms.domain.errors import MessageTooLarge
from chatms.domain.model import Chat, ChatConfig, Completion, Role, Usage

turns = st.lists(
    st.tuples(st.integers(0, 400), st.integers(0, 300), st.sampled_from(list(Completion))),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(
    window=st.integers(200, 3000),
    reserve=st.integers(1, 150),
    system_tokens=st.integers(0, 100),
    script=turns,
)
def test_budget_invariants_hold_for_any_conversation(
    window: int, reserve: int, system_tokens: int, script: list[tuple[int, int, Completion]]
) -> None:
    """System first and kept, window within budget, erasure oldest first, totals consistent."""
    budget = TokenBudget(window, reserve) if window - reserve - 3 > 0 else TokenBudget(window, 1)
    config = ChatConfig("m", 1.0, 1.0, 1024, (), 0.0, 0.0)
    chat = Chat.start(id="c", owner="o", config=config, system_prompt="s",
                      system_tokens=system_tokens)
    erased: list[int] = []
    added_tokens = chat.system.tokens
    for user_tokens, answer_tokens, completion in script:
        room = budget.prompt_limit - chat.system.tokens
        try:
            turn = chat.add_user_message("question", user_tokens, budget)
        except MessageTooLarge:
            assert message_tokens(user_tokens) > room
            continue
        assert message_tokens(user_tokens) <= room
        erased += turn.erased_seqs
        added_tokens += turn.user.tokens
        assert chat.live_tokens <= budget.prompt_limit
        text = "answer" if answer_tokens else ""
        reply = chat.add_assistant_message(turn, text, answer_tokens, completion, None, Usage())
        added_tokens += reply.tokens

        prompt = list(chat.prompt())
        assert prompt[0] == ("system", "s") and not chat.system.erased
        assert all(role != Role.SYSTEM.value for role, _ in prompt[1:])
        live = [m.seq for m in chat.live]
        assert live == sorted(live) and all(not m.erased for m in chat.live)
        # Erased messages are exactly the oldest ones, in order.
        assert erased == list(range(1, len(erased) + 1))
        assert not live or live[0] == len(erased) + 1
    assert chat.live_tokens + 0 <= added_tokens
    assert chat.live_tokens == chat.system.tokens + sum(m.tokens for m in chat.live)
