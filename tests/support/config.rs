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
