-- Tenancy (issue 7): every verification and registration belongs to the
-- tenant of the API key that made it; keys carry their tenant, the admin
-- role and their webhook signing secret.

-- A key's tenant defaults to the key itself, so rows made before tenancy
-- stay with the key that created them.
ALTER TABLE verifications ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
UPDATE verifications SET tenant = api_key_id;
-- Listing: a tenant's verifications, newest first; and every tenant's (admin keys).
CREATE INDEX verifications_tenant ON verifications (tenant, created_at, id);
CREATE INDEX verifications_created ON verifications (created_at, id);

-- The same user name in two tenants is two users: the key gains the tenant.
-- SQLite cannot change a primary key in place, so the table is rebuilt.
CREATE TABLE registrations_tenant (
    tenant TEXT NOT NULL,
    user_name TEXT NOT NULL,
    phone TEXT NOT NULL,
    method TEXT NOT NULL,
    verified_at INTEGER NOT NULL,
    verification_id TEXT NOT NULL REFERENCES verifications (id),
    PRIMARY KEY (tenant, user_name, phone)
) STRICT;
INSERT INTO registrations_tenant (tenant, user_name, phone, method, verified_at, verification_id)
    SELECT v.tenant, r.user_name, r.phone, r.method, r.verified_at, r.verification_id
    FROM registrations r JOIN verifications v ON v.id = r.verification_id;
DROP TABLE registrations;
ALTER TABLE registrations_tenant RENAME TO registrations;

-- NULL tenant: the key is its own tenant. The webhook secret is kept in
-- clear because the server must sign with it (unlike the key, stored hashed).
ALTER TABLE api_keys ADD COLUMN tenant TEXT;
ALTER TABLE api_keys ADD COLUMN admin INTEGER NOT NULL DEFAULT 0 CHECK (admin IN (0, 1));
ALTER TABLE api_keys ADD COLUMN webhook_secret TEXT;
-- After a rotation the previous secret signs too, until this time, so
-- receivers can switch without rejecting a webhook.
ALTER TABLE api_keys ADD COLUMN previous_webhook_secret TEXT;
ALTER TABLE api_keys ADD COLUMN previous_secret_until INTEGER;
