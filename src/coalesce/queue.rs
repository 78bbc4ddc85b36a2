//! The queue of one remote of one root: merged pending paths, what is in flight, backoff.
//!
//! Pure state, no threads and no clock of its own (`now` is an argument), so every rule is
//! testable without sleeping. Memory is bounded by the number of distinct dirty paths.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::rel::{Rel, RelKey, key, parents};
use crate::job::{Entry, Op, Work};
use in_flight::InFlight;
use ledger::Take;
pub use ledger::{Joined, Ledger, Merge, Order, PendingView};

/// One path waiting to be pushed: 16 bytes, held once per queued path and remote whose
/// change differs, once for all the others ([`ledger`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// What to do: the latest event wins.
    pub op: Op,
    /// Whether the path is a directory (latest event).
    pub is_dir: bool,
    /// Mask of the latest event, for plugins.
    pub mask: u32,
    /// When the oldest unpushed event for it was seen (latency is measured from here).
    pub seen: Seen,
    /// Failed attempts so far (for the per-path backoff; it stops counting at the cap).
    pub attempts: u16,
}

/// An instant in 8 bytes instead of `Instant`'s 16: signed nanoseconds from an origin
/// taken once per process (±292 years around it, exact both ways).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seen(i64);

impl Seen {
    /// `instant` in this form.
    pub fn at(instant: Instant) -> Seen {
        let origin = Seen::origin();
        let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        match instant.checked_duration_since(origin) {
            Some(after) => Seen(nanos(after)),
            None => Seen(-nanos(origin.saturating_duration_since(instant))),
        }
    }

    /// The instant again.
    pub fn instant(self) -> Instant {
        let origin = Seen::origin();
        let offset = Duration::from_nanos(self.0.unsigned_abs());
        if self.0 >= 0 {
            origin.checked_add(offset).unwrap_or(origin)
        } else {
            origin.checked_sub(offset).unwrap_or(origin)
        }
    }

    fn origin() -> Instant {
        static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *ORIGIN.get_or_init(Instant::now)
    }
}

/// A path handed to a worker, with what is needed when its outcome comes back.
#[derive(Debug, Clone)]
pub struct Taken {
    /// The path (shared with the other remotes' queues).
    pub rel: Rel,
    /// Its pending state when taken (what is done to it, whether it is a directory).
    pub pending: Pending,
}

impl Taken {
    /// The path and operation as sent.
    pub fn entry(&self) -> Entry {
        Entry {
            rel: self.rel.clone(),
            op: self.pending.op,
            is_dir: self.pending.is_dir,
        }
    }

    /// See [`Entry::replaces_below`].
    pub fn replaces_below(&self) -> bool {
        self.pending.op == Op::Delete || !self.pending.is_dir
    }
}

/// A full sync asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullRequest {
    /// `startup`, `crontab`, `rescan`, `journal`, `replaced directory`.
    pub reason: &'static str,
    /// crontabfilter globs.
    pub extra_excludes: Vec<String>,
}

/// What the queue wants run next.
#[derive(Debug)]
pub enum Plan {
    /// Push these paths.
    Batch(Vec<Taken>),
    /// Mirror the whole root.
    Full(FullRequest),
    /// Mirror this directory recursively with `--delete`.
    Subtree(PathBuf),
    /// Make each `to` on the remote from its `from` there (`taken`: the `to` updates);
    /// the old names' deletes stay queued until it succeeded.
    Move {
        /// `(from, to)` pairs.
        moves: Vec<(PathBuf, PathBuf)>,
        /// Whether they are directories.
        is_dir: bool,
        /// Whether files must be compared by content (the remote may hold something
        /// at a new name already).
        by_content: bool,
        /// What the job carries, in [`crate::job::JobKind::Move`]'s order.
        taken: Vec<Taken>,
    },
}

/// Limits of one batch (the byte limit is applied by the push worker, which measures the
/// files: the scheduler never touches the filesystem).
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Paths per rsync run.
    pub max_paths: usize,
}

