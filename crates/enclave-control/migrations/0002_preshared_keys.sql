-- The network definition's [[preshared_key]] tables (pairs of systems and the path of their key
-- file; never the key), in the order the administrator wrote them.

CREATE TABLE preshared_keys (
    position BIGINT PRIMARY KEY,
    body TEXT NOT NULL
);
