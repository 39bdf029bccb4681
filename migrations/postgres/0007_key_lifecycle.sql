-- API key lifecycle (issue 11): a revoked key is refused by every node but
-- its row stays, so webhooks it queued are still signed with its secret.
-- last_used_at is written at most once a minute per key, not per request.
ALTER TABLE api_keys ADD COLUMN revoked_at BIGINT;
ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT;
