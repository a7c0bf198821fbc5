-- The control server's schema, one text for SQLite and PostgreSQL (the SQL both speak).
-- Times are seconds since the Unix epoch; flags are 0/1; lists and nested tables are JSON
-- text in the shape of the network definition's TOML tables.

CREATE TABLE network (
    id BIGINT PRIMARY KEY,
    -- Bumped by every commit; a commit made on an older revision is refused (optimistic).
    revision BIGINT NOT NULL,
    overlay TEXT NOT NULL,
    keepalive BIGINT NOT NULL
);
INSERT INTO network (id, revision, overlay, keepalive) VALUES (1, 0, '100.64.0.0/10', 25);

CREATE TABLE systems (
    name TEXT PRIMARY KEY,
    public_key TEXT NOT NULL UNIQUE,
    address TEXT NOT NULL UNIQUE,
    tags TEXT NOT NULL,
    endpoint TEXT,
    enabled BIGINT NOT NULL,
    approval TEXT NOT NULL,
    gateway TEXT,
    discovered TEXT NOT NULL,
    ephemeral BIGINT NOT NULL,
    enrolled_with TEXT,
    created_at BIGINT NOT NULL,
    last_seen BIGINT,
    connected BIGINT NOT NULL,
    version BIGINT NOT NULL
);

CREATE TABLE tags (
    name TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    version BIGINT NOT NULL
);

CREATE TABLE trust_requirements (
    name TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    version BIGINT NOT NULL
);

CREATE TABLE policies (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    version BIGINT NOT NULL
);

CREATE TABLE enrolment_keys (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    tags TEXT NOT NULL,
    approval TEXT NOT NULL,
    uses_allowed BIGINT,
    uses BIGINT NOT NULL,
    expires_at BIGINT,
    ephemeral BIGINT NOT NULL,
    revoked BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL
);

CREATE TABLE admin_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked BIGINT NOT NULL
);

CREATE TABLE audit (
    revision BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (revision, seq)
);
