//! Transport data sessions (WireGuard paper, section 5.4.6) and the sliding
//! replay window (RFC 6479, sized as wireguard-go's and Linux's: 8128 counters).

use std::net::SocketAddr;
use std::time::Instant;

use crate::crypto::{TransportKey, TAG_LEN};
use crate::handshake::TransportKeys;
use crate::messages::{read_u64, transport, TRANSPORT};
use crate::timers::REJECT_AFTER_MESSAGES;

/// Bits per block of the replay bitmap.
const BLOCK_BITS: u64 = 64;
/// Blocks in the ring: 128 × 64 = 8192 bits.
const RING_BLOCKS: u64 = 128;
/// How far behind the highest counter a packet may be and still be accepted:
/// the ring minus the block that is being filled, 127 × 64 = 8128 (as
/// wireguard-go and Linux). A counter `highest - WINDOW_SIZE` is still
/// accepted (once); `highest - WINDOW_SIZE - 1` is too old.
pub(crate) const WINDOW_SIZE: u64 = (RING_BLOCKS - 1) * BLOCK_BITS;

/// An 8192-bit ring that tracks the last 8128 counters (RFC 6479).
///
/// The ring (a kilobyte) is allocated only when it is needed: while every counter below the
/// block of the highest one has been accepted (a session whose packets arrive in order, the
/// usual case and every idle peer's), the block of the highest counter says everything, and
/// the window keeps only that block. The first packet that leaves a hole behind it (a loss, a
/// reordering across a block) builds the ring as it would be, once for the session's life.
/// What is accepted is the same either way.
#[derive(Debug, Clone)]
pub(crate) struct ReplayWindow {
    /// Highest counter accepted so far (0 before any).
    last: u64,
    /// Without the ring: the bits of the block of `last`; every counter of an earlier block
    /// has been accepted. Unused with the ring.
    recent: u64,
    /// On the heap, and only once a hole is left behind: a peer holds up to three sessions,
    /// and a gateway with a thousand peers would otherwise hold kilobytes for each.
    ring: Option<Box<[u64; RING_BLOCKS as usize]>>,
}

impl ReplayWindow {
    pub(crate) fn new() -> Self {
        Self {
            last: 0,
            recent: 0,
            ring: None,
        }
    }

    /// Whether the ring has been built (a hole was left behind).
    #[cfg(test)]
    pub(crate) fn has_ring(&self) -> bool {
        self.ring.is_some()
    }

    /// Whether `counter` could be accepted (checked before decrypting, so
    /// that replays cost no cryptography). Does not change the window.
    pub(crate) fn may_accept(&self, counter: u64) -> bool {
        if counter >= REJECT_AFTER_MESSAGES {
            return false;
        }
        if counter > self.last {
            return true;
        }
        let Some(ring) = &self.ring else {
            // Earlier blocks were accepted whole; only the last block has holes.
            return counter / BLOCK_BITS == self.last / BLOCK_BITS
                && self.recent & (1 << (counter % BLOCK_BITS)) == 0;
        };
        if self.last - counter > WINDOW_SIZE {
            return false;
        }
        let block = ((counter / BLOCK_BITS) % RING_BLOCKS) as usize;
        ring[block] & (1 << (counter % BLOCK_BITS)) == 0
    }

    /// Records an authenticated `counter`; false if it was a replay or too old.
    pub(crate) fn accept(&mut self, counter: u64) -> bool {
        if counter >= REJECT_AFTER_MESSAGES {
            return false;
        }
        let index = counter / BLOCK_BITS;
        let bit = 1 << (counter % BLOCK_BITS);
        if self.ring.is_none() {
            let current = self.last / BLOCK_BITS;
            if index < current {
                // Accepted already, or too old.
                return false;
            }
            if index == current {
                let fresh = self.recent & bit == 0;
                self.recent |= bit;
                self.last = self.last.max(counter);
                return fresh;
            }
            if index == current + 1 && self.recent == u64::MAX {
                self.last = counter;
                self.recent = bit;
                return true;
            }
            self.build_ring();
        }
        let ring = self.ring.as_mut().expect("built above");
        if counter > self.last {
            let current = self.last / BLOCK_BITS;
            let advance = (index - current).min(RING_BLOCKS);
            for step in 1..=advance {
                ring[((current + step) % RING_BLOCKS) as usize] = 0;
            }
            self.last = counter;
        } else if self.last - counter > WINDOW_SIZE {
            return false;
        }
        let block = &mut ring[(index % RING_BLOCKS) as usize];
        let fresh = *block & bit == 0;
        *block |= bit;
        fresh
    }

