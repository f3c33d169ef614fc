"""The upstream client on each transport (aiohttp's, the default, and httpx's own) against
the fake OpenAI: every failure gets its own kind, every wait its deadline, and an answer
nobody reads any more lets go of its connection at once."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import re
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import httpx
import pytest

from chatms.adapters.openai import OpenAIClient
from chatms.adapters.upstream_http import AiohttpTransport, build_http_client, httpx_error
from chatms.config import UpstreamSettings
from chatms.domain.errors import UpstreamTimeout, UpstreamUnavailable
from chatms.domain.model import ChatConfig
from chatms.service.ports import Finished
from tests.fakes.openai import API_KEY, FakeOpenAI, Script

TRANSPORTS = pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
CONFIG = ChatConfig("gpt-4o-mini", 1.0, 1.0, 100, (), 0.0, 0.0)
SLOW = [f"t{i} " for i in range(50)]  # five seconds of answer


@asynccontextmanager
async def upstream(base_url: str, transport: str, **settings: Any) -> AsyncIterator[OpenAIClient]:
    s = dataclasses.replace(UpstreamSettings(), base_url=base_url, api_key=API_KEY,
                            transport=transport, backoff_base=0.01, **settings)
    async with build_http_client(s) as http:
        yield OpenAIClient(http, s)


async def answer(client: OpenAIClient, texts: list[str] | None = None) -> Finished:
    texts = [] if texts is None else texts
    events = client.complete(CONFIG, [("user", "hi there")], time.monotonic() + 30)
    async with contextlib.aclosing(events):
        async for event in events:
            if isinstance(event, Finished):
                return event
            texts.append(event)
    raise AssertionError("no Finished event")


async def settled(seen: Any, seconds: float = 2.0) -> float:
    """When the fake saw the client let go of the stream (fails if it never does)."""
    deadline = time.monotonic() + seconds
    while seen.closed_early_at is None:
        assert time.monotonic() < deadline, "the upstream connection was not closed"
        await asyncio.sleep(0.01)
    return float(seen.closed_early_at)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@TRANSPORTS
async def test_a_refused_connection_is_unavailable_not_a_timeout(transport: str) -> None:
    async with upstream(f"http://127.0.0.1:{free_port()}/v1", transport, max_retries=1) as client:
        with pytest.raises(UpstreamUnavailable) as caught:
            await answer(client)
    assert API_KEY not in str(caught.value)


@TRANSPORTS
async def test_a_hang_up_before_the_headers_is_unavailable(transport: str) -> None:
    accepted = 0

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, upstream(f"http://127.0.0.1:{port}/v1", transport, max_retries=1) as client:
        with pytest.raises(UpstreamUnavailable):
            await answer(client)
    assert accepted == 2  # retried once, before any token


@TRANSPORTS
async def test_a_hang_up_mid_answer_is_unavailable(transport: str, fake_openai: FakeOpenAI) -> None:
    fake_openai.queue(Script(pieces=["w0 ", "w1 ", "w2 "], cut_after=2, gap=0.05))
    texts: list[str] = []
    async with upstream(fake_openai.base_url, transport) as client:
        with pytest.raises(UpstreamUnavailable, match="broke mid-answer"):
            await answer(client, texts)
    assert "".join(texts) == "w0 w1 " and len(fake_openai.requests) == 1


@TRANSPORTS
async def test_a_connect_that_hangs_times_out(transport: str) -> None:
    """A listener whose accept queue is full drops the SYN: connecting hangs, then times out."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        fillers = []
        for _ in range(4):  # fill the accept queue (never accepted)
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(address)
            fillers.append(filler)
        try:
            base = f"http://127.0.0.1:{address[1]}/v1"
            async with upstream(base, transport, connect_timeout=0.3, max_retries=0) as client:
                started = time.monotonic()
                with pytest.raises(UpstreamTimeout):
                    await answer(client)
                assert time.monotonic() - started < 2
        finally:
            for filler in fillers:
                filler.close()


