//! A small deterministic network simulator for `Device`s on a virtual clock:
//! datagrams are delayed, lost, duplicated and reordered by a seeded
//! generator; time jumps from one event to the next, nothing sleeps.

#![allow(dead_code)] // Each test file uses a different part of the simulator.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use enclave_wg::{
    Decapsulated, Device, DropReason, Encapsulated, Event, PeerConfig, PrivateKey, PublicKey,
};
use rand_core::Rng;

/// The seeded generator, shared with the vector-capture example (crate `enclave-testkit`).
pub use enclave_testkit::TestRng;

/// How the simulated network treats datagrams.
#[derive(Debug, Clone, Copy)]
pub struct Conditions {
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Random extra delay in [0, jitter): reorders datagrams.
    pub jitter: Duration,
}

impl Conditions {
    pub fn perfect() -> Self {
        Self {
            loss: 0.0,
            duplicate: 0.0,
            delay: Duration::from_millis(10),
            jitter: Duration::ZERO,
        }
    }

    pub fn hostile() -> Self {
        Self {
            loss: 0.2,
            duplicate: 0.1,
            delay: Duration::from_millis(20),
            jitter: Duration::from_millis(40),
        }
    }
}

pub struct Node {
    pub device: Device,
    pub addr: SocketAddr,
    /// IP packets delivered to this node's TUN, with their sender.
    pub delivered: Vec<(PublicKey, Vec<u8>)>,
    pub events: Vec<Event>,
    pub drops: Vec<DropReason>,
    /// Datagrams this node put on the wire.
    pub sent: Vec<Vec<u8>>,
}

struct InFlight {
    at: Instant,
    seq: u64,
    from: SocketAddr,
    to: SocketAddr,
    payload: Vec<u8>,
}

pub struct Net {
    pub start: Instant,
    pub now: Instant,
    pub nodes: Vec<Node>,
    pub conditions: Conditions,
    rng: TestRng,
    flight: Vec<InFlight>,
    seq: u64,
}

/// The wall clock that matches `now`.
pub fn wall_at(start: Instant, now: Instant) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_790_000_000) + now.duration_since(start)
}

pub fn private_key(seed: u8) -> PrivateKey {
    PrivateKey::from_bytes([seed; 32])
}

/// The overlay address of node `i`: 10.0.0.(i+1).
pub fn overlay(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, i as u8 + 1)
}

