"""Token counting per model, offline: tiktoken's own encodings from the bundled files."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from chatms.adapters import tokenizer
from chatms.adapters.tokenizer import OFFLINE_FALLBACK, load_counters

HINDI = "नमस्ते दुनिया"  # 5 tokens in o200k_base, 13 in cl100k_base


def test_each_model_counts_with_its_own_encoding_offline(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    counters = load_counters(["gpt-4o", "gpt-4", "llama3"], "gpt-4o-mini", offline=True)
    names = {model: c.name for model, c in counters.counters.items()}
    assert names == {"gpt-4o-mini": "o200k_base", "gpt-4o": "o200k_base",
                     "gpt-4": "cl100k_base", "llama3": "cl100k_base"}
    assert counters.for_model("gpt-4o") is counters.for_model("gpt-4o-mini"), "loaded once"
    assert counters.for_model("gpt-4o").count(HINDI) == 5
    assert counters.for_model("gpt-4").count(HINDI) == 13
    assert counters.for_model("never-configured") is counters.default
    # The cache now holds the very files tiktoken would have downloaded (its hashes).
    hashes = {hashlib.sha256(p.read_bytes()).hexdigest() for p in Path(tmp_path).iterdir()}
    assert hashes == {
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",  # o200k_base
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",  # cl100k_base
    }


def test_without_a_bundled_file_it_falls_back_to_cl100k_offline(
    tmp_path, monkeypatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tokenizer, "BUNDLED", ())
    with caplog.at_level(logging.WARNING, "chatms.tokenizer"):
        counters = load_counters([], "gpt-4o-mini", offline=True)
    assert counters.default.name == OFFLINE_FALLBACK
    assert "o200k_base unavailable" in caplog.text
