-- Admission at rate (issue 10): counting a window's events row by row cost
-- each admission as much as the traffic it counted. Each scope now keeps its
-- totals, kept exact by triggers on every insert and delete (the horizon's
-- deletes included): a limit reads its scope's total and takes off the few
-- events older than its window that the horizon left, and the breaker does
-- the same with one row per distinct number (velocity_numbers: the latest
-- time each number was admitted in its scope).
CREATE TABLE velocity_scopes (
    scope TEXT PRIMARY KEY,
    events BIGINT NOT NULL DEFAULT 0,
    numbers BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE velocity_numbers (
    scope TEXT NOT NULL,
    phone TEXT NOT NULL,
    last_at BIGINT NOT NULL,
    PRIMARY KEY (scope, phone)
);
CREATE INDEX velocity_numbers_scope ON velocity_numbers (scope, last_at);
CREATE INDEX velocity_numbers_at ON velocity_numbers (last_at);

-- The events and numbers already stored (every scope's: the migration does
-- not know which a breaker watches; the others leave within one window).
INSERT INTO velocity_numbers (scope, phone, last_at)
    SELECT scope, phone, MAX(at) FROM velocity_events GROUP BY scope, phone;
INSERT INTO velocity_scopes (scope, events, numbers)
    SELECT scope, COUNT(*), COUNT(DISTINCT phone) FROM velocity_events GROUP BY scope;

CREATE TRIGGER velocity_event_added AFTER INSERT ON velocity_events BEGIN
    INSERT INTO velocity_scopes (scope, events) VALUES (new.scope, 1)
        ON CONFLICT (scope) DO UPDATE SET events = velocity_scopes.events + 1;
END;
CREATE TRIGGER velocity_event_removed AFTER DELETE ON velocity_events BEGIN
    UPDATE velocity_scopes SET events = events - 1 WHERE scope = old.scope;
    DELETE FROM velocity_scopes WHERE scope = old.scope AND events = 0 AND numbers = 0;
END;
CREATE TRIGGER velocity_number_added AFTER INSERT ON velocity_numbers BEGIN
    INSERT INTO velocity_scopes (scope, numbers) VALUES (new.scope, 1)
        ON CONFLICT (scope) DO UPDATE SET numbers = velocity_scopes.numbers + 1;
END;
CREATE TRIGGER velocity_number_removed AFTER DELETE ON velocity_numbers BEGIN
    UPDATE velocity_scopes SET numbers = numbers - 1 WHERE scope = old.scope;
    DELETE FROM velocity_scopes WHERE scope = old.scope AND events = 0 AND numbers = 0;
END;
