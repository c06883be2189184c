-- Incident and project ids are never reused. SQLite numbers a new row one
-- above the largest id in its table, so deleting the newest incidents (by
-- retention, by hand, or with their project) or the newest project would
-- hand their ids to the next ones, and an old link, API reference or DSN
-- would lead to another incident or project. Postgres's sequences never go
-- back, so only SQLite needs this.
--
-- Every deletion, however it happens (a statement, a cascade, a hand-made
-- DELETE), records the largest id deleted from the table (`name`); new
-- incidents and projects are numbered above both it and the largest id left.
CREATE TABLE id_floors (
    name  TEXT PRIMARY KEY,
    floor INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TRIGGER error_groups_ids_never_reused AFTER DELETE ON error_groups
BEGIN
    INSERT OR REPLACE INTO id_floors (name, floor)
    VALUES ('error_groups',
            MAX(OLD.id, COALESCE((SELECT floor FROM id_floors WHERE name = 'error_groups'), 0)));
END;

CREATE TRIGGER projects_ids_never_reused AFTER DELETE ON projects
BEGIN
    INSERT OR REPLACE INTO id_floors (name, floor)
    VALUES ('projects',
            MAX(OLD.id, COALESCE((SELECT floor FROM id_floors WHERE name = 'projects'), 0)));
END;
