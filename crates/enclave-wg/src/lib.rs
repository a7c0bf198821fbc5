//! Sans-IO WireGuard protocol core.
//!
//! Work in progress: see issue 3.
