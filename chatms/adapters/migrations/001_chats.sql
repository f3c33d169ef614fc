-- Chats and their append-only messages.
CREATE TABLE chats (
    id                uuid PRIMARY KEY,
    owner_id          text NOT NULL,
    status            text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'ended')),
    config            jsonb NOT NULL,
    title             text,
    next_seq          integer NOT NULL DEFAULT 1,
    message_count     integer NOT NULL DEFAULT 0,
    prompt_tokens     bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    lease_id          uuid,
    lease_until       timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX chats_by_owner ON chats (owner_id, updated_at DESC, id DESC);

CREATE TABLE messages (
    chat_id       uuid NOT NULL REFERENCES chats (id),
    seq           integer NOT NULL,
    role          text NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content       text NOT NULL,
    tokens        integer NOT NULL,
    erased        boolean NOT NULL DEFAULT false,
    completion    text NOT NULL DEFAULT 'complete',
    finish_reason text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chat_id, seq)
);

-- The live window is what a turn loads; erased history stays out of its way.
CREATE INDEX messages_live ON messages (chat_id, seq) WHERE NOT erased;

-- Messages are append-only: only the erased flag may ever change, and only to true.
CREATE FUNCTION messages_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'messages are append-only';
    END IF;
    IF (NEW.chat_id, NEW.seq, NEW.role, NEW.content, NEW.tokens, NEW.completion,
        NEW.finish_reason, NEW.created_at)
       IS DISTINCT FROM
       (OLD.chat_id, OLD.seq, OLD.role, OLD.content, OLD.tokens, OLD.completion,
        OLD.finish_reason, OLD.created_at)
       OR (OLD.erased AND NOT NEW.erased) THEN
        RAISE EXCEPTION 'messages are append-only: only erased may be set';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER messages_append_only BEFORE UPDATE OR DELETE ON messages
    FOR EACH ROW EXECUTE FUNCTION messages_append_only();
