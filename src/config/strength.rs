//! Conservative strength estimates for secrets declared in the config, and the numeric range
//! the rate-limit script computes exactly in.

/// Least estimated entropy of a config-declared API key (NIST SP 800-63B's floor for
/// memorized-secret-free authenticators; what a 22-character base64url key carries).
pub const MIN_API_KEY_BITS: f64 = 128.0;

/// Least length in bytes of an HMAC secret for JWTs: 256 bits, RFC 7518 §3.2 (the size of the
/// HS256 hash; HS384/HS512 should use more).
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

/// Largest integer Lua (doubles) and the script's arithmetic handle exactly: 2^53.
pub const MAX_EXACT_SCRIPT_INT: u128 = 1 << 53;

/// An upper estimate of the entropy of `secret`, in bits: its length times log2 of the size of
/// the alphabet its characters are drawn from. The alphabet is the union of the classes the
/// characters fall in: decimal digits only count log2(10) bits per character, hex digits only
/// 4, otherwise
/// digits (10), lower case (26), upper case (26), `-` and `_` (2, base64url) and anything else
/// (the rest of printable ASCII, 32) add their sizes. Repetition is not detected: this rejects
/// short keys and small alphabets, it cannot prove a key random.
pub fn estimated_entropy_bits(secret: &str) -> f64 {
    let len = secret.chars().count() as f64;
    if secret.is_empty() {
        return 0.0;
    }
    if secret.chars().all(|c| c.is_ascii_digit()) {
        return len * 10f64.log2();
    }
    if secret.chars().all(|c| c.is_ascii_hexdigit()) {
        return len * 4.0;
    }
    let has = |f: fn(char) -> bool| secret.chars().any(f);
    let mut alphabet = 0u32;
    for (present, size) in [
        (has(|c| c.is_ascii_digit()), 10),
        (has(|c| c.is_ascii_lowercase()), 26),
        (has(|c| c.is_ascii_uppercase()), 26),
        (has(|c| c == '-' || c == '_'), 2),
        (
            has(|c| !c.is_ascii_alphanumeric() && c != '-' && c != '_'),
            32,
        ),
    ] {
        if present {
            alphabet += size;
        }
    }
    len * f64::from(alphabet.max(2)).log2()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_style_keys_pass_and_short_or_narrow_ones_do_not() {
        // 22 base64url characters: 22 × log2(64) = 132 bits.
        assert!(estimated_entropy_bits("aB3dE5fG7hJ9kL1mN2pQ4r") >= MIN_API_KEY_BITS);
        // 32 hex digits: exactly 128 bits.
        assert!(estimated_entropy_bits("0123456789abcdef0123456789abcdef") >= MIN_API_KEY_BITS);
        // 31 hex digits: 124 bits.
        assert!(estimated_entropy_bits("0123456789abcdef0123456789abcde") < MIN_API_KEY_BITS);
        // Lower case only: 4.7 bits a character, 27 are not enough.
        assert!(estimated_entropy_bits("abcdefghijklmnopqrstuvwxyza") < MIN_API_KEY_BITS);
        assert!(estimated_entropy_bits("short-key") < MIN_API_KEY_BITS);
        assert_eq!(estimated_entropy_bits(""), 0.0);
        // Digits only count 3.3 bits each.
        assert!(estimated_entropy_bits(&"7".repeat(38)) < MIN_API_KEY_BITS);
    }
}
