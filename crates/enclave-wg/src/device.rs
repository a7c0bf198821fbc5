//! The device: one interface's worth of peers, driven by its I/O shell.
//!
//! Configuration and the outbound path live here; the inbound path is in
//! `device/inbound.rs` and the timers in `device/timer_events.rs`.

mod inbound;
mod timer_events;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;
use rand_core::CryptoRng;
use x25519_dalek::StaticSecret;

use crate::allowed_ips::AllowedIps;
use crate::cookie::{seal_macs, CookieChecker, MacKeys};
use crate::crypto::{tai64n, TIMESTAMP_LEN};
use crate::error::{Error, Result};
use crate::handshake::{create_initiation, Identity};
use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::messages::initiation;
use crate::peer::{Peer, PendingInitiation, MAX_QUEUED_PACKETS};
use crate::ratelimit::{LoadMeter, RateLimiter};
use crate::session::Session;
use crate::timers::{
    KEEPALIVE_TIMEOUT, REJECT_AFTER_TIME, REKEY_AFTER_MESSAGES, REKEY_AFTER_TIME, REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER,
};
use crate::types::{DropReason, Encapsulated, Event, PeerConfig, PeerInfo, Transmit};

/// Random numbers for ephemeral keys, indices, cookies and jitter.
trait DeviceRng: CryptoRng + Send {}
impl<T: CryptoRng + Send> DeviceRng for T {}

/// A peer's position in the device's slot table.
type Slot = usize;

/// How many removed peers' latest handshake timestamps the device remembers
/// (the oldest removal is forgotten first).
pub(crate) const REMEMBERED_TIMESTAMPS: usize = 4096;

/// The greatest accepted TAI64N timestamp of peers that were removed, so that
/// a peer added again does not accept an initiation captured earlier (a
/// replay would otherwise move its endpoint). Bounded by [`REMEMBERED_TIMESTAMPS`].
#[derive(Debug, Default)]
struct RemovedTimestamps {
    by_key: BTreeMap<PublicKey, (u64, [u8; TIMESTAMP_LEN])>,
    by_age: BTreeMap<u64, PublicKey>,
    next: u64,
}

impl RemovedTimestamps {
    fn remember(&mut self, key: PublicKey, timestamp: [u8; TIMESTAMP_LEN]) {
        let timestamp = match self.by_key.remove(&key) {
            Some((age, old)) => {
                self.by_age.remove(&age);
                timestamp.max(old)
            }
            None => timestamp,
        };
        while self.by_key.len() >= REMEMBERED_TIMESTAMPS {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            self.by_key.remove(&oldest);
        }
        self.by_key.insert(key, (self.next, timestamp));
        self.by_age.insert(self.next, key);
        self.next += 1;
    }

    fn take(&mut self, key: &PublicKey) -> Option<[u8; TIMESTAMP_LEN]> {
        let (age, timestamp) = self.by_key.remove(key)?;
        self.by_age.remove(&age);
        Some(timestamp)
    }
}

/// One WireGuard interface's protocol state, without any I/O.
///
/// The shell calls [`Device::encapsulate`] for every packet read from the
/// TUN device and [`Device::decapsulate`] for every datagram read from the
/// UDP socket. After each call (or batch of calls) it drains
/// [`Device::poll_transmit`] and [`Device::poll_event`], and it calls
/// [`Device::handle_timeout`] when the instant returned by
/// [`Device::poll_timeout`] has passed, and once after every configuration
/// change (so that a newly configured persistent keepalive starts at once).
pub struct Device {
    identity: Identity,
    own_mac_keys: MacKeys,
    rng: Box<dyn DeviceRng>,
    peers: Vec<Option<Peer>>,
    by_key: BTreeMap<PublicKey, Slot>,
    indices: HashMap<u32, Slot>,
    routes: AllowedIps<Slot>,
    removed_timestamps: RemovedTimestamps,
    cookie_checker: CookieChecker,
    forced_under_load: bool,
    load: LoadMeter,
    /// Under load: handshakes with a valid mac2, per source address.
    limiter: RateLimiter,
    /// Under load: cookie replies, per source address.
    cookie_limiter: RateLimiter,
    mtu: Option<usize>,
    last_now: Option<Instant>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("public_key", &self.identity.public)
            .field("peers", &self.by_key.len())
            .field("under_load", &self.under_load())
            .finish_non_exhaustive()
    }
}

