-- Sub-playbooks: a child execution knows the parent command it answers.
ALTER TABLE noetl.execution ADD COLUMN IF NOT EXISTS parent_command_id TEXT;
CREATE INDEX IF NOT EXISTS execution_parent_idx ON noetl.execution (parent_execution_id)
    WHERE parent_execution_id IS NOT NULL;
