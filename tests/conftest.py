"""Real parts for every test: PostgreSQL (embedded or DATABASE_URL) and a loopback fake OpenAI."""

from __future__ import annotations

import os
import signal
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from tests.fakes.openai import FakeOpenAI
from tests.fakes.twilio import FakeTwilio
from tests.support import WORK_DIR, isolate_from_machine

isolate_from_machine()
# The tests fork pg_ctl while grpcio's threads run; its fork handlers are not wanted there.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")


def _still_ignored(signum: int, frame: object) -> None:
    """This run keeps ignoring the signal, as it was started to."""


# Run with SIGINT or SIGHUP ignored (nohup, a background job), the tests' `chatms serve`
# children would inherit the ignore and keep it, as chatms does on purpose, and the tests
# that stop them with those signals would wait in vain. A handled signal is reset to its
# default in a child, so: handled here, by doing nothing.
for _signal in (signal.SIGINT, signal.SIGHUP):
    if signal.getsignal(_signal) == signal.SIG_IGN:
        signal.signal(_signal, _still_ignored)


@pytest.fixture(scope="session", autouse=True)
def neutral_working_directory() -> Iterator[None]:
    """Run in an empty folder: a .env in the clone or the caller's folder is never read."""
    before = Path.cwd()
    os.chdir(WORK_DIR)
    yield
    os.chdir(before)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """DATABASE_URL when set, else a throwaway embedded PostgreSQL for this run."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from chatms.adapters.embedded_postgres import pgserver_package

    data = Path(tempfile.mkdtemp(prefix="chatms-test-pg-"))
    server = pgserver_package().get_server(data / "pgdata", cleanup_mode="delete")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def fake_openai_server() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_openai(fake_openai_server: FakeOpenAI) -> FakeOpenAI:
    fake_openai_server.reset()
    return fake_openai_server


@pytest.fixture(scope="session")
def fake_twilio_server() -> Iterator[FakeTwilio]:
    fake = FakeTwilio().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_twilio(fake_twilio_server: FakeTwilio) -> FakeTwilio:
    fake_twilio_server.reset()
    return fake_twilio_server


AppFactory = Callable[..., Awaitable["object"]]


@pytest.fixture
async def start_app(database_url: str, fake_openai: FakeOpenAI) -> AsyncIterator[AppFactory]:
    """Start chatms in this test's event loop, on free loopback ports; stopped afterwards."""
    from chatms.app import App
    from chatms.builder import build_app
    from chatms.config import load_settings
    from tests.support import base_env, park_open_inbound

    started: list[App] = []

    async def start(**env: str) -> App:
        app = await build_app(load_settings(base_env(database_url, fake_openai.base_url, **env)))
        if not started:  # migrated now; this test's own messages come after
            await park_open_inbound(database_url)
        await app.start()
        started.append(app)
        return app

    yield start
    for app in reversed(started):
        await app.stop()


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    """Print the fault report's summary line at the end of the run."""
    from tests.integration.test_fault_report import REPORT

    for line in REPORT:
        terminalreporter.write_line(line)
