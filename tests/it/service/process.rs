//! `-d`, the pid file, SIGTERM and a second signal, SIGUSR1 log reopening.

use std::fs;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sersync::faillog::FailLog;

use super::{LIMIT, Setup, Xml, is_alive, signal, stopped_daemon};
use crate::util::{tree, wait_until};

#[test]
fn detach_writes_the_daemons_pid_and_a_second_start_exits_2() {
    let setup = Setup::new();
    let mirror = setup.with_local_mirror();
    let code = setup.run_detached(&["-r"]);
    assert_eq!(code, 0, "{}{}", setup.stderr(), setup.log());
    let pid = setup.pid();
    assert!(
        is_alive(pid),
        "daemon {pid} is not running: {}",
        setup.log()
    );
    assert!(
        setup.log().contains(&format!("running (pid {pid})")),
        "{}",
        setup.log()
    );
    // Detached: its own session, cwd /, stdio on /dev/null.
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("comm")
        .1
        .split_whitespace()
        .collect();
    assert_eq!(fields[3], pid.to_string(), "session id is the daemon's pid");
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/cwd")).expect("cwd"),
        std::path::Path::new("/")
    );
    for fd in 0..3 {
        let target = fs::read_link(format!("/proc/{pid}/fd/{fd}")).expect("fd");
        assert_eq!(target, std::path::Path::new("/dev/null"), "fd {fd}");
    }
    wait_until("startup full sync", LIMIT, || {
        tree::diff(&setup.src, &mirror).is_none()
    });

    for extra in [&["-d"][..], &[][..]] {
        let mut command = setup.command(extra);
        let output = command.output().expect("second start");
        assert_eq!(output.status.code(), Some(2), "{extra:?}");
        let stderr = setup.stderr();
        let expected = format!("sersync is already running as pid {pid}");
        assert!(stderr.contains(&expected), "{extra:?}: {stderr}");
    }
    assert_eq!(setup.pid(), pid, "the pid file is untouched");

    signal(pid, "TERM");
    wait_until("daemon exits", LIMIT, || !is_alive(pid));
    assert!(!setup.pidfile.exists(), "pid file removed on exit");
    assert!(setup.log().contains("stopped;"), "{}", setup.log());
}

#[test]
fn a_stale_pid_file_is_replaced_with_a_warning() {
    let setup = Setup::new();
    let (remote, _) = setup.local_remote("mirror");
    setup.write_config(&Xml {
        remotes: vec![remote],
        ..Xml::default()
    });
    fs::create_dir_all(setup.pidfile.parent().expect("dir")).expect("dir");
    fs::write(&setup.pidfile, "4194999\n").expect("stale pid file");
    let mut running = setup.start(&[]);
    assert_eq!(setup.pid(), running.pid());
    assert!(
        setup
            .log()
            .contains("stale pid file (held \"4194999\"), replaced"),
        "{}",
        setup.log()
    );
    signal(running.pid(), "TERM");
    assert_eq!(running.wait_exit(), 0);
    assert!(!setup.pidfile.exists());
}

#[test]
fn sigterm_journals_pending_work_and_a_restart_without_r_converges() {
    let setup = Setup::new();
    let mut daemon = stopped_daemon(&setup.dir.path().join("mirror"));
    for i in 0..40 {
        setup.write(&format!("d{}/f{i}.txt", i % 4), &format!("file {i}"));
    }
    setup.write_config(&Xml {
        remotes: vec![Setup::daemon_remote()],
        daemon: Some((daemon.port, daemon.password_file.clone())),
        status: true,
        ..Xml::default()
    });
    let mut running = setup.start(&["-r", "-n", "2"]);
    wait_until("the failed full sync journaled", LIMIT, || {
        fs::read_to_string(&setup.journal)
            .is_ok_and(|text| text.lines().any(|l| l.starts_with("F ")))
    });
    signal(running.pid(), "TERM");
    assert_eq!(running.wait_exit(), 0, "{}", setup.log());
    assert!(!setup.pidfile.exists());
    let journal = FailLog::open(&setup.journal).expect("journal is valid");
    assert!(!journal.is_empty(), "unpushed work is journaled");
    drop(journal);

    daemon.restart();
    let mut running = setup.start(&[]);
    wait_until("mirror converges after restart", LIMIT, || {
        tree::diff(&setup.src, &daemon.module_root).is_none()
    });
    wait_until("journal drained", LIMIT, || {
        setup.status()["journal"]["entries"] == 0
    });
    signal(running.pid(), "TERM");
    assert_eq!(running.wait_exit(), 0);
    assert!(FailLog::open(&setup.journal).expect("journal").is_empty());
}

