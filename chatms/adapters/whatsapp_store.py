"""PostgreSQL storage of WhatsApp work: inbound messages as a queue, senders' active chats."""

from __future__ import annotations

import asyncpg

from chatms.adapters.postgres import pooled
from chatms.config import DatabaseSettings
from chatms.service.whatsapp import Answer, ClaimLost, Inbound, Job

_ACCEPT = """
INSERT INTO whatsapp_inbound
    (message_sid, account_sid, sender, recipient, body, num_media, profile_name)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (message_sid) DO NOTHING
RETURNING id
"""

# The oldest due open message whose sender has no earlier open message: a sender's messages
# are answered one at a time, in arrival order. SKIP LOCKED lets replicas claim side by side;
# the claim itself is the lease columns, so it outlives this statement's row lock.
_CLAIM = """
WITH next AS (
    SELECT m.message_sid FROM whatsapp_inbound m
    WHERE m.status IN ('pending', 'sending')
      AND m.next_attempt_at <= now()
      AND (m.claimed_until IS NULL OR m.claimed_until < now())
      AND NOT EXISTS (
          SELECT 1 FROM whatsapp_inbound e
          WHERE e.sender = m.sender AND e.id < m.id AND e.status IN ('pending', 'sending'))
    ORDER BY m.id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
UPDATE whatsapp_inbound w
SET claim_token = $1, claimed_until = now() + make_interval(secs => $2)
FROM next WHERE w.message_sid = next.message_sid
RETURNING w.message_sid, w.sender, w.recipient, w.body, w.num_media, w.parts, w.parts_sent,
          w.failures, extract(epoch FROM now() - w.received_at)::float8 AS age
"""

_SAVE_ANSWER = """
UPDATE whatsapp_inbound SET status = 'sending', parts = $3, parts_sent = 0, chat_id = $4,
    answer_seq = $5
WHERE message_sid = $1 AND claim_token = $2 AND status = 'pending'
RETURNING 1
"""

_SET_CHAT = """
INSERT INTO whatsapp_senders (sender, chat_id) VALUES ($1, $2)
ON CONFLICT (sender) DO UPDATE SET chat_id = EXCLUDED.chat_id, updated_at = now()
"""

_PART_SENT = """
WITH job AS (
    UPDATE whatsapp_inbound SET parts_sent = $3 + 1
    WHERE message_sid = $1 AND claim_token = $2 AND parts_sent = $3
    RETURNING message_sid
)
INSERT INTO whatsapp_outbound (message_sid, part, twilio_sid)
SELECT message_sid, $3, $4 FROM job
RETURNING 1
"""


class PostgresWhatsAppStore:
    def __init__(self, pool: asyncpg.Pool, settings: DatabaseSettings | None = None) -> None:
        self.acquire_timeout = (settings or DatabaseSettings()).acquire_timeout
        self.pool = pool

    async def accept(self, message: Inbound) -> bool:
        async with pooled(self.pool, self.acquire_timeout) as conn:
            new = await conn.fetchval(
                _ACCEPT, message.message_sid, message.account_sid, message.sender,
                message.recipient, message.body, message.num_media, message.profile_name,
            )
        return new is not None

    async def claim(self, token: str, seconds: float) -> Job | None:
        async with pooled(self.pool, self.acquire_timeout) as conn:
            row = await conn.fetchrow(_CLAIM, token, seconds)
        if row is None:
            return None
        return Job(
            message_sid=row["message_sid"], token=token, sender=row["sender"],
            recipient=row["recipient"], body=row["body"], num_media=row["num_media"],
            parts=list(row["parts"]) if row["parts"] is not None else None,
            parts_sent=row["parts_sent"], failures=row["failures"], age=row["age"],
        )

    async def renew(self, message_sid: str, token: str, seconds: float) -> bool:
        async with pooled(self.pool, self.acquire_timeout) as conn:
            kept = await conn.fetchval(
                "UPDATE whatsapp_inbound SET claimed_until = now() + make_interval(secs => $3)"
                " WHERE message_sid = $1 AND claim_token = $2 RETURNING 1",
                message_sid, token, seconds,
            )
        return kept is not None

    async def active_chat(self, sender: str) -> str | None:
        async with pooled(self.pool, self.acquire_timeout) as conn:
            chat_id = await conn.fetchval(
                "SELECT chat_id FROM whatsapp_senders WHERE sender = $1", sender
            )
        return str(chat_id) if chat_id is not None else None

    async def save_answer(self, job: Job, parts: list[str], answer: Answer) -> None:
        delivers = answer.chat_id if answer.seq is not None else None
        async with pooled(self.pool, self.acquire_timeout) as conn, conn.transaction():
            saved = await conn.fetchval(
                _SAVE_ANSWER, job.message_sid, job.token, parts, delivers, answer.seq
            )
            if saved is None:
                raise ClaimLost()
            if answer.set_chat:
                await conn.execute(_SET_CHAT, job.sender, answer.chat_id)

    async def part_sent(self, job: Job, index: int, provider_sid: str) -> None:
        async with pooled(self.pool, self.acquire_timeout) as conn:
            done = await conn.fetchval(_PART_SENT, job.message_sid, job.token, index, provider_sid)
        if done is None:
            raise ClaimLost()

    async def finish(self, job: Job) -> None:
        await self._close(job, "done", None)

    async def fail(self, job: Job, error: str) -> None:
        await self._close(job, "failed", error)

    async def _close(self, job: Job, status: str, error: str | None) -> None:
        async with pooled(self.pool, self.acquire_timeout) as conn:
            await conn.execute(
                "UPDATE whatsapp_inbound SET status = $3, last_error = COALESCE($4, last_error),"
                " failures = failures + (CASE WHEN $3 = 'failed' THEN 1 ELSE 0 END),"
                " finished_at = now(), claim_token = NULL, claimed_until = NULL"
                " WHERE message_sid = $1 AND claim_token = $2",
                job.message_sid, job.token, status, error,
            )

    async def reschedule(self, job: Job, delay: float, error: str, failure: bool) -> None:
        async with pooled(self.pool, self.acquire_timeout) as conn:
            await conn.execute(
                "UPDATE whatsapp_inbound SET claim_token = NULL, claimed_until = NULL,"
                " next_attempt_at = now() + make_interval(secs => $3), last_error = $4,"
                " failures = failures + (CASE WHEN $5 THEN 1 ELSE 0 END)"
                " WHERE message_sid = $1 AND claim_token = $2",
                job.message_sid, job.token, delay, error[:500], failure,
            )