impl Device {
    /// A device with no peers. `rng` is the only source of randomness the
    /// core uses; the shell seeds it from the operating system.
    pub fn new(private_key: PrivateKey, rng: impl CryptoRng + Send + 'static) -> Self {
        let identity = Identity::new(*private_key.as_bytes());
        let own_mac_keys = MacKeys::new(&identity.public);
        Self {
            identity,
            own_mac_keys,
            rng: Box::new(rng),
            peers: Vec::new(),
            by_key: BTreeMap::new(),
            indices: HashMap::new(),
            routes: AllowedIps::new(),
            removed_timestamps: RemovedTimestamps::default(),
            cookie_checker: CookieChecker::new(),
            forced_under_load: false,
            load: LoadMeter::default(),
            limiter: RateLimiter::default(),
            cookie_limiter: RateLimiter::default(),
            mtu: None,
            last_now: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Replaces the static private key. Every session and handshake in
    /// progress ends; a peer whose public key equals the new public key is removed.
    pub fn set_private_key(&mut self, private_key: PrivateKey) {
        self.identity = Identity::new(*private_key.as_bytes());
        self.own_mac_keys = MacKeys::new(&self.identity.public);
        let own = self.identity.public;
        self.remove_peer(&own);
        for slot in 0..self.peers.len() {
            self.clear_sessions(slot);
            if let Some(peer) = self.peers[slot].as_mut() {
                peer.rekey_statics(&self.identity);
            }
        }
    }

    /// The device's static public key.
    pub fn public_key(&self) -> PublicKey {
        self.identity.public
    }

    /// Adds a peer, or reconfigures an existing one, changing only what
    /// changed. An existing peer keeps its sessions, handshake timestamps,
    /// counters, proven endpoint and current endpoint (which may have been
    /// learnt by roaming); the current endpoint is reset to the configured one
    /// only when `config.endpoint` is `Some` and differs from the endpoint
    /// configured before. A peer with our own public key is ignored. A network
    /// already routed to another peer moves to this one.
    pub fn upsert_peer(&mut self, config: PeerConfig) {
        if config.public_key == self.identity.public {
            return;
        }
        let allowed_ips = config.allowed_ips.clone();
        let slot = match self.by_key.get(&config.public_key) {
            Some(&slot) => {
                if let Some(peer) = self.peers[slot].as_mut() {
                    let psk_changed = peer.config.preshared_key != config.preshared_key;
                    let keepalive_changed =
                        peer.config.persistent_keepalive != config.persistent_keepalive;
                    let endpoint_changed =
                        config.endpoint.is_some() && config.endpoint != peer.config.endpoint;
                    if endpoint_changed {
                        peer.endpoint = config.endpoint;
                    }
                    peer.config = config;
                    if psk_changed {
                        peer.rekey_statics(&self.identity);
                    }
                    if keepalive_changed {
                        peer.restart_keepalive();
                    }
                }
                slot
            }
            None => {
                let mut peer = Peer::new(&self.identity, config);
                let key = peer.config.public_key;
                peer.latest_timestamp = self.removed_timestamps.take(&key);
                let slot = match self.peers.iter().position(Option::is_none) {
                    Some(free) => {
                        self.peers[free] = Some(peer);
                        free
                    }
                    None => {
                        self.peers.push(Some(peer));
                        self.peers.len() - 1
                    }
                };
                self.by_key.insert(key, slot);
                slot
            }
        };
        self.set_routes(slot, allowed_ips);
    }

    /// Removes a peer: from now on nothing is sent to or accepted from it.
    /// Its latest accepted handshake timestamp is remembered (for a bounded
    /// number of removed peers), so that if it is added again, initiations
    /// captured before are still rejected as replays. Returns whether it existed.
    pub fn remove_peer(&mut self, public_key: &PublicKey) -> bool {
        let Some(slot) = self.by_key.remove(public_key) else {
            return false;
        };
        self.routes.remove_value(slot);
        if let Some(peer) = self.peers[slot].take() {
            for index in peer.indices() {
                self.indices.remove(&index);
            }
            if let Some(timestamp) = peer.latest_timestamp {
                self.removed_timestamps.remember(*public_key, timestamp);
            }
        }
        true
    }

    /// Removes every peer (UAPI `replace_peers=true`).
    pub fn remove_all_peers(&mut self) {
        let keys: Vec<PublicKey> = self.by_key.keys().copied().collect();
        for key in keys {
            self.remove_peer(&key);
        }
    }

    /// What the device knows about each peer, ordered by public key.
    pub fn peers(&self) -> impl Iterator<Item = PeerInfo> + '_ {
        self.by_key.keys().filter_map(|key| self.peer(key))
    }

    /// What the device knows about one peer.
    pub fn peer(&self, public_key: &PublicKey) -> Option<PeerInfo> {
        let peer = self.peers.get(*self.by_key.get(public_key)?)?.as_ref()?;
        Some(PeerInfo {
            public_key: peer.config.public_key,
            preshared_key: peer.config.preshared_key.clone(),
            endpoint: peer.endpoint,
            proven_endpoint: peer.proven_endpoint,
            allowed_ips: peer.config.allowed_ips.clone(),
            persistent_keepalive: peer.config.persistent_keepalive,
            last_handshake: peer.last_handshake,
            rx_bytes: peer.rx_bytes,
            tx_bytes: peer.tx_bytes,
            rx_packets: peer.rx_packets,
            tx_packets: peer.tx_packets,
            drops: peer.drops,
        })
    }

    /// Replaces a peer's allowed IPs.
    pub fn set_allowed_ips(
        &mut self,
        public_key: &PublicKey,
        allowed_ips: Vec<IpNet>,
    ) -> Result<()> {
        let slot = self.slot_of(public_key)?;
        self.set_routes(slot, allowed_ips);
        Ok(())
    }

    /// Sets a peer's current endpoint (until an authenticated packet comes
    /// from elsewhere), as UAPI `endpoint=` does; it also becomes the
    /// configured endpoint that [`Device::upsert_peer`] compares with. The
    /// proven endpoint does not change.
    pub fn set_endpoint(
        &mut self,
        public_key: &PublicKey,
        endpoint: Option<SocketAddr>,
    ) -> Result<()> {
        self.update_peer(public_key, |peer, _| {
            peer.config.endpoint = endpoint;
            peer.endpoint = endpoint;
        })
    }

    /// Sets or clears a peer's preshared key; it takes effect at the next handshake.
    pub fn set_preshared_key(
        &mut self,
        public_key: &PublicKey,
        preshared_key: Option<PresharedKey>,
    ) -> Result<()> {
        self.update_peer(public_key, |peer, identity| {
            peer.config.preshared_key = preshared_key;
            peer.rekey_statics(identity);
        })
    }

    /// Sets a peer's persistent keepalive interval in seconds (`None` or 0:
    /// off). When enabled, a keepalive goes out at the next
    /// [`Device::handle_timeout`].
    pub fn set_persistent_keepalive(
        &mut self,
        public_key: &PublicKey,
        interval: Option<u16>,
    ) -> Result<()> {
        self.update_peer(public_key, |peer, _| {
            peer.config.persistent_keepalive = interval;
            peer.restart_keepalive();
        })
    }

    /// Forces the device under load (`true`), e.g. because the shell's
    /// receive queue is deep, or leaves the decision to the device's own
    /// count of handshake messages with a valid mac1 (`false`, the default;
    /// see [`crate::ratelimit`]). While under load, handshake messages without
    /// a valid mac2 are answered with a cookie reply instead of being processed
    /// (paper, section 5.3), and each source address gets at most
    /// [`crate::ratelimit::HANDSHAKES_PER_SECOND`] processed.
    pub fn set_under_load(&mut self, under_load: bool) {
        self.forced_under_load = under_load;
    }

    /// The peer that cryptokey routing picks for `destination` (the longest
    /// prefix among all peers' allowed IPs), as [`Device::encapsulate`] would.
    pub fn route(&self, destination: IpAddr) -> Option<PublicKey> {
        let slot = self.routes.lookup(destination)?;
        Some(self.peers.get(slot)?.as_ref()?.config.public_key)
    }

    /// The MTU of the tunnel interface. Padding then never makes a packet's
    /// plaintext longer than the MTU (as wireguard-go does), so a full-sized
    /// packet does not grow past what the underlay was sized for. Without
    /// it, plaintext is always padded to the next multiple of 16 bytes.
    pub fn set_mtu(&mut self, mtu: Option<u16>) {
        self.mtu = mtu.map(usize::from);
    }

    /// Whether the device is treating itself as under load (see
    /// [`Device::set_under_load`]), as of the latest call that gave it the time.
    pub fn under_load(&self) -> bool {
        self.forced_under_load || self.last_now.is_some_and(|now| self.load.under_load(now))
    }

    /// Encrypts one IP packet read from the TUN device into `out` (which
    /// needs [`crate::encapsulated_len`]`(ip_packet.len())` bytes). The peer
    /// is the one whose allowed IPs hold the longest prefix containing the
    /// destination. Allocation-free unless the packet has to wait for a
    /// handshake.
    pub fn encapsulate(
        &mut self,
        ip_packet: &[u8],
        now: Instant,
        wall: SystemTime,
        out: &mut [u8],
    ) -> Encapsulated {
        self.last_now = Some(now);
        let Some(destination) = ip_destination(ip_packet) else {
            return Encapsulated::Dropped(DropReason::Malformed);
        };
        let Some(slot) = self.routes.lookup(destination) else {
            return Encapsulated::Dropped(DropReason::NoRoute);
        };
        let Some(peer) = self.peers.get_mut(slot).and_then(Option::as_mut) else {
            return Encapsulated::Dropped(DropReason::NoRoute);
        };
        let key = peer.config.public_key;
        let Some(dst) = peer.endpoint else {
            return Encapsulated::Dropped(DropReason::NoEndpoint);
        };
        if out.len() < crate::encapsulated_len(ip_packet.len()) {
            return Encapsulated::Dropped(DropReason::BufferTooSmall);
        }
        let mtu = self.mtu;
        let sealed = peer.sending_session(now).and_then(|session| {
            let len = session.seal(ip_packet, mtu, out)?;
            Some((len, needs_rekey(session, now)))
        });
        match sealed {
            Some((len, rekey)) => {
                peer.tx_bytes += len as u64;
                peer.tx_packets += 1;
                on_data_sent(peer, now);
                if rekey {
                    self.send_initiation(slot, now, wall, false);
                }
                tracing::trace!(len, "sealed a transport packet");
                Encapsulated::Send {
                    peer: key,
                    dst,
                    len,
                }
            }
            None => {
                if peer.queue.len() >= MAX_QUEUED_PACKETS {
                    return Encapsulated::Dropped(DropReason::QueueFull);
                }
                peer.queue.push_back(ip_packet.to_vec());
                self.send_initiation(slot, now, wall, false);
                Encapsulated::Queued { peer: key }
            }
        }
    }

    /// The next datagram to send. Call until `None` after every other call.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event. Call until `None` after every other call.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Device::handle_timeout`] must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers
            .iter()
            .flatten()
            .filter_map(|peer| {
                if peer.timers.immediate {
                    self.last_now.or_else(|| peer.next_deadline())
                } else {
                    peer.next_deadline()
                }
            })
            .min()
    }

