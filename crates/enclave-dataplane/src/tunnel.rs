//! The handle to a running userspace tunnel.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use enclave_filter::{FilterConfig, FilterRules, FilterStats};
use enclave_wg::{Device, PeerConfig, PeerInfo, PrivateKey, PublicKey};

use crate::engine::{Command, Engine};
use crate::error::{Error, Result};
use crate::sys::{Tun, Waker};
use crate::uapi::SetRequest;
use crate::uapi_server::UapiServer;
use crate::udp::Udp;

/// The default directory of UAPI sockets, where `wg` looks for them.
pub const DEFAULT_UAPI_DIR: &str = "/var/run/wireguard";

/// The MTU wireguard-go and wg-quick use by default.
pub const DEFAULT_MTU: u16 = 1420;

/// The environment variable that turns the data plane's segmentation offloads off (for tests
/// of the fallback paths, or a kernel whose offloads misbehave): `off` turns them all off; a
/// comma-separated list of `no-vnet-hdr` (a TUN device without `virtio_net_hdr`s, so no
/// TSO, USO or receive coalescing either), `no-uso` (TSO only, as on a kernel before 6.2),
/// `no-udp-gso` and `no-udp-gro` turns those off. Otherwise (unset, empty or `on`) each
/// offload is used when the kernel has it.
pub const OFFLOAD_ENV: &str = "ENCLAVE_OFFLOAD";

/// The environment variable that chooses how many threads carry a tunnel's packets: `2` gives
/// each direction a thread of its own (the outbound one reads the TUN device and sends); otherwise
/// (unset, empty or `1`) one thread carries both directions and the protocol core's timers.
/// One is the default because two measured slower on a 2-core machine where both ends and
/// the traffic's programs share the cores (docs/dataplane.md, "Every core").
pub const THREADS_ENV: &str = "ENCLAVE_DATAPLANE_THREADS";

/// How many threads carry a tunnel's packets (see [`THREADS_ENV`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Threads {
    /// One thread does everything.
    One,
    /// An inbound thread (with the core's timers and control requests) and an outbound one.
    Two,
}

impl Threads {
    /// The choice a value of [`THREADS_ENV`] makes; `None` for a value that is no choice.
    pub(crate) fn parse(value: Option<&str>) -> Option<Self> {
        match value.unwrap_or("").trim() {
            "" | "1" => Some(Self::One),
            "2" => Some(Self::Two),
            _ => None,
        }
    }

    /// The choice [`THREADS_ENV`] makes in this process's environment.
    fn from_env() -> Self {
        let value = std::env::var(THREADS_ENV).ok();
        Self::parse(value.as_deref()).unwrap_or_else(|| {
            tracing::warn!(
                value = value.as_deref().unwrap_or(""),
                "{THREADS_ENV} is neither 1 nor 2; using one thread"
            );
            Self::One
        })
    }
}

/// The offloads the tunnel asks the kernel for (each is used only if the kernel grants it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffloadWanted {
    /// `IFF_VNET_HDR` on the TUN device, with checksum offload and TSO.
    pub(crate) vnet_hdr: bool,
    /// USO on the TUN device (only with `vnet_hdr`).
    pub(crate) uso: bool,
    /// `UDP_SEGMENT` on sends.
    pub(crate) udp_gso: bool,
    /// `UDP_GRO` on the socket.
    pub(crate) udp_gro: bool,
}

impl OffloadWanted {
    const ALL: Self = Self {
        vnet_hdr: true,
        uso: true,
        udp_gso: true,
        udp_gro: true,
    };
    const NONE: Self = Self {
        vnet_hdr: false,
        uso: false,
        udp_gso: false,
        udp_gro: false,
    };

