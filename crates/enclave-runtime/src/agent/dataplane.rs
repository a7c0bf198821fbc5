//! The two data planes the agent can drive, behind one small interface.
//!
//! - **Userspace** (the default): our own WireGuard ([`enclave_dataplane::Tunnel`]) with the
//!   per-peer stateful packet filter in the data path.
//! - **External**: an existing WireGuard implementation configured through the
//!   `wireguard-control` crate — the kernel module where it is loaded, otherwise a userspace
//!   implementation over its UAPI socket (wireguard-go by default, or the program named by
//!   `WG_USERSPACE_IMPLEMENTATION`). When the interface does not exist, the agent starts that
//!   program in the foreground itself and ends it on stop. Such an implementation does not
//!   filter, so the agent has the NAT manager filter the host's own tunnel traffic with
//!   nftables (chains `ENCLAVE-INPUT` and `ENCLAVE-OUTPUT`, built from the same rules).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use enclave_dataplane::{PeerSpec, Tunnel, TunnelConfig};
use enclave_filter::FilterRules;
use enclave_wg::{PeerConfig, PrivateKey, PublicKey};
use ipnet::IpNet;
use wireguard_control::{Backend, DeviceUpdate, InterfaceName, Key, PeerConfigBuilder};

use crate::config::{AgentConfig, DataplaneBackend};
use crate::desired::DesiredPeer;
use crate::{Error, Result};

/// What the data plane reports of one peer.
#[derive(Debug, Clone)]
pub struct PeerCounters {
    /// The peer's public key, base64.
    pub public_key: String,
    /// Where it is reached now.
    pub endpoint: Option<SocketAddr>,
    /// The last completed handshake.
    pub last_handshake: Option<SystemTime>,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets dropped on this peer's account, by reason: the protocol's (`wg:replay`…) and
    /// the packet filter's (`filter:no-rule`…); only non-zero ones. Ours only.
    pub drops: std::collections::BTreeMap<String, u64>,
}

/// The data plane in use.
#[derive(Debug)]
pub enum Dataplane {
    /// Our own userspace WireGuard.
    Userspace(Tunnel),
    /// An existing WireGuard driven through `wireguard-control`.
    External(External),
}

/// An existing WireGuard interface, and the userspace implementation we started for it, if any.
#[derive(Debug)]
pub struct External {
    interface: InterfaceName,
    backend: Backend,
    started: Option<Child>,
}

impl Dataplane {
    /// Brings up the data plane that `config` asks for.
    pub fn start(config: &AgentConfig, private_key: PrivateKey) -> Result<Self> {
        match config.dataplane {
            DataplaneBackend::Userspace => Tunnel::start(TunnelConfig {
                interface: config.interface.clone(),
                mtu: enclave_dataplane::DEFAULT_MTU,
                listen_port: config.listen_port,
                fwmark: config.fwmark,
                private_key: Some(private_key),
                uapi_dir: Some(config.uapi_dir.clone()),
                filter: Default::default(),
            })
            .map(Dataplane::Userspace)
            .map_err(Error::Dataplane),
            DataplaneBackend::External => {
                External::start(config, &private_key).map(Dataplane::External)
            }
        }
    }

    /// Makes the peers exactly `peers` (name, desired state).
    pub fn set_peers<'a>(
        &self,
        peers: impl Iterator<Item = (&'a String, &'a DesiredPeer)>,
    ) -> Result<()> {
        match self {
            Dataplane::Userspace(tunnel) => {
                let mut specs = Vec::new();
                for (name, peer) in peers {
                    specs.push(PeerSpec {
                        config: PeerConfig {
                            public_key: parse_key(name, &peer.public_key)?,
                            preshared_key: None,
                            endpoint: peer.endpoint,
                            allowed_ips: peer.allowed_ips.iter().map(|n| IpNet::V4(*n)).collect(),
                            persistent_keepalive: peer.keepalive,
                        },
                        filter: Some(FilterRules {
                            ingress: peer.inbound.clone(),
                            egress: peer.outbound.clone(),
                        }),
                    });
                }
                tunnel.set_peers(specs).map_err(Error::Dataplane)
            }
            Dataplane::External(external) => external.set_peers(peers),
        }
    }

    /// Every peer's counters.
    pub fn counters(&self) -> Result<Vec<PeerCounters>> {
        match self {
            Dataplane::Userspace(tunnel) => {
                let stats = tunnel.stats().map_err(Error::Dataplane)?;
                Ok(stats
                    .peers
                    .iter()
                    .map(|p| {
                        let wg = enclave_wg::DropReason::ALL
                            .iter()
                            .map(|r| (format!("wg:{}", r.as_str()), p.info.drops[*r as usize]));
                        let filter = p.filter.iter().flat_map(|f| {
                            f.dropped
                                .iter()
                                .map(|(r, n)| (format!("filter:{}", r.as_str()), n))
                        });
                        PeerCounters {
                            public_key: p.info.public_key.to_base64(),
                            endpoint: p.info.endpoint,
                            last_handshake: p.info.last_handshake,
                            rx_bytes: p.info.rx_bytes,
                            tx_bytes: p.info.tx_bytes,
                            drops: wg.chain(filter).filter(|(_, n)| *n > 0).collect(),
                        }
                    })
                    .collect())
            }
            Dataplane::External(external) => external.counters(),
        }
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        match self {
            Dataplane::Userspace(tunnel) => tunnel.is_running(),
            Dataplane::External(external) => match external.started.as_mut() {
                Some(child) => matches!(child.try_wait(), Ok(None)),
                None => true,
            },
        }
    }

    /// Stops it: our tunnel goes away; an external interface we started is ended, one that
    /// existed before loses the peers we gave it.
    pub fn stop(self) {
        match self {
            Dataplane::Userspace(tunnel) => {
                if let Err(err) = tunnel.stop() {
                    tracing::error!(error = %err, "the tunnel stopped with an error");
                }
            }
            Dataplane::External(external) => external.stop(),
        }
    }
}

