//! Renames through the queue: a move inside the root stays one operation (`from → to`)
//! while the remote can make `to` from what it holds at `from`, and collapses with what
//! else is queued:
//!
//! - `a→b, b→c` is `a→c` (the remote still holds `a`); `b` is still deleted, in case
//!   the first move replaced something there.
//! - A move whose source never reached this remote as it is now (a queued or journaled
//!   change of a file, a subtree sync owed at or above it) is a plain upload of `to`
//!   (for a directory: a subtree sync, its content is not scanned).
//! - Pending changes below `from` follow the move (they go after it, under `to`); those
//!   below `to` are dropped, the move replaces it whole.
//! - A delete of `to` (or of a directory above it) cancels the move.
//! - Nothing at or below `from` or `to`, and no delete above them, goes before the
//!   move; the move waits for anything running there, for a queued or running update of
//!   a directory above `to` (a new parent must exist on the remote first), and for every
//!   older move it overlaps.
//!
//! The delete of `from` stays queued and goes, like anything else at or below `from`,
//! only once the move has succeeded (a failed move is a move again, and the delete waits
//! for it); the deletes of moves that ended together share one batch. When `from` is a
//! name again by then (`a→b`, then a new `a`), its update goes instead.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{Caps, Pending, Plan, Ran, Taken, TargetQueue};
use crate::coalesce::rel::Rel;
use crate::job::{Entry, Op};

impl TargetQueue {
    /// Merges a rename inside the root. `delete_old`: deletions are pushed
    /// (`<delete start="true">`); without, the old name stays on the remote.
    pub fn observe_move(
        &mut self,
        from: PathBuf,
        to: PathBuf,
        is_dir: bool,
        mask: u32,
        now: Instant,
        delete_old: bool,
    ) {
        // A full sync owed: the remote's copy of `from` may be stale anywhere below it,
        // and only a compare by content keeps a stale file from being linked.
        let full_owed =
            self.full.is_some() || self.full_in_flight || self.journaled.contains(Path::new(""));
        let by_content = !is_dir || full_owed || self.remote_may_hold(&to);
        let basis = self.basis_of(&from, is_dir);
        if is_dir {
            // The move replaces whatever `to` was; the run that makes it deletes the rest.
            let below = self.pending.descendants(&to);
            for path in below {
                self.pending.remove(&path);
                self.holds.remove(&path);
            }
            self.cancel_moves_onto(&to, true);
            self.follow(&from, &to, now);
        }
        if delete_old {
            self.observe(from.clone(), Op::Delete, is_dir, mask, now);
        }
        match basis {
            Some(basis) if basis != to => {
                // The move's recursive run with `--delete` is the subtree sync `to` may owe.
                if is_dir {
                    self.deleted_dirs.remove(&to);
                    super::remove_keys_below(&mut self.deleted_dirs, &to);
                    self.subtrees.remove(&to);
                    super::remove_below(&mut self.subtrees, &to);
                }
                self.observe(to.clone(), Op::Update, is_dir, mask, now);
                self.move_seq += 1;
                if by_content {
                    self.moves_by_content.insert(to.clone());
                }
                self.add_move(to, basis, self.move_seq);
            }
            _ => {
                self.observe(to.clone(), Op::Update, is_dir, mask, now);
                if is_dir {
                    self.request_subtree(to);
                }
            }
        }
        self.blocked = false;
    }

    /// Whether the remote may hold something at or below `to` now: a change of it queued,
    /// running or journaled, a recent delete of it, a move from it. rsync's quick check
    /// (size and mtime to the second) could then keep a stale file there.
    fn remote_may_hold(&self, to: &Path) -> bool {
        let at_or_below = |p: &PathBuf| p.starts_with(to);
        self.pending.contains_key(to)
            || self.pending.has_descendants(to)
            || self
                .journaled
                .range(to.to_path_buf()..)
                .next()
                .is_some_and(at_or_below)
            || self.deleted_dirs.contains_key(to)
            || self.conflicts(to, Op::Delete, true)
            || self
                .move_ends
                .range((to.to_path_buf(), 0)..)
                .next()
                .is_some_and(|(p, _)| p.starts_with(to))
            || self
                .moves_running
                .values()
                .any(|(from, _)| from.starts_with(to))
    }

