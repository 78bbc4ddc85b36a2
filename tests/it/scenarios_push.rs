//! Operator patterns that used to leave the mirror stale or wrong, on the push side
//! (issue 10, items 2, 3, 7 and 9): every case runs against a real `rsync --daemon` with
//! auth and a local-directory remote at once, with the configuration parsed from XML as
//! the binary does, and ends with a byte-exact comparison (content, type, link target,
//! mode) of both mirrors while the engine is idle.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sersync::coalesce::{Journal, MemoryJournal};
use sersync::config::{Config, ParseOptions};
use sersync::job::Work;
use sersync::pipeline::{Options, Pipeline};

use crate::util::{RsyncDaemon, SYNC_LIMIT, rsyncd, tree, wait_until};

/// A source, a daemon mirror and a local mirror, configured from XML.
struct Case {
    dir: tempfile::TempDir,
    src: PathBuf,
    local: PathBuf,
    daemon: RsyncDaemon,
    journal: Arc<MemoryJournal>,
}

impl Case {
    fn new() -> Case {
        Case::with_daemon("")
    }

    /// With `module_extra` in the daemon's module section.
    fn with_daemon(module_extra: &str) -> Case {
        let _ = env_logger::builder().is_test(true).try_init();
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        fs::create_dir_all(&src).expect("src");
        let local = dir.path().join("local");
        let daemon = RsyncDaemon::start_with(&dir.path().join("daemon"), module_extra);
        Case {
            dir,
            src,
            local,
            daemon,
            journal: Arc::new(MemoryJournal::default()),
        }
    }

    fn mirrors(&self) -> [&Path; 2] {
        [&self.daemon.module_root, &self.local]
    }

