"""A bare httpx-to-socket relay: the floor chatms's per-event CPU is compared with.

Each client connection sends one line (the OpenAI request body as JSON); the relay streams
it from the upstream with httpx, parses each SSE line with json.loads, and writes each
text delta to the socket as one line, then `\\x00` and a newline at the end. Nothing else:
no database, no auth, no framing beyond a newline.

Run: python -m bench.relay --upstream http://127.0.0.1:N/v1 (prints `PORT <n>`).
"""

from __future__ import annotations

import argparse
import asyncio
import json

import httpx

from bench.fake_upstream import run_loop

END = b"\x00\n"


async def relay_one(
    client: httpx.AsyncClient, url: str, reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    body = await reader.readline()
    async with client.stream("POST", url, content=body.strip(),
                             headers={"content-type": "application/json"}) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            choices = json.loads(data).get("choices")
            if choices:
                text = choices[0]["delta"].get("content")
                if text:
                    writer.write(text.encode() + b"\n")
                    await writer.drain()
    writer.write(END)
    await writer.drain()


async def serve(upstream: str) -> None:
    url = upstream.rstrip("/") + "/chat/completions"
    limits = httpx.Limits(max_connections=500, max_keepalive_connections=500)
    async with httpx.AsyncClient(timeout=60, limits=limits, trust_env=False) as client:

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await relay_one(client, url, reader, writer)
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
    parser.add_argument("--plain-asyncio", action="store_true")
    args = parser.parse_args()
    if args.plain_asyncio:
        asyncio.run(serve(args.upstream))
    else:
        run_loop(serve(args.upstream))


if __name__ == "__main__":
    main()
