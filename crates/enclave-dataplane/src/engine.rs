//! The event loop of one tunnel: a dedicated thread that owns the protocol core, the TUN
//! device, the UDP socket and the per-peer filters, so no packet ever takes a lock. Control
//! requests (UAPI, reconfiguration, statistics, stop) arrive on a channel and an eventfd
//! wakes the loop for them.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant, SystemTime};

use enclave_filter::{Direction, FilterConfig, PeerFilter};
use enclave_wg::{Decapsulated, Device, DropReason, Encapsulated, Event, PrivateKey, PublicKey};

use crate::offload::{self, Coalescer, Segments, VnetHdr, GSO_NONE, VNET_HDR_LEN};
use crate::routes::EgressRoutes;
use crate::sys::{self, Batch, Tun, Waker};
use crate::tunnel::OffloadWanted;
use crate::tunnel::{PeerSpec, PeerStats, TunnelStats};
use crate::uapi::{self, DeviceView, SetRequest, UapiError};
use crate::udp::Udp;

/// Datagrams per recvmmsg/sendmmsg call.
const BATCH: usize = 64;
/// Room for one datagram or packet of any size the kernel can hand us: the largest IP packet
/// plus the transport overhead and padding. Pages of these buffers that no packet reaches are
/// never touched, so they cost address space rather than memory.
const BUF: usize = 65_535 + 64;
/// How often the filters forget expired flows.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

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

