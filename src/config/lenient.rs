//! A config value that is parsed from a string but never fails deserialization.
//!
//! serde stops at the first error, which would hide every other mistake in a file. Values whose
//! syntax is ours to check (durations, addresses, CIDRs) are kept as their raw text plus the
//! parse result; the compiler of the section that owns one reports it with its path when it
//! did not parse (`Issues::value`) and keeps only the parsed value.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// A string-typed config value with its parse result.
#[derive(Clone)]
pub struct Lenient<T> {
    raw: String,
    parsed: Result<T, String>,
}

impl<T> Lenient<T> {
    /// The text as written in the file.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The parse error, if the text did not parse.
    pub fn error(&self) -> Option<&str> {
        self.parsed.as_ref().err().map(String::as_str)
    }

    /// The parsed value, if it parsed.
    pub fn ok(&self) -> Option<&T> {
        self.parsed.as_ref().ok()
    }
}

impl<T: Parse> Lenient<T> {
    /// Builds a value from text, as the deserializer would.
    pub fn new(raw: &str) -> Self {
        Lenient {
            raw: raw.to_string(),
            parsed: T::parse(raw),
        }
    }
}

/// How a lenient value is parsed from its text.
pub trait Parse: Sized {
    /// Parses the text, or says why it cannot.
    fn parse(raw: &str) -> Result<Self, String>;
}

impl<'de, T: Parse> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Ok(Lenient::new(&raw))
    }
}

impl<T> fmt::Debug for Lenient<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.raw)
    }
}

/// Values compare by what they mean ("1s" equals "1000ms"); unparsed ones by their text.
impl<T: PartialEq> PartialEq for Lenient<T> {
    fn eq(&self, other: &Self) -> bool {
        match (&self.parsed, &other.parsed) {
            (Ok(a), Ok(b)) => a == b,
            _ => self.raw == other.raw,
        }
    }
}

// === impl Parse ===

/// A duration written like "250ms", "30s", "1m"; zero is rejected where the model says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub std::time::Duration);

impl Parse for Dur {
    fn parse(raw: &str) -> Result<Self, String> {
        humantime::parse_duration(raw.trim()).map(Dur).map_err(|e| {
            format!("invalid duration {raw:?} ({e}); write e.g. \"250ms\", \"30s\", \"1m\"")
        })
    }
}

impl Parse for std::net::SocketAddr {
    fn parse(raw: &str) -> Result<Self, String> {
        std::net::SocketAddr::from_str(raw.trim())
            .map_err(|_| format!("invalid address {raw:?}; write ip:port, e.g. \"127.0.0.1:8080\""))
    }
}

impl Parse for ipnet::IpNet {
    fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        ipnet::IpNet::from_str(raw)
            .or_else(|_| std::net::IpAddr::from_str(raw).map(ipnet::IpNet::from))
            .map_err(|_| {
                format!("invalid network {raw:?}; write a CIDR like \"10.0.0.0/8\" or an ip")
            })
    }
}

/// A byte size written like "10MiB", "512KiB", "1000" (bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl Parse for ByteSize {
    fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("invalid size {raw:?}; write e.g. \"10MiB\", \"512KiB\""))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "KB" | "K" => 1024,
            "MiB" | "MB" | "M" => 1024 * 1024,
            "GiB" | "GB" | "G" => 1024 * 1024 * 1024,
            other => {
                return Err(format!(
                    "invalid size unit {other:?} in {raw:?}; use B, KiB, MiB or GiB"
                ))
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("size {raw:?} is too large"))
    }
}
