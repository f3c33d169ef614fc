"""The use cases: one turn of a chat as an async stream of deltas, history, and ending a chat.

Every door (gRPC, HTTP, WhatsApp) runs its turns through `ChatService.turn`, so the rules
about ownership, budgets, partial answers and persistence live here once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import TracebackType

from chatms.domain.budget import TokenBudget, known_context_window
from chatms.domain.errors import (
    ChatError,
    InvalidInput,
    PayloadTooLarge,
    Unavailable,
    UpstreamError,
    UpstreamTimeout,
)
from chatms.domain.model import Chat, ChatConfig, Completion, PendingTurn, Usage
from chatms.service.ports import (
    ChatDetail,
    ChatPage,
    ChatRepository,
    CompletionClient,
    Lease,
    StoredMessage,
    TokenCounter,
    UpstreamResult,
)

log = logging.getLogger("chatms.turns")

LONG_TEXT = 4096  # characters

# Set by a door from the caller's `x-request-id` (or left unset for a fresh one), so each
# door tags its turns without passing the id through every call.
REQUEST_ID: ContextVar[str | None] = ContextVar("chatms_request_id", default=None)


@dataclass(frozen=True, slots=True)
class TurnPolicy:
    """The service-wide rules a turn is held to."""

    defaults: ChatConfig
    system_prompt: str
    budget: TokenBudget
    max_message_chars: int = 32_000
    max_user_id_chars: int = 256
    turn_timeout: float = 300.0
    store_retry_seconds: float = 60.0
    # A turn renews its lease every half of this; a lease only runs out when its process
    # died (or lost the database), and then frees the chat within this many seconds.
    lease_seconds: float = 60.0


@dataclass(slots=True)
class TurnReport:
    """What a finished turn tells observers (metrics, logs): no message bodies."""

    transport: str
    chat_id: str
    user_id: str
    new_chat: bool
    outcome: str
    error: str | None = None
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    started: float = 0.0
    first_token_at: float | None = None
    finished: float = 0.0
    deltas: int = 0
    request_id: str = ""


TurnObserver = Callable[[TurnReport], None]


def _storable(name: str, value: str) -> None:
    """Refuse text PostgreSQL cannot store: NUL, and lone surrogates (JSON's "\\ud800")."""
    if "\x00" in value:
        raise InvalidInput(f"{name} must not contain NUL characters")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput(f"{name} is not valid Unicode text") from None


def parse_chat_id(chat_id: str) -> str:
    """A canonical UUID string, or InvalidInput."""
    try:
        return str(uuid.UUID(chat_id))
    except ValueError:
        raise InvalidInput("chat_id must be a UUID") from None


class ChatService:
    def __init__(
        self,
        repo: ChatRepository,
        llm: CompletionClient,
        counter: TokenCounter,
        policy: TurnPolicy,
        observers: tuple[TurnObserver, ...] = (),
    ) -> None:
        self.repo = repo
        self.llm = llm
        self.counter = counter
        self.policy = policy
        self.observers = observers
        self.accepting = True
        self.in_flight = 0
        # Turns in flight per transport, read by the metrics at scrape time.
        self.streaming: Counter[str] = Counter()
        self._idle = asyncio.Event()
        self._idle.set()
        # Turns still storing their result; shutdown waits for them.
        self._persisting: set[asyncio.Task[None]] = set()
        self._system_tokens = counter.count(policy.system_prompt)

    def budget_for(self, chat: Chat) -> TokenBudget:
        """The budget of the chat's own model and reply size (settings may have changed)."""
        policy, config = self.policy, chat.config
        same_model = config.model == policy.defaults.model
        if same_model and config.max_tokens == policy.defaults.max_tokens:
            return policy.budget
        window = policy.budget.context_window
        if not same_model:
            window = known_context_window(config.model) or window
        try:
            return TokenBudget(window, config.max_tokens)
        except ValueError:  # a stored reply size the window cannot hold any more
            return policy.budget

    def validate(self, user_id: str, chat_id: str | None, text: str) -> str | None:
        """Check a turn's input before any I/O; returns the canonical chat id."""
        self._check_user(user_id)
        _storable("user_message", text)
        if not text or not text.strip():
            raise InvalidInput("user_message must not be empty")
        if len(text) > self.policy.max_message_chars:
            raise PayloadTooLarge(
                f"user_message is {len(text)} characters; the limit is "
                f"{self.policy.max_message_chars}"
            )
        return parse_chat_id(chat_id) if chat_id else None

    def turn(self, user_id: str, chat_id: str | None, text: str, transport: str) -> Turn:
        """A turn of a chat: `async with` it, then iterate its text deltas."""
        return Turn(self, user_id, chat_id, text, transport)

    async def history(self, user_id: str, chat_id: str) -> list[StoredMessage]:
        return (await self.chat(user_id, chat_id)).messages

    async def chat(self, user_id: str, chat_id: str) -> ChatDetail:
        """One of the user's chats with its status and every stored message."""
        self._check_user(user_id)
        return await self.repo.chat(parse_chat_id(chat_id), user_id)

    async def chats(self, user_id: str, limit: int = 20, cursor: str | None = None) -> ChatPage:
        self._check_user(user_id)
        if not 1 <= limit <= 100:
            raise InvalidInput("limit must be between 1 and 100")
        return await self.repo.list_chats(user_id, limit, cursor)

    async def end(self, user_id: str, chat_id: str) -> None:
        self._check_user(user_id)
        await self.repo.end(parse_chat_id(chat_id), user_id)

    def _check_user(self, user_id: str) -> None:
        if not user_id or not user_id.strip():
            raise InvalidInput("user_id must not be empty")
        if len(user_id) > self.policy.max_user_id_chars:
            raise PayloadTooLarge(
                f"user_id is longer than {self.policy.max_user_id_chars} characters"
            )
        _storable("user_id", user_id)

    def stop_accepting(self) -> None:
        """Refuse new turns from now on; turns in flight go on."""
        self.accepting = False

    async def wait_idle(self, grace: float) -> bool:
        """Wait up to `grace` seconds for the turns in flight; True when none is left."""
        try:
            async with asyncio.timeout(grace):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def drain(self, grace: float) -> None:
        """Wait up to `grace` seconds for finished turns to store their results."""
        try:
            async with asyncio.timeout(grace):
                while self._persisting:
                    await asyncio.gather(*self._persisting, return_exceptions=True)
        except TimeoutError:
            log.error("%d turns were still being stored at shutdown", len(self._persisting))
            for task in self._persisting:
                task.cancel()

    def _keep(self, task: asyncio.Task[None]) -> asyncio.Task[None]:
        """Hold a storing task until it is done, so that shutdown can wait for it."""
        self._persisting.add(task)
        task.add_done_callback(self._persisting.discard)
        return task

    def _turn_started(self, transport: str) -> None:
        self.in_flight += 1
        self.streaming[transport] += 1
        self._idle.clear()

    def _turn_ended(self, transport: str) -> None:
        self.in_flight -= 1
        self.streaming[transport] -= 1
        if not self.in_flight:
            self._idle.set()

    def _new_lease(self) -> Lease:
        return Lease(str(uuid.uuid4()), self.policy.lease_seconds)


class Turn:
    """One exchange: the user's message in, the model's answer streamed out, both stored.

    Entering leases the chat (or creates it) and checks the budget, so errors come before
    the first delta. Leaving stores the user message and the answer, whole or partial, with
    the reason it ended, in one transaction, even when the caller was cancelled.
    """

    def __init__(
        self, service: ChatService, user_id: str, chat_id: str | None, text: str, transport: str
    ) -> None:
        self._svc = service
        self.user_id = user_id
        self._requested_id = chat_id
        self._text = text
        self.result = UpstreamResult()
        self.parts: list[str] = []
        self.chat_id = ""
        self._chat: Chat | None = None
        self._pending: PendingTurn | None = None
        self._lease = service._new_lease()
        self._new = False
        self._created: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._stream: AsyncIterator[str] | None = None
        self.report = TurnReport(transport, "", user_id, chat_id is None, "error")
        self.report.request_id = REQUEST_ID.get() or uuid.uuid4().hex

    async def __aenter__(self) -> Turn:
        svc = self._svc
        self.report.started = time.perf_counter()
        self.result.deadline = time.monotonic() + self._svc.policy.turn_timeout
        if not svc.accepting:
            raise Unavailable("service is shutting down")
        chat_id = svc.validate(self.user_id, self._requested_id, self._text)
        text = self._text
        # A long message takes milliseconds to tokenize: keep it off the event loop.
        if len(text) > LONG_TEXT:
            tokens = await asyncio.to_thread(svc.counter.count, text)
        else:
            tokens = svc.counter.count(text)
        if chat_id is None:
            chat = Chat.start(
                id=str(uuid.uuid4()),
                owner=self.user_id,
                config=svc.policy.defaults,
                system_prompt=svc.policy.system_prompt,
                system_tokens=svc._system_tokens,
            )
            self._pending = chat.add_user_message(self._text, tokens, svc.policy.budget)
            # Inserted once the first delta is on its way (see _deltas), never before it.
            self._new = True
        else:
            chat = await self._acquire(chat_id)
            try:
                self._pending = chat.add_user_message(self._text, tokens, svc.budget_for(chat))
            except BaseException:
                await svc.repo.release(chat.id, self._lease)
                raise
        self._chat = chat
        self.chat_id = self.report.chat_id = chat.id
        self._renewer = asyncio.ensure_future(self._keep_lease())
        svc._turn_started(self.report.transport)
        return self

    async def _acquire(self, chat_id: str) -> Chat:
        """Lease and load the chat; a caller cancelled meanwhile leaves no lease behind."""
        svc, lease = self._svc, self._lease
        leasing = asyncio.ensure_future(svc.repo.acquire(chat_id, self.user_id, lease))
        try:
            return await asyncio.shield(leasing)
        except asyncio.CancelledError:
            def give_back(done: asyncio.Future[Chat]) -> None:
                if not done.cancelled() and done.exception() is None:
                    svc._keep(asyncio.ensure_future(svc.repo.release(chat_id, lease)))

            leasing.add_done_callback(give_back)
            raise

    async def _keep_lease(self) -> None:
        """Renew the chat's lease while the turn runs (a new chat's row may not exist yet)."""
        repo, chat_id, lease = self._svc.repo, self.chat_id, self._lease
        while True:
            await asyncio.sleep(lease.seconds / 2)
            try:
                await repo.renew(chat_id, lease)
            except ChatError as exc:  # the database is away: the commit will say so
                log.warning("could not renew the lease on chat %s: %s", chat_id, exc)

    def __aiter__(self) -> AsyncIterator[str]:
        assert self._chat is not None, "iterate a turn inside `async with`"
        if self._stream is None:
            self._stream = self._deltas(self._chat)
        return self._stream

    async def _deltas(self, chat: Chat) -> AsyncIterator[str]:
        parts = self.parts
        stream = self._svc.llm.complete(chat.config, list(chat.prompt()), self.result)
        try:
            async for piece in stream:
                if not parts:
                    self.report.first_token_at = time.perf_counter()
                parts.append(piece)
                yield piece
                if self._new and self._created is None:
                    # A new chat's row is written beside the rest of the answer, so that no
                    # database work ever stands between the upstream and the first delta.
                    self._created = asyncio.ensure_future(self._create())
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    @property
    def content(self) -> str:
        """The answer so far."""
        return "".join(self.parts)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
        completion = self._completion_for(exc)
        # A new chat whose client never learned its id is not stored: it would only leave
        # an orphan chat behind for every retry.
        store = not (self._new and exc is not None and not self.parts)
        failure = exc
        try:
            # Closing the upstream and storing must finish even if our caller is cancelled
            # again meanwhile (grpclib cancels on the deadline and again on a stream reset).
            task = self._svc._keep(asyncio.ensure_future(self._wind_down(completion, store)))
            try:
                await asyncio.shield(task)
            except ChatError as stored_not:
                if exc is None:
                    failure = stored_not
                    raise
        finally:
            self._svc._turn_ended(self.report.transport)
            self._finish_report(completion, failure)

    async def _wind_down(self, completion: Completion, store: bool) -> None:
        if self._stream is not None:
            await self._stream.aclose()  # type: ignore[attr-defined]
        if store:
            await self._persist(completion)

    def _completion_for(self, exc: BaseException | None) -> Completion:
        if exc is None:
            return Completion.COMPLETE
        if isinstance(exc, asyncio.CancelledError | GeneratorExit):
            return Completion.SHUTDOWN if not self._svc.accepting else Completion.CANCELLED
        if isinstance(exc, UpstreamTimeout | TimeoutError):
            return Completion.TIMEOUT
        return Completion.UPSTREAM_ERROR

    async def _persist(self, completion: Completion) -> None:
        chat, pending, svc = self._chat, self._pending, self._svc
        assert chat is not None and pending is not None
        content = self.content
        usage = self.result.usage
        if usage is not None and completion is Completion.COMPLETE:
            answer_tokens = usage.completion_tokens
        else:
            answer_tokens = svc.counter.count(content) if content else 0
        chat.add_assistant_message(
            pending,
            content,
            answer_tokens,
            completion,
            self.result.finish_reason,
            usage or Usage(0, answer_tokens),
        )
        try:
            await self._store()
        except Unavailable:
            # The database is away: keep trying in the background while our lease lasts,
            # so the answer the user saw is kept and the chat is not left leased.
            svc._keep(asyncio.ensure_future(self._store_later()))
            raise Unavailable(
                "database unavailable while storing the turn; storing is retried in the background"
            ) from None

    async def _store(self) -> None:
        chat, pending = self._chat, self._pending
        assert chat is not None and pending is not None
        if self._new:
            if self._created is None:
                self._created = asyncio.ensure_future(self._create())
            await self._created
        await self._svc.repo.commit_turn(chat, pending, self._lease)

    async def _store_later(self) -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + min(self._svc.policy.store_retry_seconds, self._lease.seconds)
        delay = 0.25
        while True:
            await asyncio.sleep(delay)
            created = self._created
            if created is not None and (created.cancelled() or created.exception() is not None):
                self._created = None  # _store inserts again (the insert is idempotent)
            try:
                await self._store()
            except Unavailable:
                if loop.time() + delay > give_up:
                    log.error("turn of chat %s was not stored: database unavailable", self.chat_id)
                    return
                delay = min(delay * 2, 2.0)
            else:
                log.info("turn of chat %s stored after a database outage", self.chat_id)
                return

    async def _create(self) -> None:
        assert self._chat is not None
        await self._svc.repo.create(self._chat, self._lease)

    def _finish_report(self, completion: Completion, exc: BaseException | None) -> None:
        report = self.report
        report.finished = time.perf_counter()
        report.finish_reason = self.result.finish_reason
        report.usage = self.result.usage or Usage()
        report.deltas = len(self.parts)
        report.outcome = "ok" if exc is None else (
            "store_failed" if completion is Completion.COMPLETE else completion.value
        )
        if isinstance(exc, ChatError):
            report.error = type(exc).__name__
        for observe in self._svc.observers:
            try:
                observe(report)
            except Exception:
                log.exception("turn observer %r failed", observe)


__all__ = [
    "REQUEST_ID", "ChatService", "Turn", "TurnObserver", "TurnPolicy", "TurnReport",
    "UpstreamError",
]
