//! How one tunnel runs: both halves on one thread (the default), or with
//! `ENCLAVE_DATAPLANE_THREADS=2` an *inbound* thread (UDP socket to TUN device, the protocol
//! core's timers, control requests) and an *outbound* thread (TUN device to UDP socket). Each direction has one thread, so
//! every flow's packets keep their order without a reordering buffer.
//!
//! What packets of both directions touch, the protocol core and the per-peer filters, is the
//! [`Core`], behind one mutex that each thread takes once per packet read (a super-packet
//! from the TUN device, a possibly coalesced message from the socket), never across a system
//! call on the data path: the reads, the splitting and coalescing, `sendmmsg` and the TUN
//! writes of the two directions run at the same time. Control requests arrive on a channel
//! and an eventfd wakes the inbound thread for them.

mod inbound;
mod outbound;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use enclave_filter::{Direction, FilterConfig, PeerFilter, Verdict};
use enclave_wg::{DropReason, Event, PrivateKey, PublicKey};

use crate::routes::EgressRoutes;
use crate::sys::{Tun, Waker};
use crate::tunnel::{OffloadWanted, PeerSpec, PeerStats, Threads, TunnelStats};
use crate::uapi::{self, DeviceView, SetRequest, UapiError};
use crate::udp::Udp;

use inbound::Inbound;
use outbound::Outbound;

/// Datagrams per recvmmsg/sendmmsg call.
const BATCH: usize = 64;
/// Room for one datagram or packet of any size the kernel can hand us: the largest IP packet
/// plus the transport overhead and padding. Pages of these buffers that no packet reaches are
/// never touched, so they cost address space rather than memory.
const BUF: usize = 65_535 + 64;

/// What the tunnel handle and the UAPI server ask of the loop.
pub(crate) enum Command {
    /// `get=1`: answer with the full text.
    UapiGet(Sender<String>),
    /// `set=1` (already parsed and validated): answer with the `errno=` text.
    UapiSet(Box<SetRequest>, Sender<String>),
    /// Make the peers exactly these (unaffected peers keep their sessions).
    SetPeers(Vec<PeerSpec>, Sender<()>),
    /// Statistics.
    Stats(Sender<TunnelStats>),
    /// Stop the loop.
    Stop,
}

/// What packets of both directions touch: the protocol core, the filters (a flow opened by
/// an outbound packet lets its inbound replies through) and the socket's configuration.
pub(crate) struct Core {
    pub(crate) device: enclave_wg::Device,
    pub(crate) private_key: Option<PrivateKey>,
    /// The socket; replaced when a UAPI `set` changes the port. Each thread holds a clone of
    /// the `Arc` and picks up the new one when it next takes the lock.
    pub(crate) udp: Arc<Udp>,
    filters: BTreeMap<PublicKey, PeerFilter>,
    filter_config: FilterConfig,
    /// Which offloads to ask for, also on a rebound socket.
    offload: OffloadWanted,
    /// Which peer an outbound packet goes to, for the egress filter.
    routes: EgressRoutes,
    drops: [u64; DropReason::ALL.len()],
    /// With two threads: the latest instant the inbound thread sleeps until. The outbound
    /// thread wakes it when a packet it sealed moved the core's next timer before that (a
    /// packet queued for a handshake arms the retransmission).
    inbound_sleeps_until: Option<Instant>,
}

/// What both threads share.
pub(crate) struct Shared {
    core: Mutex<Core>,
    /// Wakes the inbound thread: control requests, a stop, an earlier timer.
    waker: Arc<Waker>,
    /// Wakes the outbound thread (to stop).
    outbound_waker: Waker,
    /// Set when either thread ends; the other then ends too.
    stopping: AtomicBool,
    /// Packets read from the TUN device that could not be taken apart (counted by the
    /// outbound thread, read with the statistics).
    tun_read_malformed: AtomicU64,
}

