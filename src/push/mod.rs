//! The pusher pool: `-n` threads, each running one rsync per job.
//!
//! Input: `Receiver<PushJob>` (zero-capacity: a job is handed over only when a worker is
//! free, which is what lets the scheduler batch while all workers are busy). Output:
//! `Sender<PushOutcome>` back to the scheduler. Threads `sersync-push-{i}`; each ends when
//! the job channel is disconnected.

pub mod fates;
pub mod guard;
pub mod moves;
pub mod progress;
pub mod rsync;
pub mod share;
pub mod warm;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::argv::Argv;
use crate::child::Cancel;
use crate::config::{Remote, RsyncConfig};
use crate::filter::Filter;
use crate::job::{Disposition, Entry, JobKind, PushFailure, PushJob, PushOutcome, TargetId};
use rsync::RunKind;

/// What every worker needs, shared read-only.
#[derive(Debug)]
pub struct PushContext {
    /// Root directories with their remotes, by root index.
    pub roots: Vec<(PathBuf, Vec<Remote>)>,
    /// How rsync is invoked.
    pub rsync: RsyncConfig,
    /// `<filter>` rules, also applied to full syncs.
    pub filter: Arc<Filter>,
    /// `<inotify><delete>`: deletions are mirrored.
    pub delete: bool,
    /// Longest run of one batch before it is killed (full syncs have no limit).
    pub batch_limit: Option<Duration>,
    /// Fired at shutdown once the scheduler has journaled every running job: each
    /// worker stops and reaps its rsync (and rsync's own children) and starts no other.
    pub cancel: Cancel,
    /// Remotes (root index, remote index) whose receiver refused
    /// [`rsync::NANOSECOND_WINDOW`] (older than rsync 3.1.3): their full syncs go without.
    pub seconds_only: Mutex<HashSet<(usize, usize)>>,
    /// Remotes (root index, remote index) that refused the options of a rename made
    /// from what they hold (`moves.rs`): their renames are pushed as uploads.
    pub plain_moves: Mutex<HashSet<(usize, usize)>>,
    /// Warm clients (`<rsync><warm>`), `None` when off.
    pub warm: Option<Arc<warm::WarmPool>>,
    /// Remotes (root index, remote index) whose temp cleanup after an aborted run
    /// (`clean_temp_files`) failed, with the batch paths whose temp names may still be
    /// there: tried again before each job of that remote until it succeeds.
    pub temp_cleanups: Mutex<HashMap<(usize, usize), BTreeSet<PathBuf>>>,
    /// Bytes of file data per batch at most (measured here, so the scheduler never
    /// touches the filesystem); a batch's first path always goes, however big.
    pub max_batch_bytes: u64,
}

impl PushContext {
    /// The root directory and the remote of `target`, if the configuration has them.
    fn target(&self, target: TargetId) -> Option<(&Path, &Remote)> {
        let (root, remotes) = self.roots.get(target.root)?;
        Some((root.as_path(), remotes.get(target.remote)?))
    }

    fn seconds_only(&self, root: usize, remote: usize) -> bool {
        self.seconds_only
            .lock()
            .is_ok_and(|set| set.contains(&(root, remote)))
    }

    fn set_seconds_only(&self, root: usize, remote: usize) {
        if let Ok(mut set) = self.seconds_only.lock() {
            set.insert((root, remote));
        }
    }
}

/// Starts `n` workers.
///
/// # Errors
/// When a thread cannot be spawned.
pub fn spawn(
    n: usize,
    context: Arc<PushContext>,
    job_rx: &Receiver<PushJob>,
    outcome_tx: &Sender<PushOutcome>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    (0..n)
        .map(|idx| {
            let context = Arc::clone(&context);
            let job_rx = job_rx.clone();
            let outcome_tx = outcome_tx.clone();
            std::thread::Builder::new()
                .name(format!("sersync-push-{idx}"))
                .spawn(move || {
                    for job in job_rx {
                        let outcome = run_job(&context, job);
                        if outcome_tx.send(outcome).is_err() {
                            break; // scheduler gone: shutting down
                        }
                    }
                })
        })
        .collect()
}

