//! Errors of the data plane shell.

use std::io;
use std::path::PathBuf;

/// What went wrong while starting, configuring or running a tunnel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TUN device could not be created.
    #[error("cannot create the TUN device {name} (is /dev/net/tun there, and are we root?)")]
    TunCreate {
        /// The interface name asked for.
        name: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The TUN device was created but could not be configured (MTU, up).
    #[error("cannot configure the TUN device {name}")]
    TunConfigure {
        /// The interface name.
        name: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The interface name is empty, too long (15 bytes at most) or contains `/` or NUL.
    #[error("invalid interface name {name:?}: it must be 1 to 15 bytes, without '/' or NUL")]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// The UDP socket could not be opened or bound.
    #[error("cannot bind the tunnel's UDP socket to port {port}")]
    UdpBind {
        /// The port asked for (0: any).
        port: u16,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A socket option could not be set.
    #[error("cannot set {option} on the tunnel's UDP socket")]
    SocketOption {
        /// The option.
        option: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The UAPI socket could not be created.
    #[error("cannot serve the UAPI socket {path}")]
    UapiSocket {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Another process answers on the UAPI socket already.
    #[error("the UAPI socket {path} is served by another process already")]
    UapiInUse {
        /// The socket path.
        path: PathBuf,
    },
    /// A thread or the wake-up descriptor of the tunnel could not be created.
    #[error("cannot start the tunnel's threads")]
    Spawn(#[source] io::Error),
    /// The tunnel's event loop has stopped, so the request cannot be served.
    #[error("the tunnel {name} is no longer running")]
    Stopped {
        /// The interface name.
        name: String,
    },
    /// The event loop failed while running.
    #[error("the tunnel's event loop failed")]
    Loop(#[source] io::Error),
    /// A UAPI request was refused.
    #[error("the tunnel refused the configuration")]
    Uapi(#[source] crate::uapi::UapiError),
}

/// Result of the data plane shell.
pub type Result<T> = std::result::Result<T, Error>;
