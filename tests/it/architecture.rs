//! The module graph: the domain types use nothing of hubwatch's own, and no two top-level modules depend on
//! each other through any path (no cycles). Read from the `crate::` paths in `src/`, so a new cycle fails
//! here with the modules named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The top-level module a file belongs to (`src/incident/report.rs` → `incident`); None for the crate root
/// and the binary.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next()?.as_os_str().to_str()?.trim_end_matches(".rs").to_string();
    (!matches!(first.as_str(), "lib" | "main")).then_some(first)
}

/// The top-level modules a file names through `crate::NAME`, including `use crate::{a, b}` lists.
fn references(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let code: String = text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(list) = rest.strip_prefix('{') {
            let end = list.find('}').unwrap_or(list.len());
            for item in list[..end].split(',') {
                let name: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                found.insert(name);
            }
        } else {
            found.insert(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
        }
    }
    found.retain(|name| !name.is_empty() && name.chars().next().is_some_and(char::is_lowercase));
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in sources(&src) {
        let Some(module) = module_of(&src, &file) else { continue };
        let text = std::fs::read_to_string(&file).unwrap();
        let uses: Vec<String> = references(&text).into_iter().filter(|m| *m != module).collect();
        edges.entry(module).or_default().extend(uses);
    }
    edges
}

/// A cycle through `start`, as the list of modules on it, if there is one.
fn cycle_through(edges: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_string(), vec![start.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((module, path)) = stack.pop() {
        for next in edges.get(&module).into_iter().flatten() {
            if next == start {
                return Some([path.clone(), vec![start.to_string()]].concat());
            }
            if seen.insert(next.clone()) {
                stack.push((next.clone(), [path.clone(), vec![next.clone()]].concat()));
            }
        }
    }
    None
}

#[test]
fn the_domain_module_uses_nothing_of_hubwatch() {
    let edges = graph();
    assert_eq!(edges.get("domain").cloned().unwrap_or_default(), BTreeSet::new(), "domain must stay a leaf");
}

#[test]
fn no_module_depends_on_itself_through_others() {
    let edges = graph();
    let cycles: Vec<String> =
        edges.keys().filter_map(|m| cycle_through(&edges, m)).map(|cycle| cycle.join(" -> ")).collect();
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
}

/// A decision queues what is to be said (`domain::Message`); only a sink renders its wire format, when it sends.
#[test]
fn decisions_and_the_store_build_no_wire_format() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    // The response reader and the reconciler read PagerDuty's REST API: their own calls, not a decision's.
    let readers = ["responses.rs", "reconcile.rs"];
    let mut files = sources(&src.join("store"));
    files.extend(sources(&src.join("incident")).into_iter().filter(|f| !readers.iter().any(|r| f.ends_with(r))));
    let offenders: Vec<String> = files
        .iter()
        .filter(|file| references(&std::fs::read_to_string(file).unwrap()).contains("notify"))
        .map(|file| file.strip_prefix(&src).unwrap().display().to_string())
        .collect();
    assert!(offenders.is_empty(), "these build a sink's wire format (render it in notify/ instead): {offenders:?}");
}

#[test]
fn the_reader_finds_uses_of_every_form() {
    let text = "use crate::store::Store;\nuse crate::{config, http::HttpClient};\nlet x = crate::metrics::Metrics::new();\n// crate::web in a comment\n";
    assert_eq!(references(text), BTreeSet::from(["config".into(), "http".into(), "metrics".into(), "store".into()]));
}

#[test]
#[ignore = "prints the module graph: cargo test --test it print_the_module_graph -- --ignored --nocapture"]
fn print_the_module_graph() {
    for (module, uses) in graph() {
        println!("{module} -> {}", uses.into_iter().collect::<Vec<_>>().join(", "));
    }
}
