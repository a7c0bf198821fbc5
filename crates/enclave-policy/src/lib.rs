//! The network definition and its compilation into one system's view.
//!
//! Work in progress: see issue 4.
