//! A journal kept in memory: for tests, and for modes without a journal file.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::journal::Journal;
use crate::job::{Scope, Work};

/// Journal entries in a map; lost when the process ends.
#[derive(Debug, Default)]
pub struct MemoryJournal {
    entries: Mutex<BTreeMap<(String, Scope), Work>>,
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

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, Scope), Work>> {
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
        work: &[Work],
        _code: Option<i32>,
        _reason: &str,
        _command: &str,
    ) -> Result<(), String> {
        let mut map = self.lock();
        for w in work {
            map.insert((key.to_owned(), w.scope()), w.clone());
        }
        Ok(())
    }

    fn clear(&self, key: &str, scopes: &[Scope]) -> Result<(), String> {
        let mut map = self.lock();
        for scope in scopes {
            map.remove(&(key.to_owned(), scope.clone()));
        }
        Ok(())
    }

    fn pending(&self) -> Vec<(String, Work)> {
        self.lock()
            .iter()
            .map(|((key, _), work)| (key.clone(), work.clone()))
            .collect()
    }
}
