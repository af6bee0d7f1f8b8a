-- NoETL schema, version 1. Applied by `noetl db init` and at server start.
CREATE SCHEMA IF NOT EXISTS noetl;

CREATE TABLE IF NOT EXISTS noetl.catalog (
    catalog_id   BIGINT PRIMARY KEY,
    path         TEXT NOT NULL,
    version      INTEGER NOT NULL,
    name         TEXT NOT NULL,
    content      TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (path, version)
);

CREATE TABLE IF NOT EXISTS noetl.execution (
    execution_id        BIGINT PRIMARY KEY,
    catalog_id          BIGINT NOT NULL REFERENCES noetl.catalog (catalog_id),
    path                TEXT NOT NULL,
    version             INTEGER NOT NULL,
    parent_execution_id BIGINT,
    status              TEXT NOT NULL,
    state               JSON NOT NULL,  -- JSON keeps key order (steps in the order they ran)
    result              JSON,
    error               TEXT,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    ended_at            TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS execution_created_idx ON noetl.execution (created_at DESC);
CREATE INDEX IF NOT EXISTS execution_status_idx ON noetl.execution (status);

-- Append-only: never updated, never deleted by the runtime.
CREATE TABLE IF NOT EXISTS noetl.event (
    execution_id        BIGINT NOT NULL,
    event_id            BIGINT NOT NULL,
    parent_event_id     BIGINT,
    parent_execution_id BIGINT,
    event_type          TEXT NOT NULL,
    step                TEXT,
    command_id          TEXT,
    attempt             INTEGER,
    worker_id           TEXT,
    status              TEXT,
    payload             JSONB,
    context             JSONB,
    result              JSONB,
    error               TEXT,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    duration            DOUBLE PRECISION,
    PRIMARY KEY (execution_id, event_id)
);
-- One claim per attempt of a command.
CREATE UNIQUE INDEX IF NOT EXISTS event_one_claim_per_attempt
    ON noetl.event (execution_id, command_id, attempt)
    WHERE event_type = 'command.claimed';
-- One terminal event per command.
CREATE UNIQUE INDEX IF NOT EXISTS event_one_command_outcome
    ON noetl.event (execution_id, command_id)
    WHERE event_type IN ('command.completed', 'command.failed', 'command.cancelled');
-- One terminal event per execution.
CREATE UNIQUE INDEX IF NOT EXISTS event_one_playbook_outcome
    ON noetl.event (execution_id)
    WHERE event_type IN ('playbook.completed', 'playbook.failed', 'playbook.cancelled');
CREATE INDEX IF NOT EXISTS event_type_created_idx ON noetl.event (event_type, created_at DESC);

-- The outbox and claim projection: one row per issued command.
CREATE TABLE IF NOT EXISTS noetl.command (
    event_id      BIGINT PRIMARY KEY,          -- id of the command.issued event
    execution_id  BIGINT NOT NULL,
    command_id    TEXT NOT NULL,
    step          TEXT NOT NULL,
    iteration     INTEGER,
    tool          JSONB NOT NULL,
    input         JSONB NOT NULL,
    status        TEXT NOT NULL,               -- PENDING, CLAIMED, COMPLETED, FAILED, CANCELLED
    attempt       INTEGER NOT NULL DEFAULT 0,
    worker_id     TEXT,
    lease_until   TIMESTAMPTZ,
    notified_at   TIMESTAMPTZ,
    publish_count INTEGER NOT NULL DEFAULT 0,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (execution_id, command_id)
);
CREATE INDEX IF NOT EXISTS command_relay_idx ON noetl.command (status, notified_at)
    WHERE status IN ('PENDING', 'CLAIMED');

CREATE TABLE IF NOT EXISTS noetl.worker (
    worker_id      TEXT PRIMARY KEY,
    hostname       TEXT,
    concurrency    INTEGER,
    status         TEXT NOT NULL,
    running        INTEGER NOT NULL DEFAULT 0,
    started_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Leader leases for background tasks (relay, reaper) shared by server replicas.
CREATE TABLE IF NOT EXISTS noetl.lease (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    lease_until TIMESTAMPTZ NOT NULL
);
