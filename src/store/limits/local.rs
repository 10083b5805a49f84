//! In-process rate limiting with exactly the math of `scripts/limit.lua`: the in-process store's
//! decisions (and the rate limiter's local fallback and failed-auth counters), and the
//! reference the script is tested against. For the same checks, the same prior calls and the same clock, both give the same
//! [`Decision`].
//!
//! Semantics (see [`super`]): every rule is checked against the state at `now`; the
//! request is admitted iff every non-shadow rule allows it; then its cost is counted on every
//! rule when admitted, or only on `count_denied` rules when denied. Outcomes describe the state
//! after that counting:
//!
//! - `remaining`: `floor(limit - usage)` when the rule allows (usage includes the cost when it
//!   was counted), 0 when the rule denies;
//! - `reset_ms`: until the counter is back to zero if nothing more is counted;
//! - `retry_after_ms`: 0 when allowed; else the least `t` such that a request of the same cost
//!   is allowed at `now + t` if nothing more is counted; `window_ms` when `cost > limit` (such
//!   a request is never allowed; a window is a sane back-off).
//!
//! **Sliding window** keeps `(window index, current count, previous count)`, index =
//! `floor(now / window)`, and estimates usage as `prev * (1 - elapsed / window) + cur`, in
//! integers scaled by the window. Error bound: within each aligned window at most `limit` units
//! are admitted, but the estimate assumes the previous window's traffic was uniform across it,
//! so bursty traffic at a window edge can admit up to `limit + prev * fraction_elapsed`
//! (< 2 × limit in the worst case) in an arbitrary interval of one window length. Use the
//! sliding log where a hard bound is required.
//!
//! **Sliding log** keeps one timestamp per counted unit (run-length encoded per millisecond); a
//! unit counts while `timestamp > now - window`. Exact in every interval of one window length.
//!
//! The Lua script computes on doubles; both agree while `limit × window_ms` and
//! `count × window_ms` stay below 2^53 (e.g. a limit of 10^6 per day).
//!
//! A sliding log keeps at most a cap of units, its oldest dropped past it (the script's
//! ZREMRANGEBYRANK): `limit` for a `count_denied` rule, [`LOG_CAP`] (or `limit` if larger) for
//! others, where only a shadow rule can pass its limit. With any cap >= limit, decisions and
//! outcomes do not change, because the units that count at any later time are always the newest
//! ones and a log holding `limit` of them denies already; it stops a hammering client from
//! growing the log without bound. (Raising a `count_denied` rule's limit on reload then starts
//! from at most the old limit.)
//!
//! **Bounded memory**: at most `capacity` counters are held. A new counter beyond that evicts
//! one by the CLOCK approximation of LRU (a counter used since the hand last passed gets a
//! second chance), and expired counters are swept out in chunks of bounded size, so no call
//! holds the lock for work proportional to the number of counters.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::IntCounter;

use super::{Algorithm, Decision, RuleCheck, RuleOutcome};

/// How often, in ms of the caller's clock, a sweep of expired counters starts.
const SWEEP_INTERVAL_MS: u64 = 1_000;
/// Counters one sweep step looks at; a sweep that did not get round continues soon after.
const SWEEP_BUDGET: usize = 512;
/// Delay before the next step of a sweep that ran out of budget.
const SWEEP_CONTINUE_MS: u64 = 10;
/// Second chances one eviction gives at most, so an eviction is bounded work even when every
/// counter was used recently.
const MAX_SECOND_CHANCES: usize = 64;
/// Most units a sliding log that is not `count_denied` keeps: the largest `sliding_log` limit
/// the config allows (`scripts/limit.lua` has the same `LOG_CAP`).
pub(crate) const LOG_CAP: u64 = 10_000;
/// Counters held when no capacity is given (the default of `[rate_limit] local_max_counters`).
pub(crate) const DEFAULT_CAPACITY: usize = 100_000;

/// Rate-limit counters of this process, keyed like the Redis keys.
///
/// Memory is bounded twice: each counter expires like its Redis key would (two windows after a
/// sliding-window write, one window after a sliding-log write), and at most `capacity` are
/// held, the least recently used (approximately) making room for new ones.
pub struct LocalCounters {
    /// A plain mutex: one short critical section per call, no await inside, and bounded work
    /// in it (a sweep step, at most a few evictions).
    inner: Mutex<Counters>,
    /// Live counters evicted to make room (expired ones dropped are not counted).
    evictions: IntCounter,
}

struct Counters {
    by_key: HashMap<String, Stored>,
    /// Every key of `by_key` exactly once, in the order the clock hand visits them; keys leave
    /// the map only from the front of this ring.
    ring: VecDeque<String>,
    /// Most counters held after a call.
    capacity: usize,
    /// When the next sweep step is due.
    next_sweep_ms: u64,
}

