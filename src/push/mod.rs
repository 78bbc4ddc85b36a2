//! The pusher pool: `-n` threads, each running one rsync per job.
//!
//! Input: `Receiver<PushJob>` (zero-capacity: a job is handed over only when a worker is
//! free, which is what lets the scheduler batch while all workers are busy). Output:
//! `Sender<PushOutcome>` back to the scheduler. Threads `sersync-push-{i}`; each ends when
//! the job channel is disconnected.

pub mod fates;
pub mod progress;
pub mod rsync;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::config::{Remote, RsyncConfig};
use crate::filter::Filter;
use crate::job::{Disposition, Entry, JobKind, PushFailure, PushJob, PushOutcome};
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
    /// Bytes of file data per batch at most (measured here, so the scheduler never
    /// touches the filesystem); a batch's first path always goes, however big.
    pub max_batch_bytes: u64,
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
    let Some((root, remote)) = context
        .roots
        .get(job.target.root)
        .and_then(|(root, remotes)| remotes.get(job.target.remote).map(|r| (root.as_path(), r)))
    else {
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
    let mut dir = None;
    let mut unsent = 0;
    let (args, stdin, limit) = match &job.kind {
        JobKind::Batch { entries } => {
            let sent = within_bytes(root, entries, context.max_batch_bytes);
            unsent = entries.len() - sent;
            let entries = &entries[..sent];
            if let Some(args) = rsync::batch_argv(&context.rsync, remote, context.delete, entries) {
                dir = Some(root);
                (args, Vec::new(), context.batch_limit)
            } else {
                let args = rsync::args(
                    &context.rsync,
                    root,
                    remote,
                    RunKind::Batch {
                        delete: context.delete,
                    },
                    &[],
                );
                (args, rsync::batch_stdin(entries), context.batch_limit)
            }
        }
        JobKind::Subtree { rel } => {
            log::info!(
                "{} -> {remote}: {} was deleted and is a directory again; syncing it with --delete",
                root.display(),
                rel.display()
            );
            dir = Some(root);
            let args = rsync::args(&context.rsync, root, remote, RunKind::Subtree { rel }, &[]);
            let excluded = excluded_paths_under(root, rel, &context.filter);
            (args, rsync::exclude_stdin(&excluded), context.batch_limit)
        }
        JobKind::Full {
            reason,
            extra_excludes,
        } => {
            log::info!(
                "{} -> {remote}: full sync ({reason}) started",
                root.display()
            );
            let args = rsync::args(
                &context.rsync,
                root,
                remote,
                RunKind::Full {
                    delete: context.delete,
                },
                extra_excludes,
            );
            // Progress on stdout, read by `progress.rs`; before the source and destination.
            let mut args = args;
            args.insert(args.len().saturating_sub(2), progress::RSYNC_OPTION.into());
            let excluded = excluded_paths(root, &context.filter);
            log::debug!(
                "{} -> {remote}: {} excluded path(s) passed to rsync",
                root.display(),
                excluded.len()
            );
            (args, rsync::exclude_stdin(&excluded), None)
        }
    };
    let mut command = rsync::describe(&context.rsync.binary, &args);
    if let Some(dir) = dir {
        command = format!(
            "cd {} && {command}",
            shell_words::quote(&dir.to_string_lossy())
        );
    }
    log::debug!("{} -> {remote}: {command}", root.display());
    let started = Instant::now();
    let finished = match &job.kind {
        JobKind::Batch { .. } | JobKind::Subtree { .. } => {
            rsync::run_observed(&context.rsync.binary, &args, &stdin, limit, None, dir)
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
                &args,
                &stdin,
                limit,
                Some(&mut on_stdout),
                None,
            )
        }
    };
    log::debug!(
        "{} -> {remote}: rsync done in {:.3}s: {:?}",
        root.display(),
        started.elapsed().as_secs_f64(),
        finished.disposition
    );
    let disposition = settle(root, &job.kind, unsent, finished);
    PushOutcome {
        job,
        disposition,
        unsent,
        command,
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
        JobKind::Batch { entries } => {
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
                    rel: rel.clone(),
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

/// How many entries from the start of a batch fit in `max_bytes` of file data (at least
/// one); sizes are `lstat`ed now.
fn within_bytes(root: &Path, entries: &[Entry], max_bytes: u64) -> usize {
    let mut bytes = 0u64;
    for (i, entry) in entries.iter().enumerate() {
        if entry.op == crate::job::Op::Update && !entry.is_dir {
            bytes += std::fs::symlink_metadata(root.join(&entry.rel)).map_or(0, |m| m.len());
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
                out.push(rsync::exact_pattern(&rel));
            } else if is_dir {
                stack.push(rel);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let filter = Filter::new(vec![
            regex::bytes::Regex::new(r"(.*)\.gz").expect("re"),
            regex::bytes::Regex::new(r"^cache/*").expect("re"),
        ]);
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
