//! Failure journal and retransmission with the real journal file (issue 4 acceptance).

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sersync::coalesce::Journal;
use sersync::config::CrontabConfig;
use sersync::faillog::FailLog;
use sersync::pipeline::Pipeline;

use crate::util::{Env, SYNC_LIMIT, options, wait_until};

fn start_with_file_journal(
    env: &Env,
    path: &std::path::Path,
    full_sync_first: bool,
) -> (Pipeline, Arc<FailLog>) {
    let journal = Arc::new(FailLog::open(path).expect("journal opens"));
    let dyn_journal: Arc<dyn Journal> = journal.clone();
    let pipeline = Pipeline::start(&env.config, &options(full_sync_first), dyn_journal)
        .expect("pipeline starts");
    (pipeline, journal)
}

#[test]
fn daemon_down_fills_a_private_journal_then_converges_within_two_retry_intervals() {
    let mut env = Env::new();
    let retry = Duration::from_secs(3); // timeToExecute="0.05"
    env.config.fail_log.retry_max = retry;
    let journal_path = env.dir.path().join("state/faillog");
    env.daemon.stop();
    let (pipeline, journal) = start_with_file_journal(&env, &journal_path, false);
    for i in 0..20 {
        env.write(format!("down/f{i}"), b"written while the daemon is down");
    }
    wait_until("journal holds every file", SYNC_LIMIT, || {
        journal
            .pending()
            .iter()
            .filter(|e| e.rel.parent() == Some(std::path::Path::new("down")))
            .count()
            == 20
    });
    let mode = std::fs::metadata(&journal_path)
        .expect("journal exists")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "journal mode {mode:o}");
    env.daemon.restart();
    let back = Instant::now();
    env.wait_converged(2 * retry + Duration::from_secs(1));
    wait_until("journal empty", 2 * retry, || journal.is_empty());
    eprintln!(
        "converged {:.2}s after the daemon came back",
        back.elapsed().as_secs_f64()
    );
    pipeline.shutdown().expect("clean shutdown");
}

#[test]
fn daemon_killed_mid_burst_converges_after_restart() {
    let mut env = Env::new();
    env.config.fail_log.retry_max = Duration::from_secs(2);
    let journal_path = env.dir.path().join("faillog");
    let (pipeline, journal) = start_with_file_journal(&env, &journal_path, false);
    for d in 0..20 {
        for f in 0..100 {
            env.write(format!("b{d}/f{f}"), &[b'x'; 512]);
        }
        if d == 5 {
            env.daemon.stop();
        }
    }
    wait_until("some failures journaled", SYNC_LIMIT, || {
        !journal.is_empty()
    });
    env.daemon.restart();
    env.wait_converged(SYNC_LIMIT);
    wait_until("journal empty", SYNC_LIMIT, || journal.is_empty());
    pipeline.shutdown().expect("clean shutdown");
}

#[test]
fn restart_without_full_sync_delivers_the_journal() {
    let env = Env::new();
    let journal_path = env.dir.path().join("faillog");
    env.write("kept/a.txt", b"a");
    env.write("kept/b b.txt", b"b");
    env.write("gone.txt", b"on the mirror only");
    std::fs::copy(env.src.join("gone.txt"), env.mirror().join("gone.txt")).expect("mirror copy");
    std::fs::remove_file(env.src.join("gone.txt")).expect("rm");
    {
        // What a previous process left behind when it was killed: only the journal.
        // The key text spelled out, not computed by the code under test.
        let key = format!("v2 daemon {} 127.0.0.1::mirror", env.src.display());
        let entries = [
            sersync::job::Entry {
                rel: "kept".into(),
                op: sersync::job::Op::Update,
                is_dir: true,
            },
            sersync::job::Entry {
                rel: "kept/a.txt".into(),
                op: sersync::job::Op::Update,
                is_dir: false,
            },
            sersync::job::Entry {
                rel: "kept/b b.txt".into(),
                op: sersync::job::Op::Update,
                is_dir: false,
            },
            sersync::job::Entry {
                rel: "gone.txt".into(),
                op: sersync::job::Op::Delete,
                is_dir: false,
            },
        ];
        let old = FailLog::open(&journal_path).expect("journal");
        let work = entries.map(sersync::job::Work::Path);
        Journal::record(&old, &key, &work, Some(10), "daemon down", "rsync …").expect("record");
    }
    let (pipeline, journal) = start_with_file_journal(&env, &journal_path, false);
    env.wait_converged(SYNC_LIMIT);
    wait_until("journal empty after replay", SYNC_LIMIT, || {
        journal.is_empty()
    });
    pipeline.shutdown().expect("clean shutdown");
}

