//! Process level: pid file, logging, detaching, the journal, the pipeline and signals.
//!
//! [`run`] is what `sersync` does once the configuration is valid, in this order (style
//! §11.5: no thread may exist before the fork):
//!
//! 1. check the pid file (another live instance: exit 2) and open the log file, while the
//!    terminal can still show why not;
//! 2. with `-d`, fork and detach ([`detach`]); the parent waits for the daemon's report;
//! 3. write the pid file, open the journal, install signal handlers, serve status, start
//!    the pipeline, and tell the parent it runs;
//! 4. wait for signals: SIGHUP reopens the log file and reloads the configuration
//!    ([`service::Service::reload`]), SIGUSR1 reopens the log file, SIGINT or SIGTERM stop in order (`ARCHITECTURE.md`)
//!    and exit 0. A second SIGINT or SIGTERM while stopping exits at once with 1; the
//!    journal is valid at every moment.

mod allocator;
pub mod detach;
pub mod pidfile;
mod service;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

use crate::cli::{Cli, EXIT_FAILURE, EXIT_OK, EXIT_USAGE};
use crate::config::Config;
use crate::faillog::FailLog;
use crate::logger::{self, LogSettings};
use detach::{Detached, Readiness};
use pidfile::PidFile;
use service::Service;

/// Where the pid file and log file go for this command line and configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// `--pidfile`, else `<pidfile path>`, else [`pidfile::default_path`] with `-d`;
    /// `None` in the foreground without either.
    pub pidfile: Option<PathBuf>,
    /// `--logfile`, else `<log path>`, else with `-d` `/var/log/sersync.log` for root or
    /// the pid file's path with a `.log` extension; `None` (stderr) in the foreground.
    pub logfile: Option<PathBuf>,
}

impl Paths {
    /// Resolves both paths; relative ones are made absolute (`-d` moves to `/`).
    pub fn resolve(cli: &Cli, config: &Config) -> Paths {
        let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let explicit_pid = cli.pidfile.as_deref().or(config.pidfile.as_deref());
        let pidfile = match explicit_pid {
            Some(path) => Some(absolute(path)),
            None if cli.detach => Some(pidfile::default_path()),
            None => None,
        };
        let explicit_log = cli.logfile.as_deref().or(config.log.path.as_deref());
        let logfile = match (explicit_log, &pidfile) {
            (Some(path), _) => Some(absolute(path)),
            (None, Some(pid)) if cli.detach => Some(if pidfile::process_uid() == 0 {
                PathBuf::from("/var/log/sersync.log")
            } else {
                pid.with_extension("log")
            }),
            _ => None,
        };
        Paths { pidfile, logfile }
    }

    /// The logger settings for `config` with these paths.
    pub fn log_settings(&self, config: &Config) -> LogSettings {
        let rust_log = std::env::var("RUST_LOG").ok();
        LogSettings {
            spec: logger::filter_spec(config, rust_log.as_deref()),
            file: self.logfile.clone(),
        }
    }
}

