//! The command line: sersync 2.5's short flags (`-d -r -o FILE -n NUM -m NAME -h`, combined
//! as getopt allows: `-dro conf.xml`, `-n8`), plus `--help`, `--version`, `--check`,
//! `--status`, `--pidfile` and `--logfile`. Everything else comes from the XML file.
//!
//! Unlike the original, a bad flag or value is a one-line error and exit code 2 instead
//! of a silent fallback. `check.rs` implements `--check`.

mod check;

use std::ffi::OsString;
use std::num::NonZeroUsize;
use std::path::PathBuf;

use crate::config::{ParseOptions, PluginKind};

pub use check::{load_config, print_warnings, run_check};

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: a runtime error (the daemon could not start or stopped on an error).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: a usage error on the command line or an invalid configuration file.
pub const EXIT_USAGE: u8 = 2;

/// `-o` when not given (relative to the working directory, as sersync 2.5).
pub const DEFAULT_CONFIG: &str = "./confxml.xml";
/// `-n` when not given (sersync 2.5's `DEFAULT_THREAD_NUM`).
pub const DEFAULT_WORKERS: NonZeroUsize = NonZeroUsize::new(10).expect("10 is not zero");
/// The largest `-n` accepted: more threads than this only adds contention.
pub const MAX_WORKERS: usize = 1024;

/// The text printed by `-h` / `--help`.
pub const HELP: &str = "\
sersync - mirror directory trees to rsync daemons, ssh hosts and local directories
in real time (inotify + rsync), compatible with sersync 2.5's confxml.xml

usage: sersync [-d] [-r] [-o FILE] [-n NUM] [-m PLUGIN] [--check | --status]

  -d               run in the background (daemon mode)
  -r               push each watched directory to its remotes once, before watching
  -o FILE          configuration file (default ./confxml.xml)
  -n NUM           number of rsync worker threads, 1 to 1024 (default 10)
  -m PLUGIN        run one plugin alone, without rsync: -m command, -m socket,
                   -m http or -m refreshCDN
      --check      check the configuration, print what would run, and exit
      --status     ask the running daemon for its status, and exit
      --pidfile PATH  pid file written with -d (overrides <pidfile path>)
      --logfile PATH  log file (overrides <log path>)
  -h, --help       print this help and exit
  -V, --version    print the version and exit

Short flags combine as in sersync 2.5: sersync -dro /etc/sersync/confxml.xml
Exit status: 0 success, 1 runtime error, 2 usage or configuration error.
";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run the daemon (the default).
    Run(Cli),
    /// `--check`: validate the configuration and print a summary.
    Check(Cli),
    /// `--status`: query the running daemon.
    Status(Cli),
    /// `-h` / `--help`.
    Help,
    /// `-V` / `--version`.
    Version,
}

/// Options given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cli {
    /// `-d`: detach from the terminal and run in the background.
    pub detach: bool,
    /// `-r`: push every root to its remotes once before watching.
    pub full_sync_first: bool,
    /// `-o FILE`: the XML configuration (default `./confxml.xml`).
    pub config_path: PathBuf,
    /// `-n NUM`: rsync worker threads (default 10).
    pub n_workers: NonZeroUsize,
    /// `-m NAME`: run this plugin alone, with no rsync.
    pub plugin: Option<PluginKind>,
    /// `--pidfile PATH`: overrides `<pidfile path>`.
    pub pidfile: Option<PathBuf>,
    /// `--logfile PATH`: overrides `<log path>`.
    pub logfile: Option<PathBuf>,
}

impl Default for Cli {
    fn default() -> Self {
        Cli {
            detach: false,
            full_sync_first: false,
            config_path: PathBuf::from(DEFAULT_CONFIG),
            n_workers: DEFAULT_WORKERS,
            plugin: None,
            pidfile: None,
            logfile: None,
        }
    }
}

impl Cli {
    /// What the configuration parser must know from the command line.
    pub fn parse_options(&self) -> ParseOptions {
        ParseOptions {
            standalone_plugin: self.plugin,
        }
    }
}

/// A command line that cannot be used; its message is one line, without the `sersync: `
/// prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

/// Parses the arguments (without the program name, e.g. `std::env::args_os().skip(1)`).
/// `-h` and `-V` win as soon as they are seen, as with getopt.
///
/// # Errors
/// An unknown flag, a missing or invalid value, a stray argument, or `--check` together
/// with `--status`.
pub fn parse_from(args: impl IntoIterator<Item = OsString>) -> Result<Command, UsageError> {
    use lexopt::prelude::*;

    let mut cli = Cli::default();
    let (mut check, mut status) = (false, false);
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(usage)? {
        match arg {
            Short('d') => cli.detach = true,
            Short('r') => cli.full_sync_first = true,
            Short('o') => cli.config_path = PathBuf::from(value(&mut parser, "-o")?),
            Short('n') => cli.n_workers = workers(&value(&mut parser, "-n")?)?,
            Short('m') => cli.plugin = Some(plugin(&value(&mut parser, "-m")?)?),
            Long("check") => check = true,
            Long("status") => status = true,
            Long("pidfile") => cli.pidfile = Some(PathBuf::from(value(&mut parser, "--pidfile")?)),
            Long("logfile") => cli.logfile = Some(PathBuf::from(value(&mut parser, "--logfile")?)),
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Value(value) => {
                let value = value.to_string_lossy();
                return Err(UsageError(format!(
                    "unexpected argument '{value}' (try sersync -h)"
                )));
            }
            Short(c) => return Err(UsageError(format!("unknown option -{c} (try sersync -h)"))),
            Long(name) => {
                return Err(UsageError(format!(
                    "unknown option --{name} (try sersync -h)"
                )));
            }
        }
    }
    match (check, status) {
        (true, true) => Err(UsageError(
            "--check and --status cannot be combined".to_owned(),
        )),
        (true, false) => Ok(Command::Check(cli)),
        (false, true) => Ok(Command::Status(cli)),
        (false, false) => Ok(Command::Run(cli)),
    }
}

/// The value of an option; `-o ''` is as missing as no value at all.
fn value(parser: &mut lexopt::Parser, flag: &str) -> Result<OsString, UsageError> {
    match parser.value() {
        Ok(value) if !value.is_empty() => Ok(value),
        _ => Err(UsageError(format!("{flag}: missing value"))),
    }
}

fn workers(value: &OsString) -> Result<NonZeroUsize, UsageError> {
    let text = value.to_string_lossy();
    text.parse::<usize>()
        .ok()
        .filter(|n| *n <= MAX_WORKERS)
        .and_then(NonZeroUsize::new)
        .ok_or_else(|| {
            UsageError(format!(
                "-n '{text}': expected a number of worker threads from 1 to {MAX_WORKERS}"
            ))
        })
}

fn plugin(value: &OsString) -> Result<PluginKind, UsageError> {
    let text = value.to_string_lossy();
    PluginKind::from_name(&text).ok_or_else(|| {
        UsageError(format!(
            "-m '{text}': unknown plugin (expected command, socket, http or refreshCDN)"
        ))
    })
}

fn usage(err: lexopt::Error) -> UsageError {
    UsageError(err.to_string())
}

#[cfg(test)]
mod tests;