/// [`TargetQueue::observe`] for every remote of a root (`queues`, in remote order, all
/// sharing one ledger), with the change merged into their ledger once: each queue's
/// bookkeeping before, one search for the remotes that share merges, each queue's
/// bookkeeping after. The same as one `observe` per queue in turn, since a queue's
/// bookkeeping reads only its own changes (`queue/sharing_tests.rs` compares the two).
pub fn observe_all(queues: &mut [&mut TargetQueue], rel: &Rel, change: Merge, now: Instant) {
    for queue in queues.iter_mut() {
        queue.before_merge(rel, change.op, change.is_dir, now);
    }
    let Some(view) = queues.first().map(|q| q.pending.clone()) else {
        return;
    };
    let shared = queues.len().min(PendingView::SHARED);
    let joined = view.merge_all(shared, rel.clone(), change);
    for queue in queues.iter_mut() {
        let remote = queue.pending.remote();
        if remote < shared {
            queue.merged(
                rel.clone(),
                joined.vacant & (1 << remote) != 0,
                joined.logged,
            );
        } else {
            let vacant = queue.pending.merge(rel.clone(), change);
            queue.merged(rel.clone(), vacant, false);
        }
    }
}

/// The state of one target.
#[derive(Debug, Default)]
pub struct TargetQueue {
    /// This remote's pending changes, kept in its root's ledger with the other remotes'.
    pending: PendingView,
    /// Dispatch order (FIFO), partly shared with the root's other remotes; may hold
    /// names no longer pending, skipped lazily.
    order: Order,
    /// Every path in a running job.
    in_flight: InFlight,
    /// Running jobs (batches, subtree and full syncs).
    jobs_in_flight: usize,
    /// A full sync is wanted.
    full: Option<FullRequest>,
    /// A full sync is running.
    full_in_flight: bool,
    /// Directories to sync recursively with `--delete` (see [`TargetQueue::observe`]);
    /// none is at or below another.
    subtrees: BTreeSet<PathBuf>,
    /// Subtree syncs running.
    subtrees_running: BTreeSet<PathBuf>,
    /// The last subtree sync dispatched: the next one is looked for after it, and a batch
    /// goes before it, so that a failing subtree sync starves neither others nor batches.
    last_subtree: Option<PathBuf>,
    /// A subtree sync went last: a batch has its turn first.
    batch_turn: bool,
    /// Directories whose delete was seen and that have not been a directory again since.
    deleted_dirs: BTreeMap<PathBuf, Instant>,
    /// `deleted_dirs` by the time each was noted, for forgetting them.
    deleted_order: VecDeque<(Instant, PathBuf)>,
    /// Paths with a live journal entry.
    journaled: BTreeSet<PathBuf>,
    /// Paths to journal now ([`TargetQueue::journal_due`]): journaled ones that changed
    /// since their entry was written (it may name an older operation, a delete of what
    /// exists again), and, while the remote is down, what arrived without an entry. Kept
    /// as they come, so that journaling them never walks the whole queue.
    due_for_journal: BTreeSet<PathBuf>,
    /// The last job failed with the remote down (or misconfigured): whatever arrives for
    /// it is journaled at once, not when the next probe fails.
    down: bool,
    /// Consecutive failed jobs (0: healthy).
    failures: u32,
    /// While failing: no job before this instant.
    retry_at: Option<Instant>,
    /// Nothing pending can go until the in-flight set or the clock changes.
    blocked: bool,
    /// Paths held back by a partial failure, by release time.
    held: BinaryHeap<Reverse<(Instant, Rel)>>,
    /// Pending paths held back by a partial failure: not before this instant (apart from
    /// `Pending`, which would otherwise carry the instant for every path).
    holds: hashbrown::HashMap<Rel, Instant>,
    /// Renames waiting to be made on the remote from what it holds, new name → old name
    /// (`moves.rs`), with the order in which they were seen; nothing at or below either
    /// name goes before its move.
    moves: BTreeMap<PathBuf, (PathBuf, u64)>,
    /// Renames running, new name → old name.
    moves_running: BTreeMap<PathBuf, (PathBuf, u64)>,
    /// New names of pending moves that the remote may already hold something at: their
    /// run compares files by content (`push::moves`).
    moves_by_content: BTreeSet<PathBuf>,
    /// Both names of every pending move, with its order.
    move_ends: BTreeSet<(PathBuf, u64)>,
    /// Order of the last move seen.
    move_seq: u64,
}

impl TargetQueue {
    /// A queue whose pending changes are kept in `pending`'s ledger, with those of the
    /// other remotes of its root.
    pub fn sharing(pending: PendingView) -> TargetQueue {
        TargetQueue {
            pending,
            ..TargetQueue::default()
        }
    }

