//! The scheduler: every target queue, running jobs, delivery tracking, timers.
//!
//! A pure state machine: the clock (`now`) and the retry jitter are arguments, file facts
//! arrive with the outcomes (`push` measures and stats), so every rule is testable without
//! threads, sleeps or files. Outcomes are handled in `outcome.rs`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::delivery::Delivery;
use super::journal::Journal;
use super::queue::{
    self, Caps, FullRequest, Ledger, Merge, PendingView, Plan, Ran, Seen, Taken, TargetQueue,
};
use super::rel::Rel;
use crate::config::CrontabConfig;
use crate::job::{Change, Entry, FsEvent, JobKind, Move, Op, PushJob, Scope, TargetId, Work};
use crate::journal_key::TargetKey;
use crate::metrics::Metrics;

/// How long a small backlog waits for a running batch of the same remote.
pub const LINGER: Duration = Duration::from_millis(100);

/// A number in [0, 1) for the retry jitter; injected so tests are deterministic.
pub type Jitter = Box<dyn FnMut() -> f64 + Send>;

/// What the scheduler needs to know, derived from the configuration.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Root directories, by root index.
    pub roots: Vec<PathBuf>,
    /// Journal key of each remote of each root (`roots[i]` → keys of its remotes).
    pub target_keys: Vec<Vec<TargetKey>>,
    /// Worker threads in the pool.
    pub n_workers: usize,
    /// `<inotify><delete>`: deletions are pushed.
    pub delete: bool,
    /// Batch limits.
    pub caps: Caps,
    /// `timeToExecute`: the longest gap between retries.
    pub retry_max: Duration,
    /// Periodic full sync.
    pub crontab: Option<CrontabConfig>,
    /// `-r`: full sync of every target first.
    pub full_sync_first: bool,
    /// How long shutdown waits for running jobs.
    pub shutdown_grace: Duration,
    /// Whether to report delivered changes (plugins or CDN enabled).
    pub track_delivery: bool,
}

pub(super) struct Running {
    pub(super) target: TargetId,
    pub(super) taken: Vec<Taken>,
    pub(super) ran: Ran,
    pub(super) started: Instant,
}

/// All scheduling state; driven by the `sersync-coalesce` thread.
pub struct Scheduler {
    pub(super) config: SchedulerConfig,
    pub(super) journal: Arc<dyn Journal>,
    pub(super) queues: BTreeMap<TargetId, TargetQueue>,
    pub(super) running: HashMap<u64, Running>,
    pub(super) idle_workers: usize,
    next_id: u64,
    rotate: usize,
    next_crontab: Option<Instant>,
    pub(super) delivery: Delivery,
    pub(super) metrics: Arc<Metrics>,
    pub(super) jitter: Jitter,
    /// The event input has ended (the watcher stopped): from here on nothing that
    /// changes on disk is observed, so a batch path found gone cannot count on the
    /// event that removed or replaced it (see [`Scheduler::events_ended`]).
    pub(super) events_ended: bool,
    /// Roots that changed unobserved around the stop ([`FsEvent::ChangingAtStop`], a
    /// batch path gone after [`Scheduler::events_ended`]): [`Scheduler::persist_all`]
    /// journals each whole, last, so that no full sync finishing before it clears that.
    pub(super) unobserved_roots: std::collections::BTreeSet<usize>,
}

impl Scheduler {
    /// Builds the queues, replays the journal and, with `-r`, asks for full syncs.
    /// Entries under a 0.1.0 key are moved to the current key (recorded anew, then
    /// cleared under the old one) so that they drain like any other.
    pub fn new(
        config: SchedulerConfig,
        journal: Arc<dyn Journal>,
        metrics: Arc<Metrics>,
        now: Instant,
        jitter: Jitter,
    ) -> Scheduler {
        let mut queues = BTreeMap::new();
        let mut by_key = HashMap::new();
        for (root, keys) in config.target_keys.iter().enumerate() {
            // The remotes of a root keep their pending changes in one ledger.
            let ledger = Ledger::shared();
            for (remote, key) in keys.iter().enumerate() {
                let id = TargetId { root, remote };
                let view = PendingView::new(Arc::clone(&ledger), remote);
                queues.insert(id, TargetQueue::sharing(view));
                by_key.insert(key.to_string(), (id, false));
                by_key.insert(key.legacy_text(), (id, true));
            }
        }
        let mut scheduler = Scheduler {
            idle_workers: config.n_workers.max(1),
            next_crontab: config.crontab.as_ref().map(|c| now + c.interval),
            journal,
            queues,
            running: HashMap::new(),
            next_id: 1,
            rotate: 0,
            delivery: Delivery::default(),
            metrics,
            config,
            jitter,
            events_ended: false,
            unobserved_roots: std::collections::BTreeSet::new(),
        };
        scheduler.replay(&by_key, now);
        if scheduler.config.full_sync_first {
            scheduler.request_full_all(None, "startup", &[]);
        }
        scheduler
    }

