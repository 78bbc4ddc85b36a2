//! The watch map: inotify watch descriptor ⇄ watched directory (root index + path
//! relative to the root).
//!
//! Pure data, no I/O: the caller adds and removes the kernel watches and keeps this map
//! in step. It holds one entry per watched directory, so memory is O(directories).
//! Paths are kept in a `BTreeMap` ordered by `(root, path)`; `Path` orders component by
//! component, so a directory's descendants form one contiguous range right after it,
//! which makes renaming or dropping a whole subtree a range walk instead of a scan of
//! every watch (the original's `RemoveWatch` was linear).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};

/// One watched directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dir<W> {
    /// Index of the root in `Config::roots`.
    pub(crate) root: usize,
    /// Path relative to the root (empty for the root itself).
    pub(crate) rel: PathBuf,
    /// Whatever the caller needs to remove the kernel watch later (the inotify crate's
    /// `WatchDescriptor`; `()` in tests).
    pub(crate) handle: W,
}

/// Watch descriptor ⇄ path, both ways.
#[derive(Debug)]
pub(crate) struct Tree<W> {
    by_wd: HashMap<i32, Dir<W>>,
    by_path: BTreeMap<(usize, PathBuf), i32>,
}

impl<W> Default for Tree<W> {
    fn default() -> Self {
        Tree {
            by_wd: HashMap::new(),
            by_path: BTreeMap::new(),
        }
    }
}

impl<W> Tree<W> {
    /// Number of watched directories.
    pub(crate) fn len(&self) -> usize {
        self.by_wd.len()
    }

    /// The directory watched by `wd`, if it is still known.
    pub(crate) fn get(&self, wd: i32) -> Option<&Dir<W>> {
        self.by_wd.get(&wd)
    }

    /// The watch descriptor of a directory, if it is watched.
    pub(crate) fn wd_of(&self, root: usize, rel: &Path) -> Option<i32> {
        self.by_path.get(&(root, rel.to_path_buf())).copied()
    }

    /// Records that `wd` watches `root`/`rel`.
    ///
    /// `inotify_add_watch` returns the existing descriptor when the inode is already
    /// watched, so `wd` may already be known under an older path (a renamed directory):
    /// that path is forgotten. If `rel` was known under another descriptor, that
    /// directory has been replaced (deleted or moved away, and its `IN_IGNORED` not read
    /// yet); its entry is dropped and returned so that the caller can remove the watch.
    pub(crate) fn insert(
        &mut self,
        wd: i32,
        handle: W,
        root: usize,
        rel: PathBuf,
    ) -> Option<Dir<W>> {
        if let Some(old) = self.by_wd.remove(&wd) {
            self.by_path.remove(&(old.root, old.rel));
        }
        let displaced = match self.by_path.insert((root, rel.clone()), wd) {
            Some(other) if other != wd => self.by_wd.remove(&other),
            _ => None,
        };
        self.by_wd.insert(wd, Dir { root, rel, handle });
        displaced
    }

    /// Forgets one descriptor (after `IN_IGNORED`: the kernel dropped the watch).
    pub(crate) fn remove_wd(&mut self, wd: i32) -> Option<Dir<W>> {
        let dir = self.by_wd.remove(&wd)?;
        self.by_path.remove(&(dir.root, dir.rel.clone()));
        Some(dir)
    }

