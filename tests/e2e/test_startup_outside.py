"""What is outside chatms at start, against a real `chatms serve`: a DATABASE_URL that is down,
refuses the password or names no database stops it in one line (never showing the password);
a database that comes up a little later is waited for; the upstream only ever gets warnings."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.e2e.test_startup import one_line_failure
from tests.fakes.openai import FakeOpenAI
from tests.support import OwnPostgres, base_env, free_port, serve_until_exit

PASSWORD = "s3cret-pw-5b1e"  # a test's own throwaway role
ROLE = "chatms_pw"


async def _add_password_role(url: str, pgdata: Path) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
        await conn.execute(f"CREATE DATABASE {ROLE} OWNER {ROLE}")
        # This role, and only it, must give its password (the rest of the server trusts).
        hba = pgdata / "pg_hba.conf"
        hba.write_text(f"local all {ROLE} scram-sha-256\n" + hba.read_text())
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def password_postgres() -> Iterator[OwnPostgres]:
    """A PostgreSQL of its own with a role that logs in by password (scram-sha-256)."""
    own = OwnPostgres()
    asyncio.run(_add_password_role(own.url, own.pgdata))
    yield own
    own.close()


def url_of(own: OwnPostgres, password: str, database: str) -> str:
    socket_dir = own.url.split("host=", 1)[1]
    return f"postgresql://{ROLE}:{password}@/{database}?host={socket_dir}"


def outside_env(database_url: str, fake: FakeOpenAI, **extra: str) -> dict[str, str]:
    return base_env(database_url, fake.base_url, **extra)


def test_wrong_password_names_user_and_hides_it(password_postgres: OwnPostgres,
                                                 fake_openai: FakeOpenAI) -> None:
    wrong = PASSWORD + "-wrong"
    done = serve_until_exit(outside_env(url_of(password_postgres, wrong, ROLE), fake_openai))
    one_line_failure(done, "DATABASE_URL", f"refused the password of user '{ROLE}'")
    assert wrong not in done.stderr and PASSWORD not in done.stderr


def test_missing_database_is_named(password_postgres: OwnPostgres,
                                   fake_openai: FakeOpenAI) -> None:
    done = serve_until_exit(outside_env(url_of(password_postgres, PASSWORD, "nope_db"),
                                        fake_openai))
    one_line_failure(done, "DATABASE_URL", "has no database 'nope_db'", "createdb nope_db")
    assert PASSWORD not in done.stderr


def test_unreachable_database_gives_up_after_the_timeout(fake_openai: FakeOpenAI) -> None:
    port = free_port()
    url = f"postgresql://someone:{PASSWORD}@127.0.0.1:{port}/chatms"
    began = time.monotonic()
    done = serve_until_exit(outside_env(url, fake_openai, DATABASE_CONNECT_TIMEOUT="1.5"))
    waited = time.monotonic() - began
    one_line_failure(done, f"cannot reach PostgreSQL at 127.0.0.1:{port}", "after 1.5s",
                     "DATABASE_CONNECT_TIMEOUT")
    assert PASSWORD not in done.stderr
    assert "waiting for PostgreSQL" in done.stderr
    assert waited < 30


def test_a_database_that_comes_up_later_is_waited_for(serve, tmp_path: Path) -> None:
    own = OwnPostgres()
    own.stop()

    def start_once_waited_for() -> None:  # PostgreSQL comes up while chatms waits for it
        log = tmp_path / "serve-0.log"  # the serve fixture's log of its first process
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if log.exists() and "waiting for PostgreSQL at" in log.read_text(errors="replace"):
                break
            time.sleep(0.05)
        own.start()

    starter = threading.Thread(target=start_once_waited_for)
    starter.start()
    try:
        proc = serve(DATABASE_URL=own.url, DATABASE_CONNECT_TIMEOUT="60")
        assert "waiting for PostgreSQL at" in proc.log()
        assert proc.terminate() == 0
    finally:
        starter.join(70)
        own.close()


def wait_for_line(proc, text: str, seconds: float = 15) -> str:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        log = proc.log()
        if text in log:
            return log
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not logged:\n{proc.log()}")


def test_missing_api_key_is_one_warning_and_no_refusal(serve) -> None:
    proc = serve(OPENAI_API_KEY="<unset>")
    log = wait_for_line(proc, "OPENAI_API_KEY is not set")
    assert log.count("OPENAI_API_KEY is not set") == 1
    assert proc.terminate() == 0


def test_upstream_without_models_endpoint_is_a_warning(serve, fake_openai: FakeOpenAI) -> None:
    fake_openai.models_status = 404
    proc = serve()
    wait_for_line(proc, "/models answered HTTP 404")
    assert proc.terminate() == 0


def test_model_the_upstream_does_not_list_is_a_warning(serve, fake_openai: FakeOpenAI) -> None:
    listed = serve(LOG_LEVEL="DEBUG")
    wait_for_line(listed, "lists MODEL='gpt-4o-mini'")
    assert listed.terminate() == 0
    assert "turns are still tried" not in listed.log()  # a listed model: no warning
    fake_openai.models = ["some-other-model"]
    unlisted = serve()
    wait_for_line(unlisted, "does not list MODEL='gpt-4o-mini'")
    assert unlisted.terminate() == 0
