//! The agents' side of the server: who is connected to this process, what each was sent, and
//! what each reported.
//!
//! One [`Hub`] per server process. It keeps the latest [`Snapshot`] of the network (the state
//! at one revision, validated once) in a `watch` channel: a commit through this process, a
//! commit by another process on the same PostgreSQL (heard through `LISTEN`), or a periodic
//! look at the revision replaces it. Every connection (`stream`) watches it and decides for
//! itself, with `decide`, what its agent must be sent: a `view` only when its view changed,
//! `pending`, or `revoked` (then the connection closes). The serial of a view is the revision
//! it was compiled at, so it only grows.
//!
//! Views are compiled incrementally: each snapshot carries, for the last [`HISTORY`] steps of
//! the revision, which systems' views each step can have changed
//! ([`enclave_policy::affected`], plain code that compares the networks before and after). A
//! connection whose view was current at an earlier revision, and whose system no step since
//! then names, keeps its view without compiling it: a revoke recompiles the revoked system and
//! its peers, not all 10,000 views. A connection that cannot follow the chain (it fell behind
//! more than [`HISTORY`] steps, or two refreshes raced) compiles and compares hashes as before.
//!
//! The hub also keeps presence: which agents are connected here and what they reported (in
//! memory, for the API), and in the store, apart from the revision, where each agent is
//! connected and when it was last heard from (so a second server and a restarted one know).
//! And it deletes ephemeral systems that stayed disconnected longer than
//! [`Options::ephemeral_after`].
//!
//! While the store is down nothing here changes: connected agents keep the view they have,
//! new connections are served from the last snapshot.

pub(crate) mod endpoints;
pub(crate) mod stream;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use enclave_control_proto::message::{Pending, Reason, Report, ServerMessage};
use enclave_policy::{Affected, Network, SharedCompiler};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::core::Command;
use crate::definition;
use crate::model::{Approval, Presence, State, UnixTime};
use crate::service::Service;

/// How often this server writes that its agents are still connected.
pub const PRESENCE_INTERVAL: Duration = Duration::from_secs(30);

/// At most this many presence rows are written in one transaction. Presence goes through one
/// writer task in chunks of this size, so that a command waiting for SQLite's single connection
/// waits for one chunk (a few milliseconds), never for the rows of 10,000 agents.
pub const PRESENCE_CHUNK: usize = 200;

/// A presence row not refreshed for this long is stale: its server died.
pub const PRESENCE_STALE: Duration = Duration::from_secs(3 * 30);

/// How often the revision is looked at even without a commit or a notification (a safety net
/// for a lost `LISTEN` connection).
const POLL: Duration = Duration::from_secs(5);

/// How many steps of the revision a snapshot remembers the affected views of.
pub const HISTORY: usize = 64;

/// The settings of the agents' side.
#[derive(Debug, Clone)]
pub struct Options {
    /// This server's name in the presence table (which server holds which agent).
    pub server: String,
    /// Ephemeral systems disconnected longer than this are deleted.
    pub ephemeral_after: Duration,
    /// At most this many connections may be in their (unauthenticated) handshake at once.
    pub max_handshakes: usize,
    /// Record endpoints of agents seen on loopback too (tests, where every agent is).
    pub endpoints_from_loopback: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            server: "enclave-control".into(),
            ephemeral_after: Duration::from_secs(10 * 60),
            max_handshakes: 256,
            endpoints_from_loopback: false,
        }
    }
}

