-- Answers written while they stream (resumable streams, and nothing lost on kill -9).
--
-- Once a turn's budget check has passed, its user message and an assistant message with
-- completion 'streaming' are stored; the turn then flushes the answer so far into that one
-- row at most once per STREAM_FLUSH_MS, and its last statement gives the row its final
-- completion. Only a 'streaming' assistant row may change (content, tokens, completion,
-- finish_reason, erased); every final message stays append-only. A 'streaming' row whose
-- chat lease has lapsed belongs to a process that died: it is marked 'interrupted'.
CREATE OR REPLACE FUNCTION messages_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'messages are append-only';
    END IF;
    IF OLD.completion = 'streaming' AND OLD.role = 'assistant' THEN
        IF (NEW.chat_id, NEW.seq, NEW.role, NEW.created_at, NEW.media)
           IS DISTINCT FROM (OLD.chat_id, OLD.seq, OLD.role, OLD.created_at, OLD.media) THEN
            RAISE EXCEPTION 'an answer being written may only grow and end';
        END IF;
        RETURN NEW;
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

-- Answers being written, for the sweep that marks those of dead processes interrupted.
CREATE INDEX messages_streaming ON messages (chat_id, seq) WHERE completion = 'streaming';
