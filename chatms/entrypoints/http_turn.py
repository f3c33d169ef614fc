"""One turn answered over HTTP, as JSON or as Server-Sent Events (`POST /chat`)."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import Receive, Scope, Send

from chatms.domain import errors
from chatms.entrypoints.http_errors import error_body, http_error, retry_after
from chatms.entrypoints.http_sse import (
    JSON_HEADERS,
    SSE_HEADERS,
    delta_event,
    json_bytes,
    sse_event,
    until_disconnect,
)
from chatms.service.chats import ChatService


class TurnExchange:
    """An ASGI response that runs one turn and answers it as JSON or as Server-Sent Events.

    The turn runs beside a watcher of the client's connection. When the client goes away
    the turn goes on to the end and is stored whole (`DISCONNECTED_TURNS=continue`, within
    the service's bounds on detached turns), or is cancelled at once (`cancel`, or over
    the bounds) and stores the partial answer flagged cancelled. Errors before the first
    byte is sent are JSON with a status.
    """

    def __init__(
        self, chats: ChatService, user_id: str, chat_id: str | None, text: str, sse: bool,
        model: str | None = None, carry_on: bool = True,
    ) -> None:
        self.chats = chats
        self.model = model
        self.user_id = user_id
        self.chat_id = chat_id
        self.text = text
        self.sse = sse
        self.carry_on = carry_on
        self.started = False
        self.gone = False  # the client left: what is left of the turn is not sent
        self._send: Send | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._send = send
        work = asyncio.ensure_future(self._run(self._send_while_there))
        gone = asyncio.ensure_future(until_disconnect(receive))
        detached = False
        try:
            await asyncio.wait((work, gone), return_when=asyncio.FIRST_COMPLETED)
            detached = not work.done() and self._detach(work)
        finally:
            gone.cancel()
            if not detached:
                work.cancel()  # no-op when the turn is done; else the client left
            await asyncio.gather(gone, *(() if detached else (work,)), return_exceptions=True)
        if not detached and not work.cancelled() and (failure := work.exception()) is not None:
            raise failure

    def _detach(self, work: asyncio.Future[None]) -> bool:
        """The client left: let the turn run on, if allowed."""
        self.gone = True
        if not self.carry_on or not self.chats.detached.detach(self.user_id):
            return False
        work.add_done_callback(lambda _: self.chats.detached.attach(self.user_id))
        return True

    async def _send_while_there(self, message: Any) -> None:
        if self.gone or self._send is None:
            return
        try:
            await self._send(message)
        except OSError:  # the connection broke under the write: the client left
            self.gone = True

    async def _run(self, send: Send) -> None:
        try:
            await self._turn(send)
        except errors.ChatError as exc:
            status, code = http_error(exc)
            if self.started:
                await send({"type": "http.response.body", "more_body": False,
                            "body": sse_event(b"error", error_body(code, str(exc)))})
            else:
                await self._send_json(send, status, error_body(code, str(exc)), retry_after(exc))

    async def _turn(self, send: Send) -> None:
        async with self.chats.turn(self.user_id, self.chat_id, self.text, "http",
                                   self.model) as turn:
            deltas = aiter(turn)
            if self.sse:
                # Wait for the first delta before the headers, so that upstream failures
                # before the answer starts still get a fitting status code.
                first = await anext(deltas, None)
                await send({"type": "http.response.start", "status": 200,
                            "headers": SSE_HEADERS})
                self.started = True
                if first is not None:
                    position = len(first)
                    await self._send_more(send, delta_event(
                        position, {"chat_id": turn.chat_id, "delta": first}))
                    async for delta in deltas:
                        position += len(delta)
                        await self._send_more(send, delta_event(position, {"delta": delta}))
            else:
                async for _ in deltas:
                    pass
        # Leaving the turn stored it: only now is the answer reported as done.
        result = turn.result
        if not self.sse:
            await self._send_json(send, 200, {
                "chat_id": result.chat_id, "user_id": self.user_id, "content": result.content})
            return
        usage = result.usage
        done = {
            "chat_id": result.chat_id,
            "content": result.content,
            "position": len(result.content),
            "completion": result.completion.value,
            "finish_reason": result.finish_reason,
            "usage": {"prompt_tokens": usage.prompt_tokens,
                      "completion_tokens": usage.completion_tokens},
        }
        await send({"type": "http.response.body", "body": sse_event(b"done", done),
                    "more_body": False})

    @staticmethod
    async def _send_more(send: Send, body: bytes) -> None:
        await send({"type": "http.response.body", "body": body, "more_body": True})

    async def _send_json(self, send: Send, status: int, obj: dict[str, Any],
                         extra: list[tuple[bytes, bytes]] | None = None) -> None:
        self.started = True
        await send({"type": "http.response.start", "status": status,
                    "headers": JSON_HEADERS + (extra or [])})
        await send({"type": "http.response.body", "body": json_bytes(obj), "more_body": False})
