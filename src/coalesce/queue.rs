//! The queue of one remote of one root: merged pending paths, what is in flight, backoff.
//!
//! Pure state, no threads and no clock of its own (`now` is an argument), so every rule is
//! testable without sleeping. Memory is bounded by the number of distinct dirty paths.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::job::{Entry, Op, Work};
use in_flight::InFlight;

/// One path waiting to be pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// What to do: the latest event wins.
    pub op: Op,
    /// Whether the path is a directory (latest event).
    pub is_dir: bool,
    /// Mask of the latest event, for plugins.
    pub mask: u32,
    /// When the oldest unpushed event for it was seen (latency is measured from here).
    pub seen: Instant,
    /// After a partial failure: not before this instant.
    pub not_before: Option<Instant>,
    /// Failed attempts so far (for the per-path backoff).
    pub attempts: u32,
}

/// A path handed to a worker, with what is needed when its outcome comes back.
#[derive(Debug, Clone)]
pub struct Taken {
    /// The path and operation as sent.
    pub entry: Entry,
    /// Its pending state when taken.
    pub pending: Pending,
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

/// The state of one target.
#[derive(Debug, Default)]
pub struct TargetQueue {
    pending: BTreeMap<PathBuf, Pending>,
    /// Dispatch order (FIFO); may hold names no longer pending, skipped lazily.
    order: VecDeque<PathBuf>,
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
    /// Consecutive failed jobs (0: healthy).
    failures: u32,
    /// While failing: no job before this instant.
    retry_at: Option<Instant>,
    /// Nothing pending can go until the in-flight set or the clock changes.
    blocked: bool,
    /// Paths held back by a partial failure, by release time.
    held: BinaryHeap<Reverse<(Instant, PathBuf)>>,
    /// Renames waiting to be made on the remote from what it holds, new name → old name
    /// (`moves.rs`); nothing at or below either name goes before its move.
    /// (with the order in which they were seen)
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
    /// Merges one change. A directory delete subsumes the pending changes below it.
    ///
    /// A directory that was deleted (or moved away) and is a directory again under the
    /// same name gets a subtree sync, whether its delete is still queued, running or done:
    /// a delete of a path that exists again when rsync runs is a no-op, and pushing the
    /// new directory alone (`--no-recursive`) would leave the old content on the remote.
    pub fn observe(&mut self, rel: PathBuf, op: Op, is_dir: bool, mask: u32, now: Instant) {
        if op == Op::Delete {
            self.cancel_moves_onto(&rel, is_dir);
        }
        if op == Op::Delete && is_dir {
            let below: Vec<PathBuf> = self.descendants(&rel).cloned().collect();
            for path in below {
                self.pending.remove(&path);
            }
            remove_keys_below(&mut self.deleted_dirs, &rel);
            self.deleted_dirs.insert(rel.clone(), now);
            self.deleted_order.push_back((now, rel.clone()));
        } else if op == Op::Update && is_dir && self.deleted_dirs.remove(&rel).is_some() {
            remove_keys_below(&mut self.deleted_dirs, &rel);
            self.request_subtree(rel.clone());
        }
        // A file or symlink that takes the name is remembered as well: its push (with
        // `--force`) would replace the remote directory whole, but a directory again under
        // the name before it went out supersedes it in the queue.
        if !self.conflicts(&rel, op, is_dir) {
            self.blocked = false;
        }
        match self.pending.get_mut(&rel) {
            Some(existing) => {
                existing.op = op;
                existing.is_dir = is_dir;
                existing.mask = mask;
                existing.not_before = None;
            }
            None => {
                self.order.push_back(rel.clone());
                let pending = Pending {
                    op,
                    is_dir,
                    mask,
                    seen: now,
                    not_before: None,
                    attempts: 0,
                };
                self.pending.insert(rel, pending);
            }
        }
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
                    && (self.subtrees.contains(&entry.rel)
                        || self.subtrees_running.contains(&entry.rel)
                        || self.moves.contains_key(&entry.rel)
                        || self.moves_running.contains_key(&entry.rel)) =>
            {
                Work::Path(Entry {
                    op: Op::Delete,
                    ..entry
                })
            }
            other => other,
        }
    }

