"""A fast fake OpenAI streaming upstream: raw asyncio HTTP/1.1, chunked, one process.

Each answer is shaped by the last message of the request, so chatms and the direct
baseline get the same shape from the same body: `bench ttft=0.1 gap=0.014 burst=1 n=300`
(seconds; gap=0 is the zero-delay mode). Without that prefix the defaults apply.

Run: python -m bench.fake_upstream --port 0  (prints `PORT <n>` once listening).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, replace

TOKEN = " word"
MAX_EVENTS = 100_000
MAX_SECONDS = 120.0


@dataclass(frozen=True, slots=True)
class Shape:
    ttft: float = 0.1
    gap: float = 0.04
    burst: int = 1
    n: int = 20

    @classmethod
    def parse(cls, text: str) -> Shape:
        shape = cls()
        if not text.startswith("bench"):
            return shape
        for part in text.split()[1:]:
            key, _, value = part.partition("=")
            if key == "ttft":
                shape = replace(shape, ttft=min(float(value), MAX_SECONDS))
            elif key == "gap":
                shape = replace(shape, gap=min(float(value), MAX_SECONDS))
            elif key == "burst":
                shape = replace(shape, burst=max(1, min(int(value), MAX_EVENTS)))
            elif key == "n":
                shape = replace(shape, n=max(1, min(int(value), MAX_EVENTS)))
        return shape


def _chunk(created: int, model: str, delta: dict[str, str], finish: str | None) -> bytes:
    obj = {
        "id": "chatcmpl-bench0001", "object": "chat.completion.chunk", "created": created,
        "model": model, "system_fingerprint": "fp_bench",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": None,
    }
    return _frame(json.dumps(obj, separators=(",", ":")).encode())


def _frame(data: bytes) -> bytes:
    """One SSE event as one HTTP chunk."""
    event = b"data: " + data + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


def events(model: str, n: int, prompt_tokens: int) -> tuple[bytes, bytes, bytes]:
    """(role chunk, one content chunk, tail: finish + usage + [DONE] + last chunk)."""
    created = int(time.time())
    usage = {
        "id": "chatcmpl-bench0001", "object": "chat.completion.chunk", "created": created,
        "model": model, "system_fingerprint": "fp_bench", "choices": [],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n,
                  "total_tokens": prompt_tokens + n},
    }
    tail = (
        _chunk(created, model, {}, "stop")
        + _frame(json.dumps(usage, separators=(",", ":")).encode())
        + _frame(b"[DONE]")
        + b"0\r\n\r\n"
    )
    return (
        _chunk(created, model, {"role": "assistant", "content": ""}, None),
        _chunk(created, model, {"content": TOKEN}, None),
        tail,
    )


HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
    b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n\r\n"
)


async def _stream(writer: asyncio.StreamWriter, shape: Shape, model: str, prompt: int) -> None:
    role, content, tail = events(model, shape.n, prompt)
    loop = asyncio.get_running_loop()
    start = loop.time()
    writer.write(HEAD)
    await asyncio.sleep(shape.ttft)
    writer.write(role)
    sent = 0
    tick = 0
    while sent < shape.n:
        count = min(shape.burst, shape.n - sent)
        writer.write(content * count)
        sent += count
        tick += 1
        if shape.gap > 0 and sent < shape.n:
            # Absolute schedule: no drift when a write or a wake-up runs late.
            delay = start + shape.ttft + tick * shape.gap - loop.time()
            await asyncio.sleep(max(delay, 0))
        elif tick % 64 == 0:
            await writer.drain()
    writer.write(tail)
    await writer.drain()


# A non-streamed call (a summary, a title) takes about as long as a short answer.
WHOLE_SECONDS = 0.3
WHOLE_TEXT = "A short summary of what was said so far, in a few plain sentences."


async def _whole(writer: asyncio.StreamWriter, model: str) -> None:
    """A `chat.completion` object, as OpenAI answers a request without `stream`."""
    await asyncio.sleep(WHOLE_SECONDS)
    words = len(WHOLE_TEXT.split())
    reply = json.dumps({
        "id": "chatcmpl-bench0002", "object": "chat.completion", "created": int(time.time()),
        "model": model, "system_fingerprint": "fp_bench",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": WHOLE_TEXT},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": words, "total_tokens": 100 + words},
    }, separators=(",", ":")).encode()
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                 b"content-length: %d\r\n\r\n%s" % (len(reply), reply))
    await writer.drain()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, bytes] | None:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    target = lines[0].split(" ")[1]
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return target, await reader.readexactly(length)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        for _ in range(100_000):  # keep-alive, bounded
            target, body = await _read_request(reader)  # type: ignore[misc]
            if target.endswith("/Messages.json"):  # chatms's WhatsApp sends: accepted
                reply = b'{"sid": "SMbench", "status": "queued"}'
                writer.write(b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\n\r\n%s" % (len(reply), reply))
                continue
            if not target.endswith("/chat/completions"):
                writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                continue
            request = json.loads(body)
            if request.get("stream") is not True:  # summaries and titles: one JSON object
                await _whole(writer, str(request.get("model", "gpt")))
                continue
            messages = request.get("messages") or [{}]
            last = str(messages[-1].get("content", ""))
            prompt = sum(len(str(m.get("content", ""))) for m in messages) // 4 + 1
            await _stream(writer, Shape.parse(last), str(request.get("model", "gpt")), prompt)
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def serve(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def run_loop(main: object) -> None:
    """uvloop when installed: the fake must never be the bottleneck."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)  # type: ignore[arg-type]
    else:
        uvloop.run(main)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        run_loop(serve(args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
