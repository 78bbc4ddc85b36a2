//! The pending changes of every remote of one root, in one ordered map.
//!
//! Every remote of a root is told every event of it, so their queues mostly hold the
//! same paths with the same change: ten remotes during a 10,000-file burst held ten
//! ordered maps of the same 10,000 paths (2.6 MB of the 7.7 MB heap peak of
//! `scripts/bench --fanout 10`), and merged each event ten times. The ledger holds each
//! path once, with one change ([`Pending`]) and the set of remotes whose change is
//! exactly that one; a remote whose change differs (it took the path and it changed
//! again, a retry's attempt count, a move's re-keying) keeps its own beside it. What a
//! remote sees through its [`PendingView`] is exactly what its own map held: the
//! sharing is storage only, so every rule of `queue.rs` and `moves.rs` is unchanged.
//!
//! An event reaches all remotes of its root at once ([`PendingView::merge_all`]: one
//! search, the shared change updated in place); everything else is per remote. The
//! ledger sits behind an [`AtomicRefCell`]: the scheduler thread is its only user, and
//! a borrow that overlapped another (a bug) panics at once instead of deadlocking.

use std::collections::btree_map::Entry as MapEntry;
use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use atomic_refcell::{AtomicRefCell, AtomicRefMut};

use super::{Pending, Rel, Seen};
use crate::job::Op;

/// Remotes `0..MEMBER_BITS` can share a change; others always keep their own.
const MEMBER_BITS: usize = 64;

/// One event as it is merged into a pending change: the latest operation wins, the
/// time first seen and the attempts of a change already pending stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Merge {
    /// What to do.
    pub op: Op,
    /// Whether the path is a directory.
    pub is_dir: bool,
    /// The event's mask, for plugins.
    pub mask: u32,
    /// When it was seen (kept only by a change it starts).
    pub seen: Seen,
}

impl Merge {
    /// The change it starts.
    pub fn fresh(self) -> Pending {
        Pending {
            op: self.op,
            is_dir: self.is_dir,
            mask: self.mask,
            seen: self.seen,
            attempts: 0,
        }
    }

    /// `old` with it merged in.
    pub fn onto(self, old: Pending) -> Pending {
        Pending {
            op: self.op,
            is_dir: self.is_dir,
            mask: self.mask,
            ..old
        }
    }
}

/// The pending changes of the remotes of one root.
#[derive(Debug, Default)]
pub struct Ledger {
    slots: BTreeMap<Rel, Slot>,
    /// Paths pending per remote.
    lens: Vec<usize>,
    /// The dispatch order every remote shares: paths that became pending for all of them
    /// at once, in order ([`Order`]). Entry `i` is position `log_base + i`.
    log: VecDeque<Rel>,
    log_base: u64,
    /// Per remote that reads the log (the first [`MEMBER_BITS`]): the position of the
    /// next entry it reads.
    cursors: Vec<u64>,
}

/// One path: the change most of its remotes have, who has it, and who has another.
#[derive(Debug, Clone)]
struct Slot {
    base: Pending,
    /// Bit `r`: remote `r`'s change is `base`.
    members: u64,
    /// Remotes whose change differs from `base`: rare, so boxed (a slot costs 8 bytes
    /// for it instead of a `Vec`'s 24; one slot per pending path of the root).
    #[allow(clippy::box_collection)]
    others: Option<Box<Vec<(usize, Pending)>>>,
}

fn bit(remote: usize) -> u64 {
    if remote < MEMBER_BITS { 1 << remote } else { 0 }
}

impl Slot {
    fn new(remote: usize, pending: Pending) -> Slot {
        let mut slot = Slot {
            base: pending,
            members: 0,
            others: None,
        };
        slot.add(remote, pending);
        slot
    }

    fn get(&self, remote: usize) -> Option<&Pending> {
        if self.members & bit(remote) != 0 {
            return Some(&self.base);
        }
        self.others
            .as_ref()?
            .iter()
            .find(|(r, _)| *r == remote)
            .map(|(_, p)| p)
    }

    fn is_empty(&self) -> bool {
        self.members == 0 && self.others.is_none()
    }

    /// Gives `remote` (which has no change here) `pending`.
    fn add(&mut self, remote: usize, pending: Pending) {
        let b = bit(remote);
        if b != 0 && (self.members == 0 || pending == self.base) {
            if self.members == 0 {
                self.base = pending;
            }
            self.members |= b;
            return;
        }
        self.others
            .get_or_insert_with(Default::default)
            .push((remote, pending));
    }

