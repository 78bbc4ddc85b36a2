//! Nothing from outside a root reaches a mirror through a symlinked parent.
//!
//! rsync opens a batch's `./a/b/c` by path, so when `a` became a symlink after the
//! change was queued (`mv u u.0; ln -s /elsewhere u` while `u/token` waits), it would
//! resolve `a/b/c` through the link and send whatever lies at the other end (sersync
//! runs as root). Just before rsync starts, every path whose ancestor inside the root is
//! a symlink is replaced by an update of its topmost symlinked ancestor, which rsync then
//! sends as the symlink it is. [`confine`] is the pure core (the filesystem fact comes
//! in as a function); [`confine_on_disk`] asks `lstat(2)`.
//!
//! What remains is a race: a directory swapped for a symlink between this check and
//! rsync's own `lstat` of the path while it builds its file list (rsync's start-up, plus
//! the connection and login for a remote; README, "Guarantees").

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::job::{Entry, Op};
use crate::rel::Rel;

/// `entries` with every entry below a symlinked ancestor replaced by an update of the
/// topmost such ancestor (once per ancestor, in first-seen order); the number of
/// entries replaced comes second. `is_symlink(rel)` says whether the root-relative
/// `rel` is a symlink now; it is asked only about proper ancestors, top-down.
pub fn confine(
    entries: &[Entry],
    mut is_symlink: impl FnMut(&Path) -> bool,
) -> (Vec<Entry>, usize) {
    let mut out = Vec::with_capacity(entries.len());
    let mut links: HashSet<PathBuf> = HashSet::new();
    let mut replaced = 0;
    for entry in entries {
        match symlinked_ancestor(&entry.rel, &mut is_symlink) {
            None => out.push(entry.clone()),
            Some(link) => {
                replaced += 1;
                if links.insert(link.clone()) {
                    out.push(Entry {
                        rel: Rel::from(link.as_path()),
                        op: Op::Update,
                        is_dir: false,
                    });
                }
            }
        }
    }
    // An entry naming the link itself is now a duplicate of its replacement.
    let mut seen: HashSet<PathBuf> = HashSet::new();
    out.retain(|e| !links.contains(e.rel.as_path()) || seen.insert(e.rel.to_path_buf()));
    (out, replaced)
}

/// The topmost proper ancestor of `rel` that is a symlink (the entry itself is not
/// asked about: rsync sends a symlink as a symlink).
fn symlinked_ancestor(rel: &Path, is_symlink: &mut impl FnMut(&Path) -> bool) -> Option<PathBuf> {
    let mut prefix = PathBuf::new();
    for component in rel.parent()?.components() {
        prefix.push(component);
        if is_symlink(&prefix) {
            return Some(prefix);
        }
    }
    None
}

/// [`confine`] against the filesystem under `root`, logging what it replaced; the batch
/// itself (not a copy) when nothing lies below a symlink, the usual case.
///
/// Each ancestor is looked at once per batch: a burst of 4,096 files in 100 new
/// directories costs 100 `lstat` calls, not 4,096 times the depth.
pub fn confine_on_disk<'e>(root: &Path, entries: &'e [Entry]) -> Cow<'e, [Entry]> {
    let mut seen: HashMap<PathBuf, bool> = HashMap::new();
    let mut is_symlink = |rel: &Path| match seen.get(rel) {
        Some(known) => *known,
        None => {
            let link = root
                .join(rel)
                .symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink());
            seen.insert(rel.to_path_buf(), link);
            link
        }
    };
    if !entries
        .iter()
        .any(|e| symlinked_ancestor(&e.rel, &mut is_symlink).is_some())
    {
        return Cow::Borrowed(entries);
    }
    let (confined, replaced) = confine(entries, is_symlink);
    if replaced > 0 {
        log::warn!(
            "{}: {replaced} queued path(s) lie below a directory that is now a symlink; the symlink is pushed instead (nothing is read through it)",
            root.display()
        );
    }
    Cow::Owned(confined)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(rel: &str, op: Op) -> Entry {
        Entry {
            rel: PathBuf::from(rel).into(),
            op,
            is_dir: false,
        }
    }

    /// (symlinks on disk, batch, expected batch, entries replaced)
    type Row = (
        &'static [&'static str],
        &'static [(&'static str, Op)],
        &'static [(&'static str, Op)],
        usize,
    );

    #[test]
    fn paths_below_symlinks_become_updates_of_the_topmost_link() {
        #[rustfmt::skip]
        let table: &[Row] = &[
            // No symlink: unchanged, the entry itself is never asked about.
            (&[], &[("a/b", Op::Update), ("c", Op::Delete)], &[("a/b", Op::Update), ("c", Op::Delete)], 0),
            (&["u"], &[("u", Op::Update)], &[("u", Op::Update)], 0),
            // The case: u became a link while u/token was queued.
            (&["u"], &[("u/token", Op::Update)], &[("u", Op::Update)], 1),
            // A delete below a link would send the link's target too.
            (&["u"], &[("u/token", Op::Delete)], &[("u", Op::Update)], 1),
            // Topmost wins; one update per link; companions untouched.
            (&["a", "a/b"], &[("a/b/c", Op::Update), ("a/x", Op::Update), ("k", Op::Update)], &[("a", Op::Update), ("k", Op::Update)], 2),
            (&["a/b"], &[("a/b/c/d", Op::Update), ("a/e", Op::Update)], &[("a/b", Op::Update), ("a/e", Op::Update)], 1),
            // The link itself also queued (its creation): one entry.
            (&["u"], &[("u", Op::Update), ("u/token", Op::Update)], &[("u", Op::Update)], 1),
            (&["u"], &[("u/token", Op::Update), ("u", Op::Delete)], &[("u", Op::Update)], 1),
        ];
        for &(links, batch, expected, replaced) in table {
            let batch: Vec<Entry> = batch.iter().map(|&(r, op)| entry(r, op)).collect();
            let mut asked = Vec::new();
            let (got, n) = confine(&batch, |rel| {
                asked.push(rel.to_path_buf());
                links.iter().any(|l| Path::new(l) == rel)
            });
            let expected: Vec<Entry> = expected.iter().map(|&(r, op)| entry(r, op)).collect();
            assert_eq!(got, expected, "links {links:?}, batch {batch:?}");
            assert_eq!(n, replaced, "links {links:?}, batch {batch:?}");
            for rel in &asked {
                assert!(
                    batch
                        .iter()
                        .any(|e| e.rel.as_path() != rel.as_path() && e.rel.starts_with(rel)),
                    "asked about {rel:?}, not a proper ancestor"
                );
            }
        }
    }

    #[test]
    fn on_disk_a_symlinked_parent_is_seen_and_a_real_directory_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("outside");
        std::fs::write(outside.path().join("token"), b"secret").expect("token");
        std::fs::create_dir(dir.path().join("d")).expect("d");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("u")).expect("link");
        let batch = [entry("u/token", Op::Update), entry("d/f", Op::Update)];
        assert_eq!(
            *confine_on_disk(dir.path(), &batch),
            [entry("u", Op::Update), entry("d/f", Op::Update)]
        );
        // Nothing below a symlink: the batch itself, not a copy.
        let clean = [entry("d/f", Op::Update), entry("u", Op::Update)];
        assert!(matches!(
            confine_on_disk(dir.path(), &clean),
            Cow::Borrowed(same) if std::ptr::eq(same, &clean[..])
        ));
    }
}
