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

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(toml: &str) -> AdminConfig {
        toml::from_str(toml).expect("test [admin] parses")
    }

    fn compile(a: &AdminConfig) -> (Option<AdminSettings>, Vec<String>) {
        let mut issues = Issues::default();
        let settings = AdminSettings::compile(a, &mut issues);
        let found = issues.into_vec().iter().map(|i| i.to_string()).collect();
        (settings, found)
    }

    #[test]
    fn the_token_is_read_once_here_and_never_shown() {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        std::io::Write::write_all(&mut file, b"  adm1n-t0ken-value\n").expect("write token");
        let a = admin(&format!(
            "listen = \"0.0.0.0:9901\"\ntoken_file = {:?}\n",
            file.path().display().to_string()
        ));
        let (settings, found) = compile(&a);
        assert_eq!(found, Vec::<String>::new());
        let settings = settings.expect("compiles");
        assert_eq!(settings.token.as_deref(), Some("adm1n-t0ken-value"));
        assert_eq!(settings.listen, "0.0.0.0:9901".parse().expect("addr"));
        assert!(!format!("{settings:?}").contains("adm1n"), "{settings:?}");
    }

    #[test]
    fn off_loopback_without_a_token_and_two_sources_are_refused() {
        let (settings, found) = compile(&admin("listen = \"0.0.0.0:9901\"\n"));
        assert!(settings.is_none());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].starts_with("admin.listen: \"0.0.0.0:9901\" is not a loopback address"),
            "{found:#?}"
        );
        let (_, found) = compile(&admin(
            "token_env = \"PORTCULLIS_TEST_UNSET_ADMIN_TOKEN\"\ntoken_file = \"/nonexistent/t\"\n",
        ));
        assert_eq!(found[0], "admin: give token_env or token_file, not both");
        assert!(
            found[1].starts_with("admin.token_file: cannot read secret file"),
            "{found:#?}"
        );
    }

    #[test]
    fn a_bad_address_is_the_only_issue() {
        let (settings, found) = compile(&admin(
            "listen = \"nowhere\"\ntoken_file = \"/nonexistent/t\"\n",
        ));
        assert!(settings.is_none());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].starts_with("admin.listen: invalid address"),
            "{found:#?}"
        );
    }
}
