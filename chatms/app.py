"""The composition root: builds the pool, the clients and both servers; runs them in one loop."""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
import sys
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
from grpclib.server import Server
from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig
from starlette.routing import BaseRoute

from chatms.adapters.embedded_postgres import EmbeddedPostgres
from chatms.adapters.openai import OpenAIClient, UpstreamSettings, build_http_client
from chatms.adapters.postgres import PostgresChatRepository, create_pool, migrate
from chatms.adapters.tokenizer import load_counter
from chatms.config import Settings
from chatms.entrypoints.auth import TokenCheck
from chatms.entrypoints.grpc import ChatGrpcService, require_token
from chatms.entrypoints.http import build_http_app
from chatms.service.chats import ChatService, TurnPolicy
from chatms.service.ports import ChatRepository

log = logging.getLogger("chatms")


def upstream_settings(settings: Settings) -> UpstreamSettings:
    return UpstreamSettings(
        base_url=settings.openai_base_url,
        api_key=settings.openai_api_key,
        connect_timeout=settings.upstream_connect_timeout,
        first_token_timeout=settings.upstream_first_token_timeout,
        idle_timeout=settings.upstream_idle_timeout,
        max_retries=settings.upstream_max_retries,
    )


def turn_policy(settings: Settings) -> TurnPolicy:
    return TurnPolicy(
        defaults=settings.chat_defaults,
        system_prompt=settings.initial_chat_message,
        budget=settings.budget,
        max_message_chars=settings.max_message_chars,
        max_user_id_chars=settings.max_user_id_chars,
        turn_timeout=settings.turn_timeout,
        lease_seconds=settings.turn_timeout + settings.upstream_idle_timeout + 60,
    )


async def connect_database(settings: Settings) -> tuple[str, EmbeddedPostgres | None]:
    """The database URL to use, starting the embedded PostgreSQL when none is configured."""
    if settings.database_url:
        return settings.database_url, None
    embedded = EmbeddedPostgres(settings.data_dir.resolve())
    url = await asyncio.to_thread(embedded.start)
    return url, embedded


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
    _web_stop: asyncio.Event = field(default_factory=asyncio.Event)
    _web_task: asyncio.Task[Any] | None = None

    async def start(self) -> None:
        s = self.settings
        token = s.auth_token
        if token is None:
            token = secrets.token_urlsafe(24)
            # Printed once, to the terminal only: the operator needs it to call us.
            print(f"AUTH_TOKEN is not set; this run's token is: {token}", file=sys.stderr)
        repo = self.repository
        if repo is None:
            url, self.embedded = await connect_database(s)
            self.pool = await create_pool(url, max_size=s.db_pool_size)
            await migrate(self.pool)
            repo = PostgresChatRepository(self.pool, acquire_timeout=s.db_acquire_timeout)
        counter = await asyncio.to_thread(load_counter, s.model, offline=s.tiktoken_offline)
        self.http = build_http_client(upstream_settings(s))
        self.chats = ChatService(
            repo, OpenAIClient(self.http, upstream_settings(s)), counter, turn_policy(s)
        )

        self.grpc_server = Server([ChatGrpcService(self.chats)])
        require_token(self.grpc_server, TokenCheck(token))
        await self.grpc_server.start(s.grpc_host, s.grpc_port)

        web = HypercornConfig()
        web.bind = [f"{s.web_host}:{s.web_port}"]
        web.graceful_timeout = 1.0
        routes: list[BaseRoute] = []
        self._web_task = asyncio.create_task(
            serve(build_http_app(routes), web, shutdown_trigger=self._web_stop.wait)  # type: ignore[arg-type]
        )
        log.info("chatms ready: gRPC on %s:%d, HTTP on %s:%d (model %s)",
                 s.grpc_host, s.grpc_port, s.web_host, s.web_port, s.model)

    async def stop(self) -> None:
        """Stop taking turns, let those in flight finish within the grace period, then close."""
        if self.chats is not None:
            self.chats.stop_accepting()
            if not await self.chats.wait_idle(self.settings.shutdown_grace_seconds):
                log.warning("shutdown grace period over; ending %d turns", self.chats.in_flight)
        if self.grpc_server is not None:
            self.grpc_server.close()
            await self.grpc_server.wait_closed()
        self._web_stop.set()
        if self._web_task is not None:
            await self._web_task
        if self.chats is not None:
            await self.chats.drain()
        if self.http is not None:
            await self.http.aclose()
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
