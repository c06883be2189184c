-- `errors.data` is stored as `text` instead of `json`. Postgres parses a
-- `json` value on input only to validate it, and the collector writes
-- every document itself with serde_json and reads it back whole, so that
-- parse bought nothing: for a 3 KB Sentry event it was about a tenth of the
-- server's work per insert (Sentry envelopes stored +10 % in alternating
-- runs, BENCHMARKS.md, 2026-11-29). The view `error_events` parses the
-- document (`::json`) for its columns, as before; cast `data` likewise to
-- query inside it.
--
-- Changing the type rewrites the events table: on a large database it
-- takes a while, and the column's compression is reset, so lz4 (0007) is
-- set again.
DROP VIEW error_events;

ALTER TABLE errors ALTER COLUMN data TYPE text;

DO $$
BEGIN
    EXECUTE 'ALTER TABLE errors ALTER COLUMN data SET COMPRESSION lz4';
EXCEPTION
    WHEN feature_not_supported OR syntax_error THEN
        RAISE NOTICE 'errors.data keeps the default compression: %', SQLERRM;
END
$$;

CREATE VIEW error_events AS
SELECT e.*,
       COALESCE(e.data::json -> 'exception', '[]'::json) AS exception,
       COALESCE(e.data::json -> 'tags', '{}'::json) AS tags,
       e.data::json -> 'request' AS request,
       e.data::json -> 'user' AS user_data,
       COALESCE(e.data::json -> 'breadcrumbs', '[]'::json) AS breadcrumbs
FROM errors e;