/// Seconds since the epoch.
pub(crate) fn now() -> UnixTime {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The network at one revision, as the agents' side needs it.
pub struct Snapshot {
    /// The state.
    pub state: Arc<State>,
    /// The validated network, indexed to compile views; `None` if the state does not
    /// validate (never committed so, but a database edited by hand could hold it): then
    /// nobody is sent anything new.
    compiler: Option<SharedCompiler>,
    /// System names by public key (decoded), persistent: the next snapshot updates a copy.
    by_key: imbl::HashMap<[u8; 32], String>,
    /// The last steps of the revision up to this one, oldest first, with the views each can
    /// have changed.
    history: Vec<Step>,
}

/// One step of the revision, as the agents' side saw it, and the views it can have changed.
#[derive(Debug, Clone)]
struct Step {
    from: i64,
    to: i64,
    affected: Arc<Affected>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("revision", &self.state.revision)
            .field("systems", &self.state.systems.len())
            .field("valid", &self.compiler.is_some())
            .finish()
    }
}

/// A public key's 32 bytes, from base64.
pub(crate) fn key_bytes(text: &str) -> Option<[u8; 32]> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
}

impl Snapshot {
    /// Validates `state` once for every agent.
    pub fn new(state: Arc<State>) -> Self {
        Self::with_network(state, None)
    }

    /// The snapshot of `state`, whose definition validated to `validated` when given (by the
    /// commit that made it); validates it otherwise.
    pub fn with_network(state: Arc<State>, validated: Option<Arc<Network>>) -> Self {
        let network = Self::network_of(&state, validated);
        let by_key = state
            .systems
            .values()
            .filter_map(|s| Some((key_bytes(&s.public_key)?, s.name.clone())))
            .collect();
        Self {
            state,
            compiler: network.map(SharedCompiler::new),
            by_key,
            history: Vec::new(),
        }
    }

    /// The snapshot of `state` (whose definition validated to `validated`, when given), the
    /// revision after `previous`: its keys and its compiler's index are `previous`'s, updated
    /// for the systems that differ (the persistent maps skip what the states share), so that
    /// it costs the change, not the network; and it [`follows`](Snapshot::follows) `previous`.
    pub fn following(
        previous: &Snapshot,
        state: Arc<State>,
        validated: Option<Arc<Network>>,
    ) -> Self {
        use imbl::ordmap::DiffItem;
        let network = Self::network_of(&state, validated);
        let mut by_key = previous.by_key.clone();
        for item in previous.state.systems.diff(&state.systems) {
            let (old, new) = match item {
                DiffItem::Add(_, new) => (None, Some(new)),
                DiffItem::Remove(_, old) => (Some(old), None),
                DiffItem::Update {
                    old: (_, old),
                    new: (_, new),
                } => (Some(old), Some(new)),
            };
            if let Some(key) = old.and_then(|s| key_bytes(&s.public_key)) {
                by_key.remove(&key);
            }
            if let Some(new) = new {
                if let Some(key) = key_bytes(&new.public_key) {
                    by_key.insert(key, new.name.clone());
                }
            }
        }
        let compiler = network.map(|network| match &previous.compiler {
            Some(before) => before.next(network),
            None => SharedCompiler::new(network),
        });
        let mut snapshot = Self {
            state,
            compiler,
            by_key,
            history: Vec::new(),
        };
        snapshot.follows(previous);
        snapshot
    }

    /// The network of `state`: `validated`, or validated now; `None` if it does not validate.
    fn network_of(state: &State, validated: Option<Arc<Network>>) -> Option<Arc<Network>> {
        match validated.map_or_else(
            || definition::validate(state).map(|valid| Arc::new(valid.network)),
            Ok,
        ) {
            Ok(network) => Some(network),
            Err(problems) => {
                tracing::error!(
                    revision = state.revision,
                    problems = problems.len(),
                    "the stored network does not validate; agents keep their views"
                );
                None
            }
        }
    }

