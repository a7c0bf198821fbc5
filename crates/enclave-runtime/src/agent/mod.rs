//! The agent's I/O shell: `enclave-agent run` and `enclave-gw run`.
//!
//! One task on a single-threaded tokio runtime owns the state and waits for events (see
//! `agent/events.rs` for what wakes it and why): a new view from the source (the network definition,
//! see [`crate::source`]), a signal, a control message on the tunnel, a status question on the
//! control socket, a change of the host's interfaces (on a gateway), or a timer that has a
//! reason (the gateway selector's probes, a retry, a judgement of trust that can change). After
//! each, whenever the desired state changed, it hands the difference to the data plane, the
//! route manager and (on a gateway) the NAT manager. An idle agent does not wake.
//!
//! A view the source refuses leaves the last good one in force. SIGINT or SIGTERM stop the
//! agent; stopping removes everything it made. The data plane's packet threads run beside it.

mod apply;
mod control_socket;
mod dataplane;
mod events;
mod gateway;
mod psk;
mod report;
mod trust;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use enclave_policy::{Evaluation, Timestamp, View};
use enclave_wg::PrivateKey;
use ipnet::Ipv4Net;
use tokio::sync::{mpsc, watch};

use self::dataplane::Dataplane;

pub use control_socket::query_status;
pub use report::{describe, Internet};

use crate::config::{read_private_key, AgentConfig, ViewSource};
use crate::control::CONTROL_PORT;
use crate::desired::{Desired, Egress};
use crate::failover::{Candidate, Selector};
use crate::source::{AgentReport, Reports, SourceEvent, Update};
use crate::status::Status;
use crate::{Error, Result};

/// Which binary runs the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `enclave-agent`: a sender or receiver; never forwards.
    Agent,
    /// `enclave-gw`: also serves subnets when the definition allows it to act as a gateway.
    Gateway,
}

/// Where this system's view comes from: its first view (whose errors stop the agent at start)
/// and the channel of what follows. The one place that picks a source, and the only one that
/// looks at where the configuration says the view is.
///
/// `None`: stopped (SIGINT, SIGTERM) while waiting for a control server's first view.
async fn open_source(
    config: &AgentConfig,
    public_key: &str,
    reports: Reports,
) -> Result<Option<(Update, mpsc::Receiver<SourceEvent>)>> {
    match &config.source {
        ViewSource::File(network_file) => {
            // A definition file reports to nobody.
            drop(reports);
            crate::file_source::open(network_file, public_key).map(Some)
        }
        ViewSource::Control(_) => crate::managed::open(config, reports).await,
    }
}

/// A random number from the operating system, for the first probe id.
fn random_u64() -> u64 {
    rand_core::Rng::next_u64(&mut rand_core::UnwrapErr(getrandom::SysRng))
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

/// The view of a revoked system: itself, with no peer, no route and no gateway role.
fn revoked_view(compiled: &View) -> View {
    View {
        system: compiled.system.clone(),
        address: compiled.address,
        overlay: compiled.overlay,
        enabled: compiled.enabled,
        peers: BTreeMap::new(),
        routes: BTreeMap::new(),
        gateway: None,
        trust_requirements: compiled.trust_requirements.clone(),
    }
}

/// Opens the control port on the overlay address, bound to the tunnel interface: a datagram
/// that arrives on any other interface (say, forged on the underlay with an overlay source
/// address) never reaches it.
fn control_port(interface: &str, address: Ipv4Addr) -> std::io::Result<tokio::net::UdpSocket> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    socket.bind_device(Some(interface.as_bytes()))?;
    socket.bind(&SocketAddr::from((address, CONTROL_PORT)).into())?;
    socket.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(socket.into())
}

/// Runs the agent in the foreground until SIGINT or SIGTERM, on a tokio runtime of its own.
pub fn run(config: AgentConfig, role: Role) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::EventLoop)?;
    runtime.block_on(serve(config, role))
}