    /// The keys of `rel` and everything below it, in path order.
    fn subtree_keys(&self, root: usize, rel: &Path) -> Vec<(usize, PathBuf)> {
        let start = (root, rel.to_path_buf());
        self.by_path
            .range((Bound::Included(start), Bound::Unbounded))
            .take_while(|((r, path), _)| *r == root && path.starts_with(rel))
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Forgets `rel` and every directory below it; returns them so that the caller can
    /// remove the kernel watches (moved out of the tree, or now excluded).
    pub(crate) fn remove_subtree(&mut self, root: usize, rel: &Path) -> Vec<(i32, Dir<W>)> {
        let mut removed = Vec::new();
        for key in self.subtree_keys(root, rel) {
            // Both maps always hold the same set, so the second lookup cannot miss.
            if let Some(wd) = self.by_path.remove(&key) {
                if let Some(dir) = self.by_wd.remove(&wd) {
                    removed.push((wd, dir));
                }
            }
        }
        removed
    }

    /// Rewrites the paths of `from` and all its descendants to live under `to` (possibly
    /// in another root): a renamed directory keeps its inodes and so its watches; only
    /// the cached paths are wrong. Whatever was watched under `to` before (a directory
    /// the rename replaced, or the other half of an exchange) is taken out and returned.
    /// Returns how many entries moved too.
    pub(crate) fn rename_subtree(
        &mut self,
        from_root: usize,
        from: &Path,
        to_root: usize,
        to: &Path,
    ) -> (usize, Vec<(i32, Dir<W>)>) {
        if from_root == to_root && from == to {
            return (0, Vec::new());
        }
        let moving = self.remove_subtree(from_root, from);
        let replaced = self.remove_subtree(to_root, to);
        let moved = moving.len();
        self.graft(moving, from, to_root, to);
        (moved, replaced)
    }

    /// Puts entries taken out of the map below `from` back in below `to_root`/`to`.
    pub(crate) fn graft(
        &mut self,
        entries: Vec<(i32, Dir<W>)>,
        from: &Path,
        to_root: usize,
        to: &Path,
    ) {
        for (wd, dir) in entries {
            // `strip_prefix` cannot fail for entries of `from`'s subtree.
            let suffix = dir.rel.strip_prefix(from).unwrap_or(Path::new(""));
            let rel = if suffix.as_os_str().is_empty() {
                to.to_path_buf()
            } else {
                to.join(suffix)
            };
            self.by_path.insert((to_root, rel.clone()), wd);
            self.by_wd.insert(
                wd,
                Dir {
                    root: to_root,
                    rel,
                    handle: dir.handle,
                },
            );
        }
    }

    /// Takes every entry out, leaving the map empty.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = (i32, Dir<W>)> + '_ {
        self.by_path.clear();
        self.by_wd.drain()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(entries: &[(i32, usize, &str)]) -> Tree<()> {
        let mut tree = Tree::default();
        for (wd, root, rel) in entries {
            assert!(tree.insert(*wd, (), *root, PathBuf::from(rel)).is_none());
        }
        tree
    }

    fn path_of(tree: &Tree<()>, wd: i32) -> Option<(usize, String)> {
        tree.get(wd)
            .map(|dir| (dir.root, dir.rel.to_string_lossy().into_owned()))
    }

    #[test]
    fn insert_maps_both_ways() {
        let tree = tree(&[(1, 0, ""), (2, 0, "a"), (3, 1, "a")]);
        assert_eq!(tree.len(), 3);
        assert_eq!(path_of(&tree, 2), Some((0, "a".into())));
        assert_eq!(tree.wd_of(1, Path::new("a")), Some(3));
        assert_eq!(tree.wd_of(1, Path::new("b")), None);
        assert_eq!(path_of(&tree, 9), None);
    }

    #[test]
    fn reinsert_of_known_wd_moves_it() {
        let mut tree = tree(&[(1, 0, ""), (2, 0, "a")]);
        assert!(tree.insert(2, (), 0, "b".into()).is_none());
        assert_eq!(tree.len(), 2);
        assert_eq!(tree.wd_of(0, Path::new("a")), None);
        assert_eq!(tree.wd_of(0, Path::new("b")), Some(2));
    }

    #[test]
    fn insert_over_replaced_directory_returns_old_watch() {
        let mut tree = tree(&[(1, 0, ""), (2, 0, "a")]);
        let displaced = tree
            .insert(7, (), 0, "a".into())
            .expect("old watch returned");
        assert_eq!(displaced.rel, PathBuf::from("a"));
        assert_eq!(tree.len(), 2);
        assert_eq!(path_of(&tree, 2), None);
        assert_eq!(tree.wd_of(0, Path::new("a")), Some(7));
    }

    #[test]
    fn remove_subtree_takes_descendants_only() {
        let mut tree = tree(&[
            (1, 0, ""),
            (2, 0, "a"),
            (3, 0, "a/b"),
            (4, 0, "a/b/c"),
            (5, 0, "ab"),
            (6, 0, "a0"),
            (7, 0, "a b"),
            (8, 1, "a"),
        ]);
        let mut removed: Vec<i32> = tree
            .remove_subtree(0, Path::new("a"))
            .into_iter()
            .map(|(wd, _)| wd)
            .collect();
        removed.sort_unstable();
        assert_eq!(removed, vec![2, 3, 4]);
        assert_eq!(tree.len(), 5);
        for wd in [1, 5, 6, 7, 8] {
            assert!(tree.get(wd).is_some(), "wd {wd} kept");
        }
    }

    #[test]
    fn remove_subtree_of_root_takes_whole_root() {
        let mut tree = tree(&[(1, 0, ""), (2, 0, "a"), (3, 0, "a/b"), (4, 1, "")]);
        assert_eq!(tree.remove_subtree(0, Path::new("")).len(), 3);
        assert_eq!(tree.len(), 1);
    }

    #[test]
    fn rename_subtree_rewrites_prefix() {
        let mut tree = tree(&[
            (1, 0, ""),
            (2, 0, "a"),
            (3, 0, "a/b"),
            (4, 0, "a/b/c"),
            (5, 0, "ab"),
        ]);
        let (moved, replaced) = tree.rename_subtree(0, Path::new("a"), 0, Path::new("x/y"));
        assert_eq!(moved, 3);
        assert!(replaced.is_empty());
        assert_eq!(path_of(&tree, 2), Some((0, "x/y".into())));
        assert_eq!(path_of(&tree, 3), Some((0, "x/y/b".into())));
        assert_eq!(path_of(&tree, 4), Some((0, "x/y/b/c".into())));
        assert_eq!(path_of(&tree, 5), Some((0, "ab".into())));
        assert_eq!(tree.wd_of(0, Path::new("a/b")), None);
        assert_eq!(tree.wd_of(0, Path::new("x/y/b/c")), Some(4));
        assert_eq!(tree.len(), 5);
    }

    #[test]
    fn rename_subtree_across_roots() {
        let mut tree = tree(&[(1, 0, ""), (2, 0, "a"), (3, 0, "a/b"), (4, 1, "")]);
        let (moved, _) = tree.rename_subtree(0, Path::new("a"), 1, Path::new("z"));
        assert_eq!(moved, 2);
        assert_eq!(path_of(&tree, 3), Some((1, "z/b".into())));
        assert_eq!(tree.wd_of(1, Path::new("z")), Some(2));
    }

    #[test]
    fn rename_over_existing_directory_replaces_it() {
        let mut tree = tree(&[(1, 0, ""), (2, 0, "a"), (3, 0, "b"), (4, 0, "b/old")]);
        let (moved, replaced) = tree.rename_subtree(0, Path::new("a"), 0, Path::new("b"));
        assert_eq!(moved, 1);
        assert_eq!(replaced.len(), 2);
        assert_eq!(tree.wd_of(0, Path::new("b")), Some(2));
        assert_eq!(tree.len(), 2);
    }

    #[test]
    fn exchange_of_two_directories_via_graft() {
        let mut tree = tree(&[
            (1, 0, ""),
            (2, 0, "a"),
            (3, 0, "a/x"),
            (4, 0, "b"),
            (5, 0, "b/y"),
        ]);
        // renameat2(RENAME_EXCHANGE) is reported as a→b then b→a.
        let (_, replaced) = tree.rename_subtree(0, Path::new("a"), 0, Path::new("b"));
        tree.graft(replaced, Path::new("b"), 0, Path::new("a"));
        assert_eq!(path_of(&tree, 2), Some((0, "b".into())));
        assert_eq!(path_of(&tree, 3), Some((0, "b/x".into())));
        assert_eq!(path_of(&tree, 4), Some((0, "a".into())));
        assert_eq!(path_of(&tree, 5), Some((0, "a/y".into())));
        assert_eq!(tree.len(), 5);
    }

    #[test]
    fn rename_into_own_name_is_noop() {
        let mut tree = tree(&[(1, 0, ""), (2, 0, "a")]);
        assert_eq!(
            tree.rename_subtree(0, Path::new("a"), 0, Path::new("a")).0,
            0
        );
        assert_eq!(tree.wd_of(0, Path::new("a")), Some(2));
    }

    #[test]
    fn remove_wd_forgets_path() {
        let mut tree = tree(&[(1, 0, ""), (2, 0, "a")]);
        assert!(tree.remove_wd(2).is_some());
        assert!(tree.remove_wd(2).is_none());
        assert_eq!(tree.wd_of(0, Path::new("a")), None);
        assert_eq!(tree.len(), 1);
    }

    #[test]
    fn non_utf8_paths_are_kept_exact() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let name = OsStr::from_bytes(b"caf\xe9");
        let mut tree = Tree::default();
        tree.insert(1, (), 0, PathBuf::from(name));
        tree.insert(2, (), 0, Path::new(name).join("x"));
        tree.rename_subtree(0, Path::new(name), 0, Path::new("ok"));
        assert_eq!(tree.wd_of(0, Path::new("ok/x")), Some(2));
    }
}
