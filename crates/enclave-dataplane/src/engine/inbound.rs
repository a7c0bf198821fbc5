//! The inbound half: datagrams from the socket are opened and filtered (under the core's
//! lock), then coalesced and written to the TUN device (without it). This thread also runs
//! the protocol core's timers, the filters' sweeps and the control requests.

use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use enclave_filter::Direction;
use enclave_wg::Decapsulated;

use super::outbound::Outbound;
use super::{current_udp, Command, Core, Inner, Shared, TunCounters, BATCH, BUF};
use crate::offload::{Coalescer, Segments, VnetHdr, GSO_NONE, VNET_HDR_LEN};
use crate::sys::{self, Batch, Tun};
use crate::udp::Udp;

/// How often the filters forget expired flows.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// How many opened packets of one received message are written per taking of the lock (a
/// `UDP_GRO` message holds at most 64 datagrams, so this is all of them).
const OPENED: usize = 64;

pub(super) struct Inbound {
    tun: Arc<Tun>,
    udp: Arc<Udp>,
    commands: Receiver<Command>,
    rx: Batch,
    /// The plaintexts of the datagrams of one received message, one after the other (each
    /// is shorter than its datagram, so they fit as the message did).
    plain: Box<[u8]>,
    /// Where each opened packet lies in `plain`.
    opened: Vec<Range<usize>>,
    /// One segment of a super-packet the kernel refused, written alone.
    segment: Box<[u8]>,
    /// Receive coalescing (GRO) for a TUN device with `virtio_net_hdr`s.
    coalescer: Coalescer,
    tun_write_errors: u64,
    next_sweep: Instant,
}

impl Inbound {
    pub(super) fn new(tun: Arc<Tun>, udp: Arc<Udp>, commands: Receiver<Command>) -> Inbound {
        let mut coalescer = Coalescer::new();
        // UDP super-packets only for a device that takes them (USO).
        coalescer.set_udp(tun.offloads().uso);
        Inbound {
            tun,
            udp,
            commands,
            rx: Batch::new(BATCH, BUF),
            plain: vec![0u8; BUF].into_boxed_slice(),
            opened: Vec::with_capacity(OPENED),
            segment: vec![0u8; BUF].into_boxed_slice(),
            coalescer,
            tun_write_errors: 0,
            next_sweep: Instant::now() + SWEEP_INTERVAL,
        }
    }

    pub(super) fn interface(&self) -> &str {
        self.tun.name()
    }

    /// Runs until told to stop or until a system call fails. With `outbound`, this thread
    /// also reads the TUN device (the one-thread loop); without, the outbound thread does,
    /// and either thread ending ends the other.
    pub(super) fn run(
        &mut self,
        shared: &Shared,
        mut outbound: Option<&mut Outbound>,
    ) -> std::io::Result<()> {
        loop {
            let deadline = {
                let mut core = shared.lock();
                current_udp(&mut self.udp, &core);
                let deadline = core
                    .device
                    .poll_timeout()
                    .map_or(self.next_sweep, |t| t.min(self.next_sweep));
                if outbound.is_none() {
                    core.inbound_sleeps_until = Some(deadline);
                }
                deadline
            };
            let timeout_ms = deadline
                .saturating_duration_since(Instant::now())
                .as_millis()
                .min(1000) as i32;
            // The one-thread loop also waits for the TUN device; the fd is then polled in
            // vain by the inbound thread of two (never readable: -1 is ignored by poll).
            let tun_fd = match outbound {
                Some(_) => self.tun.as_raw_fd(),
                None => -1,
            };
            let [wake, udp, tun] = sys::poll_readable(
                [shared.waker.as_raw_fd(), self.udp.as_raw_fd(), tun_fd],
                timeout_ms,
            )?;
            if shared.stopping() {
                return Ok(());
            }
            if wake {
                shared.waker.drain();
                if !self.handle_commands(shared) {
                    return Ok(());
                }
            }
            if udp {
                self.network_to_tun(shared)?;
            }
            if let Some(outbound) = outbound.as_deref_mut().filter(|_| tun) {
                if !outbound.tun_to_network(shared) {
                    return Ok(());
                }
            }
            self.housekeeping(shared);
        }
    }

