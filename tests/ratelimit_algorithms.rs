//! Rate-limit algorithms against a real redis-server: `scripts/limit.lua` decides exactly like
//! the in-process `LocalLimiter`, stays exact under concurrency and leaves no key without a TTL.

mod support;

use std::thread;
use std::time::Duration;

use portcullis::store::limits::script::{parse_reply, script_args, SCRIPT};
use portcullis::store::limits::{Algorithm, Decision, LocalCounters as LocalLimiter, RuleCheck};
use support::redis::Reply;
use support::Redis;

/// One connection with the script, calling it as the gateway does.
struct Remote {
    con: redis::Connection,
    script: redis::Script,
    calls: u64,
    tag: String,
}

impl Remote {
    fn connect(redis: &Redis, tag: &str) -> Remote {
        let client = redis::Client::open(redis.url()).expect("redis url");
        Remote {
            con: client.get_connection().expect("connect to redis"),
            script: redis::Script::new(SCRIPT),
            calls: 0,
            tag: tag.to_string(),
        }
    }

    /// One script call (EVALSHA, loading the script on NOSCRIPT).
    fn decide(&mut self, checks: &[RuleCheck]) -> Decision {
        self.calls += 1;
        let nonce = format!("{}.{}", self.tag, self.calls);
        let (keys, argv) = script_args(checks, &nonce);
        let mut call = self.script.prepare_invoke();
        for key in &keys {
            call.key(key);
        }
        for arg in &argv {
            call.arg(arg);
        }
        let reply: Vec<i64> = call.invoke(&mut self.con).expect("script call");
        parse_reply(&reply, checks.len()).expect("well-formed reply")
    }

    fn int(&mut self, args: &[&str]) -> i64 {
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query(&mut self.con).expect("redis command")
    }

    /// Redis' clock in ms, as the script reads it.
    fn now_ms(&mut self) -> u64 {
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query(&mut self.con).expect("TIME");
        secs * 1000 + micros / 1000
    }

    /// The score of the highest-scored member of a sorted set.
    fn newest_score(&mut self, key: &str) -> u64 {
        let pair: Vec<String> = redis::cmd("ZRANGE")
            .arg(key)
            .arg(-1)
            .arg(-1)
            .arg("WITHSCORES")
            .query(&mut self.con)
            .expect("ZRANGE");
        pair.get(1)
            .and_then(|s| s.parse().ok())
            .expect("a scored member")
    }
}

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

/// A shadow sliding-log rule that counts every call, so the newest score of its key is the
/// exact `now` the script ran at.
fn clock_rule() -> RuleCheck {
    RuleCheck {
        shadow: true,
        count_denied: true,
        ..rule("rl:{t}:clock", Algorithm::SlidingLog, 1_000_000, 60_000)
    }
}

/// A window (about an hour) whose current aligned window has at least `room_ms` left on Redis'
/// clock, so a test of that length never sees a rollover.
fn window_with_room(remote: &mut Remote, room_ms: u64) -> u64 {
    let now = remote.now_ms();
    (0..100)
        .map(|i| 3_600_000 + i * 7_001)
        .find(|w| w - now % w > room_ms)
        .expect("one of 100 windows has room")
}

fn admitted(remote: &mut Remote, checks: &[RuleCheck], calls: usize) -> usize {
    (0..calls)
        .filter(|_| remote.decide(checks).admitted)
        .count()
}

/// A small deterministic generator.
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

#[test]
fn script_decides_exactly_like_the_local_limiter() {
    let redis = Redis::start();
    let mut remote = Remote::connect(&redis, "cmp");
    let local = LocalLimiter::new();
    let mut rng = Lcg(7);
    // Short windows, so ~2 s of traffic crosses several of them.
    let templates = [
        rule("rl:{t}:w", Algorithm::SlidingWindow, 30, 400),
        rule("rl:{t}:l", Algorithm::SlidingLog, 25, 500),
        RuleCheck {
            shadow: true,
            ..rule("rl:{t}:sw", Algorithm::SlidingWindow, 15, 600)
        },
        RuleCheck {
            count_denied: true,
            ..rule("rl:{t}:cl", Algorithm::SlidingLog, 40, 450)
        },
    ];
    let (mut denied, mut admitted_count) = (0, 0);
    for _ in 0..400 {
        let mut checks = vec![clock_rule()];
        for t in &templates {
            if rng.below(3) > 0 {
                checks.push(RuleCheck {
                    cost: 1 + rng.below(3),
                    ..t.clone()
                });
            }
        }
        let from_redis = remote.decide(&checks);
        let now = remote.newest_score("rl:{t}:clock");
        let from_local = local.decide(&checks, now);
        assert_eq!(from_redis, from_local, "at {now} for {checks:?}");
        if from_redis.admitted {
            admitted_count += 1;
        } else {
            denied += 1;
        }
        // Bursts and pauses, so rules fill up, deny and recover.
        let pause = if rng.below(40) == 0 {
            150
        } else {
            rng.below(6)
        };
        thread::sleep(Duration::from_millis(pause));
    }
    assert!(
        denied > 50 && admitted_count > 50,
        "{denied} denied, {admitted_count} admitted"
    );
}

