//! The Redis backend's side of a rate-limit decision: `scripts/limit.lua` decides every rule of
//! a request atomically in one `EVALSHA` round trip, on Redis' clock. This module lays out its
//! KEYS and ARGV, makes each call's sliding-log nonce and reads the reply;
//! [`LocalCounters`](super::LocalCounters) implements the same math in process.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Algorithm, Decision, RuleCheck, RuleOutcome};

/// The Lua script (its header documents KEYS, ARGV and the reply).
pub const SCRIPT: &str = include_str!("../scripts/limit.lua");

/// ARGV entries per rule after the two leading ones (n, nonce).
const ARGS_PER_RULE: usize = 6;
/// Reply integers per rule after the leading `admitted`.
const REPLY_PER_RULE: usize = 4;

/// The script and what a call of it needs besides the checks: a nonce unique per call, made of
/// a random per-process prefix and a sequence number (no clock, no lock).
pub(crate) struct LimitScript {
    script: redis::Script,
    nonce_prefix: u64,
    nonce_seq: AtomicU64,
}

impl LimitScript {
    pub(crate) fn new() -> LimitScript {
        LimitScript {
            script: redis::Script::new(SCRIPT),
            nonce_prefix: fastrand::u64(..),
            nonce_seq: AtomicU64::new(0),
        }
    }

    /// The `EVALSHA` call (loading the script on NOSCRIPT) that decides `checks`.
    pub(crate) fn invocation(&self, checks: &[RuleCheck]) -> redis::ScriptInvocation<'_> {
        let nonce = format!(
            "{:x}.{:x}",
            self.nonce_prefix,
            self.nonce_seq.fetch_add(1, Ordering::Relaxed)
        );
        let (keys, args) = script_args(checks, &nonce);
        let mut call = self.script.prepare_invoke();
        for k in &keys {
            call.key(k);
        }
        for a in &args {
            call.arg(a);
        }
        call
    }
}

/// The script's code for an algorithm.
fn algorithm_code(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::SlidingWindow => "1",
        Algorithm::SlidingLog => "2",
    }
}

fn flag(on: bool) -> &'static str {
    if on {
        "1"
    } else {
        "0"
    }
}

/// The script's KEYS (one counter key per rule, in order) and ARGV (`n`, `nonce`, then
/// algorithm, limit, window_ms, cost, shadow, count_denied per rule).
///
/// `nonce` must be unique per call (it keeps sliding-log members of concurrent calls apart);
/// all keys of one call must live in one hash slot on a cluster.
pub fn script_args(checks: &[RuleCheck], nonce: &str) -> (Vec<String>, Vec<String>) {
    let keys = checks.iter().map(|c| c.key.clone()).collect();
    let mut argv = Vec::with_capacity(2 + ARGS_PER_RULE * checks.len());
    argv.push(checks.len().to_string());
    argv.push(nonce.to_string());
    for c in checks {
        argv.push(algorithm_code(c.algorithm).to_string());
        argv.push(c.limit.to_string());
        argv.push(c.window_ms.to_string());
        argv.push(c.cost.to_string());
        argv.push(flag(c.shadow).to_string());
        argv.push(flag(c.count_denied).to_string());
    }
    (keys, argv)
}

/// Reads the script's reply for a call of `rules` rules: `admitted`, then `allowed`,
/// `remaining`, `reset_ms`, `retry_after_ms` per rule.
///
/// Strict: a reply of another length, a flag other than 0/1 or a negative number is an error
/// (a script of another version, or a key holding something else), never a guess.
pub fn parse_reply(reply: &[i64], rules: usize) -> Result<Decision, String> {
    let expected = 1 + REPLY_PER_RULE * rules;
    if reply.len() != expected {
        return Err(format!(
            "rate-limit script replied {} integers, expected {expected} for {rules} rules",
            reply.len()
        ));
    }
    let admitted = parse_flag(reply[0], "admitted")?;
    let rules = reply[1..]
        .chunks_exact(REPLY_PER_RULE)
        .map(parse_outcome)
        .collect::<Result<_, _>>()?;
    Ok(Decision { admitted, rules })
}

fn parse_outcome(fields: &[i64]) -> Result<RuleOutcome, String> {
    let [allowed, remaining, reset_ms, retry_after_ms] = fields else {
        return Err(format!(
            "rate-limit rule reply of {} integers",
            fields.len()
        ));
    };
    Ok(RuleOutcome {
        allowed: parse_flag(*allowed, "allowed")?,
        remaining: parse_count(*remaining, "remaining")?,
        reset_ms: parse_count(*reset_ms, "reset_ms")?,
        retry_after_ms: parse_count(*retry_after_ms, "retry_after_ms")?,
    })
}

fn parse_flag(value: i64, what: &str) -> Result<bool, String> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(format!(
            "rate-limit script replied {what} = {other}, expected 0 or 1"
        )),
    }
}

fn parse_count(value: i64, what: &str) -> Result<u64, String> {
    u64::try_from(value)
        .map_err(|_| format!("rate-limit script replied {what} = {value}, expected >= 0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(key: &str, algorithm: Algorithm, shadow: bool, count_denied: bool) -> RuleCheck {
        RuleCheck {
            key: key.to_string(),
            algorithm,
            limit: 10,
            window_ms: 60_000,
            cost: 2,
            shadow,
            count_denied,
        }
    }

    #[test]
    fn args_follow_the_script_layout() {
        let checks = [
            check("rl:{r}:a", Algorithm::SlidingWindow, false, true),
            check("rl:{r}:b", Algorithm::SlidingLog, true, false),
        ];
        let (keys, argv) = script_args(&checks, "n0nce");
        assert_eq!(keys, ["rl:{r}:a", "rl:{r}:b"]);
        assert_eq!(
            argv,
            ["2", "n0nce", "1", "10", "60000", "2", "0", "1", "2", "10", "60000", "2", "1", "0"]
        );
    }

    #[test]
    fn reply_is_read_rule_by_rule() {
        let decision = parse_reply(&[0, 1, 3, 1000, 0, 0, 0, 2000, 750], 2).expect("valid reply");
        assert!(!decision.admitted);
        assert_eq!(
            decision.rules,
            [
                RuleOutcome {
                    allowed: true,
                    remaining: 3,
                    reset_ms: 1000,
                    retry_after_ms: 0
                },
                RuleOutcome {
                    allowed: false,
                    remaining: 0,
                    reset_ms: 2000,
                    retry_after_ms: 750
                },
            ]
        );
    }

    #[test]
    fn malformed_replies_are_errors() {
        assert!(parse_reply(&[], 0).is_err());
        assert!(parse_reply(&[1], 0).is_ok());
        assert!(parse_reply(&[1, 1, 0, 0], 1).is_err());
        assert!(parse_reply(&[1, 1, 0, 0, 0, 1], 1).is_err());
        assert!(parse_reply(&[2, 1, 0, 0, 0], 1).is_err());
        assert!(parse_reply(&[1, 1, -1, 0, 0], 1).is_err());
        assert!(parse_reply(&[1, 1, 0, 0, 0], 2).is_err());
    }

    #[test]
    fn script_header_documents_its_interface() {
        let header: String = SCRIPT.lines().take_while(|l| l.starts_with("--")).collect();
        for word in ["KEYS[i]", "ARGV[1]", "ARGV[2]", "Returns"] {
            assert!(header.contains(word), "script header lacks {word}");
        }
    }
}
