-- Tenancy (issue 7): every verification and registration belongs to the
-- tenant of the API key that made it; keys carry their tenant, the admin
-- role and their webhook signing secret.

-- A key's tenant defaults to the key itself, so rows made before tenancy
-- stay with the key that created them.
ALTER TABLE verifications ADD COLUMN tenant TEXT;
UPDATE verifications SET tenant = api_key_id;
ALTER TABLE verifications ALTER COLUMN tenant SET NOT NULL;
-- Listing: a tenant's verifications, newest first; and every tenant's (admin keys).
CREATE INDEX verifications_tenant ON verifications (tenant, created_at, id);
CREATE INDEX verifications_created ON verifications (created_at, id);

-- The same user name in two tenants is two users: the key gains the tenant.
ALTER TABLE registrations ADD COLUMN tenant TEXT;
UPDATE registrations r SET tenant = v.tenant FROM verifications v WHERE v.id = r.verification_id;
ALTER TABLE registrations ALTER COLUMN tenant SET NOT NULL;
ALTER TABLE registrations DROP CONSTRAINT registrations_pkey;
ALTER TABLE registrations ADD PRIMARY KEY (tenant, user_name, phone);

-- NULL tenant: the key is its own tenant. The webhook secret is kept in
-- clear because the server must sign with it (unlike the key, stored hashed).
ALTER TABLE api_keys ADD COLUMN tenant TEXT;
ALTER TABLE api_keys ADD COLUMN admin BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE api_keys ADD COLUMN webhook_secret TEXT;
-- After a rotation the previous secret signs too, until this time, so
-- receivers can switch without rejecting a webhook.
ALTER TABLE api_keys ADD COLUMN previous_webhook_secret TEXT;
ALTER TABLE api_keys ADD COLUMN previous_secret_until BIGINT;
