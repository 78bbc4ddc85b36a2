//! Which changes have reached every remote of their root: what plugins and the CDN get.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::job::{Change, Delivered, Op};

struct Owed {
    remaining: Vec<usize>,
    op: Op,
    is_dir: bool,
    mask: u32,
}

/// Per (root, path): the remotes a change still has to reach. Pure state.
#[derive(Default)]
pub struct Delivery {
    owed: BTreeMap<(usize, PathBuf), Owed>,
}

impl Delivery {
    /// A change every one of `n_remotes` remotes of its root now owes. A directory delete
    /// forgets what was owed below it (those changes will never be pushed).
    pub fn owe(&mut self, change: &Change, n_remotes: usize) {
        if change.op == Op::Delete && change.is_dir {
            self.forget_below(change.root, &change.rel);
        }
        let owed = Owed {
            remaining: (0..n_remotes).collect(),
            op: change.op,
            is_dir: change.is_dir,
            mask: change.mask,
        };
        self.owed.insert((change.root, change.rel.clone()), owed);
    }

    /// `remote` of `root` now has `rel`; returns the change once every remote has it.
    pub fn reached(&mut self, root: usize, remote: usize, rel: &Path) -> Option<Delivered> {
        let key = (root, rel.to_path_buf());
        let owed = self.owed.get_mut(&key)?;
        owed.remaining.retain(|r| *r != remote);
        if !owed.remaining.is_empty() {
            return None;
        }
        let owed = self.owed.remove(&key)?;
        Some(Delivered {
            root,
            rel: key.1,
            op: owed.op,
            is_dir: owed.is_dir,
            mask: owed.mask,
        })
    }

    /// Forgets what is owed strictly below `rel`: a directory deleted, or moved (what was
    /// queued below its old name follows it in the queue, and what was below its new
    /// name is replaced).
    pub fn forget_below(&mut self, root: usize, rel: &Path) {
        let below: Vec<_> = self
            .owed
            .range((root, rel.to_path_buf())..)
            .skip_while(|((r, p), _)| *r == root && p == rel)
            .take_while(|((r, p), _)| *r == root && p.starts_with(rel))
            .map(|(k, _)| k.clone())
            .collect();
        for key in below {
            self.owed.remove(&key);
        }
    }

    /// `rel` no longer exists as it was changed: nothing about it will be delivered (the
    /// event that removed or replaced it is owed on its own).
    pub fn forget(&mut self, root: usize, rel: &Path) {
        self.owed.remove(&(root, rel.to_path_buf()));
    }

    /// Changes still owed.
    pub fn len(&self) -> usize {
        self.owed.len()
    }

    /// What is owed (tests print it).
    #[cfg(test)]
    pub fn owed_paths(&self) -> Vec<PathBuf> {
        self.owed.keys().map(|(_, p)| p.clone()).collect()
    }

    /// Whether nothing is owed.
    pub fn is_empty(&self) -> bool {
        self.owed.is_empty()
    }
}
