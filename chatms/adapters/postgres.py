"""The chat repository in PostgreSQL (asyncpg, plain SQL with parameters).

Each turn costs two statements on the hot path of an existing chat: one that leases the
chat and returns its live window, and one that stores the turn and releases the lease.
Both are single statements, so each is atomic and one round trip.
"""

from __future__ import annotations

import asyncpg

from chatms.adapters.pg_rows import (
    attachments_from,
    config_from_json,
    config_to_json,
    decode_cursor,
    encode_cursor,
    media_json,
    summary_from,
)
from chatms.adapters.pgpool import Connections
from chatms.adapters.postgres_answers import AnswerStatements
from chatms.config import DatabaseSettings
from chatms.domain.errors import ChatBusy, ChatEnded, ChatNotFound, Unavailable
from chatms.domain.model import (
    Chat,
    ChatStatus,
    Completion,
    Message,
    PendingTurn,
    Role,
)
from chatms.service.ports import (
    ChatDetail,
    ChatPage,
    ChatSummary,
    Lease,
    StoredMessage,
    StoredSummary,
)

# A finished answer is worth waiting for: under a burst of load its commit waits this many
# acquire timeouts for a pooled connection before giving up (to the background retry).
STORE_PATIENCE = 6.0

# inbound_messages.status -> what a chat's history says of the answer's delivery.
DELIVERY = {"pending": "sending", "sending": "sending", "done": "delivered", "failed": "failed"}

_ACQUIRE = """
WITH leased AS (
    UPDATE chats SET lease_id = $3, lease_until = now() + make_interval(secs => $4)
    WHERE id = $1 AND owner_id = $2 AND status = 'active'
      AND (lease_until IS NULL OR lease_until < now() OR lease_id = $3)
    RETURNING id, config, next_seq
), interrupted AS (
    -- An answer still 'streaming' under a lapsed lease: its process died. (This statement
    -- reads the row as it was; the loader maps 'streaming' to 'interrupted' likewise.)
    UPDATE messages SET completion = 'interrupted'
    FROM leased WHERE messages.chat_id = leased.id AND messages.completion = 'streaming'
)
SELECT l.config, l.next_seq, w.*, s.*
FROM leased l, LATERAL (
    -- One row of arrays: the chat's config is sent and decoded once, not once per message.
    SELECT array_agg(seq ORDER BY seq) AS seqs, array_agg(role ORDER BY seq) AS roles,
           array_agg(content ORDER BY seq) AS contents, array_agg(tokens ORDER BY seq) AS tokens,
           array_agg(completion ORDER BY seq) AS completions,
           array_agg(finish_reason ORDER BY seq) AS reasons
    FROM messages WHERE chat_id = l.id AND NOT erased
) w LEFT JOIN LATERAL (
    -- The chat's rolling summary, if it has one (same statement: no extra round trip).
    SELECT version AS summary_version, through_seq AS summary_through,
           content AS summary_content, tokens AS summary_tokens, model AS summary_model
    FROM chat_summaries WHERE chat_id = l.id ORDER BY version DESC LIMIT 1
) s ON true
"""

_WHY_NOT_LEASED = """
SELECT status, lease_until IS NOT NULL AND lease_until >= now() AS busy
FROM chats WHERE id = $1 AND owner_id = $2
"""

# A chat with only its system message (turns store their new chats with `begin`).
_CREATE = """
WITH chat AS (
    INSERT INTO chats (id, owner_id, config, lease_id, lease_until)
    VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
    ON CONFLICT (id) DO NOTHING
    RETURNING id
)
INSERT INTO messages (chat_id, seq, role, content, tokens)
SELECT id, 0, 'system', $6, $7 FROM chat
"""

