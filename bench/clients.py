"""One streamed turn per call, through each door: direct upstream, gRPC, SSE, bare relay.

Every client returns a Sample: time to first message, the gaps between messages, total
time, messages received, bytes of payload received, and the error if any. Times are
`time.perf_counter()` seconds, taken in this (load generator) process.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PROMPT = "You are a helpful assistant."


@dataclass(slots=True)
class Sample:
    ttft: float | None = None
    gaps: list[float] = field(default_factory=list)
    total: float = 0.0
    messages: int = 0
    wire_bytes: int = 0
    error: str | None = None


class Clock:
    """Marks message arrivals into a Sample."""

    __slots__ = ("last", "sample", "start")

    def __init__(self, sample: Sample) -> None:
        self.sample = sample
        self.start = self.last = time.perf_counter()

    def mark(self, size: int) -> None:
        now = time.perf_counter()
        s = self.sample
        if s.ttft is None:
            s.ttft = now - self.start
        else:
            s.gaps.append(now - self.last)
        self.last = now
        s.messages += 1
        s.wire_bytes += size

    def done(self) -> Sample:
        self.sample.total = time.perf_counter() - self.start
        return self.sample


def openai_body(text: str, model: str = "gpt-4o-mini") -> bytes:
    """Roughly what chatms sends for a new chat, so the upstream does the same work."""
    return json.dumps({
        "model": model,
        "messages": [{"role": "system", "content": SYSTEM_PROMPT},
                     {"role": "user", "content": text}],
        "stream": True, "stream_options": {"include_usage": True},
    }).encode()


async def direct(client: httpx.AsyncClient, url: str, text: str, key: str | None = None) -> Sample:
    """The baseline: the same answer read straight from the fake upstream (or a gateway)."""
    clock = Clock(Sample())
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    async with client.stream("POST", url, content=openai_body(text),
                             headers=headers) as response:
        if response.status_code != 200:
            clock.sample.error = f"HTTP {response.status_code}"
            return clock.done()
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            if openai_event(clock, line[5:].strip(), len(line)):
                break
    return clock.done()


def openai_event(clock: Clock, data: str | bytes, size: int) -> bool:
    """One OpenAI stream event's data, timed on `clock`; True once the stream is over
    (`[DONE]`, or an error a gateway reported inside the stream)."""
    if data in ("[DONE]", b"[DONE]"):
        return True
    chunk = json.loads(data)
    if "error" in chunk:
        clock.sample.error = "in-stream error: " + str(chunk["error"])[:100]
        return True
    choices = chunk.get("choices")
    if choices and choices[0]["delta"].get("content"):
        clock.mark(size)
    return False


async def sse(client: httpx.AsyncClient, url: str, token: str, user: str, text: str) -> Sample:
    """The HTTP door: POST /chat, `event: delta` / `event: done` / `event: error`."""
    clock = Clock(Sample())
    headers = {"authorization": token, "accept": "text/event-stream"}
    async with client.stream("POST", url, json={"user_id": user, "user_message": text},
                             headers=headers) as response:
        if response.status_code != 200:
            clock.sample.error = f"HTTP {response.status_code}"
            return clock.done()
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                if event == "delta":
                    clock.mark(len(line))
                elif event == "error":
                    clock.sample.error = line[5:].strip()[:120]
                elif event == "done":
                    break
    return clock.done()


async def json_turn(
    client: httpx.AsyncClient, url: str, token: str, user: str, text: str
) -> Sample:
    """The HTTP door without streaming: POST /chat answers once the turn is stored."""
    clock = Clock(Sample())
    response = await client.post(url, json={"user_id": user, "user_message": text},
                                 headers={"authorization": token})
    if response.status_code != 200:
        clock.sample.error = f"HTTP {response.status_code}"
    else:
        clock.mark(len(response.content))
    return clock.done()


async def relay(port: int, text: str) -> Sample:
    """The bare httpx-to-socket relay (bench/relay.py)."""
    clock = Clock(Sample())
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    try:
        writer.write(openai_body(text) + b"\n")
        for _ in range(1_000_000):
            line = await reader.readline()
            if not line:
                clock.sample.error = "relay closed early"
                break
            if line == b"\x00\n":
                break
            clock.mark(len(line))
    finally:
        writer.close()
    return clock.done()


_stubs: tuple[ModuleType, ModuleType] | None = None


def grpc_stubs() -> tuple[ModuleType, ModuleType]:
    """chat_pb2 / chat_pb2_grpc generated by grpcio-tools from protos/chat.proto, once."""
    global _stubs
    if _stubs is None:
        from grpc_tools import protoc

        out = tempfile.mkdtemp(prefix="chatms-bench-stubs-")
        code = protoc.main(["protoc", f"-I{ROOT / 'protos'}", f"--python_out={out}",
                            f"--grpc_python_out={out}", str(ROOT / "protos" / "chat.proto")])
        if code != 0:
            raise RuntimeError("grpcio-tools could not compile protos/chat.proto")
        sys.path.insert(0, out)
        _stubs = (importlib.import_module("chat_pb2"), importlib.import_module("chat_pb2_grpc"))
    return _stubs


async def grpc_turn(stub: Any, token: str, user: str, text: str, delta: bool) -> Sample:
    """ChatStream over grpcio; wire bytes are payload + the 5-byte gRPC message prefix."""
    pb, _ = grpc_stubs()
    clock = Clock(Sample())
    request = pb.ChatRequest(user_id=user, user_message=text, delta=delta)
    call = stub.ChatStream(request, metadata=(("authorization", token),))
    try:
        async for response in call:
            clock.mark(response.ByteSize() + 5)
    except Exception as exc:
        clock.sample.error = type(exc).__name__ + ": " + str(getattr(exc, "code", lambda: "")())
    return clock.done()
