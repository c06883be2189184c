-- Initial errorflow schema for SQLite; the same logical schema as
-- sql/postgres. Timestamps are TEXT in the fixed format
-- `YYYY-MM-DDTHH:MM:SS.ffffffZ` so that text order is time order, JSON is
-- TEXT, UUIDs are hyphenated TEXT.

CREATE TABLE projects (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    key_hash    TEXT NOT NULL UNIQUE,
    key_prefix  TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL,
    last_used_at TEXT
);

-- Incidents. `cluster_key` (the seed's `service:error_type`) is no longer the
-- identity of a group, only a facet: the identity is (project_id, fingerprint).
CREATE TABLE error_groups (
    id                  INTEGER PRIMARY KEY,
    project_id          INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    fingerprint         TEXT NOT NULL,
    fingerprint_version INTEGER NOT NULL,
    cluster_key         TEXT NOT NULL,
    service             TEXT NOT NULL,
    error_type          TEXT NOT NULL,
    title               TEXT NOT NULL,
    summary             TEXT,
    culprit             TEXT,
    level               TEXT NOT NULL DEFAULT 'error',
    status              TEXT NOT NULL DEFAULT 'OPEN' CHECK (status IN ('OPEN', 'QUIET', 'RESOLVED')),
    count               INTEGER NOT NULL DEFAULT 0,
    first_seen          TEXT NOT NULL,
    last_seen           TEXT NOT NULL,
    severity            TEXT NOT NULL DEFAULT 'unknown',
    priority            INTEGER,
    ai_summary          TEXT,
    ai_next_steps       TEXT,
    resolution_reason   TEXT,
    resolved_at         TEXT,
    resolved_in_release TEXT,
    regression_count    INTEGER NOT NULL DEFAULT 0,
    regressed_at        TEXT,
    last_release        TEXT,
    last_environment    TEXT,
    UNIQUE (project_id, fingerprint)
);

CREATE INDEX error_groups_status_last_seen ON error_groups (status, last_seen DESC, id DESC);
CREATE INDEX error_groups_project_last_seen ON error_groups (project_id, last_seen DESC, id DESC);
CREATE INDEX error_groups_last_seen ON error_groups (last_seen DESC, id DESC);
CREATE INDEX error_groups_first_seen ON error_groups (first_seen DESC, id DESC);
CREATE INDEX error_groups_count ON error_groups (count DESC, id DESC);
-- The priority sort puts untriaged (NULL) groups last; the store sorts on
-- this exact expression so that the index can serve it.
CREATE INDEX error_groups_priority ON error_groups (COALESCE(priority, -1) DESC, id DESC);
CREATE INDEX error_groups_cluster_key ON error_groups (cluster_key, last_seen DESC);

-- Raw events.
CREATE TABLE errors (
    id          INTEGER PRIMARY KEY,
    project_id  INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    group_id    INTEGER NOT NULL REFERENCES error_groups (id) ON DELETE CASCADE,
    event_id    TEXT NOT NULL,
    service     TEXT NOT NULL,
    error_type  TEXT NOT NULL,
    message     TEXT NOT NULL,
    timestamp   TEXT NOT NULL,
    received_at TEXT NOT NULL,
    env         TEXT NOT NULL,
    path        TEXT NOT NULL DEFAULT '',
    trace_id    TEXT NOT NULL,
    level       TEXT NOT NULL,
    release     TEXT,
    host        TEXT,
    fingerprint TEXT NOT NULL,
    exception   TEXT NOT NULL DEFAULT '[]',
    tags        TEXT NOT NULL DEFAULT '{}',
    request     TEXT,
    user_data   TEXT,
    breadcrumbs TEXT NOT NULL DEFAULT '[]',
    data        TEXT NOT NULL,
    UNIQUE (project_id, event_id)
);

CREATE INDEX errors_group_timestamp ON errors (group_id, timestamp DESC, id DESC);
CREATE INDEX errors_project_received ON errors (project_id, received_at DESC, id DESC);
CREATE INDEX errors_event_id ON errors (event_id);

-- Counts per incident and hour, upserted at ingest; daily counts are sums.
CREATE TABLE group_hourly_counts (
    group_id INTEGER NOT NULL REFERENCES error_groups (id) ON DELETE CASCADE,
    hour     TEXT NOT NULL,
    count    INTEGER NOT NULL,
    PRIMARY KEY (group_id, hour)
) WITHOUT ROWID;

-- Counts per incident and tag value, upserted at ingest.
CREATE TABLE group_tag_counts (
    group_id  INTEGER NOT NULL REFERENCES error_groups (id) ON DELETE CASCADE,
    key       TEXT NOT NULL,
    value     TEXT NOT NULL,
    count     INTEGER NOT NULL,
    last_seen TEXT NOT NULL,
    PRIMARY KEY (group_id, key, value)
) WITHOUT ROWID;

-- The environment and release filters of the incident list look groups up by tag value.
CREATE INDEX group_tag_counts_key_value ON group_tag_counts (key, value, group_id);

CREATE TABLE group_activity (
    id          INTEGER PRIMARY KEY,
    group_id    INTEGER NOT NULL REFERENCES error_groups (id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,
    actor       TEXT NOT NULL,
    from_status TEXT,
    to_status   TEXT,
    reason      TEXT,
    at          TEXT NOT NULL
);

CREATE INDEX group_activity_group ON group_activity (group_id, id);