/// Runs one job to the end.
pub fn run_job(context: &PushContext, job: PushJob) -> PushOutcome {
    // Warm clients (`warm.rs`): a small batch goes to the remote's waiting rsync; anything
    // else, or a warm client that failed, runs cold below.
    let Some(pool) = &context.warm else {
        return run_cold(context, job);
    };
    // A move's run has an argument vector no warm client can have; it leaves the
    // remote's waiting client alone, which then takes the old names' deletes right after.
    if matches!(job.kind, JobKind::Move { .. }) {
        return run_cold(context, job);
    }
    let list = match (&job.kind, context.roots.get(job.target.root)) {
        // The same rule as a cold batch: nothing is read through a symlinked parent.
        // Confining only shortens the list, so a batch too big for a warm client as it
        // is goes cold without building one (its cold run confines it).
        (JobKind::Batch { entries }, Some((root, _)))
            if pool.takes(entries.iter().map(|e| e.rel.as_os_str().len() + 1).sum()) =>
        {
            rsync::batch_stdin(&guard::confine_on_disk(root, entries))
        }
        _ => Vec::new(),
    };
    pool.run(job, &list, |job, warm_failure| {
        if warm_failure.is_some() {
            clean_temp_files(context, &job, warm_failure);
        }
        run_cold(context, job)
    })
}

/// Most paths kept for a failed temp cleanup per remote; beyond that the first in order
/// go (a full sync with `--delete` still removes their temp names).
const MAX_TEMP_CLEANUP_PATHS: usize = 10_000;

/// After a batch run that may have ended its receiver mid-file
/// ([`rsync::may_leave_temp_files`]), removes the receiver's temp files of the batch's
/// paths from the remote ([`rsync::temp_cleanup`]): nothing else would ever remove them
/// (a batch has no `--delete`), and the mirror would never be exact again. A cleanup
/// that failed because the remote is down is kept and tried again after the remote's
/// next run.
fn clean_temp_files(context: &PushContext, job: &PushJob, failure: Option<&PushFailure>) {
    let key = (job.target.root, job.target.remote);
    let mut paths = context
        .temp_cleanups
        .lock()
        .map(|mut pending| pending.remove(&key).unwrap_or_default())
        .unwrap_or_default();
    if let (JobKind::Batch { entries }, Some(failure)) = (&job.kind, failure) {
        if rsync::may_leave_temp_files(failure) {
            paths.extend(entries.iter().map(|e| e.rel.to_path_buf()));
        }
    }
    if paths.is_empty() {
        return;
    }
    let Some((root, remote)) = context.target(job.target) else {
        return;
    };
    let Some(cleanup) =
        rsync::temp_cleanup(&context.rsync, remote, paths.iter().map(PathBuf::as_path))
    else {
        log::warn!(
            "{} -> {remote}: a run ended mid-transfer; its directories are too many to remove rsync temp files from",
            root.display(),
        );
        return;
    };
    log::info!(
        "{} -> {remote}: a run ended mid-transfer; removing rsync temp files of {} path(s)",
        root.display(),
        paths.len()
    );
    let finished = rsync::run_observed(
        &context.rsync.binary,
        cleanup.args,
        &cleanup.stdin,
        context.batch_limit,
        None,
        Some(root),
        Some(&context.cancel),
    );
    let failure = match &finished.disposition {
        Disposition::Done => return,
        // A directory gone or no longer a directory here (23): what replaces it remotely
        // replaces its temp files too. Trying again would fail the same way.
        Disposition::Partial { failure, .. } | Disposition::ConfigError(failure) => {
            log::warn!(
                "{} -> {remote}: removing rsync temp files failed: {}",
                root.display(),
                failure.reason
            );
            return;
        }
        Disposition::RemoteDown(failure) => failure,
    };
    log::warn!(
        "{} -> {remote}: removing rsync temp files failed, tried again after its next run: {}",
        root.display(),
        failure.reason
    );
    while paths.len() > MAX_TEMP_CLEANUP_PATHS {
        paths.pop_first();
    }
    if let Ok(mut pending) = context.temp_cleanups.lock() {
        pending.entry(key).or_default().extend(paths);
    }
}

