use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;

use super::format::{self, Line, Mode};
use super::*;

const WWW: &str = "v2 daemon /srv/www 10.0.0.2::www";
const CDN: &str = "v2 cdn /srv/www";

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn failure<'a>(target: &'a str, rel: &'a str, op: Op) -> Failure<'a> {
    Failure {
        target,
        rel: Path::new(rel),
        op,
        is_dir: false,
    }
}

fn rels(entries: &[JournalEntry]) -> Vec<&Path> {
    entries.iter().map(|entry| entry.rel.as_path()).collect()
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).expect("stat").mode() & 0o7777
}

/// The entries without their in-memory revision, for comparing across a reopen.
fn persisted(entries: Vec<JournalEntry>) -> Vec<JournalEntry> {
    entries
        .into_iter()
        .map(|entry| JournalEntry {
            revision: 0,
            ..entry
        })
        .collect()
}

fn reopen_same(journal: &FailLog) -> FailLog {
    let reopened = FailLog::open(journal.path()).expect("reopen");
    assert_eq!(persisted(reopened.pending()), persisted(journal.pending()));
    reopened
}

#[test]
fn record_survives_reopen() {
    let dir = temp();
    let path = dir.path().join("journal");
    let journal = FailLog::open(&path).expect("open");
    assert!(journal.is_empty());
    assert_eq!(mode_of(&path), 0o600);
    journal
        .record_at(
            &[
                failure(WWW, "a/b.txt", Op::Update),
                Failure {
                    is_dir: true,
                    ..failure(WWW, "c", Op::Delete)
                },
            ],
            Some(10),
            "connection refused",
            "cd /srv/www && rsync -artuz -R ./a/b.txt 10.0.0.2::www",
            1_764_000_000,
        )
        .expect("record");
    journal
        .record_at(
            &[failure(CDN, "a/b.txt", Op::Update)],
            None,
            "",
            "",
            1_764_000_001,
        )
        .expect("record");
    assert_eq!(journal.len(), 3);
    assert_eq!(journal.oldest_first_failure(), Some(1_764_000_000));

    let reopened = reopen_same(&journal);
    let www = reopened.pending_for(WWW);
    assert_eq!(rels(&www), [Path::new("a/b.txt"), Path::new("c")]);
    assert_eq!(www[1].op, Op::Delete);
    assert!(www[1].is_dir);
    assert_eq!(www[0].code, Some(10));
    assert_eq!(www[0].reason, "connection refused");
    assert_eq!(www[0].attempts, 1);
    assert_eq!(
        &*www[0].command,
        "cd /srv/www && rsync -artuz -R ./a/b.txt 10.0.0.2::www"
    );
    let cdn = reopened.pending_for(CDN);
    assert_eq!(cdn[0].code, None);
    assert_eq!(&*cdn[0].command, "");
    assert_eq!(
        reopened.targets(),
        [CDN.to_owned(), WWW.to_owned()],
        "sorted"
    );
    assert!(reopened.pending_for("nope").is_empty());
}

#[test]
fn journal_is_readable_text() {
    let dir = temp();
    let journal = FailLog::open(&dir.path().join("journal")).expect("open");
    journal
        .record_at(
            &[failure(WWW, "图片/a b.jpg", Op::Update)],
            Some(23),
            "some files could not be transferred",
            "rsync -R ./图片/a\\ b.jpg 10.0.0.2::www",
            1_764_000_000,
        )
        .expect("record");
    let text = fs::read_to_string(journal.path()).expect("utf-8 text");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "# sersync journal v1");
    assert!(lines.contains(&"# failed at 2025-11-24T16:00:00Z, exit 23: 1 path(s)"));
    assert!(lines.contains(&"# command: rsync -R ./图片/a\\ b.jpg 10.0.0.2::www"));
    assert!(lines.contains(
        &"F 2025-11-24T16:00:00Z 2025-11-24T16:00:00Z 1 23 update file \
          v2%20daemon%20/srv/www%2010.0.0.2::www 图片/a%20b.jpg some files could not be transferred"
    ));
}

