-- One row that `/readyz` rewrites to learn whether the store accepts writes
-- (a full disk, a read-only or unreachable database make it fail).
CREATE TABLE store_probe (
    id INTEGER PRIMARY KEY,
    written_at BIGINT NOT NULL
);