    /// The offloads a value of [`OFFLOAD_ENV`] leaves on, and the words in it that name no
    /// offload (ignored; the caller warns about them).
    pub(crate) fn parse(value: Option<&str>) -> (Self, Vec<String>) {
        let value = value.unwrap_or("").trim();
        if matches!(value, "off" | "0" | "false" | "no") {
            return (Self::NONE, Vec::new());
        }
        let mut wanted = Self::ALL;
        let mut unknown = Vec::new();
        for word in value.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "on" => {}
                "no-vnet-hdr" => (wanted.vnet_hdr, wanted.uso) = (false, false),
                "no-uso" => wanted.uso = false,
                "no-udp-gso" => wanted.udp_gso = false,
                "no-udp-gro" => wanted.udp_gro = false,
                other => unknown.push(other.to_owned()),
            }
        }
        (wanted, unknown)
    }

    /// The offloads [`OFFLOAD_ENV`] leaves on in this process's environment.
    fn from_env() -> Self {
        let value = std::env::var(OFFLOAD_ENV).ok();
        let (wanted, unknown) = Self::parse(value.as_deref());
        if !unknown.is_empty() {
            tracing::warn!(
                unknown = unknown.join(","),
                "{OFFLOAD_ENV} names offloads that do not exist (known: off, no-vnet-hdr, no-uso, no-udp-gso, no-udp-gro); ignoring them"
            );
        }
        wanted
    }
}

/// How to start a tunnel.
#[derive(Debug, Clone)]
pub struct TunnelConfig {
    /// The TUN interface to create.
    pub interface: String,
    /// Its MTU.
    pub mtu: u16,
    /// The UDP port (0: any free port).
    pub listen_port: u16,
    /// The fwmark for the UDP socket (0: none).
    pub fwmark: u32,
    /// The static private key (`None`: set later through the UAPI).
    pub private_key: Option<PrivateKey>,
    /// Where to serve the UAPI socket `<dir>/<interface>.sock` (`None`: no UAPI socket).
    pub uapi_dir: Option<PathBuf>,
    /// Sizes and timeouts of the per-peer filters.
    pub filter: FilterConfig,
}

impl TunnelConfig {
    /// A bare tunnel as `wireguard-go -f IFACE` makes: default MTU, any port, no key, the
    /// UAPI socket in [`DEFAULT_UAPI_DIR`].
    pub fn bare(interface: impl Into<String>) -> Self {
        Self {
            interface: interface.into(),
            mtu: DEFAULT_MTU,
            listen_port: 0,
            fwmark: 0,
            private_key: None,
            uapi_dir: Some(PathBuf::from(DEFAULT_UAPI_DIR)),
            filter: FilterConfig::default(),
        }
    }
}

/// One peer as the agent wants it: its WireGuard configuration and, optionally, the filter
/// its packets must pass (both directions). `None` is a bare WireGuard peer.
#[derive(Debug, Clone)]
pub struct PeerSpec {
    /// Keys, endpoint, allowed IPs, keepalive.
    pub config: PeerConfig,
    /// The stateful filter's rules, if any.
    pub filter: Option<FilterRules>,
}

/// Counters of one peer.
#[derive(Debug, Clone)]
pub struct PeerStats {
    /// What the protocol core knows (current and proven endpoint, handshake, bytes,
    /// packets). Judge trust on `info.proven_endpoint`, never on `info.endpoint`.
    pub info: PeerInfo,
    /// The filter's counters (passed, flows, drops by reason), if the peer has a filter.
    pub filter: Option<FilterStats>,
}

/// Counters of a tunnel.
#[derive(Debug, Clone)]
pub struct TunnelStats {
    /// The TUN interface.
    pub interface: String,
    /// The bound UDP port.
    pub listen_port: u16,
    /// This side's public key.
    pub public_key: PublicKey,
    /// Each peer, ordered by public key.
    pub peers: Vec<PeerStats>,
    /// Datagrams and packets the protocol core dropped, by reason (only non-zero ones).
    pub drops: BTreeMap<&'static str, u64>,
    /// Writes to the TUN device that failed (a coalesced super-packet is one write).
    pub tun_write_errors: u64,
    /// Packets read from the TUN device that could not be taken apart (a malformed or
    /// unsupported `virtio_net_hdr` or super-packet), dropped.
    pub tun_read_malformed: u64,
}

/// The shared end of the control channel.
#[derive(Debug, Clone)]
pub(crate) struct Control {
    sender: Sender<Command>,
    waker: Arc<Waker>,
    running: Arc<AtomicBool>,
    interface: String,
}