    fn replay(&mut self, by_key: &HashMap<String, (TargetId, bool)>, now: Instant) {
        let mut replayed = 0usize;
        let mut legacy: BTreeMap<(String, TargetId), Vec<Work>> = BTreeMap::new();
        for (key, work) in self.journal.pending() {
            let Some((id, is_legacy)) = by_key.get(&key).copied() else {
                if TargetKey::is_cdn_text(&key) {
                    continue; // the CDN stage replays its own purges
                }
                log::warn!(
                    "journal entry for unknown remote {key:?} kept; it matches no <localpath>/<remote> now"
                );
                continue;
            };
            let Some(queue) = self.queues.get_mut(&id) else {
                continue;
            };
            match &work {
                Work::WholeRoot => queue.request_full(FullRequest {
                    reason: "journal",
                    extra_excludes: Vec::new(),
                }),
                // Gone or back since: a subtree sync deletes it or mirrors it exactly.
                Work::Path(entry) if entry.op == Op::Delete && entry.is_dir => {
                    queue.request_subtree(entry.rel.to_path_buf());
                }
                // The queue holds the normalized form; the journal's spelling stays in
                // `work`, which clears the entry.
                Work::Path(entry) => {
                    queue.observe(
                        Rel::from(entry.rel.as_path()),
                        entry.op,
                        entry.is_dir,
                        0,
                        now,
                    );
                }
            }
            queue.mark_journaled([work.scope().storage_rel().to_path_buf()]);
            if is_legacy {
                legacy.entry((key, id)).or_default().push(work);
            }
            replayed += 1;
        }
        for ((old_key, id), work) in legacy {
            let key = self.key(id);
            let scopes: Vec<Scope> = work.iter().map(Work::scope).collect();
            let moved = self
                .journal
                .record(&key, &work, None, "journal entry of sersync 0.1.0", "")
                .and_then(|()| self.journal.clear(&old_key, &scopes));
            match moved {
                Ok(()) => log::info!(
                    "{key}: {} journal entr(y/ies) of 0.1.0 ({old_key}) moved to the current key",
                    work.len()
                ),
                Err(err) => log::error!("{key}: cannot move 0.1.0 journal entries: {err}"),
            }
        }
        if replayed > 0 {
            log::info!("journal: {replayed} pending entr(y/ies) replayed");
        }
    }

    fn request_full_all(&mut self, root: Option<usize>, reason: &'static str, excludes: &[String]) {
        for (id, queue) in &mut self.queues {
            if root.is_none_or(|r| r == id.root) {
                queue.request_full(FullRequest {
                    reason,
                    extra_excludes: excludes.to_vec(),
                });
            }
        }
    }

    /// Merges one event into the queue of every remote of its root.
    pub fn observe(&mut self, event: FsEvent, now: Instant) {
        match event {
            FsEvent::ChangingAtStop { root } => {
                log::info!(
                    "root {}: still changing when the watcher stopped; journaled for a full sync at the next start",
                    self.root_display(root)
                );
                self.unobserved_roots.insert(root);
            }
            FsEvent::Rescan { root } => {
                log::warn!(
                    "root {}: events may have been lost; full sync scheduled",
                    self.root_display(root)
                );
                self.request_full_all(Some(root), "rescan", &[]);
            }
            FsEvent::Move(moved) => self.observe_move(moved, now),
            FsEvent::Change(change) => {
                if change.op == Op::Delete && !self.config.delete {
                    return; // <delete start="false">: remote copies are kept
                }
                let n_remotes = self.config.target_keys.get(change.root).map_or(0, Vec::len);
                // One copy of the path, shared by every remote's queue.
                let rel = Rel::from(change.rel.as_path());
                let seen = change.seen.min(now);
                let merge = Merge {
                    op: change.op,
                    is_dir: change.is_dir,
                    mask: change.mask,
                    seen: Seen::at(seen),
                };
                let root = change.root;
                let range = TargetId { root, remote: 0 }..TargetId {
                    root,
                    remote: n_remotes,
                };
                let mut queues: Vec<&mut TargetQueue> =
                    self.queues.range_mut(range).map(|(_, q)| q).collect();
                queue::observe_all(&mut queues, &rel, merge, seen);
                if self.config.track_delivery {
                    self.delivery.owe(&change, n_remotes);
                }
            }
        }
    }

