-- When each project first saw each release. An incident resolved "in the
-- next release" is regressed only by a newer release; releases that are not
-- semantic versions of one package are ordered by this first sighting.
-- Ingest adds a row for every release of a batch (the first sighting wins).
CREATE TABLE releases (
    project_id BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    version    TEXT NOT NULL,
    first_seen TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (project_id, version)
);

-- The releases of the events stored so far.
INSERT INTO releases (project_id, version, first_seen)
SELECT project_id, release, MIN(received_at)
FROM errors
WHERE release IS NOT NULL
GROUP BY project_id, release;
