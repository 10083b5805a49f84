//! Configuration: the TOML model, the issue type every section's compiler reports into, and
//! secrets read from the environment or files. Nothing here judges a value: this module
//! imports nothing of ours and is the ground floor the owners build on.
//!
//! Loading is two steps. Parsing turns the file into [`Config`] (serde, unknown fields denied;
//! values whose syntax is ours stay [`Lenient`] so one bad value does not hide the others);
//! then each section is compiled once by the module that owns it (`[server]` by the server,
//! `[admin]` by admin, `[log]` by observe, upstreams and routes by the proxy, `[store]` by the
//! store, `[auth]` by auth, `[rate_limit]` and the routes' rate limits by ratelimit; `setup`
//! runs them all). Every problem is reported with the path of the field it concerns, so one
//! `portcullis check` run shows every mistake in a file.

mod issue;
mod lenient;
mod model;
mod secret;
pub mod strength;

use std::path::{Path, PathBuf};

pub use issue::{Issue, Issues};
pub use lenient::{ByteSize, Dur, Lenient, Parse};
pub use model::*;
pub use secret::{read_secret, SecretError};

/// Why a config file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the model.
    #[error("{file}: {message}")]
    Parse {
        /// The file.
        file: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The file parsed but failed validation.
    #[error("{}", render_issues(file, issues))]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Every problem found.
        issues: Vec<Issue>,
    },
}

fn render_issues(file: &Path, issues: &[Issue]) -> String {
    let mut out = String::new();
    for (i, issue) in issues.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("{}: {issue}", file.display()));
    }
    out
}

/// Reads and parses a config file into the model. Nothing is judged here beyond TOML syntax
/// and the model's shape: each section's owner compiles it and reports its problems
/// (`setup::load` runs them all).
pub fn load(file: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    parse(&text).map_err(|message| ConfigError::Parse {
        file: file.to_path_buf(),
        message,
    })
}

/// Parses TOML text into the model without validating it.
pub fn parse(text: &str) -> Result<Config, String> {
    toml::from_str(text).map_err(|e| describe_parse_error(text, &e))
}

/// A parse error as line, column and message, without the source line `toml` would quote:
/// that line may hold a secret put inline by mistake (`password = "…"` under `[store]`), and
/// the error reaches `check` output and the log of a failed reload.
fn describe_parse_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end().replace('\n', "\n  ");
    let Some(before) = e.span().and_then(|span| text.get(..span.start)) else {
        return format!("TOML parse error: {message}");
    };
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("TOML parse error at line {line}, column {column}: {message}")
}

/// Checks the sections of a parsed config not yet compiled by their owners (server, admin,
/// log, upstreams, routes) and returns every problem found (empty when valid).
/// Longest lifetime of an API key (config `key_ttl`, admin `ttl`): keeps expiry arithmetic and
/// Redis `PEXPIRE` far from any overflow.
pub const MAX_KEY_TTL: std::time::Duration = std::time::Duration::from_secs(3650 * 86_400);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_the_place_but_never_quote_the_line() {
        let err = parse("[store]\nurl = \"redis://h\"\npassword = \"TopSecretPw1\"\n")
            .expect_err("unknown field");
        assert!(!err.contains("TopSecretPw1"), "{err}");
        assert!(
            err.contains("line 3, column 1") && err.contains("password"),
            "{err}"
        );
        let err = parse("[server]\nthreads = \"Tw0Secret\n").expect_err("unterminated string");
        assert!(
            !err.contains("Tw0Secret") && err.contains("line 2"),
            "{err}"
        );
    }

    #[test]
    fn unknown_fields_are_parse_errors_naming_the_field() {
        let err = parse("[server]\nlisten_on = [\"127.0.0.1:1\"]\n").expect_err("unknown field");
        assert!(err.contains("listen_on"), "{err}");
    }
}
