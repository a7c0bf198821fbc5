//! `net.ipv4.conf.all.src_valid_mark`, read and written through /proc/sys of the calling
//! thread's network namespace.

use std::fs;

use crate::{Error, Result};

/// The sysctl wg-quick sets so that replies to marked traffic pass reverse path filtering.
pub const SRC_VALID_MARK: &str = "/proc/sys/net/ipv4/conf/all/src_valid_mark";

/// Reads an integer sysctl.
pub fn read(path: &str) -> Result<String> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| Error::Sysctl {
            what: "read",
            path: path.to_string(),
            source,
        })
}

/// Writes a sysctl.
pub fn write(path: &str, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|source| Error::Sysctl {
        what: "write",
        path: path.to_string(),
        source,
    })
}
