//! What wakes the agent, and nothing else:
//!
//! - **signals**: SIGINT and SIGTERM stop it; SIGHUP reads the pre-shared key files again
//!   (the file source reads the definition again on its own SIGHUP);
//! - **the source**: a new view, a problem with the newest one, a revocation;
//! - **the control port**: probes and acknowledgements from peers over the tunnel;
//! - **the control socket**: a status question, answered with counters read then;
//! - **interface changes** (a system whose view makes it a gateway): the kernel's rtnetlink
//!   notifications of links, addresses and routes, after which discovery looks again
//!   ([`DISCOVER_SETTLE`] later, so that a burst is looked at once);
//! - **timers, each with a reason**: the gateway selector's next probe or deadline
//!   (`poll_timeout`); a retry of a part whose apply failed; the next moment the judgement of
//!   trust can change by itself ([`super::trust::next_judgement`]); the reconnection of lost
//!   gateways, only while one is lost ([`RECONNECT_EVERY`]); a report put off so that reports
//!   go out at most every [`REPORT_AT_MOST_EVERY`]; and the tunnel's liveness
//!   ([`LIVENESS_EVERY`]).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

use super::control_socket::Question;
use super::dataplane::Dataplane;
use super::Agent;
use crate::control::{Message, CONTROL_PORT};
use crate::source::SourceEvent;
use crate::{Error, Result};

/// How often the sessions of gateways that do not answer are dropped while any does not, so
/// that the next probe starts a fresh handshake: a restarted gateway has forgotten the old
/// session, and a gateway that added us after we sent our initiation ignored it; WireGuard
/// alone would retry only after REKEY_TIMEOUT (5 s) or notice after 15 s or more.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);
/// How long after an interface notification discovery looks (the rest of a burst arrives).
const DISCOVER_SETTLE: Duration = Duration::from_millis(20);
/// How often discovery looks when the kernel's notifications cannot be subscribed to.
const DISCOVER_FALLBACK: Duration = Duration::from_secs(1);
/// Control datagrams taken at one wake-up after the first.
const CONTROL_BATCH: usize = 64;
/// The shortest time between two reports to the source.
const REPORT_AT_MOST_EVERY: Duration = Duration::from_millis(250);
/// How often the agent checks that its tunnel still runs. The data plane's packet threads
/// publish their end only as a flag (an interface deleted under them, a UAPI socket removed),
/// which nothing announces; a check is an atomic load.
const LIVENESS_EVERY: Duration = Duration::from_secs(1);

/// The stop and reload signals, installed before anything else starts.
pub(super) struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Signals {
    pub(super) fn new() -> Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).map_err(Error::Signals)?,
            terminate: signal(SignalKind::terminate()).map_err(Error::Signals)?,
            hangup: signal(SignalKind::hangup()).map_err(Error::Signals)?,
        })
    }
}

/// Gives the memory that the allocator holds free back to the system. glibc keeps freed memory
/// inside its heap for later allocations, and a new view's transient copies (the definition
/// parsed, the views compiled and compared, the desired state built) or a status answer for a
/// thousand peers leave megabytes of it, which would stay resident for as long as the agent
/// runs. Called after those only, not per event: it walks the heap.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only returns free pages of glibc's heaps to the kernel; it takes
    // no pointer, changes no allocation in use and is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The subscription to the kernel's interface notifications, in the runtime's reactor.
pub(super) type Monitor = AsyncFd<enclave_route::Monitor>;

/// When each timer is due; `None`: not armed.
#[derive(Debug, Default)]
pub(super) struct Timers {
    /// The next judgement of trust.
    pub(super) trust_at: Option<Instant>,
    /// The next look at the interfaces.
    pub(super) discover_at: Option<Instant>,
    /// The next reconnection of lost gateways.
    reconnect_at: Option<Instant>,
    /// A report put off.
    report_at: Option<Instant>,
    /// When the last report went out.
    reported: Option<Instant>,
    /// Something the report shows changed.
    pub(super) report_due: bool,
    /// The next liveness check.
    alive_at: Option<Instant>,
}