    /// Merges one change. A directory delete subsumes the pending changes below it.
    ///
    /// A directory that was deleted (or moved away) and is a directory again under the
    /// same name gets a subtree sync, whether its delete is still queued, running or done:
    /// a delete of a path that exists again when rsync runs is a no-op, and pushing the
    /// new directory alone (`--no-recursive`) would leave the old content on the remote.
    pub fn observe(&mut self, rel: impl Into<Rel>, op: Op, is_dir: bool, mask: u32, now: Instant) {
        let rel: Rel = rel.into();
        self.before_merge(&rel, op, is_dir, now);
        let change = Merge {
            op,
            is_dir,
            mask,
            seen: Seen::at(now),
        };
        let vacant = self.pending.merge(rel.clone(), change);
        self.merged(rel, vacant, false);
    }

    /// What [`TargetQueue::observe`] does before the change is merged into the pending
    /// map. The scheduler runs this for every remote of a root, merges the change into
    /// all of them at once ([`PendingView::merge_all`]), then runs
    /// [`TargetQueue::merged`] for each: the same as one `observe` per remote, since a
    /// remote's bookkeeping reads only its own changes.
    pub fn before_merge(&mut self, rel: &Rel, op: Op, is_dir: bool, now: Instant) {
        if op == Op::Delete {
            self.cancel_moves_onto(rel, is_dir);
        }
        if op == Op::Delete && is_dir {
            let below = self.pending.descendants(rel);
            for path in below {
                self.pending.remove(&path);
                self.holds.remove(&path);
            }
            remove_keys_below(&mut self.deleted_dirs, rel);
            self.deleted_dirs.insert(rel.to_path_buf(), now);
            self.deleted_order.push_back((now, rel.to_path_buf()));
        } else if op == Op::Update && is_dir && self.deleted_dirs.remove(rel.as_path()).is_some() {
            remove_keys_below(&mut self.deleted_dirs, rel);
            self.request_subtree(rel.to_path_buf());
        }
        // A file or symlink that takes the name is remembered as well: its push (with
        // `--force`) would replace the remote directory whole, but a directory again under
        // the name before it went out supersedes it in the queue.
        if self.blocked && !self.conflicts(rel, op, is_dir) {
            self.blocked = false;
        }
        if self.down || self.journaled.contains(rel.as_path()) {
            self.due_for_journal.insert(rel.to_path_buf());
        }
    }

    /// What [`TargetQueue::observe`] does after the change was merged: `vacant`, the path
    /// was not pending here (it joins the dispatch order, unless `logged`: the shared
    /// order of the root's remotes has it already).
    pub fn merged(&mut self, rel: Rel, vacant: bool, logged: bool) {
        if vacant {
            if !logged {
                self.order.push_back(&self.pending, rel);
            }
        } else if !self.holds.is_empty() {
            self.holds.remove(&rel);
        }
    }

    /// This queue's view of its root's ledger.
    #[cfg(test)]
    pub(crate) fn pending_view(&self) -> &PendingView {
        &self.pending
    }

    /// Asks for a subtree sync of `rel` (merged into one of an ancestor already asked for).
    pub fn request_subtree(&mut self, rel: PathBuf) {
        if rel.as_os_str().is_empty() {
            self.request_full(FullRequest {
                reason: "journal",
                extra_excludes: Vec::new(),
            });
            return;
        }
        if rel.ancestors().any(|a| self.subtrees.contains(a)) {
            return;
        }
        remove_below(&mut self.subtrees, &rel);
        if self.down && !self.journaled.contains(&rel) {
            self.due_for_journal.insert(rel.clone());
        }
        self.subtrees.insert(rel);
        self.blocked = false;
    }

    /// Asks for a full sync (merging with one already asked for).
    pub fn request_full(&mut self, request: FullRequest) {
        match &mut self.full {
            Some(existing) => existing.extra_excludes.extend(request.extra_excludes),
            None => self.full = Some(request),
        }
    }

    /// Whether `rel` waits to be pushed.
    pub fn is_pending(&self, rel: &Path) -> bool {
        self.pending.contains_key(rel)
    }

    /// The change waiting for `rel`, as it would be pushed.
    pub fn pending_entry(&self, rel: &Path) -> Option<Entry> {
        self.pending.get_key_value(rel).map(|(rel, p)| Entry {
            rel,
            op: p.op,
            is_dir: p.is_dir,
        })
    }

    /// The stored path of `rel`, if it waits (tests look at what is shared).
    #[cfg(test)]
    pub(crate) fn pending_key(&self, rel: &Path) -> Option<Rel> {
        self.pending.get_key_value(rel).map(|(key, _)| key)
    }

    /// Distinct paths waiting.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Paths in running jobs.
    pub fn in_flight_len(&self) -> usize {
        self.in_flight.len()
    }

