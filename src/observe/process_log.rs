//! The process log on stderr: `env_logger` under `RUST_LOG` (default `info`), with Pingora's
//! own `debug` and `trace` output held back whatever `RUST_LOG` asks for.
//!
//! At those levels Pingora prints whole request headers (`Sending header to upstream {req:?}`
//! in pingora-proxy, `{:?}` of the request in pingora-core's HTTP apps, response headers in
//! pingora-cache): `Authorization`, cookies and API keys in clear. Its `info`, `warn` and
//! `error` lines describe a request only through `ProxyHttp::request_summary`, which the
//! gateway redacts, so those pass.

use log::{Level, Log, Metadata, Record};

/// Targets (module paths) of the Pingora crates: `pingora_core::…`, `pingora_proxy::…`, ….
const PINGORA_TARGET: &str = "pingora";

/// The most verbose level a Pingora line may have.
const PINGORA_MAX_LEVEL: Level = Level::Info;

/// Installs the process logger. Call once, first thing in `main`; a second call does nothing.
pub fn init_process_log() {
    let inner = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .build();
    let max_level = inner.filter();
    if log::set_boxed_logger(Box::new(CappedLogger { inner })).is_ok() {
        log::set_max_level(max_level);
        // Written only when debug is on: says why Pingora stays quiet at that level.
        log::debug!(
            "process log: Pingora lines above info are not written, they print request headers"
        );
    }
}

/// `env_logger` with the Pingora cap in front of it.
struct CappedLogger {
    inner: env_logger::Logger,
}

impl Log for CappedLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        within_cap(metadata) && self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if within_cap(record.metadata()) {
            self.inner.log(record);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// Whether a line may be written at all: anything of ours, Pingora's only up to `info`.
fn within_cap(metadata: &Metadata<'_>) -> bool {
    metadata.level() <= PINGORA_MAX_LEVEL || !metadata.target().starts_with(PINGORA_TARGET)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(target: &str, level: Level) -> Metadata<'_> {
        Metadata::builder().target(target).level(level).build()
    }

    #[test]
    fn pingora_debug_and_trace_lines_are_held_back() {
        assert!(!within_cap(&meta("pingora_proxy::proxy_h1", Level::Debug)));
        assert!(!within_cap(&meta(
            "pingora_core::apps::http_app",
            Level::Trace
        )));
        assert!(!within_cap(&meta("pingora_cache", Level::Debug)));
        assert!(within_cap(&meta("pingora_proxy", Level::Error)));
        assert!(within_cap(&meta("pingora_proxy", Level::Warn)));
        assert!(within_cap(&meta("pingora_core::server", Level::Info)));
    }

    #[test]
    fn other_crates_keep_every_level() {
        assert!(within_cap(&meta("portcullis::proxy", Level::Trace)));
        assert!(within_cap(&meta("redis", Level::Debug)));
    }
}
