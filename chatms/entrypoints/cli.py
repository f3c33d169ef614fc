"""`chatms serve | migrate | protos | chat`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from chatms.config import ConfigError, Settings, load_dotenv_file, load_settings
from chatms.domain.errors import StartupError
from chatms.redaction import protect

T = TypeVar("T")


def configure_logging(settings: Settings) -> None:
    """LOG_FORMAT=json: one JSON object per line; text: key=value fields after the message."""
    from chatms.observability.logs import configure

    configure(settings.log.level, settings.log.format)
    for handler in logging.getLogger().handlers:
        protect(handler, settings.secrets)


SERVE_HELP = """\
Run the gRPC and HTTP servers until SIGINT, SIGTERM or SIGHUP.

Settings come from the environment, or from a .env file in the working directory (real
environment variables win). The main ones:
  OPENAI_API_KEY       upstream key (without it every turn fails with FAILED_PRECONDITION)
  OPENAI_BASE_URL      any OpenAI-compatible server (default https://api.openai.com/v1)
  MODEL                model of new chats (default gpt-4o-mini)
  AUTH_TOKEN           token every call must send (default: one made up for this run)
  GRPC_SERVER_PORT     gRPC port (default 50051)
  WEB_SERVER_PORT      HTTP port (default 8080)
  DATABASE_URL         postgresql://user:pass@host:5432/db (default: an embedded PostgreSQL)
  CHATMS_DATA_DIR      where the embedded PostgreSQL keeps its data (default .chatms)
  LOG_LEVEL, LOG_FORMAT  DEBUG/INFO/WARNING/ERROR, text/json

Every setting, with its default and limits, is in the Configuration table of the README.
A setting or start-up condition that stops the start is named in one line, with exit code 2.
"""
EXIT_USAGE = 2
log = logging.getLogger("chatms")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop where it is installed, plain asyncio elsewhere."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


async def _migrate(settings: Settings) -> int:
    from chatms.storage import open_database

    database = await open_database(settings.database, max_size=1)
    await database.close()
    applied = database.applied
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    return 0


def _parser() -> argparse.ArgumentParser:
    from chatms import __version__
    from chatms.entrypoints import chat_cli

    parser = argparse.ArgumentParser(prog="chatms", description=__doc__)
    parser.add_argument("--version", action="version", version=f"chatms {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "serve", help="run the gRPC and HTTP servers", description=SERVE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands.add_parser("migrate", help="apply database migrations and exit")
    commands.add_parser("protos", help="regenerate chatms/protogen from protos/")
    chat_cli.add_parser(commands)
    return parser


def _run_with_settings(command: str) -> int:
    env_file = load_dotenv_file()
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"chatms: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings)
    # Where settings and data come from is never a surprise.
    log.info("settings from the environment%s",
             f" and {env_file}" if env_file else f" (no .env file in {Path.cwd()})")
    if command == "serve":
        from chatms.builder import serve_forever

        return run(serve_forever(settings))
    return run(_migrate(settings))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "chat":
        from chatms.entrypoints import chat_cli

        load_dotenv_file()
        return chat_cli.main(args)
    if args.command == "protos":
        from chatms.protos import regenerate

        regenerate()
        return 0
    try:
        return _run_with_settings(args.command)
    except StartupError as exc:
        # One line naming the cause and what to change; the traceback would only hide it.
        print(f"chatms: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # Ctrl-C before the event loop took over the signal
        return 130
