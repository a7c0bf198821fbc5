//! Defences against handshake floods (WireGuard paper, section 5.3): when
//! the device is under load, and how much handshake work one source address
//! may cause then.
//!
//! Both are plain values driven by the `now` the shell passes in; both use
//! bounded memory.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Handshake messages per source address per second that get processed
/// while under load (as wireguard-go and the Linux module).
pub const HANDSHAKES_PER_SECOND: u64 = 20;
/// How many of them may come at once (the bucket's depth).
pub const HANDSHAKE_BURST: u64 = 5;
/// A source silent for this long is forgotten.
const IDLE_EXPIRY: Duration = Duration::from_secs(1);
/// The most source addresses tracked at once; a new source beyond that is
/// refused until entries expire.
pub const MAX_TRACKED_SOURCES: usize = 8192;
/// The cost of one handshake in nanoseconds of refill.
const COST_NS: u64 = 1_000_000_000 / HANDSHAKES_PER_SECOND;
/// A full bucket.
const MAX_TOKENS_NS: u64 = COST_NS * HANDSHAKE_BURST;

/// Handshake messages with a valid mac1 per [`LOAD_WINDOW`] above which the
/// device treats itself as under load.
pub const UNDER_LOAD_HANDSHAKES: u32 = 128;
/// The window in which [`UNDER_LOAD_HANDSHAKES`] are counted.
pub const LOAD_WINDOW: Duration = Duration::from_secs(1);
/// How long the device stays under load after the last window that was over
/// the threshold (wireguard-go's `UnderLoadAfterTime`).
pub const UNDER_LOAD_AFTER: Duration = Duration::from_secs(1);

/// The key of a source: its IPv4 address, or the /64 of its IPv6 address
/// (one host usually owns a whole /64).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    last: Instant,
    tokens_ns: u64,
}

/// A token bucket per source address: [`HANDSHAKES_PER_SECOND`] with bursts
/// of [`HANDSHAKE_BURST`]. Buckets idle for a second are dropped; at most
/// [`MAX_TRACKED_SOURCES`] exist at once.
#[derive(Debug, Default)]
pub(crate) struct RateLimiter {
    buckets: BTreeMap<IpAddr, Bucket>,
    last_sweep: Option<Instant>,
}

impl RateLimiter {
    /// Whether one more handshake from `ip` may be processed at `now`
    /// (and, if so, charges it).
    pub(crate) fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        self.sweep(now);
        let key = source_key(ip);
        if let Some(bucket) = self.buckets.get_mut(&key) {
            let refill = now.saturating_duration_since(bucket.last).as_nanos();
            let refill = u64::try_from(refill).unwrap_or(u64::MAX);
            bucket.tokens_ns = bucket.tokens_ns.saturating_add(refill).min(MAX_TOKENS_NS);
            bucket.last = now;
            if bucket.tokens_ns >= COST_NS {
                bucket.tokens_ns -= COST_NS;
                return true;
            }
            return false;
        }
        if self.buckets.len() >= MAX_TRACKED_SOURCES {
            return false;
        }
        self.buckets.insert(
            key,
            Bucket {
                last: now,
                tokens_ns: MAX_TOKENS_NS - COST_NS,
            },
        );
        true
    }

    /// Whether [`RateLimiter::allow`] would allow `ip` at `now`, without
    /// charging it: lets a caller skip work whose only use would be a charge
    /// that must fail.
    pub(crate) fn would_allow(&self, ip: IpAddr, now: Instant) -> bool {
        match self.buckets.get(&source_key(ip)) {
            None => self.buckets.len() < MAX_TRACKED_SOURCES,
            Some(bucket) => {
                let refill = now.saturating_duration_since(bucket.last).as_nanos();
                let refill = u64::try_from(refill).unwrap_or(u64::MAX);
                bucket.tokens_ns.saturating_add(refill).min(MAX_TOKENS_NS) >= COST_NS
            }
        }
    }

    /// Forgets sources idle for [`IDLE_EXPIRY`], at most once per [`IDLE_EXPIRY`].
    fn sweep(&mut self, now: Instant) {
        let due = self
            .last_sweep
            .is_none_or(|last| now.saturating_duration_since(last) >= IDLE_EXPIRY);
        if !due {
            return;
        }
        self.last_sweep = Some(now);
        self.buckets
            .retain(|_, bucket| now.saturating_duration_since(bucket.last) < IDLE_EXPIRY);
    }

    /// How many sources are tracked.
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// Measures the rate of handshake messages that carry a valid mac1 and says
/// whether the device is under load: more than [`UNDER_LOAD_HANDSHAKES`]
/// within any [`LOAD_WINDOW`] (a leaky bucket that drains at that rate, so a
/// burst counts wherever it falls), and for [`UNDER_LOAD_AFTER`] after.
/// Datagrams without a valid mac1 never count: they cost one keyed hash and
/// are dropped.
#[derive(Debug, Default)]
pub(crate) struct LoadMeter {
    last: Option<Instant>,
    level_ns: u64,
    until: Option<Instant>,
}