impl Shared {
    /// The core. A thread that panicked while holding it ends the tunnel anyway, so a
    /// poisoned lock is taken as it is.
    fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes both threads end.
    fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.waker.wake();
        self.outbound_waker.wake();
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

/// A tunnel's state, ready to run.
pub(crate) struct Engine {
    shared: Shared,
    inbound: Inbound,
    outbound: Outbound,
    threads: Threads,
}

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        device: enclave_wg::Device,
        private_key: Option<PrivateKey>,
        tun: Tun,
        udp: Udp,
        filter_config: FilterConfig,
        commands: Receiver<Command>,
        waker: Arc<Waker>,
        offload: OffloadWanted,
        threads: Threads,
    ) -> std::io::Result<Engine> {
        let mut udp = udp;
        if offload.udp_gro {
            udp.enable_gro();
        }
        tracing::info!(gso = offload.udp_gso, gro = udp.gro, "UDP offloads");
        let udp = Arc::new(udp);
        let tun = Arc::new(tun);
        let core = Core {
            device,
            private_key,
            udp: udp.clone(),
            filters: BTreeMap::new(),
            filter_config,
            offload,
            routes: EgressRoutes::default(),
            drops: [0; DropReason::ALL.len()],
            inbound_sleeps_until: None,
        };
        Ok(Engine {
            shared: Shared {
                core: Mutex::new(core),
                waker,
                outbound_waker: Waker::new()?,
                stopping: AtomicBool::new(false),
                tun_read_malformed: AtomicU64::new(0),
            },
            inbound: Inbound::new(tun.clone(), udp.clone(), commands),
            outbound: Outbound::new(tun, udp, offload.udp_gso),
            threads,
        })
    }

    /// Runs until told to stop or until the TUN device or the socket fails.
    pub(crate) fn run(self) -> std::io::Result<()> {
        let Engine {
            shared,
            mut inbound,
            mut outbound,
            threads,
        } = self;
        match threads {
            Threads::One => {
                tracing::info!("data plane on one thread");
                inbound.run(&shared, Some(&mut outbound))
            }
            Threads::Two => std::thread::scope(|scope| {
                let name = format!("{}-out", inbound.interface());
                let shared = &shared;
                let outbound =
                    std::thread::Builder::new()
                        .name(name)
                        .spawn_scoped(scope, move || {
                            let result = outbound.run(shared);
                            shared.stop();
                            result
                        })?;
                tracing::info!("data plane on two threads (inbound, outbound)");
                let result = inbound.run(shared, None);
                shared.stop();
                let outbound = outbound
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("the outbound thread panicked")));
                result.and(outbound)
            }),
        }
    }
}

