//! The registry of benchmarks that need namespaces (`cargo xtask bench NAME`).

use crate::Bench;

mod control;
mod dataplane;
mod failover;
mod hostplumbing;
mod idle;
mod peers;
mod portal;
mod routes;

/// Every namespace benchmark.
pub fn all() -> Vec<Bench> {
    let mut all = Vec::new();
    all.extend(dataplane::benches());
    all.extend(hostplumbing::benches());
    all.extend(routes::benches());
    all.extend(failover::benches());
    all.extend(control::benches());
    all.extend(idle::benches());
    all.extend(peers::benches());
    all.extend(portal::benches());
    all
}