@TRANSPORTS
async def test_first_token_timeout_closes_the_request(
    transport: str, fake_openai: FakeOpenAI
) -> None:
    fake_openai.queue(Script(first_delay=3))
    async with upstream(fake_openai.base_url, transport, first_token_timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            await answer(client)
        assert time.monotonic() - started < 1.5
    await settled(fake_openai.requests[0])


@TRANSPORTS
async def test_an_upstream_silent_mid_answer_times_out(
    transport: str, fake_openai: FakeOpenAI
) -> None:
    fake_openai.queue(Script(pieces=["w0 ", "w1 "], gap=3))
    texts: list[str] = []
    async with upstream(fake_openai.base_url, transport, idle_timeout=0.3) as client:
        with pytest.raises(UpstreamTimeout, match="stalled"):
            await answer(client, texts)
    assert texts == ["w0 "]
    await settled(fake_openai.requests[0])


@TRANSPORTS
async def test_retry_after_is_honored(transport: str, fake_openai: FakeOpenAI) -> None:
    fake_openai.queue(Script(status=429, retry_after="0.4"), Script(status=503))
    texts: list[str] = []
    async with upstream(fake_openai.base_url, transport, max_retries=2) as client:
        finished = await answer(client, texts)
    first, second, third = fake_openai.requests
    assert second.at - first.at >= 0.4 and third.at - second.at < 0.4
    assert "".join(texts) == "You said: hi there" and finished.finish_reason == "stop"


@TRANSPORTS
async def test_the_pool_limit_holds(transport: str, fake_openai: FakeOpenAI) -> None:
    """With two connections allowed, a third answer waits for one of them to end."""
    fake_openai.queue(*[Script(pieces=["a", "b", "c"], gap=0.15)] * 3)
    async with upstream(fake_openai.base_url, transport, max_connections=2) as client:
        await asyncio.gather(*(answer(client) for _ in range(3)))
    first_end = min(seen.finished_at for seen in fake_openai.requests[:2])
    assert fake_openai.requests[2].at >= first_end


@TRANSPORTS
async def test_bad_content_encoding_and_oversized_events_are_unavailable(
    transport: str, fake_openai: FakeOpenAI
) -> None:
    fake_openai.queue(Script(content_encoding="gzip"),
                      Script(pieces=["so far "], giant_line=4 * 1024 * 1024))
    async with upstream(fake_openai.base_url, transport, max_retries=0) as client:
        with pytest.raises(UpstreamUnavailable, match="Content-Encoding"):
            await answer(client)
        texts: list[str] = []
        with pytest.raises(UpstreamUnavailable, match="larger than"):
            await answer(client, texts)
    assert texts == ["so far "]
    await settled(fake_openai.requests[1])


@TRANSPORTS
async def test_a_cancelled_answer_lets_go_at_once_even_cancelled_twice(
    transport: str, fake_openai: FakeOpenAI
) -> None:
    """grpclib cancels a handler for its deadline and again for the client's reset: 25 runs."""
    async with upstream(fake_openai.base_url, transport) as client:
        for run in range(25):
            fake_openai.reset()
            fake_openai.queue(Script(pieces=SLOW, gap=0.1))
            first = asyncio.Event()

            async def read() -> None:
                async for _ in client.complete(CONFIG, [("user", "x")], time.monotonic() + 30):
                    first.set()

            task = asyncio.create_task(read())
            await asyncio.wait_for(first.wait(), 5)
            task.cancel()
            await asyncio.sleep(run % 3 * 0.001)  # the second cancel lands at varied points
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            cancelled_at = time.monotonic()
            closed_at = await settled(fake_openai.requests[0])
            assert closed_at - cancelled_at < 0.5, f"run {run}"
            assert not fake_openai.requests[0].finished


async def keep_alive_upstream(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gap: float, seen: list[int]
) -> None:
    """Answers every request on a connection with "hi" streamed; the body's end comes
    `gap` seconds after `[DONE]` (in a segment of its own)."""
    seen.append(1)
    events = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}}]},
              {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while head := await reader.readuntil(b"\r\n\r\n"):
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                         b"transfer-encoding: chunked\r\n\r\n")
            for data in [*(json.dumps(e).encode() for e in events), b"[DONE]"]:
                writer.write(b"%x\r\ndata: %b\n\n\r\n" % (len(data) + 8, data))
            await writer.drain()
            await asyncio.sleep(gap)
            writer.write(b"0\r\n\r\n")
    writer.close()


@TRANSPORTS
async def test_a_turn_request_carries_its_headers_and_whole_body(
    transport: str, fake_openai: FakeOpenAI
) -> None:
    """The stream is opened straight on the transport, with the headers made here."""
    async with upstream(fake_openai.base_url, transport) as client:
        await answer(client)
    seen = fake_openai.requests[0]
    netloc = fake_openai.base_url.split("/")[2]
    assert seen.headers["host"] == netloc
    assert seen.headers["accept"] == "text/event-stream"
    assert seen.headers["accept-encoding"] == "identity"
    assert seen.headers["content-type"] == "application/json"
    assert int(seen.headers["content-length"]) == len(json.dumps(seen.body).encode())
    assert seen.body["messages"] == [{"role": "user", "content": "hi there"}]
    assert [k.lower() for k in seen.headers].count("content-length") == 1


