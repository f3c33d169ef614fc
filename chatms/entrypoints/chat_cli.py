"""`chatms chat`: a terminal client over gRPC with the project's own stubs.

The answer streams to stdout as it arrives; the chat id and errors go to stderr, so stdout
holds nothing but answers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from grpclib import GRPCError
from grpclib.client import Channel

from chatms.protogen.pb import ChatRequest, ChatServiceStub

# Exit codes: the server refused the call; the server could not be reached.
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class ClientError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    chat = commands.add_parser(
        "chat", help="chat over gRPC: one question, or interactive when none is given"
    )
    chat.add_argument("question", nargs="?", help="ask this and exit (else read lines from stdin)")
    chat.add_argument("--user", required=True, help="user id the chat belongs to")
    chat.add_argument("--chat", dest="chat_id", help="continue this chat")
    chat.add_argument(
        "--target",
        help="host:port of the gRPC server (default 127.0.0.1:$GRPC_SERVER_PORT or 50051)",
    )
    chat.add_argument("--token", help="service token (default: $AUTH_TOKEN)")
    chat.add_argument("--timeout", type=float, default=300.0, help="seconds per answer")


def _split_target(target: str) -> tuple[str, int]:
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ClientError(f"--target {target!r} is not host:port", EXIT_USAGE)
    return host, int(port)


async def ask(
    stub: ChatServiceStub, token: str, user: str, chat_id: str | None, text: str, seconds: float
) -> str:
    """Stream one answer to stdout; returns the chat id."""
    request = ChatRequest(chat_id=chat_id, user_id=user, user_message=text, delta=True)
    out = sys.stdout
    try:
        async for response in stub.chat_stream(
            request, timeout=seconds, metadata={"authorization": token}
        ):
            chat_id = response.chat_id
            out.write(response.content)
            out.flush()
    except GRPCError as exc:
        raise ClientError(f"{exc.status.name}: {exc.message}", EXIT_REFUSED) from None
    except (TimeoutError, OSError) as exc:
        raise ClientError(f"cannot reach the server: {exc}", EXIT_UNREACHABLE) from None
    out.write("\n")
    out.flush()
    if chat_id is None:
        raise ClientError("the server sent no answer", EXIT_REFUSED)
    return chat_id


async def _session(args: argparse.Namespace, token: str) -> None:
    target = args.target or f"127.0.0.1:{os.environ.get('GRPC_SERVER_PORT') or 50051}"
    host, port = _split_target(target)
    channel = Channel(host, port)
    stub = ChatServiceStub(channel)
    try:
        chat_id: str | None = args.chat_id
        if args.question is not None:
            chat_id = await ask(stub, token, args.user, chat_id, args.question, args.timeout)
            print(f"chat id: {chat_id} (continue with --chat {chat_id})", file=sys.stderr)
            return
        interactive = sys.stdin.isatty()
        while True:  # one question per line, until end of input
            if interactive:
                print("> ", end="", file=sys.stderr, flush=True)
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:
                break
            if not line.strip():
                continue
            new = await ask(stub, token, args.user, chat_id, line.rstrip("\n"), args.timeout)
            if new != chat_id:
                print(f"chat id: {new}", file=sys.stderr)
                chat_id = new
    finally:
        channel.close()


def main(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get("AUTH_TOKEN")
    if not token:
        print("chatms chat: no token: pass --token or set AUTH_TOKEN", file=sys.stderr)
        return EXIT_USAGE
    try:
        asyncio.run(_session(args, token))
    except ClientError as exc:
        print(f"chatms chat: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    return 0