    /// The configuration the binary would read (stock `<inotify>` toggles, by default),
    /// with `params` as `commonParams` and `rsync_extra` inside `<rsync>`.
    fn config(&self, params: &str, rsync_extra: &str) -> Config {
        let watch_element = crate::util::watch_element();
        let xml = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<head version="2.5">
{watch_element}    <sersync>
        <localpath watch="{src}">
            <remote ip="127.0.0.1" name="{module}"/>
            <remote path="{local}"/>
        </localpath>
        <rsync>
            <commonParams params="{params}"/>
            <auth start="true" users="{user}" passwordfile="{password}"/>
            <userDefinedPort start="true" port="{port}"/>
            {rsync_extra}
        </rsync>
        <failLog path="{journal}" timeToExecute="0.05"/>
    </sersync>
</head>
"#,
            src = self.src.display(),
            module = rsyncd::MODULE,
            local = self.local.display(),
            user = rsyncd::USER,
            password = self.daemon.password_file.display(),
            port = self.daemon.port,
            journal = self.dir.path().join("faillog").display(),
        );
        let path = self.dir.path().join("sersync.xml");
        fs::write(&path, xml).expect("config");
        Config::load_with(&path, &ParseOptions::default()).expect("valid config")
    }

    fn start(&self, config: &Config, full_sync_first: bool, grace: Duration) -> Pipeline {
        let options = Options {
            n_workers: 4,
            full_sync_first,
            shutdown_grace: grace,
            ..Options::default()
        };
        let journal: Arc<dyn Journal> = self.journal.clone();
        Pipeline::start(config, &options, journal).expect("pipeline starts")
    }

    /// Waits until both mirrors equal the source byte-exact and the engine is idle with
    /// an empty journal, for 300 ms in a row.
    #[track_caller]
    fn converge(&self, pipeline: &Pipeline, what: &str) {
        let deadline = Instant::now() + SYNC_LIMIT;
        let mut quiet_since: Option<Instant> = None;
        loop {
            let diffs: Vec<String> = self
                .mirrors()
                .iter()
                .filter_map(|m| tree::diff(&self.src, m).map(|d| format!("{}: {d}", m.display())))
                .collect();
            if diffs.is_empty() && pipeline.is_idle() && self.journal.is_empty() {
                if quiet_since.get_or_insert_with(Instant::now).elapsed()
                    >= Duration::from_millis(300)
                {
                    return;
                }
            } else {
                quiet_since = None;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not converged within {SYNC_LIMIT:?}: {diffs:?}, journal {:?}",
                self.journal.pending()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn src(&self, rel: &str) -> PathBuf {
        self.src.join(rel)
    }
}

/// Writes `content` to `path` and sets its mtime to `mtime` before closing it, as
/// `cp -p`, `tar x` and `unzip` do (the close-write event comes after the old mtime).
fn write_with_mtime(path: &Path, content: &[u8], mtime: SystemTime) {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("parents");
    }
    let mut file = fs::File::create(path).expect("create");
    file.write_all(content).expect("write");
    file.set_modified(mtime).expect("set mtime");
}

fn days_ago(n: u64) -> SystemTime {
    SystemTime::now() - Duration::from_secs(n * 86_400)
}

/// Item 2: with the stock `-artuz`, files that arrive with an older mtime than the
/// mirror's copy used to be skipped for ever (`--update`). Each pattern, then a restart
/// with `-r` over a mirror whose copy is newer and different.
#[test]
fn older_mtimes_replace_newer_mirror_files_with_stock_params() {
    let case = Case::new();
    let config = case.config("-artuz", "");
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("-u (--update) removed")),
        "{:?}",
        config.warnings
    );
    let pipeline = case.start(&config, false, Duration::from_secs(5));
    for name in ["tar", "cp", "mv", "a", "b", "c"] {
        fs::write(case.src(name), format!("{name}: fresh\n")).expect("write");
    }
    case.converge(&pipeline, "fresh files");
    // tar x / unzip / cp -p: older content, older mtime, over a newer file.
    write_with_mtime(&case.src("tar"), b"tar: from the archive\n", days_ago(30));
    write_with_mtime(&case.src("cp"), b"cp -p\n", days_ago(2));
    case.converge(&pipeline, "tar x and cp -p of older files");
    // mv of an older file over a newer one.
    write_with_mtime(&case.src("old.tmp"), b"mv: the older one\n", days_ago(5));
    case.converge(&pipeline, "older file created");
    fs::rename(case.src("old.tmp"), case.src("mv")).expect("mv");
    case.converge(&pipeline, "mv of an older file over a newer one");
    // Three files with different ages rotated through a temporary name.
    write_with_mtime(&case.src("a"), b"a: 3 days\n", days_ago(3));
    write_with_mtime(&case.src("b"), b"b: 2 days\n", days_ago(2));
    write_with_mtime(&case.src("c"), b"c: 1 day\n", days_ago(1));
    case.converge(&pipeline, "three aged files");
    fs::rename(case.src("a"), case.src("tmp")).expect("a -> tmp");
    fs::rename(case.src("b"), case.src("a")).expect("b -> a");
    fs::rename(case.src("c"), case.src("b")).expect("c -> b");
    fs::rename(case.src("tmp"), case.src("c")).expect("tmp -> c");
    case.converge(&pipeline, "rotation through a temporary name");
    pipeline.shutdown().expect("shutdown");

    // A full sync (-r) repairs a mirror whose copy is newer and different.
    for mirror in case.mirrors() {
        write_with_mtime(&mirror.join("tar"), b"newer but wrong\n", SystemTime::now());
    }
    let pipeline = case.start(&config, true, Duration::from_secs(5));
    case.converge(&pipeline, "-r over newer, wrong mirror copies");
    pipeline.shutdown().expect("shutdown");
}

