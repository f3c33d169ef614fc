"""The sections of the settings, each handed whole to the part that uses it.

Every default is written here once, beside its variable's name and its allowed range. A
field made without a helper (say `backoff_base`) is a fixed default, not read from the
environment; tests may still `dataclasses.replace` it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from chatms.config.reading import (
    ConfigError,
    choice,
    flag,
    http_url,
    integer,
    matching,
    names,
    number,
    optional,
    origins,
    prefixed,
    text,
    words,
)
from chatms.domain.budget import TokenBudget, known_context_window
from chatms.domain.limits import UserLimits
from chatms.domain.model import ChatConfig
from chatms.domain.texting import phone_number
from chatms.domain.vision import DEFAULT_VISION_MODELS

# A token is about 4 characters of prose; 32 leaves room for long tokens (runs of spaces or
# symbols) while still bounding what a broken upstream can make us hold.
ANSWER_CHARS_PER_TOKEN = 32


@dataclass(frozen=True, slots=True)
class ModelSettings:
    """What new chats are created with: model, context window, sampling, system message."""

    model: str = text("MODEL", "gpt-4o-mini")
    # 0: from the table of known models (see `checked`).
    context_window: int = integer("MODEL_MAX_TOKENS", 0, 0, 100_000_000)
    # 0: min(1024, window / 4) (see `checked`).
    max_tokens: int = integer("MAX_TOKENS", 0, 1, 100_000_000)
    temperature: float = number("TEMPERATURE", 1.0, 0.0, 2.0)
    top_p: float = number("TOP_P", 1.0, 0.0, 1.0)
    presence_penalty: float = number("PRESENCE_PENALTY", 0.0, -2.0, 2.0)
    frequency_penalty: float = number("FREQUENCY_PENALTY", 0.0, -2.0, 2.0)
    stop: tuple[str, ...] = words("STOP", 4, "sequences (OpenAI's limit)")
    n: int = integer("N", 1, 1, 128)
    system_prompt: str = text("INITIAL_CHAT_MESSAGE", "You are a helpful assistant.")
    # 0: ANSWER_CHARS_PER_TOKEN characters per token of the chat's max_tokens.
    max_answer_chars: int = integer("MAX_ANSWER_CHARS", 0, 0, 1_000_000_000)
    tiktoken_offline: bool = flag("TIKTOKEN_OFFLINE", False)
    # Models a new chat may name besides MODEL: `name` (from the table) or `name=window`.
    models: tuple[str, ...] = words("MODELS", 32, "models")
    # Worked out by `checked`: each other model with its context window.
    other_windows: tuple[tuple[str, int], ...] = ()

    def checked(self) -> ModelSettings:
        """The settings with the window and reply size worked out; ConfigError if they clash."""
        window = self.context_window or known_context_window(self.model)
        if window is None:
            raise ConfigError(
                f"MODEL_MAX_TOKENS is unset and the context window of MODEL={self.model!r} is"
                " unknown: set MODEL_MAX_TOKENS"
            )
        if self.n != 1:
            raise ConfigError(
                f"N={self.n} is not supported: chatms streams one answer per turn, use N=1"
            )
        max_tokens = self.max_tokens or min(1024, window // 4)
        if max_tokens > window:
            raise ConfigError(f"MAX_TOKENS={max_tokens} is out of range: use 1 to {window}")
        try:
            TokenBudget(window, max_tokens)
        except ValueError as exc:
            raise ConfigError(
                f"MAX_TOKENS={max_tokens} with MODEL_MAX_TOKENS={window}: {exc}"
            ) from None
        return replace(self, context_window=window, max_tokens=max_tokens,
                       other_windows=_model_windows(self.models, self.model))

    @property
    def windows(self) -> dict[str, int]:
        """Every model a chat may use (MODEL first) with its context window."""
        return {self.model: self.context_window, **dict(self.other_windows)}

    @property
    def chat_defaults(self) -> ChatConfig:
        return ChatConfig(
            model=self.model,
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            stop=self.stop,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
        )

    @property
    def budget(self) -> TokenBudget:
        return TokenBudget(self.context_window, self.max_tokens)

    def answer_limit(self, max_tokens: int) -> int:
        """Most characters kept of one answer asked for `max_tokens` tokens."""
        return self.max_answer_chars or max_tokens * ANSWER_CHARS_PER_TOKEN


def _model_windows(models: tuple[str, ...], default: str) -> tuple[tuple[str, int], ...]:
    found: dict[str, int] = {}
    for entry in (m.strip() for m in models):
        name, _, raw = entry.rpartition("=") if "=" in entry else (entry, "", "")
        name = name.strip()
        if raw:
            if not raw.strip().isdigit() or int(raw) < 64:
                raise ConfigError(f"MODELS: the window of {name!r} is not a whole number >= 64")
            window: int | None = int(raw)
        else:
            window = known_context_window(name)
        if window is None:
            raise ConfigError(
                f"MODELS: the context window of {name!r} is unknown: write it as {name}=<tokens>"
            )
        if name and name != default:
            found[name] = window
    return tuple(found.items())


@dataclass(frozen=True, slots=True)
class ContextSettings:
    """What a chat keeps of the messages that left its window, and titles."""

    strategy: str = choice("CONTEXT_STRATEGY", "summarize", ("summarize", "truncate"))
    summary_model: str | None = optional("SUMMARY_MODEL")  # unset: the chat's own model
    summary_max_tokens: int = integer("SUMMARY_MAX_TOKENS", 512, 16, 16_384)
    summary_timeout: float = number("SUMMARY_TIMEOUT_SECONDS", 60.0, 1, 3600)
    titles: bool = flag("TITLES_ENABLED", True)


@dataclass(frozen=True, slots=True)
class TurnSettings:
    """The limits every turn is held to, whichever door it came through."""

    max_message_chars: int = integer("MAX_MESSAGE_CHARS", 32_000, 1, 10_000_000)
    # Per-user limits of the gRPC and HTTP doors, whose user ids come from a trusted backend:
    # off (0) unless set. WhatsApp has its own (see WhatsAppSettings).
    user_messages_per_minute: int = integer("USER_MESSAGES_PER_MINUTE", 0, 0, 1_000_000)
    user_daily_tokens: int = integer("USER_DAILY_TOKENS", 0, 0, 10**12)
    max_user_id_chars: int = integer("MAX_USER_ID_CHARS", 256, 1, 10_000)
    turn_timeout: float = number("TURN_TIMEOUT_SECONDS", 300.0, 1, 86_400)
    # A turn renews its lease every third of this; a lease only runs out when its process
    # died (or lost the database), and then frees the chat within this many seconds.
    lease_seconds: float = number("CHAT_LEASE_SECONDS", 15.0, 1, 3600)
    # How long an answer that could not be stored is retried in the background.
    store_retry_seconds: float = 60.0
    # A running answer is written to the database at most once per this many milliseconds.
    stream_flush_ms: int = integer("STREAM_FLUSH_MS", 300, 20, 60_000)
    # What an HTTP turn does when its client goes away: go on to the end, or stop.
    disconnected_turns: str = choice("DISCONNECTED_TURNS", "continue", ("continue", "cancel"))
    # Turns running on without their client (HTTP `continue`, gRPC `detach`); over these a
    # disconnect cancels the turn as before.
    detached_per_user: int = integer("DETACHED_TURNS_PER_USER", 4, 0, 10_000)
    detached_per_process: int = integer("DETACHED_TURNS_PER_PROCESS", 200, 0, 1_000_000)

    @property
    def door_limits(self) -> UserLimits:
        return UserLimits(self.user_messages_per_minute, self.user_daily_tokens)


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    """The OpenAI-compatible server and how long to wait for it."""

    base_url: str = prefixed(
        "OPENAI_BASE_URL", "https://api.openai.com/v1", ("http://", "https://"), "an http(s) URL"
    )
    api_key: str | None = optional("OPENAI_API_KEY", secret=True)
    connect_timeout: float = number("UPSTREAM_CONNECT_TIMEOUT", 5.0, 0.01, 600)
    first_token_timeout: float = number("UPSTREAM_FIRST_TOKEN_TIMEOUT", 60.0, 0.01, 3600)
    idle_timeout: float = number("UPSTREAM_IDLE_TIMEOUT", 60.0, 0.01, 3600)
    max_retries: int = integer("UPSTREAM_MAX_RETRIES", 2, 0, 10)
    # The longest SSE line or event accepted (OpenAI's are a few hundred bytes).
    max_event_bytes: int = integer(
        "UPSTREAM_MAX_EVENT_BYTES", 1024 * 1024, 1024, 64 * 1024 * 1024
    )
    # aiohttp's client under httpx's API costs half the CPU per event of httpx's own.
    transport: str = choice("UPSTREAM_TRANSPORT", "aiohttp", ("aiohttp", "httpx"))
    # Voice notes: any OpenAI-compatible server's POST /audio/transcriptions.
    transcription_model: str = text("TRANSCRIPTION_MODEL", "gpt-4o-mini-transcribe")
    transcription_timeout: float = number("TRANSCRIPTION_TIMEOUT_SECONDS", 60.0, 0.1, 3600)
    # Models that take image content (a dated snapshot counts as its family).
    vision_models: tuple[str, ...] = names("VISION_MODELS", DEFAULT_VISION_MODELS)
    backoff_base: float = 0.25
    max_connections: int = 200


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    """PostgreSQL: a URL, or the embedded server's data directory."""

    url: str | None = prefixed(
        "DATABASE_URL", None, ("postgres://", "postgresql://"),
        "a postgres:// or postgresql:// URL", secret=True,  # it may hold a password
    )
    data_dir: str = text("CHATMS_DATA_DIR", ".chatms")
    pool_size: int = integer("DATABASE_POOL_SIZE", 10, 1, 1000)
    acquire_timeout: float = number("DATABASE_ACQUIRE_TIMEOUT", 5.0, 0.01, 600)
    # How long start-up waits for DATABASE_URL to come up (a database started beside us).
    connect_timeout: float = number("DATABASE_CONNECT_TIMEOUT", 30.0, 0, 3600)
    command_timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """The listeners, the service token, request size limits and the shutdown grace."""

    auth_token: str | None = optional("AUTH_TOKEN", secret=True)
    grpc_host: str = text("GRPC_HOST", "0.0.0.0")  # noqa: S104 (a server listens)
    grpc_port: int = integer("GRPC_SERVER_PORT", 50051, 0, 65535)
    web_host: str = text("WEB_HOST", "0.0.0.0")  # noqa: S104
    web_port: int = integer("WEB_SERVER_PORT", 8080, 0, 65535)
    max_body_bytes: int = integer("MAX_BODY_BYTES", 256 * 1024, 1024, 64 * 1024 * 1024)
    grpc_max_message_bytes: int = integer(
        "GRPC_MAX_MESSAGE_BYTES", 256 * 1024, 1024, 64 * 1024 * 1024
    )
    shutdown_grace_seconds: float = number("SHUTDOWN_GRACE_SECONDS", 20.0, 0, 3600)
    # After the grace period, how long finished turns may still take to be stored.
    store_grace_seconds: float = 10.0
    # 0: /metrics and /readyz are served on the HTTP port.
    ops_port: int = integer("OPS_PORT", 0, 0, 65535)
    ops_host: str = text("OPS_HOST", "127.0.0.1")
    metrics_token: str | None = optional("METRICS_TOKEN", secret=True)


