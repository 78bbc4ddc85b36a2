//! Wiring: channels, named threads, start and orderly shutdown.
//!
//! ```text
//! [watch] --FsEvent--> [coalesce] --PushJob--> [push x n] --PushOutcome--> [coalesce]
//!                          |                                                   |
//!                          +--Delivered--> [plugin / cdn]     journal <--------+
//! ```
//! Start order: push workers, then the watcher (its watches exist before anything is
//! pushed, so `-r` has no startup gap), then the scheduler. Shutdown: stop the watcher,
//! which hands over what the kernel reported while the scheduler still receives (see
//! `watch`); the scheduler then sees its input close, waits for running jobs, journals
//! the rest and returns; the workers see the job channel close.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Sender, bounded};

use crate::cdn::JournalPurges;
use crate::child::Cancel;
use crate::coalesce::queue::Caps;
use crate::coalesce::{self, Channels, Journal, Scheduler, SchedulerConfig};
use crate::config::{Config, Plugin, PluginKind, RootConfig};
use crate::job::{Delivered, FsEvent, Op};
use crate::metrics::Metrics;
use crate::plugin::{self, PluginError, PluginStage};
use crate::push::share::{self, SshMasters};
use crate::push::warm::{WarmPolicy, WarmPool};
use crate::push::{self, PushContext};
use crate::watch::{self, WatchOptions, Watcher};

/// Kept here too for callers of its first home; the key lives in a leaf module.
pub use crate::journal_key::target_key;

/// Capacity of the watch → coalesce channel.
const EVENT_CHANNEL: usize = 4096;
/// Paths per rsync run at most.
pub const MAX_BATCH_PATHS: usize = 4096;
/// File bytes per rsync run at most.
pub const MAX_BATCH_BYTES: u64 = 256 * 1024 * 1024;
/// A batch still running after this long is killed and retried.
pub const BATCH_LIMIT: Duration = Duration::from_secs(3600);

/// Why the pipeline could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A thread could not be started.
    #[error("cannot start thread: {0}")]
    Thread(#[from] std::io::Error),
    /// The watcher failed.
    #[error(transparent)]
    Watch(#[from] watch::WatchError),
    /// A plugin or the CDN stage cannot start (a configuration problem).
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// A stage panicked.
    #[error("stage {0} panicked")]
    Panicked(&'static str),
}

/// Options from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    /// `-n`: push workers.
    pub n_workers: usize,
    /// `-r`: full sync of every root first.
    pub full_sync_first: bool,
    /// How long shutdown waits for running rsync jobs.
    pub shutdown_grace: Duration,
    /// `-m NAME`: run this plugin alone, with no rsync.
    pub standalone_plugin: Option<PluginKind>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            n_workers: 10,
            full_sync_first: false,
            shutdown_grace: coalesce::DEFAULT_SHUTDOWN_GRACE,
            standalone_plugin: None,
        }
    }
}

/// A running pipeline. Field order is shutdown order.
pub struct Pipeline {
    watcher: Option<Watcher>,
    inject_tx: Option<Sender<FsEvent>>,
    scheduler: Option<JoinHandle<bool>>,
    workers: Vec<JoinHandle<()>>,
    /// Stops the workers' rsync children once the scheduler has journaled their jobs.
    cancel: Cancel,
    plugins: Option<PluginStage>,
    metrics: Arc<Metrics>,
    warm: Option<Arc<WarmPool>>,
    /// Shared ssh connections, stopped last: a run riding one ends with it.
    ssh: Option<SshMasters>,
}

impl Pipeline {
    /// Starts every stage.
    ///
    /// # Errors
    /// When a thread cannot start or no root can be watched.
    pub fn start(
        config: &Config,
        options: &Options,
        journal: Arc<dyn Journal>,
    ) -> Result<Pipeline, PipelineError> {
        Pipeline::start_with_metrics(config, options, journal, Arc::new(Metrics::default()))
    }

