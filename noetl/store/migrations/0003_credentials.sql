-- Credentials: data encrypted at rest (AES-GCM); names and metadata in the clear.
CREATE TABLE IF NOT EXISTS noetl.credential (
    name        TEXT PRIMARY KEY,
    type        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    tags        JSONB NOT NULL DEFAULT '[]',
    data        BYTEA NOT NULL,              -- nonce || AES-GCM ciphertext of the JSON data
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
