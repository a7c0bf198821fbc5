-- The portal's administrator accounts, made on the server host (`admin user create`). Kept
-- apart from the network's revision: an account is not part of the network definition.

CREATE TABLE portal_users (
    name TEXT PRIMARY KEY,
    -- The argon2id hash in PHC string form (algorithm, parameters, salt, hash).
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
