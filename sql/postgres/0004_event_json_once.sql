-- Each event's JSON is written once, in `errors.data`. The split JSON columns
-- of 0001 (exception, tags, request, user_data, breadcrumbs) repeated parts of
-- it, which doubled the serialisation, parsing and storage cost of every
-- event and were never read. The view `error_events` still offers them to
-- SQL users.
--
-- One index on the random event id instead of two: the unique key is now
-- (event_id, project_id), which also serves lookups by event id alone. Every
-- index on a random key costs a page write per event.
--
-- Indexes follow the queries: events are listed per incident and overall by
-- time of receipt (received_at, id), looked up by event_id, and deduplicated
-- by (project_id, event_id). The index on the client's timestamp served no
-- query, and listing one project's events uses errors_received.
ALTER TABLE errors DROP CONSTRAINT errors_project_id_event_id_key;
DROP INDEX errors_event_id;
CREATE UNIQUE INDEX errors_event_id_project ON errors (event_id, project_id);

DROP INDEX errors_group_timestamp;
DROP INDEX errors_project_received;
CREATE INDEX errors_group_received ON errors (group_id, received_at DESC, id DESC);

ALTER TABLE errors
    DROP COLUMN exception,
    DROP COLUMN tags,
    DROP COLUMN request,
    DROP COLUMN user_data,
    DROP COLUMN breadcrumbs;

CREATE VIEW error_events AS
SELECT e.*,
       COALESCE(e.data -> 'exception', '[]'::jsonb) AS exception,
       COALESCE(e.data -> 'tags', '{}'::jsonb) AS tags,
       e.data -> 'request' AS request,
       e.data -> 'user' AS user_data,
       COALESCE(e.data -> 'breadcrumbs', '[]'::jsonb) AS breadcrumbs
FROM errors e;
