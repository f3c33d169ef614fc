"""The first hour, against a real `chatms serve`: each start-up failure is one line and exit 2,
signals stop it cleanly at any moment, and the embedded PostgreSQL is never lost track of."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.e2e.grpc_sync import chat
from tests.fakes.openai import FakeOpenAI
from tests.support import (
    ROOT,
    base_env,
    free_port,
    new_user,
    own_data_dir,
    serve_until_exit,
)


def one_line_failure(done: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 2, no traceback, and a last line `chatms: ...` holding every word."""
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("chatms: "), done.stderr
    for word in words:
        assert word in line, line
    return line


def postmaster(pgdata: Path) -> psutil.Process | None:
    """The PostgreSQL running on `pgdata`, if one is."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
        proc = psutil.Process(pid)
    except (FileNotFoundError, IndexError, ValueError, psutil.NoSuchProcess):
        return None
    return proc if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE else None


@pytest.fixture
def embedded_env(database_url: str, fake_openai: FakeOpenAI) -> dict[str, str]:
    """Settings of a serve on its own embedded PostgreSQL in a fresh data directory."""
    env = base_env(database_url, fake_openai.base_url, CHATMS_DATA_DIR=str(own_data_dir()))
    del env["DATABASE_URL"]
    return env


@pytest.mark.parametrize("prefix", ["GRPC", "WEB"])
def test_port_in_use_names_the_setting(prefix: str, database_url: str,
                                       fake_openai: FakeOpenAI) -> None:
    env = base_env(database_url, fake_openai.base_url)
    with socket.create_server(("127.0.0.1", int(env[f"{prefix}_SERVER_PORT"]))):
        done = serve_until_exit(env)
    one_line_failure(done, f"{prefix}_SERVER_PORT={env[f'{prefix}_SERVER_PORT']}",
                     "already in use")


def test_data_dir_held_by_a_running_chatms(serve, embedded_env: dict[str, str]) -> None:
    first = serve(**embedded_env, DATABASE_URL="<unset>")
    again = dict(embedded_env, GRPC_SERVER_PORT=str(free_port()),
                 WEB_SERVER_PORT=str(free_port()))
    done = serve_until_exit(again)
    assert first.proc is not None
    one_line_failure(done, "in use by another running chatms", f"pid {first.proc.pid}",
                     "CHATMS_DATA_DIR")
    assert first.terminate() == 0


@contextlib.contextmanager
def unwritable_dir() -> Iterator[Path]:
    """A directory nobody can create files in, root included (immutable, or chmod when not root)."""
    path = own_data_dir()
    if os.geteuid() != 0:
        path.chmod(0o500)
        yield path
        path.chmod(0o700)
        return
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False).returncode:
        yield Path("/sys/chatms-data")  # sysfs refuses new entries, to root too
        return
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_data_dir_not_writable(embedded_env: dict[str, str]) -> None:
    with unwritable_dir() as path:
        done = serve_until_exit(dict(embedded_env, CHATMS_DATA_DIR=str(path)))
    one_line_failure(done, f"CHATMS_DATA_DIR={path}", "cannot be written")


def test_ctrl_c_during_start_exits_130_and_leaves_nothing(embedded_env: dict[str, str]) -> None:
    """SIGINT while the embedded PostgreSQL is being made: quiet 130, no server left behind."""
    data = Path(embedded_env["CHATMS_DATA_DIR"])
    full = {**os.environ, **embedded_env, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "chatms", "serve"], env=full,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (data / "pgdata").exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # the start is under way: the data directory is being made
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert postmaster(data / "pgdata") is None


def test_sighup_stops_like_sigterm(serve) -> None:
    proc = serve()
    assert proc.terminate(sig=signal.SIGHUP) == 0
    assert "signal received; shutting down" in proc.log()
    assert "chatms stopped" in proc.log()


def test_postgres_left_by_sigkill_is_taken_over_and_stopped(
    serve, embedded_env: dict[str, str]
) -> None:
    pgdata = Path(embedded_env["CHATMS_DATA_DIR"]) / "pgdata"
    first = serve(**embedded_env, DATABASE_URL="<unset>")
    user = new_user()
    chat_id = chat(first.grpc_target, user, "before the kill")[-1].chat_id
    first.kill()
    orphan = postmaster(pgdata)
    assert orphan is not None, "SIGKILL should leave the embedded PostgreSQL running"

    second = serve(**embedded_env, DATABASE_URL="<unset>")
    assert f"took over the embedded PostgreSQL (pid {orphan.pid})" in second.log()
    assert chat(second.grpc_target, user, "after", chat_id=chat_id)[-1].chat_id == chat_id
    assert second.terminate() == 0
    assert "embedded PostgreSQL stopped" in second.log()
    assert postmaster(pgdata) is None


def test_data_made_by_postgresql_16_keeps_running_on_16(
    serve, embedded_env: dict[str, str]
) -> None:
    """A data directory from the old package's PostgreSQL 16 is used as it is, chats and all."""
    from chatms.adapters.embedded_postgres import pgserver_package

    pgdata = Path(embedded_env["CHATMS_DATA_DIR"]) / "pgdata"
    old = pgserver_package().get_server(pgdata, cleanup_mode="stop", postgres_version=16)
    old.cleanup()
    assert (pgdata / "PG_VERSION").read_text().strip() == "16"

    first = serve(**embedded_env, DATABASE_URL="<unset>")
    assert "embedded PostgreSQL 16 running" in first.log()
    user = new_user()
    chat_id = chat(first.grpc_target, user, "kept on 16")[-1].chat_id
    assert first.terminate() == 0
    second = serve(**embedded_env, DATABASE_URL="<unset>")
    assert chat(second.grpc_target, user, "still", chat_id=chat_id)[-1].chat_id == chat_id
    assert second.terminate() == 0
    assert (pgdata / "PG_VERSION").read_text().strip() == "16"


def test_data_of_an_unknown_version_stops_in_one_line(embedded_env: dict[str, str]) -> None:
    pgdata = Path(embedded_env["CHATMS_DATA_DIR"]) / "pgdata"
    pgdata.mkdir()
    (pgdata / "PG_VERSION").write_text("13\n")
    done = serve_until_exit(embedded_env)
    one_line_failure(done, "PostgreSQL 13", "pg_dumpall", "CHATMS_DATA_DIR")
    assert (pgdata / "PG_VERSION").read_text() == "13\n"  # left untouched


def test_start_up_log_names_the_data_dir_and_env_file(
    serve, embedded_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("INITIAL_CHAT_MESSAGE=from the env file\n")
    proc = serve(cwd=tmp_path, **embedded_env, DATABASE_URL="<unset>")
    proc.terminate()
    log = proc.log()
    assert f"settings from the environment and {tmp_path / '.env'}" in log
    assert f"in {Path(embedded_env['CHATMS_DATA_DIR']) / 'pgdata'}" in log
    # Quiet by default: no initdb chatter, no XDG_RUNTIME_DIR warning.
    assert "initdb" not in log and "XDG_RUNTIME_DIR" not in log


def test_version_and_help_from_any_directory(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "chatms", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60, check=False)

    version = cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("chatms "), version
    helped = cli("serve", "--help")
    assert helped.returncode == 0
    for setting in ("OPENAI_API_KEY", "DATABASE_URL", "GRPC_SERVER_PORT", "README"):
        assert setting in helped.stdout
