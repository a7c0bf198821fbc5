-- The underlay endpoint each system's agent was last observed at (the address its connection
-- came from, with the WireGuard port it reported), `IP:PORT`. Peers' views use it when the
-- administrator set no endpoint by hand. Part of the network's revision: a change moves it,
-- so that peers get new views.

ALTER TABLE systems ADD COLUMN observed_endpoint TEXT;
