//! `[server]`'s process-level part: the listeners, threads and drain time the Pingora server is
//! built from (`crate::server`). What a reload may change of `[server]` is compiled into the
//! snapshot.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

use crate::config::{Issues, ServerConfig, TlsListenerConfig};

/// `[server]`'s process-level part, compiled: what the listeners and the Pingora server are
/// built from. The rest of `[server]` is reloadable and compiled into the snapshot.
#[derive(Debug)]
pub(crate) struct ServerSettings {
    /// Plain HTTP listen addresses.
    pub(crate) listen: Vec<SocketAddr>,
    /// The HTTPS listener.
    pub(crate) tls: Option<TlsListener>,
    /// Proxy worker threads.
    pub(crate) threads: usize,
    /// One work-stealing runtime (true) or one runtime per thread.
    pub(crate) work_stealing: bool,
    /// Drain time on SIGTERM, in whole seconds (Pingora's unit), rounded up.
    pub(crate) grace_period_secs: u64,
}

/// `[server.tls]`, compiled.
#[derive(Debug)]
pub(crate) struct TlsListener {
    pub(crate) listen: SocketAddr,
    pub(crate) cert_file: String,
    pub(crate) key_file: String,
    pub(crate) h2: bool,
}

impl ServerSettings {
    /// Compiles the process-level part of `[server]`, pushing every problem into `issues`;
    /// `None` when there was one.
    pub(crate) fn compile(s: &ServerConfig, issues: &mut Issues) -> Option<ServerSettings> {
        let before = issues.len();
        if s.listen.is_empty() && s.tls.is_none() {
            issues.push(
                "server.listen",
                "no listener: give at least one address or [server.tls]",
            );
        }
        let mut listen = Vec::with_capacity(s.listen.len());
        let mut seen = HashSet::new();
        for (i, addr) in s.listen.iter().enumerate() {
            let path = format!("server.listen[{i}]");
            let Some(parsed) = issues.value(path.clone(), addr) else {
                continue;
            };
            // Compared as parsed (`[::1]:80` is `[0:0::1]:80`), as Pingora is given them.
            if !seen.insert(parsed) {
                issues.push(path, format!("address {:?} is listed twice", addr.raw()));
            }
            listen.push(parsed);
        }
        let tls = s
            .tls
            .as_ref()
            .and_then(|tls| TlsListener::compile(tls, &seen, issues));
        if s.threads == 0 || s.threads > 1024 {
            issues.push("server.threads", "must be between 1 and 1024");
        }
        let grace_period = issues.value("server.grace_period", &s.grace_period);
        if issues.len() > before {
            return None;
        }
        Some(ServerSettings {
            listen,
            tls,
            threads: s.threads,
            work_stealing: s.work_stealing,
            grace_period_secs: grace_period?.0.as_secs_f64().ceil() as u64,
        })
    }
}

impl TlsListener {
    /// `plain` holds the plain listeners' addresses.
    fn compile(
        tls: &TlsListenerConfig,
        plain: &HashSet<SocketAddr>,
        issues: &mut Issues,
    ) -> Option<TlsListener> {
        let listen = issues.value("server.tls.listen", &tls.listen);
        if listen.is_some_and(|addr| plain.contains(&addr)) {
            issues.push("server.tls.listen", "already used by a plain HTTP listener");
        }
        for (field, file) in [("cert_file", &tls.cert_file), ("key_file", &tls.key_file)] {
            if !Path::new(file).is_file() {
                issues.push(
                    format!("server.tls.{field}"),
                    format!("no such file {file:?}"),
                );
            }
        }
        Some(TlsListener {
            listen: listen?,
            cert_file: tls.cert_file.clone(),
            key_file: tls.key_file.clone(),
            h2: tls.h2,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(toml: &str) -> (Option<ServerSettings>, Vec<String>) {
        let s: ServerConfig = toml::from_str(toml).expect("test [server] parses");
        let mut issues = Issues::default();
        let settings = ServerSettings::compile(&s, &mut issues);
        let found = issues.into_vec().iter().map(|i| i.to_string()).collect();
        (settings, found)
    }

    #[test]
    fn defaults_compile_to_the_model_defaults() {
        let (settings, found) = compile("");
        assert_eq!(found, Vec::<String>::new());
        let settings = settings.expect("compiles");
        assert_eq!(settings.listen, ["127.0.0.1:8080".parse().expect("addr")]);
        assert_eq!((settings.threads, settings.grace_period_secs), (1, 5));
    }

    #[test]
    fn listeners_are_checked_against_each_other() {
        let (settings, found) = compile(
            "listen = [\"127.0.0.1:8080\", \" 127.0.0.1:8080\"]\nthreads = 0\n\
             [tls]\nlisten = \"127.0.0.1:8080\"\ncert_file = \"/nonexistent/c\"\nkey_file = \"/nonexistent/k\"\n",
        );
        assert!(settings.is_none());
        assert_eq!(
            found,
            [
                "server.listen[1]: address \" 127.0.0.1:8080\" is listed twice",
                "server.tls.listen: already used by a plain HTTP listener",
                "server.tls.cert_file: no such file \"/nonexistent/c\"",
                "server.tls.key_file: no such file \"/nonexistent/k\"",
                "server.threads: must be between 1 and 1024",
            ]
        );
    }
}
