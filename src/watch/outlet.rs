//! The watch thread's end of `event_tx`, shared by both backends: blocking sends that
//! give up only on stop or when the receiver is gone, the stop handover's bounded wait,
//! and the per-root "last change seen" that decides [`FsEvent::ChangingAtStop`].

use std::cell::Cell;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, SendTimeoutError, Sender, TrySendError};

use crate::job::FsEvent;

/// Why the thread has to stop handling events.
#[derive(Debug)]
pub(crate) enum Halt {
    /// `Watcher::stop` was called.
    Stopped,
    /// The receiver of `event_tx` is gone: nobody wants events any more.
    Disconnected,
}

/// Result of every step that may send.
pub(crate) type Flow = Result<(), Halt>;

/// After [`Watcher::stop`](super::Watcher::stop), how long one event may wait for room in
/// the channel before the rest is given up (logged). The scheduler drains the channel
/// until the watcher's sender is gone, so this only bounds a receiver that stopped.
const STOP_SEND_LIMIT: Duration = Duration::from_secs(10);

/// At stop, how long the watcher keeps listening after the fd ran dry, for whether a
/// root is still changing: its writers then go on while no watcher runs (between a
/// SIGTERM and the restart's watches), so the next start syncs it whole. A root quiet
/// for this long after the stop request stops with nothing more journaled.
pub(crate) const STOP_SETTLE: Duration = Duration::from_millis(100);

/// Where the watch thread's events go.
pub(crate) struct Outlet {
    event_tx: Sender<FsEvent>,
    /// Disconnected (its sender dropped) once `Watcher::stop` is called.
    stop_rx: Receiver<()>,
    /// `Watcher::stop` was seen: what is left is handed over (blocking sends), and
    /// scans give way to a `Rescan` of their root.
    stopping: Cell<bool>,
    /// The receiver did not take an event within [`STOP_SEND_LIMIT`] while stopping.
    abandoned: Cell<bool>,
    /// Per root: when its last change was seen (see [`changing_at_stop`]).
    last_change: Vec<Cell<Option<Instant>>>,
    /// Per root: a `Rescan` was sent while stopping (further scans need none).
    stop_rescanned: Vec<Cell<bool>>,
}

impl Outlet {
    pub(crate) fn new(event_tx: Sender<FsEvent>, stop_rx: Receiver<()>, n_roots: usize) -> Outlet {
        Outlet {
            event_tx,
            stop_rx,
            stopping: Cell::new(false),
            abandoned: Cell::new(false),
            last_change: vec![Cell::new(None); n_roots],
            stop_rescanned: vec![Cell::new(false); n_roots],
        }
    }

    /// Whether `Watcher::stop` has been called (it drops the stop sender).
    pub(crate) fn is_stopping(&self) -> bool {
        if self.stopping.get() {
            return true;
        }
        let stopped = matches!(
            self.stop_rx.try_recv(),
            Err(crossbeam_channel::TryRecvError::Disconnected)
        );
        self.stopping.set(stopped);
        stopped
    }

    /// The thread saw the waker: from now on sends are the stop handover.
    pub(crate) fn set_stopping(&self) {
        self.stopping.set(true);
    }