    /// Returns false when the loop must stop.
    fn handle_commands(&mut self, shared: &Shared) -> bool {
        let mut core = shared.lock();
        while let Ok(command) = self.commands.try_recv() {
            let counters = TunCounters {
                tun: &self.tun,
                write_errors: self.tun_write_errors,
                read_malformed: &shared.tun_read_malformed,
            };
            if !core.handle_command(command, counters) {
                return false;
            }
        }
        // A new configuration can need the core at once (a persistent keepalive to a peer
        // just added): give it the clock now rather than at its next timer. (A wake from
        // the outbound thread for an earlier timer lands here too.)
        core.device
            .handle_timeout(Instant::now(), SystemTime::now());
        core.flush_transmits();
        true
    }

    /// The core's timers when due, the filters' sweep, the core's events.
    fn housekeeping(&mut self, shared: &Shared) {
        let now = Instant::now();
        let mut core = shared.lock();
        if core.device.poll_timeout().is_some_and(|t| t <= now) {
            core.device.handle_timeout(now, SystemTime::now());
            core.flush_transmits();
        }
        if now >= self.next_sweep {
            for filter in core.filters.values_mut() {
                filter.handle_timeout(now);
            }
            self.next_sweep = now + SWEEP_INTERVAL;
        }
        core.drain_events();
    }

    /// Datagrams from the network: decrypt, filter, write to the TUN device.
    fn network_to_tun(&mut self, shared: &Shared) -> std::io::Result<()> {
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
                // A coalesced message (UDP GRO) holds datagrams of `step` bytes, the last
                // maybe shorter.
                let len = self.rx.lens[i];
                let step = match self.rx.gro_sizes[i] {
                    0 => len,
                    size => size,
                };
                let mut offset = 0;
                while offset < len {
                    offset = self.open(shared, i, from, offset, step, now, wall);
                    self.write_opened(vnet_hdr);
                }
            }
            if vnet_hdr {
                let (tun, errors) = (&self.tun, &mut self.tun_write_errors);
                let segment = &mut self.segment;
                self.coalescer
                    .flush(&mut |hdr, p| write_coalesced(tun, segment, errors, hdr, p));
            }
            // Handshake responses and cookie replies the batch asked for.
            shared.lock().flush_transmits();
            if n < self.rx.slots() {
                break;
            }
        }
        Ok(())
    }

    /// Opens and filters, under the lock, the datagrams of message `i` from `offset` on (at
    /// most [`OPENED`]), into `plain` and `opened`. Returns where it stopped.
    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        shared: &Shared,
        i: usize,
        from: std::net::SocketAddr,
        mut offset: usize,
        step: usize,
        now: Instant,
        wall: SystemTime,
    ) -> usize {
        let len = self.rx.lens[i];
        let mut core = shared.lock();
        if core.private_key.is_none() {
            return len;
        }
        let mut used = 0;
        while offset < len && self.opened.len() < OPENED {
            let end = (offset + step).min(len);
            let datagram = &self.rx.bufs[i][offset..end];
            offset = end;
            // `used` is at most the bytes of the datagrams before this one, so the rest of
            // `plain` holds this one.
            if let Some(n) = open_one(
                &mut core,
                from,
                datagram,
                now,
                wall,
                &mut self.plain[used..],
            ) {
                self.opened.push(used..used + n);
                used += n;
            }
        }
        offset
    }

    /// Writes what [`Inbound::open`] opened: to the coalescer, or to the device as it is.
    fn write_opened(&mut self, vnet_hdr: bool) {
        for range in self.opened.drain(..) {
            let packet = &self.plain[range];
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
    }
}

/// Opens one datagram into `out`; returns the length of the packet to deliver, if it is one
/// and the peer's filter lets it in.
fn open_one(
    core: &mut Core,
    from: std::net::SocketAddr,
    datagram: &[u8],
    now: Instant,
    wall: SystemTime,
    out: &mut [u8],
) -> Option<usize> {
    match core.device.decapsulate(from, datagram, now, wall, out) {
        Decapsulated::Deliver { peer, len } => {
            let packet = &out[..len];
            if !core.filter_passes(&peer, Direction::Ingress, packet, now) {
                return None;
            }
            tracing::trace!(peer = %peer, packet = %Inner(packet), "inbound packet delivered");
            Some(len)
        }
        Decapsulated::Consumed { .. } => None,
        Decapsulated::Dropped(reason) => {
            tracing::trace!(reason = reason.as_str(), "datagram dropped");
            core.drop_count(reason);
            None
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