#[test]
fn recording_again_merges_into_one_entry() {
    let dir = temp();
    let journal = FailLog::open(&dir.path().join("journal")).expect("open");
    journal
        .record_at(
            &[failure(WWW, "a", Op::Update)],
            Some(10),
            "refused",
            "one",
            100,
        )
        .expect("record");
    let before = journal.pending()[0].revision;
    journal
        .record_at(
            &[Failure {
                is_dir: true,
                ..failure(WWW, "a", Op::Delete)
            }],
            Some(12),
            "  protocol error\n",
            "two",
            250,
        )
        .expect("record");
    for journal in [&journal, &reopen_same(&journal)] {
        let pending = journal.pending();
        assert_eq!(pending.len(), 1);
        let entry = &pending[0];
        assert_eq!((entry.op, entry.is_dir), (Op::Delete, true));
        assert_eq!((entry.first_failure, entry.last_failure), (100, 250));
        assert_eq!(entry.attempts, 2);
        assert_eq!(entry.code, Some(12));
        assert_eq!(entry.reason, "protocol error");
        assert_eq!(&*entry.command, "two");
    }
    assert_ne!(journal.pending()[0].revision, before);
}

#[test]
fn same_path_twice_in_one_job_counts_once() {
    let dir = temp();
    let journal = FailLog::open(&dir.path().join("journal")).expect("open");
    journal
        .record_at(
            &[failure(WWW, "a", Op::Update), failure(WWW, "a", Op::Delete)],
            None,
            "",
            "",
            5,
        )
        .expect("record");
    let pending = journal.pending();
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].op, pending[0].attempts), (Op::Delete, 1));
}

#[test]
fn clear_one_of_many_survives_reopen() {
    let dir = temp();
    let journal = FailLog::open(&dir.path().join("journal")).expect("open");
    let names = ["a", "b", "c", "d"];
    let failures: Vec<Failure<'_>> = names
        .iter()
        .map(|name| failure(WWW, name, Op::Update))
        .collect();
    journal
        .record(&failures, Some(10), "x", "")
        .expect("record");
    journal
        .record(&[failure(CDN, "b", Op::Update)], None, "", "")
        .expect("record");
    let cleared = journal
        .clear(WWW, &[Path::new("b"), Path::new("zzz"), Path::new("b")])
        .expect("clear");
    assert_eq!(cleared, 1);
    assert_eq!(journal.clear(WWW, &[Path::new("b")]).expect("clear"), 0);
    let reopened = reopen_same(&journal);
    assert_eq!(
        rels(&reopened.pending_for(WWW)),
        [Path::new("a"), Path::new("c"), Path::new("d")]
    );
    assert_eq!(rels(&reopened.pending_for(CDN)), [Path::new("b")]);
}

#[test]
fn clear_retried_keeps_a_path_that_failed_again_meanwhile() {
    let dir = temp();
    let journal = FailLog::open(&dir.path().join("journal")).expect("open");
    journal
        .record(
            &[failure(WWW, "a", Op::Update), failure(WWW, "b", Op::Update)],
            Some(10),
            "",
            "",
        )
        .expect("record");
    let retried = journal.pending_for(WWW);
    // While the retry runs, a newer job deletes `b` and fails.
    journal
        .record(&[failure(WWW, "b", Op::Delete)], Some(10), "", "")
        .expect("record");
    assert_eq!(journal.clear_retried(&retried).expect("clear"), 1);
    let pending = reopen_same(&journal).pending();
    assert_eq!(rels(&pending), [Path::new("b")]);
    assert_eq!(pending[0].op, Op::Delete);
}

#[test]
fn torn_last_line_is_ignored() {
    let dir = temp();
    let path = dir.path().join("journal");
    let journal = FailLog::open(&path).expect("open");
    journal
        .record(&[failure(WWW, "kept", Op::Update)], Some(10), "", "")
        .expect("record");
    let intact = fs::metadata(&path).expect("stat").len();
    journal
        .record(
            &[failure(WWW, "torn-away-entry", Op::Update)],
            Some(10),
            "",
            "",
        )
        .expect("record");
    drop(journal);
    let full = fs::metadata(&path).expect("stat").len();
    // Cut inside the path of the last F line: the rest must not be mistaken for `torn`.
    let file = fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    file.set_len(full - "-away-entry\n".len() as u64)
        .expect("truncate");
    assert!(intact < full - 12);

    let journal = FailLog::open(&path).expect("a torn line is not fatal");
    assert_eq!(rels(&journal.pending()), [Path::new("kept")]);
    // The torn tail is gone, so the next record is not glued onto it.
    journal
        .record(&[failure(WWW, "next", Op::Update)], Some(10), "", "")
        .expect("record");
    let reopened = FailLog::open(&path).expect("reopen");
    assert_eq!(
        rels(&reopened.pending()),
        [Path::new("kept"), Path::new("next")]
    );
}

