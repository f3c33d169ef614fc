-- A WhatsApp answer points at the chat message it delivers, so that a chat's history shows
-- whether each answer reached the user (and which ones never did).
ALTER TABLE whatsapp_inbound ADD COLUMN chat_id uuid, ADD COLUMN answer_seq integer;

CREATE INDEX whatsapp_inbound_by_answer ON whatsapp_inbound (chat_id, answer_seq)
    WHERE chat_id IS NOT NULL;
