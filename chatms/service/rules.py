"""The rules a turn's input and a chat's budget are held to, read from the settings."""

from __future__ import annotations

import asyncio
import uuid

from chatms.config import ModelSettings, TurnSettings
from chatms.domain.budget import TokenBudget, known_context_window
from chatms.domain.errors import InvalidInput, PayloadTooLarge
from chatms.domain.model import Chat, Usage
from chatms.domain.text import is_storable
from chatms.service.ports import TokenCounter

LONG_TEXT = 4096  # characters; longer texts are tokenized off the event loop


def storable(name: str, value: str) -> None:
    """Refuse input PostgreSQL cannot store: NUL, and lone surrogates (JSON's "\\ud800").

    A person's text is refused rather than repaired (they can fix it); the model's is
    repaired (see `chatms.domain.text.storable`).
    """
    if is_storable(value):
        return
    if "\x00" in value:
        raise InvalidInput(f"{name} must not contain NUL characters")
    raise InvalidInput(f"{name} is not valid Unicode text")


def parse_chat_id(chat_id: str) -> str:
    """A canonical UUID string, or InvalidInput."""
    try:
        return str(uuid.UUID(chat_id))
    except ValueError:
        raise InvalidInput("chat_id must be a UUID") from None


class ChatRules:
    def __init__(self, model: ModelSettings, limits: TurnSettings, counter: TokenCounter) -> None:
        self.model = model
        self.limits = limits
        self.counter = counter
        self.budget = model.budget
        self.system_tokens = counter.count(model.system_prompt)

    def validate(self, user_id: str, chat_id: str | None, text: str) -> str | None:
        """Check a turn's input before any I/O; returns the canonical chat id."""
        self.check_user(user_id)
        storable("user_message", text)
        if not text or not text.strip():
            raise InvalidInput("user_message must not be empty")
        limit = self.limits.max_message_chars
        if len(text) > limit:
            raise PayloadTooLarge(
                f"user_message is {len(text)} characters; the limit is {limit}"
            )
        return parse_chat_id(chat_id) if chat_id else None

    def check_user(self, user_id: str) -> None:
        if not user_id or not user_id.strip():
            raise InvalidInput("user_id must not be empty")
        limit = self.limits.max_user_id_chars
        if len(user_id) > limit:
            raise PayloadTooLarge(f"user_id is longer than {limit} characters")
        storable("user_id", user_id)

    async def count(self, text: str) -> int:
        """Tokens of `text`; a long text takes milliseconds, so it is counted off the loop."""
        if len(text) > LONG_TEXT:
            return await asyncio.to_thread(self.counter.count, text)
        return self.counter.count(text)

    def answer_limit(self, chat: Chat) -> int:
        """Most characters of one answer kept in `chat` (MAX_ANSWER_CHARS)."""
        return self.model.answer_limit(chat.config.max_tokens)

    async def answer_tokens(self, chat: Chat, content: str, reported: Usage | None) -> int:
        """Tokens of an answer: the upstream's count when it is believable, else counted.

        An upstream cannot have written more tokens than it was asked for; a count above
        that (or for an answer cut short) is not taken.
        """
        if reported is not None and reported.completion_tokens <= chat.config.max_tokens:
            return reported.completion_tokens
        return await self.count(content) if content else 0

    def new_chat(self, owner: str) -> Chat:
        """A chat with the default settings and system message (not stored yet)."""
        return Chat.start(
            id=str(uuid.uuid4()),
            owner=owner,
            config=self.model.chat_defaults,
            system_prompt=self.model.system_prompt,
            system_tokens=self.system_tokens,
        )

    def budget_for(self, chat: Chat) -> TokenBudget:
        """The budget of the chat's own model and reply size (settings may have changed)."""
        config = chat.config
        same_model = config.model == self.model.model
        if same_model and config.max_tokens == self.model.max_tokens:
            return self.budget
        window = self.budget.context_window
        if not same_model:
            window = known_context_window(config.model) or window
        try:
            return TokenBudget(window, config.max_tokens)
        except ValueError:  # a stored reply size the window cannot hold any more
            return self.budget
