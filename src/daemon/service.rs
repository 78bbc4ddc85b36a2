//! The running service: configuration, journal, pipeline and status server, and how a
//! reload (SIGHUP) swaps them.
//!
//! A reload reads the same file with the same command line. A file that does not load is
//! rejected with every problem logged, and the old configuration keeps running. A valid
//! one replaces the pipeline: the old one stops as at shutdown (unpushed paths go to the
//! journal) and the new one starts and replays the journal. What changes between the old
//! watcher's stop and the new one's watches is covered by a full sync of every kept
//! remote, journaled as a whole-root entry; a remote the reload adds gets one too (so
//! both survive a crash); with `-r` every remote gets one, as at start. The status
//! server restarts when `<host>` changed; the log follows `<log>`; the pid file stays.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cli::Cli;
use crate::coalesce::Journal;
use crate::config::{Config, ConfigError};
use crate::faillog::FailLog;
use crate::job::{Entry, Scope, Work};
use crate::logger;
use crate::metrics::Metrics;
use crate::pipeline::{Options, Pipeline, PipelineError, target_key};
use crate::status::{self, Source, View};

use super::Paths;

/// Everything that runs, and what it was started from.
pub(super) struct Service {
    cli: Cli,
    paths: Paths,
    options: Options,
    config: Arc<Config>,
    journal: Arc<FailLog>,
    metrics: Arc<Metrics>,
    source: Arc<Source>,
    pipeline: Option<Pipeline>,
    status: Option<status::Server>,
}

impl Service {
    /// Starts the status server (when `<host start="true">`) and the pipeline.
    ///
    /// # Errors
    /// A message when either cannot start.
    pub(super) fn start(
        cli: &Cli,
        config: Config,
        journal: Arc<FailLog>,
        paths: Paths,
    ) -> Result<Service, String> {
        let config = Arc::new(config);
        let metrics = Arc::new(Metrics::default());
        let source = Source::new(View {
            config: Arc::clone(&config),
            journal: Arc::clone(&journal),
            metrics: Arc::clone(&metrics),
        });
        let status = match config.host.start {
            true => Some(
                status::Server::start(&config.host, Arc::clone(&source))
                    .map_err(|e| e.to_string())?,
            ),
            false => None,
        };
        let options = Options {
            n_workers: cli.n_workers.get(),
            full_sync_first: cli.full_sync_first,
            standalone_plugin: cli.plugin,
            ..Options::default()
        };
        let pipeline = start_pipeline(&config, &options, &journal, &metrics)
            .map_err(|err| format!("cannot start: {err}"))?;
        log::info!(
            "sersync {} running (pid {}): {} root(s), {} remote(s), {} worker(s), journal {} ({} pending){}",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            config.roots.len(),
            config.targets().count(),
            options.n_workers,
            journal.path().display(),
            journal.len(),
            status
                .as_ref()
                .map(|s| format!(", status on http://{}/status", s.addr()))
                .unwrap_or_default()
        );
        Ok(Service {
            cli: cli.clone(),
            paths,
            options,
            config,
            journal,
            metrics,
            source,
            pipeline: Some(pipeline),
            status,
        })
    }

    /// Live journal entries.
    pub(super) fn journal_len(&self) -> usize {
        self.journal.len()
    }

    /// Stops the pipeline and the status server; returns the journal entries left.
    ///
    /// # Errors
    /// When a stage failed or panicked.
    pub(super) fn stop(mut self) -> Result<usize, PipelineError> {
        let result = self.pipeline.take().map_or(Ok(()), Pipeline::shutdown);
        if let Some(server) = self.status.take() {
            server.stop();
        }
        result.map(|()| self.journal.len())
    }

    /// Reloads the configuration; see the module doc.
    ///
    /// # Errors
    /// Only when neither the new nor the old configuration could be started again: the
    /// daemon must stop.
    pub(super) fn reload(&mut self) -> Result<(), String> {
        let path = self.cli.config_path.display().to_string();
        log::info!("{path}: reloading the configuration (SIGHUP)");
        let Some(config) = self.load() else {
            Metrics::incr(&self.metrics.reload_failures);
            return Ok(());
        };
        let journal = if config.fail_log.path == self.config.fail_log.path {
            Arc::clone(&self.journal)
        } else {
            match FailLog::open(&config.fail_log.path) {
                Ok(journal) => Arc::new(journal),
                Err(err) => {
                    log::error!("{err}; reload rejected, the previous configuration keeps running");
                    Metrics::incr(&self.metrics.reload_failures);
                    return Ok(());
                }
            }
        };
        self.apply_logging(&config);
        let old_keys = keys(&self.config);
        let new_keys = keys(&config);
        let added: Vec<&(PathBuf, String)> = new_keys.difference(&old_keys).collect();
        let removed = old_keys.difference(&new_keys).count();
        for (_, key) in &added {
            record_full_sync(&journal, key, "remote added by reload");
        }
        if let Some(old) = self.pipeline.take() {
            if let Err(err) = old.shutdown() {
                log::error!("{path}: the previous pipeline stopped with an error: {err}");
            }
        }
        // Between the old watcher's stop and the new one's watches nothing is seen: a
        // full sync of every kept remote, journaled (so a crash keeps it too) after the
        // old pipeline is gone (its last full sync could clear the entry otherwise), and
        // started by the new one once its watches are in place, covers that gap.
        for (_, key) in new_keys.intersection(&old_keys) {
            record_full_sync(&self.journal, key, "reload: changes between two watchers");
        }
        if !Arc::ptr_eq(&journal, &self.journal) {
            move_entries(&self.journal, &journal);
        }
        self.metrics.clear_targets();
        match start_pipeline(&config, &self.options, &journal, &self.metrics) {
            Ok(pipeline) => self.pipeline = Some(pipeline),
            Err(err) => {
                log::error!(
                    "{path}: cannot start with the new configuration: {err}; going back to the previous one"
                );
                Metrics::incr(&self.metrics.reload_failures);
                for (_, key) in &added {
                    let _ = journal.clear(key, &[Path::new("")]);
                }
                if !Arc::ptr_eq(&journal, &self.journal) {
                    move_entries(&journal, &self.journal);
                }
                self.apply_logging(&self.config.clone());
                let pipeline =
                    start_pipeline(&self.config, &self.options, &self.journal, &self.metrics)
                        .map_err(|err| {
                            format!(
                                "{path}: cannot restart the previous configuration either: {err}"
                            )
                        })?;
                self.pipeline = Some(pipeline);
                return Ok(());
            }
        }
        let config = Arc::new(config);
        if config.host != self.config.host {
            self.restart_status(&config);
        }
        log::info!(
            "{path}: reloaded: {} root(s) (was {}), {} remote(s) (was {}), {} added, {removed} removed",
            config.roots.len(),
            self.config.roots.len(),
            new_keys.len(),
            old_keys.len(),
            added.len(),
        );
        self.config = config;
        self.journal = journal;
        self.source.set(View {
            config: Arc::clone(&self.config),
            journal: Arc::clone(&self.journal),
            metrics: Arc::clone(&self.metrics),
        });
        Metrics::incr(&self.metrics.reloads);
        Ok(())
    }