#[test]
fn torn_header_of_a_new_journal_is_rewritten() {
    let dir = temp();
    let path = dir.path().join("journal");
    fs::write(&path, "# sersync jour").expect("write");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    let journal = FailLog::open(&path).expect("open");
    assert!(journal.is_empty());
    assert!(
        fs::read_to_string(&path)
            .expect("read")
            .starts_with("# sersync journal v1\n")
    );
}

#[test]
fn garbled_lines_are_skipped() {
    let dir = temp();
    let path = dir.path().join("journal");
    let journal = FailLog::open(&path).expect("open");
    journal
        .record(&[failure(WWW, "a", Op::Update)], Some(10), "", "")
        .expect("record");
    drop(journal);
    let mut text = fs::read(&path).expect("read");
    text.extend_from_slice(b"F not a record\n\0\0\0\0\nX what\nC only-one-field\n");
    text.extend_from_slice(b"F 2025-11-24T16:00:00Z 2025-11-24T16:00:00Z 1 - update file t %zz\n");
    text.extend_from_slice(b"F 2025-02-30T16:00:00Z 2025-11-24T16:00:00Z 1 - update file t x\n");
    text.extend_from_slice(
        b"F 2025-11-24T16:00:00Z 2025-11-24T16:00:00Z 1 - update file t b reason\n",
    );
    fs::write(&path, text).expect("write");

    let journal = FailLog::open(&path).expect("garbage is not fatal");
    let pending = journal.pending();
    assert_eq!(rels(&pending), [Path::new("a"), Path::new("b")]);
    assert_eq!(pending[1].target, "t");
    // Compacted on open: the garbage is gone.
    let text = fs::read_to_string(&path).expect("read");
    assert!(!text.contains("not a record") && !text.contains("X what"));
    reopen_same(&journal);
}

#[test]
fn compaction_keeps_live_entries_and_mode() {
    let dir = temp();
    let path = dir.path().join("journal");
    let journal = FailLog::open(&path).expect("open");
    let names: Vec<String> = (0..200).map(|i| format!("dir/file-{i}")).collect();
    for name in &names {
        journal
            .record(
                &[failure(WWW, name, Op::Update)],
                Some(10),
                "refused",
                "rsync …",
            )
            .expect("record");
    }
    let full = fs::metadata(&path).expect("stat").len();
    let doomed: Vec<&Path> = names[..150].iter().map(Path::new).collect();
    journal.clear(WWW, &doomed).expect("clear");
    // 200 F + 150 C records for 50 live entries: compacted.
    let compacted = fs::metadata(&path).expect("stat").len();
    assert!(compacted < full / 2, "{compacted} < {full} / 2");
    assert_eq!(mode_of(&path), 0o600);
    assert!(!dir.path().join("journal.tmp").exists());
    assert_eq!(journal.len(), 50);
    // Appends go to the new file.
    journal
        .record(&[failure(WWW, "after", Op::Delete)], Some(10), "", "")
        .expect("record");
    let reopened = reopen_same(&journal);
    assert_eq!(reopened.len(), 51);
    assert_eq!(&*reopened.pending()[0].command, "rsync …");
    assert_eq!(reopened.pending()[0].rel, Path::new("dir/file-150"));
}

#[test]
fn emptied_journal_shrinks_to_its_header() {
    let dir = temp();
    let path = dir.path().join("journal");
    let journal = FailLog::open(&path).expect("open");
    let header = fs::metadata(&path).expect("stat").len();
    journal
        .record(&[failure(WWW, "a", Op::Update)], Some(10), "", "cmd")
        .expect("record");
    journal.clear(WWW, &[Path::new("a")]).expect("clear");
    assert_eq!(fs::metadata(&path).expect("stat").len(), header);
    assert_eq!(mode_of(&path), 0o600);
}

