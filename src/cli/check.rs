//! `--check`: load and validate the configuration, then print what would run: each root
//! and its remotes with an rsync command line (never a secret), the inotify events, the
//! filters, the periodic full sync, the failure journal and the plugins.

use std::fmt::Write as _;
use std::time::Duration;

use crate::cdn::http::redact;
use crate::config::{CdnApi, Config, ConfigError, PluginKind, Remote, RootConfig};
use crate::push::share;
use crate::push::warm::WarmPolicy;

use super::{Cli, EXIT_OK, EXIT_USAGE};

/// Loads the configuration named on the command line. On failure, prints every problem
/// as `FILE:LINE:COL: message` (or why the file cannot be read) to stderr and returns
/// the exit code to use.
///
/// # Errors
/// [`EXIT_USAGE`] when the file cannot be read or is not valid.
pub fn load_config(cli: &Cli) -> Result<Config, u8> {
    match Config::load_with(&cli.config_path, &cli.parse_options()) {
        Ok(config) => Ok(config),
        Err(err @ ConfigError::Read { .. }) => {
            eprintln!("sersync: {err}");
            Err(EXIT_USAGE)
        }
        Err(ConfigError::Invalid { path, problems }) => {
            for problem in &problems {
                eprintln!(
                    "{}:{}:{}: {}",
                    path.display(),
                    problem.line,
                    problem.col,
                    problem.message
                );
            }
            let n = problems.len();
            let s = if n == 1 { "" } else { "s" };
            eprintln!("sersync: {}: {n} problem{s}, not started", path.display());
            Err(EXIT_USAGE)
        }
    }
}

/// Prints the configuration's warnings to stderr, one per line.
pub fn print_warnings(config: &Config) {
    for warning in &config.warnings {
        eprintln!("warning: {warning}");
    }
}

/// Runs `--check` and returns the exit code: 0 when the configuration is valid (the
/// summary goes to stdout), 2 otherwise.
pub fn run_check(cli: &Cli) -> u8 {
    match load_config(cli) {
        Ok(config) => {
            print_warnings(&config);
            print!("{}", summary(cli, &config));
            EXIT_OK
        }
        Err(code) => code,
    }
}

/// The human summary of what `sersync` would run with this command line and file.
pub fn summary(cli: &Cli, config: &Config) -> String {
    let mut out = String::new();
    let n = config.warnings.len();
    let s = if n == 1 { "" } else { "s" };
    let _ = writeln!(out, "{}: valid ({n} warning{s})", config.path.display());
    if let Some(kind) = cli.plugin {
        let _ = writeln!(out, "mode: plugin {} alone (-m), no rsync", kind.name());
    } else {
        let first = if cli.full_sync_first {
            ", full sync of every root first (-r)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "mode: sync with {} worker threads{first}",
            cli.n_workers
        );
    }
    for root in &config.roots {
        let _ = writeln!(out, "root {}", root.path.display());
        for remote in &root.remotes {
            let _ = writeln!(out, "  -> {}", describe(remote));
            let [small, big, full] = rsync_argv_preview(config, root, remote);
            let _ = writeln!(
                out,
                "     changes:   {small}   (up to 512 KiB of paths, one argument each)"
            );
            let _ = writeln!(
                out,
                "     more:      {big}   (paths NUL-separated on stdin)"
            );
            let _ = writeln!(out, "     full sync: {full}   (excluded paths on stdin)");
        }
    }
    let warm = WarmPolicy::new(config.rsync.warm, config.rsync.timeout);
    if warm.enabled && cli.plugin.is_none() {
        let _ = writeln!(
            out,
            "warm: one rsync client waits per remote (one daemon connection and one process each), replaced after {} idle",
            duration(warm.idle)
        );
    } else {
        let _ = writeln!(out, "warm: off");
    }
    if let Some(line) = ssh_sharing(cli, config) {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "events: {}", events(config));
    let _ = match config.watch_backend {
        crate::config::WatchBackend::Inotify => writeln!(out, "watch: inotify"),
        crate::config::WatchBackend::Fanotify => writeln!(
            out,
            "watch: fanotify (one mark per filesystem; needs root and Linux 5.17, else inotify)"
        ),
    };
    if config.filter.is_empty() {
        let _ = writeln!(out, "filter: off");
    } else {
        let list: Vec<&str> = config.filter.patterns().collect();
        let _ = writeln!(out, "filter: exclude regexes {}", list.join("  "));
    }
    match &config.crontab {
        None => {
            let _ = writeln!(out, "crontab: off");
        }
        Some(crontab) => {
            let globs = if crontab.excludes.is_empty() {
                "none".to_owned()
            } else {
                crontab.excludes.join("  ")
            };
            let every = duration(crontab.interval);
            let _ = writeln!(
                out,
                "crontab: full sync every {every}, exclude globs: {globs}"
            );
        }
    }
    // With -m nothing is pushed, so nothing can fail and be journaled.
    if cli.plugin.is_none() {
        let every = duration(config.fail_log.retry_max);
        let _ = writeln!(
            out,
            "faillog: {} (failed pushes retried at least every {every})",
            config.fail_log.path.display()
        );
    }
    plugins(&mut out, cli, config);
    let status = &config.host;
    if status.start {
        let _ = writeln!(out, "status: http://{}:{}/status", status.ip, status.port);
    } else {
        let _ = writeln!(out, "status: off");
    }
    out
}

