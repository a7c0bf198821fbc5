//! The registry of benchmarks that need namespaces (`cargo xtask bench NAME`). A module with
//! one benchmark names it in its `BENCH`; add the module here.

use crate::Bench;

mod control;
mod dataplane;
mod failover;
mod hostplumbing;
mod idle;
mod peers;
mod portal;
mod routes;

/// Every namespace benchmark, in the order `cargo xtask bench list` shows them.
pub fn all() -> Vec<Bench> {
    vec![
        dataplane::BENCH,
        hostplumbing::BENCH,
        routes::BENCH,
        failover::BENCH,
        control::BENCH,
        idle::BENCH,
        peers::BENCH,
        portal::BENCH,
    ]
}
