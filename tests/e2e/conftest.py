from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fakes.openai import FakeOpenAI
from tests.support import WORK_DIR, ServeProcess, base_env, park_open_inbound


@pytest.fixture
def serve(
    database_url: str, fake_openai: FakeOpenAI, tmp_path: Path
) -> Iterator[Callable[..., ServeProcess]]:
    """Start real `chatms serve` processes; every one still running is killed afterwards."""
    asyncio.run(park_open_inbound(database_url))
    started: list[ServeProcess] = []

    def start(cwd: Path = WORK_DIR, **env: str) -> ServeProcess:
        full = base_env(database_url, fake_openai.base_url, **env)
        full = {k: v for k, v in full.items() if v != "<unset>"}
        proc = ServeProcess(full, tmp_path / f"serve-{len(started)}.log", cwd).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
