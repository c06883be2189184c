-- The events' time indexes ascend instead of descending. New events carry
-- the latest times, so in a descending index each one was inserted at the
-- left end of the B-tree, where SQLite cannot use its cheap split for
-- appends at the right end. Ascending, the database is about 8 % smaller
-- (200,000 events, 2026-11-28). Listings newest first read the same
-- indexes backwards.
--
-- On a large database, rebuilding the two indexes takes a while.
DROP INDEX errors_received;
CREATE INDEX errors_received ON errors (received_at, id);

DROP INDEX errors_group_received;
CREATE INDEX errors_group_received ON errors (group_id, received_at, id);
