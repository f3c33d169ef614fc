"""`chatms serve | migrate | protos | chat`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from chatms.config import ConfigError, Settings, load_dotenv_file, load_settings
from chatms.redaction import protect


def configure_logging(settings: Settings) -> None:
    """LOG_FORMAT=json: one JSON object per line; text: key=value fields after the message."""
    from chatms.observability.logs import configure

    configure(settings.log.level, settings.log.format)
    for handler in logging.getLogger().handlers:
        protect(handler, settings.secrets)


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop where it is installed, plain asyncio elsewhere."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


async def _migrate(settings: Settings) -> None:
    from chatms.builder import open_database

    database = await open_database(settings.database, max_size=1)
    await database.close()
    applied = database.applied
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chatms", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the gRPC and HTTP servers")
    commands.add_parser("migrate", help="apply database migrations and exit")
    commands.add_parser("protos", help="regenerate chatms/protogen from protos/")
    from chatms.entrypoints import chat_cli

    chat_cli.add_parser(commands)
    args = parser.parse_args(argv)

    if args.command == "chat":
        load_dotenv_file()
        return chat_cli.main(args)

    if args.command == "protos":
        from chatms.protos import regenerate

        regenerate()
        return 0

    load_dotenv_file()
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"chatms: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    if args.command == "serve":
        from chatms.builder import serve_forever

        run(serve_forever(settings))
    elif args.command == "migrate":
        run(_migrate(settings))
    return 0
