"""Settings from the environment (and an optional .env file), checked once at start.

A bad value stops the process with one line naming the variable and what is wrong.
`Settings` is made of sections (see `sections.py`); each part of chatms is handed the
section it needs. To add a setting, add one field to its section (see `reading.py`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from chatms.config.reading import ConfigError, Env, read_section, variables
from chatms.config.sections import (
    ContextSettings,
    DatabaseSettings,
    EdgeSettings,
    InboundSettings,
    LogSettings,
    ModelSettings,
    ServerSettings,
    TurnSettings,
    UpstreamSettings,
    WebSettings,
    WhatsAppSettings,
)


@dataclass(frozen=True, slots=True)
class Settings:
    model: ModelSettings = field(default_factory=ModelSettings)
    turns: TurnSettings = field(default_factory=TurnSettings)
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    edge: EdgeSettings = field(default_factory=EdgeSettings)
    web: WebSettings = field(default_factory=WebSettings)
    log: LogSettings = field(default_factory=LogSettings)
    inbound: InboundSettings = field(default_factory=InboundSettings)
    whatsapp: WhatsAppSettings = field(default_factory=WhatsAppSettings)
    context: ContextSettings = field(default_factory=ContextSettings)

    def _sections(self) -> list[Any]:
        return [getattr(self, f.name) for f in fields(self)]

    @property
    def secrets(self) -> tuple[str | None, ...]:
        """Values that must never appear in a log line or an error message."""
        return tuple(
            getattr(section, f.name)
            for section in self._sections()
            for f in variables(type(section))
            if f.metadata["secret"]
        )

    def describe(self) -> dict[str, object]:
        """Every variable's value, safe to log: secrets are shown only as set or unset."""
        described: dict[str, object] = {}
        for section in self._sections():
            for f in variables(type(section)):
                value = getattr(section, f.name)
                if f.metadata["secret"]:
                    value = "set" if value else "unset"
                described[f.metadata["env"]] = value
        return described


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and check every setting; raises ConfigError naming the first bad variable."""
    source = Env(os.environ if env is None else env)
    sections: dict[str, Any] = {}
    for f in fields(Settings):
        section = f.default_factory
        assert isinstance(section, type)  # every field of Settings is a section class
        sections[f.name] = read_section(section, source)
    settings = Settings(**sections)
    return replace(settings, model=settings.model.checked())


def load_dotenv_file(path: str = ".env") -> Path | None:
    """Load `.env` from the working directory (real environment variables win); its path."""
    from dotenv import load_dotenv

    found = Path(path).resolve()
    if not found.is_file():
        return None
    load_dotenv(found, override=False)
    return found


__all__ = [
    "ConfigError",
    "ContextSettings",
    "DatabaseSettings",
    "EdgeSettings",
    "InboundSettings",
    "LogSettings",
    "ModelSettings",
    "ServerSettings",
    "Settings",
    "TurnSettings",
    "UpstreamSettings",
    "WebSettings",
    "WhatsAppSettings",
    "load_dotenv_file",
    "load_settings",
]