@dataclass(frozen=True, slots=True)
class EdgeSettings:
    """What one client connection may hold, and for how long, on every listener."""

    max_connections: int = integer("MAX_CONNECTIONS", 2000, 16, 1_000_000)
    body_timeout: float = number("BODY_TIMEOUT", 10.0, 0.1, 3600)
    http_idle_timeout: float = number("HTTP_IDLE_TIMEOUT", 5.0, 0.1, 3600)
    grpc_handshake_timeout: float = number("GRPC_HANDSHAKE_TIMEOUT", 10.0, 0.1, 3600)
    grpc_idle_timeout: float = number("GRPC_IDLE_TIMEOUT", 300.0, 0.1, 86_400)
    grpc_max_concurrent_streams: int = integer("GRPC_MAX_CONCURRENT_STREAMS", 100, 1, 100_000)
    # Resets (and refused calls) a connection may make at once; refilled at a tenth per second.
    grpc_max_resets: int = integer("GRPC_MAX_RESETS", 200, 1, 1_000_000)
    # The writes of many calls on one connection in one loop iteration leave in one send.
    grpc_coalesce_writes: bool = flag("GRPC_COALESCE_WRITES", True)
    # A response's head leaves in one send with the first part of its body.
    http_coalesce_writes: bool = flag("HTTP_COALESCE_WRITES", True)