/// What `push::share` will do for the ssh remotes; `None` without any.
fn ssh_sharing(cli: &Cli, config: &Config) -> Option<String> {
    let any_ssh = config
        .roots
        .iter()
        .flat_map(|r| &r.remotes)
        .any(|r| matches!(r, Remote::Ssh { .. }));
    if !any_ssh || cli.plugin.is_some() {
        return None;
    }
    Some(if !config.rsync.share_ssh {
        "ssh: every rsync connects on its own (<ssh shareConnection=\"false\">)".to_owned()
    } else if share::ssh_words(&config.rsync).is_none() {
        "ssh: every rsync connects on its own (the -e of <commonParams> is not an ssh command)"
            .to_owned()
    } else {
        format!(
            "ssh: one shared connection per ssh destination (its socket in a private directory made at start, shown below as {})",
            share::preview_dir().display()
        )
    })
}

fn describe(remote: &Remote) -> String {
    match remote {
        Remote::Daemon {
            host,
            module,
            port: None,
        } => format!("rsync daemon {host}, module {module}"),
        Remote::Daemon {
            host,
            module,
            port: Some(port),
        } => format!("rsync daemon {host}, module {module}, port {port} (<remote port>)"),
        Remote::Ssh { host, path } => format!("ssh {host}, path {path}"),
        Remote::Local { path } => format!("local directory {}", path.display()),
    }
}

/// The exact rsync command lines the engine runs for one remote, built by the function
/// the push workers use (`push::invocation`): a batch whose paths are arguments (shown
/// as `./PATH`), a batch too big for that (paths on stdin) and a full sync. The password
/// file's path may appear; its content never does.
fn rsync_argv_preview(config: &Config, root: &RootConfig, remote: &Remote) -> [String; 3] {
    use crate::job::{Entry, JobKind, Op};
    use crate::push::{describe, invocation};
    let delete = config.inotify.delete;
    let entry = |rel: &str| Entry {
        rel: rel.into(),
        op: Op::Update,
        is_dir: false,
    };
    let small = JobKind::Batch {
        entries: vec![entry("PATH")],
    };
    // Enough path bytes to pass the argument budget, as the engine sees such a batch.
    let name = "p".repeat(4096);
    let big = JobKind::Batch {
        entries: (0..=crate::push::rsync::ARGV_BUDGET / name.len())
            .map(|_| entry(&name))
            .collect(),
    };
    let full = JobKind::Full {
        reason: "check",
        extra_excludes: config
            .crontab
            .as_ref()
            .map(|c| c.excludes.clone())
            .unwrap_or_default(),
    };
    // The -e that runs use once the shared ssh connections are started.
    let mut rsync = config.rsync.clone();
    if rsync.share_ssh {
        rsync.ssh_control_dir = Some(share::preview_dir());
    }
    [small, big, full].map(|kind| {
        let run = invocation(&rsync, &root.path, remote, delete, &kind, &[]);
        describe(&config.rsync.binary, &run)
    })
}

