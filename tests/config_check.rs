//! `portcullis check`: every mistake in a file is reported with its path, and a valid file is
//! summarised.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::gateway::{run_to_exit, Finished};

/// Writes `text` to `name` in `dir` and runs `portcullis check -c` on it.
fn check(dir: &Path, name: &str, text: &str) -> (PathBuf, Finished) {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    let finished = run_to_exit(
        &["check", "-c", path.to_str().expect("utf-8 path")],
        &[],
        Duration::from_secs(20),
    );
    (path, finished)
}

/// Stderr lines that report an error in `path` (`<path>: <field path>: <reason>`).
fn error_lines<'a>(finished: &'a Finished, path: &Path) -> Vec<&'a str> {
    let full = path.to_str().expect("utf-8 path");
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("file name");
    finished
        .stderr
        .lines()
        .filter(|line| {
            line.starts_with(&format!("{full}: ")) || line.starts_with(&format!("{name}: "))
        })
        .collect()
}

const VALID: &str = r#"
[server]
listen = ["127.0.0.1:18080"]

[admin]
listen = "127.0.0.1:19901"

[[upstreams]]
name = "users"
peers = [{ addr = "127.0.0.1:3001" }, { addr = "127.0.0.1:3002", weight = 2 }]

[[upstreams]]
name = "billing"
peers = [{ addr = "127.0.0.1:3003" }]
selection = "consistent_hash"
hash_key = "header:x-account"

[upstreams.health_check]
kind = "http"
path = "/healthz"
interval = "2s"

[[routes]]
name = "users"
path = "/users"
upstream = "users"

[[routes]]
name = "billing"
hosts = ["billing.example.com", "*.billing.example.com"]
path = "/"
methods = ["GET", "POST"]
upstream = "billing"
strip_prefix = false
"#;

#[test]
fn every_example_config_passes_check() {
    let conf_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let mut checked = 0;
    for entry in std::fs::read_dir(&conf_dir).expect("read conf/") {
        let path = entry.expect("conf/ entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let finished = run_to_exit(
            &["check", "-c", path.to_str().expect("utf-8 path")],
            &[],
            Duration::from_secs(20),
        );
        assert_eq!(
            finished.code(),
            Some(0),
            "{} fails check\n--- stderr ---\n{}--- stdout ---\n{}",
            path.display(),
            finished.stderr,
            finished.stdout
        );
        checked += 1;
    }
    assert!(
        checked > 0,
        "no .toml files found in {}",
        conf_dir.display()
    );
}

#[test]
fn check_reports_every_semantic_error_with_its_path_and_exits_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = r#"
[server]
listen = ["127.0.0.1:notaport"]

[[upstreams]]
name = "users"
peers = [{ addr = "127.0.0.1:3001" }]

[[routes]]
name = "users"
path = "/users"
upstream = "users"

[[routes]]
name = "invoices"
path = "/invoices"
upstream = "billing"

[[routes]]
name = "users"
path = "/people"
upstream = "users"
"#;
    let (path, finished) = check(dir.path(), "three-errors.toml", text);
    assert_eq!(finished.code(), Some(1), "stderr:\n{}", finished.stderr);
    let lines = error_lines(&finished, &path);
    assert_eq!(
        lines.len(),
        3,
        "want exactly three error lines, got:\n{}",
        finished.stderr
    );

    assert!(
        lines
            .iter()
            .any(|l| l.contains("routes[1].upstream") && l.contains("\"billing\"")),
        "no error for the unknown upstream at routes[1].upstream:\n{}",
        finished.stderr
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("routes[2].name") && l.contains("users")),
        "no error for the duplicate route name at routes[2].name:\n{}",
        finished.stderr
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("server.listen[0]") && l.contains("notaport")),
        "no error for the bad listen address at server.listen[0]:\n{}",
        finished.stderr
    );
}

