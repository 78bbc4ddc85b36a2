//! The `command` plugin: runs `prefix… ABS_PATH suffix…` for each delivered change.
//!
//! The command is an argument vector handed to `execve` through
//! [`std::process::Command`], never a shell string: a file called `$(touch x); rm -rf`
//! is one argument, byte-exact (sersync 2.5 ran `system()` on an unquoted string, S2).
//! Also set: `SERSYNC_EVENT` (`update` or `delete`) and `SERSYNC_PATH` (the absolute
//! path). With `<filter start="true">`, only absolute paths that fully match one of the
//! include regexes run the command. It applies to every root, as the original did.
//!
//! `concurrency` threads `sersync-command-{i}` run commands, so at most that many run at
//! once, in no guaranteed order. Each command runs in its own process group ([`crate::child`]);
//! one still running after `timeout` is stopped with its whole group (SIGTERM, SIGKILL
//! after [`child::KILL_AFTER`]). With `ignoreError="true"` stdout and
//! stderr go to `/dev/null` and the exit status is ignored; otherwise stdout is
//! inherited and a non-zero exit is logged at `warn` with the end of stderr and counted
//! in `plugin_failures`.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Receiver;

use crate::argv::Argv;
use crate::child::{self, ChildError, Ending};
use crate::config::{CommandConfig, ProgramWords};
use crate::filter::Rule;
use crate::job::Delivered;
use crate::metrics::Metrics;
use crate::paths::abs_path;
use crate::plugin::{PluginError, named_thread};

/// How much of the end of stderr is kept for the log.
const STDERR_TAIL: usize = 2048;

/// Why one run of the command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The program could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// `prefix[0]`.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The program exited with a failure status.
    #[error("{status}: {stderr}")]
    Exit {
        /// How it ended.
        status: ExitStatus,
        /// The end of its stderr.
        stderr: String,
    },
    /// The program was still running after the timeout and was killed.
    #[error("still running after {0:?}, killed")]
    TimedOut(Duration),
    /// Waiting for the program failed.
    #[error("cannot wait for the command: {0}")]
    Wait(#[source] std::io::Error),
}

/// The command plugin's settings, ready to run.
#[derive(Debug, Clone)]
pub struct CommandPlugin {
    prefix: ProgramWords,
    suffix: Vec<String>,
    include: Option<Vec<Rule>>,
    ignore_error: bool,
    timeout: Duration,
}

impl CommandPlugin {
    /// The plugin for `config` (its include rules are anchored by construction, its
    /// prefix is never empty).
    pub fn new(config: &CommandConfig) -> CommandPlugin {
        CommandPlugin {
            prefix: config.prefix.clone(),
            suffix: config.suffix.clone(),
            include: config.include.clone(),
            ignore_error: config.ignore_error,
            timeout: config.timeout,
        }
    }

    /// Whether `abs` passes the include filter (always, without one).
    pub fn is_included(&self, abs: &Path) -> bool {
        self.include.as_ref().is_none_or(|rules| {
            rules
                .iter()
                .any(|rule| rule.is_match(abs.as_os_str().as_bytes()))
        })
    }

    /// The full argument vector, program first: `prefix… abs suffix…`.
    pub fn argv(&self, abs: &Path) -> Vec<OsString> {
        let mut argv: Vec<OsString> = self.prefix.words().iter().map(OsString::from).collect();
        argv.push(abs.as_os_str().to_owned());
        argv.extend(self.suffix.iter().map(OsString::from));
        argv
    }

