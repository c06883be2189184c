-- A project's own sensitive field names, scrubbed from its events besides
-- the default ones: a JSON array of strings (`["order_no"]`), matched
-- case-insensitively as parts of a key. Empty: the defaults only.
ALTER TABLE projects ADD COLUMN scrub_fields TEXT NOT NULL DEFAULT '[]';
