//! `[admin]`, compiled: where the admin service listens and the token that guards it, read
//! once per load.

use std::fmt;
use std::net::SocketAddr;

use crate::config::{read_secret, AdminConfig, Issues, SecretError};

/// The admin service's settings.
pub(crate) struct AdminSettings {
    /// Listen address.
    pub(crate) listen: SocketAddr,
    /// Bearer token of the mutating endpoints; none disables them.
    pub(crate) token: Option<String>,
}

/// The token never reaches a log line or a test failure.
impl fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminSettings")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

impl AdminSettings {
    /// Compiles `[admin]`, pushing every problem into `issues`; `None` when there was one.
    /// Off loopback, a token is required: the service would otherwise be open to anyone who
    /// can reach it.
    pub(crate) fn compile(a: &AdminConfig, issues: &mut Issues) -> Option<AdminSettings> {
        let listen = issues.value("admin.listen", &a.listen)?;
        let before = issues.len();
        if a.token_env.is_some() && a.token_file.is_some() {
            issues.push("admin", "give token_env or token_file, not both");
        }
        let from_file = a.token_file.as_deref().map(|f| read_secret(None, Some(f)));
        let from_env = a
            .token_env
            .as_deref()
            .map(|var| read_secret(Some(var), None));
        for (field, read) in [("token_file", &from_file), ("token_env", &from_env)] {
            if let Some(Err(e)) = read {
                issues.push(format!("admin.{field}"), e.to_string());
            }
        }
        let token = token_of(from_env, from_file);
        if !listen.ip().is_loopback() && token.is_none() {
            issues.push(
                "admin.listen",
                format!(
                    "{:?} is not a loopback address; the admin service refuses to listen there \
                     without a token (set token_env or token_file, with the variable or file present)",
                    a.listen.raw()
                ),
            );
        }
        (issues.len() == before).then_some(AdminSettings { listen, token })
    }
}

type Read = Option<Result<Option<String>, SecretError>>;

/// The token as [`read_secret`] gives it from both sources: the variable when it is set (an
/// empty one is no token), else the file.
fn token_of(from_env: Read, from_file: Read) -> Option<String> {
    match from_env {
        Some(Ok(Some(token))) => Some(token),
        Some(Err(_)) => None,
        Some(Ok(None)) | None => from_file.and_then(Result::ok).flatten(),
    }
}