    /// What the remote holds that `from` was just before its move, if it can serve as
    /// the basis: the first source of a chain, `from` itself when nothing queued says
    /// the remote's copy may differ, the same path under the source of a pending move
    /// of a directory above it.
    fn basis_of(&mut self, from: &Path, is_dir: bool) -> Option<PathBuf> {
        if let Some((first, _)) = self.moves.get(from).cloned() {
            self.remove_move(from);
            return Some(first);
        }
        let stale = self.journaled.contains(from)
            || (!is_dir
                && self
                    .pending
                    .get(from)
                    .is_some_and(|pending| pending.op == Op::Update))
            || from.ancestors().any(|a| {
                self.subtrees.contains(a)
                    || self.subtrees_running.contains(a)
                    || self.journaled.contains(a) && a != from && !a.as_os_str().is_empty()
            });
        if stale {
            return None;
        }
        for ancestor in from.ancestors().skip(1) {
            if let Some((source, _)) = self.moves.get(ancestor) {
                let rest = from.strip_prefix(ancestor).ok()?;
                return Some(source.join(rest));
            }
        }
        Some(from.to_path_buf())
    }

    /// Pending changes strictly below `from` are re-keyed below `to`.
    fn follow(&mut self, from: &Path, to: &Path, now: Instant) {
        let below = self.pending.descendants(from);
        for path in below {
            let Some(pending) = self.pending.remove(&path) else {
                continue;
            };
            self.holds.remove(&path);
            let Ok(rest) = path.strip_prefix(from) else {
                continue;
            };
            self.observe(to.join(rest), pending.op, pending.is_dir, pending.mask, now);
        }
        let moved: Vec<PathBuf> = self
            .moves
            .range(from.to_path_buf()..)
            .map(|(p, _)| p)
            .take_while(|p| p.starts_with(from))
            .filter(|p| p.as_path() != from)
            .cloned()
            .collect();
        for old in moved {
            if let (Some((source, seq)), Ok(rest)) =
                (self.moves.get(&old).cloned(), old.strip_prefix(from))
            {
                let new = to.join(rest);
                let by_content = self.moves_by_content.contains(&old);
                self.remove_move(&old);
                if by_content {
                    self.moves_by_content.insert(new.clone());
                }
                self.add_move(new, source, seq);
            }
        }
    }

    /// A delete of `rel` (and, for a directory, of what is below it) cancels the moves
    /// onto it: their old names are still deleted, nothing is made from them.
    pub(super) fn cancel_moves_onto(&mut self, rel: &Path, is_dir: bool) {
        let onto: Vec<PathBuf> = if is_dir {
            self.moves
                .range(rel.to_path_buf()..)
                .map(|(p, _)| p)
                .take_while(|p| p.starts_with(rel))
                .cloned()
                .collect()
        } else {
            self.moves
                .get_key_value(rel)
                .map(|(p, _)| p.clone())
                .into_iter()
                .collect()
        };
        for to in onto {
            self.remove_move(&to);
            // A directory move dropped the queued changes below its new name (the move
            // replaces them); cancelled, it no longer settles their journal entries, so
            // a subtree sync of the name does (it deletes or mirrors what is there).
            let journaled_below = self
                .journaled
                .range(to.clone()..)
                .take_while(|p| p.starts_with(&to))
                .any(|p| *p != to);
            if journaled_below {
                self.request_subtree(to);
            }
        }
    }

    /// Records the move onto `to`, replacing one already there (a second move onto the
    /// same name).
    fn add_move(&mut self, to: PathBuf, from: PathBuf, seq: u64) {
        let by_content = self.moves_by_content.contains(&to);
        self.remove_move(&to);
        if by_content {
            self.moves_by_content.insert(to.clone());
        }
        self.move_ends.insert((from.clone(), seq));
        self.move_ends.insert((to.clone(), seq));
        self.moves.insert(to, (from, seq));
    }

    fn remove_move(&mut self, to: &Path) -> Option<(PathBuf, u64)> {
        let (from, seq) = self.moves.remove(to)?;
        self.moves_by_content.remove(to);
        self.move_ends.remove(&(from.clone(), seq));
        self.move_ends.remove(&(to.to_path_buf(), seq));
        Some((from, seq))
    }

    /// Whether a pending path must wait for a move: it is at or below a pending move's
    /// `from` or `to` (this includes the `to` update itself, which only the move takes).
    /// A delete (or a file replacing a directory) also waits while a move reads or
    /// writes below it.
    pub(super) fn waits_for_move(&self, path: &Path, destructive: bool) -> bool {
        !self.moves.is_empty() && Self::move_ends_block(&self.move_ends, path, destructive)
    }

    /// [`TargetQueue::waits_for_move`] on the ends alone (a batch being taken holds the
    /// pending map borrowed).
    pub(super) fn move_ends_block(
        move_ends: &BTreeSet<(PathBuf, u64)>,
        path: &Path,
        destructive: bool,
    ) -> bool {
        end_at_or_above(move_ends, path, u64::MAX)
            || destructive && end_below(move_ends, path, u64::MAX)
    }

