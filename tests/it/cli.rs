//! The `sersync` binary's command line: help, version, `--check` on the shipped files,
//! the sersync 2.5 flag clusters, and every usage error (one line, exit 2).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::config::sersync;

const DEMO_SRC: &str = "/var/tmp/sersync-demo/src";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .display()
        .to_string()
}

/// A copy of the stock sersync 2.5 file whose only change is a watch path that exists.
fn stock_copy(tmp: &Path) -> String {
    let src = tmp.join("tongbu");
    fs::create_dir_all(&src).expect("watch dir");
    let stock = fs::read_to_string(repo("conf/confxml.sersync-2.5.xml")).expect("stock file");
    let copy = tmp.join("confxml.xml");
    fs::write(
        &copy,
        stock.replace("/opt/tongbu", &src.display().to_string()),
    )
    .expect("write copy");
    copy.display().to_string()
}

#[track_caller]
fn assert_usage_error(args: &[&str], message: &str) {
    let output = sersync(args);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
    assert_eq!(stderr, format!("sersync: {message}\n"), "{args:?}");
    assert!(output.stdout.is_empty(), "{args:?}");
}

#[test]
fn help_lists_every_flag_and_exits_0() {
    for flag in ["-h", "--help"] {
        let output = sersync(&[flag]);
        assert_eq!(output.status.code(), Some(0));
        let stdout = text(&output.stdout);
        for word in [
            "-d",
            "-r",
            "-o FILE",
            "-n NUM",
            "-m command",
            "-m socket",
            "-m http",
            "-m refreshCDN",
            "--check",
            "--status",
            "--pidfile",
            "--logfile",
            "--version",
        ] {
            assert!(stdout.contains(word), "help lacks {word}: {stdout}");
        }
        assert!(output.stderr.is_empty());
    }
}

#[test]
fn version() {
    for flag in ["-V", "--version"] {
        let output = sersync(&[flag]);
        assert_eq!(output.status.code(), Some(0));
        assert_eq!(
            text(&output.stdout),
            format!("sersync {}\n", env!("CARGO_PKG_VERSION"))
        );
    }
}

#[test]
fn bad_worker_counts() {
    let message = |v: &str| format!("-n '{v}': expected a number of worker threads from 1 to 1024");
    for value in ["0", "-1", "abc", "2000"] {
        assert_usage_error(&["-n", value, "--check"], &message(value));
    }
    assert_usage_error(&["-n0"], &message("0"));
    assert_usage_error(&["-n"], "-n: missing value");
}

#[test]
fn other_usage_errors() {
    assert_usage_error(
        &["-m", "ftp"],
        "-m 'ftp': unknown plugin (expected command, socket, http or refreshCDN)",
    );
    assert_usage_error(&["-x"], "unknown option -x (try sersync -h)");
    assert_usage_error(&["-dx"], "unknown option -x (try sersync -h)");
    assert_usage_error(
        &["--frobnicate"],
        "unknown option --frobnicate (try sersync -h)",
    );
    assert_usage_error(&["-o"], "-o: missing value");
    assert_usage_error(&["-dro"], "-o: missing value");
    assert_usage_error(&["-m"], "-m: missing value");
    assert_usage_error(&["--pidfile"], "--pidfile: missing value");
    assert_usage_error(&["--logfile"], "--logfile: missing value");
    assert_usage_error(
        &["-o", "a.xml", "b.xml"],
        "unexpected argument 'b.xml' (try sersync -h)",
    );
    assert_usage_error(
        &["--check", "--status"],
        "--check and --status cannot be combined",
    );
}

