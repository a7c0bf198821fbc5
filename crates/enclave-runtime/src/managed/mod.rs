//! Managed mode: the agent's view comes from a control server.
//!
//! The managed source holds one agent-initiated TLS connection to the server
//! (`enclave-control-proto`'s client), proves there that it holds this system's WireGuard
//! private key, and then:
//!
//! - takes each `view {serial, view}` that is newer than the one in force and is this
//!   system's ([`gate`]), keeps it on disk as the last good view ([`last_view`]) and hands it
//!   to the agent as [`SourceEvent::Update`];
//! - on `pending`, tells the agent (and the log) that the system waits for approval;
//! - on `revoked`, deletes the last good view and sends [`SourceEvent::Revoked`];
//! - sends the agent's reports (status, and on a gateway what discovery found) when what the
//!   administrator sees changes ([`report`]);
//! - when the connection fails, says so ([`SourceEvent::Problem`]; the view in force stays)
//!   and tries again with back-off and full jitter ([`backoff`]); once a view arrives again,
//!   [`SourceEvent::Clear`].
//!
//! At start, when the server cannot be reached, the agent starts from the last good view on
//! disk; with none, it waits for the server and says why. It never starts on a view of its
//! own making.

pub mod enrol;
pub mod last_view;

pub use enclave_agent_core::{backoff, gate, report};

use std::path::PathBuf;
use std::time::Instant;

use enclave_control_proto::message::{Ack, AgentMessage, ServerMessage};
use enclave_control_proto::Redacted;
use enclave_control_proto::Writer;
pub use enclave_control_proto::{Enrolled, Trust};
use tokio::sync::mpsc;
use x25519_dalek::StaticSecret;

use self::backoff::Backoff;
use self::gate::{Gate, Verdict};
use self::last_view::LastGood;
use self::report::Reporter;
use crate::config::{AgentConfig, ControlConfig};
use crate::error::chain;
use crate::source::{Reports, SourceEvent, Update};
use crate::{Error, Result};

/// How a broken connection is told.
const LOST: &str = "lost the control server";

/// The managed source of one agent. Its `Debug` shows everything but the private key.
#[derive(Debug)]
pub struct Managed {
    server: String,
    trust: Trust,
    key: Redacted<StaticSecret>,
    public_key: String,
    hostname: Option<String>,
    listen_port: u16,
    last_view_file: PathBuf,
}

/// How many events may wait for the agent.
const EVENTS: usize = 16;

/// Opens the managed source of `config` and waits for this system's first view (from the
/// server, or the last good view on disk when the server cannot be reached), logging why it
/// waits. Returns that view and the channel of what follows; `None` when SIGINT or SIGTERM
/// came first. Must run inside a tokio runtime (the source runs as a task of it, until the
/// agent drops the channel).
///
/// # Errors
/// The configuration is not a managed one, or the private key cannot be read.
pub async fn open(
    config: &AgentConfig,
    reports: Reports,
) -> Result<Option<(Update, mpsc::Receiver<SourceEvent>)>> {
    use tokio::signal::unix::{signal, SignalKind};
    let managed = Managed::new(config)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(Error::Signals)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(Error::Signals)?;
    let (events, mut rx) = mpsc::channel(EVENTS);
    let task = managed.spawn(events, reports);
    loop {
        let event = tokio::select! {
            event = rx.recv() => event,
            _ = interrupt.recv() => None,
            _ = terminate.recv() => None,
        };
        match event {
            Some(SourceEvent::Update(update)) => return Ok(Some((*update, rx))),
            // Told in the log already; nothing is in force yet to keep or to drop.
            Some(SourceEvent::Problem(_) | SourceEvent::Clear | SourceEvent::Revoked(_)) => {}
            None => {
                task.abort();
                tracing::info!("stopped before the control server gave this system a view");
                return Ok(None);
            }
        }
    }
}

