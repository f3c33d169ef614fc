"""The first connection to DATABASE_URL: waited for while the server is not up yet, and each
refusal told in one line that names the host and the part of the URL to fix, never the
password."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

from chatms.domain.errors import StartupError

log = logging.getLogger("chatms.postgres")

UNREACHABLE = (OSError, asyncio.TimeoutError, asyncpg.CannotConnectNowError)


@dataclass(frozen=True)
class Target:
    """The parts of a DATABASE_URL that may be shown: everything but the password."""

    where: str
    user: str
    database: str

    @classmethod
    def of(cls, url: str) -> Target:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        host = parts.hostname or query.get("host", ["localhost"])[0]
        try:
            port = parts.port or int(query.get("port", ["5432"])[0])
        except ValueError:
            port = 5432
        user = unquote(parts.username or query.get("user", [""])[0]) or "(default user)"
        database = unquote(parts.path.lstrip("/")) or user
        return cls(f"{host}:{port}", user, database)


def _refusal(target: Target, exc: asyncpg.PostgresError) -> StartupError:
    at = f"DATABASE_URL: PostgreSQL at {target.where}"
    if isinstance(exc, asyncpg.InvalidPasswordError):
        return StartupError(
            f"{at} refused the password of user {target.user!r}: fix the user name or"
            " password in DATABASE_URL"
        )
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return StartupError(
            f"{at} has no database {target.database!r}: create it (createdb"
            f" {target.database}) or fix the database name at the end of DATABASE_URL"
        )
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return StartupError(
            f"{at} does not let user {target.user!r} in ({exc.sqlstate}): fix the user name"
            " in DATABASE_URL, or the server's pg_hba.conf"
        )
    return StartupError(
        f"{at} refused the connection ({type(exc).__name__}, SQLSTATE {exc.sqlstate}):"
        " check DATABASE_URL"
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "no answer"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


async def wait_for_database(url: str, patience: float) -> None:
    """Return once PostgreSQL at `url` accepts a connection; StartupError when it refuses,
    or when it stays unreachable for `patience` seconds (retried meanwhile, as a database
    started beside us, in compose or Kubernetes, comes up a little later)."""
    target = Target.of(url)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    delay = 0.2
    warned = False
    while True:
        left = deadline - loop.time()
        try:
            conn = await asyncpg.connect(url, timeout=max(0.5, min(5.0, left)))
        except asyncpg.PostgresError as exc:
            if not isinstance(exc, asyncpg.CannotConnectNowError):
                raise _refusal(target, exc) from None
            reason = "the server is starting"
        except UNREACHABLE as exc:
            reason = _reason(exc)
        except (asyncpg.InterfaceError, ValueError) as exc:  # not PostgreSQL, or a bad URL
            raise StartupError(
                f"DATABASE_URL: cannot connect to PostgreSQL at {target.where}"
                f" ({type(exc).__name__}): check DATABASE_URL"
            ) from None
        else:
            await conn.close()
            return
        if loop.time() + delay > deadline:
            raise StartupError(
                f"DATABASE_URL: cannot reach PostgreSQL at {target.where} ({reason}) after"
                f" {patience:g}s: check the host and port in DATABASE_URL, or wait longer with"
                " DATABASE_CONNECT_TIMEOUT"
            )
        if not warned:
            log.warning("waiting for PostgreSQL at %s (%s), up to %gs (DATABASE_CONNECT_TIMEOUT)",
                        target.where, reason, patience)
            warned = True
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)