#[test]
fn check_accepts_the_shipped_default() {
    fs::create_dir_all(DEMO_SRC).expect("demo source dir");
    let output = sersync(&["--check", "-o", &repo("conf/confxml.xml")]);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "no warnings expected: {stderr}");
    for line in [
        "mode: sync with 10 worker threads",
        "root /var/tmp/sersync-demo/src",
        "  -> local directory /var/tmp/sersync-demo/mirror",
        "full sync: rsync -artz --recursive --delete --from0 '--exclude-from=-' '--modify-window=-1' '--info=progress2' /var/tmp/sersync-demo/src/ /var/tmp/sersync-demo/mirror/",
        "changes:   cd /var/tmp/sersync-demo/src && rsync -artz --no-recursive --dirs --relative --ignore-times --delete-missing-args --force -- ./PATH /var/tmp/sersync-demo/mirror/",
        "events: delete createFolder closeWrite moveFrom moveTo",
        "watch: inotify",
        "faillog: /var/tmp/sersync-demo/faillog",
    ] {
        assert!(stdout.contains(line), "summary lacks {line:?}:\n{stdout}");
    }
}

#[test]
fn check_accepts_the_stock_file_once_its_watch_dir_exists() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let copy = stock_copy(tmp.path());
    let output = sersync(&["--check", "-o", &copy]);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stdout.contains("--delete-missing-args --force '--sockopts=TCP_NODELAY'")
            && stdout.contains(" 127.0.0.1::tongbu1/"),
        "{stdout}"
    );
    assert!(
        stdout.contains("socket (section only, not enabled)"),
        "{stdout}"
    );
    assert!(
        stderr.contains(":60:13: <localpath watch=\"/data0/htdocs/cms.xoyo.com/site\">"),
        "{stderr}"
    );

    // The untouched stock file watches /opt/tongbu: an error unless that exists here.
    let output = sersync(&["--check", "-o", &repo("conf/confxml.sersync-2.5.xml")]);
    let expected = if Path::new("/opt/tongbu").is_dir() {
        0
    } else {
        2
    };
    assert_eq!(
        output.status.code(),
        Some(expected),
        "{}",
        text(&output.stderr)
    );
    if expected == 2 {
        assert!(text(&output.stderr).contains("confxml.sersync-2.5.xml:24:13: <localpath watch=\"/opt/tongbu\">: directory does not exist"));
    }
}

/// `<remote port>` (an extension) shows in `--check` and reaches rsync as `--port`; a bad
/// one is a config error at its line:col, exit 2.
#[test]
fn check_shows_a_remote_port_and_rejects_a_bad_one() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let copy = stock_copy(tmp.path());
    let stock = fs::read_to_string(&copy).expect("copy");
    let with_port = |port: &str| {
        let edited = stock.replace(
            "<remote ip=\"127.0.0.1\" name=\"tongbu1\"/>",
            &format!("<remote ip=\"127.0.0.1\" name=\"tongbu1\" port=\"{port}\"/>"),
        );
        assert_ne!(edited, stock, "the stock file's remote line moved");
        fs::write(&copy, edited).expect("write");
    };
    with_port("8731");
    let output = sersync(&["--check", "-o", &copy]);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stdout.contains("rsync daemon 127.0.0.1, module tongbu1, port 8731 (<remote port>)")
            && stdout.contains("'--port=8731'")
            && !stdout.contains("--port=874"),
        "{stdout}"
    );
    with_port("http");
    let output = sersync(&["--check", "-o", &copy]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "confxml.xml:25:44: <remote port=\"http\">: not a whole number from 1 to 65535"
        ),
        "{stderr}"
    );
}

