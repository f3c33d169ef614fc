"""The composition root: builds the pool, the clients and both servers; runs them in one loop."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from grpclib.server import Server
from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig
from starlette.routing import BaseRoute

from chatms.adapters.context_store import PostgresContextStore
from chatms.adapters.embedded_postgres import EmbeddedPostgres
from chatms.adapters.openai import OpenAIClient, build_http_client
from chatms.adapters.openai_whole import OpenAIWholeClient
from chatms.adapters.postgres import (
    PostgresChatRepository,
    create_pool,
    migrate,
    pending_migrations,
)
from chatms.adapters.tokenizer import load_counters
from chatms.adapters.twilio import TwilioSender, build_twilio_http
from chatms.adapters.whatsapp_store import PostgresWhatsAppStore
from chatms.config import DatabaseSettings, Settings
from chatms.entrypoints.auth import TokenCheck
from chatms.entrypoints.grpc import ChatGrpcService, require_token, tag_requests
from chatms.entrypoints.grpc_codec import GuardedProtoCodec
from chatms.entrypoints.health import NotReady, Readiness, grpc_health
from chatms.entrypoints.http import build_http_app, ops_routes
from chatms.entrypoints.http_chat import chat_routes, json_errors
from chatms.entrypoints.reflection import with_reflection
from chatms.entrypoints.web import web_routes
from chatms.entrypoints.whatsapp import TwilioWebhook, whatsapp_routes
from chatms.observability.logs import log_context, log_turn
from chatms.observability.metrics import Metrics
from chatms.service.chats import ChatService
from chatms.service.ports import ChatRepository
from chatms.service.whatsapp import Pacer, WhatsAppService
from chatms.service.whatsapp_worker import WhatsAppWorker

log = logging.getLogger("chatms")


async def connect_database(settings: DatabaseSettings) -> tuple[str, EmbeddedPostgres | None]:
    """The database URL to use, starting the embedded PostgreSQL when none is configured."""
    if settings.url:
        return settings.url, None
    embedded = EmbeddedPostgres(Path(settings.data_dir))
    url = await asyncio.to_thread(embedded.start)
    return url, embedded


def readiness(
    chats: ChatService, pool: asyncpg.Pool | None, repo: PostgresChatRepository | None
) -> Readiness:
    """Ready when the database answers, its schema is current, and turns are accepted."""

    async def migrations() -> None:
        pending = await pending_migrations(pool)
        if pending:
            raise NotReady("pending: " + ", ".join(pending))

    async def accepting() -> None:
        if not chats.accepting:
            raise NotReady("shutting down")

    checks: dict[str, Callable[[], Awaitable[None]]] = {"accepting": accepting}
    if pool is not None and repo is not None:  # absent only in the benchmark's in-memory run
        checks = {"database": repo.ping, "migrations": migrations, **checks}
    return Readiness(checks)


@dataclass
class App:
    """Everything `chatms serve` runs, built in `start` and torn down in `stop`."""

    settings: Settings
    # Injected by the benchmark's persistence-off run; None means PostgreSQL.
    repository: ChatRepository | None = None
    embedded: EmbeddedPostgres | None = None
    pool: asyncpg.Pool | None = None
    http: httpx.AsyncClient | None = None
    chats: ChatService | None = None
    grpc_server: Server | None = None
    metrics: Metrics = field(default_factory=Metrics)
    _web_stop: asyncio.Event = field(default_factory=asyncio.Event)
    _web_task: asyncio.Task[Any] | None = None
    whatsapp: WhatsAppService | None = None
    whatsapp_worker: WhatsAppWorker | None = None
    twilio_http: httpx.AsyncClient | None = None

    async def start(self) -> None:
        s = self.settings
        log.debug("settings: %s", s.describe())
        token = s.server.auth_token
        if token is None:
            token = secrets.token_urlsafe(24)
            # Printed once, to the terminal only: the operator needs it to call us.
            print(f"AUTH_TOKEN is not set; this run's token is: {token}", file=sys.stderr)
        repo = self.repository
        postgres: PostgresContextStore | None = None
        if repo is None:
            url, self.embedded = await connect_database(s.database)
            self.pool = await create_pool(url, s.database, on_query=self.metrics.observe_query)
            await migrate(self.pool)
            repo = postgres = PostgresContextStore(self.pool, s.database)
        counters = await asyncio.to_thread(
            load_counters, s.model.windows, s.model.model, offline=s.model.tiktoken_offline
        )
        self.http = build_http_client(s.upstream)
        self.chats = ChatService(
            repo, OpenAIClient(self.http, s.upstream), counters.default, s.model, s.turns,
            observers=(self.metrics.observe_turn, log_turn),
            # The benchmark's in-memory run (no PostgreSQL) keeps no summaries or titles.
            counters=counters.for_model, context=s.context, context_store=postgres,
            context_llm=OpenAIWholeClient(self.http, s.upstream),
            context_observers=(self.metrics.observe_context, log_context),
        )
        self.metrics.watch_streams(self.chats.streaming)
        ready = readiness(self.chats, self.pool, postgres)

        services = [ChatGrpcService(self.chats)]
        self.grpc_server = Server(
            with_reflection([*services, grpc_health(ready, services)]),
            codec=GuardedProtoCodec(s.server.grpc_max_message_bytes),
        )
        require_token(self.grpc_server, TokenCheck(token))
        tag_requests(self.grpc_server)
        await self.grpc_server.start(s.server.grpc_host, s.server.grpc_port)

        web = HypercornConfig()
        # Listen before start() returns, so callers can connect at once; Hypercorn takes
        # over a duplicate of the socket and closes it when it stops.
        with socket.create_server((s.server.web_host, s.server.web_port), backlog=1024) as listener:
            web.bind = [f"fd://{os.dup(listener.fileno())}"]
        web.graceful_timeout = 1.0
        # Hypercorn's messages through our handlers and format, not a handler of its own.
        web.errorlog = logging.getLogger("hypercorn.error")
        routes: list[BaseRoute] = [*ops_routes(ready, self.metrics)]
        routes += chat_routes(self.chats, TokenCheck(token), s.server.max_body_bytes)
        self._start_whatsapp()
        routes += whatsapp_routes(
            TwilioWebhook(self.whatsapp, s.whatsapp, s.server.max_body_bytes)
        )
        if s.web.ui_enabled:
            routes += web_routes()
        http_app = json_errors(build_http_app(routes, s.web.cors_allow_origins))
        self._web_task = asyncio.create_task(
            serve(http_app, web, shutdown_trigger=self._web_stop.wait)  # type: ignore[arg-type]
        )
        log.info("chatms ready: gRPC on %s:%d, HTTP on %s:%d (model %s)",
                 s.server.grpc_host, s.server.grpc_port, s.server.web_host, s.server.web_port,
                 s.model.model)

    def _start_whatsapp(self) -> None:
        """The WhatsApp answering worker, when Twilio is configured (the webhook says 503 else)."""
        s = self.settings
        if not s.whatsapp.configured or self.pool is None or self.chats is None:
            return
        self.twilio_http = build_twilio_http()
        sender = TwilioSender(s.whatsapp, self.twilio_http)
        self.whatsapp = WhatsAppService(
            PostgresWhatsAppStore(self.pool, s.database), self.chats, sender, s.whatsapp,
            Pacer(s.whatsapp.send_rate),
        )
        self.whatsapp_worker = WhatsAppWorker(
            self.whatsapp, s.whatsapp, on_undelivered=self.metrics.observe_undelivered
        )
        self.whatsapp_worker.start()

    async def stop(self) -> None:
        """Stop taking turns, let those in flight finish within the grace period, then close."""
        grace = self.settings.server.shutdown_grace_seconds
        if self.chats is not None:
            # First, so /readyz and gRPC health say 503 / NOT_SERVING while we drain.
            self.chats.stop_accepting()
            log.info("stopped accepting turns; waiting up to %gs for %d in flight",
                     grace, self.chats.in_flight)
        # One grace period for everything in flight, WhatsApp jobs and streams alike.
        waits: list[Awaitable[object]] = []
        if self.whatsapp_worker is not None:
            waits.append(self.whatsapp_worker.stop(grace))
        if self.chats is not None:
            waits.append(self.chats.wait_idle(grace))
        idle = await asyncio.gather(*waits)
        if self.chats is not None and idle[-1] is False:
            log.warning("shutdown grace period over; ending %d turns", self.chats.in_flight)
        if self.grpc_server is not None:
            self.grpc_server.close()
            await self.grpc_server.wait_closed()
        self._web_stop.set()
        if self._web_task is not None:
            await self._web_task
        if self.chats is not None:
            await self.chats.drain(grace=self.settings.server.store_grace_seconds)
        if self.http is not None:
            await self.http.aclose()
        if self.twilio_http is not None:
            await self.twilio_http.aclose()
        if self.pool is not None:
            await self.pool.close()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
        log.info("chatms stopped")


async def serve_forever(settings: Settings) -> None:
    """Run until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    app = App(settings)
    try:
        await app.start()
        await stop.wait()
        log.info("signal received; shutting down")
    finally:
        await app.stop()
