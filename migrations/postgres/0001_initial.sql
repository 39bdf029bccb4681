-- The registration store, PostgreSQL dialect. Times are Unix milliseconds
-- (BIGINT), so both backends store plain integers. Statuses and outcomes are
-- checked when read (store::common), not with CHECK constraints, to keep the
-- two dialects alike.

CREATE TABLE verifications (
    id TEXT PRIMARY KEY,
    api_key_id TEXT NOT NULL,
    phone TEXT NOT NULL,
    user_name TEXT NOT NULL,
    dialplan TEXT NOT NULL,
    callback_url TEXT,
    status TEXT NOT NULL,
    outcome TEXT,
    attempt_count BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    idempotency_key TEXT,
    request_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    completed_at BIGINT,
    -- NULL keys never conflict, so requests without a key are all kept.
    CONSTRAINT verifications_idempotency UNIQUE (api_key_id, idempotency_key),
    -- A lease is an owner and an expiry, or neither.
    CONSTRAINT verifications_lease CHECK ((lease_owner IS NULL) = (lease_until IS NULL))
);

-- Claiming: due verifications in an active status, oldest first.
CREATE INDEX verifications_due ON verifications (status, next_attempt_at);
-- Cooldown per phone.
CREATE INDEX verifications_phone ON verifications (phone, created_at);
-- Rate limit per API key.
CREATE INDEX verifications_api_key ON verifications (api_key_id, created_at);

CREATE TABLE attempts (
    verification_id TEXT NOT NULL REFERENCES verifications (id),
    number BIGINT NOT NULL,
    node TEXT NOT NULL,
    call_id TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    answered_at BIGINT,
    digit_at BIGINT,
    ended_at BIGINT,
    sip_status BIGINT,
    dtmf_source TEXT,
    digits TEXT NOT NULL DEFAULT '',
    outcome TEXT,
    detail TEXT,
    PRIMARY KEY (verification_id, number)
);

CREATE TABLE registrations (
    user_name TEXT NOT NULL,
    phone TEXT NOT NULL,
    method TEXT NOT NULL,
    verified_at BIGINT NOT NULL,
    verification_id TEXT NOT NULL REFERENCES verifications (id),
    PRIMARY KEY (user_name, phone)
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    verification_id TEXT NOT NULL REFERENCES verifications (id),
    url TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    -- NULL once delivered or given up.
    next_attempt_at BIGINT,
    delivered_at BIGINT,
    last_error TEXT,
    gave_up BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL
);

-- The outbox scan only looks at pending rows.
CREATE INDEX webhooks_due ON webhooks (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX webhooks_verification ON webhooks (verification_id);
