"""The background summariser and titler against in-memory ports (no I/O, milliseconds)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from chatms.config import ContextSettings
from chatms.domain.budget import TokenBudget
from chatms.domain.context import SUMMARY_HEADING, FoldItem, Summary
from chatms.domain.errors import UpstreamUnavailable
from chatms.domain.model import Chat, ChatConfig, Completion, PendingTurn, Usage
from chatms.service.context import ContextKeeper
from chatms.service.ports import Lease, WholeAnswer
from chatms.service.reports import ContextReport

CONFIG = ChatConfig("m", 1.0, 1.0, 1024, (), 0.0, 0.0)


class WordCounter:
    def count(self, text: str) -> int:
        return len(text.split())


class MemoryContextStore:
    def __init__(self, evicted: list[FoldItem]) -> None:
        self.evicted = evicted
        self.summaries: list[Summary] = []
        self.claim: str | None = None
        self.titles: list[str] = []

    async def claim_summary(self, chat_id: str, claim: Lease) -> bool:
        if self.claim is not None:
            return False
        self.claim = claim.token
        return True

    async def release_summary(self, chat_id: str, claim: Lease) -> None:
        if self.claim == claim.token:
            self.claim = None

    async def summary_input(self, chat_id: str, max_items: int):
        current = self.summaries[-1] if self.summaries else None
        mark = current.through_seq if current else 0
        return current, [i for i in self.evicted if i.seq > mark][:max_items]

    async def store_summary(self, chat_id: str, claim: Lease, summary: Summary, usage) -> bool:
        current = self.summaries[-1].version if self.summaries else 0
        if self.claim != claim.token or summary.version != current + 1:
            return False
        self.summaries.append(summary)
        return True

    async def store_title(self, chat_id: str, title: str) -> bool:
        self.titles.append(title)
        return True


class ScriptedModel:
    def __init__(self, *answers: str | Exception) -> None:
        self.answers = list(answers)
        self.calls: list[Sequence[tuple[str, str]]] = []
        self.gate: asyncio.Event | None = None

    async def complete_whole(self, model: str, messages, max_tokens: int) -> WholeAnswer:
        self.calls.append(messages)
        if self.gate is not None:
            await self.gate.wait()
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return WholeAnswer(answer, "stop", Usage(30, 3))


def keeper(store, model, **policy) -> tuple[ContextKeeper, list[ContextReport]]:
    reports: list[ContextReport] = []
    return ContextKeeper(store, model, lambda m: WordCounter(), lambda m: 4000,
                         ContextSettings(**policy), observers=(reports.append,)), reports


def evicting_turn() -> tuple[Chat, PendingTurn]:
    chat = Chat.start(id="c", owner="u", config=CONFIG, system_prompt="s",
                      system_tokens=1)
    budget = TokenBudget(60, 10)
    for i in range(3):
        turn = chat.add_user_message(f"q{i}", 10, budget)
        chat.add_assistant_message(turn, f"a{i}", 10, Completion.COMPLETE, "stop", Usage())
    assert turn.erased_seqs
    return chat, turn


def items(*seqs: int) -> list[FoldItem]:
    return [FoldItem(s, "user", f"topic-{s}", 5) for s in seqs]


async def test_an_eviction_folds_into_a_summary_in_the_background() -> None:
    store, model = MemoryContextStore(items(1, 2)), ScriptedModel("Summary one")
    k, reports = keeper(store, model)
    chat, turn = evicting_turn()
    k.after_turn(chat, turn, new_chat=False, prompt_limit=47)
    assert not store.summaries, "after_turn returns before the summary exists"
    await k.close(5)
    [summary] = store.summaries
    assert (summary.through_seq, summary.version, summary.content) == (2, 1, "Summary one")
    assert summary.tokens == len((SUMMARY_HEADING + "Summary one").split()) + 4
    assert [r.outcome for r in reports] == ["ok"] and store.claim is None
    assert "topic-1" in model.calls[0][1][1] and "topic-2" in model.calls[0][1][1]


async def test_a_failed_summary_is_counted_and_the_next_folds_everything_since() -> None:
    store = MemoryContextStore(items(1, 2))
    model = ScriptedModel(UpstreamUnavailable("down"), "", "Summary two")
    reports: list[ContextReport] = []
    chat, turn = evicting_turn()
    for _ in range(3):  # three turns, each after the previous summary attempt ended
        k, mine = keeper(store, model)
        k.after_turn(chat, turn, new_chat=False, prompt_limit=47)
        await k.close(5)
        reports += mine
        store.evicted += items(store.evicted[-1].seq + 1)
    assert [r.outcome for r in reports] == ["error", "empty", "ok"]
    assert reports[0].error == "UpstreamUnavailable" and store.claim is None
    assert [s.through_seq for s in store.summaries] == [4]
    assert all(f"topic-{n}" in model.calls[2][1][1] for n in (1, 2, 3, 4))


async def test_a_chat_claimed_elsewhere_is_not_summarised_twice() -> None:
    store, model = MemoryContextStore(items(1, 2)), ScriptedModel("never")
    store.claim = "another replica"
    k, reports = keeper(store, model)
    chat, turn = evicting_turn()
    k.after_turn(chat, turn, new_chat=False, prompt_limit=47)
    await k.close(5)
    assert [r.outcome for r in reports] == ["busy"] and not model.calls


async def test_truncate_strategy_and_titles_off_call_nothing() -> None:
    store, model = MemoryContextStore(items(1, 2)), ScriptedModel()
    k, reports = keeper(store, model, strategy="truncate", titles=False)
    chat, turn = evicting_turn()
    k.after_turn(chat, turn, new_chat=True, prompt_limit=47)
    await k.close(5)
    assert not model.calls and not reports


async def test_a_title_is_cleaned_and_stored_after_the_first_exchange() -> None:
    store, model = MemoryContextStore([]), ScriptedModel('"Trip to Lisbon."')
    k, reports = keeper(store, model)
    chat = Chat.start(id="c", owner="u", config=CONFIG, system_prompt="s",
                      system_tokens=1)
    turn = chat.add_user_message("Plan a trip", 3, TokenBudget(1000, 10))
    chat.add_assistant_message(turn, "Sure", 1, Completion.COMPLETE, "stop", Usage())
    k.after_turn(chat, turn, new_chat=True, prompt_limit=900)
    await k.close(5)
    assert store.titles == ["Trip to Lisbon"] and [r.kind for r in reports] == ["title"]


async def test_shutdown_cancels_a_job_that_outlives_the_grace_and_frees_the_claim() -> None:
    store, model = MemoryContextStore(items(1, 2)), ScriptedModel("late")
    model.gate = asyncio.Event()  # never set: the upstream hangs
    k, _ = keeper(store, model)
    chat, turn = evicting_turn()
    k.after_turn(chat, turn, new_chat=False, prompt_limit=47)
    await asyncio.sleep(0.01)
    assert store.claim is not None
    await k.close(0.05)
    assert not store.summaries and store.claim is None


async def test_turns_right_behind_each_other_start_one_summary() -> None:
    store, model = MemoryContextStore(items(1, 2)), ScriptedModel("one", "two")
    k, reports = keeper(store, model)
    chat, turn = evicting_turn()
    k.after_turn(chat, turn, new_chat=False, prompt_limit=47)
    k.after_turn(chat, turn, new_chat=False, prompt_limit=47)  # before the first job ran
    await k.close(5)
    assert len(model.calls) == 1 and [r.outcome for r in reports] == ["ok"]
    k.after_turn(chat, turn, new_chat=False, prompt_limit=47)  # shutting down: nothing new
    assert len(model.calls) == 1
