//! Benchmarks of this area (none yet).

use crate::Bench;

pub fn benches() -> Vec<Bench> {
    Vec::new()
}
