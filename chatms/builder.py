"""The composition root's builder: every part chatms runs, built from the settings.

`build_app` returns an `App` whose parts are all there (nothing is filled in later);
`App.start` only starts listening. Storage comes from chatms/storage.py: PostgreSQL by
default; the benchmark's in-memory run hands `build_app` a storage of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import sys
from collections.abc import Mapping

import httpx

from chatms.adapters.images import image_size
from chatms.adapters.openai import OpenAIClient
from chatms.adapters.openai_whole import OpenAIWholeClient
from chatms.adapters.tokenizer import load_counters
from chatms.adapters.transcription import OpenAITranscriber
from chatms.adapters.twilio import TwilioSender, build_twilio_http
from chatms.adapters.twilio_media import TwilioMediaFetcher
from chatms.adapters.upstream_http import build_http_client
from chatms.adapters.upstream_probe import check_upstream
from chatms.app import App
from chatms.collector import tune_collector
from chatms.config import Settings
from chatms.domain.errors import StartupError
from chatms.entrypoints.auth import TokenCheck
from chatms.entrypoints.grpc import ChatGrpcService, tag_requests, tell_endings
from chatms.entrypoints.grpc_codec import GuardedProtoCodec
from chatms.entrypoints.grpc_edge import HardenedServer
from chatms.entrypoints.health import NotReady, Ping, Readiness, grpc_health
from chatms.entrypoints.http import build_http_app, ops_routes
from chatms.entrypoints.http_chat import chat_routes
from chatms.entrypoints.http_errors import json_errors
from chatms.entrypoints.reflection import with_reflection
from chatms.entrypoints.web import web_routes
from chatms.entrypoints.whatsapp import CHANNEL as WHATSAPP
from chatms.entrypoints.whatsapp import TwilioWebhook, whatsapp_routes
from chatms.observability.logs import log_context, log_turn
from chatms.observability.metrics import Metrics
from chatms.service.chats import ChatService
from chatms.service.inbound import Channel, InboundService
from chatms.service.inbound_media import MediaPolicy, MediaReader
from chatms.service.inbound_worker import InboundWorker, UndeliveredObserver
from chatms.service.limits import UsageGate
from chatms.service.ports import (
    BurstRule,
    InboundStore,
    TokenCounter,
)
from chatms.storage import StorageFactory, postgres_storage

log = logging.getLogger("chatms")


def service_token(settings: Settings) -> str:
    token = settings.server.auth_token
    if token is None:
        token = secrets.token_urlsafe(24)
        # Printed once, to the terminal only: the operator needs it to call us.
        print(f"AUTH_TOKEN is not set; this run's token is: {token}", file=sys.stderr)
    return token


def _whatsapp(
    settings: Settings, upstream_http: httpx.AsyncClient, counter: TokenCounter,
    closing: contextlib.AsyncExitStack,
) -> Channel:
    """WhatsApp through Twilio: its sender, media reader, limits, bursts and blocklist."""
    wa = settings.whatsapp
    twilio_http = build_twilio_http()
    closing.push_async_callback(twilio_http.aclose)
    sender = TwilioSender(wa, twilio_http, settings.inbound.retry_max_seconds)
    reader = MediaReader(
        TwilioMediaFetcher(wa, twilio_http), OpenAITranscriber(upstream_http, settings.upstream),
        image_size, counter, MediaPolicy(wa.voice_enabled, settings.upstream.vision_models),
    )
    return Channel(
        WHATSAPP, sender, wa.max_body_chars, wa.send_rate, reader, wa.limits,
        BurstRule(window=wa.burst_window_ms / 1000), frozenset(wa.blocked_numbers),
    )


def _inbound(
    settings: Settings, store: InboundStore | None, chats: ChatService, channels: list[Channel],
    gate: UsageGate | None, on_undelivered: UndeliveredObserver,
) -> tuple[InboundService, InboundWorker] | None:
    """The inbound queue with every configured channel, or None when no channel is."""
    if store is None or not channels:
        return None
    service = InboundService(store, chats, channels, settings.inbound, gate)
    return service, InboundWorker(service, settings.inbound, on_undelivered)


async def build_app(settings: Settings, storage: StorageFactory = postgres_storage) -> App:
    """Every part `chatms serve` runs, built; on a failure, what was built is closed again."""
    log.debug("settings: %s", settings.describe())
    token = TokenCheck(service_token(settings))
    metrics = Metrics()
    async with contextlib.AsyncExitStack() as closing:
        store = await storage(settings, metrics)
        closing.push_async_callback(store.close)
        model = settings.model
        counters = await asyncio.to_thread(
            load_counters, model.windows, model.model, offline=model.tiktoken_offline
        )
        upstream_http = build_http_client(settings.upstream)
        closing.push_async_callback(upstream_http.aclose)
        probe = check_upstream(upstream_http, settings.upstream, model.model)
        if probe is not None:
            closing.callback(probe.cancel)
        gate = None
        if store.usage is not None:  # counted in PostgreSQL, shared by every replica
            gate = UsageGate(store.usage, metrics.observe_refusal)
        chats = ChatService(
            store.chats, OpenAIClient(upstream_http, settings.upstream), counters.default,
            model, settings.turns, observers=(metrics.observe_turn, log_turn),
            counters=counters.for_model, context=settings.context, context_store=store.context,
            context_llm=OpenAIWholeClient(upstream_http, settings.upstream),
            context_observers=(metrics.observe_context, log_context), usage=gate,
            signals=store.signals,
        )
        metrics.watch_streams(chats.streaming)
        ready = readiness(chats, store.checks)
        channels = []
        if settings.whatsapp.configured:
            channels.append(_whatsapp(settings, upstream_http, counters.default, closing))
        inbound = _inbound(settings, store.inbound, chats, channels, gate,
                           metrics.observe_undelivered)
        server = settings.server
        services = [ChatGrpcService(chats)]
        body_timeout = settings.edge.body_timeout
        grpc_server = HardenedServer(  # checks the token itself, before any per-call state
            with_reflection([*services, grpc_health(ready, services)]),
            codec=GuardedProtoCodec(server.grpc_max_message_bytes), guard_limits=settings.edge,
            tokens=token, max_message_bytes=server.grpc_max_message_bytes,
        )
        tag_requests(grpc_server)
        tell_endings(grpc_server)
        carry_on = settings.turns.disconnected_turns == "continue"
        metrics_token = TokenCheck(server.metrics_token) if server.metrics_token else None
        ops = ops_routes(ready, metrics, metrics_token)
        routes = [] if server.ops_port else [*ops]
        routes += chat_routes(chats, token, server.max_body_bytes, body_timeout, carry_on)
        routes += whatsapp_routes(TwilioWebhook(
            inbound[0] if inbound else None, settings.whatsapp, server.max_body_bytes,
            body_timeout,
        ))
        if settings.web.ui_enabled:
            routes += web_routes()
        web = json_errors(build_http_app(routes, settings.web.cors_allow_origins))
        ops_app = json_errors(build_http_app(ops)) if server.ops_port else None
        return App(settings, metrics, store, chats, grpc_server, web, ops_app,
                   inbound[1] if inbound else None, closing.pop_all())
    raise AssertionError("unreachable: the block returns or raises")


def readiness(chats: ChatService, checks: Mapping[str, Ping]) -> Readiness:
    """Ready when the storage's checks pass and turns are accepted."""

    async def accepting() -> None:
        if not chats.accepting:
            raise NotReady("shutting down")

    return Readiness({**checks, "accepting": accepting})


