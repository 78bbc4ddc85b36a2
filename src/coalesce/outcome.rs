//! What the scheduler does with a finished job: journal writes and clears, requeues,
//! backoff, metrics and deliveries, decided by the job's [`Disposition`] alone.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::queue::{Ran, Taken, TargetQueue};
use super::retry::backoff_with;
use super::scheduler::{Running, Scheduler, ran_work};
use crate::job::{
    Delivered, Disposition, PathFate, PushFailure, PushOutcome, Scope, TargetId, Work,
};
use crate::metrics::Metrics;

/// How a failed job backs its remote off.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Severity {
    /// Only these paths wait (their own backoff); a full or subtree sync backs off.
    Paths,
    /// The remote backs off.
    RemoteDown,
    /// The remote waits the longest interval.
    ConfigError,
}

impl Scheduler {
    /// Takes a job's outcome; returns the changes that have now reached every remote.
    pub fn complete(&mut self, outcome: PushOutcome, now: Instant) -> Vec<Delivered> {
        self.idle_workers += 1;
        let Some(Running {
            target,
            mut taken,
            ran,
            started,
        }) = self.running.remove(&outcome.job.id)
        else {
            log::error!("outcome for unknown job {}", outcome.job.id);
            return Vec::new();
        };
        if outcome.unsent > 0 && ran == Ran::Batch {
            let unsent = taken.split_off(taken.len().saturating_sub(outcome.unsent));
            if let Some(queue) = self.queues.get_mut(&target) {
                queue.unsent(unsent);
            }
        }
        let job = Job {
            target,
            ran,
            started,
            command: outcome.command,
        };
        let delivered = match outcome.disposition {
            Disposition::Done => self.arrived(&job, taken, now),
            Disposition::Partial { failure, fates }
                if matches!(job.ran, Ran::Batch | Ran::Move(_)) =>
            {
                self.partial(&job, taken, &failure, &fates, now)
            }
            Disposition::Partial { failure, .. } => {
                self.failed(&job, taken, &failure, Severity::Paths, now);
                Vec::new()
            }
            Disposition::RemoteDown(failure) => {
                self.failed(&job, taken, &failure, Severity::RemoteDown, now);
                Vec::new()
            }
            Disposition::ConfigError(failure) => {
                self.failed(&job, taken, &failure, Severity::ConfigError, now);
                Vec::new()
            }
        };
        // Failed paths requeued may have changed journaled ones (a path below a moved
        // directory follows it to its new name): the journal catches up at once.
        self.journal_waiting();
        delivered
    }

    /// Every path arrived: clear what it covered from the journal, deliver.
    fn arrived(&mut self, job: &Job, taken: Vec<Taken>, now: Instant) -> Vec<Delivered> {
        let key = self.key(job.target);
        let Some(queue) = self.queues.get_mut(&job.target) else {
            return Vec::new();
        };
        let cleared = match &job.ran {
            Ran::Batch | Ran::Move(_) => {
                let mut cleared = queue.unjournal(taken.iter().map(|t| &t.rel));
                // A delete, or a file or symlink pushed with `--force`, leaves nothing
                // below it on the remote: entries below it are settled (a parent that
                // became a file: its old children are not retried for ever).
                for t in taken.iter().filter(|t| covers_below(&job.ran, t)) {
                    cleared.extend(queue.unjournal_covered(&t.rel));
                }
                cleared
            }
            // Entries still pending go out in a batch next; they stay journaled until
            // that succeeds.
            Ran::Full(request) => {
                log::info!(
                    "{key}: full sync ({}) done in {:.1}s",
                    request.reason,
                    (now - job.started).as_secs_f64()
                );
                queue.unjournal_covered(std::path::Path::new(""))
            }
            Ran::Subtree(rel) => {
                log::info!(
                    "{key}: {} synced with --delete in {:.1}s",
                    rel.display(),
                    (now - job.started).as_secs_f64()
                );
                queue.unjournal_covered(rel)
            }
        };
        queue.succeeded(&taken, &job.ran);
        self.record_push(job, &taken, now);
        self.clear_journal(&key, &cleared);
        log::debug!(
            "{key}: pushed {} path(s) in {:.3}s",
            taken.len(),
            (now - job.started).as_secs_f64()
        );
        self.deliver(job.target, &taken)
    }