#[test]
fn leftover_tmp_file_is_removed_on_open() {
    let dir = temp();
    let path = dir.path().join("journal");
    let journal = FailLog::open(&path).expect("open");
    journal
        .record(&[failure(WWW, "a", Op::Update)], Some(10), "", "")
        .expect("record");
    drop(journal);
    // A crash after writing the copy and before renaming it.
    let tmp = dir.path().join("journal.tmp");
    fs::write(&tmp, "# sersync journal v1\nF half").expect("write");
    let journal = FailLog::open(&path).expect("open");
    assert!(!tmp.exists());
    assert_eq!(rels(&journal.pending()), [Path::new("a")]);
    // A planted link in its place is removed, not followed.
    let victim = dir.path().join("victim");
    fs::write(&victim, "keep").expect("write");
    symlink(&victim, &tmp).expect("symlink");
    journal
        .record(&[failure(WWW, "b", Op::Update)], Some(10), "", "")
        .expect("record");
    journal
        .clear(WWW, &[Path::new("a"), Path::new("b")])
        .expect("clear and compact");
    assert_eq!(fs::read_to_string(&victim).expect("read"), "keep");
    assert!(fs::symlink_metadata(&tmp).is_err());
}

#[test]
fn missing_directories_are_created_private() {
    let dir = temp();
    let path = dir.path().join("lib/sersync/journal");
    let journal = FailLog::open(&path).expect("open");
    assert_eq!(journal.path(), path);
    assert_eq!(mode_of(&dir.path().join("lib")), 0o700);
    assert_eq!(mode_of(&dir.path().join("lib/sersync")), 0o700);
    assert_eq!(mode_of(&path), 0o600);
}

fn assert_refused(path: &Path, expected: &str) {
    match FailLog::open(path) {
        Err(err @ FailLogError::Unsafe { .. }) => {
            let message = err.to_string();
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        }
        other => panic!("{}: expected a refusal, got {other:?}", path.display()),
    }
}

#[test]
fn refuses_a_symlink() {
    let dir = temp();
    let target = dir.path().join("real");
    FailLog::open(&target).expect("open");
    let link = dir.path().join("journal");
    symlink(&target, &link).expect("symlink");
    assert_refused(&link, "symbolic link");
    // A dangling link too: it must not be created through.
    let dangling = dir.path().join("dangling");
    symlink(dir.path().join("nowhere"), &dangling).expect("symlink");
    assert_refused(&dangling, "symbolic link");
    assert!(!dir.path().join("nowhere").exists());
}

#[test]
fn refuses_a_file_writable_by_group_or_others() {
    for mode in [0o620, 0o602, 0o777] {
        let dir = temp();
        let path = dir.path().join("journal");
        FailLog::open(&path).expect("open");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        assert_refused(&path, "writable by group or others");
        assert_eq!(mode_of(&path), mode, "a refused file is left alone");
    }
}

#[test]
fn refuses_a_file_of_another_user() {
    let dir = temp();
    let path = dir.path().join("journal");
    FailLog::open(&path).expect("open");
    let euid = file::effective_uid().expect("euid");
    let other = if euid == 65534 { 65533 } else { 65534 };
    if euid != 0 {
        // Only root can give a file away; the check is the same uid comparison.
        let meta = fs::metadata(&path).expect("stat");
        assert!(file::check_file(&path, &meta, other).is_err());
        return;
    }
    std::os::unix::fs::chown(&path, Some(other), None).expect("chown");
    assert_refused(&path, &format!("owned by uid {other}"));
}

#[test]
fn refuses_a_directory_or_a_fifo() {
    let dir = temp();
    let path = dir.path().join("journal");
    fs::create_dir(&path).expect("mkdir");
    assert_refused(&path, "not a regular file");
    let status = std::process::Command::new("mkfifo")
        .arg(dir.path().join("fifo"))
        .status()
        .expect("mkfifo");
    assert!(status.success());
    assert_refused(&dir.path().join("fifo"), "not a regular file");
}

#[test]
fn refuses_a_world_writable_directory_unless_sticky() {
    let dir = temp();
    let open_dir = dir.path().join("open");
    fs::create_dir(&open_dir).expect("mkdir");
    fs::set_permissions(&open_dir, fs::Permissions::from_mode(0o777)).expect("chmod");
    assert_refused(&open_dir.join("journal"), "writable by everyone");
    fs::set_permissions(&open_dir, fs::Permissions::from_mode(0o1777)).expect("chmod");
    FailLog::open(&open_dir.join("journal")).expect("a sticky directory like /tmp is fine");
}

#[test]
fn readable_by_others_is_set_back_to_0600() {
    let dir = temp();
    let path = dir.path().join("journal");
    FailLog::open(&path).expect("open");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o744)).expect("chmod");
    FailLog::open(&path).expect("open");
    assert_eq!(mode_of(&path), 0o600);
}