/// The state the loop owns.
pub(crate) struct Engine {
    pub(crate) device: Device,
    pub(crate) private_key: Option<PrivateKey>,
    pub(crate) tun: Tun,
    pub(crate) udp: Udp,
    pub(crate) filters: BTreeMap<PublicKey, PeerFilter>,
    pub(crate) filter_config: FilterConfig,
    pub(crate) commands: Receiver<Command>,
    pub(crate) waker: std::sync::Arc<Waker>,
    /// Which offloads to ask for, also on a rebound socket.
    offload: OffloadWanted,
    /// Which peer an outbound packet goes to, for the egress filter.
    routes: EgressRoutes,
    drops: [u64; DropReason::ALL.len()],
    tun_write_errors: u64,
    tun_read_malformed: u64,
    rx: Batch,
    tx: Batch,
    /// Sealed datagrams waiting in `tx`.
    tx_count: usize,
    plain: Box<[u8]>,
    /// One segment of a super-packet read from the TUN device.
    segment: Box<[u8]>,
    /// Receive coalescing (GRO) for a TUN device with `virtio_net_hdr`s.
    coalescer: Coalescer,
    next_sweep: Instant,
}

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        device: Device,
        private_key: Option<PrivateKey>,
        tun: Tun,
        udp: Udp,
        filter_config: FilterConfig,
        commands: Receiver<Command>,
        waker: std::sync::Arc<Waker>,
        offload: OffloadWanted,
    ) -> Engine {
        let now = Instant::now();
        let mut udp = udp;
        if offload.udp_gro {
            udp.enable_gro();
        }
        let mut coalescer = Coalescer::new();
        // UDP super-packets only for a device that takes them (USO).
        coalescer.set_udp(tun.offloads().uso);
        let mut tx = Batch::new(BATCH, BUF);
        tx.gso = offload.udp_gso;
        tracing::info!(gso = offload.udp_gso, gro = udp.gro, "UDP offloads");
        Engine {
            device,
            private_key,
            tun,
            udp,
            filters: BTreeMap::new(),
            filter_config,
            commands,
            waker,
            offload,
            routes: EgressRoutes::default(),
            drops: [0; DropReason::ALL.len()],
            tun_write_errors: 0,
            tun_read_malformed: 0,
            rx: Batch::new(BATCH, BUF),
            tx,
            tx_count: 0,
            plain: vec![0u8; BUF].into_boxed_slice(),
            segment: vec![0u8; BUF].into_boxed_slice(),
            coalescer,
            next_sweep: now + SWEEP_INTERVAL,
        }
    }

    /// Runs until told to stop or until the TUN device or the socket fails.
    pub(crate) fn run(mut self) -> std::io::Result<()> {
        loop {
            let now = Instant::now();
            let deadline = self
                .device
                .poll_timeout()
                .map_or(self.next_sweep, |t| t.min(self.next_sweep));
            let timeout_ms = deadline
                .saturating_duration_since(now)
                .as_millis()
                .min(1000) as i32;
            let [wake, udp, tun] = sys::poll_readable(
                [
                    self.waker.as_raw_fd(),
                    self.udp.as_raw_fd(),
                    self.tun.as_raw_fd(),
                ],
                timeout_ms,
            )?;
            if wake {
                self.waker.drain();
                if !self.handle_commands() {
                    return Ok(());
                }
                // A new configuration can need the core at once (a persistent keepalive to a
                // peer just added): give it the clock now rather than at its next timer.
                self.device
                    .handle_timeout(Instant::now(), SystemTime::now());
                self.flush_transmits();
            }
            if udp {
                self.network_to_tun()?;
            }
            if tun {
                if let Err(e) = self.tun_to_network() {
                    // Deleting the interface (`ip link del`, `wg-quick down`) ends the tunnel
                    // the way wireguard-go ends: an orderly stop, not a failure.
                    tracing::info!(error = %e, "the TUN device is gone; stopping");
                    return Ok(());
                }
            }
            let now = Instant::now();
            if self.device.poll_timeout().is_some_and(|t| t <= now) {
                self.device.handle_timeout(now, SystemTime::now());
                self.flush_transmits();
            }
            if now >= self.next_sweep {
                for filter in self.filters.values_mut() {
                    filter.handle_timeout(now);
                }
                self.next_sweep = now + SWEEP_INTERVAL;
            }
            self.drain_events();
        }
    }

    /// Returns false when the loop must stop.
    fn handle_commands(&mut self) -> bool {
        while let Ok(command) = self.commands.try_recv() {
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
                    let _ = reply.send(self.stats());
                }
                Command::Stop => return false,
            }
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
                fwmark: self.udp.fwmark,
            },
            self.device.peers(),
        );
        out
    }

    fn uapi_set(&mut self, request: &SetRequest) -> Result<(), UapiError> {
        // The socket first: a port that cannot be bound refuses the whole request.
        let fwmark = request.fwmark.unwrap_or(self.udp.fwmark);
        match request.listen_port {
            Some(port) if port != self.udp.port || port == 0 => {
                let mut udp = Udp::bind(port, fwmark).map_err(|_| UapiError::PortInUse)?;
                if self.offload.udp_gro {
                    udp.enable_gro();
                }
                self.udp = udp;
            }
            _ => {
                if fwmark != self.udp.fwmark {
                    self.udp
                        .set_fwmark(fwmark)
                        .map_err(|_| UapiError::PortInUse)?;
                    self.udp.fwmark = fwmark;
                }
            }
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

    fn stats(&self) -> TunnelStats {
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
            interface: self.tun.name().to_owned(),
            listen_port: self.udp.port,
            public_key: self.device.public_key(),
            peers,
            drops,
            tun_write_errors: self.tun_write_errors,
            tun_read_malformed: self.tun_read_malformed,
        }
    }

    fn drop_count(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }

    /// Datagrams from the network: decrypt, filter, write to the TUN device.
    fn network_to_tun(&mut self) -> std::io::Result<()> {
        let vnet_hdr = self.tun.offloads().vnet_hdr;
        self.rx.gro = self.udp.gro;
        for _ in 0..4 {
            let n = self.rx.recv(self.udp.as_raw_fd())?;
            if n == 0 {
                break;
            }
            let now = Instant::now();
            let wall = SystemTime::now();
            for i in 0..n {
                let Some(from) = sys::from_sockaddr(&self.rx.addrs[i]) else {
                    continue;
                };
                if self.private_key.is_none() {
                    continue;
                }
                // A coalesced message (UDP GRO) holds datagrams of `step` bytes, the last
                // maybe shorter.
                let len = self.rx.lens[i];
                let step = match self.rx.gro_sizes[i] {
                    0 => len,
                    size => size,
                };
                let mut offset = 0;
                while offset < len {
                    let end = (offset + step).min(len);
                    let datagram = &self.rx.bufs[i][offset..end];
                    offset = end;
                    match self
                        .device
                        .decapsulate(from, datagram, now, wall, &mut self.plain)
                    {
                        Decapsulated::Deliver { peer, len } => {
                            let packet = &self.plain[..len];
                            if let Some(filter) = self.filters.get_mut(&peer) {
                                if let enclave_filter::Verdict::Drop(reason) =
                                    filter.check(Direction::Ingress, packet, now)
                                {
                                    tracing::trace!(
                                        peer = %peer,
                                        packet = %Inner(packet),
                                        reason = reason.as_str(),
                                        "inbound packet filtered"
                                    );
                                    continue;
                                }
                            }
                            tracing::trace!(peer = %peer, packet = %Inner(packet), "inbound packet delivered");
                            if vnet_hdr {
                                let (tun, errors) = (&self.tun, &mut self.tun_write_errors);
                                let segment = &mut self.segment;
                                self.coalescer.push(packet, &mut |hdr, p| {
                                    write_coalesced(tun, segment, errors, hdr, p)
                                });
                            } else if self.tun.write(packet).is_err() {
                                self.tun_write_errors += 1;
                            }
                        }
                        Decapsulated::Consumed { .. } => {}
                        Decapsulated::Dropped(reason) => {
                            tracing::trace!(reason = reason.as_str(), "datagram dropped");
                            self.drop_count(reason);
                        }
                    }
                }
            }
            if vnet_hdr {
                let (tun, errors) = (&self.tun, &mut self.tun_write_errors);
                let segment = &mut self.segment;
                self.coalescer
                    .flush(&mut |hdr, p| write_coalesced(tun, segment, errors, hdr, p));
            }
            self.flush_transmits();
            if n < self.rx.slots() {
                break;
            }
        }
        Ok(())
    }

    /// Packets from the TUN device: split super-packets, filter, encrypt, send in batches.
    fn tun_to_network(&mut self) -> std::io::Result<()> {
        // The buffers leave `self` while they are read, so that sealing can borrow it.
        let mut plain = std::mem::take(&mut self.plain);
        let mut segment = std::mem::take(&mut self.segment);
        let result = self.read_and_seal(&mut plain, &mut segment);
        self.plain = plain;
        self.segment = segment;
        self.send_sealed();
        result
    }

    fn read_and_seal(&mut self, plain: &mut [u8], segment: &mut [u8]) -> std::io::Result<()> {
        let vnet_hdr = self.tun.offloads().vnet_hdr;
        for _ in 0..4 {
            let now = Instant::now();
            let wall = SystemTime::now();
            for _ in 0..BATCH {
                let Some(len) = self.tun.read(plain)? else {
                    return Ok(());
                };
                if self.private_key.is_none() {
                    continue;
                }
                if !vnet_hdr {
                    self.seal(&plain[..len], now, wall);
                    continue;
                }
                let Some(hdr) = VnetHdr::parse(&plain[..len]) else {
                    self.tun_read_malformed += 1;
                    continue;
                };
                let packet = &mut plain[VNET_HDR_LEN..len];
                if hdr.gso_type == GSO_NONE {
                    // Most packets: at most a checksum to complete, in place.
                    if offload::complete_checksum(&hdr, packet).is_err() {
                        self.tun_read_malformed += 1;
                        continue;
                    }
                    self.seal(packet, now, wall);
                    continue;
                }
                match Segments::new(hdr, packet) {
                    Ok(mut segments) => {
                        // Each segment meets the filter and the core as a packet of its own.
                        while let Some(n) = segments.next_into(segment) {
                            self.seal(&segment[..n], now, wall);
                        }
                    }
                    Err(e) => {
                        tracing::trace!(error = ?e, "super-packet from the TUN device dropped");
                        self.tun_read_malformed += 1;
                    }
                }
            }
            self.send_sealed();
        }
        Ok(())
    }

    /// Filters one packet from the TUN device and seals it into the send batch (sending the
    /// batch when it is full).
    fn seal(&mut self, packet: &[u8], now: Instant, wall: SystemTime) {
        if !self.routes.is_empty() {
            if let Some(peer) = self.routes.peer_for(packet) {
                if let Some(filter) = self.filters.get_mut(&peer) {
                    if let enclave_filter::Verdict::Drop(reason) =
                        filter.check(Direction::Egress, packet, now)
                    {
                        tracing::trace!(
                            peer = %peer,
                            packet = %Inner(packet),
                            reason = reason.as_str(),
                            "outbound packet filtered"
                        );
                        return;
                    }
                }
            }
        }
        let count = self.tx_count;
        match self
            .device
            .encapsulate(packet, now, wall, &mut self.tx.bufs[count])
        {
            Encapsulated::Send { dst, len, .. } => {
                tracing::trace!(packet = %Inner(packet), %dst, "outbound packet sent");
                self.tx.lens[count] = len;
                self.tx.set_dst(count, dst, self.udp.v6);
                self.tx_count += 1;
                if self.tx_count == BATCH {
                    self.send_sealed();
                }
            }
            Encapsulated::Queued { .. } => {}
            Encapsulated::Dropped(reason) => {
                tracing::trace!(
                    packet = %Inner(packet),
                    reason = reason.as_str(),
                    "outbound packet dropped"
                );
                self.drop_count(reason);
            }
        }
    }

    /// Sends the sealed batch, then what the core has queued (handshakes).
    fn send_sealed(&mut self) {
        if self.tx_count > 0 {
            if let Err(e) = self.tx.send(self.udp.as_raw_fd(), self.tx_count) {
                tracing::trace!(error = %e, "sendmmsg failed");
            }
            self.tx_count = 0;
        }
        self.flush_transmits();
    }

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

/// Writes what the coalescer emits. Should the kernel refuse a super-packet, its segments are
/// written one by one instead, so a flow never stalls on a write that can never succeed;
/// each failed write is counted.
fn write_coalesced(
    tun: &Tun,
    segment: &mut [u8],
    errors: &mut u64,
    hdr: &[u8; VNET_HDR_LEN],
    packet: &[u8],
) {
    if tun.write_vnet(hdr, packet).is_ok() {
        return;
    }
    *errors += 1;
    let Some(parsed) = VnetHdr::parse(hdr).filter(|h| h.gso_type != GSO_NONE) else {
        return;
    };
    if let Ok(mut segments) = Segments::new(parsed, packet) {
        while let Some(n) = segments.next_into(segment) {
            if tun.write(&segment[..n]).is_err() {
                *errors += 1;
            }
        }
    }
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
