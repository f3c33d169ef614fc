-- WhatsApp through Twilio: each sender's active chat, and every inbound message as durable work.

-- One row per WhatsApp sender (the `From` address, e.g. whatsapp:+5511999990000).
CREATE TABLE whatsapp_senders (
    sender      text PRIMARY KEY,
    chat_id     uuid,            -- the chat later messages continue; NULL: the next one starts a chat
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per accepted inbound message. The primary key on message_sid is what makes a
-- redelivery (Twilio retries) a no-op; the row is the queue entry until it is answered.
CREATE TABLE whatsapp_inbound (
    id              bigint GENERATED ALWAYS AS IDENTITY UNIQUE,   -- arrival order
    message_sid     text PRIMARY KEY,
    account_sid     text NOT NULL,
    sender          text NOT NULL,          -- inbound From: the user, and the outbound To
    recipient       text NOT NULL,          -- inbound To: our number, and the outbound From
    body            text NOT NULL,
    num_media       integer NOT NULL DEFAULT 0,
    profile_name    text,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sending', 'done', 'failed')),
    parts           text[],                 -- the answer, split; set when status becomes 'sending'
    parts_sent      integer NOT NULL DEFAULT 0,
    failures        integer NOT NULL DEFAULT 0,
    last_error      text,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    claim_token     uuid,
    claimed_until   timestamptz,
    received_at     timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);

-- The worker looks for the oldest open message, and for earlier open ones of the same sender.
CREATE INDEX whatsapp_inbound_open ON whatsapp_inbound (id) WHERE status IN ('pending', 'sending');
CREATE INDEX whatsapp_inbound_open_by_sender ON whatsapp_inbound (sender, id)
    WHERE status IN ('pending', 'sending');

-- Every part sent through Twilio's Messages API, with the SID Twilio gave it.
CREATE TABLE whatsapp_outbound (
    message_sid text NOT NULL REFERENCES whatsapp_inbound (message_sid),
    part        integer NOT NULL,
    twilio_sid  text NOT NULL,
    sent_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_sid, part)
);