@TRANSPORTS
async def test_a_closed_client_opens_no_new_connection(
    transport: str, fake_openai: FakeOpenAI
) -> None:
    s = dataclasses.replace(UpstreamSettings(), base_url=fake_openai.base_url,
                            api_key=API_KEY, transport=transport)
    http = build_http_client(s)
    client = OpenAIClient(http, s)
    await answer(client)
    await http.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await answer(client)
    assert len(fake_openai.requests) == 1


@TRANSPORTS
async def test_answers_one_after_another_share_one_connection(transport: str) -> None:
    """The body's end is read after `[DONE]` (here it comes 20 ms later), so the connection
    goes back to the pool; and no async generator of the stream is left for the event
    loop to finalize."""
    hooks = sys.get_asyncgen_hooks()
    left: list[str] = []

    def finalizer(agen: Any) -> None:
        left.append(agen.ag_code.co_qualname)
        hooks.finalizer(agen)

    connections: list[int] = []
    server = await asyncio.start_server(
        lambda r, w: keep_alive_upstream(r, w, 0.02, connections), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sys.set_asyncgen_hooks(firstiter=hooks.firstiter, finalizer=finalizer)
    try:
        async with server, upstream(f"http://127.0.0.1:{port}/v1", transport) as client:
            for _ in range(4):
                texts: list[str] = []
                assert (await answer(client, texts)).finish_reason == "stop"
                assert texts == ["hi"]
            gc.collect()
            await asyncio.sleep(0.05)
    finally:
        sys.set_asyncgen_hooks(*hooks)
    assert len(connections) == 1
    assert left == []


@TRANSPORTS
@pytest.mark.parametrize("script", [
    Script(pieces=["a", "b"], hold_after_done=3.0),
    Script(pieces=["a", "b"], after_done=b"data: more\n\n", hold_after_done=3.0),
], ids=["held-open", "more-after-done"])
async def test_an_upstream_that_goes_on_after_done_does_not_hold_the_answer(
    transport: str, script: Script, fake_openai: FakeOpenAI
) -> None:
    """Its answer is whole at `[DONE]`; the rest of the body is not waited for."""
    fake_openai.queue(script, Script(pieces=["c"]))
    async with upstream(fake_openai.base_url, transport) as client:
        texts: list[str] = []
        start = time.monotonic()
        finished = await answer(client, texts)
        assert time.monotonic() - start < 1.5
        assert "".join(texts) == "ab" and finished.finish_reason == "stop"
        texts = []
        await answer(client, texts)  # the next answer on a connection of its own
        assert texts == ["c"]


@TRANSPORTS
async def test_idle_connections_expire(transport: str, fake_openai: FakeOpenAI) -> None:
    """Kept-alive connections are reused, and closed after the keep-alive expiry."""
    limits = httpx.Limits(max_connections=4, keepalive_expiry=0.2)
    custom = AiohttpTransport(limits) if transport == "aiohttp" else None
    async with httpx.AsyncClient(transport=custom, limits=limits) as http:
        before = fake_openai.server.connections
        for _ in range(2):
            assert (await http.get(fake_openai.origin + "/other")).status_code == 404
        assert fake_openai.server.connections - before == 1
        await asyncio.sleep(0.6)
        assert (await http.get(fake_openai.origin + "/other")).status_code == 404
        assert fake_openai.server.connections - before == 2


def test_each_aiohttp_error_keeps_its_kind() -> None:
    key = aiohttp.client_reqrep.ConnectionKey("h", 1, False, True, None, None, None)
    refused = aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "refused"))
    cases = [
        (aiohttp.ConnectionTimeoutError("connect"), httpx.ConnectTimeout),
        (aiohttp.SocketTimeoutError("read"), httpx.ReadTimeout),
        (refused, httpx.ConnectError),
        (aiohttp.ServerDisconnectedError(), httpx.ReadError),
        (aiohttp.ClientPayloadError("cut"), httpx.RemoteProtocolError),
        (ConnectionResetError(104, "reset"), httpx.ReadError),
    ]
    for error, kind in cases:
        assert type(httpx_error(error)) is kind, error