    /// Records the step from `previous` to this snapshot: which views it can have changed
    /// (all of them when either network did not validate), after `previous`'s own history.
    pub fn follows(&mut self, previous: &Snapshot) {
        let affected = match (&previous.compiler, &self.compiler) {
            (Some(before), Some(after)) => {
                enclave_policy::affected_shared(before.network(), after.network())
            }
            _ => Affected::All,
        };
        // A set naming most systems is kept as `All`: the steps of a snapshot's history then
        // never hold 10,000 names each (a gateway's edit), and most connections compile anyway.
        let affected = match affected {
            Affected::Systems(names) if names.len() > self.state.systems.len() / 2 => Affected::All,
            other => other,
        };
        let keep = previous.history.len().saturating_sub(HISTORY - 1);
        self.history = previous.history[keep..].to_vec();
        self.history.push(Step {
            from: previous.revision(),
            to: self.revision(),
            affected: Arc::new(affected),
        });
    }

    /// Whether the view of `system` here is the one it had at revision `at`: every step from
    /// `at` to this revision is known, and none can have changed that view.
    fn unchanged_since(&self, system: &str, at: i64) -> bool {
        let mut current = at;
        for step in self.history.iter().filter(|s| s.to > at) {
            if step.from != current || step.affected.contains(system) {
                return false;
            }
            current = step.to;
        }
        current == self.revision()
    }

    /// The revision.
    pub fn revision(&self) -> i64 {
        self.state.revision
    }

    /// The name of the system with this public key.
    pub fn system_of(&self, key: &[u8; 32]) -> Option<&str> {
        self.by_key.get(key).map(String::as_str)
    }
}

/// What an agent was last sent, to send only what changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    /// `pending`.
    Pending,
    /// A view, by the SHA-256 of its JSON, and the revision of the latest snapshot known to
    /// give that same view.
    View {
        /// The hash.
        hash: [u8; 32],
        /// The revision.
        at: i64,
    },
}

/// What to do for one agent at a new snapshot.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Nothing to send.
    Nothing,
    /// Its view is unchanged at this snapshot: remember this instead (a later revision).
    Keep(Sent),
    /// Send this and remember what was sent.
    Send(ServerMessage, Sent),
    /// Send this frame (a `view` message, already JSON: the view is serialised once, for its
    /// hash and for the wire) and remember what was sent.
    View {
        /// The whole message.
        frame: Vec<u8>,
        /// Its serial.
        serial: u64,
        /// What to remember.
        sent: Sent,
    },
    /// Send this and close: the system is revoked or gone.
    Close(ServerMessage),
}

/// What the agent with `key` must be sent at `snapshot`, given what it was sent last.
pub(crate) fn decide(snapshot: &Snapshot, key: &[u8; 32], last: Option<Sent>) -> Decision {
    let Some(system) = snapshot
        .system_of(key)
        .and_then(|name| snapshot.state.systems.get(name))
    else {
        return Decision::Close(ServerMessage::Revoked(Reason {
            reason: "this system was deleted from the network".into(),
        }));
    };
    match system.approval {
        Approval::Revoked => Decision::Close(ServerMessage::Revoked(Reason {
            reason: "this system was revoked by an administrator".into(),
        })),
        Approval::Pending if last == Some(Sent::Pending) => Decision::Nothing,
        Approval::Pending => Decision::Send(
            ServerMessage::Pending(Pending {
                system: system.name.clone(),
                message: format!(
                    "{} waits for an administrator's approval (enclave-control systems approve {})",
                    system.name, system.name
                ),
            }),
            Sent::Pending,
        ),
        Approval::Approved => {
            let Some(compiler) = &snapshot.compiler else {
                return Decision::Nothing;
            };
            let revision = snapshot.revision();
            if let Some(Sent::View { hash, at }) = last {
                if snapshot.unchanged_since(&system.name, at) {
                    return Decision::Keep(Sent::View { hash, at: revision });
                }
            }
            let view = match compiler.compile(&system.name) {
                Ok(view) => view,
                Err(e) => {
                    tracing::warn!(system = %system.name, error = %e, "cannot compile a view");
                    return Decision::Nothing;
                }
            };
            let Ok(json) = serde_json::to_vec(&view) else {
                return Decision::Nothing;
            };
            let hash: [u8; 32] = Sha256::digest(&json).into();
            let sent = Sent::View { hash, at: revision };
            if matches!(last, Some(Sent::View { hash: before, .. }) if before == hash) {
                return Decision::Keep(sent);
            }
            let serial = u64::try_from(revision).unwrap_or(0);
            Decision::View {
                frame: view_frame(serial, &json),
                serial,
                sent,
            }
        }
    }
}

