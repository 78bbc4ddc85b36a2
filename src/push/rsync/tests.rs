use std::path::PathBuf;

use super::*;
use crate::config::Auth;

fn config(params: &[&str]) -> RsyncConfig {
    RsyncConfig {
        common_params: params.iter().map(|s| (*s).to_owned()).collect(),
        auth: Some(Auth {
            user: "tester".into(),
            password_file: PathBuf::from("/etc/rsync.pas"),
        }),
        port: Some(874),
        timeout: Some(100),
        ssh: false,
        binary: PathBuf::from("rsync"),
        warm: crate::config::WarmConfig::default(),
        share_ssh: true,
        ssh_control_dir: None,
    }
}

fn strings(args: &[OsString]) -> Vec<String> {
    args.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn daemon_batch_argv() {
    let remote = Remote::Daemon {
        host: "127.0.0.1".into(),
        module: "tongbu1".into(),
        port: None,
    };
    let args = args(
        &config(&["-artuz"]),
        Path::new("/opt/tongbu"),
        &remote,
        RunKind::Batch { delete: true },
        &[],
    );
    assert_eq!(
        strings(&args),
        [
            "-artuz",
            "--no-recursive",
            "--ignore-times",
            "--from0",
            "--files-from=-",
            "--delete-missing-args",
            "--force",
            "--timeout=100",
            "--port=874",
            "--password-file=/etc/rsync.pas",
            "--sockopts=TCP_NODELAY",
            "/opt/tongbu/",
            "tester@127.0.0.1::tongbu1/",
        ]
    );
}

#[test]
fn subtree_argv_runs_in_the_root_with_one_relative_source() {
    let daemon = Remote::Daemon {
        host: "127.0.0.1".into(),
        module: "tongbu1".into(),
        port: None,
    };
    let local = Remote::Local {
        path: PathBuf::from("/mnt/mirror"),
    };
    let rel = Path::new("-logs dir");
    let kind = RunKind::Subtree { rel };
    let tail = |args: &[OsString]| strings(args)[1..].to_vec();
    assert_eq!(
        tail(&args(
            &config(&["-artz"]),
            Path::new("/opt/tongbu"),
            &daemon,
            kind,
            &[]
        )),
        [
            "--recursive",
            "--relative",
            "--delete",
            "--force",
            "--delete-missing-args",
            "--from0",
            "--exclude-from=-",
            "--timeout=100",
            "--port=874",
            "--password-file=/etc/rsync.pas",
            "--sockopts=TCP_NODELAY",
            "--",
            "./-logs dir",
            "tester@127.0.0.1::tongbu1/",
        ]
    );
    let local_args = args(
        &config(&["-artz"]),
        Path::new("/opt/tongbu"),
        &local,
        kind,
        &[],
    );
    assert_eq!(
        strings(&local_args)[local_args.len() - 3..],
        ["--", "./-logs dir", "/mnt/mirror/"]
    );
}

#[test]
fn batch_without_delete_ignores_missing_paths() {
    let remote = Remote::Local {
        path: PathBuf::from("/srv/mirror"),
    };
    let mut rsync = config(&["-a"]);
    rsync.auth = None;
    let args = strings(&args(
        &rsync,
        Path::new("/w"),
        &remote,
        RunKind::Batch { delete: false },
        &[],
    ));
    assert!(args.contains(&"--ignore-missing-args".to_owned()));
    assert!(!args.iter().any(|a| a.starts_with("--delete")));
    assert!(
        !args
            .iter()
            .any(|a| a.starts_with("--sockopts") || a.starts_with("--password"))
    );
    assert_eq!(args.last().map(String::as_str), Some("/srv/mirror/"));
}

#[test]
fn remote_port_wins_over_user_defined_port() {
    let remote = |port| Remote::Daemon {
        host: "h".into(),
        module: "m".into(),
        port,
    };
    let mut rsync = config(&["-a"]);
    let ports = |rsync: &RsyncConfig, port| {
        strings(&args(
            rsync,
            Path::new("/w"),
            &remote(port),
            RunKind::Full { delete: false },
            &[],
        ))
        .into_iter()
        .filter(|a| a.starts_with("--port"))
        .collect::<Vec<_>>()
    };
    assert_eq!(ports(&rsync, None), ["--port=874"]);
    assert_eq!(ports(&rsync, Some(8731)), ["--port=8731"]);
    rsync.port = None;
    assert_eq!(ports(&rsync, Some(8731)), ["--port=8731"]);
    assert!(ports(&rsync, None).is_empty());
}

#[test]
fn sockopts_from_common_params_win() {
    let remote = Remote::Daemon {
        host: "h".into(),
        module: "m".into(),
        port: None,
    };
    let args = strings(&args(
        &config(&["-a", "--sockopts=SO_SNDBUF=65536"]),
        Path::new("/w"),
        &remote,
        RunKind::Full { delete: false },
        &[],
    ));
    assert_eq!(
        args.iter().filter(|a| a.starts_with("--sockopts")).count(),
        1
    );
}

#[test]
fn ssh_remote_gets_rsh_unless_given() {
    let remote = Remote::Ssh {
        host: "backup@10.0.0.2".into(),
        path: "/data/backup/".into(),
    };
    let mut rsync = config(&["-artuz"]);
    rsync.auth = None;
    rsync.ssh = true;
    let plain = strings(&args(
        &rsync,
        Path::new("/w"),
        &remote,
        RunKind::Full { delete: true },
        &[],
    ));
    assert!(plain.windows(2).any(|w| w == ["-e", "ssh"]));
    assert_eq!(
        plain.last().map(String::as_str),
        Some("backup@10.0.0.2:/data/backup/")
    );
    rsync.common_params = vec!["-az".into(), "-e".into(), "ssh -p 2222".into()];
    let custom = strings(&args(
        &rsync,
        Path::new("/w"),
        &remote,
        RunKind::Full { delete: true },
        &[],
    ));
    assert_eq!(custom.iter().filter(|a| *a == "-e").count(), 1);
    assert!(custom.contains(&"ssh -p 2222".to_owned()));
}

#[test]
fn full_sync_argv_has_recursion_delete_and_excludes() {
    let remote = Remote::Daemon {
        host: "h".into(),
        module: "m".into(),
        port: None,
    };
    let args = strings(&args(
        &config(&["-artuz"]),
        Path::new("/w"),
        &remote,
        RunKind::Full { delete: true },
        &["*.php".into(), "info/*".into()],
    ));
    for wanted in [
        "--recursive",
        "--delete",
        "--exclude-from=-",
        "--from0",
        "--exclude=*.php",
        "--exclude=info/*",
        NANOSECOND_WINDOW,
    ] {
        assert!(
            args.contains(&wanted.to_owned()),
            "{wanted} missing from {args:?}"
        );
    }
    let position = |arg: &str| args.iter().position(|a| a == arg);
    assert!(
        position("--from0") < position("--exclude-from=-"),
        "rsync applies --from0 only to lists after it"
    );
}

#[test]
fn a_receiver_refusing_the_nanosecond_window_is_recognised() {
    // (reason, old receiver)
    #[rustfmt::skip]
    let table = [
        ("rsync exited with code 1: rsync: -@-1: unknown option | rsync error: syntax or usage error (code 1)", true),
        ("rsync exited with code 12: rsync: --modify-window=-1: unknown option", true),
        ("rsync exited with code 4: rsync: The server is configured to refuse --modify-window (-@) | rsync error: requested action not supported (code 4)", true),
        ("rsync exited with code 4: rsync: The server is configured to refuse --delete", false),
        ("rsync exited with code 1: rsync: --frobnicate: unknown option", false),
        ("rsync exited with code 5: @ERROR: auth failed on module m", false),
        ("rsync exited with code 23: rsync: [sender] link_stat \"/w/-@\" failed", false),
    ];
    for (reason, old) in table {
        let failure = PushFailure {
            code: Some(1),
            reason: reason.to_owned(),
        };
        assert_eq!(refuses_nanosecond_window(&failure), old, "{reason}");
    }
}

#[test]
fn batches_never_get_the_nanosecond_window() {
    let remote = Remote::Local {
        path: PathBuf::from("/m"),
    };
    let entries = vec![Entry {
        rel: PathBuf::from("a").into(),
        op: Op::Update,
        is_dir: false,
    }];
    let small = strings(
        &batch_argv(&config(&["-a"]), &remote, true, &entries)
            .expect("fits")
            .to_vec(),
    );
    let big = strings(&args(
        &config(&["-a"]),
        Path::new("/w"),
        &remote,
        RunKind::Batch { delete: true },
        &[],
    ));
    for argv in [small, big] {
        assert!(argv.contains(&"--ignore-times".to_owned()), "{argv:?}");
        assert!(!argv.contains(&NANOSECOND_WINDOW.to_owned()), "{argv:?}");
    }
}

#[test]
fn exit_code_table() {
    // (code, stderr, disposition kind, may have left a receiver temp file)
    let table: &[(i32, &str, &str, bool)] = &[
        (0, "", "done", false),
        (24, "some files vanished", "partial", false),
        (
            23,
            "some files/attrs were not transferred",
            "partial",
            false,
        ),
        (1, "syntax or usage error", "config", false),
        (2, "protocol incompatibility", "config", false),
        (
            2,
            "file has vanished: \"/w/a\" | ABORTING due to invalid path from sender: a/b | rsync error: protocol incompatibility (code 2)",
            "down",
            true,
        ),
        (
            3,
            "errors selecting input/output files, dirs",
            "config",
            false,
        ),
        (4, "requested action not supported", "config", false),
        (5, "@ERROR: auth failed on module m", "config", false),
        (5, "@ERROR: Unknown module 'x'", "config", false),
        (
            5,
            "@ERROR: max connections (4) reached -- try again later",
            "down",
            false,
        ),
        // The same abort as the sender sees it when the connection drops first.
        (
            10,
            "file has vanished: \"/w/d\" | rsync: [sender] write error: Connection reset by peer (104) | rsync error: error in socket IO (code 10)",
            "down",
            true,
        ),
        (
            10,
            "rsync: failed to connect to 127.0.0.1 (127.0.0.1): Connection refused (111) | rsync error: error in socket IO (code 10)",
            "down",
            false,
        ),
        (11, "error in file IO", "down", false),
        (12, "error in rsync protocol data stream", "down", true),
        (
            12,
            "ssh: connect to host h port 22: Connection refused | rsync: connection unexpectedly closed (0 bytes received so far) [sender]",
            "down",
            false,
        ),
        (14, "error in IPC code", "down", false),
        (20, "received SIGINT", "down", false),
        (30, "timeout in data send/receive", "down", false),
        (35, "timeout waiting for daemon connection", "down", false),
        (255, "ssh: connect to host", "down", false),
    ];
    for (code, stderr, expected, temp) in table {
        let disposition = classify(*code, stderr);
        let kind = match &disposition {
            Disposition::Done => "done",
            Disposition::Partial { fates, .. } => {
                assert!(fates.is_empty(), "the worker resolves fates");
                "partial"
            }
            Disposition::RemoteDown(_) => "down",
            Disposition::ConfigError(_) => "config",
        };
        assert_eq!(kind, *expected, "code {code} ({stderr})");
        let leaves = disposition.failure().is_some_and(may_leave_temp_files);
        assert_eq!(leaves, *temp, "temp files after code {code} ({stderr})");
        if let Some(failure) = disposition.failure() {
            assert_eq!(failure.code, Some(*code));
        }
    }
}

#[test]
fn temp_cleanup_deletes_only_temp_names_of_the_batch_in_its_directories() {
    let remote = Remote::Daemon {
        host: "127.0.0.1".into(),
        module: "m".into(),
        port: None,
    };
    let paths = ["in3638", "a/b/.hidden", "a/b/-x", "w*l[d]?", "a/sub"].map(Path::new);
    let Some(cleanup) = temp_cleanup(&config(&["-artuz"]), &remote, paths) else {
        panic!("a cleanup for a non-empty batch");
    };
    assert_eq!(
        strings(&cleanup.args.to_vec()),
        [
            "-artuz",
            "--no-recursive",
            "--dirs",
            "--existing",
            "--ignore-existing",
            "--relative",
            "--delete",
            "--ignore-missing-args",
            "--from0",
            "--filter=. -",
            "--timeout=100",
            "--port=874",
            "--password-file=/etc/rsync.pas",
            "--sockopts=TCP_NODELAY",
            "--",
            "./",
            "./a/",
            "./a/b/",
            "tester@127.0.0.1::m/",
        ]
    );
    let rules: Vec<String> = cleanup
        .stdin
        .split(|b| *b == 0)
        .filter(|r| !r.is_empty())
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect();
    assert_eq!(
        rules,
        [
            "S /a/",
            "S /a/b/",
            "R /.in3638.??????",
            "R /a/b/.hidden.??????",
            "R /a/b/.-x.??????",
            "R /.w\\*l\\[d]\\?.??????",
            "R /a/.sub.??????",
            "P *",
        ]
    );
    assert_eq!(temp_cleanup(&config(&["-a"]), &remote, []), None);
}

#[test]
fn temp_name_of_a_long_name_is_a_prefix() {
    let long = "n".repeat(300);
    let pattern =
        String::from_utf8(temp_name_pattern(Path::new("d"), long.as_bytes())).unwrap_or_default();
    assert_eq!(pattern, format!("/d/.{}*.??????", "n".repeat(238)));
    let whole = "n".repeat(246);
    let pattern =
        String::from_utf8(temp_name_pattern(Path::new(""), whole.as_bytes())).unwrap_or_default();
    assert_eq!(pattern, format!("/.{whole}.??????"));
}

#[test]
fn reported_paths_of_a_whole_stderr() {
    let stderr = b"rsync: [sender] link_stat \"/r/p/child\" failed: Not a directory (20)\n\
        file has vanished: \"/r/q\"\n\
        rsync error: some files/attrs were not transferred (code 23)\n\
        file has vanished: \"/r/no-newline\"";
    assert_eq!(
        reported_paths(stderr),
        Some(
            ["/r/p/child", "/r/q", "/r/no-newline"]
                .map(PathBuf::from)
                .to_vec()
        )
    );
    assert_eq!(reported_paths(b""), Some(Vec::new()), "nothing named");
    let mut many = Vec::new();
    for i in 0..=MAX_REPORTED {
        many.extend_from_slice(format!("file has vanished: \"/r/{i}\"\n").as_bytes());
    }
    assert_eq!(reported_paths(&many), None, "too many to keep");
}

#[test]
fn quoted_paths_of_rsync_messages() {
    let table: &[(&[u8], Option<&[u8]>)] = &[
        (
            b"rsync: [sender] link_stat \"/srv/www/p/child\" failed: Not a directory (20)",
            Some(b"/srv/www/p/child"),
        ),
        (
            b"file has vanished: \"/srv/www/q\"",
            Some(b"/srv/www/q"),
        ),
        (
            b"rsync: [sender] send_files failed to open \"/r/caf\\#303\\#251 \\#377\": Permission denied (13)",
            Some(b"/r/caf\xc3\xa9 \xff"),
        ),
        (b"rsync error: some files/attrs were not transferred (code 23)", None),
        (b"\"\"", None),
        // A delete the receiver could not make names its path bare.
        (
            b"rsync: [generator] delete_file: unlink(n32) failed: Permission denied (13)",
            Some(b"n32"),
        ),
        (
            b"rsync: [generator] delete_file: rmdir(a b/(x) y) failed: Directory not empty (39)",
            Some(b"a b/(x) y"),
        ),
        (
            b"rsync: [generator] delete_file: unlink(caf\\#303\\#251) failed: Permission denied (13)",
            Some(b"caf\xc3\xa9"),
        ),
        (b"delete_file: unlink() failed", None),
    ];
    for (line, expected) in table {
        let got = quoted_path(line);
        let expected = expected.map(|b| PathBuf::from(OsStr::from_bytes(b)));
        assert_eq!(got, expected, "{}", String::from_utf8_lossy(line));
    }
}

#[test]
fn exact_pattern_escapes_only_wild_names() {
    assert_eq!(
        exact_pattern(Path::new("a/b.gz")),
        OsString::from("/a/b.gz")
    );
    assert_eq!(exact_pattern(Path::new("a\\b")), OsString::from("/a\\b"));
    assert_eq!(
        exact_pattern(Path::new("x[1]*?\\y")),
        OsString::from("/x\\[1]\\*\\?\\\\y")
    );
}

#[test]
fn batch_stdin_is_nul_separated_and_byte_exact() {
    use std::os::unix::ffi::OsStrExt as _;
    let odd = PathBuf::from(OsStr::from_bytes(b"new\nline\xff"));
    let entries = vec![
        Entry {
            rel: odd.into(),
            op: Op::Update,
            is_dir: false,
        },
        Entry {
            rel: PathBuf::from("-rf").into(),
            op: Op::Delete,
            is_dir: false,
        },
    ];
    assert_eq!(batch_stdin(&entries), b"new\nline\xff\0-rf\0".to_vec());
    assert!(has_deletes(&entries));
}

#[test]
fn describe_quotes_and_hides_nothing_secret() {
    let args = vec![
        OsString::from("--password-file=/etc/rsync.pas"),
        OsString::from("a b"),
    ];
    assert_eq!(
        describe(Path::new("rsync"), &args),
        "rsync '--password-file=/etc/rsync.pas' 'a b'"
    );
}

#[test]
fn run_reports_spawn_failure_as_retryable() {
    let finished = run(Path::new("/nonexistent/rsync"), Argv::new(), b"", None);
    let Disposition::RemoteDown(failure) = finished.disposition else {
        panic!("spawn failure is a remote-down retry: {finished:?}")
    };
    assert_eq!(failure.code, None);
}

#[test]
fn run_kills_after_limit() {
    let failure = run(
        Path::new("sleep"),
        ["5"].into_iter().collect(),
        b"",
        Some(Duration::from_millis(200)),
    )
    .disposition;
    let Disposition::RemoteDown(failure) = failure else {
        panic!("a killed run is a remote-down retry: {failure:?}")
    };
    assert!(failure.reason.contains("killed"), "{}", failure.reason);
}

#[test]
fn batch_argv_passes_paths_as_dot_slash_arguments_after_double_dash() {
    let remote = Remote::Daemon {
        host: "127.0.0.1".into(),
        module: "m".into(),
        port: None,
    };
    let entries = vec![
        Entry {
            rel: PathBuf::from("-rf").into(),
            op: Op::Update,
            is_dir: false,
        },
        Entry {
            rel: PathBuf::from("host:path/x y").into(),
            op: Op::Delete,
            is_dir: true,
        },
    ];
    let args = batch_argv(&config(&["-artuz"]), &remote, true, &entries).expect("fits");
    assert_eq!(
        strings(&args.to_vec()),
        [
            "-artuz",
            "--no-recursive",
            "--dirs",
            "--relative",
            "--ignore-times",
            "--delete-missing-args",
            "--force",
            "--timeout=100",
            "--port=874",
            "--password-file=/etc/rsync.pas",
            "--sockopts=TCP_NODELAY",
            "--",
            "./-rf",
            "./host:path/x y",
            "tester@127.0.0.1::m/",
        ]
    );
    let keep = batch_argv(&config(&["-a"]), &remote, false, &entries).expect("fits");
    assert!(strings(&keep.to_vec()).contains(&"--ignore-missing-args".to_owned()));
}

#[test]
fn batch_argv_falls_back_to_stdin_when_too_big_or_empty() {
    let remote = Remote::Local {
        path: PathBuf::from("/mirror"),
    };
    assert!(batch_argv(&config(&["-a"]), &remote, true, &[]).is_none());
    let long = Entry {
        rel: PathBuf::from("x".repeat(4000)).into(),
        op: Op::Update,
        is_dir: false,
    };
    let many = vec![long; ARGV_BUDGET / 4000 + 1];
    assert!(batch_argv(&config(&["-a"]), &remote, true, &many).is_none());
    assert!(batch_argv(&config(&["-a"]), &remote, true, &many[..10]).is_some());
}