/// Runs one job with a freshly started rsync.
fn run_cold(context: &PushContext, job: PushJob) -> PushOutcome {
    let Some((root, remote)) = context.target(job.target) else {
        let failure = PushFailure {
            code: None,
            reason: format!("no remote {}", job.target),
        };
        return PushOutcome {
            job,
            disposition: Disposition::ConfigError(failure),
            unsent: 0,
            command: String::new(),
        };
    };
    if let Remote::Local { path } = remote {
        // rsync creates the last component only; a fresh mirror needs its parents.
        if let Err(err) = std::fs::create_dir_all(path) {
            log::warn!("{}: cannot create mirror directory: {err}", path.display());
        }
    }
    if matches!(job.kind, JobKind::Move { .. }) {
        let (disposition, command) = moves::run(context, &job, root, remote);
        return PushOutcome {
            job,
            disposition,
            unsent: 0,
            command,
        };
    }
    let mut unsent = 0;
    // A receiver that refused --modify-window=-1 once gets whole-second full syncs.
    let window_refused = |args: &mut Argv| {
        if context.seconds_only(job.target.root, job.target.remote) {
            args.retain(|a| a != rsync::NANOSECOND_WINDOW);
        }
    };
    // What a subtree or full sync runs, given the excluded paths passed to it.
    let job_invocation = |excluded: &[OsString]| {
        invocation(
            &context.rsync,
            root,
            remote,
            context.delete,
            &job.kind,
            excluded,
        )
    };
    // The kind actually run when the guard or the byte limit changed the batch: a failure
    // rebuilds its command line from it (the argument vector itself goes to rsync).
    let mut sent_kind: Option<JobKind> = None;
    let (mut invocation, limit) = match &job.kind {
        JobKind::Batch { entries } | JobKind::Move { entries, .. } => {
            let sent = within_bytes(root, entries, context.max_batch_bytes);
            unsent = entries.len() - sent;
            // Just before rsync starts: nothing is read through a symlinked parent.
            let confined = guard::confine_on_disk(root, &entries[..sent]);
            let run = match (&confined, unsent) {
                (std::borrow::Cow::Borrowed(_), 0) => {
                    invocation(&context.rsync, root, remote, context.delete, &job.kind, &[])
                }
                _ => {
                    let sent = sent_kind.insert(JobKind::Batch {
                        entries: confined.into_owned(),
                    });
                    invocation(&context.rsync, root, remote, context.delete, sent, &[])
                }
            };
            (run, context.batch_limit)
        }
        JobKind::Subtree { rel } => {
            let top = Entry {
                rel: crate::rel::Rel::verbatim(rel.clone()),
                op: crate::job::Op::Update,
                is_dir: true,
            };
            let confined = guard::confine_on_disk(root, std::slice::from_ref(&top));
            if *confined != *std::slice::from_ref(&top) {
                // An ancestor became a symlink: rsync would follow it. Push the symlink.
                let sent = sent_kind.insert(JobKind::Batch {
                    entries: confined.into_owned(),
                });
                (
                    invocation(&context.rsync, root, remote, context.delete, sent, &[]),
                    context.batch_limit,
                )
            } else {
                log::info!(
                    "{} -> {remote}: {} was deleted and is a directory again; syncing it with --delete",
                    root.display(),
                    rel.display()
                );
                let excluded = excluded_paths_under(root, rel, &context.filter);
                (job_invocation(&excluded), context.batch_limit)
            }
        }
        JobKind::Full { reason, .. } => {
            log::info!(
                "{} -> {remote}: full sync ({reason}) started",
                root.display()
            );
            let excluded = excluded_paths(root, &context.filter);
            log::debug!(
                "{} -> {remote}: {} excluded path(s) passed to rsync",
                root.display(),
                excluded.len()
            );
            let mut invocation = job_invocation(&excluded);
            window_refused(&mut invocation.args);
            (invocation, None)
        }
    };
    // The command line (thousands of quoted paths for a big batch) is only written out
    // for the debug log and the journal of a failure.
    if log::log_enabled!(log::Level::Debug) {
        log::debug!(
            "{} -> {remote}: {}",
            root.display(),
            describe(&context.rsync.binary, &invocation)
        );
    }
    let started = Instant::now();
    // The argument vector goes to rsync (a batch's thousands of paths are not kept while
    // it runs); a failure's command line and a retry rebuild it.
    let rebuild = |invocation: &mut Invocation<'_>| {
        let kind = sent_kind.as_ref().unwrap_or(&job.kind);
        invocation.args =
            self::invocation(&context.rsync, root, remote, context.delete, kind, &[]).args;
        window_refused(&mut invocation.args);
    };
    let run = |invocation: &mut Invocation<'_>| match &job.kind {
        JobKind::Batch { .. } | JobKind::Subtree { .. } | JobKind::Move { .. } => {
            rsync::run_observed(
                &context.rsync.binary,
                std::mem::take(&mut invocation.args),
                &invocation.stdin,
                limit,
                None,
                invocation.dir,
                Some(&context.cancel),
            )
        }
        JobKind::Full { .. } => {
            let mut progress =
                progress::Progress::new(format!("{} -> {remote}", root.display()), started);
            let mut on_stdout = |chunk: &[u8]| {
                if let Some(line) = progress.feed(chunk, Instant::now()) {
                    log::info!("{line}");
                }
            };
            rsync::run_observed(
                &context.rsync.binary,
                std::mem::take(&mut invocation.args),
                &invocation.stdin,
                limit,
                Some(&mut on_stdout),
                invocation.dir,
                Some(&context.cancel),
            )
        }
    };
    let nanosecond_window = invocation
        .args
        .iter()
        .any(|a| a == rsync::NANOSECOND_WINDOW);
    let mut finished = run(&mut invocation);
    if let Some(failure) = finished.disposition.failure() {
        if nanosecond_window && rsync::refuses_nanosecond_window(failure) {
            log::warn!(
                "{} -> {remote}: the receiver refuses {} (older than rsync 3.1.3, or refused in rsyncd.conf); its full syncs compare whole seconds from now on (a same-size rewrite within one second can survive them)",
                root.display(),
                rsync::NANOSECOND_WINDOW
            );
            context.set_seconds_only(job.target.root, job.target.remote);
            rebuild(&mut invocation);
            finished = run(&mut invocation);
        }
    }
    let command = match finished.disposition {
        Disposition::Done => String::new(),
        _ => {
            rebuild(&mut invocation);
            describe(&context.rsync.binary, &invocation)
        }
    };
    log::debug!(
        "{} -> {remote}: rsync done in {:.3}s: {:?}",
        root.display(),
        started.elapsed().as_secs_f64(),
        finished.disposition
    );
    clean_temp_files(context, &job, finished.disposition.failure());
    let disposition = settle(root, &job.kind, unsent, finished);
    PushOutcome {
        job,
        disposition,
        unsent,
        command,
    }
}