    /// Starts every stage, updating `metrics` (kept by the daemon across reloads).
    ///
    /// # Errors
    /// As [`Pipeline::start`].
    pub fn start_with_metrics(
        config: &Config,
        options: &Options,
        journal: Arc<dyn Journal>,
        metrics: Arc<Metrics>,
    ) -> Result<Pipeline, PipelineError> {
        if options.standalone_plugin.is_some() {
            return Pipeline::start_standalone(config, journal, metrics);
        }
        let filter = Arc::new(config.filter.clone());
        let n_workers = options.n_workers.max(1);
        let (job_tx, job_rx) = bounded(n_workers);
        let (outcome_tx, outcome_rx) = bounded(n_workers);
        let (event_tx, event_rx) = bounded(EVENT_CHANNEL);
        let roots: Vec<PathBuf> = config.roots.iter().map(|r| r.path.clone()).collect();
        let (delivered_tx, plugins) = if config.running.is_empty() {
            (None, None)
        } else {
            let (delivered_tx, delivered_rx) = bounded(EVENT_CHANNEL);
            let purges = Arc::new(JournalPurges::new(Arc::clone(&journal), roots.clone()));
            let stage = plugin::spawn(config, delivered_rx, purges, Arc::clone(&metrics))?;
            (Some(delivered_tx), Some(stage))
        };
        let cancel = Cancel::default();
        let push_roots: Vec<(PathBuf, Vec<crate::config::Remote>)> = config
            .roots
            .iter()
            .map(|r| (r.path.clone(), r.remotes.clone()))
            .collect();
        // Shared ssh connections first: every rsync below (warm clients, the startup full
        // sync) rides them once they are up; one that is not up yet connects on its own.
        let ssh = match SshMasters::start(&config.rsync, &push_roots, &metrics) {
            Ok(ssh) => ssh,
            Err(err) => {
                log::warn!(
                    "ssh: cannot set up shared connections ({err}): every rsync connects on its own"
                );
                None
            }
        };
        let mut rsync = config.rsync.clone();
        rsync.ssh_control_dir = ssh.as_ref().map(|ssh| ssh.dir().to_path_buf());
        if let Some(ssh) = &ssh {
            ssh.wait_up(share::START_WAIT);
        }
        let warm = if config.rsync.warm.start {
            let policy = WarmPolicy::new(config.rsync.warm, config.rsync.timeout);
            let pool = WarmPool::start(
                policy,
                &rsync,
                &push_roots,
                config.inotify.delete,
                Some(BATCH_LIMIT),
                Arc::clone(&metrics),
            )?;
            Some(Arc::new(pool))
        } else {
            None
        };
        let context = PushContext {
            roots: push_roots,
            rsync,
            filter: Arc::clone(&filter),
            delete: config.inotify.delete,
            batch_limit: Some(BATCH_LIMIT),
            cancel: cancel.clone(),
            seconds_only: std::sync::Mutex::default(),
            plain_moves: std::sync::Mutex::default(),
            temp_cleanups: std::sync::Mutex::default(),
            warm: warm.clone(),
            max_batch_bytes: MAX_BATCH_BYTES,
        };
        let workers = push::spawn(n_workers, Arc::new(context), &job_rx, &outcome_tx)?;
        drop((job_rx, outcome_tx));
        let watch_options = WatchOptions {
            toggles: config.inotify,
            debug: config.debug,
            backend: config.watch_backend,
        };
        let watcher = watch::spawn(
            roots.clone(),
            watch_options,
            filter,
            event_tx.clone(),
            Arc::clone(&metrics),
        )?;
        let scheduler_config = SchedulerConfig {
            target_keys: config
                .roots
                .iter()
                .map(|r| {
                    r.remotes
                        .iter()
                        .map(|remote| crate::journal_key::TargetKey::new(&r.path, remote))
                        .collect()
                })
                .collect(),
            roots,
            n_workers,
            delete: config.inotify.delete,
            caps: Caps {
                max_paths: MAX_BATCH_PATHS,
            },
            retry_max: config.fail_log.retry_max,
            crontab: config.crontab.clone(),
            full_sync_first: options.full_sync_first,
            shutdown_grace: options.shutdown_grace,
            track_delivery: delivered_tx.is_some(),
        };
        let scheduler = Scheduler::new(
            scheduler_config,
            journal,
            Arc::clone(&metrics),
            std::time::Instant::now(),
            Box::new(coalesce::unit_random),
        );
        let channels = Channels {
            event_rx,
            outcome_rx,
            job_tx,
            delivered_tx,
        };
        let scheduler = coalesce::spawn(scheduler, channels, Arc::clone(&metrics))?;
        Ok(Pipeline {
            watcher: Some(watcher),
            inject_tx: Some(event_tx),
            scheduler: Some(scheduler),
            workers,
            cancel,
            plugins,
            metrics,
            warm,
            ssh,
        })
    }

