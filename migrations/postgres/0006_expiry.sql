-- Expiry (issue 11): the sweep looks for verifications that are still open
-- and old enough; completed ones, the vast majority, stay out of the index.
CREATE INDEX verifications_open_created ON verifications (created_at, id)
    WHERE status IN ('queued', 'dialing', 'ringing', 'answered');
