//! When to try the control server again: exponential back-off with full jitter.
//!
//! Each failed attempt doubles the ceiling, from [`FIRST`] up to [`CAP`]; the wait is drawn
//! uniformly between [`FLOOR`] and that ceiling ("full jitter"), so a thousand agents that
//! lost the same server do not come back in step. A session that worked resets it.

use std::time::Duration;

use rand_core::Rng;

/// The ceiling after the first failure.
pub const FIRST: Duration = Duration::from_millis(500);
/// The highest ceiling.
pub const CAP: Duration = Duration::from_secs(30);
/// The shortest wait, so that a server refusing at once is not hammered.
pub const FLOOR: Duration = Duration::from_millis(100);

/// The back-off state of one connection.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// A back-off with no failure yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The ceiling of the next wait: [`FIRST`] doubled per failure before, at most [`CAP`].
    pub fn ceiling(&self) -> Duration {
        let doublings = self.failures.saturating_sub(1).min(16);
        FIRST.saturating_mul(1 << doublings).min(CAP)
    }

    /// Records a failed attempt and returns how long to wait before the next one, drawn from
    /// `rng` between [`FLOOR`] and the ceiling.
    pub fn failed(&mut self, rng: &mut impl Rng) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let ceiling = self.ceiling();
        let span = u64::try_from((ceiling - FLOOR).as_millis()).unwrap_or(u64::MAX);
        FLOOR + Duration::from_millis(rng.next_u64() % (span + 1))
    }

    /// A session worked: the next failure starts from [`FIRST`] again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// How many attempts failed in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The tests are deterministic with the shared seeded generator; the agent passes the OS's (`getrandom::SysRng`).
    use enclave_testkit::TestRng;

    #[test]
    fn the_ceiling_doubles_from_half_a_second_to_thirty_seconds() {
        let mut backoff = Backoff::new();
        let mut rng = TestRng(1);
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            backoff.failed(&mut rng);
            ceilings.push(backoff.ceiling().as_millis());
        }
        assert_eq!(
            ceilings,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]
        );
        // Many failures later it stays at the cap (no overflow).
        for _ in 0..1000 {
            backoff.failed(&mut rng);
        }
        assert_eq!(backoff.ceiling(), CAP);
        backoff.reset();
        assert_eq!(backoff.failures(), 0);
        backoff.failed(&mut rng);
        assert_eq!(backoff.ceiling(), FIRST);
    }

    #[test]
    fn waits_stay_within_bounds_and_are_spread_over_them() {
        let mut rng = TestRng(7);
        for failures in 1..=8u32 {
            let mut waits = Vec::new();
            let mut ceiling = Duration::ZERO;
            for _ in 0..400 {
                let mut backoff = Backoff::new();
                let mut wait = Duration::ZERO;
                for _ in 0..failures {
                    wait = backoff.failed(&mut rng);
                }
                ceiling = backoff.ceiling();
                assert!(
                    wait >= FLOOR && wait <= ceiling,
                    "{wait:?} outside {FLOOR:?}..={ceiling:?}"
                );
                waits.push(wait);
            }
            // Full jitter: the waits cover the range, not one point of it.
            let quarter = (ceiling - FLOOR) / 4;
            let low = waits.iter().filter(|w| **w < FLOOR + quarter).count();
            let high = waits.iter().filter(|w| **w > ceiling - quarter).count();
            assert!(
                low > 40 && high > 40,
                "after {failures} failures: {low} low, {high} high of 400"
            );
        }
    }
}