impl LoadMeter {
    /// What one handshake adds to the bucket, which holds one window.
    const COST_NS: u64 = LOAD_WINDOW.as_nanos() as u64 / UNDER_LOAD_HANDSHAKES as u64;

    /// Records one handshake message with a valid mac1.
    pub(crate) fn record(&mut self, now: Instant) {
        let drained = self
            .last
            .map_or(0, |last| now.saturating_duration_since(last).as_nanos());
        let drained = u64::try_from(drained).unwrap_or(u64::MAX);
        self.last = Some(now);
        self.level_ns = self.level_ns.saturating_sub(drained) + Self::COST_NS;
        if self.level_ns > LOAD_WINDOW.as_nanos() as u64 {
            self.until = Some(now + UNDER_LOAD_AFTER);
            // Keep the level bounded: a flood long past keeps nothing pending.
            self.level_ns = LOAD_WINDOW.as_nanos() as u64 + Self::COST_NS;
        }
    }

    /// Whether the device is under load at `now`.
    pub(crate) fn under_load(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_a_burst_of_five_then_twenty_per_second() {
        let mut limiter = RateLimiter::default();
        let now = crate::test_clock_start();
        let a: IpAddr = "192.0.2.1".parse().expect("address");
        let b: IpAddr = "192.0.2.2".parse().expect("address");
        let allowed = (0..100).filter(|_| limiter.allow(a, now)).count();
        assert_eq!(allowed, 5, "the burst");
        assert!(!limiter.would_allow(a, now));
        assert!(limiter.would_allow(a, now + Duration::from_millis(50)));
        assert!(!limiter.would_allow(a, now), "asking charged nothing");
        assert!(limiter.allow(b, now), "another source has its own bucket");
        // Over one second at 1000 attempts per second: 20 more.
        let allowed = (1..=1000)
            .filter(|ms| limiter.allow(a, now + Duration::from_millis(*ms)))
            .count();
        assert_eq!(allowed, 20);
    }

    #[test]
    fn ipv6_sources_share_their_slash_64() {
        let mut limiter = RateLimiter::default();
        let now = crate::test_clock_start();
        for host in 0..5u16 {
            let ip: IpAddr = format!("2001:db8::{host:x}").parse().expect("address");
            assert!(limiter.allow(ip, now));
        }
        let same_64: IpAddr = "2001:db8::ffff:1".parse().expect("address");
        assert!(!limiter.allow(same_64, now));
        let other_64: IpAddr = "2001:db8:0:1::1".parse().expect("address");
        assert!(limiter.allow(other_64, now));
    }

    #[test]
    fn idle_sources_expire_and_the_table_is_bounded() {
        let mut limiter = RateLimiter::default();
        let now = crate::test_clock_start();
        for n in 0..MAX_TRACKED_SOURCES as u32 + 10 {
            let ip = IpAddr::V4((0x0a00_0000 + n).into());
            let allowed = limiter.allow(ip, now);
            assert_eq!(allowed, (n as usize) < MAX_TRACKED_SOURCES, "{n}");
        }
        assert_eq!(limiter.tracked(), MAX_TRACKED_SOURCES);
        let later = now + IDLE_EXPIRY;
        let newcomer: IpAddr = "192.0.2.9".parse().expect("address");
        assert!(limiter.allow(newcomer, later));
        assert_eq!(limiter.tracked(), 1, "idle sources were forgotten");
    }

    #[test]
    fn under_load_after_more_than_the_threshold_in_a_window_and_for_a_second_after() {
        let mut meter = LoadMeter::default();
        let now = crate::test_clock_start();
        for _ in 0..UNDER_LOAD_HANDSHAKES {
            meter.record(now);
        }
        assert!(!meter.under_load(now));
        meter.record(now);
        assert!(meter.under_load(now));
        assert!(meter.under_load(now + Duration::from_millis(999)));
        assert!(!meter.under_load(now + UNDER_LOAD_AFTER));
        // A burst counts wherever it falls: half a window of quiet, then 129 at once.
        let mut meter = LoadMeter::default();
        meter.record(now);
        let later = now + Duration::from_millis(500);
        for _ in 0..=UNDER_LOAD_HANDSHAKES {
            meter.record(later);
        }
        assert!(meter.under_load(later));
        // A steady rate at the threshold never gets there.
        let mut meter = LoadMeter::default();
        let step = LOAD_WINDOW / UNDER_LOAD_HANDSHAKES;
        for n in 0..10 * UNDER_LOAD_HANDSHAKES {
            meter.record(now + step * n);
        }
        assert!(!meter.under_load(now + step * (10 * UNDER_LOAD_HANDSHAKES)));
    }
}
