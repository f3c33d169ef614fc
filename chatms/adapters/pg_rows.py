"""Conversions between chatms's values and PostgreSQL rows: configs, summaries, cursors,
and a message's attachments."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from chatms.domain.context import Summary
from chatms.domain.errors import InvalidInput
from chatms.domain.media import Attachment
from chatms.domain.model import ChatConfig, Message


def media_json(message: Message) -> str | None:
    """The message's attachments as JSON text (sent as text[]: asyncpg reads a list of
    lists as a two-dimensional array)."""
    if not message.attachments:
        return None
    return json.dumps([a.as_json() for a in message.attachments])


def attachments_from(media: list[dict[str, object]] | None) -> tuple[Attachment, ...]:
    return tuple(Attachment.from_json(a) for a in media or ())


def config_to_json(config: ChatConfig) -> dict[str, Any]:
    return {
        "model": config.model,
        "temperature": config.temperature,
        "top_p": config.top_p,
        "max_tokens": config.max_tokens,
        "stop": list(config.stop),
        "presence_penalty": config.presence_penalty,
        "frequency_penalty": config.frequency_penalty,
    }


def config_from_json(data: dict[str, Any]) -> ChatConfig:
    return ChatConfig(
        model=data["model"],
        temperature=data["temperature"],
        top_p=data["top_p"],
        max_tokens=data["max_tokens"],
        stop=tuple(data["stop"]),
        presence_penalty=data["presence_penalty"],
        frequency_penalty=data["frequency_penalty"],
    )


def summary_from(row: asyncpg.Record) -> Summary | None:
    if row["summary_version"] is None:
        return None
    return Summary(
        row["summary_content"], row["summary_through"], row["summary_tokens"],
        row["summary_version"], row["summary_model"],
    )


def encode_cursor(updated_at: datetime, chat_id: str) -> str:
    raw = f"{updated_at.isoformat()}|{chat_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, chat_id = raw.split("|", 1)
        updated_at = datetime.fromisoformat(stamp)
        if updated_at.tzinfo is None:
            raise ValueError("a cursor's time has an offset")
        # In UTC, as asyncpg sends it: year 1 at +01:00 is out of range only then.
        return updated_at.astimezone(UTC), str(uuid.UUID(chat_id))
    except (ValueError, OverflowError):
        raise InvalidInput("cursor is not valid") from None
