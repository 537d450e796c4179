//! The module structure the README's contributor section promises, checked on the
//! source: no import cycle between top-level modules; the pure core (`classify`,
//! `route`, `accounting`, the cache key) imports no raw config type and nothing HTTP;
//! only the binary's entry (`cli`) builds the application (`app`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file's code without its comments and its inline unit-test module (by this
/// codebase's convention, the last item of a file).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let mut kept = text.as_str();
    let mut from = 0;
    while let Some(i) = kept[from..].find("#[cfg(test)]") {
        let at = from + i;
        let item = kept[at + "#[cfg(test)]".len()..].trim_start();
        let line = item.lines().next().unwrap_or_default();
        if line.starts_with("mod ") && line.trim_end().ends_with('{') {
            kept = &kept[..at];
            break;
        }
        from = at + 1;
    }
    kept.lines()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The identifiers that follow `prefix` in `code`.
fn after<'a>(code: &'a str, prefix: &str) -> impl Iterator<Item = &'a str> {
    code.match_indices(prefix).map(move |(i, _)| {
        let rest = &code[i + prefix.len()..];
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        &rest[..end]
    })
}

struct Crate {
    /// Source files by path relative to `src/`, without unit-test files.
    files: BTreeMap<String, String>,
}

impl Crate {
    fn load() -> Crate {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut paths = Vec::new();
        sources(&src, &mut paths);
        let files = paths
            .into_iter()
            .filter(|p| p.file_name().is_some_and(|n| n != "tests.rs"))
            .map(|p| {
                let rel = p.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
                (rel, code(&p))
            })
            .collect();
        Crate { files }
    }

    /// The top-level module a file belongs to.
    fn module(rel: &str) -> &str {
        rel.split('/').next().unwrap_or(rel).trim_end_matches(".rs")
    }

    /// Top-level module → the top-level modules it names, with the files naming them.
    fn graph(&self) -> BTreeMap<&str, BTreeMap<&str, BTreeSet<&str>>> {
        let mut graph: BTreeMap<&str, BTreeMap<&str, BTreeSet<&str>>> = BTreeMap::new();
        for (rel, code) in &self.files {
            let from = Self::module(rel);
            if from == "main" || from == "lib" {
                continue;
            }
            for to in after(code, "crate::") {
                if to != from && !to.is_empty() {
                    graph
                        .entry(from)
                        .or_default()
                        .entry(to)
                        .or_default()
                        .insert(rel);
                }
            }
        }
        graph
    }
}

/// A cycle through `start`, as the modules on it, if there is one.
fn cycle_through<'a>(
    graph: &BTreeMap<&'a str, BTreeMap<&'a str, BTreeSet<&'a str>>>,
    start: &'a str,
) -> Option<Vec<&'a str>> {
    let mut stack = vec![(start, vec![start])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for &next in graph.get(at).map(|m| m.keys()).into_iter().flatten() {
            if next == start {
                let mut cycle = path.clone();
                cycle.push(start);
                return Some(cycle);
            }
            if seen.insert(next) {
                let mut longer = path.clone();
                longer.push(next);
                stack.push((next, longer));
            }
        }
    }
    None
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let krate = Crate::load();
    let graph = krate.graph();
    assert!(
        graph.len() > 10,
        "the scan found too few modules: {graph:?}"
    );
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|&m| cycle_through(&graph, m))
        .map(|cycle| {
            let edges: Vec<String> = cycle
                .windows(2)
                .map(|w| {
                    let files = &graph[w[0]][w[1]];
                    format!("{} → {} ({files:?})", w[0], w[1])
                })
                .collect();
            edges.join(", ")
        })
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_core_imports_no_raw_config_and_nothing_http() {
    let krate = Crate::load();
    let core = |rel: &str| {
        ["classify/", "route/", "accounting/"]
            .iter()
            .any(|dir| rel.starts_with(dir))
            || rel == "cache/key.rs"
    };
    let mut found = Vec::new();
    for (rel, code) in krate.files.iter().filter(|(rel, _)| core(rel)) {
        for banned in ["axum::", "hyper::", "config::raw", "crate::config::Raw"] {
            if code.contains(banned) {
                found.push(format!("{rel}: {banned}"));
            }
        }
        if after(code, "crate::").any(|m| m == "config") {
            found.push(format!("{rel}: crate::config"));
        }
    }
    assert!(
        krate.files.keys().filter(|rel| core(rel)).count() > 10,
        "the scan found too few core files"
    );
    assert!(found.is_empty(), "the core reaches out: {found:?}");
}

#[test]
fn only_the_binary_entry_builds_the_application() {
    let krate = Crate::load();
    let users: Vec<&str> = krate
        .files
        .iter()
        .filter(|(rel, code)| {
            Crate::module(rel) != "app" && after(code, "crate::").any(|m| m == "app")
        })
        .map(|(rel, _)| rel.as_str())
        .collect();
    assert_eq!(users, ["cli/mod.rs"], "files that import crate::app");
}
