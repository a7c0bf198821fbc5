//! The two data planes the agent can drive, behind one small interface.
//!
//! - **Userspace** (the default): our own WireGuard ([`enclave_dataplane::Tunnel`]) with the
//!   per-peer stateful packet filter in the data path.
//! - **External**: an existing WireGuard implementation configured through the
//!   `wireguard-control` crate — the kernel module where it is loaded, otherwise a userspace
//!   implementation over its UAPI socket (wireguard-go by default, or the program named by
//!   `WG_USERSPACE_IMPLEMENTATION`). When the interface does not exist, the agent starts that
//!   program in the foreground itself and ends it on stop; the program is also ended by the
//!   kernel when the agent dies (`PR_SET_PDEATHSIG`), so a `kill -9` of the agent leaves no
//!   tunnel up with stale peers. Such an implementation does not filter, so the agent has the
//!   NAT manager filter the host's own tunnel traffic with nftables (chains `ENCLAVE-INPUT`
//!   and `ENCLAVE-OUTPUT`, built from the same rules).
//!
//! Both apply only differences: a peer that stays keeps its session, its handshake state and
//! the endpoint it roamed to; an endpoint is set only when the definition gives one that
//! changed.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use enclave_dataplane::{PeerSpec, Tunnel, TunnelConfig};
use enclave_filter::FilterRules;
use enclave_wg::{PeerConfig, PrivateKey, PublicKey};
use ipnet::IpNet;
use wireguard_control::{Backend, DeviceUpdate, InterfaceName, Key, PeerConfigBuilder};

