//! `[store]`, compiled once per load: the URL's scheme and that it holds no password, the
//! password read from its variable or file, the TLS files read and checked, the key prefix and
//! the deadlines. Every problem is reported with its path in that one pass; the store is then
//! built from these settings and reads nothing itself.

use std::time::Duration;

use crate::config::{read_secret, Issues, StoreConfig};

/// First line of an unencrypted PKCS#8 PEM private key, the only kind `store.tls_key_file`
/// takes (native-tls refuses the others).
const PKCS8_KEY_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";

/// `[store]`, compiled.
#[derive(Clone)]
pub struct StoreSettings {
    /// `redis://…` or `rediss://…`, without a password.
    pub(crate) url: String,
    /// ACL user name.
    pub(crate) username: Option<String>,
    /// The password, read from `password_env` or `password_file`.
    pub(crate) password: Option<String>,
    /// Prefix of every key.
    pub(crate) prefix: String,
    /// Deadline of one operation.
    pub(crate) operation_timeout: Duration,
    /// Deadline to connect.
    pub(crate) connect_timeout: Duration,
    /// The TLS files' contents, when any is configured (`rediss://` only).
    pub(crate) tls: Option<StoreTls>,
}

/// The contents of the TLS files of `[store]`, read once and checked.
#[derive(Clone)]
pub(crate) struct StoreTls {
    /// `tls_ca_file`: PEM CA certificates that verify the server.
    pub(crate) root_cert: Option<Vec<u8>>,
    /// `tls_cert_file` and `tls_key_file` (from its PKCS#8 header on).
    pub(crate) client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for StoreSettings {
    /// Never the password nor a key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSettings")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl StoreSettings {
    /// Compiles `[store]`; `None` when anything is wrong (every problem is in `issues`).
    pub fn compile(s: &StoreConfig, issues: &mut Issues) -> Option<StoreSettings> {
        let before = issues.len();
        let url = s.url.trim();
        let scheme = url.split_once("://").map(|(scheme, _)| scheme);
        check_url(url, issues);
        let password = compile_password(s, issues);
        if s.prefix.is_empty() || s.prefix.contains(['{', '}', ' ']) {
            issues.push(
                "store.prefix",
                "must be non-empty, without braces or spaces",
            );
        }
        let operation_timeout = issues.positive("store.operation_timeout", &s.operation_timeout);
        let connect_timeout = issues.positive("store.connect_timeout", &s.connect_timeout);
        let tls = compile_tls(s, scheme, issues);
        if issues.len() != before {
            return None;
        }
        Some(StoreSettings {
            url: s.url.clone(),
            username: s.username.clone(),
            password,
            prefix: s.prefix.clone(),
            operation_timeout: operation_timeout?,
            connect_timeout: connect_timeout?,
            tls,
        })
    }
}

/// A `redis://` or `rediss://` URL without a password. Messages never echo the password.
fn check_url(url: &str, issues: &mut Issues) {
    match url.split_once("://") {
        Some(("redis" | "rediss", rest)) => {
            // The last `@` anywhere: a password may itself hold `/` (or `@`).
            if let Some((userinfo, _)) = rest.rsplit_once('@') {
                if userinfo.contains(':') {
                    issues.push(
                        "store.url",
                        "must not contain a password; use password_env or password_file",
                    );
                }
            }
        }
        _ => issues.push(
            "store.url",
            format!(
                "{:?} is not a redis:// or rediss:// URL",
                without_userinfo(url)
            ),
        ),
    }
}

/// The password from `password_env` or `password_file` (one of them), read once.
fn compile_password(s: &StoreConfig, issues: &mut Issues) -> Option<String> {
    if s.password_env.is_some() && s.password_file.is_some() {
        issues.push("store", "give password_env or password_file, not both");
    }
    let mut password = None;
    if let Some(var) = &s.password_env {
        match read_secret(Some(var), None) {
            Ok(Some(p)) => password = Some(p),
            Ok(None) => issues.push(
                "store.password_env",
                format!("environment variable {var} is not set"),
            ),
            Err(e) => issues.push("store.password_env", e.to_string()),
        }
    }
    if let Some(file) = &s.password_file {
        match read_secret(None, Some(file)) {
            Ok(p) => password = password.or(p),
            Err(e) => issues.push("store.password_file", e.to_string()),
        }
    }
    password
}

/// `tls_ca_file`, `tls_cert_file`, `tls_key_file`: `rediss://` only, cert and key together,
/// every file read once, readable and of the right kind. Messages never quote a file's content.
fn compile_tls(s: &StoreConfig, scheme: Option<&str>, issues: &mut Issues) -> Option<StoreTls> {
    let fields = [
        ("tls_ca_file", &s.tls_ca_file),
        ("tls_cert_file", &s.tls_cert_file),
        ("tls_key_file", &s.tls_key_file),
    ];
    if scheme == Some("redis") {
        for (field, value) in fields {
            if value.is_some() {
                issues.push(
                    format!("store.{field}"),
                    "only with a rediss:// url (TLS); this url is redis://",
                );
            }
        }
    }
    // redis-rs skips both the CA and the client certificate for `#insecure` URLs; a config
    // naming them would silently not use them.
    if scheme == Some("rediss") && s.url.contains("#insecure") {
        for (field, value) in fields {
            if value.is_some() {
                issues.push(
                    format!("store.{field}"),
                    "is ignored with an #insecure url; remove one of the two",
                );
            }
        }
    }
    match (&s.tls_cert_file, &s.tls_key_file) {
        (Some(_), None) => issues.push(
            "store.tls_cert_file",
            "needs tls_key_file (the client certificate's private key)",
        ),
        (None, Some(_)) => issues.push(
            "store.tls_key_file",
            "needs tls_cert_file (the client certificate)",
        ),
        _ => {}
    }
    let mut certificates = |field: &str, file: &Option<String>| {
        let file = file.as_deref()?;
        read_certificates(file)
            .map_err(|reason| issues.push(format!("store.{field}"), reason))
            .ok()
    };
    let root_cert = certificates("tls_ca_file", &s.tls_ca_file);
    let client_cert = certificates("tls_cert_file", &s.tls_cert_file);
    let client_key = s.tls_key_file.as_deref().and_then(|file| {
        read_pkcs8_key(file)
            .map_err(|reason| issues.push("store.tls_key_file", reason))
            .ok()
    });
    if root_cert.is_none() && client_cert.is_none() && client_key.is_none() {
        return None;
    }
    Some(StoreTls {
        root_cert,
        client: client_cert.zip(client_key),
    })
}

/// A PEM bundle holding at least one certificate, as its bytes.
fn read_certificates(file: &str) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(file).map_err(|e| format!("cannot read {file:?}: {e}"))?;
    let certs = pingora::tls::x509::X509::stack_from_pem(&pem)
        .map_err(|e| format!("{file:?} is not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{file:?} holds no certificate"));
    }
    Ok(pem)
}

