//! Layering rules the compiler does not enforce by itself (dependencies point one way: the
//! principal is a leaf every feature may read; rate limits never use auth). Checked on the
//! source text, so a forbidden `use` fails here before review.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/<dir>` (or the file `src/<dir>.rs`), with its text.
fn sources(dir: &str) -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut pending = vec![root.join(dir)];
    let file = root.join(format!("{dir}.rs"));
    if file.is_file() {
        pending.push(file);
    }
    let mut out = Vec::new();
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            let entries = std::fs::read_dir(&path)
                .unwrap_or_else(|e| panic!("cannot list {}: {e}", path.display()));
            pending.extend(entries.map(|e| e.expect("directory entry").path()));
        } else if path.extension().is_some_and(|x| x == "rs") {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            out.push((path, text));
        }
    }
    assert!(!out.is_empty(), "no sources under src/{dir}");
    out
}

/// Lines of `files` that name one of `forbidden`, as `path:line: text`.
fn offending(files: &[(PathBuf, String)], forbidden: &[&str]) -> Vec<String> {
    files
        .iter()
        .flat_map(|(path, text)| {
            text.lines()
                .enumerate()
                .filter(|(_, line)| forbidden.iter().any(|f| line.contains(f)))
                .map(move |(n, line)| format!("{}:{}: {}", path.display(), n + 1, line.trim()))
        })
        .collect()
}

#[test]
fn rate_limits_never_name_auth() {
    let found = offending(&sources("ratelimit"), &["crate::auth", "portcullis::auth"]);
    assert!(
        found.is_empty(),
        "ratelimit must take the principal from crate::principal, not auth:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_principal_leaf_names_no_other_module_of_ours() {
    let found = offending(&sources("principal"), &["crate::", "super::"]);
    assert!(
        found.is_empty(),
        "src/principal.rs is a leaf and imports nothing of ours:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_store_names_no_feature_and_no_proxy() {
    let found = offending(
        &sources("store"),
        &[
            "crate::auth",
            "crate::ratelimit",
            "crate::cache",
            "crate::proxy",
            "crate::runtime",
            "crate::admin",
            "crate::server",
        ],
    );
    assert!(
        found.is_empty(),
        "the store is below the features and the proxy and names none of them:\n{}",
        found.join("\n")
    );
}

#[test]
fn only_the_store_names_redis() {
    let store = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join("store");
    let outside: Vec<_> = sources("")
        .into_iter()
        .filter(|(path, _)| !path.starts_with(&store))
        .collect();
    let found = offending(&outside, &["redis::"]);
    assert!(
        found.is_empty(),
        "every Redis type and script lives behind the store seam (src/store):\n{}",
        found.join("\n")
    );
}