/// A minimal IPv4 packet (protocol 253, experimental) with `body`.
pub fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, body: &[u8]) -> Vec<u8> {
    let total = 20 + body.len();
    let mut packet = vec![0u8; total];
    packet[0] = 0x45;
    packet[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    packet[8] = 64;
    packet[9] = 253;
    packet[12..16].copy_from_slice(&src.octets());
    packet[16..20].copy_from_slice(&dst.octets());
    packet[20..].copy_from_slice(body);
    packet
}

impl Net {
    /// `count` nodes, fully meshed: node i has every other node j as a peer
    /// with allowed IPs 10.0.0.(j+1)/32 and endpoint 192.0.2.(j+1):51820.
    pub fn mesh(count: usize, conditions: Conditions, seed: u64) -> Self {
        // The virtual clock's origin: read once, then only moved by the simulation.
        #[allow(clippy::disallowed_methods)]
        let start = Instant::now();
        let mut nodes = Vec::new();
        for i in 0..count {
            let device = Device::new(
                private_key(i as u8 + 1),
                TestRng(seed.wrapping_add(i as u64 * 1000)),
            );
            let addr = SocketAddr::from((Ipv4Addr::new(192, 0, 2, i as u8 + 1), 51820));
            nodes.push(Node {
                device,
                addr,
                delivered: Vec::new(),
                events: Vec::new(),
                drops: Vec::new(),
                sent: Vec::new(),
            });
        }
        let keys: Vec<PublicKey> = nodes.iter().map(|node| node.device.public_key()).collect();
        let addrs: Vec<SocketAddr> = nodes.iter().map(|node| node.addr).collect();
        for (i, node) in nodes.iter_mut().enumerate() {
            for j in (0..count).filter(|&j| j != i) {
                node.device.upsert_peer(PeerConfig {
                    public_key: keys[j],
                    preshared_key: None,
                    endpoint: Some(addrs[j]),
                    allowed_ips: vec![format!("{}/32", overlay(j)).parse().expect("network")],
                    persistent_keepalive: None,
                });
            }
        }
        Self {
            start,
            now: start,
            nodes,
            conditions,
            rng: TestRng(seed ^ 0x5eed),
            flight: Vec::new(),
            seq: 0,
        }
    }

    /// Two nodes on a perfect network with their session up: node 0 sent `first` to node 1,
    /// and a second has passed.
    pub fn pair_after(first: &[u8], seed: u64) -> Self {
        let mut net = Self::mesh(2, Conditions::perfect(), seed);
        net.send_to(0, 1, first);
        net.run_for(Duration::from_secs(1));
        net
    }

    pub fn wall(&self) -> SystemTime {
        wall_at(self.start, self.now)
    }

    pub fn key(&self, i: usize) -> PublicKey {
        self.nodes[i].device.public_key()
    }

    fn chance(&mut self, probability: f64) -> bool {
        probability > 0.0 && (self.rng.next_u64() as f64 / u64::MAX as f64) < probability
    }

    /// Puts a datagram from node `from` on the wire, subject to the conditions.
    pub fn put(&mut self, from: usize, to: SocketAddr, payload: Vec<u8>) {
        self.nodes[from].sent.push(payload.clone());
        let src = self.nodes[from].addr;
        if self.chance(self.conditions.loss) {
            return;
        }
        let copies = if self.chance(self.conditions.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter_ns = self.conditions.jitter.as_nanos() as u64;
            let extra = if jitter_ns == 0 {
                0
            } else {
                self.rng.next_u64() % jitter_ns
            };
            let at = self.now + self.conditions.delay + Duration::from_nanos(extra);
            self.seq += 1;
            self.flight.push(InFlight {
                at,
                seq: self.seq,
                from: src,
                to,
                payload: payload.clone(),
            });
        }
    }

    /// Moves everything the device of node `i` wants to send onto the wire,
    /// and records its events.
    pub fn drain(&mut self, i: usize) {
        while let Some(transmit) = self.nodes[i].device.poll_transmit() {
            self.put(i, transmit.dst, transmit.payload);
        }
        while let Some(event) = self.nodes[i].device.poll_event() {
            self.nodes[i].events.push(event);
        }
    }

    /// Node `i` sends an IP packet (as if read from its TUN).
    pub fn send_ip(&mut self, i: usize, packet: &[u8]) -> Encapsulated {
        let mut out = vec![0u8; packet.len() + 64];
        let (now, wall) = (self.now, self.wall());
        let result = self.nodes[i]
            .device
            .encapsulate(packet, now, wall, &mut out);
        if let Encapsulated::Send { dst, len, .. } = result {
            self.put(i, dst, out[..len].to_vec());
        }
        self.drain(i);
        result
    }

    /// Node `i` sends `body` to node `j`'s overlay address.
    pub fn send_to(&mut self, i: usize, j: usize, body: &[u8]) -> Encapsulated {
        let packet = ipv4_packet(overlay(i), overlay(j), body);
        self.send_ip(i, &packet)
    }

    /// Hands a datagram to the node listening on `to` (if any); returns the outcome.
    pub fn deliver(
        &mut self,
        from: SocketAddr,
        to: SocketAddr,
        payload: &[u8],
    ) -> Option<Decapsulated> {
        let i = self.nodes.iter().position(|node| node.addr == to)?;
        let mut out = vec![0u8; payload.len()];
        let (now, wall) = (self.now, self.wall());
        let result = self.nodes[i]
            .device
            .decapsulate(from, payload, now, wall, &mut out);
        match result {
            Decapsulated::Deliver { peer, len } => {
                self.nodes[i].delivered.push((peer, out[..len].to_vec()))
            }
            Decapsulated::Dropped(reason) => self.nodes[i].drops.push(reason),
            Decapsulated::Consumed { .. } => {}
        }
        self.drain(i);
        Some(result)
    }

    /// Hands `datagram` to node `j` once more, from node `i`'s address: a replay.
    pub fn replay(&mut self, i: usize, j: usize, datagram: &[u8]) -> Option<Decapsulated> {
        let (from, to) = (self.nodes[i].addr, self.nodes[j].addr);
        self.deliver(from, to, datagram)
    }

    /// Sets the allowed IPs of node `i`'s peer `j`.
    pub fn allow(&mut self, i: usize, j: usize, nets: &[&str]) {
        let peer = self.key(j);
        let nets = nets.iter().map(|n| n.parse().expect("network")).collect();
        self.nodes[i]
            .device
            .set_allowed_ips(&peer, nets)
            .expect("peer exists");
    }

    /// Runs the network and the timers until `deadline`.
    pub fn run_until(&mut self, deadline: Instant) {
        loop {
            let next_packet = self
                .flight
                .iter()
                .map(|packet| (packet.at, packet.seq))
                .min();
            let next_timer = self
                .nodes
                .iter()
                .filter_map(|node| node.device.poll_timeout())
                .min();
            let next = match (next_packet.map(|(at, _)| at), next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => break,
            };
            if next > deadline {
                break;
            }
            self.now = self.now.max(next);
            if let Some((at, seq)) = next_packet.filter(|(at, _)| *at <= self.now) {
                let index = self
                    .flight
                    .iter()
                    .position(|packet| packet.at == at && packet.seq == seq);
                if let Some(index) = index {
                    let packet = self.flight.swap_remove(index);
                    self.deliver(packet.from, packet.to, &packet.payload);
                }
                continue;
            }
            let (now, wall) = (self.now, self.wall());
            for i in 0..self.nodes.len() {
                if self.nodes[i]
                    .device
                    .poll_timeout()
                    .is_some_and(|at| at <= now)
                {
                    self.nodes[i].device.handle_timeout(now, wall);
                    self.drain(i);
                    let again = self.nodes[i].device.poll_timeout();
                    assert!(
                        again.is_none_or(|at| at > now),
                        "node {i}: a timer due at {now:?} stayed due"
                    );
                }
            }
        }
        self.now = self.now.max(deadline);
    }

    /// Runs for `duration` of virtual time.
    pub fn run_for(&mut self, duration: Duration) {
        let deadline = self.now + duration;
        self.run_until(deadline);
    }

    /// Tells every device to run its timers now (after configuration changes).
    pub fn tick(&mut self) {
        let (now, wall) = (self.now, self.wall());
        for i in 0..self.nodes.len() {
            self.nodes[i].device.handle_timeout(now, wall);
            self.drain(i);
        }
    }

    pub fn handshakes(&self, i: usize) -> usize {
        self.nodes[i]
            .events
            .iter()
            .filter(|event| matches!(event, Event::HandshakeCompleted { .. }))
            .count()
    }

    /// Bodies (after the 20-byte header) of the packets node `i` received.
    pub fn bodies(&self, i: usize) -> Vec<Vec<u8>> {
        self.nodes[i]
            .delivered
            .iter()
            .map(|(_, packet)| packet[20..].to_vec())
            .collect()
    }
}