    /// Takes `remote`'s change away.
    fn remove(&mut self, remote: usize) -> Option<Pending> {
        let b = bit(remote);
        let found = if self.members & b != 0 {
            self.members &= !b;
            Some(self.base)
        } else {
            let others = self.others.as_mut()?;
            let at = others.iter().position(|(r, _)| *r == remote)?;
            Some(others.swap_remove(at).1)
        };
        self.tidy();
        found
    }

    /// Sets `remote`'s change (it has one) to `pending`.
    fn replace(&mut self, remote: usize, pending: Pending) {
        let b = bit(remote);
        if self.members & b != 0 {
            if self.members == b {
                self.base = pending; // the only member: changed in place
                return;
            }
            self.members &= !b;
        } else if let Some(others) = self.others.as_mut() {
            others.retain(|(r, _)| *r != remote);
        }
        self.add(remote, pending);
        self.tidy();
    }

    /// Every remote of `others` whose change equals `base` (two changes can become
    /// equal when an event overwrites both) shares it again; with no member left, the
    /// first remote of `others` that can be a member brings its change to `base` first.
    fn tidy(&mut self) {
        let Some(others) = self.others.as_mut() else {
            return;
        };
        if self.members == 0 {
            if let Some(&(_, base)) = others.iter().find(|(r, _)| bit(*r) != 0) {
                self.base = base;
            }
        }
        let base = self.base;
        others.retain(|(r, p)| {
            let joins = bit(*r) != 0 && *p == base;
            if joins {
                self.members |= bit(*r);
            }
            !joins
        });
        if others.is_empty() {
            self.others = None;
        }
    }
}

impl Ledger {
    /// A ledger for a root, shared by the views of its remotes.
    pub fn shared() -> Arc<AtomicRefCell<Ledger>> {
        Arc::new(AtomicRefCell::new(Ledger::default()))
    }

    fn count(&mut self, remote: usize, more: bool) {
        if self.lens.len() <= remote {
            self.lens.resize(remote + 1, 0);
        }
        if let Some(n) = self.lens.get_mut(remote) {
            *n = if more { *n + 1 } else { n.saturating_sub(1) };
        }
    }

    fn len(&self, remote: usize) -> usize {
        self.lens.get(remote).copied().unwrap_or(0)
    }

    fn get(&self, remote: usize, key: &Path) -> Option<&Pending> {
        self.slots.get(key)?.get(remote)
    }

    fn get_key_value(&self, remote: usize, key: &Path) -> Option<(&Rel, &Pending)> {
        let (rel, slot) = self.slots.get_key_value(key)?;
        Some((rel, slot.get(remote)?))
    }

    /// `remote`'s change of `rel` is `pending` now (whether it had one or not).
    fn insert(&mut self, remote: usize, rel: Rel, pending: Pending) {
        match self.slots.entry(rel) {
            MapEntry::Occupied(mut found) => {
                let slot = found.get_mut();
                if slot.get(remote).is_some() {
                    slot.replace(remote, pending);
                } else {
                    slot.add(remote, pending);
                    self.count(remote, true);
                }
            }
            MapEntry::Vacant(vacant) => {
                vacant.insert(Slot::new(remote, pending));
                self.count(remote, true);
            }
        }
    }

    fn remove_entry(&mut self, remote: usize, key: &Path) -> Option<(Rel, Pending)> {
        let slot = self.slots.get_mut(key)?;
        let pending = slot.remove(remote)?;
        let rel = if slot.is_empty() {
            self.slots.remove_entry(key).map(|(rel, _)| rel)
        } else {
            self.slots.get_key_value(key).map(|(rel, _)| rel.clone())
        };
        self.count(remote, false);
        Some((rel?, pending))
    }

    /// Merges one event into `remote`'s change of `rel`. Returns whether `remote` had
    /// none.
    fn merge(&mut self, remote: usize, rel: Rel, change: Merge) -> bool {
        let fresh = change.fresh();
        match self.slots.entry(rel) {
            MapEntry::Occupied(mut found) => {
                let slot = found.get_mut();
                match slot.get(remote).copied() {
                    Some(old) => {
                        let merged = change.onto(old);
                        if merged != old {
                            slot.replace(remote, merged);
                        }
                        // Shared with the other remotes' queues (and their batches):
                        // whoever sends it next measures it again.
                        found.key().forget_size();
                        false
                    }
                    None => {
                        slot.add(remote, fresh);
                        self.count(remote, true);
                        true
                    }
                }
            }
            MapEntry::Vacant(vacant) => {
                vacant.insert(Slot::new(remote, fresh));
                self.count(remote, true);
                true
            }
        }
    }

