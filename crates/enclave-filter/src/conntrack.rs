//! The connection tracker: a bounded table of flows, each remembered by the packet that opened
//! it (its direction and 5-tuple), with a protocol-dependent timeout.
//!
//! Storage is allocated once, when the table is made: a slab of entries, a free list, a hash
//! index, and an intrusive least-recently-used list through the slab. Looking up, refreshing,
//! inserting and evicting never allocate. When the table is full the least recently used flow
//! is evicted, which depends only on the sequence of packets: eviction is deterministic.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::packet::Flow;
use crate::Direction;

/// How long a flow is remembered after its last packet, by protocol and state.
///
/// The defaults follow the spirit of Linux conntrack, shortened where an overlay peer has no
/// reason to wait long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP, only the opening side heard from so far.
    pub tcp_opening: Duration,
    /// TCP, both sides heard from.
    pub tcp_established: Duration,
    /// TCP after a FIN or RST.
    pub tcp_closing: Duration,
    /// UDP (and other protocols), only the opening side heard from.
    pub udp_unreplied: Duration,
    /// UDP (and other protocols), both sides heard from.
    pub udp_replied: Duration,
    /// ICMP echo.
    pub icmp: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            tcp_opening: Duration::from_secs(120),
            tcp_established: Duration::from_secs(2 * 60 * 60),
            tcp_closing: Duration::from_secs(10),
            udp_unreplied: Duration::from_secs(30),
            udp_replied: Duration::from_secs(180),
            icmp: Duration::from_secs(30),
        }
    }
}

/// The life stage of a flow, which picks its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Only the opener has sent.
    Opening,
    /// Both sides have sent.
    Replied,
    /// A TCP FIN or RST was seen.
    Closing,
}

/// The key of a flow: the direction and 5-tuple of the packet that opened it.
pub(crate) type Key = (Direction, Flow);

const NIL: u32 = u32::MAX;

/// Flows a new table has room for before it first grows.
const INITIAL_CAPACITY: usize = 4;

#[derive(Debug, Clone, Copy)]
struct Entry {
    key: Key,
    stage: Stage,
    icmp: bool,
    tcp: bool,
    expires: Instant,
    /// Towards the most recently used end.
    newer: u32,
    /// Towards the least recently used end.
    older: u32,
}

/// A bounded flow table.
#[derive(Debug)]
pub(crate) struct ConnTrack {
    entries: Vec<Entry>,
    free: Vec<u32>,
    index: HashMap<Key, u32>,
    newest: u32,
    oldest: u32,
    capacity: usize,
    timeouts: Timeouts,
}

impl ConnTrack {
    /// A table for at most `capacity` flows (at least one). Its memory grows as flows open,
    /// up to the bound, and is kept: a gateway with a thousand peers holds a thousand tables,
    /// most of them nearly empty, so none is allocated whole up front.
    pub(crate) fn new(capacity: usize, timeouts: Timeouts) -> Self {
        let capacity = capacity.clamp(1, NIL as usize - 1);
        let initial = capacity.min(INITIAL_CAPACITY);
        Self {
            entries: Vec::with_capacity(initial),
            free: Vec::with_capacity(initial),
            index: HashMap::with_capacity(initial),
            newest: NIL,
            oldest: NIL,
            capacity,
            timeouts,
        }
    }

    /// The number of flows held (expired ones included until they are swept or looked up).
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    fn timeout(&self, e: &Entry) -> Duration {
        let t = &self.timeouts;
        match (e.tcp, e.icmp, e.stage) {
            (true, _, Stage::Opening) => t.tcp_opening,
            (true, _, Stage::Replied) => t.tcp_established,
            (_, _, Stage::Closing) => t.tcp_closing,
            (_, true, _) => t.icmp,
            (_, _, Stage::Opening) => t.udp_unreplied,
            (_, _, Stage::Replied) => t.udp_replied,
        }
    }

    /// Finds a live flow; an expired one is removed and not found.
    pub(crate) fn lookup(&mut self, key: &Key, now: Instant) -> Option<u32> {
        let slot = *self.index.get(key)?;
        if self.entries[slot as usize].expires <= now {
            self.remove(slot);
            return None;
        }
        Some(slot)
    }

    /// Records a packet of the flow at `slot`: `reply` when it travels against the opener's
    /// direction, `closing` when it carries a TCP FIN or RST.
    pub(crate) fn touch(&mut self, slot: u32, reply: bool, closing: bool, now: Instant) {
        let e = &mut self.entries[slot as usize];
        if closing {
            e.stage = Stage::Closing;
        } else if reply && e.stage == Stage::Opening {
            e.stage = Stage::Replied;
        }
        let e = self.entries[slot as usize];
        self.entries[slot as usize].expires = now + self.timeout(&e);
        self.unlink(slot);
        self.push_newest(slot);
    }

