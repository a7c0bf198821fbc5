//! Observed endpoints: where each agent is reached, recorded on its system so that its peers'
//! views carry it when the administrator set no endpoint by hand.
//!
//! An agent's endpoint is the address its connection to the server came from (a TCP
//! connection: the address has shown a return path, it is not a forged source) with the
//! WireGuard port the agent reports. Behind NAT that is the NAT's public address with the
//! agent's own port, which a port-preserving NAT (or a forwarded port) serves; NAT traversal
//! proper comes later, and an endpoint set by hand always wins. Only IPv4 addresses are
//! recorded (the data plane's underlay is IPv4), and never a loopback or unspecified one: an
//! agent on the server's own host is not reached there by its peers.
//!
//! Recording moves the network's revision (so peers get new views through the ordinary path),
//! hence two limits: the endpoints waiting are recorded together, at most one commit per
//! [`BATCH`], so that thousands of agents connecting at once make a handful of commits; and a
//! system whose endpoint was just recorded waits [`HOLD`] before the next change of it is, so
//! that an agent that flaps between addresses cannot keep everyone's views changing.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Agent, Hub};
use crate::core::{Command, Ctx};
use crate::service;

/// How long the recorder gathers endpoints before one commit.
pub const BATCH: Duration = Duration::from_millis(300);

/// How long after recording a system's endpoint its next change waits.
pub const HOLD: Duration = Duration::from_secs(10);

/// How long to wait after the store failed before trying again.
const RETRY: Duration = Duration::from_secs(5);

/// The endpoint of an agent seen at `observed` that reports `listen_port`, if it is one its
/// peers may be given.
pub(crate) fn endpoint_of(
    observed: SocketAddr,
    listen_port: u16,
    loopback: bool,
) -> Option<SocketAddr> {
    let ip = observed.ip().to_canonical();
    let usable = match ip {
        IpAddr::V4(v4) => {
            !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast())
                && (loopback || !v4.is_loopback())
        }
        IpAddr::V6(_) => false,
    };
    (usable && listen_port != 0).then(|| SocketAddr::new(ip, listen_port))
}

/// The endpoints waiting to be recorded, by agent public key (base64). Plain state, the time
/// passed in.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    /// The latest endpoint offered for each agent, not yet recorded.
    waiting: BTreeMap<String, SocketAddr>,
    /// When each agent's endpoint was last recorded (within [`HOLD`]).
    recorded: HashMap<String, Instant>,
}

impl Queue {
    /// `endpoint` was observed for `key`; true when it is new (the recorder should look).
    pub(crate) fn offer(&mut self, key: &str, endpoint: SocketAddr) -> bool {
        self.waiting.insert(key.to_owned(), endpoint) != Some(endpoint)
    }

    /// `key`'s endpoint is recorded as observed now: nothing waits for it.
    pub(crate) fn settle(&mut self, key: &str) {
        self.waiting.remove(key);
    }

    /// Takes the endpoints due at `now` (those whose system is not held), and tells when the
    /// next held one falls due.
    pub(crate) fn take_due(
        &mut self,
        now: Instant,
    ) -> (Vec<(String, SocketAddr)>, Option<Instant>) {
        self.recorded.retain(|_, at| now.duration_since(*at) < HOLD);
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        self.waiting
            .retain(|key, endpoint| match self.recorded.get(key) {
                Some(at) => {
                    let free = *at + HOLD;
                    next = Some(next.map_or(free, |n| n.min(free)));
                    true
                }
                None => {
                    due.push((key.clone(), *endpoint));
                    false
                }
            });
        (due, next)
    }

    /// These were recorded at `now`.
    pub(crate) fn recorded<'a>(&mut self, keys: impl IntoIterator<Item = &'a str>, now: Instant) {
        for key in keys {
            self.recorded.insert(key.to_owned(), now);
        }
    }

    /// These could not be recorded: they wait again, unless a newer one came meanwhile.
    pub(crate) fn put_back(&mut self, batch: Vec<(String, SocketAddr)>) {
        for (key, endpoint) in batch {
            self.waiting.entry(key).or_insert(endpoint);
        }
    }
}

/// The queue and the recorder's wake-up, as the hub holds them.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    queue: Mutex<Queue>,
    wake: Notify,
}

impl Recorder {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Hub {
    /// `agent` reported that its WireGuard port is `listen_port`.
    pub(crate) fn observe(&self, agent: &Agent, listen_port: u16) {
        let Some(endpoint) = endpoint_of(
            agent.observed,
            listen_port,
            self.options.endpoints_from_loopback,
        ) else {
            return;
        };
        let snapshot = self.snapshot.borrow().clone();
        let system = snapshot.as_ref().and_then(|s| {
            s.system_of(&agent.key)
                .and_then(|name| s.state.systems.get(name))
        });
        let recorder = &self.endpoints;
        if system.is_some_and(|s| s.observed_endpoint == Some(endpoint)) {
            recorder.queue().settle(&agent.public_key);
        } else if recorder.queue().offer(&agent.public_key, endpoint) {
            recorder.wake.notify_one();
        }
    }

    /// `agent`'s connection ended: an endpoint of it still waiting is not recorded (it may
    /// come back through another server, which records where it is then).
    pub(crate) fn forget_endpoint(&self, agent: &Agent) {
        self.endpoints.queue().settle(&agent.public_key);
    }