    /// Builds the ring the window would have had all along: the blocks before the last one
    /// full (back to counter 0 or the ring's length), the last one as kept.
    fn build_ring(&mut self) {
        let current = self.last / BLOCK_BITS;
        let mut ring = Box::new([0; RING_BLOCKS as usize]);
        for block in current.saturating_sub(RING_BLOCKS - 1)..current {
            ring[(block % RING_BLOCKS) as usize] = u64::MAX;
        }
        ring[(current % RING_BLOCKS) as usize] = self.recent;
        self.ring = Some(ring);
    }
}

/// The padded plaintext length of a packet of `len` bytes (paper, section
/// 5.4.6): the next multiple of 16, but never more than the tunnel's MTU
/// (as wireguard-go does), so that a full-sized packet does not grow past
/// what the underlay was sized for.
pub(crate) fn padded_len(len: usize, mtu: Option<usize>) -> usize {
    let rounded = len.div_ceil(16) * 16;
    match mtu {
        Some(mtu) if len <= mtu => rounded.min(mtu),
        _ => rounded,
    }
}

/// One direction-pair of transport keys with its counters.
pub(crate) struct Session {
    pub(crate) local_index: u32,
    pub(crate) remote_index: u32,
    sender: TransportKey,
    receiver: TransportKey,
    send_counter: u64,
    replay: ReplayWindow,
    pub(crate) created: Instant,
    /// Whether we initiated the handshake that made it (only the initiator rekeys by age).
    pub(crate) initiator: bool,
    /// As responder: where our handshake response went. The first valid transport
    /// message on this session proves that address has a return path.
    pub(crate) response_sent_to: Option<SocketAddr>,
}

/// Why a transport message could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenError {
    Replay,
    Decrypt,
    BufferTooSmall,
    Malformed,
}

impl Session {
    pub(crate) fn new(
        keys: &TransportKeys,
        local_index: u32,
        remote_index: u32,
        now: Instant,
        initiator: bool,
    ) -> Self {
        Self {
            local_index,
            remote_index,
            sender: TransportKey::new(&keys.send),
            receiver: TransportKey::new(&keys.receive),
            send_counter: 0,
            replay: ReplayWindow::new(),
            created: now,
            initiator,
            response_sent_to: None,
        }
    }

    /// Messages sent so far (the next counter).
    pub(crate) fn sent(&self) -> u64 {
        self.send_counter
    }

    /// Jumps the send counter, to test the message limits without sending 2^60 messages.
    #[cfg(test)]
    pub(crate) fn set_sent(&mut self, counter: u64) {
        self.send_counter = counter;
    }

    /// Encrypts `packet` into `out` as a transport message, padding the
    /// plaintext to a multiple of 16 bytes but not past `mtu` (see
    /// [`padded_len`]). `out` must hold [`crate::encapsulated_len`] bytes;
    /// returns the message length, or `None` when the counter is exhausted
    /// or `out` is too short.
    pub(crate) fn seal(
        &mut self,
        packet: &[u8],
        mtu: Option<usize>,
        out: &mut [u8],
    ) -> Option<usize> {
        let counter = self.send_counter;
        if counter >= REJECT_AFTER_MESSAGES {
            return None;
        }
        let padded = padded_len(packet.len(), mtu);
        let len = transport::DATA + padded + TAG_LEN;
        let out = out.get_mut(..len)?;
        self.send_counter += 1;
        out[..4].copy_from_slice(&TRANSPORT.to_le_bytes());
        out[transport::RECEIVER..transport::COUNTER]
            .copy_from_slice(&self.remote_index.to_le_bytes());
        out[transport::COUNTER..transport::DATA].copy_from_slice(&counter.to_le_bytes());
        let body = &mut out[transport::DATA..];
        body[..packet.len()].copy_from_slice(packet);
        body[packet.len()..padded].fill(0);
        self.sender.seal(counter, body, &[]);
        Some(len)
    }

