"""Token arithmetic for chat prompts, the way OpenAI counts chat messages."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# Every message costs its role and content plus a fixed framing overhead, and every
# prompt costs a few more tokens to prime the reply (OpenAI's cookbook figures for
# the cl100k/o200k chat models; the role names are one token each).
MESSAGE_OVERHEAD = 3
ROLE_TOKENS = 1
REPLY_PRIMING = 3

# Longest prefix wins, so dated snapshots ("gpt-4o-2024-08-06") find their family.
KNOWN_CONTEXT_WINDOWS: dict[str, int] = {
    "gpt-3.5-turbo": 16_385,
    "gpt-4": 8_192,
    "gpt-4-32k": 32_768,
    "gpt-4-turbo": 128_000,
    "gpt-4o": 128_000,
    "gpt-4o-mini": 128_000,
    "gpt-4.1": 1_047_576,
    "gpt-4.1-mini": 1_047_576,
    "gpt-4.1-nano": 1_047_576,
    "gpt-4.5": 128_000,
    "gpt-5": 400_000,
    "gpt-5-mini": 400_000,
    "gpt-5-nano": 400_000,
    "o1": 200_000,
    "o1-mini": 128_000,
    "o3": 200_000,
    "o3-mini": 200_000,
    "o4-mini": 200_000,
}


def model_family(model: str, families: Iterable[str]) -> str | None:
    """The longest of `families` that `model` is, or is a dated snapshot of
    ("gpt-4o-mini-2024-07-18" is a gpt-4o-mini, not a gpt-4o); None when it is none."""
    best: str | None = None
    for prefix in families:
        if (model == prefix or model.startswith(prefix + "-")) and (
            best is None or len(prefix) > len(best)
        ):
            best = prefix
    return best


def known_context_window(model: str) -> int | None:
    """The context window of a known model family, or None when the model is unknown."""
    best = model_family(model, KNOWN_CONTEXT_WINDOWS)
    return KNOWN_CONTEXT_WINDOWS[best] if best is not None else None


# No count the service keeps may exceed this (PostgreSQL integer columns hold 2**31 - 1,
# and no context window comes near it).
MAX_TOKEN_COUNT = 1_000_000_000


def token_count(value: object) -> int | None:
    """A token count reported by someone else, clamped to 0..MAX_TOKEN_COUNT; None if no count."""
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    return min(max(value, 0), MAX_TOKEN_COUNT)


def message_tokens(content_tokens: int) -> int:
    """Tokens a message of `content_tokens` costs in a prompt, framing included."""
    return content_tokens + ROLE_TOKENS + MESSAGE_OVERHEAD


@dataclass(frozen=True, slots=True)
class TokenBudget:
    """A context window shared by the prompt and the reply reserved for the model."""

    context_window: int
    reserved_for_reply: int

    def __post_init__(self) -> None:
        if self.context_window <= 0 or self.reserved_for_reply <= 0:
            raise ValueError("context window and reply reservation must be positive")
        if self.prompt_limit <= 0:
            raise ValueError(
                f"reply reservation ({self.reserved_for_reply}) leaves no room for a prompt "
                f"in a {self.context_window}-token context window"
            )

    @property
    def prompt_limit(self) -> int:
        """The most tokens the messages of one prompt may take."""
        return self.context_window - self.reserved_for_reply - REPLY_PRIMING