/// Runs the daemon until SIGINT or SIGTERM. Returns the process exit code.
pub fn run(cli: &Cli, config: Config) -> u8 {
    allocator::cap_arenas();
    // `-d` moves to `/`: a reload must still find a relative `-o` file.
    let mut cli = cli.clone();
    if let Ok(path) = std::path::absolute(&cli.config_path) {
        cli.config_path = path;
    }
    let cli = &cli;
    let paths = Paths::resolve(cli, &config);
    if let Some(path) = &paths.pidfile {
        if let Err(err) = pidfile::check(path) {
            eprintln!("sersync: {err}");
            return EXIT_USAGE;
        }
    }
    if let Err(err) = logger::configure(&paths.log_settings(&config)) {
        eprintln!("sersync: {err}");
        return EXIT_USAGE;
    }
    for warning in &config.warnings {
        log::warn!("{warning}");
    }
    let readiness = if cli.detach {
        let hint = paths
            .logfile
            .as_ref()
            .map_or_else(|| "the log".to_owned(), |p| p.display().to_string());
        match detach::detach(&hint) {
            Ok(Detached::Parent(code)) => return code,
            Ok(Detached::Child(readiness)) => Some(readiness),
            Err(err) => {
                eprintln!("sersync: cannot detach: {err}");
                return EXIT_FAILURE;
            }
        }
    } else {
        None
    };
    let mut starter = Starter {
        readiness,
        to_terminal: !cli.detach && paths.logfile.is_some(),
    };
    let pidfile = match &paths.pidfile {
        None => None,
        Some(path) => match PidFile::create(path) {
            Ok((pidfile, stale)) => {
                if let Some(stale) = stale {
                    log::warn!(
                        "{}: stale pid file (held {stale:?}), replaced",
                        path.display()
                    );
                }
                Some(Arc::new(pidfile))
            }
            Err(err) => return starter.fail(EXIT_USAGE, &err.to_string()),
        },
    };
    let journal = match FailLog::open(&config.fail_log.path) {
        Ok(journal) => Arc::new(journal),
        Err(err) => return starter.fail(EXIT_USAGE, &err.to_string()),
    };
    let mut signals = match Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR1]) {
        Ok(signals) => signals,
        Err(err) => {
            return starter.fail(
                EXIT_FAILURE,
                &format!("cannot install signal handlers: {err}"),
            );
        }
    };
    let mut service = match Service::start(cli, config, journal, paths) {
        Ok(service) => service,
        Err(message) => return starter.fail(EXIT_FAILURE, &message),
    };
    starter.ready();
    let mut code = EXIT_OK;
    for signal in signals.forever() {
        match signal {
            SIGUSR1 => reopen_log(),
            SIGHUP => {
                // Also a log reopen, for logrotate setups that send SIGHUP.
                reopen_log();
                if let Err(message) = service.reload() {
                    log::error!("{message}; stopping");
                    code = EXIT_FAILURE;
                    break;
                }
            }
            _ => {
                log::info!("signal {signal}: stopping (a second signal exits at once)");
                break;
            }
        }
    }
    let handle = signals.handle();
    let exit_pidfile = pidfile.clone();
    let second = std::thread::Builder::new()
        .name("sersync-signal".into())
        .spawn(move || {
            for signal in signals.forever() {
                match signal {
                    SIGUSR1 => reopen_log(),
                    SIGINT | SIGTERM => {
                        log::warn!(
                            "second signal: exiting now; changes not yet journaled are lost (start with -r to be sure)"
                        );
                        if let Some(pidfile) = &exit_pidfile {
                            pidfile.remove();
                        }
                        std::process::exit(i32::from(EXIT_FAILURE));
                    }
                    _ => {}
                }
            }
        });
    if let Err(err) = &second {
        log::warn!("cannot watch for a second signal: {err}");
    }
    let pending = service.journal_len();
    let result = service.stop();
    handle.close();
    match result {
        Ok(journaled) => log::info!(
            "stopped; {journaled} journal entr(y/ies) pending (was {pending} before stopping)"
        ),
        Err(err) => {
            log::error!("stopped with an error: {err}");
            code = EXIT_FAILURE;
        }
    }
    // Not left to `Drop`: the second-signal thread may still hold a clone at exit.
    if let Some(pidfile) = &pidfile {
        pidfile.remove();
    }
    code
}

fn reopen_log() {
    match logger::reopen() {
        Ok(Some(path)) => log::info!("{}: log file reopened", path.display()),
        Ok(None) => log::debug!("logging to stderr: no log file to reopen"),
        Err(err) => log::error!("{err}; still writing to the old file"),
    }
}

/// Reports the outcome of starting: to the waiting parent with `-d`, else to the terminal
/// when the log goes to a file (a stderr log already shows it).
struct Starter {
    readiness: Option<Readiness>,
    to_terminal: bool,
}

impl Starter {
    fn ready(&mut self) {
        if let Some(readiness) = self.readiness.take() {
            readiness.ready();
        }
    }

    fn fail(&mut self, code: u8, message: &str) -> u8 {
        log::error!("{message}");
        match self.readiness.take() {
            Some(readiness) => readiness.failed(code, message),
            None if self.to_terminal => eprintln!("sersync: {message}"),
            None => {}
        }
        code
    }
}