#[test]
fn foreign_file_is_refused_and_left_alone() {
    let dir = temp();
    let path = dir.path().join("rsync_fail_log.sh");
    let old = "#errno 2560\ncd /opt/tongbu && rsync -artuz -R \"./a\" root@127.0.0.1::tongbu1\n\n";
    for content in [old, "# sersync journal v2\n", "no newline at all"] {
        fs::write(&path, content).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        match FailLog::open(&path) {
            Err(err @ FailLogError::NotJournal { .. }) => {
                assert!(err.to_string().contains("not a sersync journal v1"));
            }
            other => panic!("expected NotJournal, got {other:?}"),
        }
        assert_eq!(fs::read_to_string(&path).expect("read"), content);
    }
}

#[test]
fn hostile_paths_round_trip() {
    let dir = temp();
    let journal = FailLog::open(&dir.path().join("journal")).expect("open");
    let long = "x".repeat(4096);
    let hostile: Vec<&[u8]> = vec![
        b"new\nline",
        b"cr\rlf\r\n",
        b"with space ",
        b" leading space",
        b"tab\there",
        b"100%25 literal %",
        b"quote\"s and 'single' and `tick` and $(cmd)",
        b"back\\slash",
        b"-",
        b"-rf",
        b"--delete",
        b".",
        b"./x",
        b"..",
        b"#not-a-comment",
        b"F 2025-11-24T16:00:00Z fake",
        b"non-utf8-\xff\xfe\x80",
        b"\xe5\x9b\xbe\xe7\x89\x87/\xe4\xb8\xad.txt",
        "zero\u{200B}width\u{202E}rtl\u{2028}sep\u{85}nel\u{FEFF}".as_bytes(),
        b"\x7f\x01\x1b[31m",
        long.as_bytes(),
    ];
    let failures: Vec<Failure<'_>> = hostile
        .iter()
        .map(|bytes| Failure {
            target: WWW,
            rel: Path::new(OsStr::from_bytes(bytes)),
            op: Op::Delete,
            is_dir: false,
        })
        .collect();
    journal
        .record(&failures, Some(-1), "why\nnot %", "rsync \"new\nline\"")
        .expect("record");
    let text = fs::read(journal.path()).expect("read");
    let lines = text.split(|&byte| byte == b'\n').count() - 1;
    // Header block (5) + `# failed at` + `# command:` + one line per path.
    assert_eq!(lines, 5 + 2 + hostile.len());
    assert!(std::str::from_utf8(&text).is_ok(), "the journal is UTF-8");

    let reopened = reopen_same(&journal);
    let pending = reopened.pending();
    let got: Vec<&[u8]> = pending
        .iter()
        .map(|entry| entry.rel.as_os_str().as_bytes())
        .collect();
    assert_eq!(got, hostile);
    assert_eq!(pending[0].reason, "why\nnot %");
    assert_eq!(&*pending[0].command, "rsync \"new\nline\"");
    assert_eq!(pending[0].code, Some(-1));
}

#[test]
fn whole_root_entry_is_distinct_from_dot() {
    let dir = temp();
    let journal = FailLog::open(&dir.path().join("journal")).expect("open");
    journal
        .record(
            &[
                Failure {
                    is_dir: true,
                    ..failure(WWW, "", Op::Update)
                },
                failure(WWW, ".", Op::Update),
            ],
            Some(10),
            "full sync failed",
            "",
        )
        .expect("record");
    let text = fs::read_to_string(journal.path()).expect("read");
    assert!(text.contains(" dir v2%20daemon%20/srv/www%2010.0.0.2::www . full sync failed\n"));
    assert!(text.contains(" file v2%20daemon%20/srv/www%2010.0.0.2::www %2E full sync failed\n"));
    let reopened = reopen_same(&journal);
    assert_eq!(rels(&reopened.pending()), [Path::new(""), Path::new(".")]);
    reopened.clear(WWW, &[Path::new("")]).expect("clear");
    assert_eq!(rels(&reopen_same(&reopened).pending()), [Path::new(".")]);
}