@dataclass(frozen=True, slots=True)
class WebSettings:
    """The web chat page, and which other origins' pages may call the HTTP API."""

    ui_enabled: bool = flag("WEB_UI_ENABLED", True)
    cors_allow_origins: tuple[str, ...] = origins("CORS_ALLOW_ORIGINS")


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: str = choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"), upper=True)
    format: str = choice("LOG_FORMAT", "text", ("text", "json"))


@dataclass(frozen=True, slots=True)
class InboundSettings:
    """The queue of inbound text-channel messages (WhatsApp, ...) and its worker.

    The variables keep their WHATSAPP_ names: WhatsApp was the queue's first channel.
    """

    claim_seconds: float = number("WHATSAPP_CLAIM_SECONDS", 30.0, 1, 3600)
    concurrency: int = integer("WHATSAPP_CONCURRENCY", 8, 1, 256)
    # An answer is retried until this many seconds after the user's message (WhatsApp's
    # window for a reply); after that it is recorded as failed, never dropped silently.
    delivery_deadline: float = number("WHATSAPP_DELIVERY_DEADLINE", 86_400.0, 1, 30 * 86_400)
    retry_max_seconds: float = number("WHATSAPP_RETRY_MAX_SECONDS", 300.0, 0.01, 3600)
    retry_base_seconds: float = 2.0
    busy_retry_seconds: float = 2.0
    poll_seconds: float = 1.0

    def backoff(self, failures: int) -> float:
        """Seconds before the next try after `failures` failed ones: doubling, capped."""
        exponent = min(max(failures - 1, 0), 30)
        return min(self.retry_base_seconds * 2.0**exponent, self.retry_max_seconds)


