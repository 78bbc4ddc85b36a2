//! Coalescing and scheduling: filesystem events in, push jobs out.
//!
//! Input: `Receiver<FsEvent>` from `watch` and `Receiver<PushOutcome>` from `push`.
//! Output: `Sender<PushJob>` to the pusher pool, `Sender<Delivered>` to plugins.
//! One thread, `sersync-coalesce`. Every change is merged per path into the queue of each
//! remote of its root ([`queue::TargetQueue`]). A job is sent only when a worker is idle:
//! with a free worker and nothing running for the remote a change goes out at once
//! (latency); while a batch of the remote runs, a small backlog waits for it (at most
//! [`LINGER`]); while all workers are busy changes accumulate and leave as one
//! batch when a worker frees up (throughput). Failed work is
//! written to the journal before anything else happens to it, and retried with backoff.
//! Ends when the event input is disconnected: running jobs are awaited up to a deadline,
//! then everything not pushed is written to the journal.

mod delivery;
mod journal;
mod memory;
mod outcome;
pub mod queue;
pub use crate::rel;
mod retry;
mod scheduler;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};

use crate::job::{Delivered, FsEvent, PushJob, PushOutcome};
use crate::metrics::Metrics;

pub use delivery::Delivery;
pub use journal::Journal;
pub use memory::MemoryJournal;
pub use retry::{backoff, unit_random};
pub use scheduler::{Jitter, LINGER, Scheduler, SchedulerConfig};

/// How long shutdown waits for running rsync jobs before journaling their paths.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Channels of the scheduler thread.
pub struct Channels {
    /// Filesystem events (watch, injected rescans).
    pub event_rx: Receiver<FsEvent>,
    /// Outcomes of finished jobs.
    pub outcome_rx: Receiver<PushOutcome>,
    /// Jobs for the pusher pool.
    pub job_tx: Sender<PushJob>,
    /// Changes that reached every remote (plugins, CDN); `None` when no plugin runs.
    pub delivered_tx: Option<Sender<Delivered>>,
}

/// Starts the scheduler thread.
///
/// # Errors
/// When the thread cannot be spawned.
pub fn spawn(
    scheduler: Scheduler,
    channels: Channels,
    metrics: Arc<Metrics>,
) -> std::io::Result<std::thread::JoinHandle<bool>> {
    std::thread::Builder::new()
        .name("sersync-coalesce".into())
        .spawn(move || run(scheduler, channels, &metrics))
}

/// Most events taken from the channel before looking for work to send; bigger bites
/// make bigger batches during bursts without delaying a lone event.
const EVENT_BITE: usize = 8192;

/// Returns whether every job handed out has reported back.
fn run(mut scheduler: Scheduler, channels: Channels, metrics: &Metrics) -> bool {
    let Channels {
        event_rx,
        outcome_rx,
        job_tx,
        delivered_tx,
    } = channels;
    let deliver = |delivered: Vec<Delivered>| {
        if let Some(tx) = &delivered_tx {
            for d in delivered {
                let _ = tx.send(d); // plugins gone means we are shutting down
            }
        }
    };
    loop {
        let now = Instant::now();
        scheduler.tick(now);
        while let Some(job) = scheduler.next_job(Instant::now()) {
            if job_tx.send(job).is_err() {
                log::error!("every push worker is gone; stopping the scheduler");
                scheduler.persist_all("push workers stopped");
                return false;
            }
        }
        scheduler.publish(metrics);
        let timeout = scheduler
            .next_wakeup(Instant::now())
            .map_or(crossbeam_channel::never(), crossbeam_channel::at);
        select! {
            recv(event_rx) -> event => match event {
                Ok(event) => {
                    scheduler.observe(event, Instant::now());
                    for event in event_rx.try_iter().take(EVENT_BITE) {
                        scheduler.observe(event, Instant::now());
                    }
                    scheduler.journal_waiting();
                }
                Err(_) => break,
            },
            recv(outcome_rx) -> outcome => {
                if let Ok(outcome) = outcome {
                    deliver(scheduler.complete(outcome, Instant::now()));
                }
            },
            recv(timeout) -> _ => {}
        }
    }
    // Input closed: no new jobs; wait for running ones, then journal what is left.
    scheduler.events_ended();
    let deadline = Instant::now() + scheduler.shutdown_grace();
    while scheduler.jobs_in_flight() > 0 {
        match outcome_rx.recv_deadline(deadline) {
            Ok(outcome) => deliver(scheduler.complete(outcome, Instant::now())),
            Err(_) => {
                log::warn!(
                    "{} rsync job(s) still running after {:?}; their paths go to the journal",
                    scheduler.jobs_in_flight(),
                    scheduler.shutdown_grace()
                );
                break;
            }
        }
    }
    let all_reported = scheduler.jobs_in_flight() == 0;
    scheduler.persist_all("daemon stopped before push");
    scheduler.publish(metrics);
    all_reported
}