    /// Runs the timers (retransmissions, keepalives, rekeys, expiry) due at `now`.
    pub fn handle_timeout(&mut self, now: Instant, wall: SystemTime) {
        self.last_now = Some(now);
        for slot in 0..self.peers.len() {
            if self.peers[slot].is_some() {
                self.peer_timers(slot, now, wall);
            }
        }
    }

    fn slot_of(&self, public_key: &PublicKey) -> Result<Slot> {
        self.by_key
            .get(public_key)
            .copied()
            .ok_or(Error::UnknownPeer(*public_key))
    }

    /// Applies `change` to the peer with `public_key`, which is also given our
    /// identity (for what depends on our static key).
    fn update_peer(
        &mut self,
        public_key: &PublicKey,
        change: impl FnOnce(&mut Peer, &Identity),
    ) -> Result<()> {
        let slot = self.slot_of(public_key)?;
        if let Some(peer) = self.peers[slot].as_mut() {
            change(peer, &self.identity);
        }
        Ok(())
    }

    /// Routes `allowed_ips` to the peer in `slot`, taking them away from any other peer.
    fn set_routes(&mut self, slot: Slot, allowed_ips: Vec<IpNet>) {
        let allowed_ips: Vec<IpNet> = allowed_ips.into_iter().map(|net| net.trunc()).collect();
        self.routes.remove_value(slot);
        for (other, peer) in self.peers.iter_mut().enumerate() {
            if let Some(peer) = peer.as_mut().filter(|_| other != slot) {
                peer.config
                    .allowed_ips
                    .retain(|net| !allowed_ips.contains(&net.trunc()));
            }
        }
        for net in &allowed_ips {
            self.routes.insert(*net, slot);
        }
        if let Some(peer) = self.peers[slot].as_mut() {
            peer.config.allowed_ips = allowed_ips;
        }
    }

