-- Context that does not forget: rolling summaries of the messages that left a chat's window,
-- titles written by the model, and a claim so that one chat is summarised by one replica.

-- Every summary ever made is kept (append-only); a chat's current one has the highest
-- version. The primary key makes storing a summary a conditional write: two writers that
-- started from the same version cannot both land.
CREATE TABLE chat_summaries (
    chat_id           uuid NOT NULL REFERENCES chats (id),
    version           integer NOT NULL CHECK (version > 0),
    through_seq       integer NOT NULL CHECK (through_seq > 0),   -- the watermark
    content           text NOT NULL,
    tokens            integer NOT NULL CHECK (tokens >= 0),     -- as sent upstream, framing included
    model             text NOT NULL,
    prompt_tokens     integer NOT NULL DEFAULT 0,
    completion_tokens integer NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chat_id, version)
);

CREATE FUNCTION chat_summaries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'chat summaries are append-only';
END $$;

CREATE TRIGGER chat_summaries_append_only BEFORE UPDATE OR DELETE ON chat_summaries
    FOR EACH ROW EXECUTE FUNCTION chat_summaries_append_only();

-- Existing chats keep their title (the first message's beginning) and their messages; they
-- get a summary at their next eviction.
ALTER TABLE chats
    ADD COLUMN title_generated     boolean NOT NULL DEFAULT false,
    ADD COLUMN summary_claim_id    uuid,
    ADD COLUMN summary_claim_until timestamptz;
