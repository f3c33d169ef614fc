"""The WhatsApp door: Twilio's webhook, checked and acknowledged at once.

The route only verifies the request and stores it as work in the inbound queue (channel
"whatsapp"); the answer is produced by the queue's worker and sent through Twilio's REST API
(`TwilioSender`), so Twilio's 15-second limit never bites.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from chatms.config import WhatsAppSettings
from chatms.domain.errors import Unavailable
from chatms.entrypoints.http_edge import BodyTimeout, BodyTooLarge, read_body
from chatms.service.inbound import InboundService
from chatms.service.ports import InboundMessage

log = logging.getLogger("chatms.whatsapp")

CHANNEL = "whatsapp"

PATH = "/webhooks/twilio/whatsapp"
MAX_MEDIA = 10  # Twilio's own limit on media per message
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
NOT_CONFIGURED = (
    "WhatsApp is not configured: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN to enable it.\n"
)


class _Form(dict[str, str]):
    """The posted fields; `getall` gives RequestValidator every value of a repeated field."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__(pairs)
        self._pairs = pairs

    def getall(self, name: str) -> list[str]:
        return [value for key, value in self._pairs if key == name]


def _text(status: int, message: str) -> PlainTextResponse:
    return PlainTextResponse(message + "\n", status_code=status)


class TwilioWebhook:
    def __init__(
        self,
        service: InboundService | None,
        settings: WhatsAppSettings,
        max_body_bytes: int,
        body_timeout: float,
    ) -> None:
        self.service = service
        self.account_sid = settings.account_sid
        self.validator = RequestValidator(settings.auth_token) if settings.auth_token else None
        self.public_base_url = settings.public_base_url
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout

    def called_url(self, request: Request) -> str:
        """The URL Twilio signed: the public one behind a proxy or tunnel, else our own."""
        if self.public_base_url is None:
            return str(request.url)
        query = request.url.query
        return self.public_base_url + request.url.path + (f"?{query}" if query else "")

    async def handle(self, request: Request) -> Response:
        if self.service is None or self.validator is None or self.account_sid is None:
            return PlainTextResponse(NOT_CONFIGURED, status_code=503)
        try:  # the signature covers the body: it must be read first, within limits
            body = await read_body(request, self.max_body_bytes, self.body_timeout)
        except BodyTooLarge:
            return _text(413, "request body too large")
        except BodyTimeout as exc:
            return PlainTextResponse(f"{exc}\n", status_code=408, headers={"connection": "close"})
        try:
            form = _Form(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except (UnicodeDecodeError, ValueError):
            return _text(400, "body is not a form")
        signature = request.headers.get("x-twilio-signature")
        if not signature or not self.validator.validate(self.called_url(request), form, signature):
            log.warning("whatsapp webhook: missing or invalid X-Twilio-Signature; refused")
            return _text(403, "invalid signature")
        if form.get("AccountSid") != self.account_sid:
            log.warning("whatsapp webhook: message for another account; refused")
            return _text(403, "unknown account")
        missing = [name for name in ("MessageSid", "From", "To") if not form.get(name)]
        if missing:
            return _text(400, f"missing fields: {', '.join(missing)}")
        if any("\x00" in value for value in form.values()):  # PostgreSQL text cannot hold it
            return _text(400, "fields must not contain NUL characters")
        try:
            num_media = int(form.get("NumMedia") or "0")
        except ValueError:
            return _text(400, "NumMedia is not a number")
        media = tuple(
            (form.get(f"MediaUrl{i}", ""), form.get(f"MediaContentType{i}", ""))
            for i in range(min(num_media, MAX_MEDIA))
        )
        message = InboundMessage(
            channel=CHANNEL,
            message_id=form["MessageSid"],
            account=form["AccountSid"],
            sender=form["From"],
            recipient=form["To"],
            body=form.get("Body", ""),
            media_count=num_media,
            sender_name=form.get("ProfileName"),
            media=tuple(item for item in media if item[0]),
        )
        try:
            new = await self.service.accept(message)
        except Unavailable as exc:  # Twilio retries a failed delivery: nothing is lost
            log.error("whatsapp webhook: could not store %s: %s", message.message_id, exc)
            return _text(503, "temporarily unable to accept the message; retry")
        if not new and self.service.blocked(message):
            log.info("whatsapp message %s from a blocked number: arrival recorded only",
                     message.message_id)
        elif not new:
            log.info("whatsapp message %s was already accepted; redelivery ignored",
                     message.message_id)
        return Response(EMPTY_TWIML, media_type="text/xml")


def whatsapp_routes(webhook: TwilioWebhook) -> list[Route]:
    return [Route(PATH, webhook.handle, methods=["POST"])]
