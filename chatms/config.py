"""Settings from the environment (and an optional .env file), checked once at start.

A bad value stops the process with one line naming the variable and what is wrong.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from chatms.domain.budget import TokenBudget, known_context_window
from chatms.domain.model import ChatConfig

T = TypeVar("T")


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    openai_api_key: str | None
    openai_base_url: str
    model: str
    model_max_tokens: int
    temperature: float
    top_p: float
    max_tokens: int
    stop: tuple[str, ...]
    presence_penalty: float
    frequency_penalty: float
    auth_token: str | None
    initial_chat_message: str
    grpc_host: str
    grpc_port: int
    web_host: str
    web_port: int
    database_url: str | None
    data_dir: Path
    db_pool_size: int = 10
    db_acquire_timeout: float = 5.0
    upstream_connect_timeout: float = 5.0
    upstream_first_token_timeout: float = 60.0
    upstream_idle_timeout: float = 60.0
    upstream_max_retries: int = 2
    turn_timeout: float = 300.0
    chat_lease_seconds: float = 60.0
    max_message_chars: int = 32_000
    max_user_id_chars: int = 256
    max_body_bytes: int = 256 * 1024
    grpc_max_message_bytes: int = 256 * 1024
    shutdown_grace_seconds: float = 20.0
    log_level: str = "INFO"
    log_format: str = "text"
    tiktoken_offline: bool = False
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    public_base_url: str | None = None
    twilio_api_base_url: str = "https://api.twilio.com"
    whatsapp_max_body_chars: int = 4096
    whatsapp_send_rate: float = 10.0
    whatsapp_claim_seconds: float = 30.0
    whatsapp_concurrency: int = 8

    @property
    def whatsapp_configured(self) -> bool:
        return bool(self.twilio_account_sid and self.twilio_auth_token)

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
        return TokenBudget(self.model_max_tokens, self.max_tokens)

    @property
    def secrets(self) -> tuple[str | None, ...]:
        """Values that must never appear in a log line or an error message."""
        return (self.openai_api_key, self.auth_token, self.twilio_auth_token)

    def describe(self) -> dict[str, object]:
        """The settings safe to log: secrets are shown only as set or unset."""
        return {
            "model": self.model,
            "model_max_tokens": self.model_max_tokens,
            "max_tokens": self.max_tokens,
            "openai_base_url": self.openai_base_url,
            "openai_api_key": "set" if self.openai_api_key else "unset",
            "auth_token": "set" if self.auth_token else "generated",
            "database": "DATABASE_URL" if self.database_url else f"embedded in {self.data_dir}",
            "grpc": f"{self.grpc_host}:{self.grpc_port}",
            "http": f"{self.web_host}:{self.web_port}",
            "whatsapp": "configured" if self.whatsapp_configured else "not configured",
            "twilio_auth_token": "set" if self.twilio_auth_token else "unset",
            "twilio_api_base_url": self.twilio_api_base_url,
            "public_base_url": self.public_base_url or "unset (the request's own URL)",
        }


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        return value if value not in (None, "") else None

    def parse(self, name: str, default: T, convert: Callable[[str], T], what: str) -> T:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return convert(value.strip())
        except ValueError:
            raise ConfigError(f"{name}={value!r} is not {what}") from None

    def number(self, name: str, default: float, low: float, high: float) -> float:
        value = self.parse(name, default, float, "a number")
        if not low <= value <= high:
            raise ConfigError(f"{name}={value:g} is out of range: use {low:g} to {high:g}")
        return value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.parse(name, default, int, "a whole number")
        if not low <= value <= high:
            raise ConfigError(f"{name}={value} is out of range: use {low} to {high}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}={value!r} is not a boolean: use true or false")


def _stop_sequences(value: str | None) -> tuple[str, ...]:
    """STOP is one sequence, or several separated by commas (OpenAI takes at most four)."""
    if value is None:
        return ()
    parts = tuple(part for part in value.split(",") if part)
    if len(parts) > 4:
        raise ConfigError(f"STOP has {len(parts)} sequences; OpenAI accepts at most 4")
    return parts


def _http_url(r: _Reader, name: str, default: str | None) -> str | None:
    value = r.raw(name)
    if value is None:
        return default
    value = value.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(f"{name}={value!r} is not an http(s) URL without query or fragment")
    return value


def _account_sid(r: _Reader) -> str | None:
    value = r.raw("TWILIO_ACCOUNT_SID")
    if value is None:
        return None
    value = value.strip()
    if not re.fullmatch(r"AC[0-9a-fA-F]{32}", value):
        raise ConfigError(
            "TWILIO_ACCOUNT_SID is not an Account SID (AC followed by 32 hexadecimal digits)"
        )
    return value


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and check every setting; raises ConfigError naming the first bad variable."""
    r = _Reader(os.environ if env is None else env)
    model = r.raw("MODEL") or "gpt-4o-mini"
    window = r.integer("MODEL_MAX_TOKENS", 0, 0, 100_000_000) or known_context_window(model)
    if window is None:
        raise ConfigError(
            f"MODEL_MAX_TOKENS is unset and the context window of MODEL={model!r} is unknown:"
            " set MODEL_MAX_TOKENS"
        )
    n = r.integer("N", 1, 1, 128)
    if n != 1:
        raise ConfigError(f"N={n} is not supported: chatms streams one answer per turn, use N=1")
    max_tokens = r.integer("MAX_TOKENS", min(1024, window // 4), 1, window)
    try:
        TokenBudget(window, max_tokens)
    except ValueError as exc:
        raise ConfigError(
            f"MAX_TOKENS={max_tokens} with MODEL_MAX_TOKENS={window}: {exc}"
        ) from None
    base_url = r.raw("OPENAI_BASE_URL") or "https://api.openai.com/v1"
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"OPENAI_BASE_URL={base_url!r} is not an http(s) URL")
    database_url = r.raw("DATABASE_URL")
    if database_url is not None and not database_url.startswith(("postgres://", "postgresql://")):
        raise ConfigError("DATABASE_URL is not a postgres:// or postgresql:// URL")
    log_format = (r.raw("LOG_FORMAT") or "text").lower()
    if log_format not in ("text", "json"):
        raise ConfigError(f"LOG_FORMAT={log_format!r} is not text or json")
    log_level = (r.raw("LOG_LEVEL") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"LOG_LEVEL={log_level!r} is not DEBUG, INFO, WARNING or ERROR")
    return Settings(
        openai_api_key=r.raw("OPENAI_API_KEY"),
        openai_base_url=base_url,
        model=model,
        model_max_tokens=window,
        temperature=r.number("TEMPERATURE", 1.0, 0.0, 2.0),
        top_p=r.number("TOP_P", 1.0, 0.0, 1.0),
        max_tokens=max_tokens,
        stop=_stop_sequences(r.raw("STOP")),
        presence_penalty=r.number("PRESENCE_PENALTY", 0.0, -2.0, 2.0),
        frequency_penalty=r.number("FREQUENCY_PENALTY", 0.0, -2.0, 2.0),
        auth_token=r.raw("AUTH_TOKEN"),
        initial_chat_message=r.raw("INITIAL_CHAT_MESSAGE") or "You are a helpful assistant.",
        grpc_host=r.raw("GRPC_HOST") or "0.0.0.0",  # noqa: S104 (a server listens)
        grpc_port=r.integer("GRPC_SERVER_PORT", 50051, 0, 65535),
        web_host=r.raw("WEB_HOST") or "0.0.0.0",  # noqa: S104
        web_port=r.integer("WEB_SERVER_PORT", 8080, 0, 65535),
        database_url=database_url,
        data_dir=Path(r.raw("CHATMS_DATA_DIR") or ".chatms"),
        db_pool_size=r.integer("DATABASE_POOL_SIZE", 10, 1, 1000),
        db_acquire_timeout=r.number("DATABASE_ACQUIRE_TIMEOUT", 5.0, 0.01, 600),
        upstream_connect_timeout=r.number("UPSTREAM_CONNECT_TIMEOUT", 5.0, 0.01, 600),
        upstream_first_token_timeout=r.number("UPSTREAM_FIRST_TOKEN_TIMEOUT", 60.0, 0.01, 3600),
        upstream_idle_timeout=r.number("UPSTREAM_IDLE_TIMEOUT", 60.0, 0.01, 3600),
        upstream_max_retries=r.integer("UPSTREAM_MAX_RETRIES", 2, 0, 10),
        turn_timeout=r.number("TURN_TIMEOUT_SECONDS", 300.0, 1, 86_400),
        chat_lease_seconds=r.number("CHAT_LEASE_SECONDS", 60.0, 1, 3600),
        max_message_chars=r.integer("MAX_MESSAGE_CHARS", 32_000, 1, 10_000_000),
        max_user_id_chars=r.integer("MAX_USER_ID_CHARS", 256, 1, 10_000),
        max_body_bytes=r.integer("MAX_BODY_BYTES", 256 * 1024, 1024, 64 * 1024 * 1024),
        grpc_max_message_bytes=r.integer(
            "GRPC_MAX_MESSAGE_BYTES", 256 * 1024, 1024, 64 * 1024 * 1024
        ),
        shutdown_grace_seconds=r.number("SHUTDOWN_GRACE_SECONDS", 20.0, 0, 3600),
        log_level=log_level,
        log_format=log_format,
        tiktoken_offline=r.flag("TIKTOKEN_OFFLINE", False),
        twilio_account_sid=_account_sid(r),
        twilio_auth_token=r.raw("TWILIO_AUTH_TOKEN"),
        public_base_url=_http_url(r, "PUBLIC_BASE_URL", None),
        twilio_api_base_url=_http_url(r, "TWILIO_API_BASE_URL", "https://api.twilio.com")
        or "https://api.twilio.com",
        whatsapp_max_body_chars=r.integer("WHATSAPP_MAX_BODY_CHARS", 4096, 1, 1_000_000),
        whatsapp_send_rate=r.number("WHATSAPP_SEND_RATE", 10.0, 0.1, 1000),
        whatsapp_claim_seconds=r.number("WHATSAPP_CLAIM_SECONDS", 30.0, 1, 3600),
        whatsapp_concurrency=r.integer("WHATSAPP_CONCURRENCY", 8, 1, 256),
    )


def load_dotenv_file(path: str = ".env") -> None:
    """Load `.env` from the working directory; real environment variables win."""
    from dotenv import load_dotenv

    load_dotenv(path, override=False)