    /// A fresh local index for `slot`, unique among the device's live indices.
    fn new_index(&mut self, slot: Slot) -> u32 {
        loop {
            let index = self.rng.next_u32();
            if let std::collections::hash_map::Entry::Vacant(entry) = self.indices.entry(index) {
                entry.insert(slot);
                return index;
            }
        }
    }

    fn release_session(&mut self, session: Option<Session>) {
        if let Some(session) = session {
            self.indices.remove(&session.local_index);
        }
    }

    /// Forgets every session and the pending handshake of the peer in `slot`.
    fn clear_sessions(&mut self, slot: Slot) {
        let Some(peer) = self.peers[slot].as_mut() else {
            return;
        };
        let sessions = [peer.current.take(), peer.previous.take(), peer.next.take()];
        let pending = peer.pending.take();
        peer.timers.retransmit_handshake = None;
        peer.timers.attempt_started = None;
        for session in sessions {
            self.release_session(session);
        }
        if let Some(pending) = pending {
            self.indices.remove(&pending.local_index);
        }
    }

    /// Sends a handshake initiation to the peer in `slot`. Unless `retry`,
    /// at most one per REKEY_TIMEOUT (paper, section 6.4).
    fn send_initiation(&mut self, slot: Slot, now: Instant, wall: SystemTime, retry: bool) {
        let Some(peer) = self.peers[slot].as_ref() else {
            return;
        };
        if !retry {
            let recent = peer
                .timers
                .last_initiation_sent
                .filter(|sent| now.saturating_duration_since(*sent) < REKEY_TIMEOUT);
            if let Some(sent) = recent {
                // Too soon for another initiation: make sure one follows
                // when the rate limit allows, so queued packets never strand.
                if let Some(peer) = self.peers[slot].as_mut() {
                    peer.timers
                        .retransmit_handshake
                        .get_or_insert(sent + REKEY_TIMEOUT);
                    peer.timers.attempt_started.get_or_insert(now);
                }
                return;
            }
        }
        let Some(dst) = peer.endpoint else {
            return;
        };
        let old_index = peer.pending.as_ref().map(|pending| pending.local_index);
        if let Some(index) = old_index {
            self.indices.remove(&index);
        }
        let local_index = self.new_index(slot);
        let ephemeral = StaticSecret::random_from_rng(&mut *self.rng);
        let jitter_ms = self.rng.next_u32() % REKEY_TIMEOUT_JITTER.as_millis() as u32;
        let Some(peer) = self.peers[slot].as_mut() else {
            return;
        };
        let mut msg = [0u8; initiation::LEN];
        let Some(state) = create_initiation(
            &self.identity,
            &peer.statics,
            local_index,
            ephemeral,
            tai64n(wall),
            &mut msg,
        ) else {
            // The peer's public key has small order: no handshake is possible.
            peer.pending = None;
            self.indices.remove(&local_index);
            return;
        };
        peer.last_mac1 = Some(seal_macs(&mut msg, &peer.mac_keys, peer.fresh_cookie(now)));
        peer.pending = Some(PendingInitiation {
            state,
            local_index,
            sent_to: dst,
            after_cookie: false,
        });
        let timers = &mut peer.timers;
        timers.last_initiation_sent = Some(now);
        // REKEY_ATTEMPT_TIME counts from the first initiation of an attempt.
        timers.attempt_started.get_or_insert(now);
        timers.retransmit_handshake =
            Some(now + REKEY_TIMEOUT + Duration::from_millis(u64::from(jitter_ms)));
        peer.tx_bytes += msg.len() as u64;
        on_authenticated_sent(peer, now);
        tracing::debug!(peer = %peer.config.public_key, retry, "sending handshake initiation");
        self.transmits.push_back(Transmit {
            dst,
            payload: msg.to_vec(),
        });
    }

