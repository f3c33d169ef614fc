"""PostgreSQL storage of inbound text-channel work: messages as a queue, senders' active chats.

Driver failures that mean "the database is away" become `Unavailable` (see `Connections`);
anything else is a bug and stays what it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from chatms.adapters.pgpool import Connections
from chatms.config import DatabaseSettings
from chatms.service.ports import Answer, ClaimLost, InboundJob, InboundMessage

_ACCEPT = """
INSERT INTO inbound_messages
    (channel, message_id, account, sender, recipient, body, media_count, sender_name)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (channel, message_id) DO NOTHING
RETURNING id
"""

# The oldest due open message whose sender has no earlier open message: a sender's messages
# are answered one at a time, in arrival order. SKIP LOCKED lets replicas claim side by side;
# the claim itself is the lease columns, so it outlives this statement's row lock.
_CLAIM = """
WITH next AS (
    SELECT m.id FROM inbound_messages m
    WHERE m.channel = ANY($3::text[])
      AND m.status IN ('pending', 'sending')
      AND m.next_attempt_at <= now()
      AND (m.claimed_until IS NULL OR m.claimed_until < now())
      AND NOT EXISTS (
          SELECT 1 FROM inbound_messages e
          WHERE e.channel = m.channel AND e.sender = m.sender AND e.id < m.id
            AND e.status IN ('pending', 'sending'))
    ORDER BY m.id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
UPDATE inbound_messages w
SET claim_token = $1, claimed_until = now() + make_interval(secs => $2)
FROM next WHERE w.id = next.id
RETURNING w.id, w.channel, w.message_id, w.sender, w.recipient, w.body, w.media_count,
          w.parts, w.parts_sent, w.failures,
          extract(epoch FROM now() - w.received_at)::float8 AS age
"""

_SAVE_ANSWER = """
UPDATE inbound_messages SET status = 'sending', parts = $3, parts_sent = 0, chat_id = $4,
    answer_seq = $5
WHERE id = $1 AND claim_token = $2 AND status = 'pending'
RETURNING 1
"""

_SET_CHAT = """
INSERT INTO channel_senders (channel, sender, chat_id) VALUES ($1, $2, $3)
ON CONFLICT (channel, sender) DO UPDATE SET chat_id = EXCLUDED.chat_id, updated_at = now()
"""

_PART_SENT = """
WITH job AS (
    UPDATE inbound_messages SET parts_sent = $3 + 1
    WHERE id = $1 AND claim_token = $2 AND parts_sent = $3
    RETURNING id
)
INSERT INTO outbound_parts (inbound_id, part, provider_id)
SELECT id, $3, $4 FROM job
RETURNING 1
"""

_CLOSE = """
UPDATE inbound_messages SET status = $3, last_error = COALESCE($4, last_error),
    failures = failures + (CASE WHEN $3 = 'failed' THEN 1 ELSE 0 END),
    finished_at = now(), claim_token = NULL, claimed_until = NULL
WHERE id = $1 AND claim_token = $2
"""

_RESCHEDULE = """
UPDATE inbound_messages SET claim_token = NULL, claimed_until = NULL,
    next_attempt_at = now() + make_interval(secs => $3), last_error = $4,
    failures = failures + (CASE WHEN $5 THEN 1 ELSE 0 END)
WHERE id = $1 AND claim_token = $2
"""


class PostgresInboundStore:
    def __init__(self, pool: asyncpg.Pool, settings: DatabaseSettings | None = None) -> None:
        self._conn = Connections(pool, settings)

    async def accept(self, message: InboundMessage) -> bool:
        async with self._conn() as conn:
            new = await conn.fetchval(
                _ACCEPT, message.channel, message.message_id, message.account, message.sender,
                message.recipient, message.body, message.media_count, message.sender_name,
            )
        return new is not None

    async def claim(self, channels: Sequence[str], token: str, seconds: float) -> InboundJob | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(_CLAIM, token, seconds, list(channels))
        if row is None:
            return None
        return InboundJob(
            id=row["id"], channel=row["channel"], message_id=row["message_id"], token=token,
            sender=row["sender"], recipient=row["recipient"], body=row["body"],
            media_count=row["media_count"],
            parts=list(row["parts"]) if row["parts"] is not None else None,
            parts_sent=row["parts_sent"], failures=row["failures"], age=row["age"],
        )

    async def renew(self, job: InboundJob, seconds: float) -> bool:
        async with self._conn() as conn:
            kept = await conn.fetchval(
                "UPDATE inbound_messages SET claimed_until = now() + make_interval(secs => $3)"
                " WHERE id = $1 AND claim_token = $2 RETURNING 1",
                job.id, job.token, seconds,
            )
        return kept is not None

    async def active_chat(self, channel: str, sender: str) -> str | None:
        async with self._conn() as conn:
            chat_id = await conn.fetchval(
                "SELECT chat_id FROM channel_senders WHERE channel = $1 AND sender = $2",
                channel, sender,
            )
        return str(chat_id) if chat_id is not None else None

    async def save_answer(self, job: InboundJob, parts: list[str], answer: Answer) -> None:
        delivers = answer.chat_id if answer.seq is not None else None
        async with self._conn() as conn, conn.transaction():
            saved = await conn.fetchval(
                _SAVE_ANSWER, job.id, job.token, parts, delivers, answer.seq
            )
            if saved is None:
                raise ClaimLost()
            if answer.set_chat:
                await conn.execute(_SET_CHAT, job.channel, job.sender, answer.chat_id)

    async def part_sent(self, job: InboundJob, index: int, provider_id: str) -> None:
        async with self._conn() as conn:
            done = await conn.fetchval(_PART_SENT, job.id, job.token, index, provider_id)
        if done is None:
            raise ClaimLost()

    async def finish(self, job: InboundJob) -> None:
        async with self._conn() as conn:
            await conn.execute(_CLOSE, job.id, job.token, "done", None)

    async def fail(self, job: InboundJob, error: str) -> None:
        async with self._conn() as conn:
            await conn.execute(_CLOSE, job.id, job.token, "failed", error)

    async def reschedule(self, job: InboundJob, delay: float, error: str, failure: bool) -> None:
        async with self._conn() as conn:
            await conn.execute(_RESCHEDULE, job.id, job.token, delay, error[:500], failure)
