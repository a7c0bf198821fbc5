//! The agent's I/O shell: `enclave-agent run` and `enclave-gw run`.
//!
//! One thread owns the state and loops: it reads control messages from the tunnel, drives the
//! gateway selector's timers, re-evaluates trust requirements every [`TRUST_EVERY`], watches
//! the network definition for changes (and SIGHUP), and, whenever the desired state changes,
//! hands the difference to the data plane, the route manager and (on a gateway) the NAT manager.
//! A definition that fails validation is refused and the last good one stays in force.
//! SIGINT or SIGTERM stop it; stopping removes everything it made.

mod apply;
mod control_socket;
mod dataplane;
mod gateway;
mod psk;
mod report;
mod trust;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use enclave_policy::{Evaluation, Timestamp, View};
use enclave_wg::PrivateKey;
use ipnet::Ipv4Net;

use self::dataplane::Dataplane;

pub use control_socket::query_status;
pub use report::{describe, Internet};

use crate::config::{read_private_key, AgentConfig};
use crate::control::{Message, CONTROL_PORT};
use crate::desired::{Desired, Egress};
use crate::failover::{Candidate, Selector};
use crate::{Error, Result};

/// How often trust requirements and active hours are judged again.
pub const TRUST_EVERY: Duration = Duration::from_millis(200);
/// How often the definition file is checked for changes.
const WATCH_EVERY: Duration = Duration::from_millis(250);
/// How often a gateway looks at its interfaces again.
const DISCOVER_EVERY: Duration = Duration::from_millis(250);
/// How often counters and status are refreshed.
const STATUS_EVERY: Duration = Duration::from_millis(200);
/// How often the sessions of gateways that do not answer are dropped, so that the next probe
/// starts a fresh handshake: a restarted gateway has forgotten the old session, and a gateway
/// that added us after we sent our initiation ignored it; WireGuard alone would retry only
/// after REKEY_TIMEOUT (5 s) or notice after 15 s or more.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);
/// The longest the loop sleeps.
const TICK: Duration = Duration::from_millis(20);

/// Which binary runs the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `enclave-agent`: a sender or receiver; never forwards.
    Agent,
    /// `enclave-gw`: also serves subnets when the definition allows it to act as a gateway.
    Gateway,
}

/// Loads and validates the definition and finds this system in it by its public key.
fn load_view(path: &Path, public_key: &str) -> Result<(View, Vec<String>)> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    let loaded = enclave_policy::load(&path.display().to_string(), &text).map_err(|e| match e {
        enclave_policy::Error::Invalid { diagnostics, .. } => Error::Definition {
            path: path.to_owned(),
            diagnostics: diagnostics.iter().map(ToString::to_string).collect(),
        },
        other => Error::Policy(other),
    })?;
    let name = loaded
        .network
        .systems
        .values()
        .find(|s| s.public_key == public_key)
        .map(|s| s.name.clone())
        .ok_or_else(|| Error::NotInDefinition {
            path: path.to_owned(),
            public_key: public_key.to_owned(),
        })?;
    let view = enclave_policy::compile(&loaded.network, &name).map_err(Error::Policy)?;
    let warnings = loaded.warnings.iter().map(ToString::to_string).collect();
    Ok((view, warnings))
}

/// A random number from the operating system, for the first probe id.
fn random_u64() -> u64 {
    rand_core::RngCore::next_u64(&mut rand_core::OsRng)
}