    /// [`Ledger::merge`] for remotes `0..remotes` (at most [`MEMBER_BITS`]) at once.
    /// Returns the set of those that had no change of `rel` (bit `r`).
    fn merge_all(&mut self, remotes: usize, rel: Rel, change: Merge) -> Joined {
        let remotes = remotes.min(MEMBER_BITS);
        if remotes == 0 {
            // No remote to merge into: a slot now would belong to nobody, for ever.
            return Joined {
                vacant: 0,
                logged: false,
            };
        }
        if self.cursors.len() < remotes {
            // The remotes that share the log; their cursors start where it ends.
            let end = self.log_end();
            self.cursors.resize(remotes, end);
        }
        let all = if remotes == MEMBER_BITS {
            u64::MAX
        } else {
            (1u64 << remotes) - 1
        };
        let fresh = change.fresh();
        let rel_for_log = rel.clone();
        let vacant = match self.slots.entry(rel) {
            MapEntry::Vacant(vacant) => {
                vacant.insert(Slot {
                    base: fresh,
                    members: all,
                    others: None,
                });
                all
            }
            MapEntry::Occupied(mut found) => {
                let slot = found.get_mut();
                let mut had = slot.members & all;
                if slot.members & !all != 0 {
                    // Members beyond `remotes` keep the base as it is.
                    for r in 0..remotes {
                        if had & bit(r) != 0 {
                            slot.replace(r, change.onto(slot.base));
                        }
                    }
                } else if slot.members != 0 {
                    slot.base = change.onto(slot.base);
                }
                if let Some(others) = slot.others.as_mut() {
                    for (r, p) in others.iter_mut() {
                        if *r < remotes {
                            had |= bit(*r);
                            *p = change.onto(*p);
                        }
                    }
                }
                if had != 0 {
                    found.key().forget_size();
                }
                let slot = found.get_mut();
                let absent = all & !had;
                for r in 0..remotes {
                    if absent & bit(r) != 0 {
                        slot.add(r, fresh);
                    }
                }
                slot.tidy();
                absent
            }
        };
        for r in 0..remotes {
            if vacant & bit(r) != 0 {
                self.count(r, true);
            }
        }
        // New for every remote that reads the log: one entry there serves them all.
        let logged = vacant == all && vacant != 0 && remotes == self.cursors.len();
        if logged {
            self.log.push_back(rel_for_log);
        }
        Joined { vacant, logged }
    }

    /// The position after the last log entry.
    fn log_end(&self) -> u64 {
        self.log_base + self.log.len() as u64
    }

    /// Where `remote` reads the log next (the end for a remote that does not read it).
    fn cursor(&self, remote: usize) -> u64 {
        self.cursors
            .get(remote)
            .copied()
            .unwrap_or_else(|| self.log_end())
    }

    /// The log entry at `position`, if it is there.
    fn log_at(&self, position: u64) -> Option<&Rel> {
        let index = usize::try_from(position.checked_sub(self.log_base)?).ok()?;
        self.log.get(index)
    }

    /// Drops the log entries every remote has read (after a batch was taken).
    pub(super) fn compact(&mut self) {
        let Some(read) = self.cursors.iter().copied().min() else {
            return;
        };
        while self.log_base < read && self.log.pop_front().is_some() {
            self.log_base += 1;
        }
    }
}

/// What [`PendingView::merge_all`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    /// Bit `r`: remote `r` had no change of the path (it joins its dispatch order).
    pub vacant: u64,
    /// The path joined the shared dispatch order of every remote that reads it (then no
    /// remote adds it to its own).
    pub logged: bool,
}

/// One remote's dispatch order (FIFO): what a deque of its own held, with the paths
/// that became pending for every remote at once read from the ledger's shared log, so
/// that ten remotes keep one entry for them, not ten. Paths set aside or handed back go
/// first; a path pushed for this remote alone remembers where the log ended then and goes
/// before the log entries pushed after it, so the order is exactly the one a deque
/// would give. The log keeps no entry the slowest remote has read, and never more than
/// that remote's own deque would have held.
#[derive(Debug, Default)]
pub struct Order {
    front: VecDeque<Rel>,
    back: VecDeque<(Rel, u64)>,
}

impl Order {
    /// Puts `rel` first.
    pub fn push_front(&mut self, rel: Rel) {
        self.front.push_front(rel);
    }

