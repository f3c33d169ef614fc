"""PostgreSQL statements for rolling summaries and titles, beside the chat repository.

A summary is claimed (a lease on the chat row of its own, apart from the turn's lease, so a
summary never holds up the user's next turn), made, and stored only if the claim is still
held and no other summary landed since: two replicas never summarise one chat at once, and
a slow one can never overwrite a newer summary.
"""

from __future__ import annotations

from chatms.adapters.postgres import PostgresChatRepository
from chatms.domain.context import FoldItem, Summary
from chatms.domain.model import Usage
from chatms.service.ports import Lease

_CLAIM = """
UPDATE chats SET summary_claim_id = $2,
                 summary_claim_until = now() + make_interval(secs => $3)
WHERE id = $1 AND (summary_claim_until IS NULL OR summary_claim_until < now())
RETURNING id
"""

_RELEASE = """
UPDATE chats SET summary_claim_id = NULL, summary_claim_until = NULL
WHERE id = $1 AND summary_claim_id = $2
"""

# The current summary, and the erased messages after its watermark, oldest first. A question
# whose answer never came (refused, cancelled early) is left out, as from the prompt.
_INPUT = """
SELECT s.version, s.through_seq, s.content AS summary, s.tokens AS summary_tokens, s.model,
       m.seq, m.role, m.content, m.tokens
FROM (SELECT 1) one
LEFT JOIN LATERAL (
    SELECT * FROM chat_summaries WHERE chat_id = $1 ORDER BY version DESC LIMIT 1
) s ON true
LEFT JOIN LATERAL (
    SELECT m.seq, m.role, m.content, m.tokens FROM messages m
    WHERE m.chat_id = $1 AND m.erased AND m.role <> 'system' AND m.content <> ''
      AND m.seq > COALESCE(s.through_seq, 0)
      AND NOT (m.role = 'user' AND EXISTS (
          SELECT 1 FROM messages r WHERE r.chat_id = m.chat_id AND r.seq = m.seq + 1
            AND r.content = '' AND r.completion <> 'complete'))
    ORDER BY m.seq LIMIT $2
) m ON true
ORDER BY m.seq
"""

# Lands only while our claim holds and the watermark moves forward; the primary key on
# (chat_id, version) refuses a second summary made from the same previous one.
_STORE = """
INSERT INTO chat_summaries
    (chat_id, version, through_seq, content, tokens, model, prompt_tokens, completion_tokens)
SELECT c.id, $3, $4, $5, $6, $7, $8, $9 FROM chats c
WHERE c.id = $1 AND c.summary_claim_id = $2 AND c.summary_claim_until > now()
  AND NOT EXISTS (SELECT 1 FROM chat_summaries s WHERE s.chat_id = $1 AND s.through_seq > $4)
ON CONFLICT (chat_id, version) DO NOTHING
RETURNING version
"""

_TITLE = """
UPDATE chats SET title = $2, title_generated = true
WHERE id = $1 AND NOT title_generated
RETURNING id
"""


class PostgresContextStore(PostgresChatRepository):
    """The chat repository, plus the statements of the summariser and the titler."""

    async def claim_summary(self, chat_id: str, claim: Lease) -> bool:
        async with self._conn() as conn:
            return await conn.fetchval(_CLAIM, chat_id, claim.token, claim.seconds) is not None

    async def release_summary(self, chat_id: str, claim: Lease) -> None:
        async with self._conn() as conn:
            await conn.execute(_RELEASE, chat_id, claim.token)

    async def summary_input(
        self, chat_id: str, max_items: int
    ) -> tuple[Summary | None, list[FoldItem]]:
        async with self._conn() as conn:
            rows = await conn.fetch(_INPUT, chat_id, max_items)
        head = rows[0]
        current = None
        if head["version"] is not None:
            current = Summary(head["summary"], head["through_seq"], head["summary_tokens"],
                              head["version"], head["model"])
        items = [FoldItem(r["seq"], r["role"], r["content"], r["tokens"])
                 for r in rows if r["seq"] is not None]
        return current, items

    async def store_summary(
        self, chat_id: str, claim: Lease, summary: Summary, usage: Usage
    ) -> bool:
        async with self._conn() as conn:
            stored = await conn.fetchval(
                _STORE, chat_id, claim.token, summary.version, summary.through_seq,
                summary.content, summary.tokens, summary.model, usage.prompt_tokens,
                usage.completion_tokens,
            )
        return stored is not None

    async def store_title(self, chat_id: str, title: str) -> bool:
        async with self._conn() as conn:
            return await conn.fetchval(_TITLE, chat_id, title) is not None
