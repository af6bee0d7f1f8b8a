-- The commands a worker holds (running, or finished and not yet reported), as its last
-- heartbeat listed them. A claim whose lease lapsed while its worker heartbeats is kept only
-- when that worker lists it: a worker that never learned of a claim made for it (the answer
-- that handed it over was lost) no longer keeps it forever. NULL: a worker that does not list
-- its commands (the claim is kept, as before).
ALTER TABLE noetl.worker ADD COLUMN IF NOT EXISTS commands BIGINT[];
