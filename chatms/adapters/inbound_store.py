"""PostgreSQL storage of inbound text-channel work: messages as a queue, senders' active chats.

Driver failures that mean "the database is away" become `Unavailable` (see `Connections`);
anything else is a bug and stays what it is.
"""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg

from chatms.adapters.pgpool import Connections
from chatms.config import DatabaseSettings
from chatms.domain.texting import RESET_COMMANDS
from chatms.service.ports import (
    Answer,
    BurstRule,
    ClaimLost,
    InboundJob,
    InboundMessage,
    Received,
)

_ACCEPT = """
INSERT INTO inbound_messages
    (channel, message_id, account, sender, recipient, body, media_count, sender_name, media)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (channel, message_id) DO NOTHING
RETURNING id
"""

# The oldest due open message whose sender has no earlier open message: a sender's messages
# are answered one at a time, in arrival order. SKIP LOCKED lets replicas claim side by side;
# the claim itself is the lease columns, so it outlives this statement's row lock.
# Bursts, by each channel's rule ($3 channels, $4 windows in seconds, $5 most messages): a
# message not yet answered is due once its sender has been quiet for the window (or it waited
# $6 windows); it is claimed with the sender's later pending messages (none past a reset
# command $7), which its answer will close.
_CLAIM = """
WITH rule AS (
    SELECT * FROM unnest($3::text[], $4::float8[], $5::integer[]) AS r(channel, win, most)
), lead AS (
    SELECT m.id, m.channel, m.sender, rule.most,
           m.status = 'pending' AND lower(btrim(m.body, E' \\t\\r\\n')) <> ALL($7::text[])
               AS groups
    FROM inbound_messages m JOIN rule ON rule.channel = m.channel
    WHERE m.status IN ('pending', 'sending')
      AND m.next_attempt_at <= now()
      AND (m.claimed_until IS NULL OR m.claimed_until < now())
      AND NOT EXISTS (
          SELECT 1 FROM inbound_messages e
          WHERE e.channel = m.channel AND e.sender = m.sender AND e.id < m.id
            AND e.status IN ('pending', 'sending'))
      AND (m.status = 'sending' OR rule.win <= 0
           OR m.received_at <= now() - make_interval(secs => rule.win * $6::float8)
           OR NOT EXISTS (
               SELECT 1 FROM inbound_messages q
               WHERE q.channel = m.channel AND q.sender = m.sender AND q.status = 'pending'
                 AND q.received_at > now() - make_interval(secs => rule.win)))
    ORDER BY m.id
    LIMIT 1
    FOR UPDATE OF m SKIP LOCKED
), burst AS (
    SELECT g.id FROM inbound_messages g, lead
    WHERE lead.groups AND g.channel = lead.channel AND g.sender = lead.sender
      AND g.id > lead.id AND g.status = 'pending'
      AND lower(btrim(g.body, E' \\t\\r\\n')) <> ALL($7::text[])
      AND NOT EXISTS (
          SELECT 1 FROM inbound_messages r
          WHERE r.channel = lead.channel AND r.sender = lead.sender AND r.status = 'pending'
            AND r.id > lead.id AND r.id < g.id
            AND lower(btrim(r.body, E' \\t\\r\\n')) = ANY($7::text[]))
    ORDER BY g.id
    LIMIT (SELECT greatest(most - 1, 0) FROM lead)
    FOR UPDATE OF g SKIP LOCKED
)
UPDATE inbound_messages w
SET claim_token = $1, claimed_until = now() + make_interval(secs => $2)
WHERE w.id IN (SELECT id FROM lead UNION ALL SELECT id FROM burst)
RETURNING w.id, w.channel, w.message_id, w.sender, w.recipient, w.body, w.media,
          w.parts, w.parts_sent, w.failures,
          extract(epoch FROM now() - w.received_at)::float8 AS age
"""

_SAVE_ANSWER = """
UPDATE inbound_messages SET status = 'sending', parts = $3, parts_sent = 0, chat_id = $4,
    answer_seq = $5
WHERE id = $1 AND claim_token = $2 AND status = 'pending'
RETURNING 1
"""

# The burst's other messages are answered by the first one's row.
_CLOSE_BURST = """
UPDATE inbound_messages SET status = 'done', answered_by = $1, finished_at = now(),
    claim_token = NULL, claimed_until = NULL
WHERE claim_token = $2 AND id <> $1 AND status = 'pending'
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
WHERE claim_token = $2 AND (id = $1 OR status = 'pending')
"""

_RESCHEDULE = """
UPDATE inbound_messages SET claim_token = NULL, claimed_until = NULL,
    next_attempt_at = now() + make_interval(secs => $3), last_error = $4,
    failures = failures + (CASE WHEN $5 THEN 1 ELSE 0 END)
WHERE claim_token = $2 AND (id = $1 OR status = 'pending')
"""


class PostgresInboundStore:
    def __init__(self, pool: asyncpg.Pool, settings: DatabaseSettings | None = None) -> None:
        self._conn = Connections(pool, settings)

    async def accept(self, message: InboundMessage) -> bool:
        media = [{"url": url, "content_type": ctype} for url, ctype in message.media]
        async with self._conn() as conn:
            new = await conn.fetchval(
                _ACCEPT, message.channel, message.message_id, message.account, message.sender,
                message.recipient, message.body, message.media_count, message.sender_name,
                media,
            )
        return new is not None

    async def record_blocked(self, message: InboundMessage) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "INSERT INTO blocked_arrivals (channel, message_id, sender) VALUES ($1, $2, $3)"
                " ON CONFLICT (channel, message_id) DO NOTHING",
                message.channel, message.message_id, message.sender,
            )

    async def claim(
        self, channels: Mapping[str, BurstRule], token: str, seconds: float
    ) -> InboundJob | None:
        names = list(channels)
        rules = [channels[name] for name in names]
        async with self._conn() as conn:
            rows = await conn.fetch(
                _CLAIM, token, seconds, names, [rule.window for rule in rules],
                [rule.max_messages if rule.enabled else 1 for rule in rules],
                max(rule.max_wait_windows for rule in rules) if rules else 1.0,
                sorted(RESET_COMMANDS),
            )
        if not rows:
            return None
        rows = sorted(rows, key=lambda r: r["id"])
        lead = rows[0]
        return InboundJob(
            id=lead["id"], channel=lead["channel"], message_id=lead["message_id"], token=token,
            sender=lead["sender"], recipient=lead["recipient"],
            messages=[Received(r["body"], tuple((m["url"], m["content_type"])
                                                for m in r["media"])) for r in rows],
            parts=list(lead["parts"]) if lead["parts"] is not None else None,
            parts_sent=lead["parts_sent"], failures=lead["failures"], age=lead["age"],
            message_ids=[r["message_id"] for r in rows],
        )

    async def renew(self, job: InboundJob, seconds: float) -> bool:
        async with self._conn() as conn:
            kept = await conn.fetchval(
                "WITH kept AS (UPDATE inbound_messages"
                " SET claimed_until = now() + make_interval(secs => $3)"
                " WHERE claim_token = $2 RETURNING id)"
                " SELECT 1 FROM kept WHERE id = $1",
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
            await conn.execute(_CLOSE_BURST, job.id, job.token)
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