# One statement, so one transaction and one round trip. Every part hangs on `chat`, the
# row whose lease we still hold: a turn that lost its lease stores nothing.
_COMMIT = """
WITH chat AS (
    UPDATE chats SET
        next_seq = $3,
        message_count = $3 - 1,  -- every message but the system one; begin may have counted
        prompt_tokens = prompt_tokens + $11,
        completion_tokens = completion_tokens + $12,
        title = COALESCE(title, $13),
        updated_at = now(),
        lease_id = NULL,
        lease_until = NULL
    WHERE id = $1 AND lease_id = $2
    RETURNING id
), added AS (
    -- Usually `begin` stored the user message and a 'streaming' answer already: the answer
    -- becomes final here. Without them (begin failed), both are inserted now.
    INSERT INTO messages (chat_id, seq, role, content, tokens, completion, finish_reason, media)
    SELECT chat.id, t.seq, t.role, t.content, t.tokens, t.completion, t.finish_reason,
           t.media::jsonb
    FROM chat, unnest($4::integer[], $5::text[], $6::text[], $7::integer[], $8::text[],
                      $9::text[], $14::text[])
               AS t(seq, role, content, tokens, completion, finish_reason, media)
    ON CONFLICT (chat_id, seq) DO UPDATE SET
        content = EXCLUDED.content, tokens = EXCLUDED.tokens,
        completion = EXCLUDED.completion, finish_reason = EXCLUDED.finish_reason
    WHERE messages.completion = 'streaming'
), erased AS (
    UPDATE messages SET erased = true
    FROM chat WHERE messages.chat_id = chat.id AND messages.seq = ANY($10::integer[])
)
-- Followers of the answer on other replicas hear that it is final.
SELECT count(*) FROM (SELECT pg_notify('chatms_turns', 'e ' || $1::text || ' ' || $15)
                      FROM chat) AS notified
"""


_CHAT_DETAIL = """
SELECT c.status AS chat_status, c.title, c.config->>'model' AS model, s.*,
       m.seq, m.role, m.content, m.tokens, m.erased, m.finish_reason, m.created_at,
       -- An answer still 'streaming' under a lapsed lease was cut by a crash.
       CASE WHEN m.completion = 'streaming' AND (c.lease_until IS NULL OR c.lease_until < now())
            THEN 'interrupted' ELSE m.completion END AS completion,
       w.status AS delivery, m.media
FROM chats c
LEFT JOIN LATERAL (
    SELECT version AS summary_version, through_seq AS summary_through,
           content AS summary_content, tokens AS summary_tokens, model AS summary_model,
           created_at AS summary_at
    FROM chat_summaries WHERE chat_id = c.id ORDER BY version DESC LIMIT 1
) s ON true
LEFT JOIN messages m ON m.chat_id = c.id
LEFT JOIN inbound_messages w ON w.chat_id = c.id AND w.answer_seq = m.seq
WHERE c.id = $1 AND c.owner_id = $2 ORDER BY m.seq
"""


def _loaded(completion: str) -> Completion:
    """A message's completion as a new turn sees it: a leftover 'streaming' answer was cut."""
    found = Completion(completion)
    return Completion.INTERRUPTED if found is Completion.STREAMING else found