fn parse_key(peer: &str, key: &str) -> Result<PublicKey> {
    PublicKey::from_base64(key).map_err(|source| Error::PeerKey {
        peer: peer.to_owned(),
        source,
    })
}

impl External {
    fn start(config: &AgentConfig, private_key: &PrivateKey) -> Result<Self> {
        let interface: InterfaceName = config.interface.parse().map_err(|e| Error::External {
            interface: config.interface.clone(),
            source: std::io::Error::other(e),
        })?;
        let io = |source| Error::External {
            interface: config.interface.clone(),
            source,
        };
        let backend = if std::path::Path::new("/sys/module/wireguard").exists() {
            Backend::Kernel
        } else {
            Backend::Userspace
        };
        let mut started = None;
        if backend == Backend::Userspace
            && wireguard_control::Device::get(&interface, backend).is_err()
        {
            let program = std::env::var("WG_USERSPACE_IMPLEMENTATION")
                .unwrap_or_else(|_| "wireguard-go".into());
            let child = Command::new(&program)
                .args(["-f", &config.interface])
                .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")
                .stdin(Stdio::null())
                .spawn()
                .map_err(io)?;
            tracing::info!(program = %program, pid = child.id(), "started the external WireGuard");
            started = Some(child);
            let socket = PathBuf::from(format!("/var/run/wireguard/{}.sock", config.interface));
            let deadline = Instant::now() + Duration::from_secs(10);
            while !socket.exists() || wireguard_control::Device::get(&interface, backend).is_err() {
                if Instant::now() > deadline {
                    if let Some(mut child) = started.take() {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                    return Err(io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("{program} did not bring the interface up within 10 s"),
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let external = External {
            interface,
            backend,
            started,
        };
        DeviceUpdate::new()
            .set_private_key(Key(*private_key.as_bytes()))
            .set_listen_port(config.listen_port)
            .set_fwmark(config.fwmark)
            .replace_peers()
            .apply(&external.interface, backend)
            .map_err(io)?;
        enclave_dataplane::iface::set_up(&config.interface).map_err(io)?;
        tracing::info!(
            interface = %config.interface,
            "external data plane: the host's tunnel traffic is filtered by nftables"
        );
        Ok(external)
    }

    fn set_peers<'a>(
        &self,
        peers: impl Iterator<Item = (&'a String, &'a DesiredPeer)>,
    ) -> Result<()> {
        let mut update = DeviceUpdate::new().replace_peers();
        for (name, peer) in peers {
            let key = parse_key(name, &peer.public_key)?;
            let mut builder = PeerConfigBuilder::new(&Key(key.0)).replace_allowed_ips();
            for net in &peer.allowed_ips {
                builder = builder.add_allowed_ip(IpAddr::V4(net.addr()), net.prefix_len());
            }
            if let Some(endpoint) = peer.endpoint {
                builder = builder.set_endpoint(endpoint);
            }
            if let Some(keepalive) = peer.keepalive {
                builder = builder.set_persistent_keepalive_interval(keepalive);
            }
            update = update.add_peer(builder);
        }
        update
            .apply(&self.interface, self.backend)
            .map_err(|source| Error::External {
                interface: self.interface.to_string(),
                source,
            })
    }

    fn counters(&self) -> Result<Vec<PeerCounters>> {
        let device =
            wireguard_control::Device::get(&self.interface, self.backend).map_err(|source| {
                Error::External {
                    interface: self.interface.to_string(),
                    source,
                }
            })?;
        Ok(device
            .peers
            .iter()
            .map(|p| PeerCounters {
                public_key: p.config.public_key.to_base64(),
                endpoint: p.config.endpoint,
                last_handshake: p.stats.last_handshake_time,
                rx_bytes: p.stats.rx_bytes,
                tx_bytes: p.stats.tx_bytes,
                drops: Default::default(),
            })
            .collect())
    }

    fn stop(mut self) {
        match self.started.take() {
            Some(mut child) => {
                // wireguard-go removes its interface and socket when it is asked to stop.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
                let deadline = Instant::now() + Duration::from_secs(3);
                while Instant::now() < deadline {
                    if matches!(child.try_wait(), Ok(Some(_))) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            None => {
                let cleared = DeviceUpdate::new()
                    .replace_peers()
                    .apply(&self.interface, self.backend);
                if let Err(err) = cleared {
                    tracing::error!(error = %err, "could not remove our peers from the external interface");
                }
            }
        }
    }
}
