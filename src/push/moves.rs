//! A rename on the remote, from what the remote already holds, with rsync only (no
//! remote shell, on daemon, ssh and local remotes alike), in two steps:
//!
//! 1. Make the new name (this job). A directory: rsync with `to/` as the transfer root,
//!    `--recursive --delete`, and `--link-dest=` the old directory given relative to the
//!    destination (`../../old` for `to` = `a/new`): the receiver hard-links every file
//!    that matches instead of receiving it. Files: the directory of the new names is the
//!    transfer root, `--fuzzy --fuzzy` makes the receiver take a file of the same size
//!    and mtime as the basis of each new name (in the destination directory, and with
//!    the second `--fuzzy` in the `--link-dest` directory, the old names' directory), so
//!    only block checksums travel; a file that keeps its name in another directory is
//!    hard-linked. With `--inplace` in `commonParams`, `--copy-dest` stands for
//!    `--link-dest`: a later in-place write through one name must not change the other.
//!    Without it rsync writes into a temporary file and renames it, which breaks the
//!    link.
//! 2. Only when step 1 succeeded: the deletes of the old names, queued meanwhile
//!    (`coalesce::queue`), as a batch like any other.
//!
//! A remote that refuses the options (`refuse options` in rsyncd.conf) is remembered and
//! gets the plain form from then on (a subtree sync of a directory, a batch of files);
//! so does a move whose first step failed for another reason than the remote being
//! down. File moves, and directory moves onto a name the remote may hold something at
//! already (`mv release release.old; mv release.new release`: the queue tells), run
//! with `--checksum`: a file kept there must have the new content, not only its size
//! and mtime. The basis itself is what the remote got for the old name, unless the queue
//! knows better (then the move is an upload). A basis the remote does not have (gone,
//! or never pushed) costs bytes, not correctness: rsync then sends what it cannot link.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::rsync::{self, Finished};
use super::{PushContext, guard, invocation};
use crate::argv::Argv;
use crate::config::{Remote, RsyncConfig};
use crate::filter::Filter;
use crate::job::{Disposition, Entry, JobKind, Op, PushFailure, PushJob};

/// How the remote makes a new name from an old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// `--link-dest`: unchanged files become hard links.
    Link,
    /// `--copy-dest`: unchanged files are copied on the remote (`--inplace`).
    Copy,
}

impl Basis {
    /// The form `commonParams` allows.
    pub fn for_params(common_params: &[String]) -> Basis {
        if common_params.iter().any(|p| p == "--inplace") {
            Basis::Copy
        } else {
            Basis::Link
        }
    }

    fn option(self, rel: &Path) -> OsString {
        let mut arg = OsString::from(match self {
            Basis::Link => "--link-dest=",
            Basis::Copy => "--copy-dest=",
        });
        arg.push(rel.as_os_str());
        arg
    }
}

/// `from` as a path relative to the directory `dest_dir` (both root-relative), as
/// rsync wants a basis directory: `../` up to the root, then down.
pub fn relative_to(dest_dir: &Path, from: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in dest_dir.components() {
        if matches!(component, Component::Normal(_)) {
            out.push("..");
        }
    }
    out.push(from);
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

fn dir_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new(""))
}

/// `root/rel/` or `dest/rel/`: a directory given as a transfer root.
fn slash_join(base: &std::ffi::OsStr, rel: &Path) -> OsString {
    let mut out = base.to_os_string();
    if !out.as_bytes().ends_with(b"/") {
        out.push("/");
    }
    if !rel.as_os_str().is_empty() {
        out.push(rel.as_os_str());
        out.push("/");
    }
    out
}