#[test]
fn concurrent_records_and_clears_stay_consistent() {
    let dir = temp();
    let journal = Arc::new(FailLog::open(&dir.path().join("journal")).expect("open"));
    let targets: Vec<String> = (0..8)
        .map(|i| format!("/srv/{i} -> 10.0.0.{i}::m"))
        .collect();
    std::thread::scope(|scope| {
        for target in &targets {
            let journal = Arc::clone(&journal);
            scope.spawn(move || {
                for i in 0..60 {
                    let rel = format!("d/{i}");
                    journal
                        .record(&[failure(target, &rel, Op::Update)], Some(10), "x", "")
                        .expect("record");
                    if i % 2 == 0 {
                        journal.clear(target, &[Path::new(&rel)]).expect("clear");
                    }
                    if i % 3 == 0 {
                        // Recorded again: attempts 2.
                        journal
                            .record(&[failure(target, &rel, Op::Delete)], Some(10), "x", "")
                            .expect("record");
                    }
                }
            });
        }
    });
    let reopened = reopen_same(&journal);
    for target in &targets {
        let pending = reopened.pending_for(target);
        let expected: Vec<PathBuf> = (0..60)
            .filter(|i| i % 2 == 1 || i % 3 == 0)
            .map(|i| PathBuf::from(format!("d/{i}")))
            .collect();
        let got: Vec<PathBuf> = pending.iter().map(|entry| entry.rel.clone()).collect();
        assert_eq!(got, expected, "{target}");
        for entry in &pending {
            let i: u32 = entry.rel.to_str().expect("utf-8")[2..]
                .parse()
                .expect("number");
            let again = i % 3 == 0 && i % 2 == 1;
            assert_eq!(entry.attempts, if again { 2 } else { 1 }, "{entry:?}");
        }
    }
    assert_eq!(mode_of(journal.path()), 0o600);
}

/// Runs the test `child` in a child process of this test binary, after the shell
/// `setup` (process-wide settings such as the umask cannot be changed here without
/// affecting other tests), with `CHILD_DIR` set to `dir`.
fn run_child(setup: &str, child: &str, dir: &Path) {
    let exe = std::env::current_exe().expect("test binary");
    let output = std::process::Command::new("sh")
        .args(["-c", &format!("{setup} && exec \"$@\""), "sh"])
        .arg(exe)
        .args([
            &format!("faillog::tests::{child}"),
            "--exact",
            "--nocapture",
        ])
        .env(CHILD_DIR, dir)
        .output()
        .expect("run child");
    assert!(
        output.status.success(),
        "{child}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("1 passed"), "{child} did not run: {stdout}");
}

/// The directory a child test works in; unset when the test runs on its own.
const CHILD_DIR: &str = "SERSYNC_FAILLOG_TEST_CHILD_DIR";

#[test]
fn created_files_are_private_under_umask_zero() {
    let dir = temp();
    run_child("umask 000", "umask_zero_child", dir.path());
    assert_eq!(mode_of(&dir.path().join("new")), 0o700);
    assert_eq!(mode_of(&dir.path().join("new/journal")), 0o600);
    assert!(fs::read_to_string(dir.path().join("new/journal")).is_ok());
    assert!(!dir.path().join("new/journal.tmp").exists());
}

/// Does nothing unless run by [`created_files_are_private_under_umask_zero`].
#[test]
fn umask_zero_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let path = Path::new(&dir).join("new/journal");
    let journal = FailLog::open(&path).expect("open");
    journal
        .record(&[failure(WWW, "a", Op::Update)], Some(10), "", "")
        .expect("record");
    // Empties the journal, which compacts it through `journal.tmp`.
    journal.clear(WWW, &[Path::new("a")]).expect("clear");
    journal
        .record(&[failure(WWW, "b", Op::Update)], Some(10), "", "")
        .expect("record");
}

/// A write that fails half-way (here: the file size limit, `EFBIG`) leaves no partial
/// line behind and changes nothing in memory.
#[test]
fn failed_write_is_cut_off() {
    let dir = temp();
    // 16 blocks of 512 (dash) or 1024 bytes; SIGXFSZ ignored so that write fails instead.
    run_child(
        "trap '' XFSZ && ulimit -f 16",
        "failed_write_child",
        dir.path(),
    );
    let journal = FailLog::open(&dir.path().join("journal")).expect("open");
    let recorded = fs::read_to_string(dir.path().join("recorded")).expect("read");
    let expected: Vec<&Path> = recorded.lines().map(Path::new).collect();
    assert!(expected.len() > 3, "{expected:?}");
    assert_eq!(rels(&journal.pending()), expected);
}

