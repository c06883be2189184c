-- GitHub: a project's repository, and the issue opened for an incident.
-- The token and the webhook secret are needed in clear to call GitHub and
-- to check webhook signatures; the API and the dashboard never show them.
CREATE TABLE github_links (
    project_id     INTEGER PRIMARY KEY REFERENCES projects (id) ON DELETE CASCADE,
    repo           TEXT NOT NULL,
    api_url        TEXT NOT NULL,
    token          TEXT NOT NULL,
    webhook_secret TEXT,
    updated_at     TEXT NOT NULL
);

-- Webhooks find their projects by the repository's full name.
CREATE INDEX github_links_repo ON github_links (lower(repo));

-- One issue per incident: the primary key is what keeps a second request
-- from opening a second issue. `number` and `url` are NULL while the issue
-- is being created (the row is the creator's claim; it is deleted when
-- GitHub refuses, so nothing half-made stays).
CREATE TABLE github_issues (
    group_id   INTEGER PRIMARY KEY REFERENCES error_groups (id) ON DELETE CASCADE,
    repo       TEXT NOT NULL,
    number     INTEGER,
    url        TEXT,
    created_at TEXT NOT NULL
);

CREATE INDEX github_issues_repo_number ON github_issues (lower(repo), number);