    /// Everything waiting here that has no journal entry yet, in its journal form: the
    /// pending paths, the subtree syncs asked for (as their directory's delete) and a
    /// full sync asked for (the whole root). A remote that is down gets these journaled
    /// at once, so that a crash while it is down loses none of them.
    pub fn unjournaled(&self) -> Vec<Work> {
        let mut out = Vec::new();
        if self.full.is_some()
            && !self
                .journaled
                .contains(Work::WholeRoot.scope().storage_rel())
        {
            out.push(Work::WholeRoot);
        }
        for (rel, pending) in &self.pending {
            if !self.journaled.contains(rel) {
                out.push(self.journal_form(Work::Path(Entry {
                    rel: rel.clone(),
                    op: pending.op,
                    is_dir: pending.is_dir,
                })));
            }
        }
        for rel in &self.subtrees {
            if !self.journaled.contains(rel) {
                out.push(Work::Path(Entry {
                    rel: rel.clone(),
                    op: Op::Delete,
                    is_dir: true,
                }));
            }
        }
        out
    }

    /// Whether `rel` has a live journal entry.
    pub fn is_journaled(&self, rel: &Path) -> bool {
        self.journaled.contains(rel)
    }

    /// `rels` now have live journal entries.
    pub fn mark_journaled(&mut self, rels: impl IntoIterator<Item = PathBuf>) {
        self.journaled.extend(rels);
    }

    /// Forgets the journal entries of `rels` (each of them, not what is below); returns
    /// the ones that had one.
    pub fn unjournal(&mut self, rels: impl IntoIterator<Item = PathBuf>) -> Vec<PathBuf> {
        rels.into_iter()
            .filter(|rel| self.journaled.remove(rel))
            .collect()
    }