/// What one wake-up brought.
enum Wake {
    Stop(&'static str),
    Hangup,
    Source(Option<SourceEvent>),
    Question(Question),
    Control(std::io::Result<(usize, SocketAddr)>),
    Interfaces(std::io::Result<bool>),
    Timer,
}

impl Agent {
    /// Runs until a stop signal, or until the tunnel stops underneath.
    pub(super) async fn run_loop(
        &mut self,
        mut signals: Signals,
        mut source: mpsc::Receiver<SourceEvent>,
        mut questions: mpsc::Receiver<Question>,
    ) -> Result<()> {
        let mut buf = [0u8; 2048];
        let mut source_open = true;
        let mut answers: Vec<Question> = Vec::new();
        // A new view or a status answer leaves much freed memory behind (the definition parsed,
        // the view compiled, the status built and written out): given back once handled. The
        // first view's too.
        let mut trim = true;
        let now = Instant::now();
        self.timers.alive_at = Some(now + LIVENESS_EVERY);
        self.watch_interfaces(now);
        let mut dirty = self.discover();
        dirty |= self.evaluate_trust(now);
        self.timers.report_due = true;
        loop {
            let now = Instant::now();
            let timers = self.due(now);
            dirty |= timers || self.applied.is_none();
            dirty |= self.drive_selector(now);
            if dirty {
                self.apply();
                self.timers.report_due = true;
                dirty = false;
            }
            if !answers.is_empty() {
                let status = self.status(now);
                for answer in answers.drain(..) {
                    let _ = answer.send(status.clone());
                }
            }
            self.maybe_report(now);
            if std::mem::take(&mut trim) {
                release_freed_memory();
            }
            self.schedule_reconnect(now);
            if !self.tunnel.as_mut().is_some_and(Dataplane::is_running) {
                return Err(Error::TunnelStopped {
                    interface: self.config.interface.clone(),
                });
            }

            let next_timer = self.next_timer();
            let wake = tokio::select! {
                _ = signals.interrupt.recv() => Wake::Stop("SIGINT"),
                _ = signals.terminate.recv() => Wake::Stop("SIGTERM"),
                _ = signals.hangup.recv() => Wake::Hangup,
                event = source.recv(), if source_open => Wake::Source(event),
                Some(question) = questions.recv() => Wake::Question(question),
                received = self.control.recv_from(&mut buf) => Wake::Control(received),
                news = interface_news(self.monitor.as_mut()) => Wake::Interfaces(news),
                () = sleep_until(next_timer) => Wake::Timer,
            };
            let now = Instant::now();
            match wake {
                Wake::Stop(signal) => {
                    tracing::info!(signal, "stopping");
                    return Ok(());
                }
                Wake::Hangup => {
                    // SIGHUP reads the pre-shared key files again (a rotated key): the peers
                    // are given again; those that stay keep their sessions.
                    if self.applied.is_some() {
                        self.failed.insert("peers");
                        dirty = true;
                    }
                }
                Wake::Source(Some(event)) => {
                    trim = true;
                    if self.take(event, now) {
                        self.watch_interfaces(now);
                        self.discover();
                        self.evaluate_trust(now);
                        dirty = true;
                    }
                }
                Wake::Source(None) => {
                    tracing::warn!(
                        "the source of this system's view stopped; the last view stays in force"
                    );
                    source_open = false;
                }
                Wake::Question(question) => {
                    // The counters of this moment; a judgement that needs them may change.
                    self.refresh_counters(now);
                    dirty |= self.evaluate_trust(now);
                    answers.push(question);
                    trim = true;
                }
                Wake::Control(Ok((len, from))) => {
                    self.handle_control(&buf[..len], from, now);
                    // Take what else is waiting, a bounded number, before looking at the rest:
                    // a flood of datagrams must not keep the other events waiting.
                    for _ in 0..CONTROL_BATCH {
                        let Ok((len, from)) = self.control.try_recv_from(&mut buf) else {
                            break;
                        };
                        self.handle_control(&buf[..len], from, now);
                    }
                }
                Wake::Control(Err(err)) => {
                    tracing::debug!(error = %err, "control port receive failed");
                }
                Wake::Interfaces(Ok(true)) => {
                    self.timers.discover_at.get_or_insert(now + DISCOVER_SETTLE);
                }
                Wake::Interfaces(Ok(false)) => {}
                Wake::Interfaces(Err(err)) => {
                    tracing::warn!(error = %err, "interface notifications failed; looking at the interfaces every {} s instead", DISCOVER_FALLBACK.as_secs());
                    self.monitor = None;
                    self.timers.discover_at = Some(now);
                }
                Wake::Timer => {}
            }
        }
    }

    /// Handles the timers that are due. Returns whether the desired state may have changed.
    fn due(&mut self, now: Instant) -> bool {
        let due = |at: Option<Instant>| at.is_some_and(|t| t <= now);
        let mut dirty = false;
        if !self.failed.is_empty() && self.retry_at.is_none_or(|at| now >= at) {
            dirty = true;
        }
        if due(self.timers.discover_at) {
            self.timers.discover_at = (self.monitor.is_none() && self.view.gateway.is_some())
                .then_some(now + DISCOVER_FALLBACK);
            if self.discover() {
                dirty = true;
                dirty |= self.evaluate_trust(now);
            }
        }
        if due(self.timers.trust_at) {
            dirty |= self.evaluate_trust(now);
        }
        if due(self.timers.reconnect_at) {
            self.timers.reconnect_at = None;
            self.reconnect_lost_gateways();
        }
        if due(self.timers.alive_at) {
            self.timers.alive_at = Some(now + LIVENESS_EVERY);
        }
        dirty
    }