    /// Decrypts a transport message into `out`; returns the plaintext length
    /// (padding included).
    pub(crate) fn open(&mut self, datagram: &[u8], out: &mut [u8]) -> Result<usize, OpenError> {
        let counter = read_u64(datagram, transport::COUNTER).ok_or(OpenError::Malformed)?;
        let sealed = datagram
            .get(transport::DATA..)
            .ok_or(OpenError::Malformed)?;
        if sealed.len() < TAG_LEN {
            return Err(OpenError::Malformed);
        }
        if !self.replay.may_accept(counter) {
            return Err(OpenError::Replay);
        }
        let buffer = out
            .get_mut(..sealed.len())
            .ok_or(OpenError::BufferTooSmall)?;
        buffer.copy_from_slice(sealed);
        if !self.receiver.open(counter, buffer, &[]) {
            return Err(OpenError::Decrypt);
        }
        if !self.replay.accept(counter) {
            return Err(OpenError::Replay);
        }
        Ok(sealed.len() - TAG_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_accepts_each_counter_once_and_rejects_too_old() {
        let mut window = ReplayWindow::new();
        assert!(window.accept(0));
        assert!(!window.accept(0));
        assert!(window.accept(5));
        assert!(window.accept(3), "reordered but inside the window");
        assert!(!window.accept(3));
        assert!(window.accept(10_000));
        assert!(!window.may_accept(10_000 - WINDOW_SIZE - 1));
        assert!(!window.accept(10_000 - WINDOW_SIZE - 1));
        assert!(window.may_accept(10_000 - WINDOW_SIZE));
        assert!(window.accept(10_000 - WINDOW_SIZE));
        assert!(!window.accept(10_000 - WINDOW_SIZE));
        assert!(!window.accept(REJECT_AFTER_MESSAGES));
    }

    #[test]
    fn window_is_8128_counters_as_wireguard_go_and_linux() {
        for highest in [8129u64, 8130, 20_000, 20_031, 1 << 40] {
            let mut window = ReplayWindow::new();
            assert!(window.accept(highest));
            assert!(!window.may_accept(highest - 8129));
            assert!(!window.accept(highest - 8129), "{highest}: one too old");
            assert!(window.may_accept(highest - 8128));
            assert!(
                window.accept(highest - 8128),
                "{highest}: the oldest accepted"
            );
            assert!(!window.accept(highest - 8128), "{highest}: but only once");
            assert!(window.accept(highest - 1));
            // Every counter in between is accepted exactly once.
            for counter in highest - 8127..highest - 1 {
                assert!(window.accept(counter), "{highest}: {counter}");
            }
            for counter in highest - 8128..=highest {
                assert!(!window.accept(counter), "{highest}: {counter} again");
            }
        }
        assert_eq!(WINDOW_SIZE, 8128);
    }

    #[test]
    fn window_matches_a_naive_model() {
        // Compare with a set-based model over a pseudo-random walk of counters.
        let mut window = ReplayWindow::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut highest = 0u64;
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let jump = state % 4000;
            let counter = if state & 1 == 0 {
                highest + jump % 70
            } else {
                highest.saturating_sub(jump)
            };
            let expected =
                !seen.contains(&counter) && (counter > highest || highest - counter <= WINDOW_SIZE);
            assert_eq!(
                window.accept(counter),
                expected,
                "counter {counter} highest {highest}"
            );
            if expected {
                seen.insert(counter);
                highest = highest.max(counter);
            }
        }
    }

    /// The set-based model of the window: each counter once, none more than
    /// [`WINDOW_SIZE`] behind the highest.
    #[derive(Default)]
    struct Model {
        seen: std::collections::BTreeSet<u64>,
        highest: u64,
    }

    impl Model {
        fn may_accept(&self, counter: u64) -> bool {
            counter < REJECT_AFTER_MESSAGES
                && !self.seen.contains(&counter)
                && (counter > self.highest || self.highest - counter <= WINDOW_SIZE)
        }

        fn accept(&mut self, counter: u64) -> bool {
            let fresh = self.may_accept(counter);
            if fresh {
                self.seen.insert(counter);
                self.highest = self.highest.max(counter);
            }
            fresh
        }
    }

    #[test]
    fn window_in_order_needs_no_ring() {
        let mut window = ReplayWindow::new();
        for counter in 0..20_000 {
            assert!(window.may_accept(counter), "{counter}");
            assert!(window.accept(counter), "{counter}");
        }
        for counter in [19_999, 19_990, 19_936, 19_935, 12_000, 11_871, 0] {
            assert!(!window.may_accept(counter), "{counter} again");
            assert!(!window.accept(counter), "{counter} again");
        }
        assert!(!window.accept(REJECT_AFTER_MESSAGES));
        assert!(!window.has_ring(), "no hole, no ring");
        // A hole inside the last block is kept without the ring too.
        assert!(window.accept(20_002));
        assert!(window.accept(20_000 + 63 - 20_000 % 64));
        assert!(!window.has_ring());
        assert!(window.may_accept(20_000) && window.may_accept(20_001));
        // Moving to the next block past it needs the ring, and still knows the hole.
        let next_block = (20_000 / 64 + 1) * 64;
        assert!(window.accept(next_block));
        assert!(window.has_ring());
        assert!(window.accept(20_001));
        assert!(!window.accept(20_001));
        assert!(window.accept(20_000));
        assert!(!window.accept(20_000));
        assert!(!window.accept(20_002));
        assert!(!window.accept(next_block - WINDOW_SIZE - 1));
    }

    #[test]
    fn window_with_its_ring_built_late_matches_the_model() {
        // Mostly in order, so the ring is built at a different point in each walk (before
        // and after the ring first wraps), then anything: reordering, losses and jumps.
        for seed in 1..=40u64 {
            let mut window = ReplayWindow::new();
            let mut model = Model::default();
            let mut state = 0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(seed);
            let mut next = 0u64;
            for step in 0..30_000 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let counter = match state % 1000 {
                    // A replay or a late packet.
                    0..=2 => next.saturating_sub(state % 9000),
                    // A loss.
                    3 => {
                        next += 1 + state % 70;
                        next
                    }
                    // A long jump.
                    4 if seed % 4 == 0 => {
                        next += state % 20_000;
                        next
                    }
                    _ => next,
                };
                next = next.max(counter) + 1;
                assert_eq!(
                    window.may_accept(counter),
                    model.may_accept(counter),
                    "seed {seed} step {step}: may accept {counter}"
                );
                assert_eq!(
                    window.accept(counter),
                    model.accept(counter),
                    "seed {seed} step {step}: accept {counter}"
                );
            }
        }
    }

