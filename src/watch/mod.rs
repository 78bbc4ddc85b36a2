//! The watch stage: inotify over every root, turned into filtered [`FsEvent`]s.
//!
//! Input: the kernel (one inotify instance for all roots). Output: `Sender<FsEvent>`
//! (bounded; a full channel blocks the reader, so nothing is dropped: the kernel queue
//! absorbs the burst and at worst overflows into [`FsEvent::Rescan`] for every root).
//! Thread: `sersync-watch`, started by [`spawn`] once every root is watched; it blocks
//! in `mio::Poll` on the inotify fd and a [`mio::Waker`]. Termination: [`Watcher::stop`]
//! (or dropping the [`Watcher`]) wakes and joins it, which drops `event_tx`; the thread
//! also ends by itself when the receiver is gone. Stopping loses nothing the kernel
//! reported: the thread reads what is still in the fd (bounded by [`DRAIN_LIMIT`]; past
//! it, every root gets a `Rescan`), hands over the held move and modifications, and a
//! scan that was under way becomes a `Rescan` of its root, all with blocking sends (the
//! scheduler keeps receiving until this sender is gone, and journals what it got).
//!
//! Files: `tree.rs` (wd ⇄ path map, pure), `mask.rs` (toggles ⇄ masks, pure),
//! `held.rs` (`IN_MODIFY` coalescing, pure), `event.rs` (per-event rules), `rename.rs`
//! (move pairing, exchanges), `scan.rs` (walks: parallel at startup, watch-then-scan for
//! new directories), `recovery.rs` (queue overflow, watch limit), `rewatch.rs` (missing
//! roots and unwatched directories, retried), `watches.rs` (adding and removing
//! watches); shared by both backends: `reader.rs` (the thread's loop and stop handover),
//! `outlet.rs` (the sends); the fanotify backend is `fanotify/`.

mod event;
mod fanotify;
mod held;
mod mask;
mod outlet;
mod reader;
mod recovery;
mod rename;
mod rewatch;
mod scan;
mod tree;
mod watches;

pub use fanotify::FanotifyError;
pub use held::MODIFY_SETTLE;
pub use rewatch::{RETRY_INTERVAL, UNWATCHED_RESCAN};

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use inotify::Inotify;
use mio::unix::SourceFd;
use mio::{Interest, Poll, Waker};

use crate::config::{InotifyToggles, WatchBackend};
use crate::filter::Filter;
use crate::job::FsEvent;
use crate::metrics::Metrics;

use event::{Shared, State};
use outlet::Halt;

/// Size of the inotify read buffer. One event is 16 bytes plus its padded name (at most
/// 256), so this holds 240 to 4096 events per `read`.
const READ_BUFFER: usize = 64 * 1024;

/// At stop, how long the thread keeps reading events still in the fd. A fd that does
/// not run dry by then (a writer flooding it) gets a `Rescan` of every root instead.
pub const DRAIN_LIMIT: Duration = Duration::from_millis(300);

/// From this many directories on, the start says that the fanotify backend would need
/// no walk (about 0.2 s of walking and 7 MB of map here).
const LARGE_TREE: usize = 100_000;

/// How the watcher behaves.
#[derive(Debug, Clone, Default)]
pub struct WatchOptions {
    /// The `<inotify>` toggles: which changes are emitted (and subscribed).
    pub toggles: InotifyToggles,
    /// `<debug start="true">`: log every raw event and every watch added at debug level
    /// (otherwise at trace).
    pub debug: bool,
    /// `<watch backend>`: inotify, or fanotify (falling back to inotify when it cannot
    /// be set up).
    pub backend: WatchBackend,
}