/// The network definition of an agent in file mode (managed mode is refused at start).
fn definition_file(config: &AgentConfig) -> &Path {
    config.network_file().unwrap_or(Path::new(""))
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The selector's plan: each routed subnet and its candidates. Policy priorities are "lower
/// first"; the selector prefers higher numbers.
fn plan(view: &View) -> BTreeMap<Ipv4Net, Vec<Candidate>> {
    view.routes
        .iter()
        .map(|(subnet, route)| {
            let candidates = route
                .candidates
                .iter()
                .map(|c| Candidate {
                    gateway: c.gateway.clone(),
                    priority: u32::MAX - c.priority,
                })
                .collect();
            (*subnet, candidates)
        })
        .collect()
}

/// Opens the control port on the overlay address, bound to the tunnel interface: a datagram
/// that arrives on any other interface (say, forged on the underlay with an overlay source
/// address) never reaches it.
fn control_port(interface: &str, address: std::net::Ipv4Addr) -> std::io::Result<UdpSocket> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    socket.bind_device(Some(interface.as_bytes()))?;
    socket.bind(&SocketAddr::from((address, CONTROL_PORT)).into())?;
    Ok(socket.into())
}

/// Runs the agent in the foreground until SIGINT or SIGTERM.
pub fn run(config: AgentConfig, role: Role) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(Error::Signals)?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))
        .map_err(Error::Signals)?;

    if let Some(control) = config.control() {
        return Err(Error::Config {
            path: config.private_key_file.clone(),
            message: format!(
                "managed mode ([control] server = {}) is not wired into this agent loop yet",
                control.server
            ),
        });
    }
    let key_text = read_private_key(&config.private_key_file)?;
    let private_key = crate::config::decode_key(&key_text)
        .map(|bytes| PrivateKey::from_bytes(*bytes))
        .ok_or_else(|| Error::KeyText {
            path: config.private_key_file.clone(),
        })?;
    drop(key_text);
    let public_key = private_key.public_key().to_base64();
    let (view, warnings) = load_view(definition_file(&config), &public_key)?;
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    tracing::info!(system = %view.system, address = %view.address, "this system found in the definition");
    if role == Role::Agent && view.gateway.is_some() {
        tracing::warn!(
            system = %view.system,
            "this system may act as a gateway, but enclave-agent never forwards: run enclave-gw to serve its subnets"
        );
    }

    // The control socket and the state of the route and NAT managers live here: a directory
    // of ours that nobody else may write to (an existing one is judged, never chmod-ed).
    enclave_statefile::ensure_private_dir(&config.runtime_dir, 0o700).map_err(|source| {
        Error::RuntimeDir {
            path: config.runtime_dir.clone(),
            source,
        }
    })?;
    let shared: control_socket::Shared = Arc::new(Mutex::new(None));
    let _control_socket =
        control_socket::ControlSocket::start(&config.control_socket(), Arc::clone(&shared))?;

    let tunnel = Dataplane::start(&config, private_key)?;
    enclave_dataplane::iface::set_ipv4_address(
        &config.interface,
        view.address,
        view.overlay.netmask(),
    )
    .map_err(|source| Error::Interface {
        interface: config.interface.clone(),
        source,
    })?;
    let control =
        control_port(&config.interface, view.address).map_err(|source| Error::ControlPort {
            address: view.address,
            source,
        })?;
    let routes = enclave_route::RouteManager::new(enclave_route::Config {
        interface: config.interface.clone(),
        state_dir: Some(
            config
                .runtime_dir
                .join(format!("{}.routes", config.interface)),
        ),
    })
    .map_err(Error::Routes)?;

    let mut agent = Agent {
        selector: Selector::with_first_probe_id(random_u64()),
        compiled: view.clone(),
        addresses: BTreeMap::new(),
        evaluation: Evaluation { grants: Vec::new() },
        definition_stamp: file_stamp(definition_file(&config)),
        public_key,
        config,
        role,
        view,
        tunnel: Some(tunnel),
        routes,
        nat: None,
        control,
        served: BTreeMap::new(),
        applied: None,
        counters: BTreeMap::new(),
        warnings,
        shared,
        failed: BTreeSet::new(),
        retry_at: None,
        not_forwarding: None,
        definition_generation: 1,
        applied_generation: 0,
        psks: BTreeMap::new(),
        refused_peers: BTreeMap::new(),
    };
    let now = Instant::now();
    agent.selector.set_plan(plan(&agent.view), now);
    let result = agent.run_loop(&stop, &reload);
    agent.shutdown();
    result
}