/// How the server is trusted, from the `[control]` section.
pub fn trust(control: &ControlConfig) -> Option<Trust> {
    match (control.fingerprint_bytes(), &control.ca_file) {
        (Some(fingerprint), _) => Some(Trust::Fingerprint(fingerprint)),
        (None, Some(ca)) => Some(Trust::Ca(ca.clone())),
        (None, None) => None,
    }
}

/// How a connection ended.
enum Ended {
    /// The agent is stopping (it dropped its end of the events).
    Stopped,
    /// The server revoked this system.
    Revoked,
    /// The connection failed or could not be made; why.
    Lost(String),
}

/// What the source has told the agent, so it says each thing once.
struct Told {
    problem: Option<String>,
    /// The revocation told, until a view comes again: a revoked system that connects again
    /// is told `revoked` again, which the agent already knows.
    revoked: Option<String>,
}

impl Managed {
    /// The managed source of `config` (which must be a managed configuration): reads this
    /// system's private key.
    ///
    /// # Errors
    /// The configuration is a file-mode one, or the key cannot be read.
    pub fn new(config: &AgentConfig) -> Result<Self> {
        let control = config.control().ok_or_else(|| Error::Config {
            path: config.private_key_file.clone(),
            message: "the managed source needs a [control] section".to_owned(),
        })?;
        let text = crate::config::read_private_key(&config.private_key_file)?;
        let bytes = crate::config::decode_key(&text).ok_or_else(|| Error::KeyText {
            path: config.private_key_file.clone(),
        })?;
        drop(text);
        let key = StaticSecret::from(*bytes);
        let public_key =
            enclave_wg::keys::to_base64(x25519_dalek::PublicKey::from(&key).as_bytes());
        Ok(Self {
            server: control.server.clone(),
            trust: trust(control).ok_or_else(|| Error::Config {
                path: config.private_key_file.clone(),
                message: "[control] pins no server identity".to_owned(),
            })?,
            key: Redacted::new(key),
            public_key,
            hostname: control.hostname.clone().or_else(enrol::hostname),
            listen_port: config.listen_port,
            last_view_file: config
                .last_view_file()
                .unwrap_or_else(|| control.state_dir.join("view.json")),
        })
    }