#[test]
fn a_failed_path_deleted_since_is_not_resurrected() {
    let mut env = Env::new();
    env.config.fail_log.retry_max = Duration::from_secs(2);
    let journal_path = env.dir.path().join("faillog");
    env.write("doomed.txt", b"v1");
    std::fs::write(env.mirror().join("doomed.txt"), b"v1").expect("mirror copy");
    env.daemon.stop();
    let (pipeline, journal) = start_with_file_journal(&env, &journal_path, false);
    env.write("doomed.txt", b"v2, fails to push");
    wait_until("update journaled", SYNC_LIMIT, || {
        journal
            .pending()
            .iter()
            .any(|e| e.rel.as_path() == std::path::Path::new("doomed.txt"))
    });
    std::fs::remove_file(env.src.join("doomed.txt")).expect("rm");
    env.daemon.restart();
    wait_until("doomed.txt gone from the mirror", SYNC_LIMIT, || {
        !env.mirror().join("doomed.txt").exists()
    });
    env.wait_converged(SYNC_LIMIT);
    wait_until("journal empty", SYNC_LIMIT, || journal.is_empty());
    pipeline.shutdown().expect("clean shutdown");
}

#[test]
fn crontab_repairs_a_file_changed_behind_our_back() {
    let mut env = Env::new();
    env.config.crontab = Some(CrontabConfig {
        interval: Duration::from_secs(3),
        excludes: vec!["*.skip".into()],
    });
    env.write("page.html", b"the real page");
    env.write("never.skip", b"crontabfilter excludes me");
    let journal_path = env.dir.path().join("faillog");
    let (pipeline, _journal) = start_with_file_journal(&env, &journal_path, false);
    wait_until("first crontab run", SYNC_LIMIT, || {
        env.mirror().join("page.html").exists()
    });
    // Damage the mirror copy (older mtime, other size) without touching the source.
    let damaged = env.mirror().join("page.html");
    std::fs::write(&damaged, b"defaced").expect("deface");
    let past = std::fs::File::options()
        .write(true)
        .open(&damaged)
        .expect("open");
    past.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .expect("mtime");
    drop(past);
    wait_until("crontab repaired the mirror", SYNC_LIMIT, || {
        std::fs::read(&damaged).is_ok_and(|b| b == b"the real page")
    });
    assert!(
        !env.mirror().join("never.skip").exists(),
        "crontabfilter glob ignored"
    );
    pipeline.shutdown().expect("clean shutdown");
}

/// Where the 0.1.0 fixture's root and remotes live: its keys name these paths.
const FIXTURE_BASE: &str = "/tmp/sersync-journal-0.1.0";

