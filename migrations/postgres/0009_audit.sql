-- The tamper-evident audit log (issue 12): every state change of a
-- verification is one entry, chained per tenant by SHA-256 (store::audit).
-- audit_heads holds each tenant's last entry: a transaction that appends
-- takes that row first with an upsert, which locks it until commit, so two
-- nodes appending for one tenant never fork the chain.
CREATE TABLE audit_entries (
    tenant TEXT NOT NULL,
    seq BIGINT NOT NULL,
    verification_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    -- Canonical JSON of the facts recorded at that change, hashed as stored.
    facts TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (tenant, seq)
);
CREATE INDEX audit_entries_verification ON audit_entries (verification_id, seq);

CREATE TABLE audit_heads (
    tenant TEXT NOT NULL PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);

-- The head follows every entry appended, so an append is two statements
-- (take the head, insert the entries) whatever the number of entries.
CREATE FUNCTION audit_advance_head() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE audit_heads SET seq = NEW.seq, hash = NEW.hash WHERE tenant = NEW.tenant;
    RETURN NULL;
END
$$;
CREATE TRIGGER audit_entry_appended AFTER INSERT ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION audit_advance_head();

-- When the log began (Unix ms): a verification created before has no
-- entries for its past, one created since must have them.
CREATE TABLE audit_start (
    id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    at BIGINT NOT NULL
);
INSERT INTO audit_start (id, at) VALUES (1, CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT));
