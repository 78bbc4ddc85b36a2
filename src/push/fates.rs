//! After a partial transfer (exit 23/24): which path of the batch arrived, which no
//! longer exists locally in the form queued, which must be retried.
//!
//! This is the only place that looks at the local filesystem for the scheduler: the push
//! worker calls it right after rsync, so the coalescer thread never stats anything.

use std::path::{Path, PathBuf};

use crate::job::{Entry, Op, PathFate};

/// What the local filesystem says about one queued entry now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalForm {
    /// The path exists with the kind queued (or, for a delete, is simply missing).
    AsQueued,
    /// Not in the form queued: an update whose path is missing, whose parent is no longer
    /// a directory (ENOTDIR), is a symlink loop (ELOOP), or changed between file and
    /// directory; a delete whose parent is gone or no longer a directory.
    Gone,
}

/// Looks `entry` up under `root` without following a final symlink.
pub fn local_form(root: &Path, entry: &Entry) -> LocalForm {
    let path = root.join(&entry.rel);
    let below_non_dir =
        |err: &std::io::Error| matches!(err.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP));
    // A delete whose parent is gone too cannot be carried out by rsync (it cannot reach
    // the path: "file has vanished" for the parent); the parent's own delete or
    // replacement, queued on its own, removes it remotely.
    let parent_gone = || {
        entry.rel.parent().is_some_and(|p| {
            !p.as_os_str().is_empty()
                && !std::fs::symlink_metadata(root.join(p)).is_ok_and(|m| m.is_dir())
        })
    };
    match (entry.op, std::fs::symlink_metadata(&path)) {
        (Op::Update, Ok(meta)) if meta.is_dir() == entry.is_dir => LocalForm::AsQueued,
        (Op::Update, _) => LocalForm::Gone,
        (Op::Delete, Err(err)) if below_non_dir(&err) => LocalForm::Gone,
        (Op::Delete, Err(_)) if parent_gone() => LocalForm::Gone,
        (Op::Delete, _) => LocalForm::AsQueued,
    }
}

/// The fate of each entry (index-aligned), from each entry's [`LocalForm`] and the paths
/// rsync's messages named (`reported`, as printed; `None`: too many to keep).
///
/// A gone entry is [`PathFate::Gone`] whatever rsync said. Otherwise an entry rsync named
/// (itself or an ancestor of it) is retried; when some message names no entry of the
/// batch (a temporary file, a receiver-side path we cannot map), nobody is trusted as
/// done and every entry still there is retried. The rest arrived.
pub fn fates(
    root: &Path,
    entries: &[Entry],
    forms: &[LocalForm],
    reported: Option<&[PathBuf]>,
) -> Vec<PathFate> {
    let named: Option<Vec<PathBuf>> =
        reported.map(|paths| paths.iter().map(|p| root_relative(root, p)).collect());
    let attributed = |rel: &Path| {
        named
            .as_deref()
            .is_some_and(|named| named.iter().any(|n| rel.starts_with(n)))
    };
    let unknown = named.as_deref().is_none_or(|named| {
        named
            .iter()
            .any(|n| !entries.iter().any(|e| e.rel.starts_with(n)))
    });
    entries
        .iter()
        .zip(forms)
        .map(|(entry, form)| match form {
            LocalForm::Gone => PathFate::Gone,
            LocalForm::AsQueued if unknown || attributed(&entry.rel) => PathFate::Retry,
            LocalForm::AsQueued => PathFate::Done,
        })
        .collect()
}