    /// Sends a keepalive (an empty transport message) on the current
    /// session, or starts a handshake when there is none.
    fn send_keepalive(&mut self, slot: Slot, now: Instant, wall: SystemTime) {
        let Some(peer) = self.peers[slot].as_mut() else {
            return;
        };
        let Some(dst) = peer.endpoint else {
            return;
        };
        let mut buffer = [0u8; crate::TRANSPORT_OVERHEAD];
        let sealed = peer.sending_session(now).and_then(|session| {
            let len = session.seal(&[], None, &mut buffer)?;
            Some((len, needs_rekey(session, now)))
        });
        match sealed {
            Some((len, rekey)) => {
                peer.tx_bytes += len as u64;
                peer.tx_packets += 1;
                on_authenticated_sent(peer, now);
                tracing::trace!("sending keepalive");
                self.transmits.push_back(Transmit {
                    dst,
                    payload: buffer[..len].to_vec(),
                });
                if rekey {
                    self.send_initiation(slot, now, wall, false);
                }
            }
            None => self.send_initiation(slot, now, wall, false),
        }
    }

    /// Sends the packets that waited for a session; a keepalive if none did
    /// and `keepalive_if_empty`.
    fn flush_queue(
        &mut self,
        slot: Slot,
        now: Instant,
        wall: SystemTime,
        keepalive_if_empty: bool,
    ) {
        let Some(peer) = self.peers[slot].as_mut() else {
            return;
        };
        if peer.queue.is_empty() {
            if keepalive_if_empty {
                self.send_keepalive(slot, now, wall);
            }
            return;
        }
        let Some(dst) = peer.endpoint else {
            return;
        };
        let mtu = self.mtu;
        while let Some(mut packet) = peer.queue.pop_front() {
            let mut payload = vec![0u8; crate::encapsulated_len(packet.len())];
            let sealed = peer
                .sending_session(now)
                .and_then(|session| session.seal(&packet, mtu, &mut payload));
            zeroize::Zeroize::zeroize(&mut packet);
            let Some(len) = sealed else {
                break;
            };
            payload.truncate(len);
            peer.tx_bytes += len as u64;
            peer.tx_packets += 1;
            on_data_sent(peer, now);
            self.transmits.push_back(Transmit { dst, payload });
        }
    }
}

