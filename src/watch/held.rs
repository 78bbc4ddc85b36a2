//! `IN_MODIFY` coalescing: with `<modify start="true"/>` every `write(2)` raises an event,
//! and sending each one would start an rsync run per write. A modified file is held
//! instead, and released as one update by its `IN_CLOSE_WRITE` (an ordinary write then
//! costs what it costs with `closeWrite` alone), or after [`MODIFY_SETTLE`] when no close
//! comes (`truncate(2)` by path, a log file kept open). The caller releases every held
//! file before an event that changes the tree's shape (create, delete, move), so the
//! output stays in kernel order: `echo x >> f; mv f g` still ends with `f` deleted.
//!
//! Pure: the clock is an argument.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::job::{Change, FsEvent, Op};

/// How long a modified file that is not closed waits before its update is sent.
pub const MODIFY_SETTLE: Duration = Duration::from_millis(500);

/// A held modification, as it will be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeldChange {
    pub(crate) root: usize,
    pub(crate) rel: PathBuf,
    /// Raw mask of the first `IN_MODIFY`.
    pub(crate) mask: u32,
    /// When the first `IN_MODIFY` was read.
    pub(crate) seen: Instant,
}

impl HeldChange {
    /// The update it goes out as (a file's: directories are never held).
    pub(crate) fn into_update(self) -> FsEvent {
        FsEvent::Change(Change {
            root: self.root,
            rel: self.rel,
            op: Op::Update,
            is_dir: false,
            mask: self.mask,
            seen: self.seen,
        })
    }
}

/// Modified files waiting for their close or their deadline.
#[derive(Debug, Default)]
pub(crate) struct Held {
    by_path: HashMap<(usize, PathBuf), (u32, Instant)>,
    /// `(deadline, key)` in arrival order, so deadlines are ascending; entries whose
    /// key was released meanwhile are skipped when they come up.
    order: VecDeque<(Instant, (usize, PathBuf))>,
}

impl Held {
    /// Holds `rel` (a no-op when it is held already: the first write sets the deadline,
    /// so a file written for ever is still sent every [`MODIFY_SETTLE`]).
    pub(crate) fn hold(&mut self, root: usize, rel: PathBuf, mask: u32, now: Instant) {
        let key = (root, rel);
        if self.by_path.contains_key(&key) {
            return;
        }
        self.by_path.insert(key.clone(), (mask, now));
        self.order.push_back((now + MODIFY_SETTLE, key));
    }

    /// Takes `rel` out if it is held (its close arrived).
    pub(crate) fn release(&mut self, root: usize, rel: PathBuf) -> Option<HeldChange> {
        let key = (root, rel);
        let (mask, seen) = self.by_path.remove(&key)?;
        Some(HeldChange {
            root: key.0,
            rel: key.1,
            mask,
            seen,
        })
    }

    /// The earliest deadline (possibly of a released entry: an early wake-up at worst).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.order.front().map(|(deadline, _)| *deadline)
    }

    /// Takes out every file whose deadline is at or before `now`.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<HeldChange> {
        let mut due = Vec::new();
        while self
            .order
            .front()
            .is_some_and(|(deadline, _)| *deadline <= now)
        {
            let Some((deadline, key)) = self.order.pop_front() else {
                break;
            };
            // Released and held again since: the newer hold has its own later entry.
            let current = self
                .by_path
                .get(&key)
                .is_some_and(|(_, seen)| *seen + MODIFY_SETTLE == deadline);
            if current {
                if let Some(change) = self.release(key.0, key.1) {
                    due.push(change);
                }
            }
        }
        due
    }

    /// Takes out everything, oldest first.
    pub(crate) fn take_all(&mut self) -> Vec<HeldChange> {
        let mut all = Vec::new();
        for (_, (root, rel)) in std::mem::take(&mut self.order) {
            if let Some(change) = self.release(root, rel) {
                all.push(change);
            }
        }
        all
    }

    /// Whether nothing is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rels(changes: &[HeldChange]) -> Vec<&str> {
        changes
            .iter()
            .map(|c| c.rel.to_str().unwrap_or("?"))
            .collect()
    }

    #[test]
    fn many_writes_are_one_release() {
        let t0 = Instant::now();
        let mut held = Held::default();
        for i in 0..100 {
            held.hold(0, "f".into(), 2, t0 + Duration::from_millis(i));
        }
        assert_eq!(held.deadline(), Some(t0 + MODIFY_SETTLE));
        let released = held.release(0, "f".into()).expect("held");
        assert_eq!(released.seen, t0);
        assert!(held.release(0, "f".into()).is_none());
        assert!(held.is_empty());
        // The stale order entry is skipped when it comes due.
        assert!(held.due(t0 + MODIFY_SETTLE).is_empty());
        assert_eq!(held.deadline(), None);
    }

    #[test]
    fn unclosed_files_come_due_in_order() {
        let t0 = Instant::now();
        let mut held = Held::default();
        held.hold(0, "a".into(), 2, t0);
        held.hold(1, "b".into(), 2, t0 + Duration::from_millis(100));
        assert!(
            held.due(t0 + MODIFY_SETTLE - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(rels(&held.due(t0 + MODIFY_SETTLE)), ["a"]);
        assert_eq!(
            rels(&held.due(t0 + MODIFY_SETTLE + Duration::from_millis(100))),
            ["b"]
        );
        assert!(held.is_empty());
    }

    #[test]
    fn released_then_held_again_keeps_the_new_deadline() {
        let t0 = Instant::now();
        let mut held = Held::default();
        held.hold(0, "f".into(), 2, t0);
        assert!(held.release(0, "f".into()).is_some());
        let t1 = t0 + Duration::from_millis(300);
        held.hold(0, "f".into(), 2, t1);
        assert!(
            held.due(t0 + MODIFY_SETTLE).is_empty(),
            "old deadline ignored"
        );
        assert_eq!(rels(&held.due(t1 + MODIFY_SETTLE)), ["f"]);
    }

    #[test]
    fn take_all_empties_in_arrival_order() {
        let t0 = Instant::now();
        let mut held = Held::default();
        held.hold(0, "b".into(), 2, t0);
        held.hold(0, "a".into(), 2, t0);
        assert_eq!(rels(&held.take_all()), ["b", "a"]);
        assert!(held.is_empty());
        assert_eq!(held.deadline(), None);
    }
}
