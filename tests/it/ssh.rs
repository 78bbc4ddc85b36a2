//! ssh remotes end to end: real inotify, the real engine, rsync over `ssh` to a real
//! `sshd` on 127.0.0.1 (`util::sshd`). The config reaches the test key and port the way
//! an operator's does: `<commonParams params='-artuz -e "ssh -p … -i …"'>`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sersync::coalesce::{Journal, MemoryJournal};
use sersync::config::Config;
use sersync::pipeline::Pipeline;

use crate::engine::hostile_names;
use crate::util::sshd::{self, Sshd};
use crate::util::{SYNC_LIMIT, options, tree, wait_until};

/// A source tree mirrored over ssh into a directory of this machine.
pub(crate) struct SshEnv {
    _dir: tempfile::TempDir,
    pub(crate) src: PathBuf,
    pub(crate) mirror: PathBuf,
    pub(crate) sshd: Sshd,
    pub(crate) config: Config,
    pub(crate) journal: Arc<MemoryJournal>,
}

impl SshEnv {
    /// `None` only when sshd is missing and the opt-out is set (see `util::sshd`).
    pub(crate) fn new() -> Option<SshEnv> {
        let _ = env_logger::builder().is_test(true).try_init();
        let sshd = Sshd::start()?;
        let dir = tempfile::tempdir().expect("tempdir");
        let (src, mirror) = (dir.path().join("src"), dir.path().join("mirror"));
        std::fs::create_dir_all(&src).expect("src");
        std::fs::create_dir_all(&mirror).expect("mirror");
        let config = sshd.config(&src, &mirror);
        Some(SshEnv {
            _dir: dir,
            src,
            mirror,
            sshd,
            config,
            journal: Arc::new(MemoryJournal::default()),
        })
    }

    pub(crate) fn start(&self, full_sync_first: bool) -> Pipeline {
        let journal: Arc<dyn Journal> = self.journal.clone();
        Pipeline::start(&self.config, &options(full_sync_first), journal).expect("pipeline")
    }

    pub(crate) fn write(&self, rel: impl AsRef<Path>, content: &[u8]) {
        let path = self.src.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("parents");
        std::fs::write(path, content).expect("write");
    }

    /// Waits until the mirror equals the source byte-exact and nothing is journaled.
    #[track_caller]
    fn wait_converged(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let diff = tree::diff(&self.src, &self.mirror);
            if diff.is_none() && self.journal.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "mirror did not converge over ssh within {limit:?}: {diff:?}, {} journaled\nsshd log:\n{}",
                self.journal.len(),
                self.sshd.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

#[test]
fn push_delete_and_rename_over_ssh() {
    let Some(env) = SshEnv::new() else { return };
    let pipeline = env.start(false);
    env.write("a.txt", b"one");
    env.write("dir/sub/b.txt", b"two");
    std::os::unix::fs::symlink("dir/sub/b.txt", env.src.join("link")).expect("symlink");
    env.wait_converged(SYNC_LIMIT);
    std::fs::rename(env.src.join("a.txt"), env.src.join("renamed.txt")).expect("mv file");
    std::fs::rename(env.src.join("dir"), env.src.join("moved")).expect("mv dir");
    env.wait_converged(SYNC_LIMIT);
    std::fs::remove_file(env.src.join("renamed.txt")).expect("rm");
    std::fs::remove_dir_all(env.src.join("moved")).expect("rm -r");
    env.wait_converged(SYNC_LIMIT);
    pipeline.shutdown().expect("clean shutdown");
    assert!(
        env.sshd.log().contains("Accepted publickey"),
        "the pushes went through sshd with the test key: {}",
        env.sshd.log()
    );
}

#[test]
fn hostile_names_over_ssh_are_byte_exact() {
    let Some(env) = SshEnv::new() else { return };
    let pipeline = env.start(false);
    for name in hostile_names() {
        env.write(&name, name.as_os_str().as_bytes());
        env.write(Path::new("d").join(&name), b"nested");
    }
    env.write(OsStr::from_bytes(b"colon:host:path"), b"not a remote");
    env.wait_converged(SYNC_LIMIT);
    for name in hostile_names() {
        std::fs::remove_file(env.src.join(&name)).expect("rm hostile");
    }
    env.wait_converged(SYNC_LIMIT);
    // `$(touch pwned)` run by a shell would land in our working directory or, on the
    // remote side, in the login's home.
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    for dir in [Path::new("."), home.as_path(), env.mirror.as_path()] {
        assert!(
            !dir.join("pwned").exists(),
            "a name reached a shell in {}",
            dir.display()
        );
    }
    pipeline.shutdown().expect("clean shutdown");
}

#[test]
fn refused_key_is_journaled_and_heals_when_authorised() {
    let Some(env) = SshEnv::new() else { return };
    env.sshd.authorize(false);
    let pipeline = env.start(false);
    env.write("a/b/one.txt", b"one");
    env.write("two.txt", b"two");
    wait_until("refused pushes journaled", SYNC_LIMIT, || {
        env.journal.len() >= 2
    });
    assert!(
        tree::diff(&env.src, &env.mirror).is_some(),
        "nothing can arrive while the key is refused"
    );
    env.sshd.authorize(true);
    // Retries back off up to timeToExecute (3 s in tests).
    env.wait_converged(SYNC_LIMIT);
    pipeline.shutdown().expect("clean shutdown");
}

#[test]
fn remote_that_goes_away_and_comes_back() {
    let Some(mut env) = SshEnv::new() else { return };
    let pipeline = env.start(false);
    env.write("before.txt", b"before");
    env.wait_converged(SYNC_LIMIT);
    env.sshd.stop();
    env.write("while-down/one.txt", b"one");
    env.write("before.txt", b"changed while down");
    wait_until("pushes journaled while sshd is down", SYNC_LIMIT, || {
        !env.journal.is_empty()
    });
    env.sshd.restart();
    env.wait_converged(SYNC_LIMIT);
    pipeline.shutdown().expect("clean shutdown");
}

#[test]
fn full_sync_first_over_ssh_mirrors_and_deletes_extras() {
    let Some(env) = SshEnv::new() else { return };
    env.write("old/deep/f.txt", b"content");
    env.write("top.txt", b"top");
    std::fs::create_dir_all(env.mirror.join("extra/dir")).expect("extra");
    std::fs::write(env.mirror.join("extra/dir/x"), b"only on the mirror").expect("extra");
    std::fs::write(env.mirror.join("top.txt"), b"stale").expect("stale");
    let pipeline = env.start(true);
    env.wait_converged(SYNC_LIMIT);
    env.write("after.txt", b"written after the full sync");
    env.wait_converged(SYNC_LIMIT);
    pipeline.shutdown().expect("clean shutdown");
}

#[test]
fn missing_sshd_fails_the_tests_unless_opted_out() {
    let missing = std::panic::catch_unwind(|| sshd::present(Path::new("/nonexistent/sshd")));
    if std::env::var_os(sshd::OPT_OUT).is_some_and(|v| v == "1") {
        assert!(matches!(missing, Ok(false)), "opted out: skipped");
    } else {
        let why = missing.expect_err("a missing sshd must fail, not skip");
        let text = why.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(text.contains("install openssh-server"), "{text}");
    }
}