/// Timer bookkeeping after any authenticated packet was sent (wireguard-go's
/// `timersAnyAuthenticatedPacketSent` and `...Traversal`).
fn on_authenticated_sent(peer: &mut Peer, now: Instant) {
    peer.timers.send_keepalive = None;
    if let Some(interval) = peer.keepalive_interval() {
        peer.timers.persistent_keepalive = Some(now + interval);
    }
}

/// After a data packet (not a keepalive) was sent: expect an answer within
/// KEEPALIVE_TIMEOUT + REKEY_TIMEOUT or start a new handshake (section 6.5).
fn on_data_sent(peer: &mut Peer, now: Instant) {
    on_authenticated_sent(peer, now);
    peer.timers
        .new_handshake
        .get_or_insert(now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT);
}

/// Whether sending on `session` should start a new handshake (section
/// 6.2): after REKEY_AFTER_MESSAGES, or for the initiator after REKEY_AFTER_TIME.
fn needs_rekey(session: &Session, now: Instant) -> bool {
    session.sent() >= REKEY_AFTER_MESSAGES
        || (session.initiator && now.saturating_duration_since(session.created) >= REKEY_AFTER_TIME)
}

/// Whether the receiving side of the initiator's session is about to
/// expire, so that it should rekey now (wireguard-go's `keepKeyFreshReceiving`).
fn needs_last_minute_rekey(session: &Session, now: Instant) -> bool {
    session.initiator
        && now.saturating_duration_since(session.created)
            >= REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
}