/// Item 2, the opt-in: `<update start="true"/>` keeps `-u`, so a newer mirror copy wins.
#[test]
fn update_opt_in_keeps_newer_mirror_files() {
    let case = Case::new();
    let config = case.config("-artuz", r#"<update start="true"/>"#);
    assert_eq!(config.rsync.common_params, ["-artuz"]);
    let pipeline = case.start(&config, false, Duration::from_secs(5));
    fs::write(case.src("f"), b"fresh\n").expect("write");
    case.converge(&pipeline, "fresh file");
    write_with_mtime(&case.src("f"), b"older\n", days_ago(3));
    write_with_mtime(&case.src("sentinel"), b"after f\n", SystemTime::now());
    for mirror in case.mirrors() {
        wait_until("sentinel on the mirror", SYNC_LIMIT, || {
            mirror.join("sentinel").exists() && pipeline.is_idle()
        });
        assert_eq!(fs::read(mirror.join("f")).expect("mirror f"), b"fresh\n");
    }
    pipeline.shutdown().expect("shutdown");
}

/// Item 3: a same-size rewrite within the same second as the mirror's copy survives a
/// full sync that compares whole seconds; `--modify-window=-1` compares nanoseconds.
#[test]
fn full_sync_sees_a_same_size_rewrite_within_the_same_second() {
    let case = Case::new();
    let config = case.config("-artuz", "");
    let second = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    write_with_mtime(
        &case.src("same"),
        b"AAAA",
        second + Duration::from_millis(700),
    );
    for mirror in case.mirrors() {
        write_with_mtime(
            &mirror.join("same"),
            b"BBBB",
            second + Duration::from_millis(200),
        );
    }
    let pipeline = case.start(&config, true, Duration::from_secs(5));
    case.converge(&pipeline, "-r after a same-second, same-size rewrite");
    pipeline.shutdown().expect("shutdown");
}

/// Item 3, the fallback: a daemon that refuses `--modify-window` (as one older than
/// rsync 3.1.3 does) still gets its full syncs, repeated without the option.
#[test]
fn full_sync_falls_back_to_whole_seconds_for_a_receiver_refusing_the_window() {
    let case = Case::with_daemon("refuse options = modify-window\n");
    let config = case.config("-artz", "");
    fs::write(case.src("f"), b"before the start\n").expect("write");
    fs::create_dir(case.src("d")).expect("mkdir");
    fs::write(case.src("d/g"), b"also\n").expect("write");
    let pipeline = case.start(&config, true, Duration::from_secs(5));
    case.converge(&pipeline, "-r against a daemon refusing --modify-window");
    pipeline.shutdown().expect("shutdown");
}

/// Item 7: a queued path whose parent became a symlink to outside the root is never sent
/// through the link; the link itself is mirrored. The path is queued in the journal (the
/// remotes failed), the directory is swapped for a symlink while sersync is stopped, and
/// the restart replays the journal.
#[test]
fn a_queued_path_below_a_new_symlink_never_sends_what_lies_outside() {
    let mut case = Case::new();
    let config = case.config("-artz", "");
    let outside = case.dir.path().join("elsewhere");
    fs::create_dir_all(&outside).expect("outside");
    fs::write(outside.join("token"), b"SECRET from outside the root\n").expect("secret");
    // Both remotes fail: the daemon is down, the local mirror path is a file.
    case.daemon_stop();
    fs::write(&case.local, b"not a directory").expect("block local mirror");
    let pipeline = case.start(&config, false, Duration::from_secs(5));
    fs::create_dir(case.src("u")).expect("mkdir u");
    fs::write(case.src("u/token"), b"x\n").expect("token");
    wait_until("u/token journaled for both remotes", SYNC_LIMIT, || {
        case.journal
            .pending()
            .iter()
            .filter(|(_, e)| matches!(e, Work::Path(e) if e.rel.as_path() == Path::new("u/token")))
            .count()
            == 2
    });
    pipeline.shutdown().expect("shutdown");
    // mv u u.0; ln -s /elsewhere u
    fs::rename(case.src("u"), case.src("u.0")).expect("mv u u.0");
    symlink(&outside, case.src("u")).expect("ln -s");
    case.daemon_restart();
    fs::remove_file(&case.local).expect("unblock local mirror");
    // No -r: only the journal brings u/token back; the watcher saw none of this.
    let pipeline = case.start(&config, false, Duration::from_secs(5));
    for mirror in case.mirrors() {
        wait_until("u on the mirror", SYNC_LIMIT, || {
            mirror.join("u").symlink_metadata().is_ok() && case.journal.is_empty()
        });
        let meta = mirror.join("u").symlink_metadata().expect("u");
        assert!(
            meta.file_type().is_symlink(),
            "{}: u is not the symlink",
            mirror.display()
        );
        if mirror == case.local {
            // (The test daemon runs without chroot, so it strips the leading `/` of
            // absolute link targets: only the local mirror keeps the target as is.)
            assert_eq!(fs::read_link(mirror.join("u")).expect("link"), outside);
        }
        assert!(
            !contains_bytes(mirror, b"SECRET"),
            "{}: data from outside the root reached the mirror",
            mirror.display()
        );
    }
    // u.0 arrives with the next change of it; without the absolute link (see above)
    // both mirrors are then byte-exact.
    fs::write(case.src("u.0/token"), b"x again\n").expect("touch u.0");
    fs::remove_file(case.src("u")).expect("rm u");
    case.converge(&pipeline, "after the swap");
    pipeline.shutdown().expect("shutdown");
}

/// Whether any regular file under `root` (symlinks not followed) contains `needle`.
fn contains_bytes(root: &Path, needle: &[u8]) -> bool {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(read) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in read.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file()
                && fs::read(entry.path())
                    .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
            {
                return true;
            }
        }
    }
    false
}