/// Runs the agent until SIGINT or SIGTERM, in the current tokio runtime.
pub async fn serve(config: AgentConfig, role: Role) -> Result<()> {
    let signals = events::Signals::new()?;
    let key_text = read_private_key(&config.private_key_file)?;
    let private_key = crate::config::decode_key(&key_text)
        .map(|bytes| PrivateKey::from_bytes(*bytes))
        .ok_or_else(|| Error::KeyText {
            path: config.private_key_file.clone(),
        })?;
    drop(key_text);
    let public_key = private_key.public_key().to_base64();
    let (reports, reports_rx) = watch::channel(None);
    let Some((first, source)) = open_source(&config, &public_key, reports_rx).await? else {
        return Ok(());
    };
    for warning in &first.warnings {
        tracing::warn!("{warning}");
    }
    let view = Arc::new(first.view);
    tracing::info!(system = %view.system, address = %view.address, origin = %first.origin, "this system found in its view");
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
    let (_control_socket, questions) =
        control_socket::ControlSocket::start(&config.control_socket())?;

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
        compiled: Arc::clone(&view),
        addresses: BTreeMap::new(),
        evaluation: Evaluation { grants: Vec::new() },
        config,
        role,
        view,
        tunnel: Some(tunnel),
        routes,
        nat: None,
        control,
        served: BTreeMap::new(),
        discovery: None,
        applied: None,
        counters: BTreeMap::new(),
        warnings: first.warnings,
        problem: None,
        revoked: None,
        failed: BTreeSet::new(),
        retry_at: None,
        not_forwarding: None,
        definition_generation: 1,
        applied_generation: 0,
        psks: BTreeMap::new(),
        refused_peers: BTreeMap::new(),
        reports,
        timers: events::Timers::default(),
        monitor: None,
    };
    agent.selector.set_plan(plan(&agent.view), Instant::now());
    let result = agent.run_loop(signals, source, questions).await;
    agent.shutdown();
    result
}

struct Agent {
    config: AgentConfig,
    role: Role,
    /// The view as the source gave it last.
    compiled: Arc<View>,
    /// The view applied: `compiled` itself (shared, not copied), or on a gateway that serves a
    /// default route a copy with its own interface addresses left out of it
    /// ([`crate::desired::with_own_addresses`]); with nothing in it while this system is
    /// revoked ([`revoked_view`]).
    view: Arc<View>,
    /// This host's IPv4 interface addresses and their interfaces, as last discovered (on a
    /// system whose view makes it a gateway).
    addresses: BTreeMap<Ipv4Addr, String>,
    tunnel: Option<Dataplane>,
    routes: enclave_route::RouteManager,
    nat: Option<enclave_nat::NatManager>,
    control: tokio::net::UdpSocket,
    selector: Selector,
    evaluation: Evaluation,
    served: BTreeMap<Ipv4Net, Egress>,
    /// What discovery found last (on a system whose view makes it a gateway).
    discovery: Option<enclave_discovery::Discovery>,
    applied: Option<Desired>,
    counters: BTreeMap<String, report::PeerCounters>,
    /// The view's warnings, and route conflicts met since it came.
    warnings: Vec<String>,
    /// Why the source's newest view is not in force (see [`SourceEvent::Problem`]).
    problem: Option<String>,
    /// Why this system may no longer take part (see [`SourceEvent::Revoked`]).
    revoked: Option<String>,
    /// Parts whose last apply failed, retried at `retry_at`.
    failed: BTreeSet<&'static str>,
    /// When the failed parts are tried again.
    retry_at: Option<Instant>,
    /// Why this gateway does not forward although it should (its rules could not be applied),
    /// shown in status until an apply succeeds.
    not_forwarding: Option<String>,
    /// How many views the source gave that were accepted.
    definition_generation: u64,
    /// The generation of the view that the last apply used (see
    /// [`crate::status::Status::definition_generation`]).
    applied_generation: u64,
    /// The pre-shared keys given to the data plane, by peer.
    psks: BTreeMap<String, psk::Psk>,
    /// Peers left out of the data plane (their pre-shared key file is unusable), with why.
    refused_peers: BTreeMap<String, String>,
    /// Where the agent's reports go (to a managed source; a file source has none).
    reports: watch::Sender<Option<Arc<AgentReport>>>,
    /// When something is due, and why.
    timers: events::Timers,
    /// The subscription to interface changes (on a system whose view makes it a gateway).
    monitor: Option<events::Monitor>,
}

