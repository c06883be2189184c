-- Where a project's alerts go: a webhook URL of its own, instead of the
-- collector's `--alert-webhook`. NULL: the collector's (if any). The URL
-- often holds a secret (Slack's does); the API and the dashboard never
-- show it whole.
ALTER TABLE projects ADD COLUMN alert_webhook TEXT;
