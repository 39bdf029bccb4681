-- The registration store, SQLite dialect. Times are Unix milliseconds.
-- STRICT tables refuse values of the wrong type, so a typo in a manual edit
-- fails at write time instead of surfacing later as a corrupt row. Statuses
-- and outcomes are checked when read (store::common), not with CHECK
-- constraints: adding a name later would otherwise mean rebuilding the table.

CREATE TABLE verifications (
    id TEXT NOT NULL PRIMARY KEY,
    api_key_id TEXT NOT NULL,
    phone TEXT NOT NULL,
    user_name TEXT NOT NULL,
    dialplan TEXT NOT NULL,
    callback_url TEXT,
    status TEXT NOT NULL,
    outcome TEXT,
    attempt_count INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    lease_owner TEXT,
    lease_until INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    idempotency_key TEXT,
    request_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    completed_at INTEGER,
    -- NULL keys never conflict, so requests without a key are all kept.
    UNIQUE (api_key_id, idempotency_key),
    -- A lease is an owner and an expiry, or neither.
    CHECK ((lease_owner IS NULL) = (lease_until IS NULL))
) STRICT;

-- Claiming: due verifications in an active status, oldest first.
CREATE INDEX verifications_due ON verifications (status, next_attempt_at);
-- Cooldown per phone.
CREATE INDEX verifications_phone ON verifications (phone, created_at);
-- Rate limit per API key.
CREATE INDEX verifications_api_key ON verifications (api_key_id, created_at);

CREATE TABLE attempts (
    verification_id TEXT NOT NULL REFERENCES verifications (id),
    number INTEGER NOT NULL,
    node TEXT NOT NULL,
    call_id TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    answered_at INTEGER,
    digit_at INTEGER,
    ended_at INTEGER,
    sip_status INTEGER,
    dtmf_source TEXT,
    digits TEXT NOT NULL DEFAULT '',
    outcome TEXT,
    detail TEXT,
    PRIMARY KEY (verification_id, number)
) STRICT;

CREATE TABLE registrations (
    user_name TEXT NOT NULL,
    phone TEXT NOT NULL,
    method TEXT NOT NULL,
    verified_at INTEGER NOT NULL,
    verification_id TEXT NOT NULL REFERENCES verifications (id),
    PRIMARY KEY (user_name, phone)
) STRICT;

CREATE TABLE api_keys (
    id TEXT NOT NULL PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE webhooks (
    id TEXT NOT NULL PRIMARY KEY,
    verification_id TEXT NOT NULL REFERENCES verifications (id),
    url TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    -- NULL once delivered or given up.
    next_attempt_at INTEGER,
    delivered_at INTEGER,
    last_error TEXT,
    gave_up INTEGER NOT NULL DEFAULT 0 CHECK (gave_up IN (0, 1)),
    created_at INTEGER NOT NULL
) STRICT;

-- The outbox scan only looks at pending rows.
CREATE INDEX webhooks_due ON webhooks (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX webhooks_verification ON webhooks (verification_id);