/// The JSON of `ServerMessage::View` with `serial` and the view already serialised as
/// `view` (what `serde_json::to_vec` of the message gives; a test holds them equal).
fn view_frame(serial: u64, view: &[u8]) -> Vec<u8> {
    let head = format!("{{\"type\":\"view\",\"serial\":{serial},\"view\":");
    let mut frame = Vec::with_capacity(head.len() + view.len() + 1);
    frame.extend_from_slice(head.as_bytes());
    frame.extend_from_slice(view);
    frame.push(b'}');
    frame
}

/// One agent connected to this server.
#[derive(Debug)]
pub(crate) struct Agent {
    id: u64,
    key: [u8; 32],
    public_key: String,
    observed: SocketAddr,
    connected_since: UnixTime,
    agent_version: String,
    hostname: Option<String>,
    live: Mutex<Live>,
}

/// What changes while an agent is connected.
#[derive(Debug, Default)]
struct Live {
    system: String,
    last_heard: UnixTime,
    report: Option<Arc<Report>>,
    sent: Option<u64>,
    acked: Option<u64>,
    /// The discovered subnets last asked to be recorded (in flight or done), so identical
    /// reports record nothing.
    discovered: Option<BTreeMap<ipnet::Ipv4Net, crate::model::DiscoveredSubnet>>,
    /// Since when (as this server heard it) each routed subnet has had its active gateway.
    active_since: BTreeMap<ipnet::Ipv4Net, UnixTime>,
}

impl Agent {
    fn live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn endpoint(&self, listen_port: Option<u16>) -> String {
        match listen_port {
            Some(port) => SocketAddr::new(self.observed.ip(), port).to_string(),
            None => self.observed.ip().to_string(),
        }
    }
}

/// An agent connected here, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AgentInfo {
    /// The server holding the connection.
    pub server: String,
    /// Since when.
    pub connected_since: UnixTime,
    /// When it was last heard from.
    pub last_seen: UnixTime,
    /// The underlay address the server sees (with the WireGuard port, once reported).
    pub endpoint: String,
    /// The agent's software version.
    pub agent_version: String,
    /// Its host name.
    pub hostname: Option<String>,
    /// The serial of the last view sent.
    pub serial_sent: Option<u64>,
    /// The serial of the last view the agent said it applied.
    pub serial_applied: Option<u64>,
    /// Its last report (peers, active gateways, discovered subnets, warnings).
    pub report: Option<Arc<Report>>,
    /// Since when (as this server heard it) each subnet of the report has had its active
    /// gateway.
    pub active_since: BTreeMap<ipnet::Ipv4Net, UnixTime>,
}

/// Where a system's agent is, across servers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Seen {
    /// Connected to some server now.
    pub connected: bool,
    /// When it was last heard from.
    pub last_seen: Option<UnixTime>,
    /// Which server holds (or last held) it.
    pub server: Option<String>,
    /// The underlay address that server sees.
    pub endpoint: Option<String>,
}

/// The agents' side of one server process.
#[derive(Debug)]
pub struct Hub {
    service: Arc<Service>,
    options: Options,
    snapshot: watch::Sender<Option<Arc<Snapshot>>>,
    agents: Mutex<BTreeMap<u64, Arc<Agent>>>,
    /// Last heard, by public key, of agents that were connected here (also gone ones).
    heard: Mutex<HashMap<String, UnixTime>>,
    next_id: AtomicU64,
    handshakes: Arc<Semaphore>,
    stop: watch::Sender<bool>,
    /// Observed endpoints waiting to be recorded.
    endpoints: endpoints::Recorder,
    /// Counts what the portal may show differently: agents connecting, disconnecting or
    /// reporting here, and new snapshots.
    changes: watch::Sender<u64>,
    /// Presence rows waiting for the writer, by public key (a later row replaces an earlier).
    presence: Mutex<HashMap<String, Presence>>,
    /// Wakes the presence writer.
    presence_queued: tokio::sync::Notify,
}