/// The destination address of an IPv4 or IPv6 packet.
fn ip_destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => {
            let bytes: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(bytes)))
        }
        6 => {
            let bytes: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// The source address and the true length (without padding) of a decrypted IP packet.
fn ip_source_and_len(packet: &[u8]) -> Option<(IpAddr, usize)> {
    match packet.first()? >> 4 {
        4 => {
            let total = usize::from(u16::from_be_bytes(packet.get(2..4)?.try_into().ok()?));
            let bytes: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
            (20..=packet.len())
                .contains(&total)
                .then_some((IpAddr::V4(Ipv4Addr::from(bytes)), total))
        }
        6 => {
            let payload = usize::from(u16::from_be_bytes(packet.get(4..6)?.try_into().ok()?));
            let bytes: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
            let total = payload + 40;
            (total <= packet.len()).then_some((IpAddr::V6(Ipv6Addr::from(bytes)), total))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{ipv4, Pair};
    use crate::timers::REJECT_AFTER_MESSAGES;

    fn pair() -> Pair {
        Pair::established(enclave_testkit::TestRng(1), enclave_testkit::TestRng(2))
    }

    /// A's current session with B.
    fn a_current(pair: &mut Pair) -> &mut Session {
        let slot = pair.a.by_key[&pair.b.public_key()];
        let peer = pair.a.peers[slot].as_mut().expect("peer");
        peer.current.as_mut().expect("a session")
    }

    #[test]
    fn rekey_after_messages_starts_a_handshake_and_keeps_sending() {
        let mut pair = pair();
        assert!(pair.a.poll_transmit().is_none());
        pair.now += REKEY_TIMEOUT;
        a_current(&mut pair).set_sent(REKEY_AFTER_MESSAGES);
        let mut out = [0u8; 256];
        let sent = pair.a.encapsulate(&ipv4(28), pair.now, pair.wall, &mut out);
        assert!(matches!(sent, Encapsulated::Send { .. }), "{sent:?}");
        let initiation = pair.a.poll_transmit().expect("a rekey initiation");
        assert_eq!(initiation.payload.len(), initiation::LEN);
    }

    #[test]
    fn reject_after_messages_stops_the_session() {
        let mut pair = pair();
        a_current(&mut pair).set_sent(REJECT_AFTER_MESSAGES);
        let mut out = [0u8; 256];
        let queued = pair.a.encapsulate(&ipv4(28), pair.now, pair.wall, &mut out);
        assert_eq!(
            queued,
            Encapsulated::Queued {
                peer: pair.b.public_key()
            }
        );
        // The first handshake was just now: the new initiation waits for
        // the rate limit, then the handshake completes and the queued
        // packet goes out on the new session.
        assert!(pair.a.poll_transmit().is_none());
        let due = pair.a.poll_timeout().expect("a timer");
        assert!(due <= pair.now + REKEY_TIMEOUT);
        pair.now += REKEY_TIMEOUT;
        pair.wall += REKEY_TIMEOUT;
        pair.a.handle_timeout(pair.now, pair.wall);
        pair.exchange();
        assert_eq!(a_current(&mut pair).sent(), 1);
    }

    #[test]
    fn removed_timestamps_keep_the_greatest_and_forget_the_oldest_removal() {
        let mut memory = RemovedTimestamps::default();
        let key = |n: u32| {
            let mut bytes = [0u8; 32];
            bytes[..4].copy_from_slice(&n.to_be_bytes());
            PublicKey(bytes)
        };
        memory.remember(key(0), [5; TIMESTAMP_LEN]);
        memory.remember(key(0), [3; TIMESTAMP_LEN]);
        for n in 1..REMEMBERED_TIMESTAMPS as u32 {
            memory.remember(key(n), [1; TIMESTAMP_LEN]);
        }
        assert_eq!(memory.by_key.len(), REMEMBERED_TIMESTAMPS);
        // One more: the oldest removal (key 0) goes.
        memory.remember(key(REMEMBERED_TIMESTAMPS as u32), [1; TIMESTAMP_LEN]);
        assert_eq!(memory.by_key.len(), REMEMBERED_TIMESTAMPS);
        assert_eq!(memory.by_age.len(), REMEMBERED_TIMESTAMPS);
        assert_eq!(memory.take(&key(0)), None);
        assert_eq!(memory.take(&key(1)), Some([1; TIMESTAMP_LEN]));
        let mut again = RemovedTimestamps::default();
        again.remember(key(7), [5; TIMESTAMP_LEN]);
        again.remember(key(7), [3; TIMESTAMP_LEN]);
        assert_eq!(
            again.take(&key(7)),
            Some([5; TIMESTAMP_LEN]),
            "the greatest"
        );
        assert_eq!(again.take(&key(7)), None);
    }

    #[test]
    fn output_buffer_too_small_is_reported() {
        let mut pair = pair();
        let mut out = [0u8; 40];
        let dropped = pair.a.encapsulate(&ipv4(28), pair.now, pair.wall, &mut out);
        assert_eq!(dropped, Encapsulated::Dropped(DropReason::BufferTooSmall));
    }
}