/// `tests/fixtures/journal/0.1.0/faillog` (written by 0.1.0's code, never regenerated)
/// loads with today's code, its entries keep their meaning, and it drains: entries of the
/// configured daemon and local remotes are moved to the current key and pushed, the CDN
/// purges move to the CDN key, the ssh remote's entries (not configured here) are kept.
#[test]
fn a_journal_written_by_0_1_0_loads_and_drains() {
    use std::os::unix::ffi::OsStrExt;
    let base = std::path::Path::new(FIXTURE_BASE);
    let _ = std::fs::remove_dir_all(base);
    let src = base.join("src");
    let local = base.join("local");
    std::fs::create_dir_all(&src).expect("src");
    let journal_path = base.join("faillog");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/journal/0.1.0/faillog"
        ),
        &journal_path,
    )
    .expect("fixture");
    std::fs::set_permissions(&journal_path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let daemon_key = "/tmp/sersync-journal-0.1.0/src -> 127.0.0.1::mirror";
    let ssh_key = "/tmp/sersync-journal-0.1.0/src -> root@127.0.0.1:/tmp/sersync-journal-0.1.0/ssh";
    let local_key = "/tmp/sersync-journal-0.1.0/src -> /tmp/sersync-journal-0.1.0/local";
    let cdn_key = "cdn /tmp/sersync-journal-0.1.0/src";
    {
        let old = FailLog::open(&journal_path).expect("0.1.0 journal opens");
        let mut seen: Vec<(String, Vec<u8>, String, bool, u32)> = old
            .pending()
            .into_iter()
            .map(|e| {
                (
                    e.target,
                    e.rel.as_os_str().as_bytes().to_vec(),
                    e.op.to_string(),
                    e.is_dir,
                    e.attempts,
                )
            })
            .collect();
        seen.sort();
        let mut expected = Vec::new();
        for key in [daemon_key, ssh_key, local_key] {
            for (rel, op, is_dir, attempts) in [
                (&b""[..], "update", true, 1),
                (b"-rf", "update", false, 1),
                (b".", "update", false, 1),
                (b"a/b.txt", "update", false, 2),
                (b"caf\xc3\xa9 %41 \xff.bin", "update", false, 1),
                (b"dir", "update", true, 1),
                (b"gone.txt", "delete", false, 1),
                (b"old dir", "delete", true, 1),
            ] {
                expected.push((
                    key.to_owned(),
                    rel.to_vec(),
                    op.to_owned(),
                    is_dir,
                    attempts,
                ));
            }
        }
        for (rel, is_dir) in [(&b"a/b.txt"[..], false), (b"dir", true)] {
            expected.push((cdn_key.to_owned(), rel.to_vec(), "update".into(), is_dir, 1));
        }
        expected.sort();
        assert_eq!(seen, expected);
    }
    // The local tree the entries describe; what was deleted is still on the mirrors.
    let weird = std::ffi::OsStr::from_bytes(b"caf\xc3\xa9 %41 \xff.bin");
    for dir in [&src, &local] {
        std::fs::create_dir_all(dir.join("a")).expect("a");
        std::fs::create_dir_all(dir.join("dir")).expect("dir");
    }
    std::fs::write(src.join("a/b.txt"), b"b").expect("b");
    std::fs::write(src.join(weird), b"weird").expect("weird");
    std::fs::write(src.join("-rf"), b"dash").expect("dash");
    let daemon = crate::util::RsyncDaemon::start(&base.join("daemon"));
    for mirror in [&local, &daemon.module_root] {
        std::fs::create_dir_all(mirror.join("old dir/inner")).expect("old dir");
        std::fs::write(mirror.join("gone.txt"), b"stale").expect("gone");
    }
    let mut config = crate::util::daemon_config(&src, &daemon);
    config.roots[0]
        .remotes
        .push(sersync::config::Remote::Local {
            path: local.clone(),
        });
    let journal = Arc::new(FailLog::open(&journal_path).expect("journal"));
    let dyn_journal: Arc<dyn Journal> = journal.clone();
    let pipeline = Pipeline::start(&config, &options(false), dyn_journal).expect("pipeline starts");
    for mirror in [&local, &daemon.module_root] {
        wait_until(
            "mirror converged from the 0.1.0 journal",
            SYNC_LIMIT,
            || crate::util::tree::diff(&src, mirror).is_none(),
        );
    }
    wait_until("daemon and local entries drained", SYNC_LIMIT, || {
        journal
            .targets()
            .iter()
            .all(|t| t == ssh_key || t == cdn_key)
    });
    pipeline.shutdown().expect("clean shutdown");
    assert_eq!(
        journal.pending_for(ssh_key).len(),
        8,
        "unconfigured remote kept"
    );
    // The CDN stage moves its purges to the current key when it starts.
    let purges = sersync::cdn::JournalPurges::new(journal.clone(), vec![src.clone()]);
    let mut moved = sersync::cdn::PurgeJournal::pending(&purges, 0);
    moved.sort();
    assert_eq!(moved, vec![("a/b.txt".into(), false), ("dir".into(), true)]);
    assert!(journal.pending_for(cdn_key).is_empty());
    assert_eq!(
        journal
            .pending_for("v2 cdn /tmp/sersync-journal-0.1.0/src")
            .len(),
        2
    );
    let _ = std::fs::remove_dir_all(base);
}