    /// Merges a rename into the queue of every remote of its root; plugins get the
    /// delete of the old name (when deletions are pushed) and the update of the new one.
    fn observe_move(&mut self, moved: Move, now: Instant) {
        let n_remotes = self.config.target_keys.get(moved.root).map_or(0, Vec::len);
        let seen = moved.seen.min(now);
        for remote in 0..n_remotes {
            if let Some(queue) = self.queues.get_mut(&TargetId {
                root: moved.root,
                remote,
            }) {
                queue.observe_move(
                    moved.from.clone(),
                    moved.to.clone(),
                    moved.is_dir,
                    moved.mask,
                    seen,
                    self.config.delete,
                );
            }
        }
        if self.config.track_delivery {
            let change = |rel: &PathBuf, op| Change {
                root: moved.root,
                rel: rel.clone(),
                op,
                is_dir: moved.is_dir,
                mask: moved.mask,
                seen,
            };
            if moved.is_dir {
                self.delivery.forget_below(moved.root, &moved.from);
                self.delivery.forget_below(moved.root, &moved.to);
            }
            if self.config.delete {
                self.delivery
                    .owe(&change(&moved.from, Op::Delete), n_remotes);
            }
            self.delivery.owe(&change(&moved.to, Op::Update), n_remotes);
        }
    }

    /// Journals what waits for a remote that is down, and journaled paths that changed
    /// since their entry was written, as it arrives: a crash while a remote is down must
    /// lose nothing, even a change that came after the last failed probe. Called after
    /// each bite of events (one journal write, one fsync, per bite and remote).
    pub fn journal_waiting(&mut self) {
        let behind: Vec<TargetId> = self
            .queues
            .iter()
            .filter(|(_, q)| q.journal_behind())
            .map(|(id, _)| *id)
            .collect();
        for id in behind {
            let key = self.key(id);
            let Some(queue) = self.queues.get_mut(&id) else {
                continue;
            };
            let waiting = queue.journal_due();
            if waiting.is_empty() {
                queue.journal_caught_up();
                continue;
            }
            let reason = if queue.is_down() {
                "queued while the remote is down"
            } else {
                "changed again while journaled"
            };
            match self.journal.record(&key, &waiting, None, reason, "") {
                Ok(()) => {
                    queue.mark_journaled(
                        waiting
                            .iter()
                            .map(|w| w.scope().storage_rel().to_path_buf()),
                    );
                    queue.journal_caught_up();
                    log::debug!(
                        "{key}: {} waiting path(s) journaled ({reason})",
                        waiting.len()
                    );
                }
                Err(err) => log::error!(
                    "{key}: cannot journal {} waiting path(s) ({err}); kept in memory only",
                    waiting.len()
                ),
            }
        }
    }

    /// Advances timers: held paths, retry times, crontab.
    pub fn tick(&mut self, now: Instant) {
        for queue in self.queues.values_mut() {
            queue.tick(now);
        }
        if let (Some(due), Some(crontab)) = (self.next_crontab, self.config.crontab.clone()) {
            if due <= now {
                log::info!("crontab: full sync of every root");
                self.request_full_all(None, "crontab", &crontab.excludes);
                self.next_crontab = Some(now + crontab.interval);
            }
        }
    }

