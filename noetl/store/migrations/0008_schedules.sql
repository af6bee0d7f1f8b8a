-- Schedules: a playbook started on a cron expression or an interval. One row per schedule;
-- one row per handled tick, whose primary key makes a tick fire once however many servers run.
CREATE TABLE IF NOT EXISTS noetl.schedule (
    schedule_id       BIGINT PRIMARY KEY,
    path              TEXT NOT NULL,
    version           INTEGER,                      -- NULL: the latest version at each tick
    cron              TEXT,
    every_seconds     DOUBLE PRECISION,
    timezone          TEXT NOT NULL DEFAULT 'UTC',
    payload           JSONB NOT NULL DEFAULT '{}',
    enabled           BOOLEAN NOT NULL DEFAULT true,
    overlap           TEXT NOT NULL DEFAULT 'skip',  -- skip | allow
    catch_up          BOOLEAN NOT NULL DEFAULT false,
    next_fire_at      TIMESTAMPTZ NOT NULL,
    last_execution_id BIGINT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((cron IS NULL) <> (every_seconds IS NULL))
);
CREATE INDEX IF NOT EXISTS schedule_due_idx ON noetl.schedule (next_fire_at) WHERE enabled;

CREATE TABLE IF NOT EXISTS noetl.schedule_tick (
    schedule_id  BIGINT NOT NULL,
    tick         TIMESTAMPTZ NOT NULL,
    execution_id BIGINT,                             -- NULL when the tick was skipped
    outcome      TEXT NOT NULL,                      -- started | skipped: <why>
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule_id, tick)
);

-- Scheduled executions are ordinary executions, tagged with their schedule.
ALTER TABLE noetl.execution ADD COLUMN IF NOT EXISTS schedule_id BIGINT;
CREATE INDEX IF NOT EXISTS execution_schedule_idx ON noetl.execution (schedule_id)
    WHERE schedule_id IS NOT NULL;