impl Hub {
    /// A hub over `service`. Nothing runs until [`Hub::start`].
    pub fn new(service: Arc<Service>, options: Options) -> Self {
        let handshakes = Arc::new(Semaphore::new(options.max_handshakes.max(1)));
        Self {
            service,
            options,
            snapshot: watch::Sender::new(None),
            agents: Mutex::new(BTreeMap::new()),
            heard: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            handshakes,
            stop: watch::Sender::new(false),
            endpoints: endpoints::Recorder::default(),
            changes: watch::Sender::new(0),
            presence: Mutex::new(HashMap::new()),
            presence_queued: tokio::sync::Notify::new(),
        }
    }

    /// The service.
    pub fn service(&self) -> &Arc<Service> {
        &self.service
    }

    /// The options.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Starts the background work: following the revision (commits here, `LISTEN` for other
    /// servers, a periodic look), writing presence, deleting ephemeral systems. It ends at
    /// [`Hub::stop`].
    pub async fn start(self: &Arc<Self>) {
        self.refresh().await;
        let listen = match self.service.store().listen().await {
            Ok(listen) => listen,
            Err(e) => {
                tracing::warn!(error = %e, source = ?std::error::Error::source(&e),
                    "cannot listen for other servers' commits; looking every 5 s instead");
                None
            }
        };
        tokio::spawn(Arc::clone(self).follow(listen));
        tokio::spawn(Arc::clone(self).heartbeat());
        tokio::spawn(Arc::clone(self).presence_writer());
        tokio::spawn(Arc::clone(self).janitor());
        tokio::spawn(Arc::clone(self).record_endpoints());
    }

