-- Dashboard users and their sessions. Passwords are argon2id PHC strings;
-- a session is found by the SHA-256 of its cookie value, never the value.
-- Timestamps are TEXT in the fixed format of 0001 (text order is time order).

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);

CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expires ON sessions (expires_at);

-- The dashboard's events page lists the newest events of all projects
-- (`list_events` without a project orders by received_at, id); without this
-- index it sorts the whole table.
CREATE INDEX errors_received ON errors (received_at DESC, id DESC);
