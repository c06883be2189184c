-- Incident intelligence.
-- * Every triage result keeps the signals that set its priority (a JSON
--   array of {kind, label, points}), shown as its explanation.
-- * A person may set an incident's priority and severity by hand; the
--   override wins over every later triage until it is cleared.
-- * The incident remembers its count and how many environments and
--   releases it had at its last triage, so that a changed picture (ten
--   times the events, a new release, a new environment) triggers a new one.
ALTER TABLE triage_results ADD COLUMN signals JSONB NOT NULL DEFAULT '[]';

ALTER TABLE error_groups ADD COLUMN priority_override INTEGER
    CHECK (priority_override BETWEEN 0 AND 100);
ALTER TABLE error_groups ADD COLUMN severity_override TEXT
    CHECK (severity_override IN ('low', 'medium', 'high', 'critical'));
ALTER TABLE error_groups ADD COLUMN triaged_count BIGINT;
ALTER TABLE error_groups ADD COLUMN triaged_tag_values BIGINT;
