-- Re-run from failure: a re-run knows the execution it re-runs.
ALTER TABLE noetl.execution ADD COLUMN IF NOT EXISTS rerun_of BIGINT;
CREATE INDEX IF NOT EXISTS execution_rerun_of_idx ON noetl.execution (rerun_of)
    WHERE rerun_of IS NOT NULL;
