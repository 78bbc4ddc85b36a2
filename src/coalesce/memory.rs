//! A journal kept in memory: for tests, and for modes without a journal file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use super::journal::Journal;
use crate::job::Entry;

/// Journal entries in a map; lost when the process ends.
#[derive(Debug, Default)]
pub struct MemoryJournal {
    entries: Mutex<BTreeMap<(String, PathBuf), Entry>>,
}

impl MemoryJournal {
    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there are no live entries.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, PathBuf), Entry>> {
        match self.entries.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

impl Journal for MemoryJournal {
    fn record(
        &self,
        key: &str,
        entries: &[Entry],
        _code: Option<i32>,
        _reason: &str,
        _command: &str,
    ) -> Result<(), String> {
        let mut map = self.lock();
        for entry in entries {
            map.insert((key.to_owned(), entry.rel.clone()), entry.clone());
        }
        Ok(())
    }

    fn clear(&self, key: &str, rels: &[PathBuf]) -> Result<(), String> {
        let mut map = self.lock();
        for rel in rels {
            map.remove(&(key.to_owned(), rel.clone()));
        }
        Ok(())
    }

    fn pending(&self) -> Vec<(String, Entry)> {
        self.lock()
            .iter()
            .map(|((key, _), entry)| (key.clone(), entry.clone()))
            .collect()
    }
}