use super::psk::Psk;
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
    /// The address that completed a handshake (ours only; an external WireGuard does not say).
    pub proven_endpoint: Option<SocketAddr>,
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
    /// The peers as last given, by name, to tell what changed.
    applied: BTreeMap<String, DesiredPeer>,
    /// Their pre-shared keys as last given.
    applied_psks: BTreeMap<String, Psk>,
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

    /// Makes the peers exactly `peers`, changing only what differs: peers that stay keep
    /// their sessions and learned endpoints.
    /// Each peer's pre-shared key, if it has one, is in `psks`.
    pub fn set_peers(
        &mut self,
        peers: &BTreeMap<String, DesiredPeer>,
        psks: &BTreeMap<String, Psk>,
    ) -> Result<()> {
        match self {
            Dataplane::Userspace(tunnel) => {
                let specs = peers
                    .iter()
                    .map(|(name, peer)| peer_spec(name, peer, psks.get(name)))
                    .collect::<Result<Vec<_>>>()?;
                tunnel.set_peers(specs).map_err(Error::Dataplane)
            }
            Dataplane::External(external) => external.set_peers(peers, psks),
        }
    }

    /// Forgets the sessions of `lost` (a subset of `peers`, the peers in force), so that the
    /// next packet to them starts a new handshake. The other peers are left alone.
    pub fn reset_sessions(
        &mut self,
        peers: &BTreeMap<String, DesiredPeer>,
        lost: &BTreeMap<String, DesiredPeer>,
        psks: &BTreeMap<String, Psk>,
    ) -> Result<()> {
        match self {
            Dataplane::Userspace(_) => {
                let others = peers
                    .iter()
                    .filter(|(name, _)| !lost.contains_key(*name))
                    .map(|(name, peer)| (name.clone(), peer.clone()))
                    .collect();
                self.set_peers(&others, psks)?;
                self.set_peers(peers, psks)
            }
            Dataplane::External(external) => external.reset_sessions(lost, psks),
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
                            proven_endpoint: p.info.proven_endpoint,
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

fn peer_spec(name: &str, peer: &DesiredPeer, psk: Option<&Psk>) -> Result<PeerSpec> {
    Ok(PeerSpec {
        config: PeerConfig {
            public_key: parse_key(name, &peer.public_key)?,
            preshared_key: psk.map(|k| enclave_wg::PresharedKey::from_bytes(**k)),
            endpoint: peer.endpoint,
            allowed_ips: peer.allowed_ips.iter().map(|n| IpNet::V4(*n)).collect(),
            persistent_keepalive: peer.keepalive,
        },
        filter: Some(FilterRules {
            ingress: peer.inbound.clone(),
            egress: peer.outbound.clone(),
        }),
    })
}

/// What to tell the interface about `peer`, given what it was told `before` (`None`: the
/// interface does not have it yet), or `None` when nothing changed. The endpoint is set only
/// when the definition gives one that changed, so a learned (roamed) endpoint is kept.
fn peer_update(
    key: &Key,
    before: Option<&DesiredPeer>,
    peer: &DesiredPeer,
) -> Option<PeerConfigBuilder> {
    let mut builder = PeerConfigBuilder::new(key);
    let mut changed = before.is_none();
    if before.is_none_or(|b| b.allowed_ips != peer.allowed_ips) {
        builder = builder.replace_allowed_ips();
        for net in &peer.allowed_ips {
            builder = builder.add_allowed_ip(IpAddr::V4(net.addr()), net.prefix_len());
        }
        changed = true;
    }
    if let Some(endpoint) = peer.endpoint {
        if before.is_none_or(|b| b.endpoint != peer.endpoint) {
            builder = builder.set_endpoint(endpoint);
            changed = true;
        }
    }
    if before.is_none_or(|b| b.keepalive != peer.keepalive) {
        builder = match peer.keepalive {
            Some(interval) => builder.set_persistent_keepalive_interval(interval),
            None => builder.unset_persistent_keepalive(),
        };
        changed = true;
    }
    changed.then_some(builder)
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
            let agent = std::process::id();
            let mut command = Command::new(&program);
            command
                .args(["-f", &config.interface])
                .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")
                .stdin(Stdio::null());
            // SAFETY: the closure runs in the child between fork and exec and calls only
            // async-signal-safe functions (prctl, getppid, _exit); it allocates nothing.
            unsafe {
                command.pre_exec(move || {
                    // Ended with the agent, even by kill -9: the thread that forks is the
                    // agent's main thread, which lives as long as the agent.
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // The agent may have died before the prctl: then nobody would end us.
                    if libc::getppid() as u32 != agent {
                        libc::_exit(1);
                    }
                    Ok(())
                });
            }
            let child = command.spawn().map_err(io)?;
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
            applied: BTreeMap::new(),
            applied_psks: BTreeMap::new(),
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

    fn error(&self, source: std::io::Error) -> Error {
        Error::External {
            interface: self.interface.to_string(),
            source,
        }
    }

    /// The public keys of the peers the interface has now, with their current endpoints.
    fn present(&self) -> Result<BTreeMap<[u8; 32], Option<SocketAddr>>> {
        let device = wireguard_control::Device::get(&self.interface, self.backend)
            .map_err(|e| self.error(e))?;
        Ok(device
            .peers
            .into_iter()
            .map(|p| (p.config.public_key.0, p.config.endpoint))
            .collect())
    }

    fn set_peers(
        &mut self,
        peers: &BTreeMap<String, DesiredPeer>,
        psks: &BTreeMap<String, Psk>,
    ) -> Result<()> {
        let present = self.present()?;
        let mut wanted = BTreeMap::new();
        for (name, peer) in peers {
            wanted.insert(parse_key(name, &peer.public_key)?.0, (name, peer));
        }
        let mut update = DeviceUpdate::new();
        let mut changes = 0usize;
        for key in present.keys().filter(|k| !wanted.contains_key(*k)) {
            update = update.remove_peer_by_key(&Key(*key));
            changes += 1;
        }
        for (key, (name, peer)) in &wanted {
            let before = present
                .contains_key(key)
                .then(|| self.applied.get(*name))
                .flatten()
                .filter(|b| b.public_key == peer.public_key);
            let mut builder = peer_update(&Key(*key), before, peer);
            let psk = psks.get(*name);
            let psk_before = before.and(self.applied_psks.get(*name));
            if before.is_none() || psk.map(|k| **k) != psk_before.map(|k| **k) {
                let with = builder.unwrap_or_else(|| PeerConfigBuilder::new(&Key(*key)));
                builder = Some(match psk {
                    Some(k) => with.set_preshared_key(Key(**k)),
                    None => with.unset_preshared_key(),
                });
            }
            if let Some(builder) = builder {
                update = update.add_peer(builder);
                changes += 1;
            }
        }
        if changes > 0 {
            update
                .apply(&self.interface, self.backend)
                .map_err(|e| self.error(e))?;
        }
        self.applied = peers.clone();
        self.applied_psks = psks
            .iter()
            .filter(|(name, _)| peers.contains_key(*name))
            .map(|(name, k)| (name.clone(), k.clone()))
            .collect();
        Ok(())
    }

    /// Removes the `lost` peers and adds them again, at the endpoint they had (which may be
    /// one they roamed to), so that their next packet starts a fresh handshake.
    fn reset_sessions(
        &mut self,
        lost: &BTreeMap<String, DesiredPeer>,
        psks: &BTreeMap<String, Psk>,
    ) -> Result<()> {
        let present = self.present()?;
        let mut removal = DeviceUpdate::new();
        let mut readd = DeviceUpdate::new();
        for (name, peer) in lost {
            let key = Key(parse_key(name, &peer.public_key)?.0);
            let Some(endpoint) = present.get(&key.0) else {
                continue;
            };
            removal = removal.remove_peer_by_key(&key);
            let mut builder =
                peer_update(&key, None, peer).unwrap_or_else(|| PeerConfigBuilder::new(&key));
            if let Some(psk) = psks.get(name) {
                builder = builder.set_preshared_key(Key(**psk));
            }
            if let Some(endpoint) = endpoint.or(peer.endpoint) {
                builder = builder.set_endpoint(endpoint);
            }
            readd = readd.add_peer(builder);
        }
        removal
            .apply(&self.interface, self.backend)
            .map_err(|e| self.error(e))?;
        readd
            .apply(&self.interface, self.backend)
            .map_err(|e| self.error(e))
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
                proven_endpoint: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(endpoint: Option<&str>, nets: &[&str], keepalive: Option<u16>) -> DesiredPeer {
        DesiredPeer {
            public_key: String::new(),
            endpoint: endpoint.map(|e| e.parse().unwrap()),
            allowed_ips: nets.iter().map(|n| n.parse().unwrap()).collect(),
            keepalive,
            preshared_key_file: None,
            inbound: Vec::new(),
            outbound: Vec::new(),
        }
    }

    #[test]
    fn only_what_changed_is_given_and_a_learnt_endpoint_is_kept() {
        let key = Key([7; 32]);
        let laptop = peer(None, &["100.64.0.11/32"], None);

        // New: everything, but no endpoint the definition does not give.
        let new = peer_update(&key, None, &laptop).expect("a new peer is given");
        let config = new.clone().into_peer_config();
        assert_eq!(config.endpoint, None);
        assert_eq!(config.allowed_ips.len(), 1);

        // Unchanged, or changed only in its filter rules (not the interface's business):
        // nothing is sent, so the session and the roamed endpoint stay.
        assert!(peer_update(&key, Some(&laptop), &laptop).is_none());
        let mut filtered = laptop.clone();
        filtered.inbound.push(enclave_filter::AllowRule {
            protocol: enclave_filter::Protocol::Any,
            ports: None,
            sources: Vec::new(),
            destinations: Vec::new(),
            label: None,
        });
        assert!(peer_update(&key, Some(&laptop), &filtered).is_none());

        // Allowed IPs changed (it became the active gateway for a subnet): replaced, and
        // still no endpoint, so the one the interface learnt stays.
        let gateway = peer(None, &["100.64.0.11/32", "192.168.77.0/24"], None);
        let update = peer_update(&key, Some(&laptop), &gateway).expect("allowed IPs changed");
        let config = update.into_peer_config();
        assert_eq!(config.endpoint, None);
        assert_eq!(config.allowed_ips.len(), 2);

        // The definition's endpoint changed: set.
        let moved = peer(Some("10.10.0.9:51820"), &["100.64.0.11/32"], None);
        let update = peer_update(&key, Some(&laptop), &moved).expect("endpoint changed");
        assert_eq!(
            update.into_peer_config().endpoint,
            Some("10.10.0.9:51820".parse().unwrap())
        );
        // The same configured endpoint again: not set again (the peer may have roamed).
        assert!(peer_update(&key, Some(&moved), &moved).is_none());
    }
}
