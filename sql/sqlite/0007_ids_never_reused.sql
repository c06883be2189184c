-- Incident and project ids are never reused. SQLite numbers a new row one
-- above the largest id in its table, so deleting the newest incidents (by
-- retention, or a user deleting them) or the newest project would hand
-- their ids to the next ones, and an old link, API reference or DSN would
-- lead to another incident or project. Postgres's sequences never go back,
-- so only SQLite needs this.
--
-- Before deleting incidents or projects the collector records the table's
-- largest id here (`name` is the table); new rows are numbered above both
-- it and the largest id left.
CREATE TABLE id_floors (
    name  TEXT PRIMARY KEY,
    floor INTEGER NOT NULL
) WITHOUT ROWID;
