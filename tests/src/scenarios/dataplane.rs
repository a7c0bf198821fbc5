//! Scenarios of this area (none yet).

use crate::Scenario;

pub fn scenarios() -> Vec<Scenario> {
    Vec::new()
}
