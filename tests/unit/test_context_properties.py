"""Properties of the context sent upstream, with rolling summaries, for any history (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from chatms.domain.budget import TokenBudget, message_tokens
from chatms.domain.context import (
    SUMMARY_HEADING,
    FoldItem,
    Summary,
    fit_window,
    plan_summary,
)
from chatms.domain.errors import MessageTooLarge
from chatms.domain.model import Chat, ChatConfig, Completion, Message, Role, Usage

CONFIG = ChatConfig("m", 1.0, 1.0, 1024, (), 0.0, 0.0)

# One step of a conversation: a turn (user tokens, answer tokens, how it ended), or the
# background summariser finishing (input limit of its call, tokens of the summary it wrote).
turn_steps = st.tuples(
    st.just("turn"), st.integers(0, 300), st.integers(0, 200), st.sampled_from(list(Completion))
)
summary_steps = st.tuples(
    st.just("summary"), st.integers(1, 600), st.integers(1, 400), st.booleans()
)
scripts = st.lists(st.one_of(turn_steps, summary_steps), max_size=50)


@settings(max_examples=300, deadline=None)
@given(
    limit=st.integers(1, 3000),
    system=st.integers(0, 200),
    summary=st.none() | st.integers(0, 2000),
    live=st.lists(st.integers(0, 400), max_size=30),
    new=st.integers(0, 400),
)
def test_fit_window_evicts_the_fewest_oldest_and_fits(
    limit: int, system: int, summary: int | None, live: list[int], new: int
) -> None:
    fit = fit_window(limit, system, summary, live, new)
    if system + new > limit:
        return  # refused by the aggregate before it gets here
    assert fit.keep_summary == (summary is not None and system + summary + new <= limit)
    kept = live[fit.evict:]
    used = system + new + sum(kept) + (summary if fit.keep_summary and summary else 0)
    assert used == fit.tokens <= limit
    if fit.evict:  # one message fewer evicted would not have fitted
        assert used + live[fit.evict - 1] > limit


def _fold_items(history: list[Message], watermark: int) -> list[FoldItem]:
    return [FoldItem(m.seq, m.role.value, m.content, m.tokens)
            for m in history if m.erased and m.seq > watermark]


@settings(max_examples=300, deadline=None)
@given(
    window=st.integers(200, 3000),
    reserve=st.integers(1, 150),
    system_tokens=st.integers(0, 100),
    script=scripts,
)
def test_context_is_system_summary_then_live_suffix_within_budget(
    window: int, reserve: int, system_tokens: int, script: list[tuple[object, ...]]
) -> None:
    """System first; then at most one summary; then live messages in order, none of them
    covered by the summary; all within the budget; the watermark never moves back."""
    budget = TokenBudget(window, reserve) if window - reserve - 3 > 0 else TokenBudget(window, 1)
    chat = Chat.start(id="c", owner="o", config=CONFIG, system_prompt="s",
                      system_tokens=system_tokens)
    history: list[Message] = []
    watermarks = [0]
    for step in script:
        if step[0] == "summary":
            _, input_limit, written, shorter = step
            plan = plan_summary(chat.summary, _fold_items(history, watermarks[-1]),
                                int(input_limit), 100, shorter=bool(shorter))
            if plan is None:
                continue
            covered = {m.seq for m in history if m.seq <= plan.through_seq}
            assert covered <= {m.seq for m in history if m.erased}, "only evicted messages fold"
            assert plan.through_seq >= watermarks[-1]
            chat.summary = Summary("summary", plan.through_seq, message_tokens(int(written)),
                                   plan.next_version)
            watermarks.append(plan.through_seq)
            continue
        _, user_tokens, answer_tokens, completion = step
        try:
            turn = chat.add_user_message(f"q{chat.next_seq}", int(user_tokens), budget)
        except MessageTooLarge:
            assert message_tokens(int(user_tokens)) > budget.prompt_limit - chat.system.tokens
            continue
        history.append(turn.user)
        text = f"a{chat.next_seq}" if answer_tokens else ""
        assert isinstance(completion, Completion)
        history.append(chat.add_assistant_message(
            turn, text, int(answer_tokens), completion, None, Usage()))
        assert turn.summary_left_out == (chat.summary is not None and
                                         chat.prompt_tokens == chat.live_tokens)

        prompt = list(chat.prompt())
        assert prompt[0] == ("system", "s")
        summaries = [i for i, (_, text) in enumerate(prompt) if text.startswith(SUMMARY_HEADING)]
        assert summaries in ([], [1])
        sent = [text for role, text in prompt[1 + len(summaries):]]
        assert all(role != Role.SYSTEM.value for role, _ in prompt[1 + len(summaries):])
        by_text = {m.content: m for m in history}
        seqs = [by_text[text].seq for text in sent]
        live = [m.seq for m in chat.live]
        assert seqs == sorted(seqs) and set(seqs) <= set(live)
        erased = [m.seq for m in history if m.erased]
        assert erased == [m.seq for m in history][:len(erased)], "erased oldest first"
        assert all(s > watermarks[-1] for s in seqs), "nothing the summary covers is sent again"
        # Within the budget, the summary counted, when the user message could fit at all.
        assert chat.prompt_tokens - chat.live[-1].tokens <= budget.prompt_limit
    assert watermarks == sorted(watermarks)


@settings(max_examples=200, deadline=None)
@given(
    tokens=st.lists(st.integers(1, 500), min_size=1, max_size=30),
    watermark=st.integers(0, 10),
    limit=st.integers(1, 2000),
)
def test_a_summary_plan_folds_the_oldest_uncovered_messages_in_order(
    tokens: list[int], watermark: int, limit: int
) -> None:
    items = [FoldItem(i + 1, "user", f"m{i + 1}", t) for i, t in enumerate(tokens)]
    previous = Summary("old", watermark, 10) if watermark else None
    plan = plan_summary(previous, items, limit, 64)
    fresh = [i for i in items if i.seq > watermark]
    if not fresh:
        assert plan is None
        return
    assert plan is not None
    folded = [i.seq for i in plan.items]
    assert folded == [i.seq for i in fresh[:len(folded)]] and folded
    assert plan.through_seq == folded[-1] > watermark
    assert plan.next_version == (2 if previous else 1)