/// Does nothing unless run by [`failed_write_is_cut_off`].
#[test]
fn failed_write_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let dir = Path::new(&dir);
    let path = dir.join("journal");
    let journal = FailLog::open(&path).expect("open");
    let reason = "r".repeat(300);
    let mut recorded = Vec::new();
    let mut failed = 0;
    for i in 0..100 {
        let rel = format!("file-{i}");
        let before = fs::metadata(&path).expect("stat").len();
        match journal.record(&[failure(WWW, &rel, Op::Update)], Some(10), &reason, "") {
            Ok(()) => recorded.push(rel),
            Err(err) => {
                assert!(matches!(err, FailLogError::Io { .. }), "{err:?}");
                assert_eq!(fs::metadata(&path).expect("stat").len(), before);
                failed += 1;
            }
        }
    }
    assert!(failed > 0, "the size limit was never reached");
    assert_eq!(journal.len(), recorded.len());
    let text = fs::read(&path).expect("read");
    assert_eq!(text.last(), Some(&b'\n'));
    // The parent reopens the journal and compares.
    let mut list = recorded.join("\n");
    list.push('\n');
    fs::write(dir.join("recorded"), list).expect("write list");
}

#[test]
fn times_are_rfc3339_utc() {
    let cases = [
        (0, "1970-01-01T00:00:00Z"),
        (951_782_400, "2000-02-29T00:00:00Z"),
        (1_764_000_000, "2025-11-24T16:00:00Z"),
        (4_102_444_799, "2099-12-31T23:59:59Z"),
        (format::MAX_TIME, "9999-12-31T23:59:59Z"),
    ];
    for (secs, text) in cases {
        assert_eq!(format::format_time(secs), text);
        assert_eq!(format::parse_time(text.as_bytes()), Some(secs), "{text}");
    }
    assert_eq!(format::format_time(u64::MAX), "9999-12-31T23:59:59Z");
    for bad in [
        "2025-02-29T00:00:00Z",
        "2025-13-01T00:00:00Z",
        "2025-01-00T00:00:00Z",
        "2025-01-01T24:00:00Z",
        "2025-01-01 00:00:00Z",
        "1969-12-31T23:59:59Z",
        "2025-01-01T00:00:00",
        "+025-01-01T00:00:00Z",
    ] {
        assert_eq!(format::parse_time(bad.as_bytes()), None, "{bad}");
    }
}

#[test]
fn escaping_examples() {
    let field = |bytes: &[u8]| {
        let mut out = Vec::new();
        format::escape_field(&mut out, bytes);
        String::from_utf8(out).expect("escaped text is UTF-8")
    };
    assert_eq!(field(b""), ".");
    assert_eq!(field(b"."), "%2E");
    assert_eq!(field(b"a b%c\\d\ne"), "a%20b%25c%5Cd%0Ae");
    assert_eq!(field(b"-"), "-");
    assert_eq!(field("图片.jpg".as_bytes()), "图片.jpg");
    assert_eq!(field(b"\xff"), "%FF");
    assert_eq!(field("a\u{A0}b".as_bytes()), "a%C2%A0b");
    assert_eq!(format::unescape(b"%2e%2E"), Some(b"..".to_vec()));
    assert_eq!(format::unescape(b"50%"), None);
    assert_eq!(format::unescape(b"%g0"), None);
    let mut text = Vec::new();
    format::escape(&mut text, b"exit 10: a\\b\tc", Mode::Text);
    assert_eq!(text, b"exit 10: a\\b%09c");
}

fn arb_entry() -> impl Strategy<Value = JournalEntry> {
    (
        (
            ".{0,20}",
            proptest::collection::vec(any::<u8>(), 0..64),
            any::<bool>(),
            any::<bool>(),
            any::<Option<i32>>(),
        ),
        (
            ".{0,40}",
            0..=format::MAX_TIME,
            0..=format::MAX_TIME,
            any::<u32>(),
        ),
    )
        .prop_map(
            |((target, rel, delete, is_dir, code), (reason, first, last, attempts))| JournalEntry {
                target,
                rel: PathBuf::from(OsStr::from_bytes(&rel)),
                op: if delete { Op::Delete } else { Op::Update },
                is_dir,
                code,
                reason: reason.trim().to_owned(),
                first_failure: first,
                last_failure: last,
                attempts,
                command: Arc::from(""),
                revision: 0,
            },
        )
}

