"""A bare httpx-to-socket relay: the floor chatms's per-event CPU is compared with.

Each client connection sends one line (the OpenAI request body as JSON); the relay streams
it from the upstream with httpx, parses each SSE event with json.loads (from aiter_lines, as
chatms does, or with --raw from aiter_raw split on bytes), and writes each
text delta to the socket as one line, then `\\x00` and a newline at the end. Nothing else:
no database, no auth, no framing beyond a newline. `--aiohttp` runs httpx on chatms's
aiohttp transport instead of httpx's own.

Run: python -m bench.relay --upstream http://127.0.0.1:N/v1 (prints `PORT <n>`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator

import httpx

from bench.fake_upstream import run_loop
from chatms.adapters.upstream_http import AiohttpTransport

END = b"\x00\n"


async def lines_deltas(response: httpx.Response) -> AsyncIterator[str]:
    """The text deltas the plain way: aiter_lines + json.loads (the baseline relay)."""
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        if text := _text_of(data):
            yield text


def _text_of(data: str | bytes) -> str | None:
    """The content delta of one SSE data payload, if it has one."""
    choices = json.loads(data).get("choices")
    return choices[0]["delta"].get("content") if choices else None


async def raw_deltas(response: httpx.Response) -> AsyncIterator[str]:
    """The same deltas from aiter_raw with an SSE split on bytes, as chatms reads them."""
    pending = b""
    async for chunk in response.aiter_raw():
        events = (pending + chunk if pending else chunk).split(b"\n\n")
        pending = events.pop()
        for event in events:
            if not event.startswith(b"data:"):
                continue
            data = event[5:].strip()
            if data == b"[DONE]":
                return
            if text := _text_of(data):
                yield text


async def relay_one(
    client: httpx.AsyncClient, url: str, raw: bool, reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    body = await reader.readline()
    async with client.stream("POST", url, content=body.strip(),
                             headers={"content-type": "application/json"}) as response:
        async for text in (raw_deltas if raw else lines_deltas)(response):
            writer.write(text.encode() + b"\n")
            await writer.drain()
    writer.write(END)
    await writer.drain()


async def serve(upstream: str, raw: bool, on_aiohttp: bool) -> None:
    url = upstream.rstrip("/") + "/chat/completions"
    limits = httpx.Limits(max_connections=500, max_keepalive_connections=500)
    transport = AiohttpTransport(limits) if on_aiohttp else None
    async with httpx.AsyncClient(timeout=60, limits=limits, trust_env=False,
                                 transport=transport) as client:

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await relay_one(client, url, raw, reader, writer)
            except (ConnectionError, httpx.HTTPError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
        async with server:
            await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--raw", action="store_true", help="aiter_raw + own SSE split")
    parser.add_argument("--aiohttp", action="store_true", help="chatms's aiohttp transport")
    parser.add_argument("--plain-asyncio", action="store_true")
    args = parser.parse_args()
    if args.plain_asyncio:
        asyncio.run(serve(args.upstream, args.raw, args.aiohttp))
    else:
        run_loop(serve(args.upstream, args.raw, args.aiohttp))


if __name__ == "__main__":
    main()
