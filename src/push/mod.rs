//! The pusher pool: `-n` threads, each running one rsync per job.
//!
//! Input: `Receiver<PushJob>` (zero-capacity: a job is handed over only when a worker is
//! free, which is what lets the scheduler batch while all workers are busy). Output:
//! `Sender<PushOutcome>` back to the scheduler. Threads `sersync-push-{i}`; each ends when
//! the job channel is disconnected.

pub mod progress;
pub mod rsync;
pub mod warm;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::config::{Remote, RsyncConfig};
use crate::filter::Filter;
use crate::job::{JobKind, PushJob, PushOutcome};
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
    /// Warm clients (`<rsync><warm>`), `None` when off.
    pub warm: Option<Arc<warm::WarmPool>>,
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
    let list = match &job.kind {
        JobKind::Batch { entries } => rsync::batch_stdin(entries),
        JobKind::Full { .. } => Vec::new(),
    };
    pool.run(job, &list, |job| run_cold(context, job))
}

/// Runs one job with a freshly started rsync.
fn run_cold(context: &PushContext, job: PushJob) -> PushOutcome {
    let Some((root, remote)) = context
        .roots
        .get(job.target.root)
        .and_then(|(root, remotes)| remotes.get(job.target.remote).map(|r| (root.as_path(), r)))
    else {
        let failure = crate::job::PushFailure {
            code: None,
            reason: format!("no remote {}", job.target),
            retryable: false,
        };
        return PushOutcome {
            job,
            result: Err(failure),
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
    let (args, stdin, limit) = match &job.kind {
        JobKind::Batch { entries } => {
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
    let result = match &job.kind {
        JobKind::Batch { .. } => {
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
        "{} -> {remote}: rsync done in {:.3}s: {}",
        root.display(),
        started.elapsed().as_secs_f64(),
        if result.is_ok() { "ok" } else { "failed" }
    );
    PushOutcome {
        job,
        result,
        command,
    }
}

/// Anchored patterns for every top-most excluded path under `root`, so that a recursive
/// rsync never carries what `<filter>` excludes (rsync cannot evaluate our regexes).
pub fn excluded_paths(root: &Path, filter: &Filter) -> Vec<OsString> {
    let mut out = Vec::new();
    if filter.is_empty() {
        return out;
    }
    let mut stack = vec![PathBuf::new()];
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
    }
}
