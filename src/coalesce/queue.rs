//! The queue of one remote of one root: merged pending paths, what is in flight, backoff.
//!
//! Pure state, no threads and no clock of its own (`now` is an argument), so every rule is
//! testable without sleeping. Memory is bounded by the number of distinct dirty paths.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::job::{Entry, Op};

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
    /// Mirror the whole root; `covered` are the pending paths it makes current.
    Full(FullRequest, Vec<Taken>),
}

/// Limits of one batch.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Paths per rsync run.
    pub max_paths: usize,
    /// Bytes of file data per rsync run (sizes as the caller measures them).
    pub max_bytes: u64,
}

/// The state of one target.
#[derive(Debug, Default)]
pub struct TargetQueue {
    pending: BTreeMap<PathBuf, Pending>,
    /// Dispatch order (FIFO); may hold names no longer pending, skipped lazily.
    order: VecDeque<PathBuf>,
    /// Path → op of every path in a running job.
    in_flight: HashMap<PathBuf, Op>,
    /// Directory → number of in-flight paths below it.
    in_flight_below: HashMap<PathBuf, usize>,
    /// Running jobs (batches and full syncs).
    pub jobs_in_flight: usize,
    /// A full sync is wanted.
    pub full: Option<FullRequest>,
    /// A full sync is running.
    pub full_in_flight: bool,
    /// Paths with a live journal entry.
    pub journaled: BTreeSet<PathBuf>,
    /// Consecutive failed jobs (0: healthy).
    pub failures: u32,
    /// While failing: no job before this instant.
    pub retry_at: Option<Instant>,
    /// Nothing pending can go until the in-flight set or the clock changes.
    blocked: bool,
    /// Paths held back by a partial failure, by release time.
    held: BinaryHeap<Reverse<(Instant, PathBuf)>>,
}

