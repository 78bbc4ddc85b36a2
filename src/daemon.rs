//! Process level: logging, the journal, the pipeline, and signals.
//!
//! `run` is what `sersync` does after the configuration has been validated: it opens the
//! failure journal (refusing an unsafe one with exit 2), starts the pipeline and waits for
//! SIGINT or SIGTERM, then stops in order (see `ARCHITECTURE.md`). A second signal while
//! stopping exits at once; the journal is valid at every moment.

use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::cli::{Cli, EXIT_FAILURE, EXIT_OK, EXIT_USAGE};
use crate::coalesce::Journal;
use crate::config::Config;
use crate::faillog::FailLog;
use crate::pipeline::{Options, Pipeline, PipelineError};

/// Sets up `log`: `RUST_LOG` wins, then `<log level>`, then `<debug start="true">`
/// (debug), else info. Lines carry a UTC timestamp.
pub fn init_logging(config: &Config) {
    let default = match (&config.log.level, config.debug) {
        (Some(level), _) => level.clone(),
        (None, true) => "debug".to_owned(),
        (None, false) => "info".to_owned(),
    };
    let env = env_logger::Env::default().default_filter_or(default);
    let _ = env_logger::Builder::from_env(env)
        .format_timestamp_millis()
        .try_init();
}

/// Runs the engine until SIGINT or SIGTERM. Returns the process exit code.
pub fn run(cli: &Cli, config: &Config) -> u8 {
    init_logging(config);
    for warning in &config.warnings {
        log::warn!("{warning}");
    }
    let journal = match FailLog::open(&config.fail_log.path) {
        Ok(journal) => Arc::new(journal),
        Err(err) => {
            log::error!("{err}");
            eprintln!("sersync: {err}");
            return EXIT_USAGE;
        }
    };
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(signals) => signals,
        Err(err) => {
            log::error!("cannot install signal handlers: {err}");
            return EXIT_FAILURE;
        }
    };
    let options = Options {
        n_workers: cli.n_workers.get(),
        full_sync_first: cli.full_sync_first,
        ..Options::default()
    };
    let journal_dyn: Arc<dyn Journal> = journal.clone();
    let started = match cli.plugin {
        Some(kind) => Pipeline::start_standalone(config, kind, journal_dyn),
        None => Pipeline::start(config, &options, journal_dyn),
    };
    let pipeline = match started {
        Ok(pipeline) => pipeline,
        Err(err @ PipelineError::Plugin(_)) => {
            log::error!("cannot start: {err}");
            eprintln!("sersync: {err}");
            return EXIT_USAGE;
        }
        Err(err) => {
            log::error!("cannot start: {err}");
            return EXIT_FAILURE;
        }
    };
    log::info!(
        "sersync {} running: {} root(s), {} remote(s), {} worker(s), journal {} ({} pending)",
        env!("CARGO_PKG_VERSION"),
        config.roots.len(),
        config.targets().count(),
        options.n_workers,
        journal.path().display(),
        journal.len()
    );
    let signal = signals.forever().next();
    log::info!(
        "signal {}: stopping (a second signal exits at once)",
        signal.unwrap_or(0)
    );
    let handle = signals.handle();
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            log::warn!("second signal: exiting now; unpushed paths stay in the journal");
            std::process::exit(i32::from(EXIT_OK));
        }
    });
    let result = pipeline.shutdown();
    handle.close();
    match result {
        Ok(()) => {
            log::info!("stopped; {} journal entr(y/ies) pending", journal.len());
            EXIT_OK
        }
        Err(err) => {
            log::error!("stopped with an error: {err}");
            EXIT_FAILURE
        }
    }
}
