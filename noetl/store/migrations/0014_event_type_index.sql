-- No query reads noetl.event by (event_type, created_at): each one names its execution (the
-- primary key's first column, or a unique index's). The index cost every appended event one
-- more b-tree insertion, in the report transaction: 5 of a sequential step's 12 insertions
-- into the event table's indexes (benchmarks/README.md §8).
DROP INDEX IF EXISTS noetl.event_type_created_idx;
