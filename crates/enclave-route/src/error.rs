//! Errors of the route manager.

use std::io;

/// What went wrong while managing routes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The netlink socket could not be opened or used.
    #[error("cannot talk to the kernel over rtnetlink ({what})")]
    Socket {
        /// What we were doing.
        what: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The kernel refused a request.
    #[error("the kernel refused to {what}")]
    Kernel {
        /// The request, in words (`add route 10.1.0.0/16 table 254 metric 0`).
        what: String,
        /// The kernel's reason.
        #[source]
        source: io::Error,
    },
    /// A netlink message could not be encoded or decoded.
    #[error("malformed rtnetlink message while trying to {what}: {detail}")]
    Message {
        /// What we were doing (`list routes`, `add rule priority 32000 ...`).
        what: String,
        /// What neli said.
        detail: String,
    },
    /// The tunnel interface does not exist (any more).
    #[error("tunnel interface {name:?} does not exist")]
    InterfaceMissing {
        /// Its name.
        name: String,
    },
    /// A plain route to 0.0.0.0/0 was asked for.
    #[error("a route to 0.0.0.0/0 in table {table} would loop the tunnel's own traffic: use the DefaultRoute setting instead")]
    DefaultRouteAsPlainRoute {
        /// The table it was asked for.
        table: u32,
    },
    /// The default route's rules would come after the main table's rule and never be used.
    #[error("the default route's rules at priorities {priority} and {next} must come before the main table's rule (32766): choose a priority below 32765", next = priority.saturating_add(1))]
    DefaultRoutePriority {
        /// The priority asked for.
        priority: u32,
    },
    /// A sysctl could not be read or written.
    #[error("cannot {what} {path}")]
    Sysctl {
        /// `read` or `write`.
        what: &'static str,
        /// The /proc/sys path.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The saved state file is not ours or is damaged.
    #[error("cannot use the route manager's state file {path}")]
    State {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// The route manager's result.
pub type Result<T> = std::result::Result<T, Error>;
