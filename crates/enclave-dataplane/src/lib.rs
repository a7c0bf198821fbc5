//! The overlay data plane's I/O shell.
//!
//! Work in progress: see issue 3.