/// What one job runs: rsync's arguments, its working directory and its stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation<'r> {
    /// The argument vector after the program.
    pub args: Argv,
    /// The working directory (the root, for a batch whose paths are `./rel` arguments).
    pub dir: Option<&'r Path>,
    /// Bytes on rsync's stdin: NUL-separated paths (big batch) or exclude patterns (full
    /// sync), or nothing.
    pub stdin: Vec<u8>,
}

/// The one place that decides what a job runs: [`run_job`] runs it and `--check`
/// prints it. A batch passes its paths as arguments when they fit [`rsync::ARGV_BUDGET`]
/// and on stdin otherwise; a full sync gets `excluded` (anchored patterns) on stdin and
/// [`progress::RSYNC_OPTION`] for its progress lines.
pub fn invocation<'r>(
    rsync: &RsyncConfig,
    root: &'r Path,
    remote: &Remote,
    delete: bool,
    kind: &JobKind,
    excluded: &[OsString],
) -> Invocation<'r> {
    match kind {
        JobKind::Batch { entries } | JobKind::Move { entries, .. } => {
            match rsync::batch_argv(rsync, remote, delete, entries) {
                Some(args) => Invocation {
                    args,
                    dir: Some(root),
                    stdin: Vec::new(),
                },
                None => Invocation {
                    args: rsync::args(rsync, root, remote, RunKind::Batch { delete }, &[]).into(),
                    dir: None,
                    stdin: rsync::batch_stdin(entries),
                },
            }
        }
        JobKind::Subtree { rel } => Invocation {
            args: rsync::args(rsync, root, remote, RunKind::Subtree { rel }, &[]).into(),
            dir: Some(root),
            stdin: rsync::exclude_stdin(excluded),
        },
        JobKind::Full { extra_excludes, .. } => {
            let mut args = rsync::args(
                rsync,
                root,
                remote,
                RunKind::Full { delete },
                extra_excludes,
            );
            // Progress on stdout, read by `progress.rs`; before the source and destination.
            args.insert(args.len().saturating_sub(2), progress::RSYNC_OPTION.into());
            Invocation {
                args: args.into(),
                dir: None,
                stdin: rsync::exclude_stdin(excluded),
            }
        }
    }
}