    /// Puts `rel` last, for this remote alone.
    pub fn push_back(&mut self, view: &PendingView, rel: Rel) {
        let end = view.ledger.borrow().log_end();
        self.back.push_back((rel, end));
    }

    /// Takes the first path out (`ledger` borrowed by the caller, for `remote`).
    pub(super) fn pop_front(&mut self, ledger: &mut Ledger, remote: usize) -> Option<Rel> {
        if let Some(rel) = self.front.pop_front() {
            return Some(rel);
        }
        let cursor = ledger.cursor(remote);
        if self
            .back
            .front()
            .is_some_and(|(_, pos)| back_goes_first(*pos, cursor, ledger))
        {
            return self.back.pop_front().map(|(rel, _)| rel);
        }
        let rel = ledger.log_at(cursor)?.clone();
        if let Some(c) = ledger.cursors.get_mut(remote) {
            *c += 1;
        }
        Some(rel)
    }

    /// The first path in order for which `find` gives something, and that.
    pub fn find_map<T>(
        &self,
        view: &PendingView,
        mut find: impl FnMut(&Rel) -> Option<T>,
    ) -> Option<T> {
        if let Some(found) = self.front.iter().find_map(&mut find) {
            return Some(found);
        }
        let ledger = view.ledger.borrow();
        let mut cursor = ledger.cursor(view.remote);
        let mut back = self.back.iter().peekable();
        loop {
            let rel = match back.peek() {
                Some((_, pos)) if back_goes_first(*pos, cursor, &ledger) => {
                    back.next().map(|(rel, _)| rel)
                }
                _ => {
                    let rel = ledger.log_at(cursor);
                    cursor += 1;
                    rel
                }
            }?;
            if let Some(found) = find(rel) {
                return Some(found);
            }
        }
    }

    /// Forgets every path (the log's too, for this remote).
    pub fn clear(&mut self, view: &PendingView) {
        self.front.clear();
        self.back.clear();
        let mut ledger = view.ledger.borrow_mut();
        let end = ledger.log_end();
        if let Some(c) = ledger.cursors.get_mut(view.remote) {
            *c = end;
        }
        ledger.compact();
    }
}

/// Whether the first of a remote's own entries, pushed when the log ended at `pos`,
/// comes before the log entry at `cursor`: it does once the log entries pushed before it
/// are read, or when the log has nothing more.
fn back_goes_first(pos: u64, cursor: u64, ledger: &Ledger) -> bool {
    pos <= cursor || ledger.log_at(cursor).is_none()
}

/// One remote's pending changes: what its own ordered map of path → [`Pending`] held,
/// stored in its root's [`Ledger`].
#[derive(Debug, Clone)]
pub struct PendingView {
    ledger: Arc<AtomicRefCell<Ledger>>,
    remote: usize,
}

impl Default for PendingView {
    /// A ledger of its own (a queue built alone, as in tests).
    fn default() -> PendingView {
        PendingView::new(Ledger::shared(), 0)
    }
}

impl PendingView {
    /// Remotes `0..SHARED` of a root merge an event at once ([`PendingView::merge_all`]);
    /// the others one by one.
    pub const SHARED: usize = MEMBER_BITS;

    /// The remote this view is of.
    pub fn remote(&self) -> usize {
        self.remote
    }

    /// Remote `remote`'s view of `ledger`.
    pub fn new(ledger: Arc<AtomicRefCell<Ledger>>, remote: usize) -> PendingView {
        PendingView { ledger, remote }
    }

    /// The ledger, for a loop of many operations ([`Ledger`]'s methods take the remote).
    pub(super) fn lock(&self) -> (AtomicRefMut<'_, Ledger>, usize) {
        (self.ledger.borrow_mut(), self.remote)
    }

    /// Paths pending.
    pub fn len(&self) -> usize {
        self.ledger.borrow().len(self.remote)
    }

    /// No path pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The change of `key`, if pending.
    pub fn get(&self, key: &Path) -> Option<Pending> {
        self.ledger.borrow().get(self.remote, key).copied()
    }

    /// Whether `key` is pending.
    pub fn contains_key(&self, key: &Path) -> bool {
        self.ledger.borrow().get(self.remote, key).is_some()
    }

    /// The stored path of `key` (shared) and its change, if pending.
    pub fn get_key_value(&self, key: &Path) -> Option<(Rel, Pending)> {
        self.ledger
            .borrow()
            .get_key_value(self.remote, key)
            .map(|(rel, p)| (rel.clone(), *p))
    }

