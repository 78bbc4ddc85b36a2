//! Warm rsync clients (`push::warm`) against a real daemon: killed while waiting, daemon
//! restarted, `max connections = 1`, reload and shutdown. Each ends byte-exact, idle, with
//! an empty journal and no warm rsync (nor anything of its process group) left behind.
//!
//! Warm clients are found in `/proc` by their argument vector: `--files-from=-` and this
//! test's own source directory (a fresh temp dir) as the source argument.

use std::path::Path;
use std::time::Duration;

use sersync::pipeline::{Options, Pipeline};

use std::sync::Arc;

use sersync::coalesce::{Journal, MemoryJournal};

use crate::util::sshd::Sshd;
use crate::util::{Env, RsyncDaemon, SYNC_LIMIT, daemon_config, options, tree, wait_until};

/// Every process in `/proc` as `(pid, its /proc directory)`.
pub(crate) fn processes() -> Vec<(u32, std::path::PathBuf)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((pid, entry.path()))
        })
        .collect()
}

/// Pids of the warm clients (and cold files-from runs) whose source is `src`.
fn warm_pids(src: &Path) -> Vec<u32> {
    let source = format!("{}/", src.display());
    let mut out: Vec<u32> = processes()
        .into_iter()
        .filter(|(_, dir)| {
            let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.contains(&b"--files-from=-".as_slice()) && args.contains(&source.as_bytes())
        })
        .map(|(pid, _)| pid)
        .collect();
    out.sort_unstable();
    out
}

/// Processes (zombies included) whose process group is `pgid`.
pub(crate) fn group_members(pgid: u32) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|(_, dir)| {
            let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
            // `pid (comm) state ppid pgrp …`; comm may hold spaces and parentheses.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(2))
                .and_then(|g| g.parse::<u32>().ok())
                == Some(pgid)
        })
        .map(|(pid, _)| pid)
        .collect()
}

/// Waits for a warm client of `src` that is not one of `seen`, and returns its pid.
#[track_caller]
fn wait_new_warm(src: &Path, seen: &[u32]) -> u32 {
    let mut found = None;
    wait_until("a (new) warm client", SYNC_LIMIT, || {
        found = warm_pids(src).into_iter().find(|p| !seen.contains(p));
        found.is_some()
    });
    found.unwrap_or_default()
}

/// Every pid in `seen` is gone (not even a zombie) with its whole process group, and no
/// warm client of `src` is left.
#[track_caller]
fn assert_nothing_left(src: &Path, seen: &[u32]) {
    for &pid in seen {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "warm rsync {pid} is still there (or not reaped)"
        );
        assert_eq!(group_members(pid), Vec::<u32>::new(), "group of {pid}");
    }
    assert_eq!(warm_pids(src), Vec::<u32>::new(), "warm clients left");
}

/// Waits until the mirror equals the source, nothing is queued or running, and the
/// journal is empty.
#[track_caller]
fn settle(env: &Env, pipeline: &Pipeline) {
    env.wait_converged(SYNC_LIMIT);
    wait_until("idle with an empty journal", SYNC_LIMIT, || {
        pipeline.is_idle() && env.journal.is_empty()
    });
    env.wait_converged(SYNC_LIMIT);
}

fn warm_pushes(pipeline: &Pipeline) -> u64 {
    pipeline
        .metrics()
        .snapshot_targets()
        .values()
        .map(|t| t.warm_pushes)
        .sum()
}

pub(crate) fn kill(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {pid}");
}

#[test]
fn a_small_batch_uses_the_warm_client_and_a_killed_one_runs_cold() {
    let env = Env::new();
    let pipeline = env.start(&options(false));
    let first = wait_new_warm(&env.src, &[]);
    env.write("a.txt", b"warm");
    settle(&env, &pipeline);
    assert_eq!(
        warm_pushes(&pipeline),
        1,
        "the change went to the warm client"
    );

    let second = wait_new_warm(&env.src, &[first]);
    kill(second);
    env.write("b.txt", b"cold after the kill");
    settle(&env, &pipeline);
    let third = wait_new_warm(&env.src, &[first, second]);
    let failures: u64 = pipeline
        .metrics()
        .snapshot_targets()
        .values()
        .map(|t| t.failures_by_code.values().sum::<u64>())
        .sum();
    assert_eq!(failures, 0, "a dead warm client is no failure");
    pipeline.shutdown().expect("clean shutdown");
    assert_nothing_left(&env.src, &[first, second, third]);
}