struct Agent {
    config: AgentConfig,
    role: Role,
    public_key: String,
    /// The view as compiled from the definition in force.
    compiled: View,
    /// The view applied: `compiled`, and on a gateway its own interface addresses left out of
    /// the default routes it serves ([`crate::desired::with_own_addresses`]).
    view: View,
    /// This host's IPv4 interface addresses and their interfaces, as last discovered (on a
    /// system whose view makes it a gateway).
    addresses: BTreeMap<Ipv4Addr, String>,
    definition_stamp: Option<(SystemTime, u64)>,
    tunnel: Option<Dataplane>,
    routes: enclave_route::RouteManager,
    nat: Option<enclave_nat::NatManager>,
    control: UdpSocket,
    selector: Selector,
    evaluation: Evaluation,
    served: BTreeMap<Ipv4Net, Egress>,
    applied: Option<Desired>,
    counters: BTreeMap<String, report::PeerCounters>,
    warnings: Vec<String>,
    shared: control_socket::Shared,
    /// Parts whose last apply failed, retried at `retry_at`.
    failed: BTreeSet<&'static str>,
    /// When the failed parts are tried again.
    retry_at: Option<Instant>,
    /// Why this gateway does not forward although it should (its rules could not be applied),
    /// shown in status until an apply succeeds.
    not_forwarding: Option<String>,
    /// How many definitions were read and accepted.
    definition_generation: u64,
    /// The generation of the definition that the last apply used (see
    /// [`crate::status::Status::definition_generation`]).
    applied_generation: u64,
    /// The pre-shared keys given to the data plane, by peer.
    psks: BTreeMap<String, psk::Psk>,
    /// Peers left out of the data plane (their pre-shared key file is unusable), with why.
    refused_peers: BTreeMap<String, String>,
}

impl Agent {
    fn acts_as_gateway(&self) -> bool {
        self.role == Role::Gateway && self.view.enabled && self.view.gateway.is_some()
    }

