//! Subnet discovery.
//!
//! Work in progress: see issue 5.
