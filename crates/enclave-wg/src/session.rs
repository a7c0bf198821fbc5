//! Transport data sessions (WireGuard paper, section 5.4.6) and the sliding
//! replay window (RFC 6479, sized as wireguard-go's and Linux's: 8128 counters).

use std::net::SocketAddr;
use std::time::Instant;

use chacha20poly1305::ChaCha20Poly1305;

use crate::crypto::{aead_cipher, aead_open, aead_seal, TAG_LEN};
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
#[derive(Debug, Clone)]
pub(crate) struct ReplayWindow {
    /// Highest counter accepted so far (0 before any).
    last: u64,
    /// On the heap: a peer holds up to three sessions, and a gateway with a thousand peers
    /// would otherwise hold three kilobytes for each, session or not.
    ring: Box<[u64; RING_BLOCKS as usize]>,
}

impl ReplayWindow {
    pub(crate) fn new() -> Self {
        Self {
            last: 0,
            ring: Box::new([0; RING_BLOCKS as usize]),
        }
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
        if self.last - counter > WINDOW_SIZE {
            return false;
        }
        let block = ((counter / BLOCK_BITS) % RING_BLOCKS) as usize;
        self.ring[block] & (1 << (counter % BLOCK_BITS)) == 0
    }

    /// Records an authenticated `counter`; false if it was a replay or too old.
    pub(crate) fn accept(&mut self, counter: u64) -> bool {
        if counter >= REJECT_AFTER_MESSAGES {
            return false;
        }
        let index = counter / BLOCK_BITS;
        if counter > self.last {
            let current = self.last / BLOCK_BITS;
            let advance = (index - current).min(RING_BLOCKS);
            for step in 1..=advance {
                self.ring[((current + step) % RING_BLOCKS) as usize] = 0;
            }
            self.last = counter;
        } else if self.last - counter > WINDOW_SIZE {
            return false;
        }
        let block = &mut self.ring[(index % RING_BLOCKS) as usize];
        let bit = 1 << (counter % BLOCK_BITS);
        let fresh = *block & bit == 0;
        *block |= bit;
        fresh
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
    sender: ChaCha20Poly1305,
    receiver: ChaCha20Poly1305,
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
            sender: aead_cipher(&keys.send),
            receiver: aead_cipher(&keys.receive),
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
        aead_seal(&self.sender, counter, body, &[]);
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
        if !aead_open(&self.receiver, counter, buffer, &[]) {
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
