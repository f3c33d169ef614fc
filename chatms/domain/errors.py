"""Errors the use cases raise; each door maps them to its own status codes in one place."""


class ChatError(Exception):
    """Base of every error a caller can be told about; the message is safe to show."""


class InvalidInput(ChatError):
    """The request is malformed: a field is missing, empty, too long or not parseable."""


class MessageTooLarge(InvalidInput):
    """A user message cannot fit in the context window even beside the system message alone."""

    def __init__(self, tokens: int, limit: int) -> None:
        super().__init__(
            f"message is {tokens} tokens; at most {limit} tokens fit in this model's context window"
        )
        self.tokens = tokens
        self.limit = limit


class PayloadTooLarge(InvalidInput):
    """A field or body is larger than the configured byte or character limit."""


class ChatNotFound(ChatError):
    """No such chat for this user (unknown and foreign chats look the same, on purpose)."""

    def __init__(self) -> None:
        super().__init__("chat not found")


class ChatEnded(ChatError):
    """The chat was ended and takes no more messages."""

    def __init__(self) -> None:
        super().__init__("chat has ended; start a new chat")


class ChatBusy(ChatError):
    """Another turn of the same chat is in progress."""

    def __init__(self) -> None:
        super().__init__("chat is busy with another turn; retry when it has finished")


class NotConfigured(ChatError):
    """A capability is switched off because its configuration is missing."""


class Unavailable(ChatError):
    """The service cannot take the turn right now (shutting down, database pool exhausted)."""


class StorageRefused(Unavailable):
    """The database refused a statement (a constraint, a value out of range): not an outage,
    so trying the same statement again will not help."""


class UpstreamError(ChatError):
    """The model provider failed; subclasses say how, so each door can pick a fitting status."""


class UpstreamRateLimited(UpstreamError):
    """The provider answered 429."""


class UpstreamUnavailable(UpstreamError):
    """The provider answered 5xx, or could not be reached, or broke the stream."""


class UpstreamTimeout(UpstreamError):
    """The provider did not answer in time."""


class UpstreamRejected(UpstreamError):
    """The provider rejected our credentials or request (4xx other than 429)."""


class LimitExceeded(ChatError):
    """The user is over a limit (`limit` names which); trying again in `retry_after` s helps."""

    limit = "limit"

    def __init__(self, retry_after: int, message: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UserRateLimited(LimitExceeded):
    """The user sent more messages this minute than the per-user rate allows."""

    limit = "rate"


class DailyQuotaExceeded(LimitExceeded):
    """The user spent the daily token quota; it renews at midnight UTC."""

    limit = "daily_tokens"


class MediaError(ChatError):
    """An inbound message's media could not be used; the message is safe to show."""


class MediaTooLarge(MediaError):
    """The media is larger than the configured limit (refused while it streamed in)."""


class MediaUnavailable(MediaError):
    """The media could not be fetched (refused, gone, too slow) or not read."""


class StartupError(Exception):
    """`chatms serve` cannot start; the message is one line naming the cause and what to change."""
