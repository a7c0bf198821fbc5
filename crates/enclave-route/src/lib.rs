//! Route manager.
//!
//! Work in progress: see issue 5.
