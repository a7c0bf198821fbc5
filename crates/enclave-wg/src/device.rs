//! The device: one interface's worth of peers, driven by its I/O shell.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use ipnet::IpNet;
use rand_core::{CryptoRng, RngCore};

use crate::error::{Error, Result};
use crate::keys::{PrivateKey, PublicKey};
use crate::types::{Decapsulated, DropReason, Encapsulated, Event, PeerConfig, PeerInfo, Transmit};

/// Random numbers for ephemeral keys, indices, cookies and jitter.
trait DeviceRng: RngCore + CryptoRng + Send {}
impl<T: RngCore + CryptoRng + Send> DeviceRng for T {}

/// One WireGuard interface's protocol state, without any I/O.
///
/// The shell calls [`Device::encapsulate`] for every packet read from the
/// TUN device and [`Device::decapsulate`] for every datagram read from the
/// UDP socket. After each call it drains [`Device::poll_transmit`] and
/// [`Device::poll_event`], and it calls [`Device::handle_timeout`] when the
/// instant returned by [`Device::poll_timeout`] has passed.
pub struct Device {
    private_key: PrivateKey,
    public_key: PublicKey,
    rng: Box<dyn DeviceRng>,
    peers: BTreeMap<PublicKey, PeerConfig>,
    under_load: bool,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("public_key", &self.public_key)
            .field("peers", &self.peers.len())
            .field("under_load", &self.under_load)
            .finish_non_exhaustive()
    }
}

impl Device {
    /// A device with no peers. `rng` is the only source of randomness the
    /// core uses; the shell seeds it from the operating system.
    pub fn new(private_key: PrivateKey, rng: impl RngCore + CryptoRng + Send + 'static) -> Self {
        let public_key = private_key.public_key();
        Self {
            private_key,
            public_key,
            rng: Box::new(rng),
            peers: BTreeMap::new(),
            under_load: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Replaces the static private key. Every session and handshake in
    /// progress ends; a peer whose public key equals the new public key is removed.
    pub fn set_private_key(&mut self, private_key: PrivateKey) {
        self.public_key = private_key.public_key();
        self.private_key = private_key;
        let own = self.public_key;
        self.peers.remove(&own);
    }

    /// The device's static public key.
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// Adds a peer, or replaces the configuration of an existing one (its
    /// sessions and counters are kept).
    pub fn upsert_peer(&mut self, config: PeerConfig) {
        if config.public_key == self.public_key {
            return;
        }
        self.peers.insert(config.public_key, config);
    }

    /// Removes a peer: from now on nothing is sent to or accepted from it.
    /// Returns whether it existed.
    pub fn remove_peer(&mut self, public_key: &PublicKey) -> bool {
        self.peers.remove(public_key).is_some()
    }

    /// Removes every peer (UAPI `replace_peers=true`).
    pub fn remove_all_peers(&mut self) {
        self.peers.clear();
    }

    /// What the device knows about each peer, ordered by public key.
    pub fn peers(&self) -> impl Iterator<Item = PeerInfo> + '_ {
        self.peers.keys().filter_map(|key| self.peer(key))
    }

    /// What the device knows about one peer.
    pub fn peer(&self, public_key: &PublicKey) -> Option<PeerInfo> {
        self.peers.get(public_key).map(|config| PeerInfo {
            public_key: config.public_key,
            preshared_key: config.preshared_key,
            endpoint: config.endpoint,
            allowed_ips: config.allowed_ips.clone(),
            persistent_keepalive: config.persistent_keepalive,
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
            rx_packets: 0,
            tx_packets: 0,
        })
    }

    /// Replaces a peer's allowed IPs.
    pub fn set_allowed_ips(
        &mut self,
        public_key: &PublicKey,
        allowed_ips: Vec<IpNet>,
    ) -> Result<()> {
        self.config_mut(public_key)?.allowed_ips = allowed_ips;
        Ok(())
    }

    /// Sets a peer's endpoint (until an authenticated packet comes from elsewhere).
    pub fn set_endpoint(
        &mut self,
        public_key: &PublicKey,
        endpoint: Option<SocketAddr>,
    ) -> Result<()> {
        self.config_mut(public_key)?.endpoint = endpoint;
        Ok(())
    }

    /// Sets or clears a peer's preshared key; it takes effect at the next handshake.
    pub fn set_preshared_key(
        &mut self,
        public_key: &PublicKey,
        preshared_key: Option<[u8; 32]>,
    ) -> Result<()> {
        self.config_mut(public_key)?.preshared_key = preshared_key;
        Ok(())
    }

    /// Sets a peer's persistent keepalive interval in seconds (`None` or 0: off).
    pub fn set_persistent_keepalive(
        &mut self,
        public_key: &PublicKey,
        interval: Option<u16>,
    ) -> Result<()> {
        self.config_mut(public_key)?.persistent_keepalive = interval;
        Ok(())
    }

    /// Tells the core whether the shell's receive queue is deep. While under
    /// load, handshake messages without a valid mac2 are answered with a
    /// cookie reply instead of being processed (paper, section 5.3).
    pub fn set_under_load(&mut self, under_load: bool) {
        self.under_load = under_load;
    }

    /// Encrypts one IP packet read from the TUN device into `out` (which
    /// needs [`crate::encapsulated_len`] bytes). Allocation-free unless the
    /// packet has to be queued for a handshake.
    pub fn encapsulate(
        &mut self,
        ip_packet: &[u8],
        now: Instant,
        wall: SystemTime,
        out: &mut [u8],
    ) -> Encapsulated {
        let _ = (ip_packet, now, wall, out);
        Encapsulated::Dropped(DropReason::NoRoute)
    }

    /// Handles one datagram received from `from` on the UDP socket. A
    /// transport packet is decrypted into `out` (which needs
    /// `datagram.len()` bytes). Never panics, whatever the bytes.
    pub fn decapsulate(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
        wall: SystemTime,
        out: &mut [u8],
    ) -> Decapsulated {
        let _ = (from, datagram, now, wall, out);
        Decapsulated::Dropped(DropReason::Malformed)
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
        None
    }

    /// Runs the timers (retransmissions, keepalives, rekeys, expiry) due at `now`.
    pub fn handle_timeout(&mut self, now: Instant, wall: SystemTime) {
        let _ = (now, wall, &mut self.rng, &self.private_key);
    }

    fn config_mut(&mut self, public_key: &PublicKey) -> Result<&mut PeerConfig> {
        self.peers
            .get_mut(public_key)
            .ok_or(Error::UnknownPeer(*public_key))
    }
}