/// Resolves a partial transfer: per-path fates for a batch (looking at the local files
/// now, see [`fates`]); a recursive run that only saw files vanish (24) is done, the
/// events that removed them are queued.
fn settle(root: &Path, kind: &JobKind, unsent: usize, finished: rsync::Finished) -> Disposition {
    let Disposition::Partial { failure, .. } = finished.disposition else {
        return finished.disposition;
    };
    match kind {
        JobKind::Batch { entries } | JobKind::Move { entries, .. } => {
            let entries = &entries[..entries.len() - unsent];
            let forms: Vec<fates::LocalForm> =
                entries.iter().map(|e| fates::local_form(root, e)).collect();
            let fates = fates::fates(root, entries, &forms, finished.reported.as_deref());
            log_fates(root, entries, &fates);
            Disposition::Partial { failure, fates }
        }
        JobKind::Subtree { .. } | JobKind::Full { .. } if failure.code == Some(24) => {
            Disposition::Done
        }
        // The directory's parent is no longer a directory (a file, a symlink loop): rsync
        // cannot reach it (`link_stat … Not a directory`), and the change that replaced
        // the parent, queued on its own, replaces everything below it remotely.
        JobKind::Subtree { rel }
            if fates::local_form(
                root,
                &Entry {
                    rel: crate::rel::Rel::verbatim(rel.clone()),
                    op: crate::job::Op::Delete,
                    is_dir: true,
                },
            ) == fates::LocalForm::Gone =>
        {
            log::debug!(
                "{}: {} is below something that is no longer a directory; its subtree sync is moot",
                root.display(),
                rel.display()
            );
            Disposition::Done
        }
        JobKind::Subtree { .. } | JobKind::Full { .. } => Disposition::Partial {
            failure,
            fates: Vec::new(),
        },
    }
}

fn log_fates(root: &Path, entries: &[Entry], fates: &[crate::job::PathFate]) {
    for (entry, fate) in entries.iter().zip(fates) {
        if *fate == crate::job::PathFate::Gone {
            log::debug!(
                "{}: {} {} no longer exists as queued; not retried",
                root.display(),
                entry.op,
                entry.rel.display()
            );
        }
    }
}

/// The command line of `invocation` for logs, the journal and `--check`, quoted for a
/// POSIX shell, `cd DIR && ` first when it runs in the root.
pub fn describe(program: &Path, invocation: &Invocation<'_>) -> String {
    let command = rsync::describe(program, &invocation.args);
    match invocation.dir {
        Some(dir) => format!(
            "cd {} && {command}",
            shell_words::quote(&dir.to_string_lossy())
        ),
        None => command,
    }
}

/// How many entries from the start of a batch fit in `max_bytes` of file data (at least
/// one). A size is `lstat`ed by the first batch of any remote that sends the path after
/// its latest change and kept beside the shared path ([`crate::rel::Rel::size`]), so ten
/// remotes of a root measure a burst once, not ten times (the queues forget it at the
/// next change; a size a few writes old only moves the cut, it decides nothing else).
fn within_bytes(root: &Path, entries: &[Entry], max_bytes: u64) -> usize {
    let mut bytes = 0u64;
    for (i, entry) in entries.iter().enumerate() {
        if entry.op == crate::job::Op::Update && !entry.is_dir {
            bytes += entry.rel.size().unwrap_or_else(|| {
                let size = std::fs::symlink_metadata(root.join(&entry.rel)).map_or(0, |m| m.len());
                entry.rel.set_size(size);
                size
            });
        }
        if i > 0 && bytes > max_bytes {
            return i;
        }
    }
    entries.len()
}

/// Anchored patterns for every top-most excluded path under `root`, so that a recursive
/// rsync never carries what `<filter>` excludes (rsync cannot evaluate our regexes).
pub fn excluded_paths(root: &Path, filter: &Filter) -> Vec<OsString> {
    excluded_paths_under(root, Path::new(""), filter)
}

/// As [`excluded_paths`], for the directory `rel` under `root` only (subtree syncs); the
/// patterns stay root-relative.
pub fn excluded_paths_under(root: &Path, rel: &Path, filter: &Filter) -> Vec<OsString> {
    excluded_rel_under(root, rel, filter)
        .iter()
        .map(|rel| rsync::exact_pattern(rel))
        .collect()
}

/// The top-most excluded paths under the directory `rel` of `root`, root-relative.
pub fn excluded_rel_under(root: &Path, rel: &Path, filter: &Filter) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if filter.is_empty() {
        return out;
    }
    let mut stack = vec![rel.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(read) = std::fs::read_dir(root.join(&dir)) else {
            continue;
        };
        for entry in read.flatten() {
            let rel = dir.join(entry.file_name());
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if filter.matches(&rel, is_dir) {
                out.push(rel);
            } else if is_dir {
                stack.push(rel);
            }
        }
    }
    out
}

