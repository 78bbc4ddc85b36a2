//! The `sersync-watch` thread's reading loop, the same for both backends: wait in `mio::Poll`
//! on the kernel's fd and the stop waker, read until the fd runs dry, do what is due;
//! at stop, hand everything over (what is still queued, for at most [`DRAIN_LIMIT`],
//! what is held, and the roots still changing). The backend is a [`Queue`].

use std::io;
use std::time::Instant;

use mio::{Events, Poll, Token};

use super::outlet::{Flow, Halt, Outlet, STOP_SETTLE};
use super::{DRAIN_LIMIT, WatchError};

/// The kernel fd's token.
pub(crate) const QUEUE: Token = Token(0);
/// The stop waker's token.
pub(crate) const WAKE: Token = Token(1);

/// A backend's side of the loop.
pub(crate) trait Queue {
    /// `inotify` or `fanotify`, for messages.
    fn name(&self) -> &'static str;
    /// Where the events go.
    fn outlet(&self) -> &Outlet;
    /// First thing the thread does.
    fn start(&mut self) -> Flow {
        Ok(())
    }
    /// Reads the fd once and handles what it read: `Ok(Ok(false))` when it would block,
    /// `Ok(Err(_))` when it cannot be read, `Err(_)` when handling had to stop.
    fn read_once(&mut self) -> Result<io::Result<bool>, Halt>;
    /// When [`Queue::expire`] must run without an event.
    fn next_deadline(&self) -> Option<Instant>;
    /// Does what is due at `now`.
    fn expire(&mut self, now: Instant) -> Flow;
    /// At stop, after the drain: what is held.
    fn finish(&mut self) -> Flow;
    /// At stop, when the fd could not be drained: every root gets a full sync.
    fn rescan_all_on_stop(&mut self) -> Flow;
}

/// The thread: runs until stopped (then hands over), the receiver is gone, or the fd
/// fails.
pub(crate) fn run(mut queue: impl Queue, mut poll: Poll) -> Result<(), WatchError> {
    let mut events = Events::with_capacity(4);
    match read_loop(&mut queue, &mut poll, &mut events) {
        Ok(Halt::Stopped) => {
            queue.outlet().set_stopping();
            let stop_seen = Instant::now();
            let handed = drain(&mut queue, &mut poll, &mut events)
                .and_then(|()| queue.finish())
                .and_then(|()| queue.outlet().report_changing_at_stop(stop_seen));
            match handed {
                Ok(()) => log::debug!("watch thread stopped, everything handed over"),
                Err(halt) => {
                    log::warn!("watch thread stopped before handing everything over: {halt:?}")
                }
            }
            Ok(())
        }
        Ok(Halt::Disconnected) => {
            log::debug!("watch thread ends: event receiver gone");
            Ok(())
        }
        Err(err) => {
            log::error!("watch thread failed: {err}");
            Err(err)
        }
    }
}

fn read_loop(
    queue: &mut impl Queue,
    poll: &mut Poll,
    events: &mut Events,
) -> Result<Halt, WatchError> {
    if let Err(halt) = queue.start() {
        return Ok(halt);
    }
    loop {
        let timeout = queue
            .next_deadline()
            .map(|deadline| deadline.saturating_duration_since(Instant::now()));
        match poll.poll(events, timeout) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(WatchError::Poll(err)),
        }
        if events.iter().any(|event| event.token() == WAKE) {
            return Ok(Halt::Stopped);
        }
        // mio is edge-triggered: drain the fd until it would block.
        loop {
            // Under a steady flood the fd never runs dry and poll is not reached again.
            if queue.outlet().is_stopping() {
                return Ok(Halt::Stopped);
            }
            match queue.read_once() {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => break,
                Ok(Err(err)) => return Err(WatchError::Read(err)),
                Err(halt) => return Ok(halt),
            }
        }
        if let Err(halt) = queue.expire(Instant::now()) {
            return Ok(halt);
        }
    }
}

/// At stop: handles what is still in the fd, for at most [`DRAIN_LIMIT`], then listens
/// for [`STOP_SETTLE`] after it runs dry (whether a root is still changing).
fn drain(queue: &mut impl Queue, poll: &mut Poll, events: &mut Events) -> Flow {
    let started = Instant::now();
    let deadline = started + DRAIN_LIMIT;
    let settle_until = started + STOP_SETTLE;
    loop {
        if Instant::now() >= deadline {
            log::warn!(
                "stopping: {} events still arriving; every root gets a full sync",
                queue.name()
            );
            return queue.rescan_all_on_stop();
        }
        match queue.read_once()? {
            Ok(true) => {}
            Ok(false) => {
                let now = Instant::now();
                if now >= settle_until {
                    return Ok(());
                }
                if let Err(err) = poll.poll(events, Some(settle_until - now)) {
                    if err.kind() != io::ErrorKind::Interrupted {
                        return Ok(());
                    }
                }
            }
            Err(err) => {
                log::error!(
                    "stopping: cannot read {} events ({err}); every root gets a full sync",
                    queue.name()
                );
                return queue.rescan_all_on_stop();
            }
        }
    }
}