    /// A batch reached the remote but not every path arrived: gone paths are forgotten,
    /// failed ones journaled and retried alone, the rest delivered.
    fn partial(
        &mut self,
        job: &Job,
        taken: Vec<Taken>,
        failure: &PushFailure,
        fates: &[PathFate],
        now: Instant,
    ) -> Vec<Delivered> {
        let key = self.key(job.target);
        let unknown = fates.len() != taken.len();
        let mut arrived = Vec::new();
        let mut gone = Vec::new();
        let mut retry = Vec::new();
        for (i, t) in taken.into_iter().enumerate() {
            match fates.get(i).filter(|_| !unknown) {
                Some(PathFate::Done) => arrived.push(t),
                Some(PathFate::Gone) => gone.push(t),
                Some(PathFate::Retry) | None => retry.push(t),
            }
        }
        let retry_entries: Vec<Work> = retry.iter().map(|t| Work::Path(t.entry())).collect();
        if !retry_entries.is_empty() {
            self.record_failure(job, &key, &retry_entries, failure);
        }
        if self.events_ended && !gone.is_empty() {
            log::info!(
                "{key}: {} path(s) changed after the watcher stopped; journaled for a full sync at the next start",
                gone.len()
            );
            self.unobserved_roots.insert(job.target.root);
        }
        let delay = self.backoff(job.target, Severity::Paths);
        let Some(queue) = self.queues.get_mut(&job.target) else {
            return Vec::new();
        };
        let mut cleared = queue.unjournal(arrived.iter().chain(&gone).map(|t| &t.rel));
        // What arrived and replaces its path settles the entries below it; so does a
        // path that is gone (the change that removed or replaced it covers what was
        // below, and what is still pending below stays journaled).
        for t in arrived
            .iter()
            .filter(|t| covers_below(&job.ran, t))
            .chain(&gone)
        {
            cleared.extend(queue.unjournal_covered(&t.rel));
        }
        let mut settled = arrived;
        let n_arrived = settled.len();
        settled.extend(gone);
        queue.partially_failed(&settled, retry, &job.ran, delay, now);
        let gone = settled.split_off(n_arrived);
        self.clear_journal(&key, &cleared);
        if !retry_entries.is_empty() {
            log::warn!(
                "{key}: {}; {} path(s) journaled, retried alone in up to {:.1}s; {} arrived, {} gone",
                failure.reason,
                retry_entries.len(),
                delay.as_secs_f64(),
                settled.len(),
                gone.len()
            );
        }
        self.record_push(job, &settled, now);
        for t in &gone {
            self.delivery.forget(job.target.root, &t.rel);
        }
        self.deliver(job.target, &settled)
    }

    /// The job failed as a whole: journal every path it carried, back off.
    fn failed(
        &mut self,
        job: &Job,
        taken: Vec<Taken>,
        failure: &PushFailure,
        severity: Severity,
        now: Instant,
    ) {
        let key = self.key(job.target);
        let mut entries: Vec<Work> = taken.iter().map(|t| Work::Path(t.entry())).collect();
        entries.extend(ran_work(&job.ran));
        self.record_failure(job, &key, &entries, failure);
        if matches!(job.ran, Ran::Full(_)) {
            Metrics::incr(&self.metrics.full_sync_failures);
        }
        let delay = self.backoff(job.target, severity);
        if severity == Severity::ConfigError {
            log::error!(
                "{key}: {}; configuration error, {} path(s) kept in the journal, next try in {:.0}s",
                failure.reason,
                entries.len(),
                delay.as_secs_f64()
            );
        } else {
            log::warn!(
                "{key}: {}; {} path(s) journaled, retry in {:.1}s",
                failure.reason,
                entries.len(),
                delay.as_secs_f64()
            );
        }
        let remote_down = severity != Severity::Paths;
        if remote_down {
            // The remote is down: what waits for it is journaled now, not when its turn
            // comes (a probe carries one job; a crash meanwhile must lose nothing).
            let waiting = self
                .queues
                .get(&job.target)
                .map(TargetQueue::unjournaled)
                .unwrap_or_default();
            if !waiting.is_empty() {
                self.record_failure(job, &key, &waiting, failure);
            }
        }
        if let Some(queue) = self.queues.get_mut(&job.target) {
            queue.failed(taken, job.ran.clone(), remote_down, delay, now);
        }
    }