#[test]
fn check_names_an_unknown_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = VALID.replace("strip_prefix = false", "strip_prefixx = false");
    let (_, finished) = check(dir.path(), "typo.toml", &text);
    assert_eq!(finished.code(), Some(1), "stderr:\n{}", finished.stderr);
    assert!(
        finished.stderr.contains("strip_prefixx"),
        "the unknown field is not named:\n{}",
        finished.stderr
    );
}

#[test]
fn check_accepts_a_valid_file_with_a_one_line_summary() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, finished) = check(dir.path(), "valid.toml", VALID);
    assert_eq!(finished.code(), Some(0), "stderr:\n{}", finished.stderr);
    let lines: Vec<&str> = finished
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "want a one-line summary, got:\n{}",
        finished.stdout
    );
}

#[test]
fn check_rejects_a_zero_duration_with_its_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = VALID.replace("interval = \"2s\"", "interval = \"0s\"");
    let (path, finished) = check(dir.path(), "zero.toml", &text);
    assert_eq!(finished.code(), Some(1), "stderr:\n{}", finished.stderr);
    let lines = error_lines(&finished, &path);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("upstreams[1].health_check.interval")),
        "no error at upstreams[1].health_check.interval:\n{}",
        finished.stderr
    );
}

#[test]
fn check_rejects_an_unparsable_duration_with_its_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = VALID.replace("interval = \"2s\"", "interval = \"soon\"");
    let (path, finished) = check(dir.path(), "bad-duration.toml", &text);
    assert_eq!(finished.code(), Some(1), "stderr:\n{}", finished.stderr);
    let lines = error_lines(&finished, &path);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("upstreams[1].health_check.interval") && l.contains("soon")),
        "no error at upstreams[1].health_check.interval:\n{}",
        finished.stderr
    );
}

#[test]
fn check_rejects_duplicate_upstream_names() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = VALID
        .replace("name = \"billing\"\npeers", "name = \"users\"\npeers")
        .replace("upstream = \"billing\"", "upstream = \"users\"");
    let (path, finished) = check(dir.path(), "dup-upstream.toml", &text);
    assert_eq!(finished.code(), Some(1), "stderr:\n{}", finished.stderr);
    let lines = error_lines(&finished, &path);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("upstreams[1].name") && l.contains("users")),
        "no error at upstreams[1].name:\n{}",
        finished.stderr
    );
}

#[test]
fn check_rejects_two_routes_with_the_same_match() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = format!(
        "{VALID}\n[[routes]]\nname = \"users-again\"\npath = \"/users\"\nupstream = \"users\"\n"
    );
    let (path, finished) = check(dir.path(), "dup-match.toml", &text);
    assert_eq!(finished.code(), Some(1), "stderr:\n{}", finished.stderr);
    let lines = error_lines(&finished, &path);
    assert!(
        lines.iter().any(|l| l.contains("routes[2]")),
        "no error about routes[2]:\n{}",
        finished.stderr
    );
}

#[test]
fn check_rejects_admin_on_a_public_address_without_a_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = VALID.replace("listen = \"127.0.0.1:19901\"", "listen = \"0.0.0.0:19901\"");
    let (path, finished) = check(dir.path(), "public-admin.toml", &text);
    assert_eq!(finished.code(), Some(1), "stderr:\n{}", finished.stderr);
    let lines = error_lines(&finished, &path);
    assert!(
        lines.iter().any(|l| l.contains("admin")),
        "no error about [admin]:\n{}",
        finished.stderr
    );
}

#[test]
fn check_reports_a_missing_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("absent.toml");
    let finished = run_to_exit(
        &["check", "-c", missing.to_str().expect("utf-8 path")],
        &[],
        Duration::from_secs(20),
    );
    assert_ne!(
        finished.code(),
        Some(0),
        "checking a missing file must fail"
    );
    assert!(
        finished.stderr.contains("absent.toml"),
        "the missing file is not named:\n{}",
        finished.stderr
    );
}
