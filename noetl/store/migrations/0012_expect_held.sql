-- The precondition of a report decided from the snapshot a server process holds
-- (server/flow.py `_report_held`, store/decisions.py `commit_held`). That report is decided
-- before anything is locked and sent as ONE round trip: BEGIN, this check, the writes, COMMIT.
-- The check takes the same locks as the locked path, in the same order (the execution row,
-- then the reported commands by command_id), and fails the transaction unless the row is still
-- RUNNING at the version the snapshot was written with and every reported command is still
-- CLAIMED at an attempt at least the report's (as `flow._check` requires). A failure is
-- serialization_failure: the server rolls back and decides again under the locks, from the row.
-- Each row is found by its whole key, so the plans PL/pgSQL keeps stay index lookups.
CREATE OR REPLACE FUNCTION noetl.expect_held(
    p_execution BIGINT, p_version BIGINT, p_commands TEXT[], p_attempts INT[]
) RETURNS VOID LANGUAGE plpgsql AS $$
DECLARE
    execution RECORD;
    reported RECORD;
    command RECORD;
BEGIN
    SELECT status, state_version INTO execution
      FROM noetl.execution WHERE execution_id = p_execution FOR UPDATE;
    IF NOT FOUND OR execution.status <> 'RUNNING' OR execution.state_version <> p_version THEN
        RAISE EXCEPTION 'noetl: the held state of execution % is not current', p_execution
            USING ERRCODE = 'serialization_failure';
    END IF;
    FOR reported IN
        SELECT r.command_id, r.attempt FROM unnest(p_commands, p_attempts) AS r(command_id, attempt)
         ORDER BY r.command_id
    LOOP
        SELECT status, attempt INTO command FROM noetl.command
         WHERE execution_id = p_execution AND command_id = reported.command_id FOR UPDATE;
        IF NOT FOUND OR command.status <> 'CLAIMED' OR reported.attempt > command.attempt THEN
            RAISE EXCEPTION 'noetl: command % of execution % is not running',
                reported.command_id, p_execution USING ERRCODE = 'serialization_failure';
        END IF;
    END LOOP;
END $$;
