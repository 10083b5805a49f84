//! Freshness lifetime (RFC 9111 §4.2.1) and age (§4.2.3) of a response, from its headers and
//! the times the gateway sent the request and received the response.
//!
//! Only the explicit sources count here (`s-maxage`, `max-age`, `Expires − Date`); the route's
//! default TTL, override and cap are the policy's business. No heuristic freshness (§4.2.2).

use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, HeaderName, AGE, DATE, EXPIRES};

use super::directives::{parse_delta_seconds, trim, Delta, ResponseDirectives, DELTA_SECONDS_MAX};

/// When the gateway sent the request upstream and when the response's header arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseTiming {
    /// `request_time` of §4.2.3: just before the request went upstream.
    pub request_time: SystemTime,
    /// `response_time` of §4.2.3: when the response header was received.
    pub response_time: SystemTime,
}

/// Where a response's freshness lifetime came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifetimeSource {
    /// `s-maxage` (§5.2.2.10).
    SMaxAge,
    /// `max-age` (§5.2.2.1).
    MaxAge,
    /// `Expires` minus `Date` (§5.3).
    Expires,
    /// The route's (or `[cache]`'s) default TTL: the response gave none.
    DefaultTtl,
    /// The route's TTL override replaced what the response gave.
    Override,
    /// Unqualified `no-cache`: stored, but revalidated before every reuse.
    NoCache,
}

/// The largest lifetime or age the cache represents (§1.2.2).
pub(crate) const LONGEST: Duration = Duration::from_secs(DELTA_SECONDS_MAX as u64);

/// The explicit freshness lifetime of a response (§4.2.1, first match wins): `s-maxage`, then
/// `max-age`, then `Expires − Date`; `None` when the response gives none. An invalid value
/// gives a lifetime of 0, i.e. stale (§4.2.1, §5.3: an invalid `Expires`, such as "0", is in
/// the past; differing repeated `Expires` lines are read as stale too).
pub fn explicit_lifetime(
    directives: &ResponseDirectives,
    headers: &HeaderMap,
    response_time: SystemTime,
) -> Option<(Duration, LifetimeSource)> {
    if let Some(delta) = directives.s_maxage {
        return Some((delta_duration(delta), LifetimeSource::SMaxAge));
    }
    if let Some(delta) = directives.max_age {
        return Some((delta_duration(delta), LifetimeSource::MaxAge));
    }
    let expires = single_value(headers, &EXPIRES)?;
    let lifetime = match expires.and_then(parse_http_date) {
        Some(expires) => {
            // Date, or the receipt time without one (§4.2.1, RFC 9110 §6.6.1); comparing two
            // origin-clock times makes the lifetime immune to clock skew.
            let date = date_value(headers).unwrap_or(response_time);
            expires.duration_since(date).unwrap_or(Duration::ZERO)
        }
        None => Duration::ZERO,
    };
    Some((lifetime.min(LONGEST), LifetimeSource::Expires))
}

/// `corrected_initial_age` of §4.2.3: how old the response already was when it arrived, from
/// the upstream's `Age`, its `Date` and the round trip. Without a `Date` the receipt time
/// stands in for it, so the apparent age is 0 and only `Age` plus the round trip count.
pub fn initial_age(headers: &HeaderMap, timing: &ResponseTiming) -> Duration {
    let date = date_value(headers).unwrap_or(timing.response_time);
    let apparent_age = timing
        .response_time
        .duration_since(date)
        .unwrap_or(Duration::ZERO);
    let response_delay = timing
        .response_time
        .duration_since(timing.request_time)
        .unwrap_or(Duration::ZERO);
    let age_value = Duration::from_secs(u64::from(age_value(headers).unwrap_or(0)));
    let corrected_age_value = age_value.saturating_add(response_delay);
    apparent_age.max(corrected_age_value).min(LONGEST)
}

/// The `Age` header (§5.1): the first member of a list is used, an invalid value is ignored.
pub fn age_value(headers: &HeaderMap) -> Option<u32> {
    let first = headers.get(AGE)?.as_bytes();
    let member = first.split(|&b| b == b',').next().unwrap_or(first);
    parse_delta_seconds(trim(member))
}