    /// Nothing waiting, nothing running.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
            && self.jobs_in_flight == 0
            && self.full.is_none()
            && self.subtrees.is_empty()
    }

    /// Work waiting: distinct paths, plus one per full or subtree sync asked for.
    pub fn depth(&self) -> usize {
        self.pending.len() + usize::from(self.full.is_some()) + self.subtrees.len()
    }

    /// Paths in running jobs, plus one for a running full sync.
    pub fn running(&self) -> usize {
        self.in_flight.len() + usize::from(self.full_in_flight)
    }

    /// Whether the last job found the remote down (or misconfigured): what waits for it
    /// is journaled as it arrives ([`TargetQueue::journal_due`]).
    pub fn is_down(&self) -> bool {
        self.down
    }

    /// Whether [`TargetQueue::journal_due`] has something to say.
    pub fn journal_behind(&self) -> bool {
        !self.due_for_journal.is_empty() || self.full_unjournaled_while_down()
    }

    fn full_unjournaled_while_down(&self) -> bool {
        self.down
            && self.full.is_some()
            && !self
                .journaled
                .contains(Work::WholeRoot.scope().storage_rel())
    }

    /// What is due for the journal since it last caught up, in journal form: the paths of
    /// `due_for_journal` still waiting (pending, or as a subtree sync) and, while the remote
    /// is down, a full sync asked for and not journaled. The first failure journals the
    /// whole queue ([`TargetQueue::unjournaled`]); from then on only this.
    pub fn journal_due(&self) -> Vec<Work> {
        let mut out = Vec::new();
        if self.full_unjournaled_while_down() {
            out.push(Work::WholeRoot);
        }
        for rel in &self.due_for_journal {
            if !self.down && !self.journaled.contains(rel) {
                continue; // arrived while the remote was down, which it no longer is
            }
            if let Some(entry) = self.pending_entry(rel) {
                out.push(self.journal_form(Work::Path(entry)));
            }
            if self.subtrees.contains(rel) {
                out.push(Work::Path(Entry {
                    rel: Rel::verbatim(rel.clone()),
                    op: Op::Delete,
                    is_dir: true,
                }));
            }
        }
        out
    }

    /// Whether the last job failed as a whole.
    pub fn is_failing(&self) -> bool {
        self.failures > 0
    }

    /// Consecutive failed jobs.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A full sync asked for and not started, taken out (shutdown journals it).
    pub fn take_full(&mut self) -> Option<FullRequest> {
        self.full.take()
    }

    /// Subtree syncs asked for and not started, taken out (shutdown journals them).
    pub fn take_subtrees(&mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.subtrees).into_iter().collect()
    }

    /// The entry to journal for `entry`: the update of a directory that owes a subtree
    /// sync (asked for or running) is journaled as that directory's delete, which replays
    /// as the subtree sync (one journal entry per path: the update must not replace it).
    pub fn journal_form(&self, work: Work) -> Work {
        match work {
            Work::Path(entry)
                if entry.op == Op::Update
                    && entry.is_dir
                    && (self.subtrees.contains(entry.rel.as_path())
                        || self.subtrees_running.contains(entry.rel.as_path())
                        || self.moves.contains_key(entry.rel.as_path())
                        || self.moves_running.contains_key(entry.rel.as_path())) =>
            {
                Work::Path(Entry {
                    op: Op::Delete,
                    ..entry
                })
            }
            other => other,
        }
    }

    /// Everything waiting here that has no journal entry yet, or whose entry is older
    /// than its latest change, in its journal form: the pending paths, the subtree syncs
    /// asked for (as their directory's delete) and a full sync asked for (the whole
    /// root). A remote that is down gets these journaled at once, so that a crash while
    /// it is down loses none of them.
    pub fn unjournaled(&self) -> Vec<Work> {
        let behind =
            |rel: &Path| !self.journaled.contains(rel) || self.due_for_journal.contains(rel);
        let mut out = Vec::new();
        if self.full.is_some()
            && !self
                .journaled
                .contains(Work::WholeRoot.scope().storage_rel())
        {
            out.push(Work::WholeRoot);
        }
        for (rel, pending) in self.pending.entries() {
            if behind(rel.as_path()) {
                out.push(self.journal_form(Work::Path(Entry {
                    rel,
                    op: pending.op,
                    is_dir: pending.is_dir,
                })));
            }
        }
        for rel in &self.subtrees {
            if behind(rel) {
                out.push(Work::Path(Entry {
                    rel: Rel::verbatim(rel.clone()),
                    op: Op::Delete,
                    is_dir: true,
                }));
            }
        }
        out
    }

    /// What [`TargetQueue::journal_due`] returned was written: no journaled path is
    /// behind its latest change any more (a stale one not waiting is covered by the
    /// entry of whatever subsumed it).
    pub fn journal_caught_up(&mut self) {
        self.due_for_journal.clear();
    }

    /// Whether `rel` has a live journal entry.
    pub fn is_journaled(&self, rel: &Path) -> bool {
        self.journaled.contains(rel)
    }

    /// `rels` now have live journal entries.
    pub fn mark_journaled(&mut self, rels: impl IntoIterator<Item = PathBuf>) {
        for rel in rels {
            self.due_for_journal.remove(&rel);
            self.journaled.insert(rel);
        }
    }

    /// Forgets the journal entries of `rels` (each of them, not what is below); returns
    /// the ones that had one.
    pub fn unjournal<P: AsRef<Path>>(&mut self, rels: impl IntoIterator<Item = P>) -> Vec<PathBuf> {
        if self.journaled.is_empty() {
            return Vec::new(); // the common case: nothing failed
        }
        rels.into_iter()
            .filter(|rel| {
                self.due_for_journal.remove(rel.as_ref());
                self.journaled.remove(rel.as_ref())
            })
            .map(|rel| rel.as_ref().to_path_buf())
            .collect()
    }

    /// Forgets every journal entry at or below `rel` (empty: the whole root) and returns
    /// them, except those still pending (they stay journaled until they are pushed).
    pub fn unjournal_covered(&mut self, rel: &Path) -> Vec<PathBuf> {
        if self.journaled.is_empty() {
            return Vec::new();
        }
        let covered: Vec<PathBuf> = self
            .journaled
            .range(rel.to_path_buf()..)
            .take_while(|p| p.starts_with(rel))
            .filter(|p| !self.pending.contains_key(p.as_path()) || p.as_path() == rel)
            .cloned()
            .collect();
        for p in &covered {
            self.journaled.remove(p);
            self.due_for_journal.remove(p);
        }
        covered
    }

    /// While a batch of this remote runs, a small backlog waits for it (to leave as one
    /// bigger batch when it ends) until the oldest waiting change is `linger` old; a
    /// backlog of `min_paths` or more goes at once. Returns until when it waits.
    pub fn lingering(&self, now: Instant, linger: Duration, min_paths: usize) -> Option<Instant> {
        if self.jobs_in_flight == 0 || self.full.is_some() || self.pending.len() >= min_paths {
            return None;
        }
        let oldest = self
            .order
            .find_map(&self.pending, |p| self.pending.get(p))?
            .seen
            .instant();
        let until = oldest + linger;
        (until > now).then_some(until)
    }

    /// The earliest instant at which something held back becomes dispatchable.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let held = self.held.peek().map(|Reverse((at, _))| *at);
        match (self.retry_at, held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Releases paths whose hold expired and clears an expired retry time.
    pub fn tick(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.held.peek() {
            if *at > now {
                break;
            }
            if let Some(Reverse((_, path))) = self.held.pop() {
                if self.holds.get(&path).is_some_and(|nb| *nb <= now) {
                    self.holds.remove(&path);
                    self.blocked = false;
                }
            }
        }
        if self.retry_at.is_some_and(|at| at <= now) {
            self.retry_at = None;
            self.blocked = false;
        }
        self.forget_old_deletes(now);
    }

    /// Forgets directories deleted more than [`DELETE_MEMORY`] ago whose delete is neither
    /// queued nor running any more: the event of a re-creation that happened before the
    /// delete ran was read long before that, so memory stays bounded by recent deletes.
    fn forget_old_deletes(&mut self, now: Instant) {
        while let Some((at, _)) = self.deleted_order.front() {
            if *at + DELETE_MEMORY > now {
                break;
            }
            let Some((at, rel)) = self.deleted_order.pop_front() else {
                break;
            };
            if self.deleted_dirs.get(&rel) != Some(&at) {
                continue; // forgotten, or noted again later
            }
            if self.pending.contains_key(&rel) || self.in_flight.contains(&rel) {
                self.deleted_dirs.insert(rel.clone(), now);
                self.deleted_order.push_back((now, rel));
            } else {
                self.deleted_dirs.remove(&rel);
            }
        }
    }

    /// A move that may run now, for a queue that lingers ([`TargetQueue::lingering`]): a
    /// move never joins a batch, so waiting for one would only delay it (measured over
    /// ssh: a second rename of one `mv` burst started 100 ms after the first).
    pub fn next_move_plan(&mut self, now: Instant, caps: Caps) -> Option<Plan> {
        let failing = self.failures > 0 && self.jobs_in_flight > 0;
        if self.full_in_flight || self.full.is_some() || failing {
            return None;
        }
        if self.retry_at.is_some_and(|at| at > now) {
            return None;
        }
        self.take_move(now, caps)
    }

    /// The next job to run, if any may run now.
    pub fn next_plan(&mut self, now: Instant, caps: Caps) -> Option<Plan> {
        if self.full_in_flight || self.retry_at.is_some_and(|at| at > now) {
            return None;
        }
        // While failing, one probe at a time: a dead remote must not hold every worker.
        if self.failures > 0 && self.jobs_in_flight > 0 {
            return None;
        }
        if let Some(request) = &self.full {
            if self.jobs_in_flight > 0 {
                return None; // let running jobs finish; a full sync must not race them
            }
            let request = request.clone();
            self.full = None;
            // Pending paths stay queued and go as a batch right after the full sync: a
            // full sync relies on rsync's quick check (size and whole-second mtime), which
            // misses a same-size rewrite within the same second; batches do not.
            self.full_in_flight = true;
            self.jobs_in_flight += 1;
            return Some(Plan::Full(request));
        }
        if let Some(plan) = self.take_move(now, caps) {
            return Some(plan);
        }
        // A subtree sync must not run beside anything at or below it, nor beside a delete
        // above it: in flight it is marked as a directory delete, which keeps both away.
        if self.batch_turn && !self.blocked && !self.pending.is_empty() {
            let batch = self.take_batch(now, caps);
            if !batch.is_empty() {
                self.batch_turn = false;
                return Some(self.dispatch_batch(batch));
            }
        }
        let after = self.last_subtree.clone();
        let free = |rel: &&PathBuf| {
            !self.conflicts(rel, Op::Delete, true) && !self.waits_for_move(rel, true)
        };
        let subtree = after
            .as_ref()
            .and_then(|last| {
                self.subtrees
                    .range::<PathBuf, _>((
                        std::ops::Bound::Excluded(last),
                        std::ops::Bound::Unbounded,
                    ))
                    .find(free)
            })
            .or_else(|| self.subtrees.iter().find(free))
            .cloned();
        if let Some(rel) = subtree {
            self.last_subtree = Some(rel.clone());
            self.batch_turn = true;
            self.subtrees.remove(&rel);
            self.in_flight
                .mark(Rel::from(rel.as_path()), Op::Delete, true);
            self.subtrees_running.insert(rel.clone());
            self.jobs_in_flight += 1;
            return Some(Plan::Subtree(rel));
        }
        if self.blocked || self.pending.is_empty() {
            return None;
        }
        let batch = self.take_batch(now, caps);
        if batch.is_empty() {
            self.blocked = true;
            return None;
        }
        Some(self.dispatch_batch(batch))
    }

    fn dispatch_batch(&mut self, batch: Vec<Taken>) -> Plan {
        self.in_flight.reserve(batch.len());
        self.in_flight.mark_all(
            batch
                .iter()
                .map(|t| (t.rel.clone(), t.pending.op, t.pending.is_dir)),
        );
        self.jobs_in_flight += 1;
        Plan::Batch(batch)
    }

    fn take_batch(&mut self, now: Instant, caps: Caps) -> Vec<Taken> {
        let room = self.pending.len().min(caps.max_paths);
        let mut batch = Vec::with_capacity(room);
        let mut aside = Vec::new();
        let mut chosen = Chosen::with_capacity(room);
        let (mut ledger, remote) = self.pending.lock();
        while let Some(path) = self.order.pop_front(&mut ledger, remote) {
            // One search per path (taken or set aside), not two.
            let mut full = false;
            let took = ledger.take_if(remote, path, |path, pending| {
                let blocked = self.holds.get(path).is_some_and(|nb| *nb > now)
                    || (!self.moves.is_empty()
                        && Self::move_ends_block(
                            &self.move_ends,
                            path,
                            pending.op == Op::Delete || !pending.is_dir,
                        ))
                    || self.in_flight.conflicts(path, pending.op, pending.is_dir)
                    || Self::conflicts_with_chosen(&chosen, path, pending);
                full = !blocked && batch.len() >= caps.max_paths;
                !blocked && !full
            });
            match took {
                Take::Absent => {}
                Take::Kept(path) => {
                    aside.push(path);
                    if full {
                        break;
                    }
                }
                Take::Taken(path, pending) => {
                    if !self.holds.is_empty() {
                        self.holds.remove(&path); // expired: nothing to keep
                    }
                    chosen.insert(&path, pending.op, pending.is_dir);
                    batch.push(Taken { rel: path, pending });
                }
            }
        }
        ledger.compact();
        drop(ledger);
        for path in aside.into_iter().rev() {
            self.order.push_front(path);
        }
        batch
    }

    /// Within one batch rsync applies entries in its own order, not ours: a delete (or a
    /// directory replaced by a file) and a change below it go in separate runs. A new
    /// directory and the files in it may share one (`mkdir -p` bursts).
    fn conflicts_with_chosen(chosen: &Chosen, path: &Path, pending: &Pending) -> bool {
        if chosen.paths.is_empty() {
            return false;
        }
        let destructive = |op: Op, is_dir: bool| op == Op::Delete || !is_dir;
        let above = parents(path)
            .filter_map(|a| chosen.paths.get(key(a)))
            .any(|(op, is_dir)| destructive(*op, *is_dir));
        let below = chosen.above.contains(key(path));
        above || (below && destructive(pending.op, pending.is_dir))
    }

    fn take_all(&mut self) -> Vec<Taken> {
        self.order.clear(&self.pending);
        self.held.clear();
        self.holds.clear();
        self.pending
            .drain()
            .into_iter()
            .map(|(rel, pending)| Taken { rel, pending })
            .collect()
    }

    /// Whether pushing `path` now could race a running job on this remote.
    fn conflicts(&self, path: &Path, op: Op, is_dir: bool) -> bool {
        self.in_flight.conflicts(path, op, is_dir)
    }

    /// A job ended well: the remote is healthy, held paths may go at once.
    pub fn succeeded(&mut self, taken: &[Taken], ran: &Ran) {
        self.finish(taken, ran);
        self.healthy();
        self.holds.clear();
        self.held.clear();
    }

    fn healthy(&mut self) {
        self.down = false;
        self.failures = 0;
        self.retry_at = None;
    }

    /// A batch reached the remote but some paths did not arrive: only `retry` waits (each
    /// with its own backoff, at most `backoff`); the remote is healthy.
    pub fn partially_failed(
        &mut self,
        arrived: &[Taken],
        retry: Vec<Taken>,
        ran: &Ran,
        backoff: Duration,
        now: Instant,
    ) {
        self.finish(arrived, ran);
        for t in &retry {
            self.in_flight.unmark(&t.rel);
        }
        self.healthy();
        let retried: Vec<PathBuf> = retry.iter().map(|t| t.rel.to_path_buf()).collect();
        self.requeue(retry, Some(backoff), now);
        self.restore_moves(ran, &retried);
    }

    /// Paths the push worker did not send (the batch's byte limit): back at the front of
    /// the queue, without penalty. The job itself ends with the rest of its paths.
    pub fn unsent(&mut self, taken: Vec<Taken>) {
        for Taken { rel, pending, .. } in taken.into_iter().rev() {
            self.in_flight.unmark(&rel);
            if self.pending.contains_key(&rel) {
                continue; // a newer change supersedes it
            }
            self.order.push_front(rel.clone());
            self.pending.insert(rel, pending);
        }
        self.blocked = false;
    }

    /// A job failed as a whole. Its paths go back (unless a newer change replaced them),
    /// a full or subtree sync is asked for again. `remote_down` backs the whole target off;
    /// otherwise only these paths wait.
    pub fn failed(
        &mut self,
        taken: Vec<Taken>,
        ran: Ran,
        remote_down: bool,
        backoff: Duration,
        now: Instant,
    ) {
        // Down from here on: what the requeue below moves (a path following a moved
        // directory) is due for the journal like anything that arrives later.
        self.down = remote_down;
        self.finish(&taken, &ran);
        let whole = matches!(ran, Ran::Full(_) | Ran::Subtree(_));
        let retried: Vec<PathBuf> = taken.iter().map(|t| t.rel.to_path_buf()).collect();
        match &ran {
            Ran::Batch => {}
            Ran::Move(_) => {}
            Ran::Full(request) => self.request_full(request.clone()),
            Ran::Subtree(rel) => self.request_subtree(rel.clone()),
        }
        self.requeue(taken, (!remote_down).then_some(backoff), now);
        self.restore_moves(&ran, &retried);
        if remote_down || whole {
            self.failures += 1;
            self.retry_at = Some(now + backoff);
        }
        self.blocked = false;
    }

    /// Puts failed paths back, each held for its own backoff when `hold` is given.
    fn requeue(&mut self, taken: Vec<Taken>, hold: Option<Duration>, now: Instant) {
        for Taken {
            rel, mut pending, ..
        } in taken
        {
            if self.pending.contains_key(&rel) {
                continue; // a newer change is queued; it supersedes the failed one
            }
            pending.attempts = pending.attempts.saturating_add(1);
            if self.follow_into_move(&rel, &pending, now) {
                continue; // the delete of the moved directory's old name covers it
            }
            if let Some(backoff) = hold {
                let at = now + per_path_backoff(u32::from(pending.attempts), backoff);
                self.holds.insert(rel.clone(), at);
                self.held.push(Reverse((at, rel.clone())));
            }
            self.order.push_back(&self.pending, rel.clone());
            self.pending.insert(rel, pending);
        }
        self.blocked = false;
    }

    /// Ends a job's bookkeeping; a batch passes the paths it ran.
    fn finish(&mut self, taken: &[Taken], ran: &Ran) {
        self.jobs_in_flight = self.jobs_in_flight.saturating_sub(1);
        match ran {
            Ran::Full(_) => self.full_in_flight = false,
            Ran::Subtree(rel) => {
                self.in_flight.unmark(rel);
                self.subtrees_running.remove(rel);
            }
            Ran::Batch => {
                self.in_flight
                    .unmark_all(taken.iter().map(|t| t.rel.as_path()));
            }
            Ran::Move(moves) => {
                for t in taken {
                    self.in_flight.unmark(&t.rel);
                }
                for (from, to) in moves {
                    self.in_flight.unmark(from);
                    self.in_flight.unmark(to);
                    self.moves_running.remove(to);
                }
            }
        }
        self.blocked = false;
    }

    /// Everything still waiting (for the journal at shutdown), leaving the queue empty.
    pub fn drain(&mut self) -> Vec<Taken> {
        self.take_all()
    }
}

