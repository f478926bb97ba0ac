//! The main crate's modules form a layering, not a web (README "Layout"):
//! no two files import each other, and the top-level modules (`dns`, `dane`,
//! `delivery`, `smtp`, …) import each other in one direction only. A piece
//! two modules need moves to a leaf (as `dane::provider` and
//! `dns::TlsaRecord` did). Test files (`*tests*.rs`) and `#[cfg(test)] mod
//! tests` blocks are not counted. The queue crate has its own check
//! (`queue/tests/layering.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Module = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("list src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if !name.contains("tests") {
                out.push(path);
            }
        }
    }
}

/// The longest prefix of `path` (module names) that is a known module.
fn resolve(modules: &BTreeSet<Module>, path: &[String]) -> Option<Module> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|m| modules.contains(m))
}

fn idents(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    for seg in s.split("::") {
        let name: String = seg
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() || name.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
            break;
        }
        out.push(name);
        if seg.len() != out.last().map_or(0, String::len) {
            break;
        }
    }
    out
}

fn edges() -> BTreeMap<Module, BTreeSet<Module>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: BTreeSet<Module> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut graph: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for file in &files {
        let me = module_of(&src, file);
        if me.is_empty() {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read source");
        let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
        let uses = graph.entry(me.clone()).or_default();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            for part in code.split("crate::").skip(1) {
                if let Some(m) = resolve(&modules, &idents(part)) {
                    uses.insert(m);
                }
            }
            for (i, _) in code.match_indices("super::") {
                if i > 0 && code[..i].ends_with("super::") {
                    continue; // counted from the first `super::` of a run
                }
                let mut tail = &code[i..];
                let mut ups = 0;
                while let Some(rest) = tail.strip_prefix("super::") {
                    ups += 1;
                    tail = rest;
                }
                let base = &me[..me.len().saturating_sub(ups)];
                let mut path = base.to_vec();
                path.extend(idents(tail));
                if let Some(m) = resolve(&modules, &path) {
                    uses.insert(m);
                }
            }
        }
        uses.remove(&me);
    }
    graph
}

fn is_ancestor(a: &Module, b: &Module) -> bool {
    a.len() < b.len() && b.starts_with(a) || b.len() < a.len() && a.starts_with(b)
}

#[test]
fn no_two_modules_import_each_other() {
    let graph = edges();
    let mut pairs = Vec::new();
    for (a, uses) in &graph {
        for b in uses {
            if a < b && !is_ancestor(a, b) && graph.get(b).is_some_and(|u| u.contains(a)) {
                pairs.push(format!("{} <-> {}", a.join("::"), b.join("::")));
            }
        }
    }
    assert!(pairs.is_empty(), "modules importing each other: {pairs:?}");

    // Top level: any cycle at all.
    let mut top: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (a, uses) in &graph {
        for b in uses {
            if a[0] != b[0] {
                top.entry(a[0].as_str()).or_default().insert(b[0].as_str());
            }
        }
    }
    fn reaches<'a>(
        top: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        from: &'a str,
        to: &str,
        seen: &mut BTreeSet<&'a str>,
    ) -> bool {
        top.get(from)
            .into_iter()
            .flatten()
            .any(|&n| n == to || (seen.insert(n) && reaches(top, n, to, seen)))
    }
    for (&m, uses) in &top {
        println!(
            "{m} -> {}",
            uses.iter().copied().collect::<Vec<_>>().join(", ")
        );
        assert!(
            !reaches(&top, m, m, &mut BTreeSet::new()),
            "top-level module {m} reaches itself"
        );
    }
}
