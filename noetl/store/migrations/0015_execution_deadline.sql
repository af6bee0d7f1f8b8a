-- An execution started with `timeout_seconds` (POST /api/execute, `noetl run --timeout`), or a
-- sub-playbook started by a step whose tool sets `timeout` (alias `timeout_seconds`), runs
-- until this time; past it the relay cancels it (a parent's step then fails with the reason).
-- NULL: no time limit.
ALTER TABLE noetl.execution ADD COLUMN IF NOT EXISTS deadline TIMESTAMPTZ;
