-- The events' time indexes ascend instead of descending. New events carry
-- the latest times, so in a descending index each one was inserted at the
-- left end, where Postgres's B-tree has neither its fast path for inserts
-- at the right end nor its split that leaves full pages behind an
-- ascending sequence: every split left two half-empty pages. Ascending,
-- the index over all events is half the size and inserts are about 10 %
-- cheaper (200,000 events in 500-row statements, 2026-11-28). Listings
-- newest first read the same indexes backwards.
--
-- On a large database, rebuilding the two indexes takes a while.
DROP INDEX errors_received;
CREATE INDEX errors_received ON errors (received_at, id);

DROP INDEX errors_group_received;
CREATE INDEX errors_group_received ON errors (group_id, received_at, id);