    /// Stops the background work and closes every agent's connection.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// As [`Hub::stop`], after recording that this server's agents are no longer connected
    /// here (so other servers do not wait for the rows to go stale). A store that is down is
    /// not waited for.
    pub async fn shutdown(&self) {
        let mut rows: HashMap<String, Presence> = std::mem::take(&mut *self.presence_queue());
        for agent in self.agents().values() {
            let row = self.presence_row(agent, false);
            rows.insert(row.public_key.clone(), row);
        }
        let rows: Vec<Presence> = rows.into_values().collect();
        let write = self.service.store().put_presence(&rows);
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(2), write).await {
            tracing::debug!(error = %e, "cannot record the agents' disconnection");
        }
        self.stop();
    }

    /// A permit for one unauthenticated connection, if fewer than
    /// [`Options::max_handshakes`] are in their handshake.
    pub(crate) fn handshakes(&self) -> Result<OwnedSemaphorePermit, TryAcquireError> {
        Arc::clone(&self.handshakes).try_acquire_owned()
    }

    fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    fn agents(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<Agent>>> {
        self.agents.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn heard_map(&self) -> MutexGuard<'_, HashMap<String, UnixTime>> {
        self.heard.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The latest snapshot, read now if there is none yet; `None` while the store cannot be
    /// read and never was.
    pub async fn current(&self) -> Option<Arc<Snapshot>> {
        if let Some(snapshot) = self.snapshot.borrow().clone() {
            return Some(snapshot);
        }
        self.refresh().await;
        self.snapshot.borrow().clone()
    }

    /// Reads the state and publishes a new snapshot if the revision moved.
    async fn refresh(&self) {
        let state = match self.service.state().await {
            Ok(state) => state,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the network; agents keep their views");
                return;
            }
        };
        let current = self.snapshot.borrow().as_ref().map(|s| s.revision());
        if current.is_some_and(|r| r >= state.revision) {
            return;
        }
        let validated = self.service.validated(state.revision);
        let previous = self.snapshot.borrow().clone();
        let snapshot = match previous {
            Some(previous) => Snapshot::following(&previous, Arc::clone(&state), validated),
            None => Snapshot::with_network(Arc::clone(&state), validated),
        };
        if let Some(compiler) = &snapshot.compiler {
            self.service
                .remember(state.revision, Arc::clone(compiler.network()));
        }
        let snapshot = Arc::new(snapshot);
        tracing::debug!(
            revision = snapshot.revision(),
            "new snapshot for the agents"
        );
        let published = self.snapshot.send_if_modified(|slot| {
            // Another refresh may have published a newer one meanwhile.
            if slot
                .as_ref()
                .is_some_and(|s| s.revision() >= snapshot.revision())
            {
                false
            } else {
                *slot = Some(snapshot);
                true
            }
        });
        if published {
            self.touched();
        }
    }

    /// Changes whenever an agent connects, disconnects or reports here, or the network moves
    /// to a new revision: what the portal's live pages wait for.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn touched(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Keeps an agent's report, and since when each subnet has had its active gateway.
    pub(crate) fn reported(&self, agent: &Agent, report: Arc<Report>) {
        let now = now();
        {
            let mut live = agent.live();
            let since = report
                .active_gateways
                .iter()
                .map(|(subnet, active)| {
                    let kept = live
                        .report
                        .as_ref()
                        .and_then(|r| r.active_gateways.get(subnet))
                        .is_some_and(|before| before.gateway == active.gateway);
                    let at = if kept {
                        live.active_since.get(subnet).copied().unwrap_or(now)
                    } else {
                        now
                    };
                    (*subnet, at)
                })
                .collect();
            live.active_since = since;
            let shown = live
                .report
                .as_deref()
                .is_some_and(|before| same_shown(before, &report));
            live.report = Some(report);
            if shown {
                // Only counters moved: nothing the portal shows live.
                return;
            }
        }
        self.touched();
    }

    async fn follow(self: Arc<Self>, mut listen: Option<watch::Receiver<u64>>) {
        let mut commits = self.service.commits();
        let mut stop = self.stopping();
        loop {
            tokio::select! {
                changed = commits.changed() => if changed.is_err() { return },
                () = heard(&mut listen) => {}
                () = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => return,
            }
            self.refresh().await;
        }
    }

    /// Queues every connected agent's presence now and then.
    async fn heartbeat(self: Arc<Self>) {
        let mut stop = self.stopping();
        loop {
            tokio::select! {
                () = tokio::time::sleep(PRESENCE_INTERVAL) => {}
                _ = stop.changed() => return,
            }
            // Queued under the agents' lock: an agent that disconnects meanwhile queues its
            // last row after this one, never before (which would mark it connected again).
            let agents = self.agents();
            self.queue_presence(agents.values().map(|a| self.presence_row(a, true)));
            drop(agents);
        }
    }

    fn presence_queue(&self) -> MutexGuard<'_, HashMap<String, Presence>> {
        self.presence.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues presence rows for the writer.
    fn queue_presence(&self, rows: impl IntoIterator<Item = Presence>) {
        let mut queue = self.presence_queue();
        for row in rows {
            queue.insert(row.public_key.clone(), row);
        }
        drop(queue);
        self.presence_queued.notify_one();
    }

    /// Writes queued presence rows, [`PRESENCE_CHUNK`] per transaction, letting whoever waits
    /// for the database in between (a command, on SQLite's single connection). Rows that fail
    /// are dropped: the next heartbeat writes them again.
    async fn presence_writer(self: Arc<Self>) {
        let mut stop = self.stopping();
        loop {
            tokio::select! {
                () = self.presence_queued.notified() => {}
                _ = stop.changed() => return,
            }
            loop {
                let chunk: Vec<Presence> = {
                    let mut queue = self.presence_queue();
                    let keys: Vec<String> = queue.keys().take(PRESENCE_CHUNK).cloned().collect();
                    keys.iter().filter_map(|k| queue.remove(k)).collect()
                };
                if chunk.is_empty() {
                    break;
                }
                if let Err(e) = self.service.store().put_presence(&chunk).await {
                    tracing::debug!(error = %e, rows = chunk.len(), "cannot write presence");
                }
                tokio::task::yield_now().await;
            }
        }
    }

    fn presence_row(&self, agent: &Agent, connected: bool) -> Presence {
        let live = agent.live();
        Presence {
            public_key: agent.public_key.clone(),
            server: self.options.server.clone(),
            connected,
            last_seen: live.last_heard,
            endpoint: Some(agent.endpoint(live.report.as_ref().and_then(|r| r.listen_port))),
        }
    }

    fn write_presence(&self, row: Presence) {
        self.queue_presence([row]);
    }

    /// Registers an authenticated agent.
    pub(crate) fn connected(
        self: &Arc<Self>,
        key: [u8; 32],
        system: &str,
        observed: SocketAddr,
        agent_version: String,
        hostname: Option<String>,
    ) -> Arc<Agent> {
        let now = now();
        let agent = Arc::new(Agent {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            key,
            public_key: base64::engine::general_purpose::STANDARD.encode(key),
            observed,
            connected_since: now,
            agent_version,
            hostname,
            live: Mutex::new(Live {
                system: system.to_owned(),
                last_heard: now,
                ..Live::default()
            }),
        });
        self.agents().insert(agent.id, Arc::clone(&agent));
        self.write_presence(self.presence_row(&agent, true));
        self.touched();
        agent
    }

    /// Unregisters an agent whose connection ended.
    pub(crate) fn disconnected(self: &Arc<Self>, agent: &Agent) {
        self.agents().remove(&agent.id);
        let last = agent.live().last_heard;
        self.heard_map().insert(agent.public_key.clone(), last);
        let still_here = self.agents().values().any(|a| a.key == agent.key);
        if !still_here {
            self.write_presence(self.presence_row(agent, false));
            self.forget_endpoint(agent);
        }
        self.touched();
    }

    /// The agent was heard from.
    pub(crate) fn heard_from(agent: &Agent) {
        agent.live().last_heard = now();
    }

    /// Agents connected here, by system name.
    pub fn connected_here(&self) -> BTreeMap<String, AgentInfo> {
        self.agents().values().map(|a| self.info(a)).collect()
    }

    /// The agents of `systems` connected here, by system name.
    pub fn connected_here_of(
        &self,
        systems: &std::collections::BTreeSet<&str>,
    ) -> BTreeMap<String, AgentInfo> {
        self.agents()
            .values()
            .filter(|a| systems.contains(a.live().system.as_str()))
            .map(|a| self.info(a))
            .collect()
    }

    fn info(&self, a: &Agent) -> (String, AgentInfo) {
        let live = a.live();
        let info = AgentInfo {
            server: self.options.server.clone(),
            connected_since: a.connected_since,
            last_seen: live.last_heard,
            endpoint: a.endpoint(live.report.as_ref().and_then(|r| r.listen_port)),
            agent_version: a.agent_version.clone(),
            hostname: a.hostname.clone(),
            serial_sent: live.sent,
            serial_applied: live.acked,
            report: live.report.clone(),
            active_since: live.active_since.clone(),
        };
        (live.system.clone(), info)
    }

    /// Where every agent is, by public key: this server's own knowledge over the store's
    /// presence rows (which may be unreadable: then only this server's).
    pub async fn seen(&self) -> HashMap<String, Seen> {
        let now = now();
        let stale = i64::try_from(PRESENCE_STALE.as_secs()).unwrap_or(i64::MAX);
        let mut seen: HashMap<String, Seen> = HashMap::new();
        match self.service.store().presence().await {
            Ok(rows) => {
                for row in rows {
                    seen.insert(
                        row.public_key,
                        Seen {
                            connected: row.connected && now - row.last_seen <= stale,
                            last_seen: Some(row.last_seen),
                            server: Some(row.server),
                            endpoint: row.endpoint,
                        },
                    );
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot read presence"),
        }
        for (key, last) in self.heard_map().iter() {
            let entry = seen.entry(key.clone()).or_default();
            if entry.last_seen.is_none_or(|t| t < *last) {
                entry.last_seen = Some(*last);
                entry.server = Some(self.options.server.clone());
            }
        }
        for agent in self.agents().values() {
            let live = agent.live();
            let entry = seen.entry(agent.public_key.clone()).or_default();
            entry.connected = true;
            entry.last_seen = Some(
                entry
                    .last_seen
                    .map_or(live.last_heard, |t| t.max(live.last_heard)),
            );
            entry.server = Some(self.options.server.clone());
            entry.endpoint = Some(agent.endpoint(live.report.as_ref().and_then(|r| r.listen_port)));
        }
        seen
    }

    /// Deletes ephemeral systems disconnected for longer than the option says.
    async fn janitor(self: Arc<Self>) {
        let every = (self.options.ephemeral_after / 4)
            .clamp(Duration::from_secs(1), Duration::from_secs(30));
        let mut stop = self.stopping();
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            self.sweep().await;
        }
    }

    async fn sweep(&self) {
        let Some(snapshot) = self.snapshot.borrow().clone() else {
            return;
        };
        let ephemeral: Vec<_> = snapshot
            .state
            .systems
            .values()
            .filter(|s| s.ephemeral)
            .collect();
        if ephemeral.is_empty() {
            return;
        }
        let seen = self.seen().await;
        let now = now();
        let after = i64::try_from(self.options.ephemeral_after.as_secs()).unwrap_or(i64::MAX);
        for system in ephemeral {
            let seen = seen.get(&system.public_key).cloned().unwrap_or_default();
            if seen.connected {
                continue;
            }
            let since = seen
                .last_seen
                .unwrap_or(system.created_at)
                .max(system.created_at);
            if now - since < after {
                continue;
            }
            let ctx = crate::core::Ctx {
                actor: "server:ephemeral".into(),
                now,
            };
            let command = Command::Delete {
                name: system.name.clone(),
            };
            match self.service.execute(command, &ctx).await {
                Ok(_) => {
                    tracing::info!(system = %system.name, "deleted an ephemeral system that stayed disconnected")
                }
                Err(e) => {
                    tracing::debug!(system = %system.name, error = %e, "cannot delete an ephemeral system")
                }
            }
        }
    }

    /// The serial the agent of `system` last said it applied (for tests and benchmarks).
    pub fn applied(&self, system: &str) -> Option<u64> {
        self.agents()
            .values()
            .filter_map(|a| {
                let live = a.live();
                (live.system == system).then_some(live.acked).flatten()
            })
            .max()
    }
}

/// Whether two reports show the same but for counters (bytes, last activity, round trip).
fn same_shown(a: &Report, b: &Report) -> bool {
    a.serial == b.serial
        && a.listen_port == b.listen_port
        && a.active_gateways == b.active_gateways
        && a.discovered == b.discovered
        && a.warnings == b.warnings
        && a.peers.len() == b.peers.len()
        && a.peers
            .iter()
            .zip(&b.peers)
            .all(|((name_a, pa), (name_b, pb))| {
                name_a == name_b && pa.state == pb.state && pa.endpoint == pb.endpoint
            })
}

/// Waits for the next notification of another server's commit; forever without a listener.
async fn heard(listen: &mut Option<watch::Receiver<u64>>) {
    match listen {
        Some(receiver) => {
            if receiver.changed().await.is_err() {
                // The listener ended: fall back to looking now and then.
                *listen = None;
            }
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