/// The paths chosen for one batch, and every directory above one of them (for the
/// "nothing below a delete" rule without ordered scans).
struct Chosen {
    paths: hashbrown::HashMap<RelKey, (Op, bool)>,
    above: hashbrown::HashSet<Box<[u8]>>,
}

impl Chosen {
    fn with_capacity(paths: usize) -> Chosen {
        Chosen {
            paths: hashbrown::HashMap::with_capacity(paths),
            above: hashbrown::HashSet::new(),
        }
    }

    fn insert(&mut self, path: &Rel, op: Op, is_dir: bool) {
        self.paths.insert(RelKey(path.clone()), (op, is_dir));
        for ancestor in parents(path) {
            if self.above.contains(key(ancestor)) {
                break; // its own ancestors are in already
            }
            self.above.insert(key(ancestor).into());
        }
    }
}

/// How long a directory delete that went out is remembered, waiting for the directory
/// to come back under the same name (then it gets a subtree sync).
pub const DELETE_MEMORY: Duration = Duration::from_secs(600);

/// What a running job of this queue is, for its bookkeeping when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ran {
    /// A batch of paths.
    Batch,
    /// A full sync.
    Full(FullRequest),
    /// A subtree sync of this directory.
    Subtree(PathBuf),
    /// Renames, `(from, to)`; the job's taken paths are its entries.
    Move(Vec<(PathBuf, PathBuf)>),
}