    /// Whether an end of a pending move older than `seq` is `path` or above it.
    fn older_end_at_or_above(&self, path: &Path, seq: u64) -> bool {
        end_at_or_above(&self.move_ends, path, seq)
    }

    /// Whether an older pending move writes (`writes`: its `to`) or reads (its `from`)
    /// strictly below `path`. Below the new name only reads count: an older move onto a
    /// name below it (a directory moved into, then its parent moved: `mv a x/m/k;
    /// mv x/m y/n`) waits for this one, which makes its parent. Below the old name only
    /// writes count: two moves reading the remote's copy do not race.
    fn older_ends_below(&self, path: &Path, seq: u64, writes: bool) -> bool {
        self.move_ends
            .range((path.to_path_buf(), u64::MAX)..)
            .take_while(|(p, _)| p.starts_with(path))
            .any(|(p, s)| {
                let is_to = self.moves.get(p).is_some_and(|(_, own)| own == s);
                *s < seq && is_to == writes
            })
    }

    /// Whether the move onto `to` may run now.
    fn may_move(&self, to: &Path, from: &Path, seq: u64, now: Instant) -> bool {
        self.may_move_with(to, from, seq, now, true)
    }

    /// [`Self::may_move`]; `parents`: whether to wait for a directory above `to`.
    fn may_move_with(&self, to: &Path, from: &Path, seq: u64, now: Instant, parents: bool) -> bool {
        let ready = self.pending.get(to).is_some_and(|p| p.op == Op::Update)
            && self.holds.get(to).is_none_or(|nb| *nb <= now);
        // A directory above `to` that is queued or running as an update may be new: the
        // remote needs it before the move's run can make `to` in it. Not one at or below
        // the old name (`mv g d/e; mv d g` leaves g/e made from g: the remote holds that
        // parent as long as it holds the basis). A parent made by another move is waited
        // for only while that move can go; a parent update that waits for a move is not:
        // so no two moves ever wait for each other (the run then fails without its
        // parent and the move is pushed plainly, which creates it).
        let parent_waits = parents
            && to
                .ancestors()
                .skip(1)
                .filter(|a| !a.as_os_str().is_empty() && !a.starts_with(from))
                .any(|a| {
                    if self.in_flight.contains(a) {
                        return true;
                    }
                    if !self
                        .pending
                        .get(a)
                        .is_some_and(|p| p.op == Op::Update && p.is_dir)
                    {
                        return false;
                    }
                    match self.moves.get(a) {
                        Some((parent_from, parent_seq)) => {
                            self.may_move_with(a, parent_from, *parent_seq, now, false)
                        }
                        None => !self.waits_for_move(a, false),
                    }
                });
        ready
            && !parent_waits
            && !self.conflicts(to, Op::Delete, true)
            && !self.conflicts(from, Op::Delete, true)
            && [to, from]
                .iter()
                .all(|end| !self.older_end_at_or_above(end, seq))
            && !self.older_ends_below(from, seq, true)
            && !self.older_ends_below(to, seq, false)
    }

    /// The oldest move that may run, with the file moves that can share its run (their new
    /// names in the same directory, their old names in the same directory).
    pub(super) fn take_move(&mut self, now: Instant, caps: Caps) -> Option<Plan> {
        if self.moves.is_empty() {
            return None;
        }
        let (to, (from, _)) = self
            .moves
            .iter()
            .filter(|(to, (from, seq))| self.may_move(to, from, *seq, now))
            .min_by_key(|(_, (_, seq))| *seq)
            .map(|(to, end)| (to.clone(), end.clone()))?;
        let is_dir = self.pending.get(to.as_path()).is_some_and(|p| p.is_dir);
        let mut chosen = vec![(from.clone(), to.clone())];
        if !is_dir {
            let (to_dir, from_dir) = (parent(&to), parent(&from));
            let mut ends: Vec<PathBuf> = vec![from.clone(), to.clone()];
            let candidates: Vec<(PathBuf, PathBuf, u64)> = self
                .moves
                .range(to_dir.to_path_buf()..)
                .take_while(|(p, _)| p.starts_with(to_dir))
                .filter(|(p, (f, _))| {
                    parent(p) == to_dir && parent(f) == from_dir && p.as_path() != to
                })
                .map(|(p, (f, s))| (f.clone(), p.clone(), *s))
                .collect();
            for (f, t, seq) in candidates {
                if chosen.len() >= caps.max_paths {
                    break;
                }
                let file = self.pending.get(t.as_path()).is_some_and(|p| !p.is_dir);
                if file
                    && !ends.contains(&f)
                    && !ends.contains(&t)
                    && self.may_move(&t, &f, seq, now)
                {
                    ends.push(f.clone());
                    ends.push(t.clone());
                    chosen.push((f, t));
                }
            }
        }
        let by_content = !is_dir
            || chosen
                .iter()
                .any(|(_, to)| self.moves_by_content.contains(to));
        let mut updates = Vec::new();
        for (from, to) in &chosen {
            if let Some((_, seq)) = self.remove_move(to) {
                self.moves_running.insert(to.clone(), (from.clone(), seq));
            }
            if let Some((rel, pending)) = self.pending.remove_entry(to.as_path()) {
                self.holds.remove(&rel);
                updates.push(Taken { rel, pending });
            }
            // The old name's delete stays queued: it goes once the move has succeeded
            // (with the deletes of other moves, in one batch).
            self.in_flight.mark(Rel::new(to.clone()), Op::Delete, true);
            self.in_flight
                .mark(Rel::new(from.clone()), Op::Delete, true);
        }
        self.jobs_in_flight += 1;
        Some(Plan::Move {
            moves: chosen,
            is_dir,
            by_content,
            taken: updates,
        })
    }

