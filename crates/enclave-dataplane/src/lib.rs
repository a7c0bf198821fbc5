//! The overlay data plane's I/O shell.

pub mod uapi;
