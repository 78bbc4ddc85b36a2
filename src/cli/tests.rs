//! Unit tests of `parse_from`: every flag, the short clusters sersync 2.5 users type,
//! and every usage error.

use std::ffi::OsString;
use std::num::NonZeroUsize;
use std::path::PathBuf;

use super::*;

fn parse(args: &[&str]) -> Result<Command, UsageError> {
    parse_from(args.iter().map(OsString::from))
}

fn run(args: &[&str]) -> Cli {
    match parse(args) {
        Ok(Command::Run(cli)) => cli,
        other => panic!("{args:?}: expected Run, got {other:?}"),
    }
}

fn error(args: &[&str]) -> String {
    match parse(args) {
        Err(err) => err.to_string(),
        Ok(command) => panic!("{args:?}: expected an error, got {command:?}"),
    }
}

fn workers(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("test count is not zero")
}

#[test]
fn no_arguments_means_defaults() {
    let cli = run(&[]);
    assert_eq!(cli, Cli::default());
    assert_eq!(cli.config_path, PathBuf::from("./confxml.xml"));
    assert_eq!(cli.n_workers, workers(10));
    assert_eq!(
        cli.parse_options(),
        ParseOptions {
            standalone_plugin: None
        }
    );
}

#[test]
fn sersync_clusters_work() {
    let expected = Cli {
        detach: true,
        full_sync_first: true,
        config_path: PathBuf::from("conf.xml"),
        ..Cli::default()
    };
    assert_eq!(run(&["-dro", "conf.xml"]), expected);
    assert_eq!(run(&["-d", "-r", "-o", "conf.xml"]), expected);
    assert_eq!(run(&["-rdoconf.xml"]), expected);
    let cli = run(&["-n", "8", "-o", "abc.xml", "-r", "-d"]);
    assert_eq!(
        (cli.n_workers, cli.config_path.as_path()),
        (workers(8), "abc.xml".as_ref())
    );
    assert!(cli.detach && cli.full_sync_first);
    assert_eq!(run(&["-n8"]).n_workers, workers(8));
    assert_eq!(run(&["-dn", "3"]).n_workers, workers(3));
    assert_eq!(run(&["-oFILE"]).config_path, PathBuf::from("FILE"));
    assert_eq!(
        run(&["-o", "a.xml", "-o", "b.xml"]).config_path,
        PathBuf::from("b.xml"),
        "last wins"
    );
}

#[test]
fn plugin_names_are_case_insensitive() {
    for (name, kind) in [
        ("command", PluginKind::Command),
        ("socket", PluginKind::Socket),
        ("http", PluginKind::Http),
        ("refreshCDN", PluginKind::RefreshCdn),
        ("REFRESHCDN", PluginKind::RefreshCdn),
        ("Command", PluginKind::Command),
    ] {
        let cli = run(&["-d", "-m", name]);
        assert_eq!(cli.plugin, Some(kind));
        assert_eq!(cli.parse_options().standalone_plugin, Some(kind));
    }
    assert_eq!(run(&["-msocket"]).plugin, Some(PluginKind::Socket));
}

#[test]
fn long_options() {
    let cli = match parse(&["--check", "-o", "x.xml", "-m", "socket"]) {
        Ok(Command::Check(cli)) => cli,
        other => panic!("expected Check, got {other:?}"),
    };
    assert_eq!(
        (cli.config_path, cli.plugin),
        (PathBuf::from("x.xml"), Some(PluginKind::Socket))
    );
    assert!(matches!(parse(&["--status"]), Ok(Command::Status(_))));
    let cli = run(&["--pidfile", "/run/s.pid", "--logfile=/var/log/s.log"]);
    assert_eq!(cli.pidfile, Some(PathBuf::from("/run/s.pid")));
    assert_eq!(cli.logfile, Some(PathBuf::from("/var/log/s.log")));
}

#[test]
fn help_and_version_win_when_seen() {
    for args in [
        &["-h"][..],
        &["--help"],
        &["-d", "-h"],
        &["-dh"],
        &["-h", "-x"],
        &["-h", "-n", "0"],
    ] {
        assert_eq!(parse(args), Ok(Command::Help), "{args:?}");
    }
    assert_eq!(parse(&["-V"]), Ok(Command::Version));
    assert_eq!(parse(&["--version"]), Ok(Command::Version));
    assert_eq!(
        error(&["-x", "-h"]),
        "unknown option -x (try sersync -h)",
        "getopt order"
    );
    assert!(
        error(&["-n", "0", "-h"]).starts_with("-n '0'"),
        "getopt order"
    );
}

#[test]
fn help_lists_every_flag() {
    for flag in [
        "-d",
        "-r",
        "-o FILE",
        "-n NUM",
        "-m PLUGIN",
        "-m command",
        "-m socket",
        "-m http",
        "-m refreshCDN",
        "--check",
        "--status",
        "--pidfile",
        "--logfile",
        "-h, --help",
        "-V, --version",
    ] {
        assert!(HELP.contains(flag), "help lacks {flag}");
    }
}

#[test]
fn bad_worker_counts_are_usage_errors() {
    let expected =
        |v: &str| format!("-n '{v}': expected a number of worker threads from 1 to 1024");
    for value in [
        "0",
        "-1",
        "ten",
        "8x",
        "",
        "1025",
        "99999999999999999999999",
    ] {
        let message = error(&["-n", value]);
        if value.is_empty() {
            assert_eq!(message, "-n: missing value");
        } else {
            assert_eq!(message, expected(value));
        }
    }
    assert_eq!(run(&["-n", "1024"]).n_workers, workers(1024));
}

#[test]
fn other_usage_errors() {
    assert_eq!(
        error(&["-m", "ftp"]),
        "-m 'ftp': unknown plugin (expected command, socket, http or refreshCDN)"
    );
    assert_eq!(error(&["-x"]), "unknown option -x (try sersync -h)");
    assert_eq!(
        error(&["--daemon"]),
        "unknown option --daemon (try sersync -h)"
    );
    assert_eq!(error(&["-o"]), "-o: missing value");
    assert_eq!(error(&["-dro"]), "-o: missing value");
    assert_eq!(error(&["-m"]), "-m: missing value");
    assert_eq!(error(&["-n"]), "-n: missing value");
    assert_eq!(error(&["--pidfile"]), "--pidfile: missing value");
    assert_eq!(
        error(&["conf.xml"]),
        "unexpected argument 'conf.xml' (try sersync -h)"
    );
    assert_eq!(
        error(&["--check", "--status"]),
        "--check and --status cannot be combined"
    );
    assert!(error(&["--check=yes"]).contains("--check"));
}