    fn run_loop(&mut self, stop: &AtomicBool, reload: &AtomicBool) -> Result<()> {
        let mut next_trust = Instant::now();
        let mut next_watch = Instant::now() + WATCH_EVERY;
        let mut next_discover = Instant::now();
        let mut next_status = Instant::now();
        let mut next_reconnect = Instant::now() + RECONNECT_EVERY;
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let mut dirty = self.applied.is_none()
                || (!self.failed.is_empty() && self.retry_at.is_none_or(|at| now >= at));

            let hangup = reload.swap(false, Ordering::Relaxed);
            if hangup && self.applied.is_some() {
                // SIGHUP also reads the pre-shared key files again (a rotated key): the peers
                // are given again; those that stay keep their sessions.
                self.failed.insert("peers");
                dirty = true;
            }
            if hangup || (now >= next_watch && self.definition_changed()) {
                dirty |= self.reload(now);
            }
            if now >= next_watch {
                next_watch = now + WATCH_EVERY;
            }
            if self.view.gateway.is_some() && now >= next_discover {
                next_discover = now + DISCOVER_EVERY;
                dirty |= self.discover();
            }
            if now >= next_status {
                next_status = now + STATUS_EVERY;
                self.refresh_counters(now);
                self.publish_status(now);
            }
            if now >= next_reconnect {
                next_reconnect = now + RECONNECT_EVERY;
                self.reconnect_lost_gateways();
            }
            if now >= next_trust {
                next_trust = now + TRUST_EVERY;
                dirty |= self.evaluate_trust();
            }
            if self.selector.poll_timeout().is_some_and(|t| t <= now) {
                self.selector.handle_timeout(now);
            }
            while let Some((gateway, message)) = self.selector.poll_transmit() {
                if let Some(peer) = self.view.peers.get(&gateway) {
                    let _ = self
                        .control
                        .send_to(&message.encode(), (peer.address, CONTROL_PORT));
                }
            }
            while let Some(change) = self.selector.poll_event() {
                tracing::info!(
                    subnet = %change.subnet,
                    from = change.from.as_deref().unwrap_or("-"),
                    to = change.to.as_deref().unwrap_or("-"),
                    reason = ?change.reason,
                    "gateway selected"
                );
                dirty = true;
            }
            if dirty {
                self.apply();
                self.publish_status(now);
            }

            let wait = self
                .selector
                .poll_timeout()
                .map_or(TICK, |t| t.saturating_duration_since(Instant::now()))
                .clamp(Duration::from_millis(1), TICK);
            let _ = self.control.set_read_timeout(Some(wait));
            while let Ok((len, from)) = self.control.recv_from(&mut buf) {
                self.handle_control(&buf[..len], from);
                let _ = self
                    .control
                    .set_read_timeout(Some(Duration::from_millis(1)));
            }
            if !self.tunnel.as_mut().is_some_and(Dataplane::is_running) {
                return Err(Error::TunnelStopped {
                    interface: self.config.interface.clone(),
                });
            }
        }
        tracing::info!("stopping");
        Ok(())
    }

    fn definition_changed(&self) -> bool {
        file_stamp(definition_file(&self.config)) != self.definition_stamp
    }

    /// Loads the definition again. Returns whether the view changed.
    fn reload(&mut self, now: Instant) -> bool {
        self.definition_stamp = file_stamp(definition_file(&self.config));
        match load_view(definition_file(&self.config), &self.public_key) {
            Ok((view, mut warnings)) => {
                if view.address != self.view.address {
                    let text = format!(
                        "this system's virtual address changed from {} to {}: restart the agent to use it; until then the old definition stays in force",
                        self.view.address, view.address
                    );
                    tracing::error!("{text}");
                    warnings.push(text);
                    self.warnings = warnings;
                    return false;
                }
                self.warnings = warnings;
                self.definition_generation += 1;
                if view == self.compiled {
                    // Nothing to apply: in force as it is.
                    if self.applied.is_some() && self.failed.is_empty() {
                        self.applied_generation = self.definition_generation;
                    }
                    return false;
                }
                tracing::info!(file = %definition_file(&self.config).display(), "network definition reloaded");
                self.view = crate::desired::with_own_addresses(&view, &self.addresses);
                self.compiled = view;
                self.selector.set_plan(plan(&self.view), now);
                true
            }
            Err(err) => {
                let message = format!("{err}\nthe last good definition stays in force");
                tracing::error!("{message}");
                self.warnings = vec![message];
                false
            }
        }
    }

    /// Looks at this host's interfaces again: its own addresses (left out of the default routes
    /// it serves, whichever binary runs it: the tunnel's filter guards the host's own addresses
    /// too) and, acting as a gateway, the subnets it serves now. Returns whether either changed.
    fn discover(&mut self) -> bool {
        if self.view.gateway.is_none() {
            return false;
        }
        let discovery = match enclave_discovery::discover(Some(&self.config.interface)) {
            Ok(discovery) => discovery,
            Err(err) => {
                tracing::warn!(error = %err, "discovery failed; keeping the subnets served and the addresses excluded so far");
                return false;
            }
        };
        let mut changed = false;
        let addresses = gateway::own_addresses(&discovery);
        if addresses != self.addresses {
            tracing::debug!(addresses = ?addresses.keys().collect::<Vec<_>>(), "this host's own addresses, left out of any default route it serves");
            self.addresses = addresses;
            self.view = crate::desired::with_own_addresses(&self.compiled, &self.addresses);
            changed = true;
        }
        if !self.acts_as_gateway() {
            return changed;
        }
        let Some(gateway) = &self.view.gateway else {
            return changed;
        };
        match gateway::served(gateway, &discovery) {
            Ok(served) if served != self.served => {
                tracing::info!(subnets = ?served.keys().collect::<Vec<_>>(), "serving");
                self.served = served;
                true
            }
            Ok(_) => changed,
            Err(err) => {
                tracing::warn!(error = %err, "discovery failed; keeping the subnets served so far");
                changed
            }
        }
    }

    fn evaluate_trust(&mut self) -> bool {
        let external = self.config.dataplane == crate::config::DataplaneBackend::External;
        let facts = trust::facts(&self.counters, external);
        let evaluation = enclave_policy::evaluate(&self.view, &facts, Timestamp::now());
        if evaluation == self.evaluation {
            return false;
        }
        self.evaluation = evaluation;
        true
    }

    fn refresh_counters(&mut self, now: Instant) {
        let Some(Ok(stats)) = self.tunnel.as_ref().map(Dataplane::counters) else {
            return;
        };
        let by_key: BTreeMap<String, &str> = self
            .view
            .peers
            .iter()
            .map(|(name, peer)| (peer.public_key.clone(), name.as_str()))
            .collect();
        let mut counters = BTreeMap::new();
        for peer in &stats {
            let Some(name) = by_key.get(&peer.public_key) else {
                continue;
            };
            let previous = self.counters.get(*name);
            let last_rx = match previous {
                Some(p) if p.rx_bytes == peer.rx_bytes => p.last_rx,
                _ if peer.rx_bytes > 0 => Some(now),
                _ => None,
            };
            counters.insert(
                (*name).to_owned(),
                report::PeerCounters {
                    endpoint: peer.endpoint.map(|e| e.to_string()),
                    proven_endpoint: peer.proven_endpoint,
                    last_handshake: peer.last_handshake,
                    rx_bytes: peer.rx_bytes,
                    tx_bytes: peer.tx_bytes,
                    last_rx,
                    drops: peer.drops.clone(),
                },
            );
        }
        self.counters = counters;
    }

    fn publish_status(&self, now: Instant) {
        let mut warnings = self.warnings.clone();
        warnings.extend(self.not_forwarding.clone());
        warnings.extend(self.refused_peers.values().cloned());
        if self.config.dataplane == crate::config::DataplaneBackend::External {
            warnings.extend(trust::external_warning(&self.view));
        }
        let status = report::build(&report::Inputs {
            view: &self.view,
            interface: &self.config.interface,
            counters: &self.counters,
            selector: &self.selector,
            evaluation: &self.evaluation,
            served: self.served.keys().copied().collect(),
            warnings,
            definition_generation: self.applied_generation,
            now,
            wall: SystemTime::now(),
        });
        *self.shared.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
    }

    fn handle_control(&mut self, datagram: &[u8], from: SocketAddr) {
        let IpAddr::V4(source) = from.ip() else {
            return;
        };
        let Some((name, _)) = self.view.peers.iter().find(|(_, p)| p.address == source) else {
            tracing::debug!(%source, "control message from an address that is no peer of ours");
            return;
        };
        let name = name.clone();
        let message = match Message::decode(datagram) {
            Ok(message) => message,
            Err(err) => {
                tracing::debug!(peer = %name, error = %err, "control message dropped");
                return;
            }
        };
        match message {
            Message::Probe { id } => {
                if !self.acts_as_gateway() {
                    return;
                }
                let subnets = self.advertised_to(&name);
                let ack = Message::Ack { id, subnets };
                let _ = self.control.send_to(&ack.encode(), from);
            }
            ack @ Message::Ack { .. } => self.selector.handle_message(&name, ack, Instant::now()),
        }
    }

    /// The subnets this gateway serves now that policy lets `sender` reach through it, with
    /// its trust requirements passing now.
    fn advertised_to(&self, sender: &str) -> Vec<Ipv4Net> {
        let served = self.served.keys().copied().collect();
        crate::desired::advertised(&self.view, &self.evaluation, &served, sender)
    }
}