#[test]
fn daemon_restarted_while_a_client_waits() {
    let mut env = Env::new();
    let pipeline = env.start(&options(false));
    let first = wait_new_warm(&env.src, &[]);
    env.daemon.restart();
    for i in 0..5 {
        env.write(format!("f{i}.txt"), format!("{i}").as_bytes());
        settle(&env, &pipeline);
    }
    let last = wait_new_warm(&env.src, &[first]);
    pipeline.shutdown().expect("clean shutdown");
    assert_nothing_left(&env.src, &[first, last]);
}

#[test]
fn max_connections_one_still_converges() {
    let mut env = Env::new();
    // Module-level `max connections` with its own lock file (not shared with other tests).
    let lock = env.dir.path().join("rsyncd.lock");
    let extra = format!("max connections = 1\nlock file = {}\n", lock.display());
    env.daemon = RsyncDaemon::start_with(&env.dir.path().join("mirror"), &extra);
    env.config = daemon_config(&env.src, &env.daemon);
    let pipeline = env.start(&options(false));
    let first = wait_new_warm(&env.src, &[]);
    let mut seen = vec![first];
    for i in 0..3 {
        env.write(format!("one{i}.txt"), b"x");
        settle(&env, &pipeline);
        seen.extend(warm_pids(&env.src));
    }
    // A burst: big batches run cold, and their remote's warm client gives its connection up.
    for i in 0..300 {
        env.write(format!("burst/{i:04}.txt"), format!("{i}").as_bytes());
    }
    settle(&env, &pipeline);
    seen.extend(warm_pids(&env.src));
    assert!(warm_pushes(&pipeline) >= 1, "warm clients were used");
    pipeline.shutdown().expect("clean shutdown");
    seen.sort_unstable();
    seen.dedup();
    assert_nothing_left(&env.src, &seen);
}

#[test]
fn reload_replaces_the_warm_clients() {
    let env = Env::new();
    // What SIGHUP does (`daemon::service`): the old pipeline stops, a new one starts on
    // the same journal.
    let old = env.start(&options(false));
    let first = wait_new_warm(&env.src, &[]);
    env.write("before.txt", b"old pipeline");
    settle(&env, &old);
    let waiting = wait_new_warm(&env.src, &[first]);
    old.shutdown().expect("clean shutdown");
    assert_nothing_left(&env.src, &[first, waiting]);

    let new = env.start(&options(false));
    let second = wait_new_warm(&env.src, &[first, waiting]);
    env.write("after.txt", b"new pipeline");
    settle(&env, &new);
    assert_eq!(warm_pushes(&new), 1);
    let third = wait_new_warm(&env.src, &[first, waiting, second]);
    new.shutdown().expect("clean shutdown");
    assert_nothing_left(&env.src, &[first, waiting, second, third]);
}

#[test]
fn shutdown_kills_and_reaps_waiting_clients() {
    let env = Env::new();
    let pipeline = env.start(&options(false));
    let first = wait_new_warm(&env.src, &[]);
    env.write("x/y.txt", b"z");
    settle(&env, &pipeline);
    let second = wait_new_warm(&env.src, &[first]);
    wait_until("warm state shown", SYNC_LIMIT, || {
        pipeline
            .metrics()
            .snapshot_targets()
            .values()
            .all(|t| t.warm_ready)
    });
    pipeline.shutdown().expect("clean shutdown");
    assert_nothing_left(&env.src, &[first, second]);
}

