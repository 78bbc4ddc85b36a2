//! Byte-exact comparison of two directory trees: names, types, content, symlink targets
//! and permission bits.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, PartialEq, Eq)]
enum Node {
    Dir(u32),
    File(u32, Vec<u8>),
    Link(OsString),
    Other,
}

fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(dir) = stack.pop() {
        let Ok(read) = std::fs::read_dir(root.join(&dir)) else {
            continue;
        };
        for entry in read.flatten() {
            let rel = dir.join(entry.file_name());
            let path = root.join(&rel);
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let mode = meta.permissions().mode() & 0o7777;
            let node = if meta.file_type().is_symlink() {
                Node::Link(
                    std::fs::read_link(&path)
                        .map(PathBuf::into_os_string)
                        .unwrap_or_default(),
                )
            } else if meta.is_dir() {
                stack.push(rel.clone());
                Node::Dir(mode)
            } else if meta.is_file() {
                Node::File(mode, std::fs::read(&path).unwrap_or_default())
            } else {
                Node::Other
            };
            out.insert(rel, node);
        }
    }
    out
}

/// `None` when equal, else a short description of the first differences.
pub fn diff(a: &Path, b: &Path) -> Option<String> {
    let left = snapshot(a);
    let right = snapshot(b);
    if left == right {
        return None;
    }
    let mut lines = Vec::new();
    for (path, node) in &left {
        match right.get(path) {
            None => lines.push(format!("missing in mirror: {path:?}")),
            Some(other) if other != node => lines.push(format!("differs: {path:?}")),
            Some(_) => {}
        }
    }
    for path in right.keys().filter(|p| !left.contains_key(*p)) {
        lines.push(format!("extra in mirror: {path:?}"));
    }
    let total = lines.len();
    lines.truncate(8);
    Some(format!("{total} difference(s): {}", lines.join("; ")))
}

/// Every path that is missing in `b`, differs, or is extra in `b`.
pub fn differences(a: &Path, b: &Path) -> Vec<PathBuf> {
    let left = snapshot(a);
    let right = snapshot(b);
    let mut out: Vec<PathBuf> = left
        .iter()
        .filter(|(path, node)| right.get(*path) != Some(*node))
        .map(|(path, _)| path.clone())
        .collect();
    out.extend(right.keys().filter(|p| !left.contains_key(*p)).cloned());
    out
}
