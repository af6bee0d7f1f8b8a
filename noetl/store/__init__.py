"""PostgreSQL persistence (schema `noetl`). Knows nothing of the engine: rows in, rows out."""
