-- A sub-playbook started by a step whose tool sets `timeout` (alias `timeout_seconds`) runs
-- until this time; past it the relay cancels it, and the parent's step fails with the reason.
-- NULL: no time limit (every other execution).
ALTER TABLE noetl.execution ADD COLUMN IF NOT EXISTS deadline TIMESTAMPTZ;