/// The first step's argument vector and stdin. `moves` are `(from, to)`; a directory
/// move has one, file moves share `dir_of(to)` and `dir_of(from)`. `excluded` (a
/// directory move) are the excluded paths below `to`, relative to it.
pub fn move_invocation(
    rsync: &RsyncConfig,
    root: &Path,
    remote: &Remote,
    moves: &[(PathBuf, PathBuf)],
    is_dir: bool,
    by_content: bool,
    excluded: &[PathBuf],
) -> (Vec<OsString>, Vec<u8>) {
    let basis = Basis::for_params(&rsync.common_params);
    let mut args = rsync::leading_params(rsync, remote);
    let (Some((from, to)), true) = (moves.first(), is_dir || !moves.is_empty()) else {
        return (args, Vec::new());
    };
    let mut stdin = Vec::new();
    // A file already at a new name on the remote (a replaced target, what a directory
    // there held) must never pass for the new content by size and mtime alone (a
    // same-size rewrite within the same second would).
    if by_content {
        args.push("--checksum".into());
    }
    let dest_dir = if is_dir {
        args.extend(["--recursive", "--delete"].map(OsString::from));
        args.push(basis.option(&relative_to(to, from)));
        args.extend(["--from0", "--exclude-from=-"].map(OsString::from));
        for rel in excluded {
            stdin.extend_from_slice(rsync::exact_pattern(rel).as_bytes());
            stdin.push(0);
        }
        to.as_path()
    } else {
        let dest_dir = dir_of(to);
        args.extend(["--fuzzy", "--fuzzy"].map(OsString::from));
        if dir_of(from) != dest_dir {
            args.push(basis.option(&relative_to(dest_dir, dir_of(from))));
        }
        args.extend(["--from0", "--files-from=-"].map(OsString::from));
        for (_, to) in moves {
            if let Some(name) = to.file_name() {
                stdin.extend_from_slice(name.as_bytes());
                stdin.push(0);
            }
        }
        dest_dir
    };
    args.extend(rsync::remote_options(rsync, remote));
    if matches!(remote, Remote::Ssh { .. }) {
        // The destination names a path: it travels in the protocol, not through the
        // remote shell.
        args.push("--protect-args".into());
    }
    args.push("--".into());
    args.push(slash_join(root.as_os_str(), dest_dir));
    args.push(slash_join(&rsync::destination(rsync, remote), dest_dir));
    (args, stdin)
}

/// Whether `failure` is a daemon refusing one of the options of a move.
pub fn refuses_move_options(failure: &PushFailure) -> bool {
    let reason = failure.reason.as_str();
    reason.contains("configured to refuse")
        && ["--link-dest", "--copy-dest", "--fuzzy", "--protect-args"]
            .iter()
            .any(|option| reason.contains(option))
}

/// The excluded paths below the directory `to`, relative to it.
fn excluded_below(root: &Path, to: &Path, filter: &Filter) -> Vec<PathBuf> {
    super::excluded_rel_under(root, to, filter)
        .into_iter()
        .filter_map(|rel| rel.strip_prefix(to).ok().map(Path::to_path_buf))
        .collect()
}

/// Runs a move job: the first step, or its plain form.
pub(super) fn run(
    context: &PushContext,
    job: &PushJob,
    root: &Path,
    remote: &Remote,
) -> (Disposition, String) {
    let JobKind::Move {
        moves,
        is_dir,
        by_content,
        entries,
    } = &job.kind
    else {
        return (Disposition::Done, String::new());
    };
    let is_dir = *is_dir;
    let updates: Vec<Entry> = entries
        .iter()
        .filter(|e| e.op == Op::Update)
        .cloned()
        .collect();
    let target = (job.target.root, job.target.remote);
    // Nothing is read through a symlinked parent, nor through `to` itself as the
    // transfer root: such a move goes the plain way, which confines it.
    // With `-u` kept (`<update start="true"/>`), rsync compares a missing file's mtime
    // with its fuzzy basis, whichever file that is, and skips the file when the basis
    // is newer: file moves then go the plain way, where `-u` means what it says.
    let update_kept = !is_dir && {
        let mut params = context.rsync.common_params.clone();
        crate::config::strip_update(&mut params)
    };
    let as_move = !update_kept
        && guard::confine_on_disk(root, &updates) == updates
        && (!is_dir
            || moves
                .iter()
                .all(|(_, to)| std::fs::symlink_metadata(root.join(to)).is_ok_and(|m| m.is_dir())));
    let refused = context
        .plain_moves
        .lock()
        .is_ok_and(|set| set.contains(&target));
    let mut commands = Vec::new();
    let mut first = None;
    if as_move && !refused && !updates.is_empty() {
        let excluded = match moves.first() {
            Some((_, to)) if is_dir => excluded_below(root, to, &context.filter),
            _ => Vec::new(),
        };
        let (args, stdin) = move_invocation(
            &context.rsync,
            root,
            remote,
            moves,
            is_dir,
            *by_content,
            &excluded,
        );
        let args = Argv::from(args);
        commands.push(rsync::describe(&context.rsync.binary, &args));
        log::debug!("{} -> {remote}: {}", root.display(), commands[0]);
        let finished = rsync::run_observed(
            &context.rsync.binary,
            args,
            &stdin,
            context.batch_limit,
            None,
            None,
            Some(&context.cancel),
        );
        first = Some(finished);
    }
    let made = match first_step(first.map(|f| f.disposition)) {
        FirstStep::Made => Disposition::Done,
        FirstStep::Down(down) => return (down, commands.join("; ")),
        FirstStep::Plain(failure) => {
            if let Some(failure) = &failure {
                if refuses_move_options(failure) {
                    log::warn!(
                        "{} -> {remote}: the daemon refuses the options that make a rename from what it holds ({}); renames are pushed as uploads from now on (allow --link-dest and --fuzzy in rsyncd.conf to avoid that)",
                        root.display(),
                        failure.reason
                    );
                    if let Ok(mut set) = context.plain_moves.lock() {
                        set.insert(target);
                    }
                } else {
                    log::info!(
                        "{} -> {remote}: rename could not be made from the remote's copy ({}); uploading it",
                        root.display(),
                        failure.reason
                    );
                }
            }
            let (disposition, command) = plain(context, root, remote, moves, is_dir, &updates);
            commands.push(command);
            disposition
        }
    };
    (made, commands.join("; "))
}

