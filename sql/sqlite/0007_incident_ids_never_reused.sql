-- Incident ids are never reused. SQLite numbers a new row one above the
-- largest id in the table, so deleting the newest incidents (by retention,
-- or a user deleting them) would hand their ids to the next incidents, and
-- an old link or API reference would lead to another incident. Postgres's
-- sequences never go back, so only SQLite needs this.
--
-- Before deleting incidents the collector records the largest incident id
-- here; new incidents are numbered above both it and the largest id left.
CREATE TABLE id_floors (
    name  TEXT PRIMARY KEY,
    floor INTEGER NOT NULL
) WITHOUT ROWID;