#[test]
fn check_with_sersync_flag_clusters() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let copy = stock_copy(tmp.path());
    for args in [
        vec!["--check", "-dro", copy.as_str()],
        vec!["-n", "8", "-o", copy.as_str(), "-r", "-d", "--check"],
        vec!["--check", "-n8", "-rdo", copy.as_str()],
    ] {
        let output = sersync(&args);
        let stdout = text(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&output.stderr)
        );
        assert!(
            stdout.contains("full sync of every root first (-r)"),
            "{args:?}: {stdout}"
        );
    }
    let output = sersync(&["-n", "8", "-o", &copy, "-r", "-d", "--check"]);
    assert!(text(&output.stdout).contains("mode: sync with 8 worker threads"));
    let output = sersync(&[&format!("-o{copy}"), "--check"]);
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn check_with_a_standalone_plugin() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let copy = stock_copy(tmp.path());
    let output = sersync(&["--check", "-m", "socket", "-o", &copy]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("mode: plugin socket alone (-m), no rsync"),
        "{stdout}"
    );
    assert!(stdout.contains("plugins: socket"), "{stdout}");

    let output = sersync(&["--check", "-m", "HTTP", "-o", &copy]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains(
        ":2:1: plugin http is selected with -m but there is no <plugin name=\"http\"> section"
    ));

    let output = sersync(&["--check", "-m", "refreshCDN", "-o", &copy]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "the CDN watch dir does not exist"
    );
    assert!(text(&output.stderr).contains(
        ":60:13: <localpath watch=\"/data0/htdocs/cms.xoyo.com/site\">: directory does not exist"
    ));
}

#[test]
fn unreadable_or_invalid_config_is_exit_2_in_every_mode() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let missing = tmp.path().join("nope.xml").display().to_string();
    for args in [
        vec!["--check", "-o", missing.as_str()],
        vec!["-o", missing.as_str()],
        vec!["-d", "-r", "-o", missing.as_str()],
    ] {
        let output = sersync(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert_eq!(
            text(&output.stderr),
            format!("sersync: {missing}: cannot read: No such file or directory (os error 2)\n")
        );
    }
    let bad = tmp.path().join("bad.xml");
    fs::write(&bad, "<head>\n<sersync>\n").expect("write");
    let bad = bad.display().to_string();
    let output = sersync(&["-o", &bad]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).starts_with(&format!("{bad}:3:1: malformed xml")));
    for (file, why) in [
        ("/dev/zero", "larger than 16 MiB, not a configuration file"),
        (env!("CARGO_MANIFEST_DIR"), "is a directory"),
    ] {
        let output = sersync(&["--check", "-o", file]);
        assert_eq!(output.status.code(), Some(2), "{file}");
        assert_eq!(
            text(&output.stderr),
            format!("sersync: {file}: cannot read: {why}\n")
        );
    }
    let default = sersync_in(tmp.path(), &["--check"]);
    assert_eq!(
        default.status.code(),
        Some(2),
        "./confxml.xml is the default and is missing"
    );
    assert!(text(&default.stderr).contains("./confxml.xml: cannot read"));
}

fn sersync_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sersync"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run sersync")
}

