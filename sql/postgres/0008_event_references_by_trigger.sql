-- Events no longer carry foreign keys to their incident and project.
--
-- Postgres checks a foreign key with a query per inserted row, which also
-- row-locks the parent: the two checks on `errors` were about a third of an
-- event insert's server CPU (100,000 inserts of a small event: 18.5 µs a row
-- with them, 11–14 µs without, 2026-11-28). They guard nothing the collector
-- does not already guarantee: it inserts an event only in the transaction
-- that created or found its incident, and an incident always belongs to
-- the event's project.
--
-- What the keys did on delete stays: deleting incidents (or a project, whose
-- incidents go with it) deletes their events, through a statement trigger
-- that reads the deleted rows once. (One difference: a hand-made delete of
-- an incident that is receiving events at that moment no longer waits for
-- the batches writing them, whose events can then outlive it.)
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN
        SELECT conname FROM pg_constraint
        WHERE conrelid = 'errors'::regclass AND contype = 'f'
    LOOP
        EXECUTE format('ALTER TABLE errors DROP CONSTRAINT %I', c.conname);
    END LOOP;
END
$$;

CREATE FUNCTION errorflow_delete_incident_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM errors e USING deleted_incidents d WHERE e.group_id = d.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER error_groups_delete_events
AFTER DELETE ON error_groups
REFERENCING OLD TABLE AS deleted_incidents
FOR EACH STATEMENT EXECUTE FUNCTION errorflow_delete_incident_events();