/// Item 9: a shutdown whose grace period ends while rsync runs journals the path, then
/// stops every rsync of the run (process groups: the local receiver too) before it
/// returns; a restart converges byte-exact.
#[test]
fn shutdown_stops_every_rsync_child_and_journals_what_it_was_doing() {
    let case = Case::new();
    // 100 KiB/s: 8 MiB take over a minute on each remote.
    let slow = case.config("-artz --bwlimit=100", "");
    let pipeline = case.start(&slow, false, Duration::from_secs(1));
    let running = send_big_slowly(&case);
    let started = Instant::now();
    pipeline.shutdown().expect("shutdown");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "shutdown took {took:?} (grace 1 s, then SIGTERM, SIGKILL after 2 s)"
    );
    // Every rsync of this run is gone: the clients are reaped, their children died of
    // the signal to their group (reaped by init shortly after).
    wait_gone(&case, &running);
    let journaled: Vec<_> = case
        .journal
        .pending()
        .into_iter()
        .filter(|(_, e)| matches!(e, Work::Path(e) if e.rel.as_path() == Path::new("big")))
        .collect();
    assert_eq!(
        journaled.len(),
        2,
        "big journaled for both remotes: {:?}",
        case.journal.pending()
    );
    // A restart at full speed converges from the journal alone (no -r).
    let fast = case.config("-artz", "");
    let pipeline = case.start(&fast, false, Duration::from_secs(5));
    case.converge(&pipeline, "restart after a killed transfer");
    pipeline.shutdown().expect("shutdown");
}

