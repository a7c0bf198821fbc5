//! Rate limiting of failed secret guesses (enrolment keys, admin tokens). Sans-IO: the caller
//! passes the time.
//!
//! Each source address may fail [`PER_SOURCE`] times per window of [`WINDOW_SECS`]; all
//! sources together [`GLOBAL`] times. Past either, every attempt (right or wrong) from that
//! source, or from all, is refused until the window ends: guessing a 256-bit key is hopeless
//! anyway; this keeps the server's work and logs bounded.

use std::collections::HashMap;
use std::net::IpAddr;

/// Length of a window, seconds.
pub const WINDOW_SECS: u64 = 60;
/// Failures one source may make per window.
pub const PER_SOURCE: u32 = 10;
/// Failures all sources together may make per window.
pub const GLOBAL: u32 = 200;
/// Sources remembered at most (oldest windows are forgotten first).
const MAX_SOURCES: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Window {
    start: u64,
    failures: u32,
}

impl Window {
    fn current(&mut self, now: u64) -> &mut Self {
        if now >= self.start + WINDOW_SECS || now < self.start {
            *self = Window {
                start: now,
                failures: 0,
            };
        }
        self
    }
}

/// Failed attempts per source and in total.
#[derive(Debug)]
pub struct Limiter {
    sources: HashMap<IpAddr, Window>,
    global: Window,
}

impl Default for Limiter {
    fn default() -> Self {
        Self::new()
    }
}

impl Limiter {
    /// A limiter with no failures recorded.
    pub fn new() -> Self {
        Self {
            sources: HashMap::new(),
            global: Window {
                start: 0,
                failures: 0,
            },
        }
    }

    /// Whether `source` may try now; `Err(seconds)` says how long to wait.
    pub fn check(&mut self, source: IpAddr, now: u64) -> Result<(), u64> {
        let global = self.global.current(now);
        if global.failures >= GLOBAL {
            return Err(global.start + WINDOW_SECS - now);
        }
        if let Some(window) = self.sources.get_mut(&source) {
            let window = window.current(now);
            if window.failures >= PER_SOURCE {
                return Err(window.start + WINDOW_SECS - now);
            }
        }
        Ok(())
    }

    /// Records a failed attempt of `source`.
    pub fn fail(&mut self, source: IpAddr, now: u64) {
        self.global.current(now).failures += 1;
        if self.sources.len() >= MAX_SOURCES && !self.sources.contains_key(&source) {
            self.sources.retain(|_, w| now < w.start + WINDOW_SECS);
            if self.sources.len() >= MAX_SOURCES {
                return;
            }
        }
        self.sources
            .entry(source)
            .or_insert(Window {
                start: now,
                failures: 0,
            })
            .current(now)
            .failures += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_held_back_after_its_failures_until_the_window_ends() {
        let mut limiter = Limiter::new();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..PER_SOURCE {
            assert_eq!(limiter.check(a, 100), Ok(()));
            limiter.fail(a, 100);
        }
        assert_eq!(limiter.check(a, 110), Err(50));
        // Another source is not held back by a's failures.
        assert_eq!(limiter.check(b, 110), Ok(()));
        // The next window starts afresh.
        assert_eq!(limiter.check(a, 160), Ok(()));
    }

    #[test]
    fn all_sources_together_are_held_back_after_the_global_failures() {
        let mut limiter = Limiter::new();
        for i in 0..GLOBAL {
            let source = IpAddr::from([10, 0, (i / 250) as u8, (i % 250) as u8]);
            limiter.fail(source, 100);
        }
        assert_eq!(limiter.check("198.51.100.9".parse().unwrap(), 101), Err(59));
    }
}
