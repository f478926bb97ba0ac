//! The queue's modules form a layering, not a web: no module reaches back to itself through
//! `crate::` paths, directly or via others. A piece two modules need lives in a leaf module
//! (`codec`, `tx`, `fs`, `lock`), and an owner is handed a reference (`Arc<Store>`).
//! `cargo test -p danerelay-queue --test layering -- --nocapture` prints the edges.

use std::collections::{BTreeMap, BTreeSet};

/// `module → modules it names as crate::X`, from the sources in `src/` (comments ignored).
fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = BTreeMap::new();
    for entry in std::fs::read_dir(&src).expect("list src") {
        let path = entry.expect("dir entry").path();
        let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
            continue;
        };
        if name == "lib" || path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read source");
        let mut uses = BTreeSet::new();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            for part in code.split("crate::").skip(1) {
                let m: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !m.is_empty() && m != name && m.chars().all(|c| !c.is_ascii_uppercase()) {
                    uses.insert(m);
                }
            }
        }
        graph.insert(name, uses);
    }
    graph
}

/// A cycle reachable from `node`, if any (depth-first search; `done` holds nodes cleared).
fn cycle(
    graph: &BTreeMap<String, BTreeSet<String>>,
    node: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(i) = path.iter().position(|p| p == node) {
        let mut c = path[i..].to_vec();
        c.push(node.to_owned());
        return Some(c);
    }
    if done.contains(node) {
        return None;
    }
    path.push(node.to_owned());
    for next in graph.get(node).into_iter().flatten() {
        if let Some(c) = cycle(graph, next, path, done) {
            return Some(c);
        }
    }
    path.pop();
    done.insert(node.to_owned());
    None
}

#[test]
fn queue_modules_import_each_other_in_one_direction_only() {
    let graph = edges();
    for (m, uses) in &graph {
        println!(
            "{m} -> {}",
            uses.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        if let Some(c) = cycle(&graph, m, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", c.join(" -> "));
        }
    }
    println!("{} modules, no cycles", graph.len());
}