impl TargetQueue {
    /// Merges one change. A directory delete subsumes the pending changes below it.
    pub fn observe(&mut self, rel: PathBuf, op: Op, is_dir: bool, mask: u32, now: Instant) {
        if op == Op::Delete && is_dir {
            let below: Vec<PathBuf> = self.descendants(&rel).cloned().collect();
            for path in below {
                self.pending.remove(&path);
            }
        }
        if !self.conflicts(&rel, op, is_dir) {
            self.blocked = false;
        }
        if op == Op::Update
            && self
                .pending
                .get(&rel)
                .is_some_and(|p| p.op == Op::Delete && p.is_dir)
        {
            self.replaced_directory();
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

    /// A directory was deleted (or moved away) and something new took its name before
    /// the delete reached the remote. Pushing the new one alone would leave what the old
    /// directory held there (`--delete-missing-args` deletes only what is missing here),
    /// so the remote is brought in line by a full sync.
    fn replaced_directory(&mut self) {
        self.request_full(FullRequest {
            reason: "replaced directory",
            extra_excludes: Vec::new(),
        });
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
        self.pending.is_empty() && self.jobs_in_flight == 0 && self.full.is_none()
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
    }

    /// The next job to run, if any may run now. `size_of` measures a file for the byte cap.
    pub fn next_plan(
        &mut self,
        now: Instant,
        caps: Caps,
        size_of: impl Fn(&Path) -> u64,
    ) -> Option<Plan> {
        if self.full_in_flight || self.retry_at.is_some_and(|at| at > now) {
            return None;
        }
        // While failing, one probe at a time: a dead remote must not hold every worker.
        if self.failures > 0 && self.jobs_in_flight > 0 {
            return None;
        }
        if let Some(request) = &self.full {
            if self.jobs_in_flight > 0 {
                return None; // let running batches finish; a full sync must not race them
            }
            let request = request.clone();
            self.full = None;
            // Pending paths stay queued and go as a batch right after the full sync: a
            // full sync relies on rsync's quick check (size and whole-second mtime), which
            // misses a same-size rewrite within the same second; batches do not.
            let covered = Vec::new();
            self.full_in_flight = true;
            self.jobs_in_flight += 1;
            return Some(Plan::Full(request, covered));
        }
        if self.blocked || self.pending.is_empty() {
            return None;
        }
        let batch = self.take_batch(now, caps, size_of);
        if batch.is_empty() {
            self.blocked = true;
            return None;
        }
        for taken in &batch {
            self.mark_in_flight(&taken.entry.rel, taken.entry.op);
        }
        self.jobs_in_flight += 1;
        Some(Plan::Batch(batch))
    }

    fn take_batch(
        &mut self,
        now: Instant,
        caps: Caps,
        size_of: impl Fn(&Path) -> u64,
    ) -> Vec<Taken> {
        let mut batch = Vec::new();
        let mut aside = Vec::new();
        let mut bytes = 0u64;
        let mut chosen: BTreeMap<PathBuf, (Op, bool)> = BTreeMap::new();
        while let Some(path) = self.order.pop_front() {
            let Some(pending) = self.pending.get(&path) else {
                continue;
            };
            if chosen.contains_key(&path) {
                continue; // a stale duplicate in `order`
            }
            if pending.not_before.is_some_and(|nb| nb > now)
                || self.conflicts(&path, pending.op, pending.is_dir)
                || Self::conflicts_with_chosen(&chosen, &path, pending)
            {
                aside.push(path);
                continue;
            }
            let size = if pending.op == Op::Update && !pending.is_dir {
                size_of(&path)
            } else {
                0
            };
            if !batch.is_empty() && (batch.len() >= caps.max_paths || bytes + size > caps.max_bytes)
            {
                aside.push(path);
                break;
            }
            bytes += size;
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

    /// Whether pushing `path` now could race a running job on this remote: the same path,
    /// a directory above it being deleted, or (for a delete or a non-directory) anything
    /// below it in flight.
    fn conflicts(&self, path: &Path, op: Op, is_dir: bool) -> bool {
        if self.in_flight.is_empty() {
            return false;
        }
        self.in_flight.contains_key(path)
            || path
                .ancestors()
                .skip(1)
                .any(|a| self.in_flight.get(a) == Some(&Op::Delete))
            || ((op == Op::Delete || !is_dir)
                && self.in_flight_below.get(path).is_some_and(|n| *n > 0))
    }

    fn mark_in_flight(&mut self, path: &Path, op: Op) {
        self.in_flight.insert(path.to_path_buf(), op);
        for ancestor in path.ancestors().skip(1) {
            *self
                .in_flight_below
                .entry(ancestor.to_path_buf())
                .or_insert(0) += 1;
        }
    }

    fn unmark_in_flight(&mut self, path: &Path) {
        if self.in_flight.remove(path).is_none() {
            return;
        }
        for ancestor in path.ancestors().skip(1) {
            if let Some(count) = self.in_flight_below.get_mut(ancestor) {
                *count -= 1;
                if *count == 0 {
                    self.in_flight_below.remove(ancestor);
                }
            }
        }
    }

    /// A job ended well: the remote is healthy, held paths may go at once.
    pub fn succeeded(&mut self, taken: &[Taken], full: bool) {
        self.finish(taken, full);
        self.failures = 0;
        self.retry_at = None;
        for p in self.pending.values_mut() {
            p.not_before = None;
        }
        self.held.clear();
    }

    /// A job failed. Its paths go back (unless a newer change replaced them). `remote_down`
    /// backs the whole target off; otherwise only these paths wait.
    pub fn failed(
        &mut self,
        taken: Vec<Taken>,
        full: Option<FullRequest>,
        remote_down: bool,
        backoff: Duration,
        now: Instant,
    ) {
        let full_job = full.is_some();
        self.finish(&taken, full_job);
        if let Some(request) = full {
            self.request_full(request);
        }
        for Taken { entry, mut pending } in taken {
            if let Some(newer) = self.pending.get(&entry.rel) {
                // A newer change is queued; it supersedes the failed one, except that a
                // failed directory delete still owes the removal of the old content.
                if entry.op == Op::Delete && entry.is_dir && newer.op == Op::Update {
                    self.replaced_directory();
                }
                continue;
            }
            pending.attempts += 1;
            if !remote_down {
                let at = now + per_path_backoff(pending.attempts, backoff);
                pending.not_before = Some(at);
                self.held.push(Reverse((at, entry.rel.clone())));
            }
            self.order.push_back(entry.rel.clone());
            self.pending.insert(entry.rel, pending);
        }
        if remote_down || full_job {
            self.failures += 1;
            self.retry_at = Some(now + backoff);
        }
        self.blocked = false;
    }

    fn finish(&mut self, taken: &[Taken], full: bool) {
        self.jobs_in_flight = self.jobs_in_flight.saturating_sub(1);
        if full {
            self.full_in_flight = false;
        } else {
            for t in taken {
                self.unmark_in_flight(&t.entry.rel);
            }
        }
        self.blocked = false;
    }

    /// Everything still waiting (for the journal at shutdown), leaving the queue empty.
    pub fn drain(&mut self) -> Vec<Taken> {
        self.take_all()
    }

    /// Journaled paths at or below `rel`.
    pub fn journaled_below(&self, rel: &Path) -> Vec<PathBuf> {
        self.journaled
            .range(rel.to_path_buf()..)
            .take_while(|p| p.starts_with(rel))
            .cloned()
            .collect()
    }

    fn descendants<'a>(&'a self, rel: &'a Path) -> impl Iterator<Item = &'a PathBuf> + 'a {
        self.pending
            .range(rel.to_path_buf()..)
            .skip_while(move |(p, _)| p.as_path() == rel)
            .map(|(p, _)| p)
            .take_while(move |p| p.starts_with(rel))
    }
}

/// Backoff of one path after `attempts` partial failures: doubling, capped.
fn per_path_backoff(attempts: u32, cap: Duration) -> Duration {
    let secs = 2u64.saturating_pow(attempts.min(20));
    Duration::from_secs(secs).min(cap.max(Duration::from_secs(1)))
}

#[cfg(test)]
mod tests;