#[test]
fn warm_off_starts_no_client() {
    let mut env = Env::new();
    env.config.rsync.warm.start = false;
    let pipeline = env.start(&options(false));
    env.write("a.txt", b"cold");
    settle(&env, &pipeline);
    // The maintainer would have started a client within a tick of the start.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(warm_pids(&env.src), Vec::<u32>::new());
    assert_eq!(warm_pushes(&pipeline), 0);
    pipeline.shutdown().expect("clean shutdown");
}

#[test]
fn shutdown_stops_a_warm_run_that_outlives_the_grace_period() {
    let mut env = Env::new();
    // 50 KiB/s and incompressible content: a 2 MiB file takes 40 s on the warm client.
    env.config.rsync.common_params = vec!["-rlpt".into(), "--bwlimit=50".into()];
    let pipeline = env.start(&Options {
        shutdown_grace: Duration::from_secs(1),
        ..options(false)
    });
    let first = wait_new_warm(&env.src, &[]);
    let mut noise = vec![0u8; 2 << 20];
    let mut urandom = std::fs::File::open("/dev/urandom").expect("urandom");
    std::io::Read::read_exact(&mut urandom, &mut noise).expect("random bytes");
    env.write("big.bin", &noise);
    wait_until("the warm client pushes", SYNC_LIMIT, || {
        warm_pids(&env.src).contains(&first)
            && pipeline
                .metrics()
                .in_flight
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
    });
    let mut seen = warm_pids(&env.src);
    seen.push(first);
    pipeline.shutdown().expect("clean shutdown");
    assert_nothing_left(&env.src, &seen);
    assert_eq!(env.journal.len(), 1, "the cut-off path is journaled");
}

#[test]
fn ssh_remote_gets_a_warm_client_without_the_handshake_on_the_hot_path() {
    let Some(sshd) = Sshd::start() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, mirror) = (dir.path().join("src"), dir.path().join("mirror"));
    std::fs::create_dir_all(&src).expect("src");
    std::fs::create_dir_all(&mirror).expect("mirror");
    let config = sshd.config(&src, &mirror);
    let journal = Arc::new(MemoryJournal::default());
    let shared: Arc<dyn Journal> = journal.clone();
    let pipeline = Pipeline::start(&config, &options(false), shared).expect("pipeline");
    let first = wait_new_warm(&src, &[]);
    // Its ssh runs in its process group.
    wait_until("the warm client's ssh", SYNC_LIMIT, || {
        group_members(first).len() >= 2
    });
    std::fs::write(src.join("a.txt"), b"over ssh").expect("write");
    wait_until("mirrored, idle, empty journal", SYNC_LIMIT, || {
        tree::diff(&src, &mirror).is_none() && pipeline.is_idle() && journal.is_empty()
    });
    assert_eq!(
        warm_pushes(&pipeline),
        1,
        "the change went to the warm client"
    );
    let second = wait_new_warm(&src, &[first]);
    pipeline.shutdown().expect("clean shutdown");
    assert_nothing_left(&src, &[first, second]);
}

