-- The tamper-evident audit log (issue 12): every state change of a
-- verification is one entry, chained per tenant by SHA-256 (store::audit).
-- audit_heads holds each tenant's last entry: a transaction that appends
-- takes that row first (an upsert, which locks it on PostgreSQL; SQLite's
-- one writer already serialises), so two appends never fork the chain.
CREATE TABLE audit_entries (
    tenant TEXT NOT NULL,
    seq INTEGER NOT NULL,
    verification_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    -- Canonical JSON of the facts recorded at that change, hashed as stored.
    facts TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (tenant, seq)
) STRICT;
CREATE INDEX audit_entries_verification ON audit_entries (verification_id, seq);

CREATE TABLE audit_heads (
    tenant TEXT NOT NULL PRIMARY KEY,
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL
) STRICT;

-- The head follows every entry appended, so an append is two statements
-- (take the head, insert the entries) whatever the number of entries.
CREATE TRIGGER audit_entry_appended AFTER INSERT ON audit_entries BEGIN
    UPDATE audit_heads SET seq = new.seq, hash = new.hash WHERE tenant = new.tenant;
END;

-- When the log began (Unix ms): a verification created before has no
-- entries for its past, one created since must have them.
CREATE TABLE audit_start (
    id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    at INTEGER NOT NULL
) STRICT;
INSERT INTO audit_start (id, at) VALUES (1, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
