-- Kestra flows the collector owes and follows.
--
-- `kestra_outbox`: each flow start the collector owes Kestra, written before
-- it is sent, deleted once Kestra has created the execution; a restart or a
-- Kestra outage loses none. `idempotency_key` is also passed to the flow as
-- an input, so a start repeated after a lost answer is recognisable.
CREATE TABLE kestra_outbox (
    id              INTEGER PRIMARY KEY,
    flow_id         TEXT NOT NULL,
    group_id        INTEGER REFERENCES error_groups (id) ON DELETE CASCADE,
    -- JSON array of {"name", "json"} or {"name", "text"}: the flow's inputs.
    inputs          TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_error      TEXT,
    created_at      TEXT NOT NULL
);

CREATE INDEX kestra_outbox_due ON kestra_outbox (next_attempt_at);
-- Deleting an incident deletes its owed starts without a scan.
CREATE INDEX kestra_outbox_group ON kestra_outbox (group_id);

-- How each started execution ended (polled from Kestra's API).
ALTER TABLE kestra_executions ADD COLUMN idempotency_key TEXT;
ALTER TABLE kestra_executions ADD COLUMN finished_at TEXT;
ALTER TABLE kestra_executions ADD COLUMN failed_task TEXT;
ALTER TABLE kestra_executions ADD COLUMN error TEXT;

CREATE INDEX kestra_executions_running ON kestra_executions (id) WHERE finished_at IS NULL;

-- The idempotency keys of results the flows stored: a second result with
-- the same key is answered with the first one and not stored.
CREATE TABLE triage_idempotency_keys (
    idempotency_key TEXT PRIMARY KEY,
    triage_id       INTEGER REFERENCES triage_results (id) ON DELETE CASCADE,
    created_at      TEXT NOT NULL
);

CREATE INDEX triage_idempotency_keys_triage ON triage_idempotency_keys (triage_id);