/// The paths strictly below `rel` among `sorted` (a sorted range starting at `rel`).
fn strictly_below<'a>(sorted: impl Iterator<Item = &'a PathBuf>, rel: &Path) -> Vec<PathBuf> {
    sorted
        .take_while(|p| p.starts_with(rel))
        .filter(|p| p.as_path() != rel)
        .cloned()
        .collect()
}

/// Removes every key strictly below `rel` from `map`.
fn remove_keys_below<V>(map: &mut BTreeMap<PathBuf, V>, rel: &Path) {
    for p in strictly_below(map.range(rel.to_path_buf()..).map(|(p, _)| p), rel) {
        map.remove(&p);
    }
}

/// Removes every path strictly below `rel` from `set`.
fn remove_below(set: &mut BTreeSet<PathBuf>, rel: &Path) {
    for p in strictly_below(set.range(rel.to_path_buf()..), rel) {
        set.remove(&p);
    }
}

/// Backoff of one path after `attempts` partial failures: doubling, capped.
fn per_path_backoff(attempts: u32, cap: Duration) -> Duration {
    crate::backoff::doubling(
        Duration::from_secs(1),
        attempts,
        cap.max(Duration::from_secs(1)),
    )
}

mod in_flight;
mod ledger;
mod moves;
#[cfg(test)]
mod sharing_tests;
#[cfg(test)]
mod tests;
