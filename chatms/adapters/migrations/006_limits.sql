-- Per-user limits (shared by every replica) and the arrivals of blocked senders.

-- One row per user: this minute's message count and today's (UTC) tokens. A new minute or
-- day starts the count again in the same statement, so the table never grows per window.
CREATE TABLE user_usage (
    user_id   text PRIMARY KEY,
    minute    timestamptz NOT NULL,
    messages  integer NOT NULL DEFAULT 0,
    day       date NOT NULL,
    tokens    bigint NOT NULL DEFAULT 0
);

-- When a user was last told they are over a limit: one notice per window, not per message.
CREATE TABLE limit_notices (
    user_id     text NOT NULL,
    limit_name  text NOT NULL,
    until       timestamptz NOT NULL,
    PRIMARY KEY (user_id, limit_name)
);

-- A blocked sender's messages: only that they arrived, never their content.
CREATE TABLE blocked_arrivals (
    channel      text NOT NULL,
    message_id   text NOT NULL,
    sender       text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, message_id)
);