    /// The earliest instant after `now` a timer needs the thread awake.
    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        self.queues
            .values()
            .filter_map(|q| {
                let linger = q.lingering(now, LINGER, self.config.caps.max_paths);
                match (q.next_wakeup(), linger) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            })
            .chain(self.next_crontab)
            .min()
    }

    /// Jobs handed out and not yet reported back.
    pub fn jobs_in_flight(&self) -> usize {
        self.running.len()
    }

    /// How long shutdown waits for running jobs.
    pub fn shutdown_grace(&self) -> Duration {
        self.config.shutdown_grace
    }

    /// The next job, if a worker is idle and some target has work that may go now.
    pub fn next_job(&mut self, now: Instant) -> Option<PushJob> {
        if self.idle_workers == 0 {
            return None;
        }
        let ids: Vec<TargetId> = self.queues.keys().copied().collect();
        for offset in 0..ids.len() {
            let id = ids[(self.rotate + offset) % ids.len()];
            let Some(queue) = self.queues.get_mut(&id) else {
                continue;
            };
            let lingering = queue
                .lingering(now, LINGER, self.config.caps.max_paths)
                .is_some();
            let plan = if lingering {
                queue.next_move_plan(now, self.config.caps)
            } else {
                queue.next_plan(now, self.config.caps)
            };
            let Some(plan) = plan else {
                continue;
            };
            self.rotate = (self.rotate + offset + 1) % ids.len();
            self.idle_workers -= 1;
            let id_num = self.next_id;
            self.next_id += 1;
            let (kind, taken, ran) = match plan {
                Plan::Batch(taken) => {
                    let entries = taken.iter().map(|t| t.entry()).collect();
                    (JobKind::Batch { entries }, taken, Ran::Batch)
                }
                Plan::Full(request) => {
                    let kind = JobKind::Full {
                        reason: request.reason,
                        extra_excludes: request.extra_excludes.clone(),
                    };
                    (kind, Vec::new(), Ran::Full(request))
                }
                Plan::Subtree(rel) => (
                    JobKind::Subtree { rel: rel.clone() },
                    Vec::new(),
                    Ran::Subtree(rel),
                ),
                Plan::Move {
                    moves,
                    is_dir,
                    by_content,
                    taken,
                } => {
                    let entries = taken.iter().map(Taken::entry).collect();
                    let kind = JobKind::Move {
                        moves: moves.clone(),
                        is_dir,
                        by_content,
                        entries,
                    };
                    (kind, taken, Ran::Move(moves))
                }
            };
            self.running.insert(
                id_num,
                Running {
                    target: id,
                    taken,
                    ran,
                    started: now,
                },
            );
            return Some(PushJob {
                id: id_num,
                target: id,
                kind,
            });
        }
        None
    }

    /// The event input has ended (shutdown, reload): the watcher's stop handover is
    /// complete. A path that a running batch then finds gone was removed or replaced
    /// after the last observed event, so no queued change covers it; its root is
    /// journaled for a full sync instead (the next start runs it once its watches are in
    /// place, which also covers the rest of what changed unobserved meanwhile).
    pub fn events_ended(&mut self) {
        self.events_ended = true;
    }

    /// Writes everything not yet pushed into the journal (shutdown).
    pub fn persist_all(&mut self, reason: &str) {
        let mut by_target: BTreeMap<TargetId, Vec<Work>> = BTreeMap::new();
        for running in std::mem::take(&mut self.running).into_values() {
            let list = by_target.entry(running.target).or_default();
            list.extend(running.taken.into_iter().map(|t| Work::Path(t.entry())));
            list.extend(ran_work(&running.ran));
        }
        for (id, queue) in &mut self.queues {
            let list = by_target.entry(*id).or_default();
            list.extend(queue.drain().into_iter().map(|t| Work::Path(t.entry())));
            // Mapped while the subtree requests are still in the queue.
            let mut work: Vec<Work> = std::mem::take(list)
                .into_iter()
                .map(|w| queue.journal_form(w))
                .collect();
            if let Some(request) = queue.take_full() {
                work.extend(ran_work(&Ran::Full(request)));
            }
            if self.unobserved_roots.contains(&id.root) {
                work.push(Work::WholeRoot);
            }
            for rel in queue.take_subtrees() {
                work.extend(ran_work(&Ran::Subtree(rel)));
            }
            let mut seen = std::collections::BTreeSet::new();
            work.retain(|w| seen.insert(w.clone()));
            *list = work;
        }
        for (id, entries) in by_target {
            if entries.is_empty() {
                continue;
            }
            let key = self.key(id);
            match self.journal.record(&key, &entries, None, reason, "") {
                Ok(()) => log::info!(
                    "{key}: {} unpushed path(s) saved to the journal",
                    entries.len()
                ),
                Err(err) => log::error!(
                    "{key}: cannot save {} unpushed path(s) to the journal: {err}",
                    entries.len()
                ),
            }
        }
    }

    /// Publishes queue figures.
    pub fn publish(&self, metrics: &Metrics) {
        let mut depth = 0u64;
        let mut in_flight = 0u64;
        for (id, queue) in &self.queues {
            let pending = queue.depth() as u64;
            let running = queue.running() as u64;
            depth += pending;
            in_flight += running;
            let failing = queue.is_failing();
            metrics.with_target(*id, |t| {
                t.pending = pending;
                t.in_flight = running;
                t.failing = failing;
            });
        }
        metrics.queue_depth.store(depth, Ordering::Relaxed);
        metrics.in_flight.store(in_flight, Ordering::Relaxed);
    }

    /// Whether nothing is waiting or running anywhere.
    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.queues.values().all(TargetQueue::is_idle)
    }

    pub(super) fn key(&self, id: TargetId) -> String {
        self.config
            .target_keys
            .get(id.root)
            .and_then(|k| k.get(id.remote))
            .map_or_else(|| id.to_string(), ToString::to_string)
    }

    fn root_display(&self, root: usize) -> String {
        self.config
            .roots
            .get(root)
            .map_or_else(|| root.to_string(), |p| p.display().to_string())
    }
}

/// The journal entry standing for a full or subtree sync: the whole root, or the delete
/// of the directory (replayed as a subtree sync of it).
pub(super) fn ran_work(ran: &Ran) -> Option<Work> {
    match ran {
        Ran::Batch | Ran::Move(_) => None,
        Ran::Full(_) => Some(Work::WholeRoot),
        Ran::Subtree(rel) => Some(Work::Path(Entry {
            rel: Rel::verbatim(rel.clone()),
            op: Op::Delete,
            is_dir: true,
        })),
    }
}

#[cfg(test)]
mod tests;
