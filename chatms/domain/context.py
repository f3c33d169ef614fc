"""What a turn sends upstream: the window of a chat, and the rolling summary of what left it.

The window, oldest to newest:

    system | summary (at most one) | kept live messages | reply reserve

Messages that no longer fit leave the window oldest first (they stay stored, flagged erased).
A rolling summary, made off the answer's path, stands in for everything up to its watermark
(`through_seq`, the last message it covers); a new summary folds the previous one and the
messages evicted since, so summaries never stack. All of it is pure: no I/O, no tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Sent upstream before the summary text, as part of one system message.
SUMMARY_HEADING = (
    "Summary of the earlier part of this conversation (those messages no longer fit "
    "in the context window):\n\n"
)

SUMMARY_INSTRUCTIONS = (
    "You maintain a running summary of a conversation between a user and an assistant. "
    "Fold the previous summary (if any) and the new transcript into ONE updated summary. "
    "Keep facts, names, numbers, decisions, open questions and the user's preferences; "
    "drop small talk. Write in the language of the conversation, in plain prose, "
    "at most {words} words. Reply with the summary only."
)

TITLE_INSTRUCTIONS = (
    "Write a title for this conversation: at most six words, in the user's language, "
    "no quotes, no final punctuation. Reply with the title only."
)

TITLE_MAX_CHARS = 80
# Quotes and markup models like to wrap a title in (typographic quotes spelled as escapes).
TITLE_WRAPPERS = "\"'`*# \u201c\u201d\u2018\u2019\u00ab\u00bb"
# A message too long to fold whole is cut to this many characters (the summary only needs
# its gist, and the summary call must fit its own window).
FOLD_MAX_CHARS = 4000


@dataclass(frozen=True, slots=True)
class Summary:
    """The stored rolling summary of a chat up to and including message `through_seq`."""

    content: str
    through_seq: int
    tokens: int  # prompt tokens of the summary message as sent (heading and framing included)
    version: int = 1
    model: str = ""

    @property
    def prompt_text(self) -> str:
        return SUMMARY_HEADING + self.content


@dataclass(frozen=True, slots=True)
class WindowFit:
    """How a prompt fits its limit: how many of the oldest live messages leave, and whether
    the summary can stay (it is left out, for this turn only, when it is itself too large)."""

    evict: int
    keep_summary: bool
    tokens: int


def fit_window(
    limit: int,
    system_tokens: int,
    summary_tokens: int | None,
    live_tokens: Sequence[int],
    new_tokens: int,
) -> WindowFit:
    """Evict the fewest oldest live messages so that everything fits in `limit` tokens.

    The system message and the new message always stay (the caller refuses a new message
    that cannot fit beside the system message alone). The summary stays when it fits beside
    them; else it is left out and the turn goes out truncated.
    """
    keep_summary = summary_tokens is not None and (
        system_tokens + summary_tokens + new_tokens <= limit
    )
    used = system_tokens + new_tokens + sum(live_tokens)
    if keep_summary and summary_tokens is not None:
        used += summary_tokens
    evict = 0
    while used > limit and evict < len(live_tokens):
        used -= live_tokens[evict]
        evict += 1
    return WindowFit(evict, keep_summary, used)


@dataclass(frozen=True, slots=True)
class FoldItem:
    """One evicted message as the summariser sees it."""

    seq: int
    role: str
    content: str
    tokens: int


@dataclass(frozen=True, slots=True)
class SummaryPlan:
    """One summary call: the previous summary and the evicted messages it folds in."""

    previous: Summary | None
    items: tuple[FoldItem, ...]
    through_seq: int
    max_tokens: int

    @property
    def next_version(self) -> int:
        return self.previous.version + 1 if self.previous else 1


def plan_summary(
    previous: Summary | None,
    evicted: Sequence[FoldItem],
    input_limit: int,
    max_tokens: int,
    shorter: bool = False,
) -> SummaryPlan | None:
    """What the next summary folds: messages after the watermark, oldest first, as many as fit.

    `evicted` are the erased messages after the previous watermark, in order. The watermark
    moves to the last one folded (the rest wait for the next summary); it never moves back.
    `shorter` asks for the previous summary again, at half the length, when it grew too large
    to fit beside a turn. Returns None when there is nothing to do.
    """
    watermark = previous.through_seq if previous else 0
    room = input_limit - (previous.tokens if previous else 0)
    items: list[FoldItem] = []
    for item in evicted:
        if item.seq <= watermark:
            continue  # already covered: never folded twice
        if item.tokens > room:
            if items:
                break
            # One message larger than the whole room: its beginning stands for it.
            item = FoldItem(item.seq, item.role, item.content[:FOLD_MAX_CHARS] + " [...]",
                            min(item.tokens, room))
        items.append(item)
        room -= item.tokens
    if not items and not (shorter and previous):
        return None
    through = items[-1].seq if items else watermark
    target = max(16, max_tokens // 2) if shorter else max_tokens
    return SummaryPlan(previous, tuple(items), max(through, watermark), target)


def summary_prompt(plan: SummaryPlan) -> list[tuple[str, str]]:
    """The (role, content) messages of the summary call."""
    words = max(10, plan.max_tokens * 3 // 4)
    parts = []
    if plan.previous is not None:
        parts.append("Previous summary:\n" + plan.previous.content)
    if plan.items:
        transcript = "\n\n".join(f"{item.role.capitalize()}: {item.content}" for item in plan.items)
        parts.append("New transcript:\n" + transcript)
    return [
        ("system", SUMMARY_INSTRUCTIONS.format(words=words)),
        ("user", "\n\n".join(parts)),
    ]


def title_prompt(question: str, answer: str) -> list[tuple[str, str]]:
    """The (role, content) messages of the title call, from the chat's first exchange."""
    return [
        ("system", TITLE_INSTRUCTIONS),
        ("user", f"User: {question[:FOLD_MAX_CHARS]}\n\nAssistant: {answer[:FOLD_MAX_CHARS]}"),
    ]


def clean_title(text: str) -> str | None:
    """A model's title made fit to show: one line, no wrapping quotes, bounded; None if empty."""
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    if line.lower().startswith("title:"):
        line = line[6:].strip()
    line = line.strip(TITLE_WRAPPERS).rstrip(".").strip()
    line = "".join(ch for ch in line if ch.isprintable())
    if len(line) > TITLE_MAX_CHARS:
        line = line[:TITLE_MAX_CHARS].rsplit(" ", 1)[0] or line[:TITLE_MAX_CHARS]
    return line or None
