"""The suite runs sealed off from the machine: no stray setting, .env or tiktoken cache."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tests.support import ROOT, WORK_DIR, setting_names


def test_no_setting_of_the_machine_reaches_the_tests() -> None:
    """Only DATABASE_URL (documented) may come from outside; everything else is scrubbed."""
    names = setting_names()
    assert {"OPENAI_API_KEY", "AUTH_TOKEN", "MODEL", "N", "CHATMS_DATA_DIR"} <= names
    leaked = sorted(
        key for key in os.environ
        if key != "DATABASE_URL" and (key in names or key.startswith(("OPENAI_", "PG")))
    )
    assert leaked == []


def test_working_directory_has_no_env_file() -> None:
    assert Path.cwd() == WORK_DIR != ROOT
    assert not (WORK_DIR / ".env").exists()


def test_tiktoken_cache_is_the_suites_own() -> None:
    """Never the machine's cache (a warm one, or one holding other files): a folder made for
    this run, which chatms seeds from its bundled encodings as on a fresh install."""
    cache = Path(os.environ["TIKTOKEN_CACHE_DIR"])
    assert cache.name.startswith("chatms-tests-tiktoken-")
    assert cache.parent == Path(tempfile.gettempdir())