/// The reliability suite's stale temp file (churn seed 185680229477): a batch whose list
/// names a path below a directory that is missing when the sender lists it (`d/z`, a
/// delete) and then present (`d/y`, a directory moved into `d` meanwhile) makes rsync
/// 3.5.0's sender skip the implied directory `d` the second time (send_implied_dirs keeps
/// the last one it tried), and the receiver aborts ("ABORTING due to invalid path from
/// sender", generator.c recv_generator) after paths listed before it arrived. The sender
/// reads the list from stdin as it builds the file list: fed in two steps around the
/// rename, the abort is deterministic. A receiver ended mid-file leaves `.NAME.XXXXXX`:
/// planted here (whether one is left depends on how far the receiver got), the cleanup
/// must remove exactly those, send nothing, and keep every other remote name.
#[test]
fn an_aborted_run_leaves_no_receiver_temp_file() {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};

    use sersync::config::Remote;
    use sersync::push::rsync;

    let env = Env::new();
    let mirror = env.mirror().to_path_buf();
    let remote = Remote::Daemon {
        host: "127.0.0.1".into(),
        module: crate::util::rsyncd::MODULE.into(),
        port: None,
    };
    env.write("in1", b"listed before the abort");
    env.write("e/y", b"moved into d while the sender lists");
    env.write("kept/inside", b"a directory the cleanup must not send");
    // A real file named like a temp name of `d/y`: on the source and the mirror, it stays.
    env.write("e/.y.Qq1234", b"an operator's file, not rsync's");
    let mut args = rsync::args(
        &env.config.rsync,
        &env.src,
        &remote,
        rsync::RunKind::Batch { delete: true },
        &[],
    );
    args.retain(|a| a != "--ignore-times");
    let mut child = Command::new("rsync")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rsync starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stderr = child.stderr.take().expect("stderr");
    stdin
        .write_all(b"in1\0d/z\0")
        .expect("first part of the list");
    stdin.flush().expect("flush");
    // The sender tried the implied directory `d` of `d/z` once it says it vanished.
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + SYNC_LIMIT;
    while !String::from_utf8_lossy(&seen).contains("file has vanished") {
        assert!(
            std::time::Instant::now() < deadline,
            "rsync never listed d/z: {}",
            String::from_utf8_lossy(&seen)
        );
        let mut buf = [0u8; 512];
        let n = stderr.read(&mut buf).expect("read rsync's stderr");
        assert!(
            n > 0,
            "rsync ended early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    std::fs::rename(env.src.join("e"), env.src.join("d")).expect("mv e d");
    stdin.write_all(b"d/y\0").expect("rest of the list");
    drop(stdin);
    stderr.read_to_end(&mut seen).expect("rsync's stderr");
    let status = child.wait().expect("rsync ends");
    let text = String::from_utf8_lossy(&seen).into_owned();
    let code = status.code().expect("an exit code");
    assert!(
        matches!(code, 2 | 10 | 12),
        "rsync should abort (2, or 10/12 when the sender sees the drop first), got {code}: {text}"
    );
    let disposition = rsync::classify(code, &text);
    let failure = disposition.failure().expect("a failure");
    assert!(
        rsync::may_leave_temp_files(failure),
        "this abort can leave a temp file: {text}"
    );

    // What a receiver ended mid-file leaves, and remote names that must stay.
    for (rel, content) in [
        (".in1.MpAweD", &b""[..]),
        ("d/.y.Ab3dEf", b""),
        (
            ".keep.backup",
            b"remote only, like a temp name, of no batch path",
        ),
        (".in1.MpAweDx", b"one character too long for a temp name"),
        ("d/other", b"remote only"),
        ("d/.y.Qq1234", b"an operator's file, not rsync's"),
    ] {
        let path = mirror.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, content).expect("plant");
    }
    let paths = ["in1", "d/z", "d/y"].map(Path::new);
    let cleanup = rsync::temp_cleanup(&env.config.rsync, &remote, paths).expect("a cleanup run");
    let finished = rsync::run_observed(
        Path::new("rsync"),
        cleanup.args.clone(),
        &cleanup.stdin,
        Some(SYNC_LIMIT),
        None,
        Some(&env.src),
        None,
    );
    assert_eq!(
        finished.disposition,
        sersync::job::Disposition::Done,
        "cleanup: {}",
        rsync::describe(Path::new("rsync"), &cleanup.args)
    );
    let mut left: Vec<String> = Vec::new();
    for dir in [mirror.clone(), mirror.join("d")] {
        for entry in std::fs::read_dir(&dir).expect("read mirror").flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(&mirror).expect("below the mirror");
            left.push(rel.to_string_lossy().into_owned());
        }
    }
    left.sort();
    // `in1` arrived before the abort or not; nothing else may have been sent.
    left.retain(|rel| rel != "in1");
    assert_eq!(
        left,
        [
            ".in1.MpAweDx",
            ".keep.backup",
            "d",
            "d/.y.Qq1234",
            "d/other"
        ],
        "only the temp names of batch paths that the source does not hold go, nothing is sent"
    );
}