    fn backoff(&mut self, target: TargetId, severity: Severity) -> Duration {
        let failures = self.queues.get(&target).map_or(0, |q| q.failures());
        let unit = (self.jitter)();
        backoff_with(
            failures + 1,
            self.config.retry_max,
            severity == Severity::ConfigError,
            unit,
        )
    }

    /// Journals failed entries (durable before anything else happens to them).
    fn record_failure(&mut self, job: &Job, key: &str, entries: &[Work], failure: &PushFailure) {
        let entries: Vec<Work> = match self.queues.get(&job.target) {
            // A path changed again while its job ran is journaled in its newer form
            // (a delete journaled over a directory that exists again would replay as a
            // no-op).
            Some(queue) => entries
                .iter()
                .map(|w| {
                    let latest = match w {
                        Work::Path(entry) => queue.pending_entry(&entry.rel).map(Work::Path),
                        Work::WholeRoot => None,
                    };
                    queue.journal_form(latest.unwrap_or_else(|| w.clone()))
                })
                .collect(),
            None => entries.to_vec(),
        };
        let entries = entries.as_slice();
        match self
            .journal
            .record(key, entries, failure.code, &failure.reason, &job.command)
        {
            Ok(()) => {
                if let Some(queue) = self.queues.get_mut(&job.target) {
                    queue.mark_journaled(
                        entries
                            .iter()
                            .map(|w| w.scope().storage_rel().to_path_buf()),
                    );
                }
            }
            Err(err) => log::error!(
                "{key}: cannot write the journal ({err}); {} path(s) kept in memory only",
                entries.len()
            ),
        }
        self.metrics.record_failure(job.target, failure.code);
    }

    fn clear_journal(&self, key: &str, cleared: &[PathBuf]) {
        if cleared.is_empty() {
            return;
        }
        let scopes: Vec<Scope> = cleared.iter().cloned().map(Scope::from_storage).collect();
        if let Err(err) = self.journal.clear(key, &scopes) {
            log::error!(
                "{key}: cannot clear {} journal entr(y/ies): {err}",
                cleared.len()
            );
        }
    }

    fn record_push(&self, job: &Job, taken: &[Taken], now: Instant) {
        let latencies: Vec<Duration> = taken
            .iter()
            .map(|t| now.saturating_duration_since(t.pending.seen.instant()))
            .collect();
        self.metrics.record_push(job.target, &latencies);
        if matches!(job.ran, Ran::Full(_)) {
            Metrics::incr(&self.metrics.full_syncs);
            let millis = u64::try_from(now.saturating_duration_since(job.started).as_millis())
                .unwrap_or(u64::MAX);
            self.metrics
                .full_sync_millis
                .fetch_add(millis, Ordering::Relaxed);
        }
    }

    fn deliver(&mut self, target: TargetId, taken: &[Taken]) -> Vec<Delivered> {
        if !self.config.track_delivery {
            return Vec::new();
        }
        let mut out = Vec::new();
        for t in taken {
            // A newer change of the path still waits for this remote: not delivered yet.
            if self
                .queues
                .get(&target)
                .is_some_and(|q| q.is_pending(&t.rel))
            {
                continue;
            }
            out.extend(self.delivery.reached(target.root, target.remote, &t.rel));
        }
        out
    }
}

/// Whether pushing `taken` made everything below it on the remote what it is here: a
/// delete, a file or symlink pushed with `--force`, a directory made by a move (its run
/// is recursive, with `--delete`).
fn covers_below(ran: &Ran, taken: &Taken) -> bool {
    taken.replaces_below() || (matches!(ran, Ran::Move(_)) && taken.pending.is_dir)
}

/// The finished job, as the handlers need it.
struct Job {
    target: TargetId,
    ran: Ran,
    started: Instant,
    command: String,
}