/// Item 9 through the binary, as the issue saw it: SIGTERM while rsync sends a big file
/// at 100 KiB/s; after the (default, 30 s) grace period the process journals the path,
/// stops its rsync children and exits 0 with none left; a restart converges.
#[test]
fn sigterm_to_the_binary_leaves_no_rsync_behind() {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let case = Case::new();
    let log = case.dir.path().join("sersync.log");
    let spawn = |params: &str| {
        case.config(params, "");
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log");
        let err = out.try_clone().expect("log");
        let before = fs::read_to_string(&log)
            .unwrap_or_default()
            .matches(" running (pid ")
            .count();
        let child = Command::new(env!("CARGO_BIN_EXE_sersync"))
            .args(["-n", "2", "-o"])
            .arg(case.dir.path().join("sersync.xml"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn sersync");
        wait_until("sersync running", Duration::from_secs(30), || {
            fs::read_to_string(&log)
                .unwrap_or_default()
                .matches(" running (pid ")
                .count()
                > before
        });
        child
    };
    let term = |child: &mut std::process::Child| {
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("kill");
        assert!(sent.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "sersync did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut sersync = spawn("-artz --bwlimit=100");
    // 8 MiB at 100 KiB/s: about 80 s per remote, longer than the grace period.
    let running = send_big_slowly(&case);
    let status = term(&mut sersync);
    assert!(status.success(), "exit status {status:?}");
    wait_gone(&case, &running);
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("still running after") && text.contains("their paths go to the journal"),
        "the grace period did not end with rsync running: {text}"
    );
    let journal = sersync::faillog::FailLog::open(&case.dir.path().join("faillog"))
        .expect("journal")
        .pending();
    assert_eq!(
        journal.iter().filter(|e| e.rel == Path::new("big")).count(),
        2,
        "big journaled for both remotes: {journal:?}"
    );
    drop(journal);
    // The restart (full speed, no -r) pushes it from the journal.
    let mut sersync = spawn("-artz");
    for mirror in case.mirrors() {
        wait_until("big on the mirror, byte-exact", SYNC_LIMIT, || {
            tree::diff(&case.src, mirror).is_none()
        });
    }
    let status = term(&mut sersync);
    assert!(status.success(), "exit status {status:?}");
    let journal = sersync::faillog::FailLog::open(&case.dir.path().join("faillog"))
        .expect("journal")
        .pending();
    assert!(journal.is_empty(), "journal left: {journal:?}");
}

/// Writes 8 MiB of incompressible data to `big` and waits until an rsync per remote
/// sends it (under `--bwlimit=100` that takes over a minute); returns their pids.
fn send_big_slowly(case: &Case) -> Vec<String> {
    fs::write(case.src("big"), incompressible(8 * 1024 * 1024)).expect("big file");
    let ours = |pid: &str| is_ours(pid, case);
    wait_until("an rsync per remote sending big", SYNC_LIMIT, || {
        rsync_pids(&ours).len() >= 2
    });
    rsync_pids(&ours)
}

/// Waits until no rsync of `case` is left: the clients are reaped by sersync, their
/// children died of the signal to their group (and are reaped by init).
#[track_caller]
fn wait_gone(case: &Case, running: &[String]) {
    let ours = |pid: &str| is_ours(pid, case);
    wait_until(
        &format!("rsync processes {running:?} gone"),
        Duration::from_secs(10),
        || rsync_pids(&ours).is_empty(),
    );
}

/// `len` pseudo-random bytes (xorshift64): `-z` cannot shrink them below the bandwidth
/// limit's reach.
fn incompressible(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[3]
        })
        .collect()
}

/// Live (not zombie) rsync processes that `ours` accepts, by pid.
fn rsync_pids(ours: &dyn Fn(&str) -> bool) -> Vec<String> {
    let Ok(procs) = fs::read_dir("/proc") else {
        panic!("/proc is not readable: this test needs it to find rsync processes");
    };
    procs
        .flatten()
        .filter_map(|p| p.file_name().into_string().ok())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let alive = stat
                .rsplit_once(") ")
                .is_some_and(|(head, rest)| head.ends_with("(rsync") && !rest.starts_with('Z'));
            alive && ours(pid)
        })
        .collect()
}

/// Whether the process runs for `case`: its command line names the source or the local
/// mirror, or it runs in the source (a batch runs in the root with `./rel` arguments).
/// The daemon's own processes are not ours.
fn is_ours(pid: &str, case: &Case) -> bool {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if cmdline.windows(8).any(|w| w == b"--daemon") {
        return false;
    }
    let names = |path: &Path| {
        let needle = path.as_os_str().as_encoded_bytes();
        cmdline.windows(needle.len()).any(|w| w == needle)
    };
    let cwd = fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
    names(&case.src) || names(&case.local) || cwd == case.src
}

impl Case {
    fn daemon_stop(&mut self) {
        self.daemon.stop();
    }

    fn daemon_restart(&mut self) {
        self.daemon.restart();
    }
}