impl Agent {
    fn acts_as_gateway(&self) -> bool {
        self.role == Role::Gateway && self.view.enabled && self.view.gateway.is_some()
    }

    /// Sets the view in force from `compiled`, the addresses found and revocation.
    fn refresh_view(&mut self) {
        self.view = match self.revoked {
            Some(_) => Arc::new(revoked_view(&self.compiled)),
            None => crate::desired::with_own_addresses(&self.compiled, &self.addresses),
        };
    }

    /// Takes what the source says. Returns whether the desired state may have changed.
    fn take(&mut self, event: SourceEvent, now: Instant) -> bool {
        self.timers.report_due = true;
        match event {
            SourceEvent::Update(update) => self.take_update(*update, now),
            SourceEvent::Problem(text) => {
                tracing::warn!(problem = %text, "the source's newest view is not in force");
                self.problem = Some(text);
                false
            }
            SourceEvent::Clear => {
                self.problem = None;
                false
            }
            SourceEvent::Revoked(reason) => {
                tracing::error!(%reason, "this system may no longer take part: removing every peer, route and NAT rule");
                self.revoked = Some(reason);
                self.served.clear();
                self.refresh_view();
                self.selector.set_plan(BTreeMap::new(), now);
                true
            }
        }
    }

    /// Puts a new view in force. Returns whether it differs from the one in force.
    fn take_update(&mut self, update: Update, now: Instant) -> bool {
        let Update {
            view,
            warnings,
            origin,
        } = update;
        if view.address != self.compiled.address {
            let text = format!(
                "this system's virtual address changed from {} to {}: restart the agent to use it; until then the old view stays in force",
                self.compiled.address, view.address
            );
            tracing::error!("{text}");
            self.problem = Some(text);
            return false;
        }
        self.problem = None;
        self.warnings = warnings;
        self.definition_generation += 1;
        let was_revoked = self.revoked.take().is_some();
        if !was_revoked && view == *self.compiled {
            // Nothing to apply: in force as it is.
            if self.applied.is_some() && self.failed.is_empty() {
                self.applied_generation = self.definition_generation;
            }
            return false;
        }
        tracing::info!(%origin, "new view");
        self.compiled = Arc::new(view);
        self.refresh_view();
        self.selector.set_plan(plan(&self.view), now);
        true
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
            self.refresh_view();
            changed = true;
        }
        if self.discovery.as_ref() != Some(&discovery) {
            self.timers.report_due = true;
        }
        let served = self
            .view
            .gateway
            .as_ref()
            .filter(|_| self.acts_as_gateway())
            .map(|gateway| gateway::served(gateway, &discovery));
        self.discovery = Some(discovery);
        match served {
            Some(Ok(served)) if served != self.served => {
                tracing::info!(subnets = ?served.keys().collect::<Vec<_>>(), "serving");
                self.served = served;
                true
            }
            Some(Err(err)) => {
                tracing::warn!(error = %err, "discovery failed; keeping the subnets served so far");
                changed
            }
            Some(Ok(_)) | None => changed,
        }
    }

    /// Judges trust requirements and active hours again, reading the counters first when the
    /// view needs facts; sets when to judge next. Returns whether the outcome changed.
    fn evaluate_trust(&mut self, now: Instant) -> bool {
        let external = self.config.dataplane == crate::config::DataplaneBackend::External;
        let wall = SystemTime::now();
        if !external && trust::needs_facts(&self.view) {
            self.refresh_counters(now);
        }
        self.timers.trust_at = trust::next_judgement(&self.view, external, wall).map(|d| now + d);
        let facts = trust::facts(&self.counters, external);
        let evaluation = enclave_policy::evaluate(&self.view, &facts, Timestamp::now());
        if evaluation == self.evaluation {
            return false;
        }
        self.evaluation = evaluation;
        self.timers.report_due = true;
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
            // When the agent saw new bytes: it reads the counters when it is asked for its
            // status or judges trust, so this is when it looked, not when they came.
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

    /// The status now, from the counters as last read.
    fn status(&self, now: Instant) -> Status {
        let mut warnings = self.warnings.clone();
        warnings.extend(self.revoked.as_ref().map(|reason| {
            format!(
                "this system may no longer take part ({reason}): every peer, route and NAT rule of ours is removed until its source gives it a view again"
            )
        }));
        warnings.extend(self.problem.clone());
        warnings.extend(self.not_forwarding.clone());
        warnings.extend(self.refused_peers.values().cloned());
        if self.config.dataplane == crate::config::DataplaneBackend::External {
            warnings.extend(trust::external_warning(&self.view));
        }
        report::build(&report::Inputs {
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
        })
    }

    /// Publishes the agent's report for its source, when anyone listens.
    fn publish(&mut self, now: Instant) {
        if self.reports.receiver_count() == 0 {
            return;
        }
        self.refresh_counters(now);
        let report = AgentReport {
            status: self.status(now),
            discovered: self
                .discovery
                .clone()
                .filter(|_| self.view.gateway.is_some()),
        };
        self.reports.send_replace(Some(Arc::new(report)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revoked_system_wants_no_peer_route_or_nat_rule() {
        const EXAMPLE: &str = include_str!("../../../../docs/examples/network.toml");
        let loaded = enclave_policy::load("network.toml", EXAMPLE).unwrap();
        let evaluation = Evaluation { grants: Vec::new() };
        // A gateway with peers, serving its subnets, and a sender with routes.
        for system in ["menlo-gw-1", "laptop"] {
            let view = enclave_policy::compile(&loaded.network, system).unwrap();
            let served: BTreeMap<Ipv4Net, Egress> = view
                .gateway
                .iter()
                .flat_map(|g| g.subnets.keys())
                .map(|net| {
                    let egress = Egress {
                        interface: "lan0".to_owned(),
                        address: Ipv4Addr::new(192, 168, 77, 1),
                    };
                    (*net, egress)
                })
                .collect();
            let active: BTreeMap<Ipv4Net, String> = view
                .routes
                .iter()
                .filter_map(|(net, r)| Some((*net, r.candidates.first()?.gateway.clone())))
                .collect();
            let before = crate::desired::desired(&view, "enclave0", &active, &evaluation, &served);
            assert!(!before.peers.is_empty(), "{system} has peers to lose");
            let revoked = revoked_view(&view);
            assert!(revoked.gateway.is_none() && plan(&revoked).is_empty());
            // The agent gives the selector the revoked view's empty plan: no subnet is active.
            let mut selector = Selector::new();
            selector.set_plan(plan(&revoked), Instant::now());
            let active: BTreeMap<Ipv4Net, String> = selector
                .subnets()
                .into_iter()
                .filter_map(|(net, s)| Some((net, s.active?)))
                .collect();
            let after =
                crate::desired::desired(&revoked, "enclave0", &active, &evaluation, &served);
            assert!(after.peers.is_empty(), "{system}: {:?}", after.peers.keys());
            assert!(after.routes.is_empty() && !after.default_route, "{system}");
            assert!(after.nat.is_none(), "{system}");
            assert_eq!(revoked.address, view.address);
        }
    }
}
