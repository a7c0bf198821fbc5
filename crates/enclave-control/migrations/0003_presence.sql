-- Where each system's agent is connected, kept apart from the network's revision: an agent's
-- heartbeat is not a change of the network and must not recompute anyone's view. One row per
-- agent key (names can change); written by the server that holds the agent's connection.

CREATE TABLE presence (
    public_key TEXT PRIMARY KEY,
    -- The server process holding (or last holding) the connection.
    server TEXT NOT NULL,
    connected BIGINT NOT NULL,
    -- Seconds since the epoch; refreshed while connected, so a server that died leaves rows
    -- that go stale instead of "connected" forever.
    last_seen BIGINT NOT NULL,
    -- The underlay address the server saw, with the agent's WireGuard port when reported.
    endpoint TEXT
);