impl Control {
    fn send(&self, command: Command) -> Result<()> {
        if !self.running.load(Ordering::Acquire) {
            return Err(self.stopped());
        }
        self.sender.send(command).map_err(|_| self.stopped())?;
        self.waker.wake();
        Ok(())
    }

    fn stopped(&self) -> Error {
        Error::Stopped {
            name: self.interface.clone(),
        }
    }

    fn ask<T>(&self, make: impl FnOnce(Sender<T>) -> Command) -> Result<T> {
        let (tx, rx) = mpsc::channel();
        self.send(make(tx))?;
        rx.recv().map_err(|_| self.stopped())
    }

    /// Answers a `get=1`.
    pub(crate) fn uapi_get(&self) -> Result<String> {
        self.ask(Command::UapiGet)
    }

    /// Applies a parsed `set=1`; answers the `errno=` text.
    pub(crate) fn uapi_set(&self, request: SetRequest) -> Result<String> {
        self.ask(|tx| Command::UapiSet(Box::new(request), tx))
    }

    pub(crate) fn request_stop(&self) {
        if self.running.load(Ordering::Acquire) {
            let _ = self.sender.send(Command::Stop);
            self.waker.wake();
        }
    }
}

/// A running userspace WireGuard tunnel: a TUN device, a UDP socket, the protocol core and
/// the per-peer filters, carried by an inbound and an outbound thread (see [`THREADS_ENV`]),
/// and optionally the UAPI socket.
///
/// Dropping the handle stops the tunnel: the TUN device and the UAPI socket file go away.
#[derive(Debug)]
pub struct Tunnel {
    control: Control,
    engine: Option<JoinHandle<std::io::Result<()>>>,
    uapi: Option<UapiServer>,
    outcome: Mutex<Option<std::io::Result<()>>>,
}

impl Tunnel {
    /// Creates the TUN device and the UDP socket, starts the event loop and, if asked, the
    /// UAPI socket.
    pub fn start(config: TunnelConfig) -> Result<Tunnel> {
        let offload = OffloadWanted::from_env();
        let tun = Tun::create(&config.interface, config.mtu, offload.vnet_hdr, offload.uso)?;
        let interface = tun.name().to_owned();
        let offloads = tun.offloads();
        tracing::info!(
            interface,
            vnet_hdr = offloads.vnet_hdr,
            tso = offloads.tso,
            uso = offloads.uso,
            "TUN offloads"
        );
        let udp = Udp::bind(config.listen_port, config.fwmark)?;
        let key = config.private_key.clone().unwrap_or_else(|| {
            enclave_wg::keys::generate_private_key(rand_core::UnwrapErr(getrandom::SysRng))
        });
        let mut device = Device::new(key, rand_core::UnwrapErr(getrandom::SysRng));
        // Padding must not grow a full-sized packet past the TUN MTU the underlay was sized for.
        device.set_mtu(Some(config.mtu));
        let waker = Arc::new(Waker::new().map_err(Error::Spawn)?);
        let (sender, commands) = mpsc::channel();
        let running = Arc::new(AtomicBool::new(true));
        let control = Control {
            sender,
            waker: waker.clone(),
            running: running.clone(),
            interface: interface.clone(),
        };
        // The UAPI socket before the loop: if it is in use, nothing is left running.
        let uapi = match &config.uapi_dir {
            Some(dir) => Some(UapiServer::start(dir, &interface, control.clone())?),
            None => None,
        };
        let engine = Engine::new(
            device,
            config.private_key,
            tun,
            udp,
            config.filter,
            commands,
            waker,
            offload,
            Threads::from_env(),
        )
        .map_err(Error::Spawn)?;
        let uapi_stop = uapi.as_ref().map(UapiServer::stop_flag);
        let handle = std::thread::Builder::new()
            .name(format!("dataplane-{interface}"))
            .spawn(move || {
                let result = engine.run();
                running.store(false, Ordering::Release);
                if let Some(stop) = uapi_stop {
                    stop.request();
                }
                result
            })
            .map_err(Error::Spawn)?;
        tracing::info!(interface = %interface, "tunnel started");
        Ok(Tunnel {
            control,
            engine: Some(handle),
            uapi,
            outcome: Mutex::new(None),
        })
    }