/// What a move job does after its first step (`None`: not tried).
#[derive(Debug, PartialEq, Eq)]
enum FirstStep {
    /// The new names are there (files that vanished meanwhile count: the events that
    /// removed them are queued).
    Made,
    /// The remote is down: the move is a move again once it is back.
    Down(Disposition),
    /// The plain form goes now (`Some`: why the move could not be made).
    Plain(Option<PushFailure>),
}

fn first_step(disposition: Option<Disposition>) -> FirstStep {
    match disposition {
        Some(Disposition::Done) => FirstStep::Made,
        Some(Disposition::Partial { failure, .. }) if failure.code == Some(24) => FirstStep::Made,
        // Exit 11 (file I/O) is the receiver failing to make the transfer root, e.g. its
        // parent is not there yet (made by a later move that has not run): the plain form
        // makes the parents (`--relative`). As "down" it was retried as the same move,
        // the remote's only probe, for ever (churn seed 9870762064587).
        Some(Disposition::RemoteDown(failure)) if failure.code == Some(11) => {
            FirstStep::Plain(Some(failure))
        }
        Some(down @ Disposition::RemoteDown(_)) => FirstStep::Down(down),
        other => FirstStep::Plain(other.as_ref().and_then(Disposition::failure).cloned()),
    }
}

/// The plain form of the first step: a subtree sync of a moved directory, a batch of
/// the new file names (every byte travels).
fn plain(
    context: &PushContext,
    root: &Path,
    remote: &Remote,
    moves: &[(PathBuf, PathBuf)],
    is_dir: bool,
    updates: &[Entry],
) -> (Disposition, String) {
    let (kind, excluded) = match moves.first() {
        Some((_, to))
            if is_dir
                && *guard::confine_on_disk(root, &updates[..updates.len().min(1)])
                    == updates[..updates.len().min(1)] =>
        {
            let excluded = super::excluded_paths_under(root, to, &context.filter);
            (JobKind::Subtree { rel: to.clone() }, excluded)
        }
        _ => (
            JobKind::Batch {
                entries: guard::confine_on_disk(root, updates).into_owned(),
            },
            Vec::new(),
        ),
    };
    let run = invocation(
        &context.rsync,
        root,
        remote,
        context.delete,
        &kind,
        &excluded,
    );
    let command = super::describe(&context.rsync.binary, &run);
    let finished = run_invocation(context, run);
    let disposition = match finished.disposition {
        Disposition::Partial { failure, .. } if failure.code == Some(24) => Disposition::Done,
        // Which paths rsync named is not kept here, so every new name still there in the
        // form queued is retried. One that is not (missing, or below what is no longer a
        // directory: `link_stat … Not a directory` for ever) is gone: the change that
        // removed or replaced it, queued on its own, covers it remotely. Retried, it
        // failed alone again and again (churn seed 1592590337 under load: `mv d n31/m`,
        // then n31 a file).
        Disposition::Partial { failure, .. } => {
            let forms: Vec<super::fates::LocalForm> = updates
                .iter()
                .map(|e| super::fates::local_form(root, e))
                .collect();
            Disposition::Partial {
                failure,
                fates: super::fates::fates(root, updates, &forms, None),
            }
        }
        other => other,
    };
    (disposition, command)
}