@dataclass(frozen=True, slots=True)
class WhatsAppSettings:
    """The WhatsApp channel through Twilio; off until both credentials are set."""

    account_sid: str | None = matching(
        "TWILIO_ACCOUNT_SID", r"AC[0-9a-fA-F]{32}",
        "an Account SID (AC followed by 32 hexadecimal digits)",
    )
    auth_token: str | None = optional("TWILIO_AUTH_TOKEN", secret=True)
    public_base_url: str | None = http_url("PUBLIC_BASE_URL", None)
    api_base_url: str = http_url("TWILIO_API_BASE_URL", "https://api.twilio.com")
    # The typing indicator lives on Twilio's messaging host, not its API host.
    messaging_base_url: str = http_url(
        "TWILIO_MESSAGING_BASE_URL", "https://messaging.twilio.com")
    max_body_chars: int = integer("WHATSAPP_MAX_BODY_CHARS", 4096, 1, 1_000_000)
    send_rate: float = number("WHATSAPP_SEND_RATE", 10.0, 0.1, 1000)
    voice_enabled: bool = flag("WHATSAPP_VOICE_ENABLED", True)
    max_media_bytes: int = integer(
        "WHATSAPP_MAX_MEDIA_BYTES", 16 * 1024 * 1024, 1024, 100 * 1024 * 1024)
    media_timeout: float = number("WHATSAPP_MEDIA_TIMEOUT_SECONDS", 30.0, 0.1, 600)
    burst_window_ms: int = integer("WHATSAPP_BURST_WINDOW_MS", 1500, 0, 60_000)
    # Anyone can write to the number: per-user limits are on by default (0 switches off).
    messages_per_minute: int = integer("WHATSAPP_MESSAGES_PER_MINUTE", 20, 0, 1_000_000)
    daily_tokens: int = integer("WHATSAPP_DAILY_TOKENS", 200_000, 0, 10**12)
    blocked_numbers: tuple[str, ...] = names("WHATSAPP_BLOCKED_NUMBERS", (), phone_number)
    typing_timeout: float = 5.0
    send_attempts: int = 4
    send_backoff: float = 0.5

    @property
    def configured(self) -> bool:
        return bool(self.account_sid and self.auth_token)

    @property
    def limits(self) -> UserLimits:
        return UserLimits(self.messages_per_minute, self.daily_tokens)