    /// Forgets every journal entry at or below `rel` (empty: the whole root) and returns
    /// them, except those still pending (they stay journaled until they are pushed).
    pub fn unjournal_covered(&mut self, rel: &Path) -> Vec<PathBuf> {
        let covered: Vec<PathBuf> = self
            .journaled
            .range(rel.to_path_buf()..)
            .take_while(|p| p.starts_with(rel))
            .filter(|p| !self.pending.contains_key(*p) || p.as_path() == rel)
            .cloned()
            .collect();
        for p in &covered {
            self.journaled.remove(p);
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
        let oldest = self.order.iter().find_map(|p| self.pending.get(p))?.seen;
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
                if let Some(p) = self.pending.get_mut(&path) {
                    if p.not_before.is_some_and(|nb| nb <= now) {
                        p.not_before = None;
                        self.blocked = false;
                    }
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
            self.in_flight.mark(&rel, Op::Delete, true);
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
        for taken in &batch {
            self.in_flight
                .mark(&taken.entry.rel, taken.entry.op, taken.entry.is_dir);
        }
        self.jobs_in_flight += 1;
        Plan::Batch(batch)
    }

    fn take_batch(&mut self, now: Instant, caps: Caps) -> Vec<Taken> {
        let mut batch = Vec::new();
        let mut aside = Vec::new();
        let mut chosen: BTreeMap<PathBuf, (Op, bool)> = BTreeMap::new();
        while let Some(path) = self.order.pop_front() {
            let Some(pending) = self.pending.get(&path) else {
                continue;
            };
            if chosen.contains_key(&path) {
                continue; // a stale duplicate in `order`
            }
            if pending.not_before.is_some_and(|nb| nb > now)
                || self.waits_for_move(&path, pending.op == Op::Delete || !pending.is_dir)
                || self.conflicts(&path, pending.op, pending.is_dir)
                || Self::conflicts_with_chosen(&chosen, &path, pending)
            {
                aside.push(path);
                continue;
            }
            if batch.len() >= caps.max_paths {
                aside.push(path);
                break;
            }
            let Some(pending) = self.pending.remove(&path) else {
                continue;
            };
            chosen.insert(path.clone(), (pending.op, pending.is_dir));
            let entry = Entry {
                rel: path,
                op: pending.op,
                is_dir: pending.is_dir,
            };
            batch.push(Taken { entry, pending });
        }
        for path in aside.into_iter().rev() {
            self.order.push_front(path);
        }
        batch
    }

    /// Within one batch rsync applies entries in its own order, not ours: a delete (or a
    /// directory replaced by a file) and a change below it go in separate runs. A new
    /// directory and the files in it may share one (`mkdir -p` bursts).
    fn conflicts_with_chosen(
        chosen: &BTreeMap<PathBuf, (Op, bool)>,
        path: &Path,
        pending: &Pending,
    ) -> bool {
        if chosen.is_empty() {
            return false;
        }
        let destructive = |op: Op, is_dir: bool| op == Op::Delete || !is_dir;
        let above = path
            .ancestors()
            .skip(1)
            .filter_map(|a| chosen.get(a))
            .any(|(op, is_dir)| destructive(*op, *is_dir));
        let below = chosen
            .range(path.to_path_buf()..)
            .find(|(p, _)| p.as_path() != path)
            .is_some_and(|(p, _)| p.starts_with(path));
        above || (below && destructive(pending.op, pending.is_dir))
    }

    fn take_all(&mut self) -> Vec<Taken> {
        self.order.clear();
        self.held.clear();
        std::mem::take(&mut self.pending)
            .into_iter()
            .map(|(rel, pending)| Taken {
                entry: Entry {
                    rel,
                    op: pending.op,
                    is_dir: pending.is_dir,
                },
                pending,
            })
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
        for p in self.pending.values_mut() {
            p.not_before = None;
        }
        self.held.clear();
    }

    fn healthy(&mut self) {
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
            self.in_flight.unmark(&t.entry.rel);
        }
        self.healthy();
        let retried: Vec<PathBuf> = retry.iter().map(|t| t.entry.rel.clone()).collect();
        self.requeue(retry, Some(backoff), now);
        self.restore_moves(ran, &retried);
    }

    /// Paths the push worker did not send (the batch's byte limit): back at the front of
    /// the queue, without penalty. The job itself ends with the rest of its paths.
    pub fn unsent(&mut self, taken: Vec<Taken>) {
        for Taken { entry, pending } in taken.into_iter().rev() {
            self.in_flight.unmark(&entry.rel);
            if self.pending.contains_key(&entry.rel) {
                continue; // a newer change supersedes it
            }
            self.order.push_front(entry.rel.clone());
            self.pending.insert(entry.rel, pending);
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
        self.finish(&taken, &ran);
        let whole = matches!(ran, Ran::Full(_) | Ran::Subtree(_));
        let retried: Vec<PathBuf> = taken.iter().map(|t| t.entry.rel.clone()).collect();
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
        for Taken { entry, mut pending } in taken {
            if self.pending.contains_key(&entry.rel) {
                continue; // a newer change is queued; it supersedes the failed one
            }
            pending.attempts += 1;
            if self.follow_into_move(&entry, &pending, now) {
                continue; // the delete of the moved directory's old name covers it
            }
            if let Some(backoff) = hold {
                let at = now + per_path_backoff(pending.attempts, backoff);
                pending.not_before = Some(at);
                self.held.push(Reverse((at, entry.rel.clone())));
            }
            self.order.push_back(entry.rel.clone());
            self.pending.insert(entry.rel, pending);
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
                for t in taken {
                    self.in_flight.unmark(&t.entry.rel);
                }
            }
            Ran::Move(moves) => {
                for t in taken {
                    self.in_flight.unmark(&t.entry.rel);
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

    fn descendants<'a>(&'a self, rel: &'a Path) -> impl Iterator<Item = &'a PathBuf> + 'a {
        self.pending
            .range(rel.to_path_buf()..)
            .skip_while(move |(p, _)| p.as_path() == rel)
            .map(|(p, _)| p)
            .take_while(move |p| p.starts_with(rel))
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
mod moves;
#[cfg(test)]
mod tests;