/// Why the watcher could not start, or how its thread ended.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// `inotify_init1` failed; EMFILE means `fs.inotify.max_user_instances` is reached.
    #[error("cannot create an inotify instance (EMFILE: raise fs.inotify.max_user_instances)")]
    Init(#[source] io::Error),
    /// Every root failed to be watched; this is the first root's failure (the others
    /// were logged).
    #[error("{path}: cannot watch root")]
    Root {
        /// The root.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Setting up or waiting on the event poll failed.
    #[error("inotify event poll failed")]
    Poll(#[source] io::Error),
    /// Reading from the inotify fd failed.
    #[error("cannot read inotify events")]
    Read(#[source] io::Error),
    /// The thread could not be started.
    #[error("cannot start thread sersync-watch")]
    Spawn(#[source] io::Error),
    /// The thread panicked.
    #[error("thread sersync-watch panicked")]
    Panicked,
}

/// A running watch thread. Dropping it stops it, as [`Watcher::stop`] does.
#[derive(Debug)]
pub struct Watcher {
    // Dropping the stop sender first makes a reader blocked on a full channel give up.
    stop_tx: Option<Sender<()>>,
    waker: Waker,
    thread: Option<JoinHandle<Result<(), WatchError>>>,
    watch_count: Arc<AtomicUsize>,
    backend: WatchBackend,
}

/// Watches every root, then starts the `sersync-watch` thread and returns.
///
/// The watches are added synchronously (in parallel with rayon; excluded directories are
/// never watched), so every change made after `spawn` returns is reported. The initial
/// walk emits no events: the startup full sync covers what already exists. A root that
/// cannot be watched (missing, not a directory) is logged at error level and the others
/// keep running; one that hits the watch limit is reported once (naming
/// `fs.inotify.max_user_watches`) and gets a [`FsEvent::Rescan`] so that a full sync still
/// covers it.
///
/// # Errors
///
/// [`WatchError::Init`] when no inotify instance can be created, [`WatchError::Root`]
/// when there are roots and none of them can be watched, [`WatchError::Poll`] or
/// [`WatchError::Spawn`] when the thread cannot be set up.
pub fn spawn(
    roots: Vec<PathBuf>,
    options: WatchOptions,
    filter: Arc<Filter>,
    event_tx: Sender<FsEvent>,
    metrics: Arc<Metrics>,
) -> Result<Watcher, WatchError> {
    let started = Instant::now();
    let roots: Vec<PathBuf> = roots.into_iter().map(resolve_root).collect();
    // With no root there at all, the inotify path reports it as the error it is.
    if options.backend == WatchBackend::Fanotify && roots.iter().any(|root| root.is_dir()) {
        match fanotify::spawn(&roots, &options, &filter, &event_tx, &metrics) {
            Ok(watcher) => return Ok(watcher),
            Err(err) => log::warn!("{err}; watching with inotify instead"),
        }
    }
    metrics.fanotify.store(false, Ordering::Relaxed);
    let inotify = Inotify::init().map_err(WatchError::Init)?;
    let poll = Poll::new().map_err(WatchError::Poll)?;
    poll.registry()
        .register(
            &mut SourceFd(&inotify.as_raw_fd()),
            reader::QUEUE,
            Interest::READABLE,
        )
        .map_err(WatchError::Poll)?;
    let waker = Waker::new(poll.registry(), reader::WAKE).map_err(WatchError::Poll)?;
    let (stop_tx, stop_rx) = crossbeam_channel::bounded(0);
    let watch_count = Arc::new(AtomicUsize::new(0));
    let log_level = if options.debug {
        log::Level::Debug
    } else {
        log::Level::Trace
    };
    let mask = mask::watch_mask(&options.toggles);

    let watches = watches::WatchFd::new(inotify.as_fd()).map_err(WatchError::Init)?;
    let walk = scan::walk(&roots, &watches, mask, &filter, log_level);
    let n_roots = roots.len();
    let mut state = State::new(Shared {
        roots,
        watches,
        mask,
        toggles: options.toggles,
        filter,
        metrics,
        watch_count: Arc::clone(&watch_count),
        outlet: outlet::Outlet::new(event_tx, stop_rx, n_roots),
        log_level,
    });
    let failed = state.apply_walk(walk, false);
    for (root, err) in &failed {
        log::error!(
            "{}: cannot watch root: {err}",
            state.root_path(*root).display()
        );
    }
    let n_failed = failed.len();
    if n_failed == n_roots {
        if let Some((root, source)) = failed.into_iter().next() {
            return Err(WatchError::Root {
                path: state.root_path(root).to_path_buf(),
                source,
            });
        }
    }
    log::info!(
        "watching {} directories under {} root(s) ({} ms)",
        state.watch_count(),
        n_roots - n_failed,
        started.elapsed().as_millis()
    );
    if options.backend == WatchBackend::Inotify && state.watch_count() >= LARGE_TREE {
        log::info!(
            "a tree this large is watched without a walk and without memory per directory \
             by <watch backend=\"fanotify\"/> (needs root)"
        );
    }

    let thread = thread::Builder::new()
        .name("sersync-watch".to_owned())
        .spawn(move || {
            let queue = InotifyQueue {
                inotify,
                state,
                buffer: vec![0u8; READ_BUFFER],
            };
            reader::run(queue, poll)
        })
        .map_err(WatchError::Spawn)?;
    Ok(Watcher {
        stop_tx: Some(stop_tx),
        waker,
        thread: Some(thread),
        watch_count,
        backend: WatchBackend::Inotify,
    })
}

impl Watcher {
    /// Wakes the thread and joins it; afterwards `event_tx` has been dropped.
    ///
    /// # Errors
    ///
    /// How the thread ended: [`WatchError::Read`] or [`WatchError::Poll`] if it failed
    /// earlier, [`WatchError::Panicked`] if it panicked.
    pub fn stop(mut self) -> Result<(), WatchError> {
        self.shutdown()
    }

    /// Number of directories watched now (inotify), or of filesystems marked (fanotify).
    pub fn watch_count(&self) -> usize {
        self.watch_count.load(Ordering::Relaxed)
    }

    /// The backend that runs (fanotify may have fallen back to inotify).
    pub fn backend(&self) -> WatchBackend {
        self.backend
    }

    fn shutdown(&mut self) -> Result<(), WatchError> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        drop(self.stop_tx.take());
        self.waker.wake().map_err(WatchError::Poll)?;
        thread.join().map_err(|_| WatchError::Panicked)?
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Err(err) = self.shutdown() {
            log::error!("{err}");
        }
    }
}

/// A root that is a symlink is watched at its target: below the root nothing is ever
/// followed (`IN_DONT_FOLLOW`), but `/srv/www -> /data/www` as the configured root is
/// common and sersync 2.5 followed it.
fn resolve_root(root: PathBuf) -> PathBuf {
    let is_symlink =
        std::fs::symlink_metadata(&root).is_ok_and(|meta| meta.file_type().is_symlink());
    if !is_symlink {
        return root;
    }
    match std::fs::canonicalize(&root) {
        Ok(target) => {
            log::info!("{}: symlink, watching {}", root.display(), target.display());
            target
        }
        Err(_) => root, // dangling: reported when the watch fails
    }
}

/// The inotify backend's side of the thread ([`reader::run`]): the fd, the watch map
/// and the event rules (`State`), the read buffer.
struct InotifyQueue {
    inotify: Inotify,
    state: State,
    buffer: Vec<u8>,
}

impl reader::Queue for InotifyQueue {
    fn name(&self) -> &'static str {
        "inotify"
    }

    fn outlet(&self) -> &outlet::Outlet {
        &self.state.shared.outlet
    }

    fn start(&mut self) -> outlet::Flow {
        self.state.start()
    }

    fn read_once(&mut self) -> Result<io::Result<bool>, Halt> {
        let read = match self.inotify.read_events(&mut self.buffer) {
            Ok(read) => read,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(Ok(false)),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => return Ok(Ok(true)),
            Err(err) => return Ok(Err(err)),
        };
        let now = Instant::now();
        for event in read {
            self.state.handle(event, now)?;
        }
        Ok(Ok(true))
    }

    /// A held `MOVED_FROM` or modification to resolve, a retry, a periodic rescan.
    fn next_deadline(&self) -> Option<Instant> {
        self.state.next_deadline()
    }

    fn expire(&mut self, now: Instant) -> outlet::Flow {
        self.state.expire(now)
    }

    /// The held move and modifications.
    fn finish(&mut self) -> outlet::Flow {
        self.state.finish()
    }

    fn rescan_all_on_stop(&mut self) -> outlet::Flow {
        for root in 0..self.state.n_roots() {
            self.state.rescan_on_stop(root)?;
        }
        Ok(())
    }
}