/// A plain rsync configuration with these `commonParams`, for argument-vector tests.
#[cfg(test)]
pub(crate) fn rsync_config(common: &[&str]) -> RsyncConfig {
    RsyncConfig {
        common_params: common.iter().map(|s| (*s).to_owned()).collect(),
        auth: None,
        port: None,
        timeout: None,
        ssh: false,
        binary: PathBuf::from("rsync"),
        warm: crate::config::WarmConfig::default(),
        share_ssh: true,
        ssh_control_dir: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{Entry, Op};

    #[test]
    fn invocation_is_what_check_prints_and_workers_run() {
        let rsync = rsync_config(&["-a"]);
        let remote = Remote::Local {
            path: PathBuf::from("/m"),
        };
        let root = Path::new("/w");
        let entry = |rel: String| Entry {
            rel: rel.into(),
            op: Op::Update,
            is_dir: false,
        };
        let small = JobKind::Batch {
            entries: vec![entry("a b".into())],
        };
        let run = invocation(&rsync, root, &remote, true, &small, &[]);
        assert_eq!((run.dir, run.stdin.len()), (Some(root), 0));
        assert_eq!(
            describe(&rsync.binary, &run),
            "cd /w && rsync -a --no-recursive --dirs --relative --ignore-times --delete-missing-args --force -- './a b' /m/"
        );
        let big = JobKind::Batch {
            entries: (0..200).map(|i| entry(format!("{i:04096}"))).collect(),
        };
        let run = invocation(&rsync, root, &remote, false, &big, &[]);
        assert_eq!(run.dir, None);
        assert!(run.args.iter().any(|a| a == "--files-from=-"));
        assert_eq!(run.stdin.len(), 200 * 4097);
        let full = JobKind::Full {
            reason: "test",
            extra_excludes: Vec::new(),
        };
        let run = invocation(&rsync, root, &remote, true, &full, &["/x".into()]);
        assert_eq!(
            describe(&rsync.binary, &run),
            "rsync -a --recursive --delete --from0 '--exclude-from=-' '--modify-window=-1' '--info=progress2' /w/ /m/"
        );
        assert_eq!(run.stdin, b"/x\0");
    }

    #[test]
    fn batch_sizes_are_measured_once_and_kept_beside_the_shared_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (rel, len) in [("a", 100), ("b", 100), ("c", 100)] {
            std::fs::write(dir.path().join(rel), vec![b'x'; len]).expect("write");
        }
        let entry = |rel: &str| Entry {
            rel: rel.into(),
            op: Op::Update,
            is_dir: false,
        };
        let entries = [entry("a"), entry("b"), entry("c")];
        assert_eq!(within_bytes(dir.path(), &entries, 250), 2);
        assert_eq!(
            entries.iter().map(|e| e.rel.size()).collect::<Vec<_>>(),
            [Some(100); 3]
        );
        // Another remote's batch of the same paths reads the kept sizes, not the files.
        std::fs::write(dir.path().join("a"), vec![b'x'; 1000]).expect("write");
        assert_eq!(within_bytes(dir.path(), &entries, 250), 2);
        // The queues forget a size when its path changes: measured again.
        entries[0].rel.forget_size();
        assert_eq!(within_bytes(dir.path(), &entries, 250), 1);
    }

    #[test]
    fn excluded_paths_lists_top_most_matches() {
        let dir = tempfile::tempdir().expect("tempdir");
        for rel in [
            "keep.txt",
            "skip.gz",
            "cache/inner.txt",
            "sub/deeper.gz",
            "sub/ok",
        ] {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, b"x").expect("write");
        }
        let filter = Filter::from_patterns(&[r"(.*)\.gz", r"^cache/*"]).expect("re");
        let mut found = excluded_paths(dir.path(), &filter);
        found.sort();
        assert_eq!(
            found,
            ["/cache", "/skip.gz", "/sub/deeper.gz"].map(OsString::from)
        );
        // A subtree sync lists only what is below its directory, still root-relative
        // (its transfer root is the root: `--relative ./sub`).
        assert_eq!(
            excluded_paths_under(dir.path(), Path::new("sub"), &filter),
            [OsString::from("/sub/deeper.gz")]
        );
    }
}
