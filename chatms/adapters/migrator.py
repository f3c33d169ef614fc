"""The schema: numbered SQL files in `migrations/`, applied in order, each once."""

from __future__ import annotations

import logging
from importlib import resources
from importlib.resources.abc import Traversable

import asyncpg

log = logging.getLogger("chatms.postgres")

# Any fixed 64-bit number: replicas starting together take turns migrating.
MIGRATION_LOCK_KEY = 0x63686174_6D73


class MigrationError(Exception):
    """The packaged migrations are not a clean sequence (a packaging mistake, not an outage)."""


def migration_files(folder: Traversable | None = None) -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration in `folder` (the packaged ones), in order.

    Two files with one number are refused: which one ran would depend on the file system.
    """
    folder = folder or resources.files("chatms.adapters").joinpath("migrations")
    found: dict[int, tuple[int, str, str]] = {}
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        number = entry.name.split("_", 1)[0]
        if not number.isdigit():
            raise MigrationError(f"migration {entry.name} does not start with its number")
        version = int(number)
        if version in found:
            raise MigrationError(
                f"migrations {found[version][1]} and {entry.name} share the number {version}"
            )
        found[version] = (version, entry.name, entry.read_text(encoding="utf-8"))
    return sorted(found.values())


async def migrate(pool: asyncpg.Pool, folder: Traversable | None = None) -> list[str]:
    """Apply the migrations not yet applied; returns their names."""
    files = migration_files(folder)
    applied: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in files:
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
            )
            applied.append(name)
    for name in applied:
        log.info("applied migration %s", name)
    return applied


async def pending_migrations(pool: asyncpg.Pool) -> list[str]:
    """Names of packaged migrations the database lacks (all of them on an empty database)."""
    async with pool.acquire() as conn:
        exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
        done = (
            {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            if exists
            else set()
        )
    return [name for version, name, _ in migration_files() if version not in done]
