"""Answers written while they stream: the statements behind resume, stop and crash safety.

A turn stores its user message and an empty 'streaming' answer once its budget check has
passed (`begin`, beside the upstream call), flushes the answer so far into that row at
bounded intervals (`flush`: every running answer of the process in one statement), and
gives it its final completion in its commit. Every answer flushed, every commit and every
stop sends one NOTIFY on `CHANNEL`, in the same statement, so other
replicas can follow the answer without polling. Payloads are plain text, cheap to route:

    p <chat_id> <start> [<text>]   the answer grew; text from position start (left out
                                   when the payload would pass PostgreSQL's 8000 bytes)
    e <chat_id> <completion>       the answer is final
    s <chat_id>                    stop the chat's running turn
"""

from __future__ import annotations

from collections.abc import Sequence

from chatms.adapters.pg_rows import config_to_json, media_json
from chatms.adapters.pgpool import Connections
from chatms.domain.errors import ChatNotFound
from chatms.domain.model import Chat, Completion, PendingTurn
from chatms.service.ports import AnswerState, Lease, Progress

CHANNEL = "chatms_turns"
# PostgreSQL refuses payloads of 8000 bytes or more; keep well inside.
MAX_PAYLOAD_BYTES = 7900
TITLE_CHARS = 200

_BEGIN = """
WITH chat AS (
    UPDATE chats SET next_seq = $3 + 2, message_count = $3 + 1,
        title = COALESCE(title, left($4, 200)), updated_at = now()
    WHERE id = $1 AND lease_id = $2
    RETURNING id
), added AS (
    INSERT INTO messages (chat_id, seq, role, content, tokens, completion, media)
    SELECT chat.id, t.seq, t.role, t.content, t.tokens, t.completion, t.media
    FROM chat, (VALUES ($3, 'user', $4, $5, 'complete', $7::text::jsonb),
                       ($3 + 1, 'assistant', '', 0, 'streaming', NULL::jsonb))
               AS t(seq, role, content, tokens, completion, media)
    ON CONFLICT (chat_id, seq) DO NOTHING
), erased AS (
    UPDATE messages SET erased = true
    FROM chat WHERE messages.chat_id = chat.id AND messages.seq = ANY($6::integer[])
)
SELECT count(*) FROM chat
"""

# A new chat: the chat, its system message, the user message and the empty answer.
_CREATE_AND_BEGIN = """
WITH chat AS (
    INSERT INTO chats (id, owner_id, config, lease_id, lease_until, next_seq, message_count,
                       title)
    VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5), 3, 2, left($8, 200))
    ON CONFLICT (id) DO NOTHING
    RETURNING id
)
INSERT INTO messages (chat_id, seq, role, content, tokens, completion, media)
SELECT chat.id, t.seq, t.role, t.content, t.tokens, t.completion, t.media
FROM chat, (VALUES (0, 'system', $6, $7, 'complete', NULL::jsonb),
                   (1, 'user', $8, $9, 'complete', $10::text::jsonb),
                   (2, 'assistant', '', 0, 'streaming', NULL::jsonb))
           AS t(seq, role, content, tokens, completion, media)
"""

# Every running answer of this process in one statement (one flush tick): the text after
# `start` is replaced, so a flush whose reply was lost can be sent again. Each lands only
# while its turn holds its lease; the flushed ones are told by their ordinal.
_FLUSH = """
WITH progress AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::integer[], $4::integer[], $5::text[],
                         $6::integer[], $7::text[])
        WITH ORDINALITY AS p(chat_id, lease_id, seq, start, text, tokens, payload, i)
), flushed AS (
    UPDATE messages m SET content = left(m.content, p.start) || p.text, tokens = p.tokens
    FROM progress p
    WHERE m.chat_id = p.chat_id AND m.seq = p.seq AND m.completion = 'streaming'
      AND EXISTS (SELECT 1 FROM chats c WHERE c.id = p.chat_id AND c.lease_id = p.lease_id)
    RETURNING p.i, p.payload
)
SELECT i, pg_notify('chatms_turns', payload) FROM flushed
"""

# Answers whose process died: their chat's lease lapsed (`grace` seconds ago or more).
_INTERRUPT_LAPSED = """
WITH lapsed AS (
    UPDATE messages m SET completion = 'interrupted'
    FROM chats c
    WHERE m.chat_id = c.id AND m.completion = 'streaming'
      AND ($1::uuid IS NULL OR m.chat_id = $1)
      AND (c.lease_until IS NULL OR c.lease_until < now() - make_interval(secs => $2))
    RETURNING m.chat_id
)
SELECT chat_id, pg_notify('chatms_turns', 'e ' || chat_id::text || ' interrupted') FROM lapsed
"""