proptest! {
    #[test]
    fn any_bytes_round_trip_as_one_field(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut out = Vec::new();
        format::escape_field(&mut out, &bytes);
        prop_assert!(!out.is_empty());
        prop_assert!(!out.iter().any(|&byte| byte <= b' ' || byte == 0x7F));
        prop_assert!(std::str::from_utf8(&out).is_ok());
        prop_assert_eq!(format::unescape_field(&out), Some(bytes));
    }

    #[test]
    fn any_text_round_trips(text in ".{0,100}") {
        let mut out = Vec::new();
        format::escape(&mut out, text.as_bytes(), Mode::Text);
        prop_assert!(!out.iter().any(|&byte| byte < b' ' || byte == 0x7F));
        prop_assert_eq!(format::unescape(&out), Some(text.into_bytes()));
    }

    #[test]
    fn any_entry_round_trips_as_one_line(entry in arb_entry()) {
        let mut line = Vec::new();
        format::write_failed(&mut line, &entry);
        prop_assert_eq!(line.iter().filter(|&&byte| byte == b'\n').count(), 1);
        prop_assert_eq!(line.pop(), Some(b'\n'));
        prop_assert_eq!(format::parse_line(&line), Ok(Line::Failed(entry)));
    }

    #[test]
    fn any_time_round_trips(secs in 0..=format::MAX_TIME) {
        let text = format::format_time(secs);
        prop_assert_eq!(format::parse_time(text.as_bytes()), Some(secs));
    }
}

#[test]
fn torn_line_is_cut_off_even_when_compaction_is_impossible() {
    let dir = temp();
    let path = dir.path().join("journal");
    let journal = FailLog::open(&path).expect("open");
    journal
        .record(&[failure(WWW, "kept", Op::Update)], Some(10), "", "")
        .expect("record");
    drop(journal);
    let mut text = fs::read(&path).expect("read");
    text.extend_from_slice(b"F 2025-11-24T16:00:00Z 2025-11-2");
    fs::write(&path, &text).expect("write");
    // `journal.tmp` cannot be removed or created: compaction fails.
    fs::create_dir_all(dir.path().join("journal.tmp/busy")).expect("mkdir");

    let journal = FailLog::open(&path).expect("open without compaction");
    assert_eq!(rels(&journal.pending()), [Path::new("kept")]);
    journal
        .record(&[failure(WWW, "next", Op::Update)], Some(10), "", "")
        .expect("record");
    journal
        .clear(WWW, &[Path::new("kept"), Path::new("next")])
        .expect("clearing works although compaction keeps failing");
    journal
        .record(&[failure(WWW, "last", Op::Update)], Some(10), "", "")
        .expect("record");
    assert_eq!(
        rels(&FailLog::open(&path).expect("reopen").pending()),
        [Path::new("last")]
    );
}

/// The example in `docs/journal.md`, byte for byte.
#[test]
fn journal_text_matches_the_documented_example() {
    let dir = temp();
    let journal = FailLog::open(&dir.path().join("journal")).expect("open");
    let at = 1_764_000_000;
    journal
        .record_at(
            &[failure(WWW, "a/b.txt", Op::Update)],
            Some(10),
            "connection refused",
            "cd /srv/www && rsync -artuz -R ./a/b.txt 10.0.0.2::www",
            at - 120,
        )
        .expect("record");
    // The path fails again, together with `c`.
    journal
        .record_at(
            &[
                failure(WWW, "a/b.txt", Op::Update),
                Failure {
                    is_dir: true,
                    ..failure(WWW, "c", Op::Delete)
                },
            ],
            Some(10),
            "connection refused",
            "cd /srv/www && rsync -artuz -R ./a/b.txt ./c 10.0.0.2::www",
            at,
        )
        .expect("record");
    journal.clear(WWW, &[Path::new("a/b.txt")]).expect("clear");
    let text = fs::read_to_string(journal.path()).expect("read");
    let docs = include_str!("../../docs/journal.md");
    let example = docs
        .split("```\n")
        .nth(1)
        .expect("the first code block of docs/journal.md");
    let first_job_end = text
        .find("# failed at 2025-11-24T16:00:00Z")
        .expect("second job");
    let header_end = text.find("# failed at").expect("first job");
    // The documented example leaves out the first job.
    let shown = format!("{}{}", &text[..header_end], &text[first_job_end..]);
    assert_eq!(shown, example);
}
