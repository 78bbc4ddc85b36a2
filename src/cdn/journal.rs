//! Where failed purges wait for their retry: the [`PurgeJournal`] contract, and
//! [`MemoryJournal`], a volatile implementation for tests and `-m refreshCDN`.
//!
//! The daemon implements the trait on its durable failure journal (`faillog`), so a
//! purge that failed survives a restart and is retried like a failed push.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

/// Durable storage of purges that have not succeeded yet, per root.
///
/// Items are `(path relative to the root, is_dir)`; recording an item twice keeps it
/// once. All methods are called from the `sersync-cdn` thread only, but the journal is
/// shared with the rest of the daemon, hence `Send + Sync`.
pub trait PurgeJournal: Send + Sync {
    /// Remembers that these purges of root `root` failed (or could not be tried yet)
    /// because of `reason` (a short text without secrets).
    fn record(&self, root: usize, items: &[(PathBuf, bool)], reason: &str);
    /// Forgets these paths of root `root`: their purge succeeded.
    fn clear(&self, root: usize, rels: &[PathBuf]);
    /// Every purge of root `root` still waiting, oldest first.
    fn pending(&self, root: usize) -> Vec<(PathBuf, bool)>;
}

/// Per root: `(rel, is_dir, last failure reason)`, in insertion order.
type Entries = BTreeMap<usize, Vec<(PathBuf, bool, String)>>;

/// A [`PurgeJournal`] kept in memory: lost on exit. Used by tests and where no failure
/// journal is configured.
#[derive(Debug, Default)]
pub struct MemoryJournal {
    roots: Mutex<Entries>,
}

impl MemoryJournal {
    /// An empty journal.
    pub fn new() -> MemoryJournal {
        MemoryJournal::default()
    }

    /// The number of purges waiting for root `root`.
    pub fn len(&self, root: usize) -> usize {
        self.lock().get(&root).map_or(0, Vec::len)
    }

    /// The last failure reason recorded for `rel` of root `root`.
    pub fn reason(&self, root: usize, rel: &std::path::Path) -> Option<String> {
        self.lock()
            .get(&root)?
            .iter()
            .find(|(item, _, _)| item == rel)
            .map(|(_, _, reason)| reason.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        match self.roots.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

impl PurgeJournal for MemoryJournal {
    fn record(&self, root: usize, items: &[(PathBuf, bool)], reason: &str) {
        let mut roots = self.lock();
        let entries = roots.entry(root).or_default();
        for (rel, is_dir) in items {
            match entries
                .iter_mut()
                .find(|(item, dir, _)| item == rel && dir == is_dir)
            {
                Some(entry) => reason.clone_into(&mut entry.2),
                None => entries.push((rel.clone(), *is_dir, reason.to_owned())),
            }
        }
    }

    fn clear(&self, root: usize, rels: &[PathBuf]) {
        if let Some(entries) = self.lock().get_mut(&root) {
            entries.retain(|(item, _, _)| !rels.contains(item));
        }
    }

    fn pending(&self, root: usize) -> Vec<(PathBuf, bool)> {
        self.lock().get(&root).map_or_else(Vec::new, |entries| {
            entries
                .iter()
                .map(|(rel, is_dir, _)| (rel.clone(), *is_dir))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn record_dedups_and_clear_forgets() {
        let journal = MemoryJournal::new();
        let a = (PathBuf::from("a"), false);
        let b = (PathBuf::from("b"), true);
        journal.record(0, &[a.clone(), b.clone()], "down");
        journal.record(0, std::slice::from_ref(&a), "still down");
        assert_eq!(journal.pending(0), vec![a.clone(), b.clone()]);
        assert_eq!(
            journal.reason(0, Path::new("a")).as_deref(),
            Some("still down")
        );
        assert!(journal.pending(1).is_empty());
        journal.clear(0, &[PathBuf::from("a")]);
        assert_eq!(journal.pending(0), vec![b]);
        assert_eq!(journal.len(0), 1);
    }
}
