-- The WhatsApp queue becomes a queue of any text channel: the tables are renamed and gain a
-- `channel` column; every existing row is kept and belongs to the channel 'whatsapp'.

ALTER TABLE whatsapp_inbound RENAME TO inbound_messages;
ALTER TABLE inbound_messages ADD COLUMN channel text NOT NULL DEFAULT 'whatsapp';
ALTER TABLE inbound_messages ALTER COLUMN channel DROP DEFAULT;
ALTER TABLE inbound_messages RENAME COLUMN message_sid TO message_id;   -- the channel's own id
ALTER TABLE inbound_messages RENAME COLUMN account_sid TO account;      -- ours, at the provider
ALTER TABLE inbound_messages RENAME COLUMN num_media TO media_count;
ALTER TABLE inbound_messages RENAME COLUMN profile_name TO sender_name;

-- Sent parts hang on the message's arrival number instead of its (per-channel) id.
ALTER TABLE whatsapp_outbound RENAME TO outbound_parts;
ALTER TABLE outbound_parts ADD COLUMN inbound_id bigint;
UPDATE outbound_parts o SET inbound_id = m.id
FROM inbound_messages m WHERE m.message_id = o.message_sid;
ALTER TABLE outbound_parts ALTER COLUMN inbound_id SET NOT NULL;
ALTER TABLE outbound_parts DROP CONSTRAINT whatsapp_outbound_pkey;
ALTER TABLE outbound_parts DROP CONSTRAINT whatsapp_outbound_message_sid_fkey;
ALTER TABLE outbound_parts DROP COLUMN message_sid;
ALTER TABLE outbound_parts RENAME COLUMN twilio_sid TO provider_id;
ALTER TABLE outbound_parts ADD PRIMARY KEY (inbound_id, part);
ALTER TABLE outbound_parts ADD FOREIGN KEY (inbound_id) REFERENCES inbound_messages (id);

-- A redelivery is the same channel and id; two channels may reuse each other's ids.
ALTER TABLE inbound_messages DROP CONSTRAINT whatsapp_inbound_pkey;
ALTER TABLE inbound_messages ADD PRIMARY KEY (channel, message_id);

ALTER INDEX whatsapp_inbound_by_answer RENAME TO inbound_messages_by_answer;
DROP INDEX whatsapp_inbound_open;
DROP INDEX whatsapp_inbound_open_by_sender;
CREATE INDEX inbound_messages_open ON inbound_messages (id)
    WHERE status IN ('pending', 'sending');
CREATE INDEX inbound_messages_open_by_sender ON inbound_messages (channel, sender, id)
    WHERE status IN ('pending', 'sending');

-- Each sender's active chat, per channel.
ALTER TABLE whatsapp_senders RENAME TO channel_senders;
ALTER TABLE channel_senders ADD COLUMN channel text NOT NULL DEFAULT 'whatsapp';
ALTER TABLE channel_senders ALTER COLUMN channel DROP DEFAULT;
ALTER TABLE channel_senders DROP CONSTRAINT whatsapp_senders_pkey;
ALTER TABLE channel_senders ADD PRIMARY KEY (channel, sender);
