-- The writes of a report decided from the snapshot a server process holds (server/flow.py
-- `_report_held`, store/decisions.py `commit_held`) that its precondition is about, written as
-- compare-and-set: the execution's new snapshot only while the row is still RUNNING at the
-- version the held one was written with, each reported command's outcome status only while
-- the command is still CLAIMED at an attempt at least the report's. Anything else is
-- serialization_failure: the server rolls back and decides again under the locks, from the row.
-- The locks are the locked path's, in its order: the execution row, then the commands by
-- command_id.
--
-- It replaces 0012's `expect_held` on that path (kept for a server not yet upgraded), which
-- read and locked the rows that the transaction's statement then wrote, its settling part
-- (`UPDATE ... FROM unnest(ids)`) under a generic plan PostgreSQL made from the table's
-- statistics: a hash join with every command of the execution, so a 20,000-item loop's
-- reports read ~10,000 command rows each. Here each row is written by its whole key, one
-- statement per row, and the condition is checked in the row the UPDATE locked (the SET of a
-- row that does not meet it calls `noetl.stale`, which raises), not in its WHERE: a
-- `status = ...` there lets the planner search an index on the status instead (the relay's
-- `command_relay_idx`, or `execution_status_idx`), whose rows grow with the work in flight.
CREATE OR REPLACE FUNCTION noetl.stale(p_message TEXT, p_type ANYELEMENT)
RETURNS ANYELEMENT LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RAISE EXCEPTION 'noetl: %', p_message USING ERRCODE = 'serialization_failure';
END $$;

CREATE OR REPLACE FUNCTION noetl.write_held(
    p_execution BIGINT, p_version BIGINT,
    p_commands TEXT[], p_attempts INT[], p_statuses TEXT[],
    p_state JSON, p_status TEXT, p_result JSON, p_error TEXT
) RETURNS VOID LANGUAGE plpgsql AS $$
DECLARE
    reported RECORD;
BEGIN
    UPDATE noetl.execution
       SET state_version = CASE WHEN status = 'RUNNING' AND state_version = p_version
               THEN state_version + 1
               ELSE noetl.stale(format('the held state of execution %s is not current',
                                       p_execution), state_version) END,
           state = p_state, status = p_status, result = p_result, error = p_error,
           updated_at = now(),
           ended_at = CASE WHEN p_status <> 'RUNNING' THEN now() ELSE ended_at END
     WHERE execution_id = p_execution;
    IF NOT FOUND THEN
        PERFORM noetl.stale(format('execution %s does not exist', p_execution), 0);
    END IF;
    FOR reported IN
        SELECT r.command_id, r.attempt, r.status
          FROM unnest(p_commands, p_attempts, p_statuses) AS r(command_id, attempt, status)
         ORDER BY r.command_id
    LOOP
        UPDATE noetl.command
           SET status = CASE WHEN status = 'CLAIMED' AND attempt >= reported.attempt
                   THEN reported.status
                   ELSE noetl.stale(format('command %s of execution %s is not running',
                                           reported.command_id, p_execution), status) END,
               lease_until = NULL, updated_at = now()
         WHERE execution_id = p_execution AND command_id = reported.command_id;
        IF NOT FOUND THEN
            PERFORM noetl.stale(format('command %s of execution %s does not exist',
                                       reported.command_id, p_execution), 0);
        END IF;
    END LOOP;
END $$;
