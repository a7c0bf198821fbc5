//! The outbound half: packets read from the TUN device are split (super-packets), filtered
//! and sealed under the core's lock, and sent with `sendmmsg` without it.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::{Instant, SystemTime};

use enclave_filter::Direction;
use enclave_wg::Encapsulated;

use super::{current_udp, Core, Inner, Shared, BATCH, BUF};
use crate::offload::{self, Segments, VnetHdr, GSO_NONE, VNET_HDR_LEN};
use crate::sys::{self, Batch, Tun};
use crate::udp::Udp;

pub(super) struct Outbound {
    tun: Arc<Tun>,
    udp: Arc<Udp>,
    tx: Batch,
    /// Sealed datagrams waiting in `tx`.
    tx_count: usize,
    plain: Box<[u8]>,
    /// One segment of a super-packet read from the TUN device.
    segment: Box<[u8]>,
}

impl Outbound {
    pub(super) fn new(tun: Arc<Tun>, udp: Arc<Udp>, gso: bool) -> Outbound {
        let mut tx = Batch::new(BATCH, BUF);
        tx.gso = gso;
        Outbound {
            tun,
            udp,
            tx,
            tx_count: 0,
            plain: vec![0u8; BUF].into_boxed_slice(),
            segment: vec![0u8; BUF].into_boxed_slice(),
        }
    }

    /// The outbound thread of two: waits for the TUN device until the tunnel stops.
    pub(super) fn run(&mut self, shared: &Shared) -> std::io::Result<()> {
        loop {
            let [wake, tun] = sys::poll_readable(
                [shared.outbound_waker.as_raw_fd(), self.tun.as_raw_fd()],
                -1,
            )?;
            if wake {
                shared.outbound_waker.drain();
            }
            if shared.stopping() {
                return Ok(());
            }
            if tun && !self.tun_to_network(shared) {
                return Ok(());
            }
        }
    }

    /// Packets from the TUN device: split super-packets, filter, encrypt, send in batches.
    /// Returns false when the device is gone.
    pub(super) fn tun_to_network(&mut self, shared: &Shared) -> bool {
        // The buffers leave `self` while they are read, so that sealing can borrow it.
        let mut plain = std::mem::take(&mut self.plain);
        let mut segment = std::mem::take(&mut self.segment);
        let result = self.read_and_seal(shared, &mut plain, &mut segment);
        self.plain = plain;
        self.segment = segment;
        self.send_sealed();
        match result {
            Ok(()) => true,
            Err(e) => {
                // Deleting the interface (`ip link del`, `wg-quick down`) ends the tunnel
                // the way wireguard-go ends: an orderly stop, not a failure.
                tracing::info!(error = %e, "the TUN device is gone; stopping");
                false
            }
        }
    }

    fn read_and_seal(
        &mut self,
        shared: &Shared,
        plain: &mut [u8],
        segment: &mut [u8],
    ) -> std::io::Result<()> {
        let vnet_hdr = self.tun.offloads().vnet_hdr;
        for _ in 0..4 {
            let now = Instant::now();
            let wall = SystemTime::now();
            for _ in 0..BATCH {
                let Some(len) = self.tun.read(plain)? else {
                    self.after_batch(shared);
                    return Ok(());
                };
                let mut core = self.lock(shared);
                if core.private_key.is_none() {
                    continue;
                }
                if !vnet_hdr {
                    self.seal(&mut core, &plain[..len], now, wall);
                    continue;
                }
                let Some(hdr) = VnetHdr::parse(&plain[..len]) else {
                    shared.tun_read_malformed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let packet = &mut plain[VNET_HDR_LEN..len];
                if hdr.gso_type == GSO_NONE {
                    // Most packets: at most a checksum to complete, in place.
                    if offload::complete_checksum(&hdr, packet).is_err() {
                        shared.tun_read_malformed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    self.seal(&mut core, packet, now, wall);
                    continue;
                }
                match Segments::new(hdr, packet) {
                    Ok(mut segments) => {
                        // Each segment meets the filter and the core as a packet of its own.
                        while let Some(n) = segments.next_into(segment) {
                            if self.tx_count == BATCH {
                                // The batch is full: send it without holding the core.
                                drop(core);
                                self.send_sealed();
                                core = self.lock(shared);
                            }
                            self.seal(&mut core, &segment[..n], now, wall);
                        }
                    }
                    Err(e) => {
                        tracing::trace!(error = ?e, "super-packet from the TUN device dropped");
                        shared.tun_read_malformed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            self.after_batch(shared);
            self.send_sealed();
        }
        Ok(())
    }

    /// The core, and the socket a UAPI `set` may have bound meanwhile (what was sealed for
    /// the old one goes out on it first). Sends a full batch first.
    fn lock<'a>(&mut self, shared: &'a Shared) -> MutexGuard<'a, Core> {
        if self.tx_count == BATCH {
            self.send_sealed();
        }
        let core = shared.lock();
        if !Arc::ptr_eq(&self.udp, &core.udp) {
            self.send_sealed();
            current_udp(&mut self.udp, &core);
        }
        core
    }

    /// After a batch of reads: the handshakes sealing asked for go out, and with two threads,
    /// the inbound thread wakes if the core's next timer is now earlier than its sleep.
    fn after_batch(&mut self, shared: &Shared) {
        let mut core = shared.lock();
        core.flush_transmits();
        if let Some(until) = core.inbound_sleeps_until {
            if core.device.poll_timeout().is_some_and(|t| t < until) {
                core.inbound_sleeps_until = None;
                shared.waker.wake();
            }
        }
    }

    /// Filters one packet from the TUN device and seals it into the send batch, which has
    /// room for it.
    fn seal(&mut self, core: &mut Core, packet: &[u8], now: Instant, wall: SystemTime) {
        if !core.routes.is_empty() {
            if let Some(peer) = core.routes.peer_for(packet) {
                if !core.filter_passes(&peer, Direction::Egress, packet, now) {
                    return;
                }
            }
        }
        let count = self.tx_count;
        match core
            .device
            .encapsulate(packet, now, wall, &mut self.tx.bufs[count])
        {
            Encapsulated::Send { dst, len, .. } => {
                tracing::trace!(packet = %Inner(packet), %dst, "outbound packet sent");
                self.tx.lens[count] = len;
                self.tx.set_dst(count, dst, self.udp.v6);
                self.tx_count += 1;
            }
            Encapsulated::Queued { .. } => {}
            Encapsulated::Dropped(reason) => {
                tracing::trace!(
                    packet = %Inner(packet),
                    reason = reason.as_str(),
                    "outbound packet dropped"
                );
                core.drop_count(reason);
            }
        }
    }

    /// Sends the sealed batch.
    fn send_sealed(&mut self) {
        if self.tx_count > 0 {
            if let Err(e) = self.tx.send(self.udp.as_raw_fd(), self.tx_count) {
                tracing::trace!(error = %e, "sendmmsg failed");
            }
            self.tx_count = 0;
        }
    }
}