    /// After a move job failed: a `to` that goes back to the queue (`retried`) is a
    /// move again, while nothing newer replaced it; it keeps its place before every
    /// move queued after it was taken.
    pub(super) fn restore_moves(&mut self, ran: &Ran, retried: &[PathBuf]) {
        let Ran::Move(moves) = ran else {
            return;
        };
        for (from, to) in moves {
            let update = self
                .pending
                .get(to.as_path())
                .is_some_and(|p| p.op == Op::Update);
            if update && retried.contains(to) && !self.moves.contains_key(to) {
                // The failed run may have left part of it there.
                self.moves_by_content.insert(to.clone());
                self.add_move(to.clone(), from.clone(), 0);
            }
        }
    }

    /// A failed update that goes back to the queue below a pending move's old name: the
    /// remote's copy may not be current, so it also goes under the new name, after the
    /// move (which may have made it from that copy).
    /// Returns whether it went under the new name (the old one is the move's to delete).
    pub(super) fn follow_into_move(&mut self, rel: &Rel, pending: &Pending, now: Instant) -> bool {
        let entry = Entry {
            rel: rel.clone(),
            op: pending.op,
            is_dir: pending.is_dir,
        };
        if entry.op != Op::Update || self.moves.is_empty() {
            return false;
        }
        let moved = self.moves.iter().find_map(|(to, (from, _))| {
            let rest = entry.rel.strip_prefix(from).ok()?;
            Some((to.clone(), rest.to_path_buf()))
        });
        match moved {
            // The moved path itself: its basis is not what it is, upload it plainly.
            Some((to, rest)) if rest.as_os_str().is_empty() => {
                self.remove_move(&to);
                if entry.is_dir {
                    self.request_subtree(to);
                }
                false
            }
            Some((to, rest)) => {
                let below_deleted = self.moves_from_deleted(&entry.rel);
                self.observe(to.join(rest), Op::Update, entry.is_dir, pending.mask, now);
                below_deleted
            }
            None => false,
        }
    }

    /// Whether an ancestor of `rel` is queued for deletion (a moved name's delete).
    fn moves_from_deleted(&self, rel: &Path) -> bool {
        rel.ancestors().skip(1).any(|a| {
            self.pending
                .get(a)
                .is_some_and(|p| p.op == Op::Delete && p.is_dir)
        })
    }

    /// Pending moves (new name → old name), for tests and `/status`.
    pub fn pending_moves(&self) -> BTreeMap<PathBuf, PathBuf> {
        self.moves
            .iter()
            .map(|(to, (from, _))| (to.clone(), from.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests;

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new(""))
}

/// Whether an end in `move_ends` older than `seq` is `path` or above it.
fn end_at_or_above(move_ends: &BTreeSet<(PathBuf, u64)>, path: &Path, seq: u64) -> bool {
    path.ancestors().any(|a| {
        move_ends
            .range((a.to_path_buf(), 0)..(a.to_path_buf(), seq))
            .next()
            .is_some()
    })
}

/// Whether an end in `move_ends` older than `seq` is strictly below `path`.
fn end_below(move_ends: &BTreeSet<(PathBuf, u64)>, path: &Path, seq: u64) -> bool {
    move_ends
        .range((path.to_path_buf(), u64::MAX)..)
        .take_while(|(p, _)| p.starts_with(path))
        .any(|(_, s)| *s < seq)
}
