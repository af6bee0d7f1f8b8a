-- The state snapshot is rewritten by every transaction of its execution. Stored EXTENDED (the
-- default), a snapshot over ~2 KB goes out of line to TOAST on each write: its chunks are
-- inserted and indexed anew and all of it goes to the WAL (a 7 KB snapshot: ~26 KB of WAL per
-- write). MAIN keeps it compressed in the row while it fits in a page (~1 KB of WAL per write
-- for the same snapshot, benchmarks/README.md §8); a larger one still goes out of line.
ALTER TABLE noetl.execution ALTER COLUMN state SET STORAGE MAIN;