    /// Sends one event, blocking while the channel is full (the kernel queue then
    /// absorbs the burst, and overflows into a rescan at worst). A stop does not drop
    /// the event: the scheduler keeps receiving until this thread's sender is gone, and
    /// whatever reaches it is pushed or journaled.
    pub(crate) fn send(&self, event: FsEvent) -> Flow {
        let changed = match &event {
            FsEvent::Change(change) => Some((change.root, change.seen)),
            FsEvent::Move(moved) => Some((moved.root, moved.seen)),
            FsEvent::Rescan { .. } | FsEvent::ChangingAtStop { .. } => None,
        };
        if let Some((root, seen)) = changed {
            if let Some(last) = self.last_change.get(root) {
                last.set(Some(last.get().map_or(seen, |t| t.max(seen))));
            }
        }
        let event = match self.event_tx.try_send(event) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Disconnected(_)) => return Err(Halt::Disconnected),
            Err(TrySendError::Full(event)) => event,
        };
        if self.stopping.get() {
            return self.send_while_stopping(event);
        }
        crossbeam_channel::select! {
            send(self.event_tx, event) -> sent => sent.map_err(|_| Halt::Disconnected),
            recv(self.stop_rx) -> _ => {
                self.stopping.set(true);
                // `select!` gave the event back only in its `send` arm; send it again.
                self.send_while_stopping(event)
            },
        }
    }

    fn send_while_stopping(&self, event: FsEvent) -> Flow {
        if self.abandoned.get() {
            log::error!("stopping: receiver gone quiet, not handed over: {event:?}");
            return Err(Halt::Stopped);
        }
        match self.event_tx.send_timeout(event, STOP_SEND_LIMIT) {
            Ok(()) => Ok(()),
            Err(SendTimeoutError::Disconnected(_)) => Err(Halt::Disconnected),
            Err(SendTimeoutError::Timeout(event)) => {
                self.abandoned.set(true);
                log::error!(
                    "stopping: the event receiver took nothing for {STOP_SEND_LIMIT:?}; \
                     not handed over: {event:?}"
                );
                Err(Halt::Stopped)
            }
        }
    }

    /// While stopping, a scan gives way to one `Rescan` of its root (`path`, for the
    /// log; the scheduler journals it as a whole-root entry).
    pub(crate) fn rescan_on_stop(&self, root: usize, path: &std::path::Path) -> Flow {
        if self
            .stop_rescanned
            .get(root)
            .is_none_or(|done| done.replace(true))
        {
            return Ok(());
        }
        log::info!(
            "{}: stopping during a scan; the rest is left to a full sync",
            path.display()
        );
        self.send(FsEvent::Rescan { root })
    }

    /// At the end of the stop handover: every root still changing ([`changing_at_stop`])
    /// gets a [`FsEvent::ChangingAtStop`], so that what changes while no watcher runs
    /// is covered by a full sync at the next start.
    pub(crate) fn report_changing_at_stop(&self, stop_seen: Instant) -> Flow {
        let last: Vec<Option<Instant>> = self.last_change.iter().map(Cell::get).collect();
        for root in changing_at_stop(&last, stop_seen) {
            self.send(FsEvent::ChangingAtStop { root })?;
        }
        Ok(())
    }
}

/// The roots (indexes into `last_change`, each root's last change seen) that changed at
/// or after `stop_seen`, the moment the stop was requested.
pub(crate) fn changing_at_stop(last_change: &[Option<Instant>], stop_seen: Instant) -> Vec<usize> {
    last_change
        .iter()
        .enumerate()
        .filter(|(_, last)| last.is_some_and(|t| t >= stop_seen))
        .map(|(root, _)| root)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_is_still_changing_at_stop_when_it_changed_after_the_stop_request() {
        let stop = Instant::now() + Duration::from_secs(10);
        let at = |ms: i64| {
            Some(if ms >= 0 {
                stop + Duration::from_millis(ms.unsigned_abs())
            } else {
                stop - Duration::from_millis(ms.unsigned_abs())
            })
        };
        // (last change per root, roots still changing)
        #[rustfmt::skip]
        let table: &[(Vec<Option<Instant>>, Vec<usize>)] = &[
            (vec![], vec![]),
            (vec![None], vec![]),
            (vec![at(0)], vec![0]),
            (vec![at(40)], vec![0]),
            // Converged just before the stop: quiet, nothing journaled.
            (vec![at(-1)], vec![]),
            (vec![at(-5_000), at(20), None], vec![1]),
        ];
        for (last, expected) in table {
            assert_eq!(&changing_at_stop(last, stop), expected, "{last:?}");
        }
    }
}