#[test]
fn concurrent_callers_admit_exactly_the_limit() {
    let redis = Redis::start();
    let window = window_with_room(&mut Remote::connect(&redis, "w"), 60_000);
    for (name, algorithm) in [
        ("log", Algorithm::SlidingLog),
        ("window", Algorithm::SlidingWindow),
    ] {
        let key = format!("rl:{{c}}:{name}");
        let handles: Vec<_> = (0..8)
            .map(|n| {
                let mut remote = Remote::connect(&redis, &format!("{name}{n}"));
                let checks = [rule(&key, algorithm, 500, window)];
                thread::spawn(move || admitted(&mut remote, &checks, 200))
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().expect("caller")).sum();
        assert_eq!(total, 500, "{name}: 1600 calls against a limit of 500");
    }
}

#[test]
fn sliding_log_admits_exactly_as_many_as_expired_at_the_window_edge() {
    let redis = Redis::start();
    let mut remote = Remote::connect(&redis, "edge");
    let checks = [rule("rl:{e}:log", Algorithm::SlidingLog, 5, 1_000)];
    assert_eq!(admitted(&mut remote, &checks, 2), 2);
    thread::sleep(Duration::from_millis(400));
    assert_eq!(admitted(&mut remote, &checks, 3), 3);
    let denied = remote.decide(&checks);
    assert!(!denied.admitted);
    let retry = denied.rules[0].retry_after_ms;
    assert!(
        (300..=600).contains(&retry),
        "first entries expire in ~600 ms, not {retry}"
    );
    thread::sleep(Duration::from_millis(retry + 20));
    assert_eq!(
        admitted(&mut remote, &checks, 10),
        2,
        "the 2 oldest expired, the 3 newest have ~380 ms left"
    );
}

#[test]
fn tighter_rule_wins_and_a_denied_request_consumes_from_neither() {
    let redis = Redis::start();
    let mut remote = Remote::connect(&redis, "two");
    let window = window_with_room(&mut remote, 10_000);
    let tight = rule("rl:{two}:tight", Algorithm::SlidingLog, 2, window);
    let loose = rule("rl:{two}:loose", Algorithm::SlidingWindow, 10, window);
    let both = [tight, loose];
    assert_eq!(admitted(&mut remote, &both, 5), 2);
    let d = remote.decide(&both);
    assert!(!d.admitted && !d.rules[0].allowed && d.rules[1].allowed);
    assert_eq!(d.rules[1].remaining, 8);
    assert_eq!(remote.int(&["ZCARD", "rl:{two}:tight"]), 2);
    assert_eq!(remote.int(&["HGET", "rl:{two}:loose", "c"]), 2);
}

#[test]
fn shadow_rule_never_denies_but_counts() {
    let redis = Redis::start();
    let mut remote = Remote::connect(&redis, "shadow");
    let shadow = RuleCheck {
        shadow: true,
        ..rule("rl:{s}:shadow", Algorithm::SlidingLog, 1, 60_000)
    };
    let checks = [
        shadow,
        rule("rl:{s}:enforced", Algorithm::SlidingLog, 10, 60_000),
    ];
    let decisions: Vec<Decision> = (0..3).map(|_| remote.decide(&checks)).collect();
    assert!(decisions.iter().all(|d| d.admitted));
    assert!(decisions[0].rules[0].allowed);
    assert!(!decisions[2].rules[0].allowed && decisions[2].rules[0].retry_after_ms > 0);
    assert_eq!(remote.int(&["ZCARD", "rl:{s}:shadow"]), 3);
}

#[test]
fn count_denied_counts_on_its_rule_only_and_uncounted_rules_write_nothing() {
    let redis = Redis::start();
    let mut remote = Remote::connect(&redis, "cd");
    let strict = RuleCheck {
        count_denied: true,
        ..rule("rl:{d}:strict", Algorithm::SlidingLog, 2, 60_000)
    };
    let plain = rule("rl:{d}:plain", Algorithm::SlidingLog, 100, 60_000);
    assert_eq!(admitted(&mut remote, &[strict, plain], 6), 2);
    // strict counted all 6, but a count_denied log keeps only its newest `limit` members:
    // hammering must not grow the sorted set (issue 9, item 6).
    assert_eq!(remote.int(&["ZCARD", "rl:{d}:strict"]), 2);
    assert_eq!(remote.int(&["ZCARD", "rl:{d}:plain"]), 2);

    let too_big = RuleCheck {
        cost: 4,
        ..rule("rl:{d}:big", Algorithm::SlidingWindow, 3, 60_000)
    };
    let d = remote.decide(&[
        too_big,
        rule("rl:{d}:fresh", Algorithm::SlidingLog, 5, 60_000),
    ]);
    assert!(!d.admitted);
    assert_eq!(
        d.rules[0].retry_after_ms, 60_000,
        "never admissible: back off one window"
    );
    assert_eq!(remote.int(&["EXISTS", "rl:{d}:big", "rl:{d}:fresh"]), 0);
}

#[test]
fn every_key_written_expires_within_two_windows() {
    let redis = Redis::start();
    let mut remote = Remote::connect(&redis, "ttl");
    let mut rng = Lcg(11);
    for i in 0..200u64 {
        let window = 1_000 * (1 + rng.below(5));
        let (algorithm, name) = if i % 2 == 0 {
            (Algorithm::SlidingWindow, "w")
        } else {
            (Algorithm::SlidingLog, "l")
        };
        let checks = [
            rule(
                &format!("rl:{{ttl}}:{window}:{name}{}", i % 7),
                algorithm,
                3,
                window,
            ),
            RuleCheck {
                count_denied: i % 3 == 0,
                ..rule(
                    &format!("rl:{{ttl}}:{window}:{name}cd{}", i % 5),
                    algorithm,
                    2,
                    window,
                )
            },
        ];
        remote.decide(&checks);
    }
    let keys = redis.all_keys().expect("SCAN");
    assert!(keys.len() >= 10, "{keys:?}");
    for key in keys {
        let window: i64 = key
            .split(':')
            .nth(2)
            .and_then(|w| w.parse().ok())
            .expect("window in key");
        let pttl = redis.pttl(&key).expect("PTTL");
        assert!(
            pttl > 0 && pttl <= 2 * window,
            "{key}: PTTL {pttl} for a {window} ms window"
        );
    }
}

#[test]
fn script_is_reloaded_after_script_flush() {
    let redis = Redis::start();
    let mut remote = Remote::connect(&redis, "flush");
    let checks = [rule("rl:{f}:k", Algorithm::SlidingWindow, 3, 60_000)];
    assert!(remote.decide(&checks).admitted);
    assert_eq!(
        redis.query(&["SCRIPT", "FLUSH"]).ok(),
        Some(Reply::Status("OK".into()))
    );
    let sha = remote.script.get_hash().to_string();
    match redis.query(&["EVALSHA", &sha, "0"]) {
        Ok(Reply::Error(e)) => assert!(e.starts_with("NOSCRIPT"), "{e}"),
        other => panic!("EVALSHA after SCRIPT FLUSH: {other:?}"),
    }
    let d = remote.decide(&checks);
    assert!(d.admitted);
    assert_eq!(d.rules[0].remaining, 1, "the counter survived the flush");
}

#[test]
fn malformed_arguments_are_an_error_reply() {
    let redis = Redis::start();
    let bad_calls: [&[&str]; 3] = [
        &["EVAL", SCRIPT, "1", "k", "1", "n"],
        &[
            "EVAL", SCRIPT, "1", "k", "1", "n", "3", "10", "1000", "1", "0", "0",
        ],
        &[
            "EVAL", SCRIPT, "1", "k", "1", "n", "1", "10", "0", "1", "0", "0",
        ],
    ];
    for call in bad_calls {
        match redis.query(call) {
            Ok(Reply::Error(e)) => assert!(e.contains("limit.lua"), "{e}"),
            other => panic!("{:?}: {other:?}", &call[2..]),
        }
    }
    assert_eq!(redis.all_keys().expect("SCAN"), Vec::<String>::new());
}
