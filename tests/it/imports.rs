//! Imports flow one way: the `crate::` references of each top-level module of `src/`
//! form a graph without cycles. Comments are skipped (doc links are not imports);
//! `use crate::{a::X, b}` groups count every name in them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`src/a.rs`, `src/a/b.rs` → `a`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_owned())
}

fn ident_at(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The top-level module names `code` refers to through `crate::`.
fn crate_refs(code: &str) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue; // `$crate::`, `my_crate::`
        }
        let rest_trim = rest.trim_start();
        if let Some(group) = rest_trim.strip_prefix('{') {
            // Names at depth 1 of the group: `{a::X, b::{Y, Z}, c}` → a, b, c.
            let mut depth = 1;
            let mut expect_name = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => expect_name = true,
                    c if expect_name && depth == 1 && (c.is_ascii_alphabetic() || c == '_') => {
                        refs.insert(ident_at(&group[i..]).to_owned());
                        expect_name = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident_at(rest_trim);
            if !name.is_empty() {
                refs.insert(name.to_owned());
            }
        }
    }
    refs
}

fn without_comments(text: &str) -> String {
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn import_graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(&src, f)).collect();
    let mut graph: Graph = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let text = fs::read_to_string(file).expect("read source file");
        for target in crate_refs(&without_comments(&text)) {
            if target != module && modules.contains(&target) {
                graph.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    graph
}

/// A cycle of `graph` as a path `a → b → … → a`, if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[start..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

fn render(graph: &Graph) -> String {
    graph
        .iter()
        .map(|(module, deps)| {
            let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
            format!("{module} -> {}", deps.join(", "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn crate_refs_reads_paths_and_groups() {
    let code = "use crate::a::X;\nuse crate::{b::{Y, Z}, c, d::W};\nlet _ = crate::e::f();\n\
                macro_rules! m { () => { $crate::g::h() } }";
    let refs: Vec<String> = crate_refs(code).into_iter().collect();
    assert_eq!(refs, ["a", "b", "c", "d", "e"]);
}

#[test]
fn find_cycle_sees_a_three_module_cycle() {
    let edge = |a: &str, b: &[&str]| (a.to_owned(), b.iter().map(|s| (*s).to_owned()).collect());
    let graph: Graph = [
        edge("a", &["b"]),
        edge("b", &["c"]),
        edge("c", &["a"]),
        edge("d", &[]),
    ]
    .into_iter()
    .collect();
    assert_eq!(find_cycle(&graph).expect("cycle"), ["a", "b", "c", "a"]);
    let acyclic: Graph = [edge("a", &["b", "c"]), edge("b", &["c"]), edge("c", &[])]
        .into_iter()
        .collect();
    assert_eq!(find_cycle(&acyclic), None);
}

#[test]
fn src_modules_import_each_other_without_cycles() {
    let graph = import_graph();
    assert!(
        graph.len() > 10,
        "too few modules found:\n{}",
        render(&graph)
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "import cycle {}\n\ncrate:: imports per module:\n{}",
            cycle.join(" -> "),
            render(&graph)
        );
    }
    if std::env::var_os("SERSYNC_PRINT_IMPORTS").is_some() {
        println!("{}", render(&graph));
    }
}