struct Stored {
    counter: Counter,
    /// The Redis key's TTL: from then on the counter is zero anyway.
    expires_at_ms: u64,
    /// Used since the clock hand last passed (the CLOCK reference bit).
    referenced: bool,
}

enum Counter {
    Window(WindowCounter),
    /// `(timestamp ms, units counted at it)`, oldest first.
    Log(VecDeque<(u64, u64)>),
}

/// A sliding-window counter rolled to the window `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WindowCounter {
    index: u64,
    cur: u64,
    prev: u64,
}

/// What pass 1 saw of one rule.
enum View {
    Window {
        counter: WindowCounter,
        elapsed: u64,
    },
    Log {
        usage: u64,
    },
}

// === impl LocalCounters ===

impl Default for LocalCounters {
    fn default() -> Self {
        LocalCounters::new()
    }
}

impl LocalCounters {
    /// An empty limiter holding up to [`DEFAULT_CAPACITY`] counters.
    pub fn new() -> LocalCounters {
        let evictions =
            IntCounter::new("local_evictions", "evictions of this limiter").expect("valid metric");
        LocalCounters::bounded(DEFAULT_CAPACITY, evictions)
    }

    /// An empty limiter holding up to `capacity` counters (at least 1); `evictions` counts live
    /// counters evicted to make room.
    pub fn bounded(capacity: usize, evictions: IntCounter) -> LocalCounters {
        LocalCounters {
            inner: Mutex::new(Counters {
                by_key: HashMap::new(),
                ring: VecDeque::new(),
                capacity: capacity.max(1),
                next_sweep_ms: 0,
            }),
            evictions,
        }
    }

    /// Decides and counts one request against all its rules at `now_ms` (ms since the Unix
    /// epoch, like Redis `TIME`), exactly as `scripts/limit.lua` does.
    ///
    /// A `window_ms` of 0 is treated as 1 (the script refuses it; config validation keeps it
    /// at least 1000).
    pub fn decide(&self, checks: &[RuleCheck], now_ms: u64) -> Decision {
        let mut counters = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        counters.sweep(now_ms);
        let mut views: Vec<View> = checks.iter().map(|c| counters.view(c, now_ms)).collect();
        let allowed: Vec<bool> = checks.iter().zip(&views).map(|(c, v)| fits(c, v)).collect();
        let admitted = checks.iter().zip(&allowed).all(|(c, ok)| c.shadow || *ok);
        let rules = checks
            .iter()
            .zip(views.iter_mut())
            .zip(allowed)
            .map(|((check, view), ok)| {
                if admitted || check.count_denied {
                    counters.count(check, view, now_ms);
                }
                counters.outcome(check, view, ok, now_ms)
            })
            .collect();
        // Evicting only after every outcome is computed keeps this call's decision exact.
        let evicted = counters.evict_over_capacity(now_ms);
        drop(counters);
        if evicted > 0 {
            self.evictions.inc_by(evicted);
        }
        Decision { admitted, rules }
    }

    /// What `check` would get at `now_ms`, counting nothing.
    pub fn peek(&self, check: &RuleCheck, now_ms: u64) -> RuleOutcome {
        let mut counters = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        counters.sweep(now_ms);
        let view = counters.view(check, now_ms);
        let ok = fits(check, &view);
        counters.outcome(check, &view, ok, now_ms)
    }

    /// Live counters evicted so far to make room.
    pub fn evictions(&self) -> u64 {
        self.evictions.get()
    }

    /// [`LocalCounters::decide`] at the system clock's current time.
    pub fn decide_now(&self, checks: &[RuleCheck]) -> Decision {
        self.decide(checks, unix_ms())
    }

