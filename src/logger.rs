//! The `log` backend: one line per record, `2026-11-24T04:41:01.123Z WARN  sersync::push: …`,
//! to stderr or to a log file that can be reopened (logrotate) and reconfigured (reload).
//!
//! Filtering and formatting are `env_logger`'s; this module only adds what a service needs
//! on top: a file sink shared by every record, swapped in place by [`reopen`] (SIGUSR1),
//! and a whole logger swapped by [`configure`] after a reload (new level or file). The
//! level comes from `RUST_LOG` when set, else `<log level>`, else `debug` with
//! `<debug start="true">`, else `info` ([`filter_spec`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use env_logger::{Target, WriteStyle};

use crate::config::Config;

/// Where log lines go and which ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// An `env_logger` filter (`info`, `sersync=debug,ureq=warn`).
    pub spec: String,
    /// The log file; `None` means stderr.
    pub file: Option<PathBuf>,
}

/// The filter: `RUST_LOG` when set and not empty, else `<log level>`, else `debug` when
/// `<debug start="true">`, else `info`.
pub fn filter_spec(config: &Config, rust_log: Option<&str>) -> String {
    spec_from(config.log.level.as_deref(), config.debug, rust_log)
}

fn spec_from(level: Option<&str>, debug: bool, rust_log: Option<&str>) -> String {
    if let Some(spec) = rust_log.filter(|s| !s.trim().is_empty()) {
        return spec.to_owned();
    }
    match (level, debug) {
        (Some(level), _) => level.to_owned(),
        (None, true) => "debug".to_owned(),
        (None, false) => "info".to_owned(),
    }
}

/// The process-wide logger: installed once, its parts replaced under locks.
struct Global {
    logger: RwLock<env_logger::Logger>,
    /// The open log file, shared with the logger's writer; `None` when logging to stderr.
    file: Mutex<Option<(PathBuf, SharedFile)>>,
}

static GLOBAL: OnceLock<Global> = OnceLock::new();

/// A file every record is written to, replaceable in place.
#[derive(Clone)]
struct SharedFile(Arc<Mutex<File>>);

impl Write for SharedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut file = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        file.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl log::Log for Global {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        let logger = self.logger.read().unwrap_or_else(PoisonError::into_inner);
        logger.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        let logger = self.logger.read().unwrap_or_else(PoisonError::into_inner);
        logger.log(record);
    }

    fn flush(&self) {}
}

/// Opens (creating, 0640) a log file for appending.
///
/// # Errors
/// When the file cannot be opened.
fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("{}: cannot open log file: {err}", path.display()),
            )
        })
}

fn build(spec: &str, file: Option<&SharedFile>) -> env_logger::Logger {
    let mut builder = env_logger::Builder::new();
    builder.parse_filters(spec).format(|buf, record| {
        writeln!(
            buf,
            "{} {:<5} {}: {}",
            buf.timestamp_millis(),
            record.level(),
            record.target(),
            record.args()
        )
    });
    match file {
        Some(file) => builder
            .target(Target::Pipe(Box::new(file.clone())))
            .write_style(WriteStyle::Never),
        None => builder.target(Target::Stderr),
    };
    builder.build()
}

/// Installs the logger, or reconfigures it when it is already installed (a reload, or
/// a second daemon in one test process). The file, if any, is opened first: on error
/// nothing changes.
///
/// # Errors
/// When the log file cannot be opened.
pub fn configure(settings: &LogSettings) -> io::Result<()> {
    let file = match &settings.file {
        Some(path) => Some((path.clone(), SharedFile(Arc::new(Mutex::new(open(path)?))))),
        None => None,
    };
    let logger = build(&settings.spec, file.as_ref().map(|(_, f)| f));
    let max_level = logger.filter();
    match GLOBAL.get() {
        Some(global) => {
            *global
                .logger
                .write()
                .unwrap_or_else(PoisonError::into_inner) = logger;
            *global.file.lock().unwrap_or_else(PoisonError::into_inner) = file;
        }
        None => {
            let global = GLOBAL.get_or_init(|| Global {
                logger: RwLock::new(logger),
                file: Mutex::new(file),
            });
            // Fails only when another logger was installed first (tests); keep it then.
            let _ = log::set_logger(global);
        }
    }
    log::set_max_level(max_level);
    Ok(())
}

/// Reopens the log file at its path (after logrotate moved it away); lines written from
/// now on go to the new file. Does nothing when logging to stderr.
///
/// # Errors
/// When the file cannot be opened; the old one stays in use.
pub fn reopen() -> io::Result<Option<PathBuf>> {
    let Some(global) = GLOBAL.get() else {
        return Ok(None);
    };
    let guard = global.file.lock().unwrap_or_else(PoisonError::into_inner);
    let Some((path, shared)) = guard.as_ref() else {
        return Ok(None);
    };
    let fresh = open(path)?;
    *shared.0.lock().unwrap_or_else(PoisonError::into_inner) = fresh;
    Ok(Some(path.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_wins_then_log_level_then_debug_then_info() {
        let table = [
            (Some("trace"), Some("warn"), true, "trace"),
            (Some("  "), Some("warn"), true, "warn"),
            (None, Some("error"), true, "error"),
            (None, None, true, "debug"),
            (None, None, false, "info"),
        ];
        for (rust_log, level, debug, expected) in table {
            let spec = spec_from(level, debug, rust_log);
            assert_eq!(spec, expected, "{rust_log:?} {level:?} {debug}");
        }
    }
}