    /// Loads and validates the file, logging every problem when it is rejected.
    fn load(&self) -> Option<Config> {
        match Config::load_with(&self.cli.config_path, &self.cli.parse_options()) {
            Ok(config) => {
                for warning in &config.warnings {
                    log::warn!("{warning}");
                }
                Some(config)
            }
            Err(ConfigError::Invalid { path, problems }) => {
                for p in &problems {
                    log::error!("{}:{}:{}: {}", path.display(), p.line, p.col, p.message);
                }
                log::error!(
                    "{}: {} problem(s); reload rejected, the previous configuration keeps running",
                    path.display(),
                    problems.len()
                );
                None
            }
            Err(err) => {
                log::error!("{err}; reload rejected, the previous configuration keeps running");
                None
            }
        }
    }

    /// Follows `<log>` (unless `--logfile` fixed the file) and `<debug>` / `RUST_LOG`.
    fn apply_logging(&mut self, config: &Config) {
        let paths = Paths::resolve(&self.cli, config);
        let settings = Paths {
            pidfile: self.paths.pidfile.clone(),
            logfile: paths.logfile,
        }
        .log_settings(config);
        if settings != self.paths.log_settings(&self.config) {
            match logger::configure(&settings) {
                Ok(()) => self.paths.logfile = settings.file,
                Err(err) => log::error!("{err}; logging continues as before"),
            }
        }
    }

    fn restart_status(&mut self, config: &Config) {
        if let Some(server) = self.status.take() {
            server.stop();
        }
        if !config.host.start {
            log::info!("status server off");
            return;
        }
        match status::Server::start(&config.host, Arc::clone(&self.source)) {
            Ok(server) => {
                log::info!("status on http://{}/status", server.addr());
                self.status = Some(server);
            }
            Err(err) => log::error!("{err}; status stays off until the next reload"),
        }
    }
}

/// Journals a whole-root entry: the remote gets a full sync from the next pipeline.
fn record_full_sync(journal: &FailLog, key: &str, reason: &str) {
    if let Err(err) = Journal::record(journal, key, &[Work::WholeRoot], None, reason, "") {
        log::error!("{key}: cannot schedule a full sync ({reason}): {err}");
    }
}

fn start_pipeline(
    config: &Config,
    options: &Options,
    journal: &Arc<FailLog>,
    metrics: &Arc<Metrics>,
) -> Result<Pipeline, PipelineError> {
    let journal: Arc<dyn Journal> = journal.clone();
    Pipeline::start_with_metrics(config, options, journal, Arc::clone(metrics))
}

/// `(root, journal key)` of every remote.
fn keys(config: &Config) -> BTreeSet<(PathBuf, String)> {
    config
        .roots
        .iter()
        .flat_map(|root| {
            root.remotes
                .iter()
                .map(|remote| (root.path.clone(), target_key(&root.path, remote)))
        })
        .collect()
}

/// Moves every live entry from one journal to another (the `<failLog path>` changed).
fn move_entries(from: &FailLog, to: &FailLog) {
    for entry in from.pending() {
        let moved = match Scope::from_storage(entry.rel.clone()) {
            Scope::WholeRoot => Work::WholeRoot,
            Scope::Path(rel) => Work::Path(Entry {
                rel: crate::rel::Rel::verbatim(rel),
                op: entry.op,
                is_dir: entry.is_dir,
            }),
        };
        let recorded = Journal::record(
            to,
            &entry.target,
            &[moved],
            entry.code,
            &entry.reason,
            &entry.command,
        );
        match recorded {
            Ok(()) => {
                let _ = from.clear(&entry.target, &[entry.rel.as_path()]);
            }
            Err(err) => log::error!(
                "{}: cannot move {} to {}: {err}",
                from.path().display(),
                entry.rel.display(),
                to.path().display()
            ),
        }
    }
}