/// A path as rsync printed it, relative to the root: the sender prints `<root>/<rel>`,
/// a daemon receiver `/<rel>` or `<rel>`.
fn root_relative(root: &Path, printed: &Path) -> PathBuf {
    let rel = printed
        .strip_prefix(root)
        .or_else(|_| printed.strip_prefix("/"))
        .unwrap_or(printed);
    // `-R` with `./a/b` prints `<root>/./a/b` in some messages.
    rel.components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(rel: &str, op: Op, is_dir: bool) -> Entry {
        Entry {
            rel: PathBuf::from(rel).into(),
            op,
            is_dir,
        }
    }

    #[test]
    fn local_form_table() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::write(root.join("p"), b"now a file").expect("p");
        std::fs::create_dir(root.join("d")).expect("d");
        std::fs::write(root.join("f"), b"f").expect("f");
        std::os::unix::fs::symlink("loop", root.join("loop")).expect("loop");
        std::os::unix::fs::symlink("d", root.join("link")).expect("link");
        let table = [
            (entry("f", Op::Update, false), LocalForm::AsQueued),
            (entry("d", Op::Update, true), LocalForm::AsQueued),
            (entry("p/child", Op::Update, false), LocalForm::Gone),
            (entry("p", Op::Update, true), LocalForm::Gone),
            (entry("d", Op::Update, false), LocalForm::Gone),
            (entry("missing", Op::Update, false), LocalForm::Gone),
            (entry("loop/x", Op::Update, false), LocalForm::Gone),
            (entry("link", Op::Update, true), LocalForm::Gone),
            (entry("link", Op::Update, false), LocalForm::AsQueued),
            (entry("missing", Op::Delete, false), LocalForm::AsQueued),
            (entry("d/missing", Op::Delete, false), LocalForm::AsQueued),
            (entry("gone/missing", Op::Delete, false), LocalForm::Gone),
            (entry("p/child", Op::Delete, false), LocalForm::Gone),
            (entry("loop/x", Op::Delete, true), LocalForm::Gone),
        ];
        for (entry, expected) in table {
            assert_eq!(local_form(root, &entry), expected, "{entry:?}");
        }
    }

    #[test]
    fn fates_table() {
        use LocalForm::{AsQueued, Gone};
        use PathFate::{Done, Retry};
        let root = Path::new("/srv/www");
        let entries = [
            entry("p/child", Op::Update, false),
            entry("ok", Op::Update, false),
            entry("locked", Op::Update, false),
        ];
        let p = |s: &str| PathBuf::from(s);
        // (forms, reported, expected)
        type Row<'a> = (&'a [LocalForm], Option<Vec<PathBuf>>, &'a [PathFate]);
        let table: &[Row<'_>] = &[
            // One bad path does not fail its companions.
            (
                &[Gone, AsQueued, AsQueued],
                Some(vec![p("/srv/www/p/child")]),
                &[PathFate::Gone, Done, Done],
            ),
            // A named path that still exists is retried alone.
            (
                &[AsQueued, AsQueued, AsQueued],
                Some(vec![p("/srv/www/./locked")]),
                &[Done, Done, Retry],
            ),
            // A daemon receiver names module-relative paths.
            (
                &[AsQueued, AsQueued, AsQueued],
                Some(vec![p("/locked")]),
                &[Done, Done, Retry],
            ),
            // An ancestor that vanished names every entry below it.
            (
                &[AsQueued, AsQueued, AsQueued],
                Some(vec![p("/srv/www/p")]),
                &[Retry, Done, Done],
            ),
            // A message that names no entry: nobody is trusted as done.
            (
                &[Gone, AsQueued, AsQueued],
                Some(vec![p("/srv/www/.ok.Xy12ab")]),
                &[PathFate::Gone, Retry, Retry],
            ),
            // Too many messages to keep: the same.
            (
                &[AsQueued, AsQueued, Gone],
                None,
                &[Retry, Retry, PathFate::Gone],
            ),
            // Exit 24 with nothing named: all arrived.
            (
                &[AsQueued, AsQueued, AsQueued],
                Some(vec![]),
                &[Done, Done, Done],
            ),
        ];
        for (forms, reported, expected) in table {
            assert_eq!(
                fates(root, &entries, forms, reported.as_deref()),
                expected.to_vec(),
                "{forms:?} {reported:?}"
            );
        }
    }
}