/// sersync 2.5 raised `fs.inotify.max_user_watches` and `max_queued_events` at every
/// start. Runs the binary the whole way (`-h`, `--check`, then a foreground daemon that
/// syncs, pushes a change and stops) under `strace`, and fails on any open of those files
/// for writing; the values are also compared, under the lock that the tests which lower
/// them for a while take, so their change is never mistaken for ours.
#[test]
fn inotify_sysctls_are_never_written() {
    use crate::service::{LIMIT, Setup, signal};
    use crate::util::{missing_prerequisite, tree, wait_until};

    let _sysctls = crate::util::INOTIFY_SYSCTLS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if Command::new("strace").arg("-V").output().is_err() {
        missing_prerequisite("strace is not installed (scripts/test installs it)");
        return;
    }
    let sysctls: Vec<PathBuf> = ["max_user_watches", "max_queued_events"]
        .iter()
        .map(|name| Path::new("/proc/sys/fs/inotify").join(name))
        .collect();
    let read_all = || -> Vec<String> {
        sysctls
            .iter()
            .map(|p| fs::read_to_string(p).unwrap_or_default())
            .collect()
    };
    let before = read_all();
    let setup = Setup::new();
    let mirror = setup.with_local_mirror();
    let trace = setup.dir.path().join("strace.txt");
    let traced = |extra: &[&str]| {
        let command = setup.command(extra);
        let program = command.get_program().to_owned();
        let args: Vec<_> = command.get_args().map(ToOwned::to_owned).collect();
        let mut strace = Command::new("strace");
        strace
            .args(["-f", "-qq", "-e", "trace=open,openat,openat2", "-o"])
            .arg(&trace)
            .arg(program)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        strace
    };
    let mut writes = Vec::new();
    let mut check_trace = |what: &str| {
        let text = fs::read_to_string(&trace).unwrap_or_default();
        assert!(
            text.contains("openat("),
            "{what}: strace recorded nothing:\n{text}"
        );
        writes.extend(
            text.lines()
                .filter(|l| l.contains("/proc/sys/fs/inotify/"))
                .filter(|l| l.contains("O_WRONLY") || l.contains("O_RDWR"))
                .map(|l| format!("{what}: {l}")),
        );
    };
    for args in [&["-h"][..], &["--check"][..]] {
        let status = traced(args).status().expect("run strace");
        assert!(status.success(), "sersync {args:?} under strace: {status}");
        check_trace(&format!("sersync {args:?}"));
    }
    // The daemon path: start, full sync, a watched change, a graceful stop.
    let mut child = traced(&["-r"]).spawn().expect("spawn strace sersync -r");
    wait_until("sersync running under strace", LIMIT, || {
        setup.log().contains(" running (pid ")
    });
    setup.write("b.txt", "b");
    wait_until("a.txt and b.txt mirrored", LIMIT, || {
        tree::diff(&setup.src, &mirror).is_none()
    });
    signal(setup.pid(), "TERM");
    let status = child.wait().expect("wait for strace");
    assert!(
        status.success(),
        "sersync -r under strace: {status}\n{}",
        setup.log()
    );
    check_trace("sersync -r");
    assert!(
        writes.is_empty(),
        "inotify sysctls opened for writing:\n{writes:#?}"
    );
    assert_eq!(before, read_all(), "inotify sysctls changed");
}

/// A config in `dir` mirroring `dir/src` to `remote` (the inside of `<localpath>`), with
/// `rsync` the inside of `<rsync>`.
fn newcomer_config(dir: &Path, remote: &str, rsync: &str) -> String {
    fs::create_dir_all(dir.join("src")).expect("src");
    let path = dir.join("confxml.xml");
    let xml = format!(
        "<head><sersync><localpath watch=\"{src}\">{remote}</localpath><rsync>{rsync}</rsync>\
         <failLog path=\"{dir}/faillog\"/></sersync></head>",
        src = dir.join("src").display(),
        dir = dir.display(),
    );
    fs::write(&path, xml).expect("write config");
    path.display().to_string()
}

#[test]
fn rsync_missing_is_one_line_naming_the_fix() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let local = format!("<remote path=\"{}/mirror\"/>", tmp.path().display());
    let config = newcomer_config(tmp.path(), &local, "");
    let empty = tmp.path().join("empty-path");
    fs::create_dir(&empty).expect("empty dir");
    for args in [vec!["--check", "-o", &config], vec!["-r", "-o", &config]] {
        let output = Command::new(env!("CARGO_BIN_EXE_sersync"))
            .args(&args)
            .env("PATH", &empty)
            .output()
            .expect("run sersync");
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&format!("{config}:1:"))
                && first.ends_with(": rsync: not found in PATH, install it (apt-get install rsync) or give its absolute path in <rsync><binary path=\"…\"/>"),
            "{stderr}"
        );
    }
    // -m runs no rsync: not needed then.
    let command = fs::read_to_string(&config).expect("config").replace(
        "</head>",
        "<plugin name=\"command\"><param prefix=\"/bin/true\"/></plugin></head>",
    );
    fs::write(&config, command).expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_sersync"))
        .args(["--check", "-m", "command", "-o", &config])
        .env("PATH", &empty)
        .output()
        .expect("run sersync");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
}