_LATEST_ANSWER = """
SELECT c.lease_until IS NOT NULL AND c.lease_until >= now() AS leased,
       m.seq, m.completion, char_length(m.content) AS length,
       substr(m.content, least($3::bigint + 1, 2147483647)::integer) AS rest
FROM chats c LEFT JOIN LATERAL (
    SELECT seq, completion, content FROM messages
    WHERE chat_id = c.id AND role = 'assistant' AND ($4::integer IS NULL OR seq = $4)
    ORDER BY seq DESC LIMIT 1
) m ON true
WHERE c.id = $1 AND c.owner_id = $2
"""

_STOP = """
SELECT s.running, n.sent
FROM (SELECT lease_until IS NOT NULL AND lease_until >= now() AS running
      FROM chats WHERE id = $1 AND owner_id = $2) s
LEFT JOIN LATERAL (SELECT pg_notify('chatms_turns', 's ' || $1::text) IS NULL AS sent
                   WHERE s.running) n ON true
"""


def progress_payload(chat_id: str, start: int, text: str) -> str:
    """The NOTIFY payload of a flush: with its text when that fits, else without."""
    payload = f"p {chat_id} {start} {text}"
    if len(payload) * 4 < MAX_PAYLOAD_BYTES or len(payload.encode()) < MAX_PAYLOAD_BYTES:
        return payload
    return f"p {chat_id} {start}"


class AnswerStatements:
    """Mixed into PostgresChatRepository: the statements of answers being written."""

    _conn: Connections

    async def begin(self, chat: Chat, turn: PendingTurn, lease: Lease, create: bool) -> bool:
        """Store the user message and an empty 'streaming' answer; False: lease lost."""
        user = turn.user

        async def write() -> bool:
            async with self._conn() as conn:
                if create:
                    await conn.execute(
                        _CREATE_AND_BEGIN, chat.id, chat.owner, config_to_json(chat.config),
                        lease.token, lease.seconds, chat.system.content, chat.system.tokens,
                        user.content, user.tokens, media_json(user),
                    )
                    return True
                done = await conn.fetchval(
                    _BEGIN, chat.id, lease.token, user.seq, user.content, user.tokens,
                    turn.erased_seqs, media_json(user),
                )
                return bool(done)

        return bool(await self._conn.twice(write))  # idempotent: ON CONFLICT DO NOTHING

    async def flush(self, progress: Sequence[Progress]) -> set[int]:
        """Replace each streaming answer's text after its `start`, in one statement; the
        indexes (in `progress`) of the answers that landed."""
        if not progress:
            return set()
        columns = (
            [p.chat_id for p in progress], [p.lease.token for p in progress],
            [p.seq for p in progress], [p.start for p in progress],
            [p.text for p in progress], [p.tokens for p in progress],
            [progress_payload(p.chat_id, p.start, p.text) for p in progress],
        )

        async def write() -> list[int]:
            async with self._conn() as conn:
                rows = await conn.fetch(_FLUSH, *columns)
            return [row["i"] for row in rows]

        return {i - 1 for i in await self._conn.twice(write)}

    async def interrupt_lapsed(self, chat_id: str | None = None, grace: float = 0.0) -> int:
        """Mark 'interrupted' the answers whose process died; returns how many."""
        async with self._conn() as conn:
            rows = await conn.fetch(_INTERRUPT_LAPSED, chat_id, grace)
        return len(rows)

    async def latest_answer(
        self, chat_id: str, owner: str, after: int, seq: int | None = None
    ) -> AnswerState:
        """The chat's latest answer (or the one at `seq`) from position `after`."""
        async with self._conn() as conn:
            row = await conn.fetchrow(_LATEST_ANSWER, chat_id, owner, after, seq)
        if row is None:
            raise ChatNotFound()
        if row["seq"] is None:
            return AnswerState(leased=row["leased"], seq=None)
        return AnswerState(
            leased=row["leased"], seq=row["seq"], completion=Completion(row["completion"]),
            length=row["length"], rest=row["rest"],
        )

    async def signal_stop(self, chat_id: str, owner: str) -> bool:
        """Ask the replica running the chat's turn to stop it; False: nothing is running."""
        async with self._conn() as conn:
            row = await conn.fetchrow(_STOP, chat_id, owner)
        if row is None:
            raise ChatNotFound()
        return bool(row["running"])

