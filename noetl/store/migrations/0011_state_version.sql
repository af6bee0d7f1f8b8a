-- A counter of the state snapshot's writes. The server keeps the snapshot it wrote last for a
-- running execution in memory (server/states.py); the report transaction reads the snapshot
-- from the row only when the row's version is not the one it holds, so a sequential chain no
-- longer reads and parses a snapshot that grows with every step it ran. Every write of
-- `state` after the row's insert adds one (store/decisions.py).
ALTER TABLE noetl.execution ADD COLUMN IF NOT EXISTS state_version BIGINT NOT NULL DEFAULT 0;
