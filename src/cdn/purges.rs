//! CDN purges kept in the failure journal, under one key per root
//! ([`TargetKey::cdn`], `v2 cdn <root>`; 0.1.0 wrote `cdn <root>`, moved on start).

use std::path::PathBuf;
use std::sync::Arc;

use super::PurgeJournal;
use crate::coalesce::Journal;
use crate::job::{Entry, Op, Scope, Work};
use crate::journal_key::TargetKey;

/// [`PurgeJournal`] on top of the failure journal.
pub struct JournalPurges {
    journal: Arc<dyn Journal>,
    roots: Vec<PathBuf>,
}

impl JournalPurges {
    /// Purges of `roots[i]` are journaled under [`TargetKey::cdn`]`(roots[i])`. Entries
    /// 0.1.0 wrote under `cdn <root>` are moved to the current key first.
    pub fn new(journal: Arc<dyn Journal>, roots: Vec<PathBuf>) -> JournalPurges {
        let purges = JournalPurges { journal, roots };
        for (root, path) in purges.roots.iter().enumerate() {
            let legacy = TargetKey::cdn(path).legacy_text();
            let old: Vec<Work> = purges
                .journal
                .pending()
                .into_iter()
                .filter(|(k, _)| *k == legacy)
                .map(|(_, w)| w)
                .collect();
            if old.is_empty() {
                continue;
            }
            let scopes: Vec<Scope> = old.iter().map(Work::scope).collect();
            let key = purges.key(root);
            let moved = purges
                .journal
                .record(&key, &old, None, "purge journaled by sersync 0.1.0", "")
                .and_then(|()| purges.journal.clear(&legacy, &scopes));
            if let Err(err) = moved {
                log::error!("{key}: cannot move 0.1.0 purges: {err}");
            }
        }
        purges
    }

    fn key(&self, root: usize) -> String {
        self.roots.get(root).map_or_else(
            || format!("v2 cdn root{root}"),
            |p| TargetKey::cdn(p).to_string(),
        )
    }
}

impl PurgeJournal for JournalPurges {
    fn record(&self, root: usize, items: &[(PathBuf, bool)], reason: &str) {
        let entries: Vec<Work> = items
            .iter()
            .map(|(rel, is_dir)| {
                Work::Path(Entry {
                    rel: crate::rel::Rel::verbatim(rel.clone()),
                    op: Op::Update,
                    is_dir: *is_dir,
                })
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
        let scopes: Vec<Scope> = rels.iter().cloned().map(Scope::from_storage).collect();
        if let Err(err) = self.journal.clear(&self.key(root), &scopes) {
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
            .filter_map(|(k, w)| match w {
                Work::Path(e) if k == key => Some((e.rel.into(), e.is_dir)),
                _ => None,
            })
            .collect()
    }
}