#[test]
fn sigterm_lets_a_running_full_sync_finish() {
    let setup = Setup::new();
    let (remote, mirror) = setup.local_remote("mirror");
    // 3 MiB of noise at 1000 KiB/s: the startup full sync runs about three seconds.
    let noise: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for i in 0..3 {
        fs::write(
            setup.src.join(format!("big{i}")),
            &noise[(i << 20)..((i + 1) << 20)],
        )
        .expect("write");
    }
    setup.write_config(&Xml {
        remotes: vec![remote],
        params: Some("-artu --bwlimit=1000"),
        ..Xml::default()
    });
    let mut running = setup.start(&["-r"]);
    wait_until("rsync started writing", LIMIT, || {
        fs::read_dir(&mirror).is_ok_and(|mut d| d.next().is_some())
    });
    signal(running.pid(), "TERM");
    assert_eq!(running.wait_exit(), 0, "{}", setup.log());
    let log = setup.log();
    let stopping = log.find("stopping").expect("stopping logged");
    let done = log
        .find("full sync (startup) done")
        .expect("the full sync finished");
    assert!(stopping < done, "the sync finished after the signal: {log}");
    assert!(
        tree::diff(&setup.src, &mirror).is_none(),
        "mirror complete: {log}"
    );
    assert!(FailLog::open(&setup.journal).expect("journal").is_empty());
}

#[test]
fn paths_follow_flags_then_config_then_defaults() {
    use sersync::cli::Cli;
    use sersync::daemon::{Paths, pidfile};

    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = crate::util::base_config(dir.path(), Vec::new());
    let foreground = Cli::default();
    let none = Paths {
        pidfile: None,
        logfile: None,
    };
    assert_eq!(Paths::resolve(&foreground, &config), none);
    let detached = Cli {
        detach: true,
        ..Cli::default()
    };
    let paths = Paths::resolve(&detached, &config);
    let default_pid = pidfile::default_path();
    let default_log = if pidfile::process_uid() == 0 {
        std::path::PathBuf::from("/var/log/sersync.log")
    } else {
        default_pid.with_extension("log")
    };
    assert_eq!(
        paths,
        Paths {
            pidfile: Some(default_pid),
            logfile: Some(default_log)
        }
    );
    config.pidfile = Some("/run/from-config.pid".into());
    config.log.path = Some("/var/log/from-config.log".into());
    let from_config = Paths {
        pidfile: Some("/run/from-config.pid".into()),
        logfile: Some("/var/log/from-config.log".into()),
    };
    assert_eq!(Paths::resolve(&foreground, &config), from_config);
    let flags = Cli {
        pidfile: Some("rel.pid".into()),
        logfile: Some("/tmp/flag.log".into()),
        ..detached
    };
    let cwd = std::env::current_dir().expect("cwd");
    let expected = Paths {
        pidfile: Some(cwd.join("rel.pid")),
        logfile: Some("/tmp/flag.log".into()),
    };
    assert_eq!(Paths::resolve(&flags, &config), expected);
}

#[test]
fn a_second_signal_exits_at_once_leaving_a_valid_journal() {
    // A "daemon" that accepts and never answers keeps the startup full sync running.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let connected = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&connected);
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            seen.store(true, Ordering::SeqCst);
            held.push(stream);
        }
    });
    let setup = Setup::new();
    setup.write("a.txt", "a");
    let password = setup.dir.path().join("password");
    fs::write(&password, "x\n").expect("password");
    fs::set_permissions(
        &password,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    setup.write_config(&Xml {
        remotes: vec![Setup::daemon_remote()],
        daemon: Some((port, password)),
        ..Xml::default()
    });
    let mut running = setup.start(&["-r"]);
    wait_until("rsync connected", LIMIT, || {
        connected.load(Ordering::SeqCst)
    });
    signal(running.pid(), "TERM");
    setup.wait_log("stopping (a second signal exits at once)", 1);
    signal(running.pid(), "TERM");
    assert_eq!(running.wait_exit(), 1, "{}", setup.log());
    assert!(
        setup.log().contains("second signal: exiting now"),
        "{}",
        setup.log()
    );
    assert!(!setup.pidfile.exists());
    FailLog::open(&setup.journal).expect("journal is valid");
}

#[test]
fn sigusr1_reopens_the_log_file_after_it_was_moved() {
    let setup = Setup::new();
    let (remote, _) = setup.local_remote("mirror");
    setup.write_config(&Xml {
        remotes: vec![remote],
        ..Xml::default()
    });
    assert_eq!(setup.run_detached(&[]), 0, "{}", setup.stderr());
    let pid = setup.pid();
    setup.wait_log("running (pid", 1);
    let rotated = setup.dir.path().join("sersync.log.1");
    fs::rename(&setup.logfile, &rotated).expect("mv log");
    signal(pid, "USR1");
    setup.wait_log("log file reopened", 1);
    let old = fs::read_to_string(&rotated).expect("rotated log");
    assert!(
        old.contains("running (pid") && !old.contains("reopened"),
        "{old}"
    );
    signal(pid, "TERM");
    wait_until("daemon exits", LIMIT, || !is_alive(pid));
    assert!(setup.log().contains("stopped;"), "{}", setup.log());
    assert!(
        !fs::read_to_string(&rotated)
            .expect("rotated")
            .contains("stopped;")
    );
}