INTERRUPTED = 130  # the shell's code for a process ended by Ctrl-C


async def _build_and_start(settings: Settings) -> App:
    app = await build_app(settings)
    await app.start()  # stops what it started when it fails
    return app


async def serve_forever(settings: Settings) -> int:
    """Build, start, and run until SIGINT, SIGTERM or SIGHUP (a closed terminal); the exit
    code. A signal during the start ends it at once (INTERRUPTED), undoing what was built."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        # An ignored SIGINT or SIGHUP was chosen by who started us (a background job,
        # nohup): keep ignoring it. SIGTERM always stops.
        if sig == signal.SIGTERM or signal.getsignal(sig) != signal.SIG_IGN:
            loop.add_signal_handler(sig, stop.set)
    starting = asyncio.ensure_future(_build_and_start(settings))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait((starting, stopping), return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()  # build_app closes what it built; start() stops what it started
        with contextlib.suppress(asyncio.CancelledError, StartupError):
            await starting
        log.info("interrupted while starting; what was started is stopped")
        return INTERRUPTED
    stopping.cancel()
    app = starting.result()  # a StartupError goes to the caller, who prints it in one line
    tune_collector()
    try:
        await stop.wait()
        log.info("signal received; shutting down")
    finally:
        await app.stop()
    return 0


__all__ = ["build_app", "serve_forever"]