/// The `Date` header as a time, if there is exactly one distinct, valid value.
fn date_value(headers: &HeaderMap) -> Option<SystemTime> {
    single_value(headers, &DATE)?.and_then(parse_http_date)
}

/// `None` when the header is absent, `Some(None)` when its lines disagree, else its value.
fn single_value<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<Option<&'h [u8]>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?.as_bytes();
    if values.any(|other| other.as_bytes() != first) {
        return Some(None);
    }
    Some(Some(first))
}

/// An HTTP-date in any of the three forms of RFC 9110 §5.6.7.
fn parse_http_date(value: &[u8]) -> Option<SystemTime> {
    let text = std::str::from_utf8(trim(value)).ok()?;
    httpdate::parse_http_date(text).ok()
}

fn delta_duration(delta: Delta) -> Duration {
    Duration::from_secs(u64::from(delta.seconds_or_zero()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::time::UNIX_EPOCH;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn date(secs: u64) -> HeaderValue {
        HeaderValue::from_str(&httpdate::fmt_http_date(at(secs))).unwrap()
    }

    fn headers(pairs: &[(HeaderName, HeaderValue)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(n.clone(), v.clone());
        }
        h
    }

    fn lifetime(cc: &str, h: &HeaderMap) -> Option<(Duration, LifetimeSource)> {
        let d = ResponseDirectives::from_values([cc.as_bytes()]);
        explicit_lifetime(&d, h, at(1_000_000))
    }

    const T: u64 = 1_700_000_000;

    // RFC 9111 §4.2.1: s-maxage wins over max-age and Expires in a shared cache.
    #[test]
    fn s_maxage_wins_over_max_age_and_expires() {
        let h = headers(&[(EXPIRES, date(T + 999)), (DATE, date(T))]);
        assert_eq!(
            lifetime("max-age=60, s-maxage=30", &h),
            Some((Duration::from_secs(30), LifetimeSource::SMaxAge))
        );
    }

    // RFC 9111 §4.2.1, §5.3: max-age wins over Expires.
    #[test]
    fn max_age_wins_over_expires() {
        let h = headers(&[(EXPIRES, date(T + 999)), (DATE, date(T))]);
        assert_eq!(
            lifetime("max-age=60", &h),
            Some((Duration::from_secs(60), LifetimeSource::MaxAge))
        );
    }

    // RFC 9111 §4.2.1: an invalid s-maxage is not skipped in favour of max-age; it is stale.
    #[test]
    fn invalid_s_maxage_means_stale() {
        let h = HeaderMap::new();
        assert_eq!(
            lifetime("s-maxage=bad, max-age=60", &h),
            Some((Duration::ZERO, LifetimeSource::SMaxAge))
        );
    }

    // RFC 9111 §4.2.1: Expires minus Date, both on the origin's clock.
    #[test]
    fn expires_minus_date() {
        let h = headers(&[(EXPIRES, date(T + 120)), (DATE, date(T))]);
        assert_eq!(
            lifetime("public", &h),
            Some((Duration::from_secs(120), LifetimeSource::Expires))
        );
    }

    // RFC 9111 §4.2.1: without Date, Expires is measured from the receipt time.
    #[test]
    fn expires_without_date_uses_response_time() {
        let h = headers(&[(EXPIRES, date(1_000_090))]);
        assert_eq!(
            lifetime("", &h),
            Some((Duration::from_secs(90), LifetimeSource::Expires))
        );
    }

    // RFC 9111 §5.3: an invalid Expires (notably "0") means already expired; Expires < Date too.
    #[test]
    fn invalid_or_past_expires_is_stale() {
        for bad in ["0", "tomorrow", "-1"] {
            let h = headers(&[(EXPIRES, HeaderValue::from_static(bad)), (DATE, date(T))]);
            assert_eq!(
                lifetime("", &h),
                Some((Duration::ZERO, LifetimeSource::Expires)),
                "{bad}"
            );
        }
        let h = headers(&[(EXPIRES, date(T - 10)), (DATE, date(T))]);
        assert_eq!(
            lifetime("", &h),
            Some((Duration::ZERO, LifetimeSource::Expires))
        );
    }

    // RFC 9111 §4.2.1: two different Expires lines → consider the response stale.
    #[test]
    fn conflicting_expires_lines_are_stale() {
        let h = headers(&[
            (EXPIRES, date(T + 60)),
            (EXPIRES, date(T + 120)),
            (DATE, date(T)),
        ]);
        assert_eq!(
            lifetime("", &h),
            Some((Duration::ZERO, LifetimeSource::Expires))
        );
    }

    // RFC 9110 §5.6.7: the obsolete RFC 850 and asctime date forms are accepted.
    #[test]
    fn obsolete_date_forms_are_accepted() {
        let h = headers(&[
            (
                EXPIRES,
                HeaderValue::from_static("Sunday, 06-Nov-94 08:49:37 GMT"),
            ),
            (DATE, HeaderValue::from_static("Sun Nov  6 08:48:37 1994")),
        ]);
        assert_eq!(
            lifetime("", &h),
            Some((Duration::from_secs(60), LifetimeSource::Expires))
        );
    }

    // RFC 9111 §4.2.1: no explicit freshness → None (the policy decides on a default).
    #[test]
    fn no_explicit_freshness() {
        assert_eq!(lifetime("public", &HeaderMap::new()), None);
    }

    // RFC 9111 §1.2.2: a huge Expires − Date clamps to 2^31 seconds.
    #[test]
    fn huge_expires_clamps() {
        let h = headers(&[
            (
                EXPIRES,
                HeaderValue::from_static("Fri, 31 Dec 9999 23:59:59 GMT"),
            ),
            (DATE, date(0)),
        ]);
        assert_eq!(lifetime("", &h), Some((LONGEST, LifetimeSource::Expires)));
    }

    // RFC 9111 §4.2.3: corrected_initial_age = max(apparent_age, age_value + response_delay).
    #[test]
    fn initial_age_takes_the_larger_correction() {
        let timing = ResponseTiming {
            request_time: at(T - 2),
            response_time: at(T),
        };
        // Upstream Age dominates: 30 + 2 s round trip.
        let h = headers(&[(AGE, HeaderValue::from_static("30")), (DATE, date(T - 5))]);
        assert_eq!(initial_age(&h, &timing), Duration::from_secs(32));
        // Apparent age (Date 100 s ago) dominates.
        let h = headers(&[(AGE, HeaderValue::from_static("3")), (DATE, date(T - 100))]);
        assert_eq!(initial_age(&h, &timing), Duration::from_secs(100));
    }

    // RFC 9111 §4.2.3 with RFC 9110 §6.6.1: without Date, the apparent age is 0.
    #[test]
    fn initial_age_without_date_counts_age_and_round_trip() {
        let timing = ResponseTiming {
            request_time: at(T - 1),
            response_time: at(T),
        };
        let h = headers(&[(AGE, HeaderValue::from_static("10"))]);
        assert_eq!(initial_age(&h, &timing), Duration::from_secs(11));
        assert_eq!(
            initial_age(&HeaderMap::new(), &timing),
            Duration::from_secs(1)
        );
    }

    // RFC 9111 §4.2.3: a Date in the future (clock skew) gives no negative age.
    #[test]
    fn future_date_gives_zero_apparent_age() {
        let timing = ResponseTiming {
            request_time: at(T),
            response_time: at(T),
        };
        let h = headers(&[(DATE, date(T + 500))]);
        assert_eq!(initial_age(&h, &timing), Duration::ZERO);
    }

    // RFC 9111 §5.1: the first member of a list-valued Age is used; an invalid Age is ignored.
    #[test]
    fn age_header_rules() {
        let h = headers(&[(AGE, HeaderValue::from_static("7, 100"))]);
        assert_eq!(age_value(&h), Some(7));
        let h = headers(&[(AGE, HeaderValue::from_static("soon"))]);
        assert_eq!(age_value(&h), None);
        let h = headers(&[(AGE, HeaderValue::from_static("99999999999"))]);
        assert_eq!(age_value(&h), Some(DELTA_SECONDS_MAX));
    }
}