    /// Records the endpoints offered, in batches, until the hub stops.
    pub(super) async fn record_endpoints(self: std::sync::Arc<Self>) {
        let mut stop = self.stopping();
        let mut next: Option<Instant> = None;
        loop {
            let held = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.endpoints.wake.notified() => {}
                () = held => {}
                _ = stop.changed() => return,
            }
            // Gather what else arrives (a crowd of agents connecting) into the same commit.
            tokio::select! {
                () = tokio::time::sleep(BATCH) => {}
                _ = stop.changed() => return,
            }
            let (due, held) = self.endpoints.queue().take_due(Instant::now());
            next = held;
            if due.is_empty() {
                continue;
            }
            if let Err(e) = self.record(&due).await {
                tracing::warn!(error = %e, "cannot record agents' endpoints; trying again in 5 s");
                self.endpoints.queue().put_back(due);
                next = Some(Instant::now() + RETRY);
            }
        }
    }

    /// Records `due` (agent keys and endpoints) on their systems, as of the current state.
    async fn record(&self, due: &[(String, SocketAddr)]) -> service::Result<()> {
        let state = self.service.state().await?;
        let by_key: HashMap<&str, &crate::model::ManagedSystem> = state
            .systems
            .values()
            .map(|s| (s.public_key.as_str(), s))
            .collect();
        let mut endpoints = BTreeMap::new();
        for (key, endpoint) in due {
            match by_key.get(key.as_str()) {
                Some(s) if s.observed_endpoint != Some(*endpoint) => {
                    endpoints.insert(s.name.clone(), *endpoint);
                }
                _ => {}
            }
        }
        if endpoints.is_empty() {
            return Ok(());
        }
        let ctx = Ctx {
            actor: "server:endpoints".into(),
            now: super::now(),
        };
        let count = endpoints.len();
        match self
            .service
            .execute(Command::ObserveEndpoints { endpoints }, &ctx)
            .await
        {
            Ok(_) => {
                tracing::debug!(count, "recorded agents' observed endpoints");
                self.endpoints
                    .queue()
                    .recorded(due.iter().map(|(k, _)| k.as_str()), Instant::now());
                Ok(())
            }
            // Deleted, or recorded by another server meanwhile: nothing left to do.
            Err(service::Error::Refused(refusal)) => {
                tracing::debug!(%refusal, "no endpoint to record");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn the_endpoint_is_the_observed_ipv4_address_with_the_reported_port() {
        assert_eq!(
            endpoint_of(at("198.51.100.7:40312"), 51820, false),
            Some(at("198.51.100.7:51820"))
        );
        // An IPv4 client of a server listening on IPv6 is seen as a mapped address.
        assert_eq!(
            endpoint_of(at("[::ffff:198.51.100.7]:40312"), 51820, false),
            Some(at("198.51.100.7:51820"))
        );
        assert_eq!(endpoint_of(at("[2001:db8::7]:40312"), 51820, false), None);
        assert_eq!(endpoint_of(at("198.51.100.7:40312"), 0, false), None);
        assert_eq!(endpoint_of(at("127.0.0.1:40312"), 51820, false), None);
        assert_eq!(
            endpoint_of(at("127.0.0.1:40312"), 51820, true),
            Some(at("127.0.0.1:51820"))
        );
        assert_eq!(endpoint_of(at("0.0.0.0:1"), 51820, true), None);
    }

    #[test]
    fn the_queue_batches_holds_a_flapping_system_and_keeps_the_newest() {
        let start = Instant::now();
        let mut queue = Queue::default();
        assert!(queue.offer("a", at("192.0.2.1:51820")));
        assert!(
            !queue.offer("a", at("192.0.2.1:51820")),
            "the same again is not new"
        );
        assert!(queue.offer("b", at("192.0.2.2:51820")));
        let (due, next) = queue.take_due(start);
        assert_eq!(
            due,
            vec![
                ("a".to_owned(), at("192.0.2.1:51820")),
                ("b".to_owned(), at("192.0.2.2:51820"))
            ]
        );
        assert_eq!(next, None);
        queue.recorded(["a", "b"], start);

        // a flaps: its changes wait out the hold, and only the newest is recorded.
        queue.offer("a", at("192.0.2.9:51820"));
        queue.offer("a", at("192.0.2.10:51820"));
        let soon = start + Duration::from_secs(1);
        let (due, next) = queue.take_due(soon);
        assert!(due.is_empty(), "{due:?}");
        assert_eq!(next, Some(start + HOLD));
        let (due, _) = queue.take_due(start + HOLD);
        assert_eq!(due, vec![("a".to_owned(), at("192.0.2.10:51820"))]);

        // Back to the recorded one before the hold ended: nothing to record.
        queue.recorded(["a"], start + HOLD);
        queue.offer("a", at("192.0.2.11:51820"));
        queue.settle("a");
        assert!(queue.take_due(start + HOLD * 3).0.is_empty());

        // A failed commit puts the batch back, under a newer offer.
        queue.put_back(vec![("c".to_owned(), at("192.0.2.3:51820"))]);
        queue.offer("d", at("192.0.2.5:51820"));
        queue.put_back(vec![("d".to_owned(), at("192.0.2.4:51820"))]);
        let (mut due, _) = queue.take_due(start + HOLD * 3);
        due.sort();
        assert_eq!(
            due,
            vec![
                ("c".to_owned(), at("192.0.2.3:51820")),
                ("d".to_owned(), at("192.0.2.5:51820"))
            ]
        );
    }
}
