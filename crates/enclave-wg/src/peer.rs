//! One peer's protocol state: its keys, sessions, pending handshake,
//! queued packets, timers and counters.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use zeroize::Zeroize;

use crate::cookie::{MacKeys, COOKIE_REFRESH_TIME};
use crate::crypto::TIMESTAMP_LEN;
use crate::handshake::{Identity, InitiatorState, PeerStatic};
use crate::session::Session;
use crate::timers::REJECT_AFTER_TIME;
use crate::types::PeerConfig;

/// How many packets may wait for a handshake (wireguard-go's staged queue).
pub(crate) const MAX_QUEUED_PACKETS: usize = 128;

/// An initiation we sent and whose response we are waiting for.
pub(crate) struct PendingInitiation {
    pub(crate) state: InitiatorState,
    pub(crate) local_index: u32,
    /// Where the initiation went: proven once a valid response completes the handshake.
    pub(crate) sent_to: SocketAddr,
    /// Whether this initiation was resent at once because of a cookie reply
    /// (that happens at most once per initiation).
    pub(crate) after_cookie: bool,
}

/// The per-peer timers of the paper's section 6, as deadlines.
#[derive(Debug, Default, Clone)]
pub(crate) struct Timers {
    /// Resend the initiation (REKEY_TIMEOUT plus jitter after the last one).
    pub(crate) retransmit_handshake: Option<Instant>,
    /// When the current handshake attempt began (for REKEY_ATTEMPT_TIME).
    pub(crate) attempt_started: Option<Instant>,
    /// When we last sent an initiation (at most one per REKEY_TIMEOUT unless retrying).
    pub(crate) last_initiation_sent: Option<Instant>,
    /// Send a keepalive: data came in and we have not answered (KEEPALIVE_TIMEOUT).
    pub(crate) send_keepalive: Option<Instant>,
    /// Start a handshake: we sent data and heard nothing back
    /// (KEEPALIVE_TIMEOUT + REKEY_TIMEOUT).
    pub(crate) new_handshake: Option<Instant>,
    /// Erase all keys: no new handshake for 3 × REJECT_AFTER_TIME.
    pub(crate) zero_key_material: Option<Instant>,
    /// Persistent keepalive, re-armed by every authenticated packet.
    pub(crate) persistent_keepalive: Option<Instant>,
    /// Act at the next call with a clock (a keepalive interval was just configured).
    pub(crate) immediate: bool,
    /// The initiator already rekeyed because its receiving session is about to expire.
    pub(crate) sent_last_minute_handshake: bool,
}

pub(crate) struct Peer {
    /// The configuration as last given; `config.endpoint` is the *configured* endpoint.
    pub(crate) config: PeerConfig,
    /// Where we send now: the configured endpoint, or the source of the latest
    /// authenticated packet (roaming, paper section 2.1).
    pub(crate) endpoint: Option<SocketAddr>,
    /// The latest underlay address that showed a return path (see
    /// [`crate::PeerInfo::proven_endpoint`]).
    pub(crate) proven_endpoint: Option<SocketAddr>,
    pub(crate) statics: PeerStatic,
    pub(crate) mac_keys: MacKeys,
    pub(crate) pending: Option<PendingInitiation>,
    pub(crate) latest_timestamp: Option<[u8; TIMESTAMP_LEN]>,
    pub(crate) last_initiation_received: Option<Instant>,
    pub(crate) cookie: Option<([u8; 16], Instant)>,
    pub(crate) last_mac1: Option<[u8; 16]>,
    pub(crate) current: Option<Session>,
    pub(crate) previous: Option<Session>,
    pub(crate) next: Option<Session>,
    pub(crate) queue: VecDeque<Vec<u8>>,
    pub(crate) timers: Timers,
    pub(crate) last_handshake: Option<SystemTime>,
    pub(crate) rx_bytes: u64,
    pub(crate) tx_bytes: u64,
    pub(crate) rx_packets: u64,
    pub(crate) tx_packets: u64,
    /// Drops attributed to this peer, indexed like [`crate::DropReason::ALL`].
    pub(crate) drops: [u64; crate::DropReason::ALL.len()],
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some((cookie, _)) = self.cookie.as_mut() {
            cookie.zeroize();
        }
        for packet in &mut self.queue {
            packet.zeroize();
        }
    }
}