impl Core {
    /// Returns false when the loop must stop. `tun` and `tun_write_errors` are for the
    /// statistics.
    fn handle_command(&mut self, command: Command, counters: TunCounters<'_>) -> bool {
        match command {
            Command::UapiGet(reply) => {
                let _ = reply.send(self.uapi_get());
            }
            Command::UapiSet(request, reply) => {
                let mut out = String::new();
                let errno = match self.uapi_set(&request) {
                    Ok(()) => 0,
                    Err(e) => {
                        tracing::debug!(error = %e, "UAPI set refused");
                        e.errno()
                    }
                };
                uapi::write_errno(&mut out, errno);
                let _ = reply.send(out);
            }
            Command::SetPeers(peers, reply) => {
                self.set_peers(peers);
                let _ = reply.send(());
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.stats(counters));
            }
            Command::Stop => return false,
        }
        true
    }

    fn uapi_get(&self) -> String {
        let mut out = String::new();
        uapi::write_get(
            &mut out,
            DeviceView {
                private_key: self.private_key.as_ref(),
                listen_port: self.udp.port,
                fwmark: self.udp.fwmark(),
            },
            self.device.peers(),
        );
        out
    }

    fn uapi_set(&mut self, request: &SetRequest) -> Result<(), UapiError> {
        // The socket first: a port that cannot be bound refuses the whole request.
        let fwmark = request.fwmark.unwrap_or(self.udp.fwmark());
        match request.listen_port {
            Some(port) if port != self.udp.port || port == 0 => {
                let mut udp = Udp::bind(port, fwmark).map_err(|_| UapiError::PortInUse)?;
                if self.offload.udp_gro {
                    udp.enable_gro();
                }
                self.udp = Arc::new(udp);
            }
            _ => self
                .udp
                .set_fwmark(fwmark)
                .map_err(|_| UapiError::PortInUse)?,
        }
        request.apply_to(&mut self.device, &mut self.private_key, || {
            enclave_wg::keys::generate_private_key(rand_core::UnwrapErr(getrandom::SysRng))
        });
        // Filters of removed peers go with them.
        let device = &self.device;
        self.filters.retain(|key, _| device.peer(key).is_some());
        self.rebuild_routes();
        self.flush_transmits();
        Ok(())
    }

    fn set_peers(&mut self, peers: Vec<PeerSpec>) {
        let wanted: BTreeMap<PublicKey, PeerSpec> = peers
            .into_iter()
            .map(|p| (p.config.public_key, p))
            .collect();
        let existing: Vec<PublicKey> = self.device.peers().map(|p| p.public_key).collect();
        for key in existing {
            if !wanted.contains_key(&key) {
                self.device.remove_peer(&key);
                self.filters.remove(&key);
            }
        }
        for (key, spec) in wanted {
            self.device.upsert_peer(spec.config);
            match spec.filter {
                Some(rules) => match self.filters.get_mut(&key) {
                    Some(filter) => filter.set_rules(rules),
                    None => {
                        self.filters
                            .insert(key, PeerFilter::new(rules, self.filter_config));
                    }
                },
                None => {
                    self.filters.remove(&key);
                }
            }
        }
        self.rebuild_routes();
        self.flush_transmits();
    }

    fn rebuild_routes(&mut self) {
        self.routes
            .rebuild(self.device.peers(), !self.filters.is_empty());
    }

    fn stats(&self, counters: TunCounters<'_>) -> TunnelStats {
        let peers = self
            .device
            .peers()
            .map(|info| PeerStats {
                filter: self.filters.get(&info.public_key).map(|f| *f.stats()),
                info,
            })
            .collect();
        let mut drops = BTreeMap::new();
        for reason in DropReason::ALL {
            let n = self.drops[reason as usize];
            if n > 0 {
                drops.insert(reason.as_str(), n);
            }
        }
        TunnelStats {
            interface: counters.tun.name().to_owned(),
            listen_port: self.udp.port,
            public_key: self.device.public_key(),
            peers,
            drops,
            tun_write_errors: counters.write_errors,
            tun_read_malformed: counters.read_malformed.load(Ordering::Relaxed),
        }
    }

    fn drop_count(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }

    /// Whether `peer`'s filter (if it has one) lets `packet` through in `direction`.
    fn filter_passes(
        &mut self,
        peer: &PublicKey,
        direction: Direction,
        packet: &[u8],
        now: Instant,
    ) -> bool {
        let Some(filter) = self.filters.get_mut(peer) else {
            return true;
        };
        let Verdict::Drop(reason) = filter.check(direction, packet, now) else {
            return true;
        };
        let (packet, reason) = (Inner(packet), reason.as_str());
        match direction {
            Direction::Ingress => {
                tracing::trace!(peer = %peer, %packet, reason, "inbound packet filtered")
            }
            Direction::Egress => {
                tracing::trace!(peer = %peer, %packet, reason, "outbound packet filtered")
            }
        }
        false
    }

    /// Sends what the core has queued (handshakes, keepalives: the rare datagrams).
    fn flush_transmits(&mut self) {
        while let Some(transmit) = self.device.poll_transmit() {
            if let Err(e) = self.udp.send_to(&transmit.payload, transmit.dst) {
                tracing::trace!(error = %e, "send failed");
            }
        }
    }

    fn drain_events(&mut self) {
        while let Some(event) = self.device.poll_event() {
            match event {
                Event::HandshakeCompleted { peer } => {
                    tracing::debug!(peer = %peer, "handshake completed")
                }
                Event::HandshakeTimedOut { peer } => {
                    tracing::debug!(peer = %peer, "handshake timed out")
                }
                Event::SessionExpired { peer } => {
                    tracing::debug!(peer = %peer, "session expired")
                }
                Event::EndpointChanged { peer, endpoint } => {
                    tracing::debug!(peer = %peer, %endpoint, "endpoint changed")
                }
            }
        }
    }
}

/// The TUN device's counters, kept by the thread that reads or writes it, for the statistics.
struct TunCounters<'a> {
    tun: &'a Tun,
    write_errors: u64,
    read_malformed: &'a AtomicU64,
}

/// Picks up the socket a UAPI `set` bound, if it changed since `udp` was taken.
fn current_udp(udp: &mut Arc<Udp>, core: &Core) -> bool {
    if Arc::ptr_eq(udp, &core.udp) {
        return false;
    }
    *udp = core.udp.clone();
    true
}

/// An inner IP packet in a per-packet TRACE line: `proto src -> dst, len`. Only formatted when
/// TRACE is enabled (`run -v 5`).
struct Inner<'a>(&'a [u8]);

impl std::fmt::Display for Inner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.0;
        if p.len() >= 20 && p[0] >> 4 == 4 {
            let src = std::net::Ipv4Addr::new(p[12], p[13], p[14], p[15]);
            let dst = std::net::Ipv4Addr::new(p[16], p[17], p[18], p[19]);
            let proto = match p[9] {
                1 => "icmp".to_owned(),
                6 => "tcp".to_owned(),
                17 => "udp".to_owned(),
                other => format!("proto {other}"),
            };
            write!(f, "{proto} {src} -> {dst}, {} bytes", p.len())
        } else {
            write!(f, "non-IPv4, {} bytes", p.len())
        }
    }
}