    /// Runs the selector's timers and sends its probes. Returns whether a subnet changed
    /// gateway.
    fn drive_selector(&mut self, now: Instant) -> bool {
        if self.selector.poll_timeout().is_some_and(|t| t <= now) {
            self.selector.handle_timeout(now);
        }
        while let Some((gateway, message)) = self.selector.poll_transmit() {
            if let Some(peer) = self.view.peers.get(&gateway) {
                // A probe that does not fit in the socket's buffer now is lost like one lost
                // on the way; the next goes out in PROBE_INTERVAL.
                let _ = self
                    .control
                    .try_send_to(&message.encode(), (peer.address, CONTROL_PORT).into());
            }
        }
        let mut changed = false;
        while let Some(change) = self.selector.poll_event() {
            tracing::info!(
                subnet = %change.subnet,
                from = change.from.as_deref().unwrap_or("-"),
                to = change.to.as_deref().unwrap_or("-"),
                reason = ?change.reason,
                "gateway selected"
            );
            changed = true;
        }
        changed
    }

    /// Arms the reconnection of lost gateways while any gateway does not answer, and only then.
    fn schedule_reconnect(&mut self, now: Instant) {
        let any_lost = self.selector.gateways().values().any(|state| !state.up);
        if !any_lost {
            self.timers.reconnect_at = None;
        } else if self.timers.reconnect_at.is_none() {
            self.timers.reconnect_at = Some(now + RECONNECT_EVERY);
        }
    }

    /// Publishes a report when something in it changed, at most every
    /// [`REPORT_AT_MOST_EVERY`].
    fn maybe_report(&mut self, now: Instant) {
        if !self.timers.report_due {
            return;
        }
        match self.timers.reported.map(|t| t + REPORT_AT_MOST_EVERY) {
            Some(earliest) if earliest > now => {
                self.timers.report_at = Some(earliest);
            }
            _ => {
                self.publish(now);
                self.timers.report_due = false;
                self.timers.report_at = None;
                self.timers.reported = Some(now);
            }
        }
    }

    /// Subscribes to interface changes while the view makes this system a gateway (it
    /// discovers then), and drops the subscription otherwise.
    fn watch_interfaces(&mut self, now: Instant) {
        if self.view.gateway.is_none() {
            self.monitor = None;
            self.timers.discover_at = None;
            return;
        }
        if self.monitor.is_some() {
            return;
        }
        let registered = enclave_route::Monitor::open().and_then(|monitor| {
            // SAFETY: the monitor owns its socket from `open` until it is dropped, and its
            // `as_raw_fd` always returns that socket's descriptor; the `AsyncFd` owns the
            // monitor, so the descriptor stays open and the same for the `AsyncFd`'s lifetime.
            unsafe { AsyncFd::register_with_interest(monitor, Interest::READABLE) }.map_err(|e| {
                enclave_route::Error::Socket {
                    what: "register the rtnetlink subscription",
                    source: e.into_parts().1,
                }
            })
        });
        match registered {
            Ok(monitor) => self.monitor = Some(monitor),
            Err(err) => {
                tracing::warn!(error = %err, "cannot subscribe to interface changes; looking at the interfaces every {} s instead", DISCOVER_FALLBACK.as_secs());
                self.timers
                    .discover_at
                    .get_or_insert(now + DISCOVER_FALLBACK);
            }
        }
    }

    /// The earliest armed timer.
    fn next_timer(&self) -> Option<Instant> {
        let retry = self.retry_at.filter(|_| !self.failed.is_empty());
        let report = self.timers.report_at.filter(|_| self.timers.report_due);
        [
            self.selector.poll_timeout(),
            retry,
            self.timers.trust_at,
            self.timers.discover_at,
            self.timers.reconnect_at,
            report,
            self.timers.alive_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn handle_control(&mut self, datagram: &[u8], from: SocketAddr, now: Instant) {
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
                let _ = self.control.try_send_to(&ack.encode(), from);
            }
            ack @ Message::Ack { .. } => self.selector.handle_message(&name, ack, now),
        }
    }

    /// The subnets this gateway serves now that policy lets `sender` reach through it, with
    /// its trust requirements passing now.
    fn advertised_to(&self, sender: &str) -> Vec<Ipv4Net> {
        let served = self.served.keys().copied().collect();
        crate::desired::advertised(&self.view, &self.evaluation, &served, sender)
    }
}

/// Waits until `at`, or forever when nothing is armed.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Waits for interface notifications and reads them: `true` when one is news. Forever when
/// there is no subscription.
async fn interface_news(monitor: Option<&mut Monitor>) -> std::io::Result<bool> {
    let Some(monitor) = monitor else {
        return std::future::pending().await;
    };
    loop {
        let mut ready = monitor.readable_mut().await?;
        // `drain` reads until the socket would block, so the readiness may be cleared.
        let changes = ready.get_inner_mut().drain()?;
        ready.clear_ready();
        if changes.changed {
            return Ok(true);
        }
    }
}
