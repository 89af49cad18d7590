-- Tenants and their API tokens. Portable between SQLite and PostgreSQL: times are Unix
-- milliseconds (BIGINT), structured fields are JSON text.

CREATE TABLE tenants (
    id               TEXT PRIMARY KEY,
    display_name     TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    quota_overrides  TEXT NOT NULL,
    browser_endpoint TEXT,
    labels           TEXT NOT NULL,
    revision         BIGINT NOT NULL
);

-- A token's secret is never stored: only the hex SHA-256 of it.
CREATE TABLE tokens (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT
);

CREATE INDEX tokens_tenant_id ON tokens (tenant_id);

-- The purge's deadline queue reads the earliest expiries from this index.
CREATE INDEX tokens_expires_at ON tokens (expires_at);
