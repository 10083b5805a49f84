//! A circuit breaker in front of the store: after consecutive failures it stops calling the
//! store for a short backoff (requests follow their failure mode at once instead of each
//! waiting out the deadline), then lets one probe through; a success closes it again.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Breaker state, lock-free so the hot path only reads two atomics when closed.
pub struct Breaker {
    failures: AtomicU32,
    threshold: u32,
    open_for: Duration,
    /// Milliseconds since `epoch` until which the breaker is open (0 = closed).
    open_until_ms: AtomicU64,
    probing: AtomicBool,
    epoch: Instant,
}

/// Whether to call the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Closed: call it.
    Call,
    /// Half-open: call it as the single probe; report the result.
    Probe,
    /// Open: do not call it.
    Skip,
}

impl Breaker {
    /// Opens after `threshold` consecutive failures, for `open_for`.
    pub fn new(threshold: u32, open_for: Duration) -> Breaker {
        Breaker {
            failures: AtomicU32::new(0),
            threshold: threshold.max(1),
            open_for,
            open_until_ms: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        super::duration_ms(self.epoch.elapsed())
    }

    /// Asks whether to call the store now.
    pub fn permit(&self) -> Permit {
        let until = self.open_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return Permit::Call;
        }
        if self.now_ms() < until {
            return Permit::Skip;
        }
        if self.probing.swap(true, Ordering::AcqRel) {
            Permit::Skip
        } else {
            Permit::Probe
        }
    }

    /// Reports a successful call: closes the breaker.
    ///
    /// Every decision of every request ends here, on every proxy thread, and nearly always
    /// with nothing to clear: each field is read first and written only when set, so a
    /// healthy store costs loads of cache lines the threads share, not writes that bounce them
    /// between cores.
    pub fn success(&self) {
        if self.failures.load(Ordering::Acquire) != 0 {
            self.failures.store(0, Ordering::Release);
        }
        if self.open_until_ms.load(Ordering::Acquire) != 0
            && self.open_until_ms.swap(0, Ordering::AcqRel) != 0
        {
            log::info!("rate limit: store answers again, circuit breaker closed");
        }
        if self.probing.load(Ordering::Acquire) {
            self.probing.store(false, Ordering::Release);
        }
    }

    /// Reports a failed call: opens the breaker at the threshold (or re-opens after a probe).
    pub fn failure(&self, was_probe: bool) {
        // Saturating: a store down long enough must not wrap the count back below the threshold.
        let previous = self
            .failures
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_add(1))
            })
            .unwrap_or_else(|n| n);
        let n = previous.saturating_add(1);
        if was_probe || n >= self.threshold {
            // `breaker_open_for` is any positive duration: a huge one means "until a probe is
            // due at the end of time", never a wrapped, short one.
            let until = self
                .now_ms()
                .saturating_add(super::duration_ms(self.open_for));
            if self.open_until_ms.swap(until.max(1), Ordering::AcqRel) == 0 {
                log::warn!(
                    "rate limit: {n} consecutive store failures, circuit breaker open for {:?}",
                    self.open_for
                );
            }
            self.probing.store(false, Ordering::Release);
        }
    }

    /// Whether the breaker is open or half-open.
    pub fn is_open(&self) -> bool {
        self.open_until_ms.load(Ordering::Acquire) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_probes_once_and_closes_on_success() {
        let b = Breaker::new(3, Duration::from_millis(30));
        for _ in 0..2 {
            assert_eq!(b.permit(), Permit::Call);
            b.failure(false);
        }
        assert_eq!(b.permit(), Permit::Call);
        b.failure(false);
        assert_eq!(b.permit(), Permit::Skip);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.permit(), Permit::Probe);
        assert_eq!(b.permit(), Permit::Skip, "one probe at a time");
        b.failure(true);
        assert_eq!(b.permit(), Permit::Skip, "a failed probe re-opens");
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.permit(), Permit::Probe);
        b.success();
        assert_eq!(b.permit(), Permit::Call);
        assert!(!b.is_open());
    }

    #[test]
    fn a_huge_open_for_keeps_the_breaker_open_instead_of_overflowing() {
        for open_for in [
            Duration::MAX,
            Duration::from_millis(u64::MAX) + Duration::from_secs(1),
        ] {
            let b = Breaker::new(1, open_for);
            // A clock past its epoch, so that adding the open time would overflow.
            std::thread::sleep(Duration::from_millis(2));
            b.failure(false);
            assert_eq!(b.permit(), Permit::Skip, "{open_for:?}");
        }
    }

    #[test]
    fn the_failure_count_saturates() {
        let b = Breaker::new(u32::MAX, Duration::from_secs(60));
        b.failures.store(u32::MAX - 1, Ordering::Release);
        b.failure(false);
        assert_eq!(b.permit(), Permit::Skip, "the threshold was reached");
        b.failure(false);
        assert_eq!(b.failures.load(Ordering::Acquire), u32::MAX);
        assert_eq!(b.permit(), Permit::Skip);
    }
}
