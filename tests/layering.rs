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
fn the_cache_never_names_the_proxy() {
    let found = offending(&sources("cache"), &["crate::proxy", "portcullis::proxy"]);
    assert!(
        found.is_empty(),
        "cache rules take plain values; the proxy calls them, never the reverse:\n{}",
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
            "crate::setup",
            "crate::reload",
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

/// The top-level module a source file belongs to (`src/proxy/pool.rs` → `proxy`).
fn module_of(path: &Path) -> Option<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let first = path.strip_prefix(&root).ok()?.components().next()?;
    let name = first.as_os_str().to_str()?;
    Some(name.trim_end_matches(".rs").to_string())
}

/// Which top-level modules each module names (`crate::<module>` outside comments and unit
/// tests; the crate root and the binary are the entry points, not layers).
fn module_graph() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let mut graph = std::collections::BTreeMap::new();
    for (path, text) in sources("") {
        let Some(module) = module_of(&path) else {
            continue;
        };
        if matches!(module.as_str(), "lib" | "main" | "bin") {
            continue;
        }
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
        let uses: &mut std::collections::BTreeSet<String> =
            graph.entry(module.clone()).or_default();
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                let rest = &line[i + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    uses.insert(name);
                }
            }
        }
    }
    graph
}

#[test]
fn top_level_modules_form_no_cycle() {
    let graph = module_graph();
    assert!(graph.len() > 8, "too few modules found: {graph:?}");
    // Depth-first search with the current path on a stack: an edge back into the stack is a
    // cycle.
    fn visit(
        node: &str,
        graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut std::collections::BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if !done.insert(node.to_string()) {
            return None;
        }
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        None
    }
    let mut done = std::collections::BTreeSet::new();
    for node in graph.keys() {
        let cycle = visit(node, &graph, &mut Vec::new(), &mut done);
        assert!(
            cycle.is_none(),
            "the top-level modules import each other in a circle: {}\n(the graph: {graph:#?})",
            cycle.unwrap_or_default().join(" -> ")
        );
    }
}

#[test]
fn config_names_no_module_of_ours() {
    let graph = module_graph();
    assert_eq!(
        graph.get("config").map(|uses| uses.len()),
        Some(0),
        "config is the ground floor: {graph:#?}"
    );
}
