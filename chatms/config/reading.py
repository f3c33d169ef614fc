"""Declaring a setting: one dataclass field names its variable, its default and its check.

A section of the settings is a frozen dataclass whose fields are made with the helpers
below (`integer`, `number`, `text`, ...). Each helper records, in the field's metadata, how
to read that one variable; `read_section` reads them all. So a new setting is one line in
its section (plus its use), and its default is written nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, field, fields
from typing import Any, TypeVar, overload
from urllib.parse import urlsplit

T = TypeVar("T")
S = TypeVar("S")


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""


class Env:
    """The environment being read: unset and empty values both count as unset."""

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


Reader = Callable[[Env, str, Any], Any]


def setting(name: str, default: T, read: Callable[[Env, str, T], T], secret: bool = False) -> T:
    """A field read from variable `name` by `read(env, name, default)`."""
    return field(default=default, metadata={"env": name, "read": read, "secret": secret})


def integer(name: str, default: int, low: int, high: int) -> int:
    def read(env: Env, name: str, default: int) -> int:
        value = env.parse(name, default, int, "a whole number")
        # Checked only when set: a default of 0 may stand for "worked out from others".
        if env.raw(name) is not None and not low <= value <= high:
            raise ConfigError(f"{name}={value} is out of range: use {low} to {high}")
        return value

    return setting(name, default, read)


def number(name: str, default: float, low: float, high: float) -> float:
    def read(env: Env, name: str, default: float) -> float:
        value = env.parse(name, default, float, "a number")
        if not low <= value <= high:
            raise ConfigError(f"{name}={value:g} is out of range: use {low:g} to {high:g}")
        return value

    return setting(name, default, read)


def flag(name: str, default: bool) -> bool:
    def read(env: Env, name: str, default: bool) -> bool:
        value = env.raw(name)
        if value is None:
            return default
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}={value!r} is not a boolean: use true or false")

    return setting(name, default, read)


def text(name: str, default: str) -> str:
    return setting(name, default, lambda env, name, default: env.raw(name) or default)


def optional(name: str, secret: bool = False) -> str | None:
    """Unset by default; `secret` values are never described or logged."""
    return setting(name, None, lambda env, name, default: env.raw(name), secret=secret)


def choice(name: str, default: str, allowed: tuple[str, ...], upper: bool = False) -> str:
    def read(env: Env, name: str, default: str) -> str:
        value = env.raw(name) or default
        value = value.upper() if upper else value.lower()
        if value not in allowed:
            listed = ", ".join(allowed[:-1]) + " or " + allowed[-1]
            raise ConfigError(f"{name}={value!r} is not {listed}")
        return value

    return setting(name, default, read)


def matching(name: str, pattern: str, what: str) -> str | None:
    """Unset by default; when set, the whole value must match `pattern`."""

    def read(env: Env, name: str, default: str | None) -> str | None:
        value = env.raw(name)
        if value is None:
            return None
        value = value.strip()
        if not re.fullmatch(pattern, value):
            raise ConfigError(f"{name} is not {what}")
        return value

    return setting(name, None, read)


def _prefixed(env: Env, name: str, prefixes: tuple[str, ...], what: str) -> str | None:
    value = env.raw(name)
    if value is not None and not value.startswith(prefixes):
        raise ConfigError(f"{name}={value!r} is not {what}")
    return value


@overload
def prefixed(
    name: str, default: str, prefixes: tuple[str, ...], what: str, secret: bool = ...
) -> str: ...
@overload
def prefixed(
    name: str, default: None, prefixes: tuple[str, ...], what: str, secret: bool = ...
) -> str | None: ...
def prefixed(
    name: str, default: str | None, prefixes: tuple[str, ...], what: str, secret: bool = False
) -> Any:
    """A URL-like value that must start with one of `prefixes` (kept as given)."""
    return setting(
        name, default, lambda env, name, default: _prefixed(env, name, prefixes, what) or default,
        secret=secret,
    )


def _http_url(env: Env, name: str) -> str | None:
    value = env.raw(name)
    if value is None:
        return None
    value = value.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(f"{name}={value!r} is not an http(s) URL without query or fragment")
    return value


@overload
def http_url(name: str, default: str) -> str: ...
@overload
def http_url(name: str, default: None) -> str | None: ...
def http_url(name: str, default: str | None) -> Any:
    """An http(s) URL without query or fragment; its trailing slash is dropped."""
    return setting(name, default, lambda env, name, default: _http_url(env, name) or default)


def words(name: str, most: int, what: str) -> tuple[str, ...]:
    """Comma-separated values (empty ones dropped), at most `most` of them."""

    def read(env: Env, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = env.raw(name)
        if value is None:
            return default
        parts = tuple(part for part in value.split(",") if part)
        if len(parts) > most:
            raise ConfigError(f"{name} has {len(parts)} {what}; at most {most} are accepted")
        return parts

    return setting(name, (), read)


def _origin(name: str, value: str) -> str:
    """One exact origin as a browser sends it: scheme://host[:port], lowercase, no default port."""
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (
        parts.scheme.lower() not in ("http", "https") or not parts.hostname or port == -1
        or parts.username is not None or parts.password is not None
        or parts.path not in ("", "/") or parts.query or parts.fragment
    ):
        raise ConfigError(
            f"{name} has {value!r}, which is not an origin like https://app.example.com"
        )
    scheme, host = parts.scheme.lower(), parts.hostname
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}[scheme]
    return f"{scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


def origins(name: str) -> tuple[str, ...]:
    """Exact origins, comma-separated; `*` is refused (the API is called with a token)."""

    def read(env: Env, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = env.raw(name)
        if value is None:
            return default
        found: list[str] = []
        for item in (part.strip() for part in value.split(",")):
            if item == "*":
                raise ConfigError(f"{name} takes exact origins; '*' is not allowed")
            if item and (origin := _origin(name, item)) not in found:
                found.append(origin)
        return tuple(found)

    return setting(name, (), read)


def names(
    name: str, default: tuple[str, ...], normal: Callable[[str], str] = str.strip
) -> tuple[str, ...]:
    """A comma-separated list, each item written by `normal`; `none` sets it empty."""

    def read(env: Env, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = env.raw(name)
        if value is None:
            return default
        items = tuple(normal(part) for part in value.split(",") if part.strip())
        return () if items == ("none",) else items

    return setting(name, default, read)


def variables(section: type[Any]) -> list[Field[Any]]:
    """The fields of `section` that are read from a variable."""
    return [f for f in fields(section) if "env" in f.metadata]


def read_section(section: type[S], env: Env) -> S:
    """An instance of `section` with every variable it declares read from `env`."""
    values = {}
    for f in variables(section):
        default = f.default if f.default is not MISSING else None
        values[f.name] = f.metadata["read"](env, f.metadata["env"], default)
    return section(**values)