    /// Runs the command for one change and waits for it (at most `timeout`).
    ///
    /// # Errors
    /// [`CommandError`] when it cannot start, fails (unless `ignoreError`) or times out.
    pub fn run(&self, delivered: &Delivered, abs: &Path) -> Result<(), CommandError> {
        let argv = self.argv(abs);
        let event = OsString::from(delivered.op.to_string());
        log::debug!("{}: running {argv:?}", abs.display());
        let finished = child::run(child::Spec {
            program: &argv[0],
            args: Argv::from(&argv[1..]),
            env: &[("SERSYNC_EVENT", &event), ("SERSYNC_PATH", abs.as_os_str())],
            dir: None,
            stdin: None,
            stdout: if self.ignore_error {
                child::Stdout::Null
            } else {
                child::Stdout::Inherit
            },
            stderr_tail: (!self.ignore_error).then_some(STDERR_TAIL),
            limit: Some(self.timeout),
            cancel: None,
        })
        .map_err(|err| match err {
            ChildError::Spawn(source) => CommandError::Spawn {
                program: self.prefix.program().to_owned(),
                source,
            },
            ChildError::Wait(source) => CommandError::Wait(source),
        })?;
        let status = match finished.ending {
            Ending::Exited(status) => status,
            Ending::TimedOut(limit) => return Err(CommandError::TimedOut(limit)),
            // No cancel is given: a command runs to its end or its timeout.
            Ending::Cancelled => return Ok(()),
        };
        if self.ignore_error || status.success() {
            return Ok(());
        }
        Err(CommandError::Exit {
            status,
            stderr: String::from_utf8_lossy(&finished.stderr).trim().to_owned(),
        })
    }
}

/// Starts `concurrency` worker threads reading `delivered_rx`.
///
/// # Errors
/// [`PluginError`] for invalid settings or a thread that cannot start.
pub fn spawn(
    config: &CommandConfig,
    roots: Vec<PathBuf>,
    delivered_rx: &Receiver<Delivered>,
    metrics: &Arc<Metrics>,
) -> Result<Vec<JoinHandle<()>>, PluginError> {
    let plugin = Arc::new(CommandPlugin::new(config));
    let roots = Arc::new(roots);
    (0..config.concurrency.max(1))
        .map(|idx| {
            let plugin = Arc::clone(&plugin);
            let roots = Arc::clone(&roots);
            let delivered_rx = delivered_rx.clone();
            let metrics = Arc::clone(metrics);
            named_thread(&format!("sersync-command-{idx}"), move || {
                for delivered in delivered_rx {
                    let Some(root) = roots.get(delivered.root) else {
                        continue;
                    };
                    let abs = abs_path(root, &delivered.rel);
                    if !plugin.is_included(&abs) {
                        continue;
                    }
                    if let Err(err) = plugin.run(&delivered, &abs) {
                        Metrics::incr(&metrics.plugin_failures);
                        log::warn!("{}: command failed: {err}", abs.display());
                    }
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(prefix: &[&str], include: Option<&[&str]>) -> CommandConfig {
        CommandConfig {
            prefix: ProgramWords::new(prefix.iter().map(|s| (*s).to_owned()).collect())
                .expect("a program"),
            suffix: vec!["--".into(), "x y".into()],
            ignore_error: false,
            include: include.map(|res| {
                res.iter()
                    .map(|re| Rule::new(re).expect("test regex"))
                    .collect()
            }),
            timeout: Duration::from_secs(5),
            concurrency: 1,
        }
    }

    #[test]
    fn argv_is_prefix_path_suffix() {
        let plugin = CommandPlugin::new(&config(&["/bin/echo", "-n"], None));
        let abs = Path::new(std::ffi::OsStr::from_bytes(b"/srv/$(x) \xff"));
        let argv = plugin.argv(abs);
        assert_eq!(argv.len(), 5);
        assert_eq!(argv[2].as_bytes(), b"/srv/$(x) \xff");
        assert_eq!(argv[4], "x y");
    }

    #[test]
    fn include_regexes_match_the_whole_absolute_path() {
        let plugin = CommandPlugin::new(&config(&["true"], Some(&["/srv/a|/srv/ab", r".*\.php"])));
        assert!(plugin.is_included(Path::new("/srv/ab")));
        assert!(plugin.is_included(Path::new("/srv/x/index.php")));
        assert!(!plugin.is_included(Path::new("/srv/abc")));
        assert!(!plugin.is_included(Path::new("/srv/index.php.bak")));
    }

    #[test]
    fn an_empty_prefix_is_not_a_program() {
        assert_eq!(ProgramWords::new(Vec::new()), None);
    }
}