fn events(config: &Config) -> String {
    let t = &config.inotify;
    let all = [
        (t.delete, "delete"),
        (t.create_folder, "createFolder"),
        (t.create_file, "createFile"),
        (t.close_write, "closeWrite"),
        (t.move_from, "moveFrom"),
        (t.move_to, "moveTo"),
        (t.attrib, "attrib"),
        (t.modify, "modify"),
    ];
    let on: Vec<&str> = all
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| *name)
        .collect();
    if on.is_empty() {
        "none".to_owned()
    } else {
        on.join(" ")
    }
}

fn plugins(out: &mut String, cli: &Cli, config: &Config) {
    let running: Vec<PluginKind> = match cli.plugin {
        Some(kind) => vec![kind],
        None => config.plugins.clone(),
    };
    if running.is_empty() {
        let _ = writeln!(out, "plugins: none enabled");
    } else {
        let names: Vec<&str> = running.iter().map(|k| k.name()).collect();
        let _ = writeln!(out, "plugins: {}", names.join(" "));
    }
    let state = |kind| {
        if running.contains(&kind) {
            ""
        } else {
            " (section only, not enabled)"
        }
    };
    if let Some(command) = &config.command {
        let mut words = command.prefix.words().to_vec();
        words.push("PATH".to_owned());
        words.extend(command.suffix.iter().cloned());
        let include = match &command.include {
            None => "every path".to_owned(),
            Some(list) => format!("{} include regexes", list.len()),
        };
        let _ = writeln!(
            out,
            "  command{}: {} (timeout {}, concurrency {}, {include}{})",
            state(PluginKind::Command),
            shell_words::join(words),
            duration(command.timeout),
            command.concurrency,
            if command.ignore_error {
                ", errors ignored"
            } else {
                ""
            },
        );
    }
    if let Some(socket) = &config.socket {
        let format = if socket.lines {
            "EVENT PATH lines"
        } else {
            "bare path per connection"
        };
        let _ = writeln!(
            out,
            "  socket{}: {} -> {}:{} ({format})",
            state(PluginKind::Socket),
            socket.root.display(),
            socket.host,
            socket.port
        );
    }
    if let Some(http) = &config.http {
        let _ = writeln!(
            out,
            "  http{}: {} -> POST {}",
            state(PluginKind::Http),
            http.root.display(),
            http.url
        );
    }
    if let Some(cdn) = &config.cdn {
        let api = match &cdn.api {
            CdnApi::ChinaCache(account) => {
                format!("chinacache {} as {}", account.endpoint, account.username)
            }
            CdnApi::Purge { .. } => "PURGE per url".to_owned(),
            CdnApi::Cloudflare { zone, .. } => format!("cloudflare zone {zone}"),
            CdnApi::Webhook { url } => format!("webhook {}", redact(url.expose())),
        };
        let regex = cdn
            .url_regex
            .as_ref()
            .map_or(String::new(), |re| format!(", regex {}", re.as_str()));
        let _ = writeln!(
            out,
            "  refreshCDN{}: {} -> {} ({api}{regex})",
            state(PluginKind::RefreshCdn),
            cdn.root.display(),
            cdn.base_url
        );
    }
}

/// `600 min`, `6 s`, `1.5 s`.
fn duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if d.subsec_nanos() == 0 && d.as_secs() % 60 == 0 && d.as_secs() > 0 {
        format!("{} min", d.as_secs() / 60)
    } else {
        format!("{secs} s")
    }
}
