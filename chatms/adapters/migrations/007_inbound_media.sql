-- Voice notes, photos and bursts on text channels; where a user message's text came from.

-- Each inbound message's media as the channel listed it: [{"url": ..., "content_type": ...}].
-- A burst (messages of one sender in a quick row) is answered once, by its first message's
-- row; the others are closed with answered_by naming that row's arrival number.
ALTER TABLE inbound_messages
    ADD COLUMN media jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN answered_by bigint;

-- A user message that came from a voice note (the text is its transcript) or a photo (the
-- text is a placeholder with its caption): kind, content type, size, the media's id. Never
-- the media's bytes.
ALTER TABLE messages ADD COLUMN media jsonb;

CREATE OR REPLACE FUNCTION messages_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'messages are append-only';
    END IF;
    IF (NEW.chat_id, NEW.seq, NEW.role, NEW.content, NEW.tokens, NEW.completion,
        NEW.finish_reason, NEW.created_at, NEW.media)
       IS DISTINCT FROM
       (OLD.chat_id, OLD.seq, OLD.role, OLD.content, OLD.tokens, OLD.completion,
        OLD.finish_reason, OLD.created_at, OLD.media)
       OR (OLD.erased AND NOT NEW.erased) THEN
        RAISE EXCEPTION 'messages are append-only: only erased may be set';
    END IF;
    RETURN NEW;
END $$;