    /// `-m NAME`: watch the plugin's root and call the plugin for every change, with no
    /// rsync (sersync 2.5's standalone mode). A config read with `-m` has that plugin
    /// alone in `running`, with root index 0: unless it is the command plugin (every
    /// `<localpath>`), its own `localpath` becomes the only root here.
    ///
    /// # Errors
    /// When the plugin or the watcher cannot start.
    pub fn start_standalone(
        config: &Config,
        journal: Arc<dyn Journal>,
        metrics: Arc<Metrics>,
    ) -> Result<Pipeline, PipelineError> {
        let mut config = config.clone();
        let own_root = config.running.iter().find_map(|plugin| match plugin {
            Plugin::Command(_) => None,
            Plugin::Socket { section, .. } => Some(section.root.clone()),
            Plugin::Http { section, .. } => Some(section.root.clone()),
            Plugin::RefreshCdn { section, .. } => Some(section.root.clone()),
        });
        if let Some(path) = own_root {
            config.roots = vec![RootConfig {
                path,
                remotes: Vec::new(),
            }];
        }
        let config = &config;
        let roots: Vec<PathBuf> = config.roots.iter().map(|r| r.path.clone()).collect();
        let (delivered_tx, delivered_rx) = bounded::<Delivered>(EVENT_CHANNEL);
        let purges = Arc::new(JournalPurges::new(journal, roots.clone()));
        let plugins = plugin::spawn(config, delivered_rx, purges, Arc::clone(&metrics))?;
        let (event_tx, event_rx) = bounded::<FsEvent>(EVENT_CHANNEL);
        let filter = Arc::new(config.filter.clone());
        let watch_options = WatchOptions {
            toggles: config.inotify,
            debug: config.debug,
            backend: config.watch_backend,
        };
        let watcher = watch::spawn(
            roots,
            watch_options,
            filter,
            event_tx.clone(),
            Arc::clone(&metrics),
        )?;
        let relay = std::thread::Builder::new()
            .name("sersync-relay".into())
            .spawn(move || {
                for event in event_rx {
                    match event {
                        FsEvent::Change(c) => {
                            let delivered = Delivered {
                                root: c.root,
                                rel: c.rel,
                                op: c.op,
                                is_dir: c.is_dir,
                                mask: c.mask,
                            };
                            if delivered_tx.send(delivered).is_err() {
                                break;
                            }
                        }
                        FsEvent::Move(m) => {
                            let delivered =
                                [(m.from, Op::Delete), (m.to, Op::Update)].map(|(rel, op)| {
                                    Delivered {
                                        root: m.root,
                                        rel,
                                        op,
                                        is_dir: m.is_dir,
                                        mask: m.mask,
                                    }
                                });
                            if delivered.into_iter().any(|d| delivered_tx.send(d).is_err()) {
                                break;
                            }
                        }
                        FsEvent::Rescan { root } => {
                            log::warn!(
                                "root {root}: events may have been lost (no rsync in -m mode)"
                            );
                        }
                        FsEvent::ChangingAtStop { .. } => {} // nothing is journaled in -m mode
                    }
                }
            })?;
        Ok(Pipeline {
            watcher: Some(watcher),
            inject_tx: Some(event_tx),
            scheduler: None,
            workers: vec![relay],
            cancel: Cancel::default(),
            plugins: Some(plugins),
            metrics,
            warm: None,
            ssh: None,
        })
    }

    /// Feeds an event as if the watcher had produced it (tests, overflow simulation).
    pub fn inject(&self, event: FsEvent) {
        if let Some(tx) = &self.inject_tx {
            let _ = tx.send(event);
        }
    }

    /// The shared figures.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Nothing queued and nothing running (events still in the channel are not seen).
    pub fn is_idle(&self) -> bool {
        self.metrics.queue_depth.load(Ordering::Relaxed) == 0
            && self.metrics.in_flight.load(Ordering::Relaxed) == 0
    }

    /// Stops reading events, lets running jobs finish (up to the grace period), journals
    /// what is left and joins every thread.
    ///
    /// # Errors
    /// When a stage panicked or the watcher failed.
    pub fn shutdown(mut self) -> Result<(), PipelineError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), PipelineError> {
        let mut result = Ok(());
        if let Some(watcher) = self.watcher.take() {
            if let Err(err) = watcher.stop() {
                result = Err(err.into());
            }
        }
        self.inject_tx = None;
        if let Some(warm) = &self.warm {
            warm.shutdown(); // waiting clients; those handed a batch run on, below
        }
        if let Some(handle) = self.scheduler.take() {
            match handle.join() {
                Ok(all_reported) => {
                    if !all_reported {
                        log::warn!(
                            "stopping the rsync runs that outlived the grace period (journaled)"
                        );
                    }
                }
                Err(_) => result = Err(PipelineError::Panicked("coalesce")),
            }
        }
        if let Some(warm) = self.warm.take() {
            // The scheduler journaled every running job: a warm run still going is stopped.
            warm.cancel_running();
        }
        // Journal, then kill, then exit: the scheduler has journaled every running job's
        // paths; now each worker stops its rsync with its process group, reaps it, and
        // returns. No rsync outlives the pipeline (an orphan with --delete could remove
        // what the next instance pushes).
        self.cancel.cancel();
        for handle in self.workers.drain(..) {
            if handle.join().is_err() {
                result = Err(PipelineError::Panicked("push"));
            }
        }
        // No rsync runs any more: the shared ssh connections go, their directory too.
        if let Some(mut ssh) = self.ssh.take() {
            ssh.shutdown();
        }
        if let Some(plugins) = self.plugins.take() {
            plugins.join();
        }
        result
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
