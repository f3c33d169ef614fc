"""The rules a turn's input and a chat's budget are held to, read from the settings."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import replace

from chatms.config import ModelSettings, TurnSettings
from chatms.domain.budget import TokenBudget, known_context_window
from chatms.domain.errors import InvalidInput, PayloadTooLarge
from chatms.domain.limits import TokenRoom
from chatms.domain.model import Chat, ChatConfig, Usage
from chatms.domain.text import is_storable
from chatms.domain.texting import is_whatsapp_address, looks_like_whatsapp
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
    def __init__(
        self,
        model: ModelSettings,
        limits: TurnSettings,
        counter: TokenCounter,
        counters: Callable[[str], TokenCounter] | None = None,
    ) -> None:
        self.model = model
        self.limits = limits
        self.counter = counter  # the default model's
        self.counters = counters
        self.budget = model.budget
        self.windows = model.windows
        self._system_tokens = {model.model: counter.count(model.system_prompt)}

    def counter_for(self, model: str) -> TokenCounter:
        """The token counter of a model's own encoding."""
        return self.counters(model) if self.counters is not None else self.counter

    def window_for(self, model: str) -> int:
        """A model's context window: as configured, else from the table, else the default's."""
        return self.windows.get(model) or known_context_window(model) or self.budget.context_window

    def check_model(self, model: str | None) -> None:
        """A model a request names must be one a chat may use (MODEL or MODELS)."""
        if model and model not in self.windows:
            raise InvalidInput(
                f"model {model[:100]!r} is not offered here; use one of: {', '.join(self.windows)}"
            )

    def validate(
        self, user_id: str, chat_id: str | None, text: str, model: str | None = None
    ) -> str | None:
        """Check a turn's input before any I/O; returns the canonical chat id."""
        self.check_user(user_id)
        self.check_model(model)
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
        if looks_like_whatsapp(user_id) and not is_whatsapp_address(user_id):
            # Mostly a `+` that a URL query turned into a space: say so, not "no chats".
            raise InvalidInput(
                "user_id starts with whatsapp: but is not a WhatsApp address (whatsapp:+ and"
                " the number's digits); in a URL query, write + as %2B"
            )

    async def count(self, text: str, model: str) -> int:
        """Tokens of `text` in `model`'s encoding; a long text takes milliseconds, so it is
        counted off the loop."""
        counter = self.counter_for(model)
        if len(text) > LONG_TEXT:
            return await asyncio.to_thread(counter.count, text)
        return counter.count(text)

    @staticmethod
    def within_quota(chat: Chat, room: TokenRoom | None, extra_tokens: int = 0) -> ChatConfig:
        """The chat's settings for this turn's request: the answer capped so that prompt (with
        this turn's images, `extra_tokens`) and answer stay within what the daily quota has
        left (raises DailyQuotaExceeded when not even the prompt fits). The count is ours;
        the upstream's may differ a little."""
        config = chat.config
        if room is None:
            return config
        tokens = room.answer_tokens(chat.prompt_tokens + extra_tokens, config.max_tokens)
        return config if tokens == config.max_tokens else replace(config, max_tokens=tokens)

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
        return await self.count(content, chat.config.model) if content else 0

    def new_chat(self, owner: str, model: str | None = None) -> Chat:
        """A chat with the default settings (and `model`, if named) and the system message,
        not stored yet."""
        config = self.model.chat_defaults
        if model and model != config.model:
            config = replace(config, model=model)
        if config.model not in self._system_tokens:
            self._system_tokens[config.model] = self.counter_for(config.model).count(
                self.model.system_prompt)
        return Chat.start(
            id=str(uuid.uuid4()),
            owner=owner,
            config=config,
            system_prompt=self.model.system_prompt,
            system_tokens=self._system_tokens[config.model],
        )

    def budget_for(self, chat: Chat) -> TokenBudget:
        """The budget of the chat's own model and reply size (settings may have changed)."""
        config = chat.config
        same_model = config.model == self.model.model
        if same_model and config.max_tokens == self.model.max_tokens:
            return self.budget
        window = self.budget.context_window
        if not same_model:
            window = self.window_for(config.model)
        try:
            return TokenBudget(window, config.max_tokens)
        except ValueError:  # a stored reply size the window cannot hold any more
            return self.budget
