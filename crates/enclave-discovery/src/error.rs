//! Errors of discovery.

/// What went wrong while discovering subnets.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The netlink socket could not be opened or used.
    #[error("cannot read interfaces and addresses over rtnetlink ({what})")]
    Netlink {
        /// What we were doing.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A route lookup failed.
    #[error("cannot check whether the gateway reaches {subnet}")]
    Lookup {
        /// The configured subnet.
        subnet: ipnet::Ipv4Net,
        /// The cause.
        #[source]
        source: enclave_route::Error,
    },
}

/// Discovery's result.
pub type Result<T> = std::result::Result<T, Error>;