    /// How many counters are held (expired ones included until the next sweep).
    pub fn tracked_keys(&self) -> usize {
        let counters = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        counters.by_key.len()
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn window_of(check: &RuleCheck) -> u64 {
    check.window_ms.max(1)
}

fn fits(check: &RuleCheck, view: &View) -> bool {
    match view {
        View::Window { counter, elapsed } => {
            let w = u128::from(window_of(check));
            window_usage(counter, *elapsed, w).saturating_add(u128::from(check.cost) * w)
                <= u128::from(check.limit) * w
        }
        View::Log { usage } => {
            u128::from(*usage) + u128::from(check.cost) <= u128::from(check.limit)
        }
    }
}

// === impl Counters ===

impl Counters {
    /// One step of the sweep: looks at up to [`SWEEP_BUDGET`] counters from the hand on,
    /// drops the expired ones and moves the others behind it.
    fn sweep(&mut self, now: u64) {
        if now < self.next_sweep_ms {
            return;
        }
        let held = self.ring.len();
        let budget = SWEEP_BUDGET.min(held);
        for _ in 0..budget {
            let Some(key) = self.ring.pop_front() else {
                break;
            };
            match self.by_key.get(&key) {
                Some(stored) if stored.expires_at_ms > now => self.ring.push_back(key),
                _ => {
                    self.by_key.remove(&key);
                }
            }
        }
        let pause = if budget == held {
            SWEEP_INTERVAL_MS
        } else {
            SWEEP_CONTINUE_MS
        };
        self.next_sweep_ms = now.saturating_add(pause);
    }

    /// Evicts counters until at most `capacity` are held; returns how many live ones went.
    fn evict_over_capacity(&mut self, now: u64) -> u64 {
        let mut evicted = 0;
        let mut second_chances = 0;
        while self.by_key.len() > self.capacity {
            let Some(key) = self.ring.pop_front() else {
                break;
            };
            let Some(stored) = self.by_key.get_mut(&key) else {
                continue;
            };
            let live = stored.expires_at_ms > now;
            if live && stored.referenced && second_chances < MAX_SECOND_CHANCES {
                stored.referenced = false;
                second_chances += 1;
                self.ring.push_back(key);
                continue;
            }
            self.by_key.remove(&key);
            if live {
                evicted += 1;
            }
        }
        evicted
    }

    /// The live counter under `key` (an expired one is as good as absent, as in Redis).
    fn live_mut(&mut self, key: &str, now: u64) -> Option<&mut Counter> {
        self.by_key
            .get_mut(key)
            .filter(|stored| stored.expires_at_ms > now)
            .map(|stored| {
                stored.referenced = true;
                &mut stored.counter
            })
    }

    fn view(&mut self, check: &RuleCheck, now: u64) -> View {
        match check.algorithm {
            Algorithm::SlidingWindow => self.window_view(check, now),
            Algorithm::SlidingLog => View::Log {
                usage: self.trim_log(check, now),
            },
        }
    }

    fn window_view(&mut self, check: &RuleCheck, now: u64) -> View {
        let window = window_of(check);
        let index = now / window;
        let stored = match self.live_mut(&check.key, now) {
            Some(Counter::Window(counter)) => Some(*counter),
            _ => None,
        };
        View::Window {
            counter: roll(stored, index),
            elapsed: now - index * window,
        }
    }

    /// Drops the log's entries that left the window (the script's ZREMRANGEBYSCORE) and
    /// returns how many units remain. A log left empty stays until its expiry sweeps it out
    /// (keys leave the map only at the clock hand); empty, it counts as absent.
    fn trim_log(&mut self, check: &RuleCheck, now: u64) -> u64 {
        let window = window_of(check);
        let Some(Counter::Log(entries)) = self.live_mut(&check.key, now) else {
            return 0;
        };
        while entries
            .front()
            .is_some_and(|&(at, _)| at.saturating_add(window) <= now)
        {
            entries.pop_front();
        }
        // Saturating, as everywhere units are added: a plain `sum` panics on overflow in debug.
        entries.iter().fold(0, |sum, &(_, n)| sum.saturating_add(n))
    }

    fn count(&mut self, check: &RuleCheck, view: &mut View, now: u64) {
        let window = window_of(check);
        match view {
            View::Window { counter, .. } => {
                counter.cur = counter.cur.saturating_add(check.cost);
                // Both counts are zero two windows after the last write.
                let ttl_ms = window.saturating_mul(2);
                self.store(check, Counter::Window(*counter), now, ttl_ms);
            }
            View::Log { usage } => {
                let mut entries = match self.live_mut(&check.key, now) {
                    Some(Counter::Log(entries)) => std::mem::take(entries),
                    _ => VecDeque::new(),
                };
                insert_sorted(&mut entries, now, check.cost);
                *usage = keep_newest(&mut entries, log_cap(check));
                self.store(check, Counter::Log(entries), now, window);
            }
        }
    }

    /// Writes a counter in place, or adds it (behind the clock hand) when new.
    fn store(&mut self, check: &RuleCheck, counter: Counter, now: u64, ttl_ms: u64) {
        let expires_at_ms = now.saturating_add(ttl_ms);
        if let Some(stored) = self.by_key.get_mut(&check.key) {
            stored.counter = counter;
            stored.expires_at_ms = expires_at_ms;
            stored.referenced = true;
            return;
        }
        // Unreferenced until used again: a flood of one-off subjects is evicted before the
        // counters that are in use (CLOCK would otherwise degrade to FIFO under it).
        let stored = Stored {
            counter,
            expires_at_ms,
            referenced: false,
        };
        self.by_key.insert(check.key.clone(), stored);
        self.ring.push_back(check.key.clone());
    }

    fn outcome(&mut self, check: &RuleCheck, view: &View, allowed: bool, now: u64) -> RuleOutcome {
        match view {
            View::Window { counter, elapsed } => window_outcome(check, counter, *elapsed, allowed),
            View::Log { usage } => {
                let entries = match self.live_mut(&check.key, now) {
                    Some(Counter::Log(entries)) => Some(&*entries),
                    _ => None,
                };
                log_outcome(check, entries, *usage, allowed, now)
            }
        }
    }
}

// === sliding window ===

/// The stored counter as seen in window `index`: one window on, current becomes previous;
/// further on (or none stored), both are zero.
fn roll(stored: Option<WindowCounter>, index: u64) -> WindowCounter {
    match stored {
        Some(c) if c.index == index => c,
        Some(c) if c.index.checked_add(1) == Some(index) => WindowCounter {
            index,
            cur: 0,
            prev: c.cur,
        },
        _ => WindowCounter {
            index,
            cur: 0,
            prev: 0,
        },
    }
}

/// Usage scaled by the window: `prev × (window - elapsed) + cur × window`. Each product of
/// two u64 fits a u128, their sum may not (counts and window near `u64::MAX`): saturating.
fn window_usage(c: &WindowCounter, elapsed: u64, window: u128) -> u128 {
    (u128::from(c.prev) * (window - u128::from(elapsed))).saturating_add(u128::from(c.cur) * window)
}

fn window_outcome(
    check: &RuleCheck,
    c: &WindowCounter,
    elapsed: u64,
    allowed: bool,
) -> RuleOutcome {
    let window = window_of(check);
    let w = u128::from(window);
    let (remaining, retry_after_ms) = if allowed {
        let room = (u128::from(check.limit) * w).saturating_sub(window_usage(c, elapsed, w));
        (saturate(room / w), 0)
    } else {
        (0, window_retry_after(check, c, elapsed))
    };
    let reset_ms = if c.cur > 0 {
        window.saturating_mul(2) - elapsed
    } else if c.prev > 0 {
        window - elapsed
    } else {
        0
    };
    RuleOutcome {
        allowed,
        remaining,
        reset_ms,
        retry_after_ms,
    }
}

/// The least `t` at which `usage(now + t) + cost <= limit`, nothing more being counted: first
/// while `prev` decays over the rest of this window, then while `cur` (as the next window's
/// `prev`) decays, else once both are gone.
fn window_retry_after(check: &RuleCheck, c: &WindowCounter, elapsed: u64) -> u64 {
    let window = window_of(check);
    if check.cost > check.limit {
        return window;
    }
    let w = u128::from(window);
    let (cost, limit) = (u128::from(check.cost), u128::from(check.limit));
    let need = window_usage(c, elapsed, w)
        .saturating_add(cost * w)
        .saturating_sub(limit * w);
    if need == 0 {
        return 0;
    }
    let left_in_window = u128::from(window - elapsed);
    if c.prev > 0 {
        let t = need.div_ceil(u128::from(c.prev));
        if t < left_in_window {
            return saturate(t);
        }
    }
    // `cur + cost` may exceed u64, so its product with the window may exceed u128.
    let need_next = ((u128::from(c.cur) + cost).saturating_mul(w)).saturating_sub(limit * w);
    if need_next == 0 {
        return window - elapsed;
    }
    if c.cur > 0 {
        let s = need_next.div_ceil(u128::from(c.cur));
        if s < w {
            return saturate(left_in_window + s);
        }
    }
    window.saturating_mul(2) - elapsed
}

fn saturate(x: u128) -> u64 {
    u64::try_from(x).unwrap_or(u64::MAX)
}

// === sliding log ===

/// Adds `n` units at `at`, keeping the entries sorted (a clock that stepped back still lands
/// in order, as in a sorted set).
fn insert_sorted(entries: &mut VecDeque<(u64, u64)>, at: u64, n: u64) {
    let pos = entries.partition_point(|&(t, _)| t <= at);
    match pos.checked_sub(1).and_then(|i| entries.get_mut(i)) {
        Some((t, count)) if *t == at => *count = count.saturating_add(n),
        _ => entries.insert(pos, (at, n)),
    }
}

/// The most units `check`'s log keeps (see the module docs).
fn log_cap(check: &RuleCheck) -> u64 {
    if check.count_denied {
        check.limit
    } else {
        check.limit.max(LOG_CAP)
    }
}

/// Drops the oldest units beyond `limit` (the script's ZREMRANGEBYRANK) and returns how many
/// units remain.
fn keep_newest(entries: &mut VecDeque<(u64, u64)>, limit: u64) -> u64 {
    let total: u64 = entries.iter().fold(0, |sum, &(_, n)| sum.saturating_add(n));
    let mut excess = total.saturating_sub(limit);
    while excess > 0 {
        let Some(front) = entries.front_mut() else {
            break;
        };
        if front.1 <= excess {
            excess -= front.1;
            entries.pop_front();
        } else {
            front.1 -= excess;
            excess = 0;
        }
    }
    total.min(limit)
}

/// Timestamp of the `k`-th oldest unit (1-based).
fn kth_oldest(entries: &VecDeque<(u64, u64)>, k: u64) -> Option<u64> {
    let mut seen = 0u64;
    entries.iter().find_map(|&(at, n)| {
        seen = seen.saturating_add(n);
        (seen >= k).then_some(at)
    })
}

fn log_outcome(
    check: &RuleCheck,
    entries: Option<&VecDeque<(u64, u64)>>,
    usage: u64,
    allowed: bool,
    now: u64,
) -> RuleOutcome {
    let window = window_of(check);
    let expiry = |at: u64| at.saturating_add(window).saturating_sub(now);
    let reset_ms = entries
        .and_then(|e| e.back())
        .map_or(0, |&(at, _)| expiry(at));
    let (remaining, retry_after_ms) = if allowed {
        (check.limit.saturating_sub(usage), 0)
    } else if check.cost > check.limit {
        (0, window)
    } else {
        // The k-th oldest unit's expiry frees enough room: k = usage + cost - limit (<= usage).
        let k = usage.saturating_add(check.cost).saturating_sub(check.limit);
        let kth = entries.and_then(|e| kth_oldest(e, k));
        (0, kth.map_or(0, expiry))
    };
    RuleOutcome {
        allowed,
        remaining,
        reset_ms,
        retry_after_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000; // a multiple of every window used below

    fn rule(key: &str, algorithm: Algorithm, limit: u64, window_ms: u64) -> RuleCheck {
        RuleCheck {
            key: key.to_string(),
            algorithm,
            limit,
            window_ms,
            cost: 1,
            shadow: false,
            count_denied: false,
        }
    }

    fn admitted_count(limiter: &LocalCounters, checks: &[RuleCheck], now: u64, n: usize) -> usize {
        (0..n)
            .filter(|_| limiter.decide(checks, now).admitted)
            .count()
    }

    #[test]
    fn exactly_the_limit_is_admitted_within_a_window() {
        for algorithm in [Algorithm::SlidingWindow, Algorithm::SlidingLog] {
            let limiter = LocalCounters::new();
            let checks = [rule("k", algorithm, 5, 10_000)];
            for expected_remaining in (0..5).rev() {
                let d = limiter.decide(&checks, T0 + 100);
                assert!(d.admitted, "{algorithm:?}");
                assert_eq!(d.rules[0].remaining, expected_remaining, "{algorithm:?}");
            }
            let denied = limiter.decide(&checks, T0 + 200);
            assert!(!denied.admitted, "{algorithm:?}");
            assert_eq!(denied.rules[0].remaining, 0);
            assert!(denied.rules[0].retry_after_ms > 0);
        }
    }

    #[test]
    fn sliding_log_frees_units_exactly_one_window_after_they_were_counted() {
        let limiter = LocalCounters::new();
        let checks = [rule("k", Algorithm::SlidingLog, 3, 1_000)];
        assert_eq!(admitted_count(&limiter, &checks, T0, 3), 3);
        assert_eq!(admitted_count(&limiter, &checks, T0 + 999, 1), 0);
        let denied = limiter.decide(&checks, T0 + 999);
        assert_eq!(denied.rules[0].retry_after_ms, 1);
        assert_eq!(admitted_count(&limiter, &checks, T0 + 1_000, 5), 3);
    }

    #[test]
    fn sliding_window_weights_the_previous_window_by_its_overlap() {
        let limiter = LocalCounters::new();
        let checks = [rule("k", Algorithm::SlidingWindow, 10, 1_000)];
        assert_eq!(admitted_count(&limiter, &checks, T0 + 100, 10), 10);
        // Half-way into the next window, the previous 10 weigh 5.
        let first = limiter.decide(&checks, T0 + 1_500);
        assert!(first.admitted);
        assert_eq!(first.rules[0].remaining, 4); // floor(10 - 5 - 1)
        assert_eq!(first.rules[0].reset_ms, 1_500); // cur > 0: rest of this window + one more
        assert_eq!(admitted_count(&limiter, &checks, T0 + 1_500, 10), 4);
        // At 1_600 the previous weigh 4, the current 5: 9 + 1 fits.
        assert_eq!(admitted_count(&limiter, &checks, T0 + 1_600, 10), 1);
    }

    #[test]
    fn sliding_window_admits_at_most_the_limit_per_aligned_window() {
        let limiter = LocalCounters::new();
        let checks = [rule("k", Algorithm::SlidingWindow, 7, 1_000)];
        let mut per_window = HashMap::new();
        for t in (0..5_000).step_by(13) {
            if limiter.decide(&checks, T0 + t).admitted {
                *per_window.entry(t / 1_000).or_insert(0) += 1;
            }
        }
        assert!(per_window.values().all(|&n| n <= 7), "{per_window:?}");
    }

    /// A small deterministic generator (no dependency needed).
    struct Lcg(u64);
    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    /// Drives random traffic; at every denial, checks that 1 ms before `retry_after_ms` the
    /// request is still denied and at `retry_after_ms` it is admitted.
    fn check_retry_after_is_exact(algorithm: Algorithm, seed: u64) {
        let limiter = LocalCounters::new();
        let mut rng = Lcg(seed);
        let window = 1_000 + (seed % 2) * 500;
        let mut now = T0 + rng.below(3_000);
        let mut denials = 0;
        for _ in 0..2_000 {
            let mut check = rule("k", algorithm, 12, window);
            check.cost = 1 + rng.below(4);
            let checks = [check];
            let d = limiter.decide(&checks, now);
            if !d.admitted {
                denials += 1;
                let retry = d.rules[0].retry_after_ms;
                assert!(retry > 0, "{algorithm:?} denied with retry 0 at {now}");
                assert!(
                    !limiter.decide(&checks, now + retry - 1).admitted,
                    "{algorithm:?}: admitted 1 ms before retry_after {retry} at {now}"
                );
                now += retry;
                assert!(
                    limiter.decide(&checks, now).admitted,
                    "{algorithm:?}: denied after waiting retry_after {retry}"
                );
            }
            now += rng.below(120);
        }
        assert!(
            denials > 50,
            "{algorithm:?}: only {denials} denials exercised"
        );
    }

    #[test]
    fn retry_after_is_the_exact_wait_for_sliding_window() {
        for seed in 1..=5 {
            check_retry_after_is_exact(Algorithm::SlidingWindow, seed);
        }
    }

    #[test]
    fn retry_after_is_the_exact_wait_for_sliding_log() {
        for seed in 1..=5 {
            check_retry_after_is_exact(Algorithm::SlidingLog, seed);
        }
    }

    #[test]
    fn a_cost_above_the_limit_is_never_admitted_and_backs_off_one_window() {
        for algorithm in [Algorithm::SlidingWindow, Algorithm::SlidingLog] {
            let limiter = LocalCounters::new();
            let mut check = rule("k", algorithm, 3, 2_000);
            check.cost = 4;
            let d = limiter.decide(&[check], T0);
            assert!(!d.admitted);
            assert_eq!(d.rules[0].retry_after_ms, 2_000);
            assert_eq!(
                limiter.tracked_keys(),
                0,
                "a denied rule creates no counter"
            );
        }
    }

    #[test]
    fn the_tighter_rule_denies_and_neither_counts() {
        for algorithm in [Algorithm::SlidingWindow, Algorithm::SlidingLog] {
            let limiter = LocalCounters::new();
            let tight = rule("tight", algorithm, 2, 60_000);
            let loose = rule("loose", algorithm, 10, 60_000);
            let both = [tight.clone(), loose.clone()];
            assert_eq!(admitted_count(&limiter, &both, T0, 5), 2);
            let d = limiter.decide(&both, T0);
            assert!(!d.admitted);
            assert!(!d.rules[0].allowed);
            assert!(d.rules[1].allowed);
            assert_eq!(
                d.rules[1].remaining, 8,
                "the loose rule counted only the admitted 2"
            );
            assert_eq!(admitted_count(&limiter, &[loose], T0, 20), 8);
        }
    }

    #[test]
    fn a_shadow_rule_never_denies_but_counts() {
        for algorithm in [Algorithm::SlidingWindow, Algorithm::SlidingLog] {
            let limiter = LocalCounters::new();
            let mut shadow = rule("shadow", algorithm, 1, 60_000);
            shadow.shadow = true;
            let enforced = rule("enforced", algorithm, 10, 60_000);
            let checks = [shadow.clone(), enforced];
            let decisions: Vec<Decision> = (0..3).map(|_| limiter.decide(&checks, T0)).collect();
            assert!(decisions.iter().all(|d| d.admitted));
            assert!(decisions[0].rules[0].allowed);
            assert!(!decisions[1].rules[0].allowed && !decisions[2].rules[0].allowed);
            // The shadow counter holds all 3: enforcing the same key at limit 3 denies.
            shadow.shadow = false;
            shadow.limit = 3;
            assert!(!limiter.decide(&[shadow], T0).admitted);
        }
    }

    #[test]
    fn count_denied_counts_denied_requests_on_its_rule_only() {
        for algorithm in [Algorithm::SlidingWindow, Algorithm::SlidingLog] {
            let limiter = LocalCounters::new();
            let mut strict = rule("strict", algorithm, 2, 60_000);
            strict.count_denied = true;
            let plain = rule("plain", algorithm, 100, 60_000);
            let checks = [strict.clone(), plain.clone()];
            assert_eq!(admitted_count(&limiter, &checks, T0, 6), 2);
            // strict counted all 6 (a sliding log keeps only the newest `limit` = 2 of them,
            // so that hammering cannot grow it), plain only the 2 admitted.
            strict.count_denied = false;
            strict.limit = 7;
            let held = match algorithm {
                Algorithm::SlidingWindow => 6,
                Algorithm::SlidingLog => 2,
            };
            assert_eq!(admitted_count(&limiter, &[strict], T0, 7), 7 - held);
            let d = limiter.decide(&[plain], T0);
            assert_eq!(d.rules[0].remaining, 97);
        }
    }

    #[test]
    fn expired_counters_are_evicted() {
        let limiter = LocalCounters::new();
        for i in 0..100 {
            let algorithm = if i % 2 == 0 {
                Algorithm::SlidingWindow
            } else {
                Algorithm::SlidingLog
            };
            limiter.decide(&[rule(&format!("k{i}"), algorithm, 5, 1_000)], T0);
        }
        assert_eq!(limiter.tracked_keys(), 100);
        limiter.decide(&[], T0 + 1_500);
        assert_eq!(limiter.tracked_keys(), 50, "logs expire after one window");
        limiter.decide(&[], T0 + 3_000);
        assert_eq!(limiter.tracked_keys(), 0, "windows expire after two");
    }

    fn bounded(capacity: usize) -> LocalCounters {
        let evictions = IntCounter::new("evictions", "test").expect("valid metric");
        LocalCounters::bounded(capacity, evictions)
    }

    #[test]
    fn counters_beyond_capacity_evict_the_least_recently_used_and_count_it() {
        let limiter = bounded(50);
        let hot = [rule("hot", Algorithm::SlidingWindow, 1_000, 60_000)];
        for i in 0..500u64 {
            // The hot key is used between every new one: CLOCK keeps it.
            limiter.decide(&hot, T0 + i);
            let cold = rule(&format!("cold{i}"), Algorithm::SlidingWindow, 5, 60_000);
            limiter.decide(&[cold], T0 + i);
            assert!(limiter.tracked_keys() <= 50, "{}", limiter.tracked_keys());
        }
        assert_eq!(limiter.evictions(), 451, "500 cold + 1 hot into 50 slots");
        let d = limiter.decide(&hot, T0 + 600);
        assert_eq!(
            d.rules[0].remaining,
            1_000 - 501,
            "the hot counter survived"
        );
    }

    #[test]
    fn expired_counters_make_room_without_counting_as_evictions() {
        let limiter = bounded(10);
        for i in 0..10 {
            limiter.decide(
                &[rule(&format!("a{i}"), Algorithm::SlidingLog, 5, 1_000)],
                T0,
            );
        }
        for i in 0..10 {
            let late = rule(&format!("b{i}"), Algorithm::SlidingLog, 5, 1_000);
            limiter.decide(&[late], T0 + 1_000);
        }
        assert_eq!(limiter.tracked_keys(), 10);
        assert_eq!(limiter.evictions(), 0);
    }

    #[test]
    fn one_sweep_step_looks_at_a_bounded_number_of_counters() {
        let limiter = bounded(10_000);
        for i in 0..(3 * SWEEP_BUDGET) {
            limiter.decide(
                &[rule(&format!("k{i}"), Algorithm::SlidingLog, 5, 1_000)],
                T0,
            );
        }
        limiter.decide(&[], T0 + 2_000);
        assert_eq!(
            limiter.tracked_keys(),
            2 * SWEEP_BUDGET,
            "one step, one budget"
        );
        // The sweep continues shortly after, not a whole interval later.
        limiter.decide(&[], T0 + 2_000 + SWEEP_CONTINUE_MS);
        limiter.decide(&[], T0 + 2_000 + 2 * SWEEP_CONTINUE_MS);
        assert_eq!(limiter.tracked_keys(), 0);
    }

    #[test]
    fn a_hammered_count_denied_log_keeps_at_most_limit_units_and_decides_the_same() {
        let limiter = LocalCounters::new();
        let mut check = rule("k", Algorithm::SlidingLog, 5, 1_000);
        check.count_denied = true;
        let checks = [check];
        let mut admitted = 0;
        for t in 0..2_000 {
            let d = limiter.decide(&checks, T0 + t / 4);
            admitted += usize::from(d.admitted);
            let inner = limiter.inner.lock().expect("lock");
            if let Some(Stored {
                counter: Counter::Log(entries),
                ..
            }) = inner.by_key.get("k")
            {
                let units: u64 = entries.iter().map(|&(_, n)| n).sum();
                assert!(units <= 5, "{units} units held at step {t}");
            }
        }
        // Hammered without pause, the client gets its 5 and then only once a full window
        // passes with nothing counted, which never happens here.
        assert_eq!(admitted, 5);
        let d = limiter.decide(&checks, T0 + 500);
        // Kept: the newest 5 units, four at 499 and this call's at 500; the oldest frees room.
        assert_eq!(d.rules[0].retry_after_ms, 999);
    }

    #[test]
    fn a_hammered_shadow_log_keeps_at_most_log_cap_units_and_still_counts() {
        let limiter = LocalCounters::new();
        let mut shadow = rule("s", Algorithm::SlidingLog, 1, 60_000);
        shadow.shadow = true;
        for _ in 0..(LOG_CAP + 50) {
            assert!(limiter.decide(std::slice::from_ref(&shadow), T0).admitted);
        }
        let inner = limiter.inner.lock().expect("lock");
        let Some(Stored {
            counter: Counter::Log(entries),
            ..
        }) = inner.by_key.get("s")
        else {
            panic!("no log stored");
        };
        let units: u64 = entries.iter().map(|&(_, n)| n).sum();
        assert_eq!(units, LOG_CAP);
        drop(inner);
        // Enforced at the largest limit the config allows, the kept units deny.
        shadow.shadow = false;
        shadow.limit = LOG_CAP;
        assert!(!limiter.decide(&[shadow], T0).admitted);
    }

    #[test]
    fn huge_limits_costs_and_windows_never_overflow_the_window_math() {
        let limiter = LocalCounters::new();
        let mut check = rule("k", Algorithm::SlidingWindow, u64::MAX, u64::MAX);
        check.cost = u64::MAX;
        let first = limiter.decide(std::slice::from_ref(&check), T0);
        assert!(first.admitted, "a cost equal to the limit fits once");
        assert_eq!(first.rules[0].remaining, 0);
        // Now usage × window + cost × window is twice u64::MAX², beyond u128.
        let second = limiter.decide(std::slice::from_ref(&check), T0 + 1);
        assert!(!second.admitted);
        assert!(second.rules[0].retry_after_ms > 0);
        check.count_denied = true;
        for t in 2..5 {
            let d = limiter.decide(std::slice::from_ref(&check), T0 + t);
            assert!(!d.admitted && d.rules[0].retry_after_ms > 0);
        }
    }

    #[test]
    fn huge_costs_never_overflow_the_log_math() {
        let limiter = LocalCounters::new();
        let mut check = rule("k", Algorithm::SlidingLog, u64::MAX, 60_000);
        check.cost = 1 << 63;
        // Two units of 2^63 at different times: their sum is 2^64.
        assert!(limiter.decide(std::slice::from_ref(&check), T0).admitted);
        let second = limiter.decide(std::slice::from_ref(&check), T0 + 1);
        assert!(!second.admitted, "2^63 + 2^63 exceeds u64::MAX");
        check.shadow = true;
        assert!(
            limiter
                .decide(std::slice::from_ref(&check), T0 + 2)
                .admitted
        );
        let d = limiter.decide(std::slice::from_ref(&check), T0 + 3);
        assert!(d.admitted && !d.rules[0].allowed);
        assert_eq!(d.rules[0].remaining, 0);
    }

    #[test]
    fn reset_is_when_the_counter_is_back_to_zero() {
        let limiter = LocalCounters::new();
        let window = [rule("w", Algorithm::SlidingWindow, 10, 1_000)];
        let log = [rule("l", Algorithm::SlidingLog, 10, 1_000)];
        assert_eq!(limiter.decide(&window, T0 + 300).rules[0].reset_ms, 1_700);
        assert_eq!(limiter.decide(&log, T0 + 300).rules[0].reset_ms, 1_000);
        limiter.decide(&log, T0 + 500);
        // A shadow-free, uncounted look: denied with a cost above what is left.
        let mut probe = log[0].clone();
        probe.cost = 9;
        let d = limiter.decide(&[probe], T0 + 800);
        assert_eq!(
            d.rules[0].reset_ms, 700,
            "newest entry (t=500) expires at 1_500"
        );
        assert_eq!(
            d.rules[0].retry_after_ms, 500,
            "oldest (t=300) expires at 1_300"
        );
    }
}
