//! `enclave-agent tunnel IFACE`: a bare userspace WireGuard interface configured only through
//! its UAPI socket, a drop-in for `wireguard-go -f IFACE` (and, in the background, for
//! `wireguard-go IFACE`, which wg-quick starts).
//!
//! In the foreground it waits on a tokio runtime for SIGINT, SIGTERM or SIGHUP (each stops it,
//! as wireguard-go does) or for the tunnel's end (its interface deleted, its UAPI socket
//! removed), which the data plane publishes only as a flag, looked at every
//! second.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use enclave_dataplane::{Tunnel, TunnelConfig};
use tokio::signal::unix::{signal, SignalKind};

use crate::{Error, Result};

/// How often the tunnel's liveness flag is looked at.
const LIVENESS_EVERY: Duration = Duration::from_secs(1);
/// How long a background start may take to open its UAPI socket.
const BACKGROUND_WITHIN: Duration = Duration::from_secs(10);
/// How often a background start looks whether the socket answers yet.
const BACKGROUND_LOOK_EVERY: Duration = Duration::from_millis(50);

/// A bare tunnel: no peers until they are set through the UAPI socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BareTunnel {
    /// The TUN interface to create.
    pub interface: String,
    /// Where the UAPI socket `<dir>/<interface>.sock` goes.
    pub uapi_dir: PathBuf,
    /// The fwmark of the tunnel's UDP packets (0: none).
    pub fwmark: u32,
    /// The interface's MTU.
    pub mtu: u16,
}

impl BareTunnel {
    /// The path of its UAPI socket.
    pub fn uapi_socket(&self) -> PathBuf {
        self.uapi_dir.join(format!("{}.sock", self.interface))
    }

    /// Runs the tunnel in the foreground until a stop signal or its end.
    pub fn run(&self) -> Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::EventLoop)?;
        runtime.block_on(self.serve())
    }

    async fn serve(&self) -> Result<()> {
        // The handlers first: a signal that comes while the tunnel starts is not lost.
        let mut interrupt = signal(SignalKind::interrupt()).map_err(Error::Signals)?;
        let mut terminate = signal(SignalKind::terminate()).map_err(Error::Signals)?;
        let mut hangup = signal(SignalKind::hangup()).map_err(Error::Signals)?;
        let mut config = TunnelConfig::bare(&self.interface);
        config.uapi_dir = Some(self.uapi_dir.clone());
        config.fwmark = self.fwmark;
        config.mtu = self.mtu;
        let tunnel = Tunnel::start(config).map_err(Error::Dataplane)?;
        tracing::info!(
            interface = tunnel.interface(),
            uapi = %tunnel.uapi_socket().map(|p| p.display().to_string()).unwrap_or_default(),
            "tunnel up; configure it with wg(8)"
        );
        let mut alive = tokio::time::interval(LIVENESS_EVERY);
        alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let signal = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
                _ = hangup.recv() => "SIGHUP",
                _ = alive.tick() => {
                    if tunnel.is_running() {
                        continue;
                    }
                    tracing::info!("the tunnel stopped (socket removed or interface gone)");
                    break;
                }
            };
            tracing::info!(signal, "stopping");
            break;
        }
        tunnel.stop().map_err(Error::Dataplane)
    }

    /// Runs `program tunnel …` (this same command, in the foreground) detached: its own
    /// process group, output to nowhere; returns once its UAPI socket accepts connections.
    pub fn start_background(&self, program: &Path) -> Result<()> {
        let io = |source| Error::BareTunnel {
            interface: self.interface.clone(),
            source,
        };
        let socket = self.uapi_socket();
        let mut child = std::process::Command::new(program)
            .arg("tunnel")
            .arg(&self.interface)
            .arg("--uapi-dir")
            .arg(&self.uapi_dir)
            .arg("--fwmark")
            .arg(self.fwmark.to_string())
            .arg("--mtu")
            .arg(self.mtu.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(io)?;
        let deadline = Instant::now() + BACKGROUND_WITHIN;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().map_err(io)? {
                return Err(io(std::io::Error::other(format!(
                    "it exited with {status}; run it with -f to see why"
                ))));
            }
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                return Ok(());
            }
            std::thread::sleep(BACKGROUND_LOOK_EVERY);
        }
        Err(io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "it did not open {} within {} s",
                socket.display(),
                BACKGROUND_WITHIN.as_secs()
            ),
        )))
    }
}