    /// The TUN interface's name.
    pub fn interface(&self) -> &str {
        &self.control.interface
    }

    /// The UAPI socket's path, if the tunnel serves one.
    pub fn uapi_socket(&self) -> Option<&std::path::Path> {
        self.uapi.as_ref().map(UapiServer::path)
    }

    /// Whether the event loop still runs (it stops on [`Tunnel::stop`], when the UAPI socket
    /// file is deleted, or when the TUN device fails or is removed).
    pub fn is_running(&self) -> bool {
        self.control.running.load(Ordering::Acquire)
    }

    /// Makes the peers exactly `peers`: new ones are added, missing ones removed, the others
    /// updated in place, keeping their sessions, handshake timestamps, counters, learnt
    /// (roamed) and proven endpoints, and filter flows that the new rules still allow. A
    /// peer's current endpoint is reset only when its configured endpoint is `Some` and
    /// differs from the one configured before (see `enclave_wg::Device::upsert_peer`).
    pub fn set_peers(&self, peers: Vec<PeerSpec>) -> Result<()> {
        self.control.ask(|tx| Command::SetPeers(peers, tx))
    }

    /// The counters of the tunnel and of each peer.
    pub fn stats(&self) -> Result<TunnelStats> {
        self.control.ask(Command::Stats)
    }

    /// Runs one UAPI request given as text (`get=1\n\n` or `set=1\n...\n\n`) and returns the
    /// answer, exactly as the UAPI socket would.
    pub fn uapi(&self, request: &str) -> Result<String> {
        let mut lines = request.lines();
        crate::uapi_server::answer(&self.control, &mut lines).map_err(Error::Uapi)
    }

    /// Stops the tunnel and waits for it: the TUN device is removed and the UAPI socket file
    /// deleted. Returns the event loop's error, if it failed.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        self.control.request_stop();
        if let Some(handle) = self.engine.take() {
            let result = handle
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the event loop panicked")));
            *self.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
        }
        if let Some(uapi) = self.uapi.take() {
            uapi.stop();
        }
        let outcome = self
            .outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match outcome {
            Some(Err(e)) => Err(Error::Loop(e)),
            _ => Ok(()),
        }
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::{OffloadWanted, Threads};

    #[test]
    fn threads_env_values() {
        for (value, expect) in [
            (None, Some(Threads::One)),
            (Some(""), Some(Threads::One)),
            (Some("2"), Some(Threads::Two)),
            (Some(" 1 "), Some(Threads::One)),
            (Some("3"), None),
            (Some("one"), None),
        ] {
            assert_eq!(Threads::parse(value), expect, "{value:?}");
        }
    }

    #[test]
    fn offload_env_values() {
        let all = OffloadWanted::ALL;
        for value in [None, Some(""), Some("on"), Some(" on ")] {
            assert_eq!(OffloadWanted::parse(value), (all, vec![]), "{value:?}");
        }
        for value in ["off", "0", "false", "no"] {
            assert_eq!(
                OffloadWanted::parse(Some(value)),
                (OffloadWanted::NONE, vec![])
            );
        }
        let (wanted, unknown) = OffloadWanted::parse(Some("no-vnet-hdr"));
        assert_eq!(
            wanted,
            OffloadWanted {
                vnet_hdr: false,
                uso: false,
                ..all
            }
        );
        assert!(unknown.is_empty());
        let (wanted, _) = OffloadWanted::parse(Some("no-uso"));
        assert_eq!(wanted, OffloadWanted { uso: false, ..all });
        let (wanted, unknown) = OffloadWanted::parse(Some("no-udp-gso, no-udp-gro,tso,"));
        assert_eq!(
            wanted,
            OffloadWanted {
                udp_gso: false,
                udp_gro: false,
                ..all
            }
        );
        assert_eq!(unknown, vec!["tso".to_owned()]);
    }
}
