"""The migrator: numbered files in order, one number once, and upgrades that keep the data."""

from __future__ import annotations

import shutil
import uuid
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from chatms.adapters.migrator import MigrationError, migrate, migration_files
from chatms.adapters.pgpool import create_pool

PACKAGED = Path(str(resources.files("chatms.adapters").joinpath("migrations")))


def test_two_files_with_one_number_are_refused(tmp_path: Path) -> None:
    """Two migrations sharing a number stop the migrator, naming both files."""
    (tmp_path / "003_a.sql").write_text("SELECT 1;")
    (tmp_path / "003_b.sql").write_text("SELECT 2;")
    with pytest.raises(MigrationError, match="share the number 3") as refused:
        migration_files(tmp_path)
    assert "003_a.sql" in str(refused.value) and "003_b.sql" in str(refused.value)


def test_packaged_migrations_are_numbered_once() -> None:
    """The shipped migrations form a sequence 1, 2, 3, ... without gaps or repeats."""
    versions = [version for version, _, _ in migration_files()]
    assert versions == list(range(1, len(versions) + 1))


@pytest.fixture
async def empty_database(database_url: str):
    """A database of its own on the test server, dropped afterwards."""
    name = f"chatms_migrate_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(database_url)._replace(path="/" + name))
    try:
        yield url
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def test_the_inbound_queue_migration_keeps_whatsapp_work(
    empty_database: str, tmp_path: Path
) -> None:
    """Messages, sent parts and senders' chats stored before 005 are all there after it."""
    before = [name for _, name, _ in migration_files() if name < "005"]
    for name in before:
        shutil.copy(PACKAGED / name, tmp_path / name)
    pool = await create_pool(empty_database, max_size=2)
    try:
        await migrate(pool, tmp_path)
        chat = str(uuid.uuid4())
        await pool.execute(
            "INSERT INTO whatsapp_inbound (message_sid, account_sid, sender, recipient, body,"
            " num_media, profile_name, status, parts, parts_sent, chat_id, answer_seq)"
            " VALUES ('SM1', 'AC1', 'whatsapp:+1', 'whatsapp:+2', 'hi', 1, 'Ann', 'sending',"
            " ARRAY['a', 'b'], 1, $1, 2)", chat)
        await pool.execute(
            "INSERT INTO whatsapp_outbound (message_sid, part, twilio_sid)"
            " VALUES ('SM1', 0, 'SMx')")
        await pool.execute(
            "INSERT INTO whatsapp_senders (sender, chat_id) VALUES ('whatsapp:+1', $1)", chat)
        assert await migrate(pool) == [name for _, name, _ in migration_files()][len(before):]
        row = await pool.fetchrow("SELECT * FROM inbound_messages")
        assert (row["channel"], row["message_id"], row["account"], row["body"]) == (
            "whatsapp", "SM1", "AC1", "hi")
        assert (row["media_count"], row["sender_name"], row["status"]) == (1, "Ann", "sending")
        assert (list(row["parts"]), row["parts_sent"]) == (["a", "b"], 1)
        assert (str(row["chat_id"]), row["answer_seq"]) == (chat, 2)
        part = await pool.fetchrow("SELECT * FROM outbound_parts")
        assert (part["inbound_id"], part["part"], part["provider_id"]) == (row["id"], 0, "SMx")
        sender = await pool.fetchrow("SELECT * FROM channel_senders")
        assert (sender["channel"], sender["sender"], str(sender["chat_id"])) == (
            "whatsapp", "whatsapp:+1", chat)
    finally:
        await pool.close()


async def test_chatms_migrate_applies_each_migration_once(empty_database: str) -> None:
    """`chatms migrate` brings an empty database up to date, and a second run adds nothing."""
    import asyncio
    import os
    import subprocess
    import sys

    from tests.support import ROOT

    env = {**os.environ, "DATABASE_URL": empty_database, "PYTHONPATH": str(ROOT),
           "TIKTOKEN_OFFLINE": "true"}

    def run() -> str:
        done = subprocess.run([sys.executable, "-m", "chatms", "migrate"], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=60, check=True)
        return done.stdout

    names = [name for _, name, _ in migration_files()]
    first = await asyncio.to_thread(run)
    assert first.strip() == f"applied {len(names)} migration(s): {', '.join(names)}"
    assert (await asyncio.to_thread(run)).strip() == "applied 0 migration(s)"
