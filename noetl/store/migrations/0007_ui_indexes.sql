-- The executions list of the UI: newest first, filtered by status, paged by execution id.
CREATE INDEX IF NOT EXISTS execution_status_id_idx ON noetl.execution (status, execution_id DESC);
-- Executions of one playbook path, newest first (the catalog page).
CREATE INDEX IF NOT EXISTS execution_path_id_idx ON noetl.execution (path, execution_id DESC);