/// An unencrypted PKCS#8 PEM key, from its header on: native-tls takes a key only when the PEM
/// starts with it, so anything before (comments, blank lines) is dropped.
fn read_pkcs8_key(file: &str) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(file).map_err(|e| format!("cannot read {file:?}: {e}"))?;
    let start = pem
        .windows(PKCS8_KEY_BEGIN.len())
        .position(|w| w == PKCS8_KEY_BEGIN.as_bytes())
        .ok_or_else(|| {
            format!(
                "{file:?} is not an unencrypted PKCS#8 PEM key (\"{PKCS8_KEY_BEGIN}\"); \
                 convert it with `openssl pkcs8 -topk8 -nocrypt`"
            )
        })?;
    Ok(pem[start..].to_vec())
}

/// A URL with everything before its last `@` (user and password) masked, so an issue about
/// the URL never echoes a password. The last `@` anywhere counts, since a password may hold
/// `/` or `@` itself; masking too much of an odd URL is the safe side.
fn without_userinfo(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    match rest.rfind('@') {
        Some(at) if scheme.is_empty() => format!("***{}", &rest[at..]),
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    /// A self-signed certificate and its PKCS#8 key, made by the `openssl` command and written
    /// as `cert.pem` and `key.pem` in `dir`.
    fn write_cert_and_key(dir: &Path) -> (String, String) {
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        let status = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ed25519", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=test", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("the openssl command is needed (Debian package openssl)");
        assert!(status.success(), "openssl req failed");
        let text = |p: PathBuf| p.to_str().expect("utf-8 path").to_string();
        (text(cert), text(key))
    }

    fn store_issues(url: &str, tls: &str) -> Vec<String> {
        let config: StoreConfig =
            toml::from_str(&format!("url = \"{url}\"\n{tls}\n")).expect("test section parses");
        let mut issues = Issues::default();
        let compiled = StoreSettings::compile(&config, &mut issues);
        let found: Vec<String> = issues.into_vec().iter().map(|i| i.to_string()).collect();
        assert_eq!(compiled.is_none(), !found.is_empty(), "{found:#?}");
        found
    }

    #[test]
    fn store_url_issues_never_echo_a_password() {
        for url in [
            "http://user:PWSECRET1@127.0.0.1:6379",
            "user:PWSECRET1@127.0.0.1:6379",
            "redis://user:PWSECRET1@127.0.0.1:6379",
            "redis://user:PW/SECRET1@127.0.0.1:6379",
        ] {
            let found = store_issues(url, "");
            assert!(!found.is_empty(), "{url}: no issue");
            for issue in &found {
                assert!(
                    !issue.contains("PWSECRET1") && !issue.contains("SECRET1"),
                    "{url}: {issue}"
                );
            }
        }
        assert_eq!(
            without_userinfo("http://u:p@h:1/x"),
            "http://***@h:1/x",
            "the host stays, to say which URL is meant"
        );
        assert_eq!(without_userinfo("http://h:1/x"), "http://h:1/x");
    }

    #[test]
    fn the_defaults_and_the_password_are_compiled_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").expect("write");
        let config: StoreConfig = toml::from_str(&format!(
            "url = \"redis://127.0.0.1:6379\"\npassword_file = {:?}\n",
            file.display().to_string()
        ))
        .expect("parses");
        let mut issues = Issues::default();
        let s = StoreSettings::compile(&config, &mut issues).expect("compiles");
        assert_eq!(s.password.as_deref(), Some("s3cret"));
        assert_eq!(s.operation_timeout, Duration::from_millis(20));
        assert_eq!(s.connect_timeout, Duration::from_secs(1));
        assert!(s.tls.is_none());
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn store_tls_files_are_accepted_with_a_rediss_url() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = write_cert_and_key(dir.path());
        let tls =
            format!("tls_ca_file = {cert:?}\ntls_cert_file = {cert:?}\ntls_key_file = {key:?}");
        assert_eq!(
            store_issues("rediss://127.0.0.1:6380", &tls),
            Vec::<String>::new()
        );
        let ca_only = format!("tls_ca_file = {cert:?}");
        assert_eq!(
            store_issues("rediss://127.0.0.1:6380", &ca_only),
            Vec::<String>::new()
        );
    }

    #[test]
    fn store_tls_files_need_a_rediss_url() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = write_cert_and_key(dir.path());
        let tls =
            format!("tls_ca_file = {cert:?}\ntls_cert_file = {cert:?}\ntls_key_file = {key:?}");
        let found = store_issues("redis://127.0.0.1:6379", &tls);
        for field in ["tls_ca_file", "tls_cert_file", "tls_key_file"] {
            let expect = format!("store.{field}: only with a rediss:// url");
            assert!(
                found.iter().any(|f| f.starts_with(&expect)),
                "missing {expect:?} in {found:#?}"
            );
        }
        assert_eq!(found.len(), 3, "{found:#?}");
    }

    #[test]
    fn store_tls_files_are_refused_with_an_insecure_url() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, _) = write_cert_and_key(dir.path());
        let found = store_issues(
            "rediss://127.0.0.1:6380/#insecure",
            &format!("tls_ca_file = {cert:?}"),
        );
        assert!(
            found
                .iter()
                .any(|f| f.starts_with("store.tls_ca_file: is ignored with an #insecure url")),
            "{found:#?}"
        );
    }

    #[test]
    fn store_client_certificate_and_key_go_together() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = write_cert_and_key(dir.path());
        let url = "rediss://127.0.0.1:6380";
        let found = store_issues(url, &format!("tls_cert_file = {cert:?}"));
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].starts_with("store.tls_cert_file: needs tls_key_file"),
            "{found:#?}"
        );
        let found = store_issues(url, &format!("tls_key_file = {key:?}"));
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].starts_with("store.tls_key_file: needs tls_cert_file"),
            "{found:#?}"
        );
    }

    #[test]
    fn store_tls_files_must_be_readable_and_of_the_right_kind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = write_cert_and_key(dir.path());
        let rsa_key = dir.path().join("rsa.key");
        std::fs::write(
            &rsa_key,
            "-----BEGIN RSA PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END RSA PRIVATE KEY-----\n",
        )
        .expect("write");
        let found = store_issues(
            "rediss://127.0.0.1:6380",
            "tls_ca_file = \"/nonexistent/ca.pem\"\ntls_cert_file = \"/nonexistent/c.pem\"\n\
             tls_key_file = \"/nonexistent/k.pem\"",
        );
        for field in ["tls_ca_file", "tls_cert_file", "tls_key_file"] {
            let expect = format!("store.{field}: cannot read \"/nonexistent/");
            assert!(
                found
                    .iter()
                    .any(|f| f.starts_with(&expect) && f.contains("No such file")),
                "missing {expect:?} with the OS error in {found:#?}"
            );
        }
        assert_eq!(found.len(), 3, "{found:#?}");

        let found = store_issues(
            "rediss://127.0.0.1:6380",
            &format!("tls_ca_file = {key:?}\ntls_cert_file = {cert:?}\ntls_key_file = {rsa_key:?}"),
        );
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(found[0].starts_with("store.tls_ca_file:"), "{found:#?}");
        assert!(
            found[1].starts_with("store.tls_key_file:") && found[1].contains("PKCS#8"),
            "{found:#?}"
        );
        assert!(
            !found.iter().any(|f| f.contains("c2VjcmV0")),
            "key content in a message: {found:#?}"
        );
    }
}
