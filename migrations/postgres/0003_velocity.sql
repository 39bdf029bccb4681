-- The toll-fraud guard's counters (store::velocity). Every admitted
-- verification leaves one event per scope it counts in (API key, country,
-- prefix, global, phone); a limit counts its scope's events in a sliding
-- window. Events older than every window are deleted as requests come.
CREATE TABLE velocity_events (
    scope TEXT NOT NULL,
    at BIGINT NOT NULL,
    phone TEXT NOT NULL,
    verification_id TEXT NOT NULL
);
CREATE INDEX velocity_events_scope ON velocity_events (scope, at);
CREATE INDEX velocity_events_at ON velocity_events (at);

-- Prefixes paused by the burst breaker, shared by every node.
CREATE TABLE velocity_breakers (
    scope TEXT PRIMARY KEY,
    tripped_at BIGINT NOT NULL,
    open_until BIGINT NOT NULL
);

-- One row every admission locks (FOR UPDATE on PostgreSQL; SQLite's
-- BEGIN IMMEDIATE already holds the database lock), so that checking the
-- limits and inserting the verification are one atomic step across nodes.
-- One row rather than one per scope: the global budget is a scope every
-- admission counts in, so admissions serialize on it anyway.
CREATE TABLE velocity_lock (
    id BIGINT PRIMARY KEY
);
INSERT INTO velocity_lock (id) VALUES (1);