class PostgresChatRepository(AnswerStatements):
    def __init__(self, pool: asyncpg.Pool, settings: DatabaseSettings | None = None) -> None:
        self._conn = Connections(pool, settings)

    async def ping(self) -> None:
        await self._conn.ping()

    async def create(self, chat: Chat, lease: Lease) -> None:
        async def insert() -> None:
            async with self._conn() as conn:
                await conn.execute(
                    _CREATE, chat.id, chat.owner, config_to_json(chat.config), lease.token,
                    lease.seconds, chat.system.content, chat.system.tokens,
                )

        await self._conn.twice(insert)  # idempotent: the insert does nothing the second time

    async def acquire(self, chat_id: str, owner: str, lease: Lease) -> Chat:
        async def lease_and_load() -> tuple[asyncpg.Record | None, asyncpg.Record | None]:
            async with self._conn() as conn:
                row = await conn.fetchrow(_ACQUIRE, chat_id, owner, lease.token, lease.seconds)
                why = None if row else await conn.fetchrow(_WHY_NOT_LEASED, chat_id, owner)
            return row, why

        # Idempotent: a lease we already hold is granted again.
        row, why = await self._conn.twice(lease_and_load)
        if row is None:
            if why is None:
                raise ChatNotFound()
            if why["status"] == ChatStatus.ENDED:
                raise ChatEnded()
            raise ChatBusy()
        messages = [
            Message(seq, Role(role), content, tokens, completion=_loaded(completion),
                    finish_reason=reason)
            for seq, role, content, tokens, completion, reason in zip(
                row["seqs"] or (), row["roles"] or (), row["contents"] or (),
                row["tokens"] or (), row["completions"] or (), row["reasons"] or (), strict=True,
            )
        ]
        if not messages or messages[0].role is not Role.SYSTEM:
            # Created by a turn whose insert never landed; give the lease back.
            await self.release(chat_id, lease)
            raise ChatNotFound()
        return Chat(
            id=chat_id, owner=owner, config=config_from_json(row["config"]),
            system=messages[0], live=messages[1:], next_seq=row["next_seq"],
            summary=summary_from(row),
        )

    async def commit_turn(self, chat: Chat, turn: PendingTurn, lease: Lease) -> None:
        assert turn.assistant is not None, "a turn is committed with its answer"
        final = turn.assistant
        new = [turn.user, final]
        usage = turn.usage

        async def store() -> bool:
            async with self._conn(patience=STORE_PATIENCE) as conn:
                stored = await conn.fetchval(
                    _COMMIT, chat.id, lease.token, chat.next_seq,
                    [m.seq for m in new], [m.role.value for m in new],
                    [m.content for m in new], [m.tokens for m in new],
                    [m.completion.value for m in new], [m.finish_reason for m in new],
                    turn.erased_seqs, usage.prompt_tokens, usage.completion_tokens,
                    turn.user.content[:200], [media_json(m) for m in new],
                    final.completion.value,
                )
                if stored == 1:
                    return True
                # No lease: either a first attempt committed before its connection died,
                # or the lease expired and the turn came too late.
                return bool(await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM messages WHERE chat_id = $1 AND seq = $2"
                    " AND role = 'assistant' AND completion = $3 AND content = $4)",
                    chat.id, final.seq, final.completion.value, final.content,
                ))

        if not await self._conn.twice(store):
            raise Unavailable("the turn outlived its lease on the chat and was not stored")

    async def renew(self, chat_id: str, lease: Lease) -> bool:
        async with self._conn() as conn:
            renewed = await conn.fetchval(
                "UPDATE chats SET lease_until = now() + make_interval(secs => $3)"
                " WHERE id = $1 AND lease_id = $2 RETURNING id",
                chat_id, lease.token, lease.seconds,
            )
        return renewed is not None

    async def release(self, chat_id: str, lease: Lease) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE chats SET lease_id = NULL, lease_until = NULL"
                " WHERE id = $1 AND lease_id = $2",
                chat_id, lease.token,
            )

    async def list_chats(self, owner: str, limit: int, cursor: str | None) -> ChatPage:
        after = decode_cursor(cursor) if cursor else None
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT id, status, title, message_count, created_at, updated_at FROM chats"
                " WHERE owner_id = $1 AND ($2::timestamptz IS NULL"
                "   OR (updated_at, id) < ($2::timestamptz, $3::uuid))"
                " ORDER BY updated_at DESC, id DESC LIMIT $4",
                owner, after[0] if after else None, after[1] if after else None, limit + 1,
            )
        chats = [
            ChatSummary(
                str(r["id"]), r["status"], r["title"], r["message_count"],
                r["created_at"], r["updated_at"],
            )
            for r in rows[:limit]
        ]
        more = len(rows) > limit
        return ChatPage(chats, encode_cursor(chats[-1].updated_at, chats[-1].id) if more else None)

    async def messages(self, chat_id: str, owner: str) -> list[StoredMessage]:
        detail = await self.chat(chat_id, owner)
        system = [detail.system_message] if detail.system_message else []
        return system + detail.messages

    async def chat(self, chat_id: str, owner: str) -> ChatDetail:
        async with self._conn() as conn:
            rows = await conn.fetch(_CHAT_DETAIL, chat_id, owner)
        if not rows:
            raise ChatNotFound()
        messages = [
            StoredMessage(
                r["seq"], r["role"], r["content"], r["tokens"], r["erased"],
                r["completion"], r["finish_reason"], r["created_at"],
                DELIVERY.get(r["delivery"]), attachments_from(r["media"]),
            )
            for r in rows
            if r["seq"] is not None
        ]
        head = rows[0]
        # The system message belongs to the chat, not to its counted messages.
        system = messages.pop(0) if messages and messages[0].role == "system" else None
        summary = None
        if head["summary_version"] is not None:
            summary = StoredSummary(
                head["summary_version"], head["summary_through"], head["summary_content"],
                head["summary_tokens"], head["summary_model"], head["summary_at"],
            )
        return ChatDetail(chat_id, head["chat_status"], messages, head["title"],
                          head["model"], summary, system)

    async def end(self, chat_id: str, owner: str) -> None:
        async with self._conn() as conn:
            done = await conn.fetchval(
                "UPDATE chats SET status = 'ended', updated_at = now()"
                " WHERE id = $1 AND owner_id = $2"
                # A turn still holding the chat would be stored after the end: refused.
                "   AND (lease_until IS NULL OR lease_until < now()) RETURNING id",
                chat_id, owner,
            )
            why = None if done else await conn.fetchrow(_WHY_NOT_LEASED, chat_id, owner)
        if done is None:
            if why is None:
                raise ChatNotFound()
            raise ChatBusy()