impl Peer {
    pub(crate) fn new(identity: &Identity, config: PeerConfig) -> Self {
        let statics = PeerStatic::new(identity, config.public_key, config.preshared_key.as_ref());
        let mac_keys = MacKeys::new(&config.public_key);
        let immediate = config
            .persistent_keepalive
            .is_some_and(|interval| interval > 0);
        Self {
            endpoint: config.endpoint,
            proven_endpoint: None,
            config,
            statics,
            mac_keys,
            pending: None,
            latest_timestamp: None,
            last_initiation_received: None,
            cookie: None,
            last_mac1: None,
            current: None,
            previous: None,
            next: None,
            queue: VecDeque::new(),
            timers: Timers {
                immediate,
                ..Timers::default()
            },
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
            rx_packets: 0,
            tx_packets: 0,
            drops: [0; crate::DropReason::ALL.len()],
        }
    }

    /// Recomputes what depends on our static key or the preshared key.
    pub(crate) fn rekey_statics(&mut self, identity: &Identity) {
        self.statics = PeerStatic::new(
            identity,
            self.config.public_key,
            self.config.preshared_key.as_ref(),
        );
    }

    /// The cookie to put in mac2, if we hold one younger than COOKIE_REFRESH_TIME.
    pub(crate) fn fresh_cookie(&self, now: Instant) -> Option<&[u8; 16]> {
        self.cookie
            .as_ref()
            .filter(|(_, received)| now.saturating_duration_since(*received) < COOKIE_REFRESH_TIME)
            .map(|(cookie, _)| cookie)
    }

    /// The current session if it may still send.
    pub(crate) fn sending_session(&mut self, now: Instant) -> Option<&mut Session> {
        self.current
            .as_mut()
            .filter(|session| session_alive(session, now))
    }

    /// Every local index this peer owns.
    pub(crate) fn indices(&self) -> impl Iterator<Item = u32> + '_ {
        let sessions = [&self.current, &self.previous, &self.next];
        sessions
            .into_iter()
            .flatten()
            .map(|session| session.local_index)
            .chain(self.pending.as_ref().map(|pending| pending.local_index))
    }

    /// Whether the current endpoint has not (yet) shown a return path.
    pub(crate) fn endpoint_unproven(&self) -> bool {
        self.endpoint.is_some() && self.endpoint != self.proven_endpoint
    }

    /// The persistent keepalive interval, if enabled.
    pub(crate) fn keepalive_interval(&self) -> Option<std::time::Duration> {
        self.config
            .persistent_keepalive
            .filter(|&seconds| seconds > 0)
            .map(|seconds| std::time::Duration::from_secs(u64::from(seconds)))
    }

    /// Starts the persistent keepalive afresh after its interval was set:
    /// when enabled, a keepalive goes out at the next call with a clock.
    pub(crate) fn restart_keepalive(&mut self) {
        self.timers.immediate = self.keepalive_interval().is_some();
        self.timers.persistent_keepalive = None;
    }

    /// The earliest instant at which one of this peer's timers is due.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let timers = &self.timers;
        let sessions = [&self.current, &self.previous, &self.next];
        let expiries = sessions
            .into_iter()
            .flatten()
            .map(|session| session.created + REJECT_AFTER_TIME);
        [
            timers.retransmit_handshake,
            timers.send_keepalive,
            timers.new_handshake,
            timers.zero_key_material,
            timers.persistent_keepalive,
        ]
        .into_iter()
        .flatten()
        .chain(expiries)
        .min()
    }
}

/// Whether a session is young enough and has counters left to send.
pub(crate) fn session_alive(session: &Session, now: Instant) -> bool {
    now.saturating_duration_since(session.created) < REJECT_AFTER_TIME
        && session.sent() < crate::timers::REJECT_AFTER_MESSAGES
}