fn run_invocation(context: &PushContext, run: super::Invocation<'_>) -> Finished {
    rsync::run_observed(
        &context.rsync.binary,
        run.args,
        &run.stdin,
        context.batch_limit,
        None,
        run.dir,
        Some(&context.cancel),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::rsync_config;

    #[test]
    fn basis_directories_are_relative_to_the_destination() {
        // (destination directory, old directory, rsync's basis argument)
        let table = [
            ("new", "old", "../old"),
            ("a/b/new", "old", "../../../old"),
            ("", "a", "a"),
            ("a", "", ".."),
            ("", "", "."),
            ("x y/-z", "p/q", "../../p/q"),
        ];
        for (dest, from, expected) in table {
            assert_eq!(
                relative_to(Path::new(dest), Path::new(from)),
                Path::new(expected),
                "{dest} {from}"
            );
        }
    }

    #[test]
    fn move_argument_vectors() {
        let local = Remote::Local {
            path: PathBuf::from("/m"),
        };
        let root = Path::new("/w");
        let pair = |from: &str, to: &str| (PathBuf::from(from), PathBuf::from(to));
        let text = |args: &[OsString]| rsync::describe(Path::new("rsync"), args);
        let (args, stdin) = move_invocation(
            &rsync_config(&["-a"]),
            root,
            &local,
            &[pair("rel/old", "rel/new")],
            true,
            true,
            &[PathBuf::from("x.tmp")],
        );
        assert_eq!(
            text(&args),
            "rsync -a --checksum --recursive --delete '--link-dest=../../rel/old' --from0 '--exclude-from=-' -- /w/rel/new/ /m/rel/new/"
        );
        assert_eq!(stdin, b"/x.tmp\0");
        let (args, stdin) = move_invocation(
            &rsync_config(&["-a", "--inplace"]),
            root,
            &local,
            &[pair("a/x", "b/y"), pair("a/-z", "b/-z")],
            false,
            true,
            &[],
        );
        assert_eq!(
            text(&args),
            "rsync -a --inplace --checksum --fuzzy --fuzzy '--copy-dest=../a' --from0 '--files-from=-' -- /w/b/ /m/b/"
        );
        assert_eq!(stdin, b"y\0-z\0");
        let (args, _) = move_invocation(
            &rsync_config(&["-a"]),
            root,
            &local,
            &[pair("x", "y")],
            false,
            true,
            &[],
        );
        assert_eq!(
            text(&args),
            "rsync -a --checksum --fuzzy --fuzzy --from0 '--files-from=-' -- /w/ /m/"
        );
    }

    #[test]
    fn what_follows_a_first_step() {
        let failure = |code: i32| PushFailure {
            code: Some(code),
            reason: format!("rsync exited with code {code}"),
        };
        let partial = |code: i32| Disposition::Partial {
            failure: failure(code),
            fates: Vec::new(),
        };
        // (first step, what follows)
        let table = [
            (Some(Disposition::Done), FirstStep::Made),
            (Some(partial(24)), FirstStep::Made),
            (Some(partial(23)), FirstStep::Plain(Some(failure(23)))),
            (
                Some(Disposition::ConfigError(failure(4))),
                FirstStep::Plain(Some(failure(4))),
            ),
            // A receiver that cannot make the new name's directory (its parent missing).
            (
                Some(Disposition::RemoteDown(failure(11))),
                FirstStep::Plain(Some(failure(11))),
            ),
            (
                Some(Disposition::RemoteDown(failure(10))),
                FirstStep::Down(Disposition::RemoteDown(failure(10))),
            ),
            (
                Some(Disposition::RemoteDown(failure(255))),
                FirstStep::Down(Disposition::RemoteDown(failure(255))),
            ),
            (None, FirstStep::Plain(None)),
        ];
        for (disposition, expected) in table {
            assert_eq!(first_step(disposition.clone()), expected, "{disposition:?}");
        }
    }

    #[test]
    fn refusals_of_move_options_are_recognised() {
        let failure = |reason: &str| PushFailure {
            code: Some(4),
            reason: reason.to_owned(),
        };
        assert!(refuses_move_options(&failure(
            "rsync exited with code 4: rsync: The server is configured to refuse --link-dest"
        )));
        assert!(!refuses_move_options(&failure(
            "rsync: The server is configured to refuse --modify-window (-@)"
        )));
        assert!(!refuses_move_options(&failure("auth failed")));
    }
}
