-- AI triage. Every result is kept in `triage_results` (the incident's
-- history); the incident carries the latest in its seed columns (severity,
-- priority, ai_summary, ai_next_steps) plus when it was triaged and the
-- trend the analyst saw, for the stale and "needs attention" queries.
-- Timestamps are TEXT in the store's fixed, sortable format.
ALTER TABLE error_groups ADD COLUMN triaged_at TEXT;
ALTER TABLE error_groups ADD COLUMN triage_trend TEXT;

CREATE INDEX error_groups_status_triaged_at ON error_groups (status, triaged_at);

CREATE TABLE triage_results (
    id              INTEGER PRIMARY KEY,
    group_id        INTEGER NOT NULL REFERENCES error_groups (id) ON DELETE CASCADE,
    summary         TEXT NOT NULL,
    severity        TEXT NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    priority        INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 100),
    probable_cause  TEXT NOT NULL,
    next_steps      TEXT NOT NULL,
    confidence      REAL NOT NULL CHECK (confidence BETWEEN 0 AND 1),
    analyst         TEXT NOT NULL,
    model           TEXT NOT NULL,
    prompt_version  TEXT NOT NULL,
    fallback_reason TEXT,
    triggered_by    TEXT NOT NULL,
    trend           TEXT,
    created_at      TEXT NOT NULL
);

CREATE INDEX triage_results_group ON triage_results (group_id, id DESC);

-- Kestra executions the collector started, by incident.
CREATE TABLE kestra_executions (
    id           INTEGER PRIMARY KEY,
    flow_id      TEXT NOT NULL,
    group_id     INTEGER REFERENCES error_groups (id) ON DELETE CASCADE,
    execution_id TEXT NOT NULL,
    state        TEXT,
    created_at   TEXT NOT NULL
);

CREATE INDEX kestra_executions_group ON kestra_executions (group_id, id DESC);