    /// Runs the source on the current tokio runtime until the agent drops `events`.
    pub fn spawn(
        self,
        events: mpsc::Sender<SourceEvent>,
        reports: Reports,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run(events, reports))
    }

    /// The source's loop: connect, serve the connection, back off, again.
    pub async fn run(self, events: mpsc::Sender<SourceEvent>, mut reports: Reports) {
        let mut backoff = Backoff::new();
        let mut gate = Gate::new(&self.public_key);
        let mut told = Told {
            problem: None,
            revoked: None,
        };
        // Whether the agent was given a view yet: the last good view on disk is for a start
        // without the server, never for later (after a revocation it is gone anyway).
        let mut started = false;
        tracing::info!(server = %self.server, "managed mode: connecting to the control server");
        loop {
            let ended = self
                .connection(&events, &mut reports, &mut gate, &mut told, &mut backoff)
                .await;
            started |= gate.applied().is_some();
            let why = match ended {
                Ended::Stopped => return,
                Ended::Revoked => None,
                Ended::Lost(why) => Some(why),
            };
            if !started {
                started = true;
                if self.start_from_disk(&events, &mut gate).await.is_err() {
                    return;
                }
            }
            let wait = backoff.failed(&mut rand_core::UnwrapErr(getrandom::SysRng));
            // A revocation was told as such; the next refusals are told as they come.
            let Some(why) = why else {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = events.closed() => return,
                }
                continue;
            };
            let problem = if gate.applied().is_some() {
                format!("{why}; the last good view stays in force; the agent keeps trying")
            } else {
                format!(
                    "{why}; no view is in force, the agent waits for the server and keeps trying"
                )
            };
            tracing::warn!(
                server = %self.server,
                failures = backoff.failures(),
                "{problem}; connecting again in {:.1} s",
                wait.as_secs_f64()
            );
            // Said to the agent once per problem, not once per attempt.
            if told.problem.as_deref() != Some(problem.as_str()) {
                told.problem = Some(problem.clone());
                if events.send(SourceEvent::Problem(problem)).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = events.closed() => return,
            }
        }
    }

    /// At start, with the server out of reach: the last good view on disk, if there is a
    /// good one.
    async fn start_from_disk(
        &self,
        events: &mpsc::Sender<SourceEvent>,
        gate: &mut Gate,
    ) -> std::result::Result<(), ()> {
        match last_view::load(&self.last_view_file, &self.public_key) {
            Ok(Some(LastGood {
                serial,
                server,
                view,
            })) => {
                tracing::warn!(
                    file = %self.last_view_file.display(),
                    serial,
                    "the control server cannot be reached: starting from the last good view"
                );
                gate.set_applied(Some(serial));
                let update = Update {
                    view,
                    warnings: vec![],
                    origin: format!(
                        "last good view {} (serial {serial} from {server})",
                        self.last_view_file.display()
                    ),
                };
                events
                    .send(SourceEvent::Update(Box::new(update)))
                    .await
                    .map_err(drop)
            }
            Ok(None) => {
                tracing::warn!(
                    file = %self.last_view_file.display(),
                    "the control server cannot be reached and there is no last good view yet: the agent waits for the server (it never starts on a view of its own making)"
                );
                Ok(())
            }
            Err(err) => {
                tracing::error!("{}; the agent waits for the control server", chain(&err));
                Ok(())
            }
        }
    }

    /// One connection, from connecting to its end.
    async fn connection(
        &self,
        events: &mpsc::Sender<SourceEvent>,
        reports: &mut Reports,
        gate: &mut Gate,
        told: &mut Told,
        backoff: &mut Backoff,
    ) -> Ended {
        let connect = enclave_control_proto::connect(
            &self.server,
            Some(&self.trust),
            self.key.expose(),
            self.hostname.as_deref(),
        );
        let session = tokio::select! {
            session = connect => session,
            () = events.closed() => return Ended::Stopped,
        };
        let session = match session {
            Ok(session) => session,
            Err(err) => return self.lost("cannot connect to the control server", &err),
        };
        tracing::info!(server = %self.server, "connected to the control server");
        let (mut reader, writer) = session.split();
        let mut reporter = Reporter::new();
        reporter.observe(self.report(reports, gate), Instant::now());
        loop {
            let due = reporter.poll_timeout();
            let wait = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                message = reader.recv() => {
                    let message = match message {
                        Ok(message) => message,
                        Err(err) => return self.lost(LOST, &err),
                    };
                    match self.handle(message, events, gate, told, backoff, &writer).await {
                        Some(ended) => return ended,
                        None => reporter.observe(self.report(reports, gate), Instant::now()),
                    }
                }
                changed = reports.changed() => {
                    if changed.is_err() {
                        return Ended::Stopped;
                    }
                    reporter.observe(self.report(reports, gate), Instant::now());
                }
                () = wait => {
                    if let Some(report) = reporter.poll(Instant::now()) {
                        if let Err(err) = writer.send(&AgentMessage::Report(Box::new(report))).await {
                            return self.lost(LOST, &err);
                        }
                    }
                }
                () = events.closed() => return Ended::Stopped,
            }
        }
    }

    /// How a connection ends on `err`: the server's refusal in its own words, anything else
    /// as `context: ERROR: CAUSE…`.
    fn lost(&self, context: &str, err: &enclave_control_proto::Error) -> Ended {
        Ended::Lost(match err {
            enclave_control_proto::Error::Refused { reason } => format!(
                "the control server {} refused this system: {reason}",
                self.server
            ),
            err => format!("{context}: {}", chain(err)),
        })
    }

    /// The agent's latest report as the protocol's.
    fn report(&self, reports: &Reports, gate: &Gate) -> enclave_control_proto::message::Report {
        let latest = reports.borrow().clone();
        report::build(latest.as_deref(), gate.applied(), self.listen_port)
    }

    /// One message from the server; `Some` when the connection is over.
    async fn handle(
        &self,
        message: ServerMessage,
        events: &mpsc::Sender<SourceEvent>,
        gate: &mut Gate,
        told: &mut Told,
        backoff: &mut Backoff,
        writer: &Writer,
    ) -> Option<Ended> {
        match message {
            ServerMessage::View(update) => {
                backoff.reset();
                let serial = update.serial;
                match gate.judge(serial, &update.view) {
                    Verdict::Apply => told.revoked = None,
                    Verdict::Stale { applied } => {
                        // Typically the view in force, sent again after a reconnection: the
                        // connection works, so a problem told before is over.
                        tracing::debug!(
                            serial,
                            applied,
                            "ignored a view that is not newer than the one in force"
                        );
                        if told.problem.take().is_some()
                            && events.send(SourceEvent::Clear).await.is_err()
                        {
                            return Some(Ended::Stopped);
                        }
                        return writer
                            .send(&AgentMessage::Ack(Ack { serial: applied }))
                            .await
                            .err()
                            .map(|err| self.lost(LOST, &err));
                    }
                    Verdict::Foreign(why) => {
                        let problem = format!("refused a view from the control server: {why}; the view in force stays");
                        tracing::error!("{problem}");
                        told.problem = Some(problem.clone());
                        return events
                            .send(SourceEvent::Problem(problem))
                            .await
                            .err()
                            .map(|_| Ended::Stopped);
                    }
                }
                let view = *update.view;
                let last = LastGood {
                    serial,
                    server: self.server.clone(),
                    view,
                };
                let mut warnings = Vec::new();
                // Written (and fsync-ed) off the agent's event loop, before the view is handed
                // over: a view in force is always one a restart can find.
                let (path, key) = (self.last_view_file.clone(), self.public_key.clone());
                let Ok((saved, last)) = tokio::task::spawn_blocking(move || {
                    (last_view::save(&path, &key, &last), last)
                })
                .await
                else {
                    // The runtime is shutting down (or the write panicked): the agent stops.
                    return Some(Ended::Stopped);
                };
                if let Err(err) = saved {
                    let text = format!(
                        "{}: without the server this agent could not restart on this view",
                        chain(&err)
                    );
                    tracing::error!("{text}");
                    warnings.push(text);
                }
                tracing::info!(serial, system = %last.view.system, "view from the control server");
                let update = Update {
                    view: last.view,
                    warnings,
                    origin: format!("server {} serial {serial}", self.server),
                };
                if events
                    .send(SourceEvent::Update(Box::new(update)))
                    .await
                    .is_err()
                {
                    return Some(Ended::Stopped);
                }
                if told.problem.take().is_some() && events.send(SourceEvent::Clear).await.is_err() {
                    return Some(Ended::Stopped);
                }
                if let Err(err) = writer.send(&AgentMessage::Ack(Ack { serial })).await {
                    return Some(self.lost(LOST, &err));
                }
                None
            }
            ServerMessage::Pending(pending) => {
                backoff.reset();
                let problem = format!(
                    "this system is enrolled as {:?} and waits for an administrator's approval ({}); it gets its view as soon as it is approved",
                    pending.system, pending.message
                );
                tracing::warn!("{problem}");
                if told.problem.as_deref() != Some(problem.as_str()) {
                    told.problem = Some(problem.clone());
                    if events.send(SourceEvent::Problem(problem)).await.is_err() {
                        return Some(Ended::Stopped);
                    }
                }
                None
            }
            ServerMessage::Revoked(reason) => {
                if told.revoked.as_deref() == Some(reason.reason.as_str()) {
                    tracing::debug!(reason = %reason.reason, "still revoked");
                    return Some(Ended::Revoked);
                }
                told.revoked = Some(reason.reason.clone());
                tracing::error!(reason = %reason.reason, "the control server revoked this system: dropping every peer, route and NAT rule");
                gate.set_applied(None);
                if let Err(err) = last_view::remove(&self.last_view_file) {
                    tracing::error!(file = %self.last_view_file.display(), error = %err, "cannot delete the last good view of a revoked system");
                }
                if events
                    .send(SourceEvent::Revoked(reason.reason))
                    .await
                    .is_err()
                {
                    return Some(Ended::Stopped);
                }
                Some(Ended::Revoked)
            }
            other => {
                tracing::debug!(?other, "ignored a message from the control server");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A managed configuration whose server refuses connections at once (a closed port on
    /// loopback), in a directory of its own.
    struct Host {
        /// Removed with the host.
        _dir: tempfile::TempDir,
        config: AgentConfig,
        public_key: String,
    }

    impl Host {
        fn new() -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path();
            let key =
                enclave_wg::keys::generate_private_key(rand_core::UnwrapErr(getrandom::SysRng));
            enrol::write_private_key(&dir.join("private.key"), &key).unwrap();
            let text = format!(
                "private_key_file = \"private.key\"\n[control]\nserver = \"https://127.0.0.1:1\"\nfingerprint = \"{}\"\nstate_dir = \"state\"\n",
                "ab".repeat(32)
            );
            std::fs::write(dir.join("agent.toml"), text).unwrap();
            let config = AgentConfig::load(&dir.join("agent.toml")).unwrap();
            Self {
                _dir: tmp,
                config,
                public_key: key.public_key().to_base64(),
            }
        }

        /// Runs `open` for at most `limit`: `None` when it was still waiting.
        fn open(&self, limit: Duration) -> Option<(Update, Vec<SourceEvent>)> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let (_reports, reports_rx) = tokio::sync::watch::channel(None);
                let opened = tokio::time::timeout(limit, open(&self.config, reports_rx))
                    .await
                    .ok()?;
                let (update, mut rx) = opened.unwrap().unwrap();
                // What the source says next: that the server cannot be reached.
                let next = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                    .await
                    .ok()
                    .flatten();
                Some((update, next.into_iter().collect()))
            })
        }
    }

    fn view_of(public_key: &str) -> enclave_policy::View {
        let text = format!(
            "[network]\noverlay = \"100.64.0.0/10\"\n\n[[system]]\nname = \"laptop\"\npublic_key = \"{public_key}\"\naddress = \"100.64.0.11\"\ntags = [\"users\"]\n"
        );
        let loaded = enclave_policy::load("net.toml", &text).unwrap();
        enclave_policy::compile(&loaded.network, "laptop").unwrap()
    }

    #[test]
    fn without_the_server_the_agent_starts_from_its_last_good_view() {
        let host = Host::new();
        let file = host.config.last_view_file().unwrap();
        let last = LastGood {
            serial: 12,
            server: "https://127.0.0.1:1".to_owned(),
            view: view_of(&host.public_key),
        };
        last_view::save(&file, &host.public_key, &last).unwrap();
        let (update, next) = host
            .open(Duration::from_secs(10))
            .expect("the agent did not start from its last good view");
        assert_eq!(update.view, last.view);
        assert!(
            update.origin.contains("last good view") && update.origin.contains("serial 12"),
            "{}",
            update.origin
        );
        assert!(
            matches!(&next[..], [SourceEvent::Problem(p)] if p.contains("cannot connect to the control server") && p.contains("the last good view stays in force")),
            "{next:?}"
        );
    }

    #[test]
    fn without_the_server_and_a_usable_last_view_the_agent_waits() {
        let host = Host::new();
        assert!(
            host.open(Duration::from_millis(1500)).is_none(),
            "a view was invented"
        );
        // Another system's view on disk is no better.
        let file = host.config.last_view_file().unwrap();
        let other = LastGood {
            serial: 3,
            server: "https://127.0.0.1:1".to_owned(),
            view: view_of(&host.public_key),
        };
        last_view::save(
            &file,
            "CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=",
            &other,
        )
        .unwrap();
        assert!(
            host.open(Duration::from_millis(1500)).is_none(),
            "another system's view was used"
        );
    }
}
