"""The benchmark's bare gRPC client (bench/rawgrpc.py) reads what grpcio reads.

It is the instrument behind the time-to-first-token rows, so a turn it miscounts, an error
it misses or a connection it breaks after some calls would skew the figures unseen."""

from __future__ import annotations

import asyncio

from bench import rawgrpc
from tests.fakes.openai import FakeOpenAI, Script
from tests.integration.grpc_client import chat_stream
from tests.support import AUTH_TOKEN, grpc_target, new_user


async def test_bare_client_reads_a_turn_like_grpcio(start_app, fake_openai: FakeOpenAI) -> None:
    """Same messages and payload bytes as grpcio; a refused call is an error, not a turn."""
    app = await start_app()
    user = new_user()
    [channel] = await rawgrpc.open_channels(grpc_target(app), 1)
    try:
        fake_openai.queue(Script(gap=0.05))  # spaced events arrive as separate messages
        bare = await rawgrpc.grpc_turn(channel, AUTH_TOKEN, user, "hello there")
        fake_openai.queue(Script(gap=0.05))
        grpcio = await chat_stream(grpc_target(app), user, "hello there")
        assert bare.error is None and bare.ttft is not None
        assert bare.messages == len(grpcio.messages) == 3
        assert bare.wire_bytes == sum(m.ByteSize() + 5 for m in grpcio.messages)
        refused = await rawgrpc.grpc_turn(channel, "wrong-token", user, "hello")
        assert refused.error is not None and refused.error.startswith("grpc-status 16")
        assert refused.messages == 0
    finally:
        await channel.aclose()


async def test_bare_client_keeps_its_connection_over_many_calls(start_app) -> None:
    """Calls one after another and side by side on one connection: stream ids and HPACK's
    state stay right; a request bigger than a frame goes in several DATA frames. (chatms
    opens its connection window wide at once, so the client's wait for a window is not
    exercised here.)"""
    app = await start_app()
    [channel] = await rawgrpc.open_channels(grpc_target(app), 1)
    try:
        big = await rawgrpc.grpc_turn(channel, AUTH_TOKEN, new_user(), "y" * 20_000)
        assert big.error is None and big.messages >= 1  # 20 000 bytes: two DATA frames
        text = "x" * 2000  # 40 calls carry more than a first window's 65 535 bytes
        for _ in range(40):
            sample = await rawgrpc.grpc_turn(channel, AUTH_TOKEN, new_user(), text)
            assert sample.error is None and sample.messages >= 1
        side_by_side = await asyncio.gather(*(
            rawgrpc.grpc_turn(channel, AUTH_TOKEN, new_user(), f"call {i}") for i in range(20)))
        assert [s.error for s in side_by_side] == [None] * 20
        assert not channel.calls and channel.closed is None
    finally:
        await channel.aclose()
