//! Managed mode: the agent's view comes from a control server.
//!
//! (Being written: the back-off and the last good view are here; the source itself follows.)

pub mod backoff;
pub mod last_view;
