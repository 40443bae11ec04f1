//! The layering of `src/` as an executable rule: arrows point down.
//!
//! Every top-level module of the crate sits in a layer. A module may import
//! (`crate::x`) only from its own layer or the layers below it, no two
//! top-level modules may import each other, directly or through others (no
//! cycle), and the protocol core `lti` imports nothing of the crate. Test
//! code (`#[cfg(test)] mod …`) is not counted. A new top-level module must be
//! given a layer here.
//!
//! ```text
//! lib, main                                        wires the parts
//! launch, session, proxy, outcomes, admin, demo,   the parts
//! export
//! server, http, store, provision, metrics,         what the parts share
//! outbound
//! config, stall                                    settings, timers
//! lti, secret, addr                                protocol core, secrets, address rules
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Layers, lowest first.
const LAYERS: &[&[&str]] = &[
    &["lti", "secret", "addr"],
    &["config", "stall"],
    &[
        "server",
        "http",
        "store",
        "provision",
        "metrics",
        "outbound",
    ],
    &[
        "launch", "session", "proxy", "outcomes", "admin", "demo", "export",
    ],
    &["lib", "main"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to.
fn top_module(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("file under src");
    let first = rel
        .components()
        .next()
        .expect("a path component")
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    first.strip_suffix(".rs").unwrap_or(&first).to_string()
}

/// `text` without comments and without `#[cfg(test)] mod … { … }` blocks.
fn production_code(text: &str) -> String {
    let no_comments: String = text
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = String::new();
    let mut rest = no_comments.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        let is_mod = trimmed.starts_with("mod ") || trimmed.starts_with("pub mod ");
        match (is_mod, after.find('{'), after.find(';')) {
            (true, Some(open), semi) if semi.is_none_or(|s| s > open) => {
                let mut depth = 0usize;
                let mut end = after.len();
                for (i, c) in after.char_indices().skip(open) {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                rest = &after[end..];
            }
            _ => rest = after,
        }
    }
    out.push_str(rest);
    out
}

/// Top-level modules named by `crate::x` paths and `crate::{x, y::…}` groups.
fn imports(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before_ok = at == 0
            || !rest[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$');
        let after = &rest[at + "crate::".len()..];
        rest = after;
        if !before_ok {
            continue;
        }
        if let Some(group) = after.strip_prefix('{') {
            // Top-level names of the group, at brace depth 0.
            let mut depth = 0usize;
            let mut name = String::new();
            let mut at_start = true;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        if !name.is_empty() {
                            found.insert(std::mem::take(&mut name));
                        }
                        at_start = true;
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 && at_start {
                    if c.is_alphanumeric() || c == '_' {
                        name.push(c);
                    } else if !name.is_empty() {
                        found.insert(std::mem::take(&mut name));
                        at_start = false;
                    }
                }
            }
            if !name.is_empty() {
                found.insert(name);
            }
        } else {
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found.retain(|n| n != "self" && n != "super");
    found
}

/// Module → the top-level modules it imports.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let module = top_module(&src, file);
        let text = fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let targets = edges.entry(module.clone()).or_default();
        targets.extend(
            imports(&production_code(&text))
                .into_iter()
                .filter(|t| *t != module),
        );
    }
    let modules: BTreeSet<String> = edges.keys().cloned().collect();
    for targets in edges.values_mut() {
        targets.retain(|t| modules.contains(t));
    }
    edges
}

#[test]
fn every_module_has_a_layer() {
    let unplaced: Vec<_> = graph()
        .into_keys()
        .filter(|m| layer_of(m).is_none())
        .collect();
    assert!(
        unplaced.is_empty(),
        "give these top-level modules a layer in tests/arrows.rs: {unplaced:?}"
    );
}

#[test]
fn arrows_point_down() {
    let mut up = Vec::new();
    for (from, targets) in graph() {
        let Some(own) = layer_of(&from) else { continue };
        for to in targets {
            if layer_of(&to).is_some_and(|l| l > own) {
                up.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(up.is_empty(), "imports from a layer above: {up:?}");
}

#[test]
fn the_protocol_core_imports_nothing_of_the_crate() {
    let g = graph();
    let lti = g.get("lti").cloned().unwrap_or_default();
    assert!(lti.is_empty(), "lti imports {lti:?}");
}

#[test]
fn no_cycle_between_top_level_modules() {
    let g = graph();
    // A module that reaches itself through the import graph is on a cycle.
    let mut cycles = Vec::new();
    for start in g.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&String> = g[start].iter().collect();
        while let Some(m) = stack.pop() {
            if m == start {
                cycles.push(start.clone());
                break;
            }
            if seen.insert(m.clone()) {
                stack.extend(g.get(m).into_iter().flatten());
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "modules on an import cycle: {cycles:?}\n{g:#?}"
    );
}

#[test]
fn the_rule_sees_imports() {
    // The parser behind the rule finds plain paths, groups and nested groups,
    // and skips test modules and comments.
    let code = production_code(
        "use crate::a::B;\nuse crate::{c, d::{E, F}};\n// crate::g\nfn f() { crate::h::i(); }\n\
         #[cfg(test)]\nmod tests { use crate::j; }\n",
    );
    let found: Vec<_> = imports(&code).into_iter().collect();
    assert_eq!(found, ["a", "c", "d", "h"]);
}
