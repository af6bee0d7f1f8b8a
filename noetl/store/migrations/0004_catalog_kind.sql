-- The document kind of a catalog entry (`Playbook`), as NoETL users' queries expect.
ALTER TABLE noetl.catalog ADD COLUMN IF NOT EXISTS kind TEXT NOT NULL DEFAULT 'Playbook';