    /// Sets the change of `rel` (replacing one it had).
    pub fn insert(&self, rel: Rel, pending: Pending) {
        self.ledger.borrow_mut().insert(self.remote, rel, pending);
    }

    /// Takes the change of `key` out.
    pub fn remove(&self, key: &Path) -> Option<Pending> {
        self.remove_entry(key).map(|(_, p)| p)
    }

    /// Takes the change of `key` out, with its stored path.
    pub fn remove_entry(&self, key: &Path) -> Option<(Rel, Pending)> {
        self.ledger.borrow_mut().remove_entry(self.remote, key)
    }

    /// Merges one event; returns whether the path was not pending here.
    pub fn merge(&self, rel: Rel, change: Merge) -> bool {
        self.ledger.borrow_mut().merge(self.remote, rel, change)
    }

    /// Merges one event into the views of remotes `0..remotes` of this ledger at once
    /// (this view's remote index is not used). Bit `r` of the result: remote `r` had no
    /// change of `rel`. Remotes from [`MEMBER_BITS`] on are not merged: the caller
    /// merges those one by one.
    pub fn merge_all(&self, remotes: usize, rel: Rel, change: Merge) -> Joined {
        self.ledger.borrow_mut().merge_all(remotes, rel, change)
    }

    /// Paths pending strictly below `rel`, in order.
    pub fn descendants(&self, rel: &Path) -> Vec<Rel> {
        let ledger = self.ledger.borrow();
        Self::below(&ledger, self.remote, rel).cloned().collect()
    }

    /// Whether a path strictly below `rel` is pending.
    pub fn has_descendants(&self, rel: &Path) -> bool {
        let ledger = self.ledger.borrow();
        Self::below(&ledger, self.remote, rel).next().is_some()
    }

    fn below<'a>(
        ledger: &'a Ledger,
        remote: usize,
        rel: &'a Path,
    ) -> impl Iterator<Item = &'a Rel> + 'a {
        // `Rel`'s order is `Path`'s for the normalized paths queues hold (see `rel.rs`).
        ledger
            .slots
            .range::<Path, _>((Bound::Included(rel), Bound::Unbounded))
            .skip_while(move |(p, _)| p.as_path() == rel)
            .take_while(move |(p, _)| p.starts_with(rel))
            .filter(move |(_, slot)| slot.get(remote).is_some())
            .map(|(p, _)| p)
    }

    /// Every pending path with its change, in order.
    pub fn entries(&self) -> Vec<(Rel, Pending)> {
        let ledger = self.ledger.borrow();
        ledger
            .slots
            .iter()
            .filter_map(|(rel, slot)| slot.get(self.remote).map(|p| (rel.clone(), *p)))
            .collect()
    }

    /// Every pending path taken out, in order (one pass over the ledger).
    pub fn drain(&self) -> Vec<(Rel, Pending)> {
        let mut ledger = self.ledger.borrow_mut();
        let mut out = Vec::with_capacity(ledger.len(self.remote));
        ledger.slots.retain(|rel, slot| {
            if let Some(pending) = slot.remove(self.remote) {
                out.push((rel.clone(), pending));
            }
            !slot.is_empty()
        });
        if let Some(n) = ledger.lens.get_mut(self.remote) {
            *n = 0;
        }
        out
    }
}

/// What [`Ledger::take_if`] did.
pub(super) enum Take {
    /// Not pending for the remote.
    Absent,
    /// Pending, and left there.
    Kept(Rel),
    /// Taken out.
    Taken(Rel, Pending),
}

impl Ledger {
    /// One search for `rel`: when `remote` has a change of it and `take` says so, the
    /// change is taken out.
    pub(super) fn take_if(
        &mut self,
        remote: usize,
        rel: Rel,
        take: impl FnOnce(&Rel, &Pending) -> bool,
    ) -> Take {
        let MapEntry::Occupied(mut found) = self.slots.entry(rel) else {
            return Take::Absent;
        };
        let Some(pending) = found.get().get(remote).copied() else {
            return Take::Absent;
        };
        if !take(found.key(), &pending) {
            return Take::Kept(found.key().clone());
        }
        let slot = found.get_mut();
        slot.remove(remote);
        let rel = if slot.is_empty() {
            found.remove_entry().0
        } else {
            found.key().clone()
        };
        self.count(remote, false);
        Take::Taken(rel, pending)
    }
}

#[cfg(test)]
mod tests;
