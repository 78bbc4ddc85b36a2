//! CDN purges kept in the failure journal, under one key per root (`cdn <root>`).

use std::path::PathBuf;
use std::sync::Arc;

use super::state::Journal;
use crate::cdn::PurgeJournal;
use crate::job::{Entry, Op};

/// Journal keys of CDN purges start with this; the scheduler leaves them to the CDN stage.
pub const CDN_KEY_PREFIX: &str = "cdn ";

/// [`PurgeJournal`] on top of the failure journal.
pub struct JournalPurges {
    journal: Arc<dyn Journal>,
    roots: Vec<PathBuf>,
}

impl JournalPurges {
    /// Purges of `roots[i]` are journaled under `cdn <roots[i]>`.
    pub fn new(journal: Arc<dyn Journal>, roots: Vec<PathBuf>) -> JournalPurges {
        JournalPurges { journal, roots }
    }

    fn key(&self, root: usize) -> String {
        let path = self
            .roots
            .get(root)
            .map_or_else(|| root.to_string(), |p| p.display().to_string());
        format!("{CDN_KEY_PREFIX}{path}")
    }
}

impl PurgeJournal for JournalPurges {
    fn record(&self, root: usize, items: &[(PathBuf, bool)], reason: &str) {
        let entries: Vec<Entry> = items
            .iter()
            .map(|(rel, is_dir)| Entry {
                rel: rel.clone(),
                op: Op::Update,
                is_dir: *is_dir,
            })
            .collect();
        if let Err(err) = self
            .journal
            .record(&self.key(root), &entries, None, reason, "")
        {
            log::error!(
                "{}: cannot journal {} failed purge(s): {err}",
                self.key(root),
                entries.len()
            );
        }
    }

    fn clear(&self, root: usize, rels: &[PathBuf]) {
        if let Err(err) = self.journal.clear(&self.key(root), rels) {
            log::error!(
                "{}: cannot clear {} purge(s) from the journal: {err}",
                self.key(root),
                rels.len()
            );
        }
    }

    fn pending(&self, root: usize) -> Vec<(PathBuf, bool)> {
        let key = self.key(root);
        self.journal
            .pending()
            .into_iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, e)| (e.rel, e.is_dir))
            .collect()
    }
}
