//! Pieces of config templates shared by the tests (see `gateway` for the `${…}` placeholders).

use super::upstream::Upstream;

/// `[server]`, `[admin]` and `[log]` for a gateway on free ports with the access log off.
pub const PREAMBLE: &str = r#"
[server]
listen = ["${PROXY_ADDR}"]
threads = 1
grace_period = "1s"

[admin]
listen = "${ADMIN_ADDR}"

[log]
access_log = "off"
"#;

/// The `[server]`, `[admin]` and `[log]` sections of a test gateway, with the variations the
/// test files need as parameters, so that no file keeps its own copy of the preamble.
/// `Preamble::new().render()` is exactly `PREAMBLE` (`tests/harness.rs` checks it).
#[derive(Debug, Clone)]
pub struct Preamble<'a> {
    extra_listen: &'a str,
    grace_period: &'a str,
    server_extra: &'a str,
    admin_token_env: Option<&'a str>,
    access_log: &'a str,
    log_extra: &'a str,
}

impl Default for Preamble<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> Preamble<'a> {
    /// One proxy thread (`threads = 1`), a 1 s grace period, no admin token, the access log off.
    pub fn new() -> Self {
        Self {
            extra_listen: "",
            grace_period: "1s",
            server_extra: "",
            admin_token_env: None,
            access_log: "off",
            log_extra: "",
        }
    }

    /// Text written after `"${PROXY_ADDR}"` inside `[server] listen = [...]`, e.g.
    /// `, "[::1]:8080"`.
    pub fn extra_listen(mut self, text: &'a str) -> Self {
        self.extra_listen = text;
        self
    }

    /// `[server] grace_period`.
    pub fn grace_period(mut self, period: &'a str) -> Self {
        self.grace_period = period;
        self
    }

    /// Lines added to `[server]` after `grace_period`.
    pub fn server_extra(mut self, lines: &'a str) -> Self {
        self.server_extra = lines;
        self
    }

    /// `[admin] token_env`: the admin API then needs the bearer token in that variable.
    pub fn admin_token_env(mut self, var: &'a str) -> Self {
        self.admin_token_env = Some(var);
        self
    }

    /// `[log] access_log`: "off", "stdout", a path, or a `${…}` placeholder.
    pub fn access_log(mut self, destination: &'a str) -> Self {
        self.access_log = destination;
        self
    }

    /// Lines added to `[log]` after `access_log` (`log_headers = […]`, …).
    pub fn log_extra(mut self, lines: &'a str) -> Self {
        self.log_extra = lines;
        self
    }

    /// The sections as config text (leading newline, every line ended).
    pub fn render(&self) -> String {
        let mut text = format!(
            "\n[server]\nlisten = [\"${{PROXY_ADDR}}\"{}]\nthreads = 1\ngrace_period = \"{}\"\n",
            self.extra_listen, self.grace_period
        );
        push_lines(&mut text, self.server_extra);
        text.push_str("\n[admin]\nlisten = \"${ADMIN_ADDR}\"\n");
        if let Some(var) = self.admin_token_env {
            text.push_str(&format!("token_env = \"{var}\"\n"));
        }
        text.push_str(&format!("\n[log]\naccess_log = \"{}\"\n", self.access_log));
        push_lines(&mut text, self.log_extra);
        text
    }
}

/// Appends `lines` to `text`, ending them with a newline unless they are empty or have one.
fn push_lines(text: &mut String, lines: &str) {
    if !lines.is_empty() {
        text.push_str(lines);
        if !lines.ends_with('\n') {
            text.push('\n');
        }
    }
}

/// A `[store]` on the Redis at `url` with keys under `prefix`, plus `extra` lines.
pub fn store(url: &str, prefix: &str, extra: &str) -> String {
    let mut text = format!("\n[store]\nurl = \"{url}\"\nprefix = \"{prefix}\"\n");
    push_lines(&mut text, extra);
    text
}

/// An `[[upstreams]]` entry named `name` over `peers` (weight 1 each), plus `extra` lines.
/// Sub-tables such as `[upstreams.health_check]` go last in `extra`.
pub fn upstream(name: &str, peers: &[&Upstream], extra: &str) -> String {
    let addrs: Vec<String> = peers.iter().map(|p| p.addr()).collect();
    upstream_addrs(name, &addrs, extra)
}

/// An `[[upstreams]]` entry over raw addresses (e.g. ports nobody listens on).
pub fn upstream_addrs(name: &str, addrs: &[String], extra: &str) -> String {
    let peers: Vec<String> = addrs
        .iter()
        .map(|a| format!("{{ addr = \"{a}\" }}"))
        .collect();
    format!(
        "\n[[upstreams]]\nname = \"{name}\"\npeers = [{}]\n{extra}\n",
        peers.join(", ")
    )
}

/// A `[[routes]]` entry named `name` sending to `upstream`, plus `extra` lines (`path = …`,
/// `hosts = […]`, …). Sub-tables such as `[routes.request_headers]` go last in `extra`.
pub fn route(name: &str, upstream: &str, extra: &str) -> String {
    format!("\n[[routes]]\nname = \"{name}\"\nupstream = \"{upstream}\"\n{extra}\n")
}