#[test]
fn missing_watch_directory_names_the_mkdir() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let config = newcomer_config(tmp.path(), "<remote ip=\"10.0.0.2\" name=\"www\"/>", "");
    fs::remove_dir(tmp.path().join("src")).expect("remove src");
    let output = sersync(&["--check", "-o", &config]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let src = tmp.path().join("src").display().to_string();
    assert_eq!(
        stderr.lines().next().unwrap_or_default(),
        format!(
            "{config}:1:27: <localpath watch=\"{src}\">: directory does not exist, create it (mkdir -p {src}) or correct the path"
        )
    );
}

#[test]
fn password_file_readable_by_others_names_the_chmod() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let pass = tmp.path().join("rsync.pas");
    fs::write(&pass, "secret\n").expect("password");
    fs::set_permissions(&pass, std::os::unix::fs::PermissionsExt::from_mode(0o644)).expect("chmod");
    let auth = format!(
        "<auth start=\"true\" users=\"u\" passwordfile=\"{}\"/>",
        pass.display()
    );
    let config = newcomer_config(tmp.path(), "<remote ip=\"10.0.0.2\" name=\"www\"/>", &auth);
    let output = sersync(&["-o", &config]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr
            .lines()
            .next()
            .unwrap_or_default()
            .ends_with(&format!(
                "<auth passwordfile=\"{}\">: accessible by others (mode 644), run chmod 600 on it",
                pass.display()
            )),
        "{stderr}"
    );
}

#[test]
fn daemon_refusing_auth_is_logged_with_the_fix() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let daemon = crate::util::RsyncDaemon::start(&tmp.path().join("mirror"));
    let pass = tmp.path().join("wrong.pas");
    fs::write(&pass, "not the password\n").expect("password");
    fs::set_permissions(&pass, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let rsync = format!(
        "<auth start=\"true\" users=\"{}\" passwordfile=\"{}\"/><userDefinedPort start=\"true\" port=\"{}\"/>",
        crate::util::rsyncd::USER,
        pass.display(),
        daemon.port
    );
    let remote = format!(
        "<remote ip=\"127.0.0.1\" name=\"{}\"/>",
        crate::util::rsyncd::MODULE
    );
    let config = newcomer_config(tmp.path(), &remote, &rsync);
    let log = tmp.path().join("stderr");
    let _running = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_sersync"))
            .args(["-r", "-o", &config])
            .stderr(fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start sersync"),
    );
    let expected = "(fix: the <auth passwordfile> must hold the password that the daemon's secrets file gives <auth users>); configuration error";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !fs::read_to_string(&log).is_ok_and(|l| {
        l.lines().any(|line| {
            line.contains("@ERROR: auth failed on module mirror") && line.contains(expected)
        })
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "no line with {expected:?} within 30 s:\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A child process killed and reaped when the test ends, passed or failed.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn check_of_a_standalone_command_has_no_fail_log_line() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let copy = stock_copy(tmp.path());
    let output = sersync(&["--check", "-m", "command", "-o", &copy]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(
        stdout.contains("mode: plugin command alone (-m), no rsync"),
        "{stdout}"
    );
    assert!(!stdout.contains("faillog"), "{stdout}");
    let output = sersync(&["--check", "-o", &copy]);
    assert!(text(&output.stdout).contains("faillog: /tmp/rsync_fail_log.sh"));
}

#[test]
fn relative_fail_log_is_resolved_against_the_working_directory() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let copy = stock_copy(tmp.path());
    let text_of = fs::read_to_string(&copy).expect("copy");
    fs::write(
        &copy,
        text_of.replace("/tmp/rsync_fail_log.sh", "log/rsync_fail_log.sh"),
    )
    .expect("write");
    let output = sersync_in(tmp.path(), &["--check", "-o", &copy]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let resolved = tmp.path().join("log/rsync_fail_log.sh");
    assert!(
        stdout.contains(&format!("faillog: {} (", resolved.display())),
        "{stdout}"
    );
    assert!(text(&output.stderr).contains(&format!(
        "relative path, resolved against the working directory to {}",
        resolved.display()
    )));
}