    #[test]
    fn padding_stops_at_the_mtu() {
        assert_eq!(padded_len(0, None), 0);
        assert_eq!(padded_len(1, None), 16);
        assert_eq!(padded_len(1420, None), 1424);
        assert_eq!(padded_len(1420, Some(1420)), 1420);
        assert_eq!(padded_len(1419, Some(1420)), 1420);
        assert_eq!(padded_len(1401, Some(1420)), 1408);
        assert_eq!(
            padded_len(1500, Some(1420)),
            1504,
            "oversized packets still pad to 16"
        );
    }

    #[test]
    fn seal_pads_and_open_round_trips() {
        let keys = TransportKeys {
            send: [1; 32],
            receive: [2; 32],
        };
        let mirrored = TransportKeys {
            send: [2; 32],
            receive: [1; 32],
        };
        let now = crate::test_clock_start();
        let mut a = Session::new(&keys, 1, 2, now, true);
        let mut b = Session::new(&mirrored, 2, 1, now, false);
        let packet = [0x45u8; 21];
        let mut wire = [0u8; 128];
        let len = a.seal(&packet, None, &mut wire).expect("sealed");
        assert_eq!(len, crate::encapsulated_len(21));
        let mut plain = [0u8; 128];
        let opened = b.open(&wire[..len], &mut plain).expect("opened");
        assert_eq!(opened, 32);
        assert_eq!(&plain[..21], &packet);
        assert!(plain[21..32].iter().all(|&byte| byte == 0));
        assert_eq!(b.open(&wire[..len], &mut plain), Err(OpenError::Replay));
        let len = a.seal(&packet, None, &mut wire).expect("sealed");
        wire[20] ^= 1;
        assert_eq!(b.open(&wire[..len], &mut plain), Err(OpenError::Decrypt));
        assert_eq!(
            b.open(&wire[..len], &mut [0u8; 8]),
            Err(OpenError::BufferTooSmall)
        );
    }
}