    /// Opens a flow. If the table is full the least recently used flow makes room; that
    /// evicted flow's key is returned.
    pub(crate) fn insert(
        &mut self,
        key: Key,
        tcp: bool,
        icmp: bool,
        closing: bool,
        now: Instant,
    ) -> Option<Key> {
        if let Some(&slot) = self.index.get(&key) {
            self.touch(slot, false, closing, now);
            return None;
        }
        let mut evicted = None;
        if self.index.len() >= self.capacity {
            let victim = self.oldest;
            evicted = Some(self.entries[victim as usize].key);
            self.remove(victim);
        }
        let mut entry = Entry {
            key,
            stage: if closing {
                Stage::Closing
            } else {
                Stage::Opening
            },
            icmp,
            tcp,
            expires: now,
            newer: NIL,
            older: NIL,
        };
        entry.expires = now + self.timeout(&entry);
        let slot = match self.free.pop() {
            Some(slot) => {
                self.entries[slot as usize] = entry;
                slot
            }
            None => {
                self.entries.push(entry);
                (self.entries.len() - 1) as u32
            }
        };
        self.index.insert(key, slot);
        self.push_newest(slot);
        evicted
    }

    /// Removes every expired flow; returns how many.
    pub(crate) fn sweep(&mut self, now: Instant) -> usize {
        self.retain(|e| e.expires > now)
    }

    /// Keeps the flows whose key satisfies `keep`; returns how many were removed.
    pub(crate) fn retain_keys(&mut self, mut keep: impl FnMut(&Key) -> bool) -> usize {
        self.retain(|e| keep(&e.key))
    }

    fn retain(&mut self, mut keep: impl FnMut(&Entry) -> bool) -> usize {
        let mut removed = 0;
        let mut slot = self.oldest;
        while slot != NIL {
            let e = self.entries[slot as usize];
            if !keep(&e) {
                self.remove(slot);
                removed += 1;
            }
            slot = e.newer;
        }
        removed
    }

    fn remove(&mut self, slot: u32) {
        let key = self.entries[slot as usize].key;
        self.unlink(slot);
        self.index.remove(&key);
        self.free.push(slot);
    }

    fn unlink(&mut self, slot: u32) {
        let Entry { newer, older, .. } = self.entries[slot as usize];
        if newer == NIL {
            self.newest = older;
        } else {
            self.entries[newer as usize].older = older;
        }
        if older == NIL {
            self.oldest = newer;
        } else {
            self.entries[older as usize].newer = newer;
        }
        let e = &mut self.entries[slot as usize];
        e.newer = NIL;
        e.older = NIL;
    }

    fn push_newest(&mut self, slot: u32) {
        let previous = self.newest;
        {
            let e = &mut self.entries[slot as usize];
            e.older = previous;
            e.newer = NIL;
        }
        if previous == NIL {
            self.oldest = slot;
        } else {
            self.entries[previous as usize].newer = slot;
        }
        self.newest = slot;
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::packet::IPPROTO_UDP;

    fn key(port: u16) -> Key {
        (
            Direction::Egress,
            Flow {
                protocol: IPPROTO_UDP,
                src: Ipv4Addr::new(10, 0, 0, 1),
                dst: Ipv4Addr::new(10, 0, 0, 2),
                src_port: port,
                dst_port: 53,
            },
        )
    }

    #[test]
    fn evicts_the_least_recently_used_flow() {
        let now = crate::test_clock_start();
        let mut ct = ConnTrack::new(3, Timeouts::default());
        for p in 1..=3 {
            assert_eq!(ct.insert(key(p), false, false, false, now), None);
        }
        // Using flow 1 makes flow 2 the oldest.
        let one = ct.lookup(&key(1), now).unwrap();
        ct.touch(one, true, false, now);
        assert_eq!(ct.insert(key(4), false, false, false, now), Some(key(2)));
        assert_eq!(ct.len(), 3);
        assert!(ct.lookup(&key(2), now).is_none());
        for p in [1, 3, 4] {
            assert!(ct.lookup(&key(p), now).is_some(), "flow {p}");
        }
    }

    #[test]
    fn flows_expire_by_stage() {
        let t0 = crate::test_clock_start();
        let timeouts = Timeouts::default();
        let mut ct = ConnTrack::new(8, timeouts);
        ct.insert(key(1), false, false, false, t0);
        ct.insert(key(2), false, false, false, t0);
        let two = ct.lookup(&key(2), t0).unwrap();
        ct.touch(two, true, false, t0);
        let later = t0 + timeouts.udp_unreplied;
        assert!(ct.lookup(&key(1), later).is_none());
        assert!(ct.lookup(&key(2), later).is_some());
        assert_eq!(
            ct.sweep(t0 + timeouts.udp_replied + Duration::from_secs(31)),
            1
        );
        assert_eq!(ct.len(), 0);
    }

    #[test]
    fn slots_are_reused_without_growing() {
        let now = crate::test_clock_start();
        let mut ct = ConnTrack::new(2, Timeouts::default());
        for p in 0..100 {
            ct.insert(key(p), false, false, false, now);
        }
        assert_eq!(ct.len(), 2);
        assert_eq!(ct.entries.len(), 2);
    }
}
