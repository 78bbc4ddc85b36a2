//! Checks that look at the filesystem: watch directories, local mirrors, secret files,
//! the failure journal and the rsync binary. Each records its problems in the context and
//! names the element and attribute it is about.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use super::tree::Node;

use super::ctx::{Attr, Ctx};

/// `watch` of a `<localpath>`: an absolute, existing directory, returned without trailing
/// slash (sersync stripped one; we strip all).
pub(super) fn watch_dir(ctx: &mut Ctx<'_>, node: Node<'_>) -> Option<PathBuf> {
    let element = node.name();
    let Some(attr) = ctx
        .attr(node, "watch")
        .filter(|a| !a.value.trim().is_empty())
    else {
        ctx.error(
            node.start(),
            format!("<{element}> without watch (the directory to watch)"),
        );
        return None;
    };
    let path = strip_trailing_slashes(ctx.path(attr.value.trim()));
    let what = format!("<{element} watch=\"{}\">", path.display());
    if !path.is_absolute() {
        ctx.error(attr.pos, format!("{what}: not an absolute path"));
        return None;
    }
    match fs::metadata(&path) {
        Ok(meta) if meta.is_dir() => Some(path),
        Ok(_) => {
            ctx.error(attr.pos, format!("{what}: not a directory"));
            None
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            ctx.error(attr.pos, format!("{what}: directory does not exist"));
            None
        }
        Err(err) => {
            ctx.error(attr.pos, format!("{what}: cannot access: {err}"));
            None
        }
    }
}

/// `path` of a local `<remote>`: absolute, a directory if it exists (rsync creates it
/// otherwise), and neither inside the watch directory nor above it.
pub(super) fn local_remote(
    ctx: &mut Ctx<'_>,
    _node: Node<'_>,
    attr: Attr<'_>,
    root: Option<&Path>,
) -> Option<PathBuf> {
    let path = strip_trailing_slashes(ctx.path(attr.value.trim()));
    let what = format!("<remote path=\"{}\">", path.display());
    if path.as_os_str().is_empty() {
        ctx.error(attr.pos, "<remote path=\"\">: empty");
        return None;
    }
    if !path.is_absolute() {
        ctx.error(attr.pos, format!("{what}: not an absolute path"));
        return None;
    }
    if path.exists() && !path.is_dir() {
        ctx.error(attr.pos, format!("{what}: not a directory"));
        return None;
    }
    let root = root?;
    let (mirror, watched) = (resolve(&path), resolve(root));
    if mirror.starts_with(&watched) {
        let msg = format!(
            "{what}: inside the watch directory {}, it would copy into itself",
            root.display()
        );
        ctx.error(attr.pos, msg);
        return None;
    }
    if watched.starts_with(&mirror) {
        let msg = format!(
            "{what}: contains the watch directory {}, --delete would remove it",
            root.display()
        );
        ctx.error(attr.pos, msg);
        return None;
    }
    Some(path)
}

/// A file holding a secret (rsync password, API token): absolute, readable by us, and not
/// accessible by others (rsync refuses such a password file). Group access is a warning.
pub(super) fn secret_file(ctx: &mut Ctx<'_>, node: Node<'_>, name: &str) -> Option<PathBuf> {
    let element = node.name();
    let Some(attr) = ctx.attr(node, name).filter(|a| !a.value.trim().is_empty()) else {
        ctx.error(node.start(), format!("<{element}> without {name}"));
        return None;
    };
    let path = ctx.path(attr.value.trim());
    let what = format!("<{element} {name}=\"{}\">", path.display());
    if !path.is_absolute() {
        ctx.error(attr.pos, format!("{what}: not an absolute path"));
        return None;
    }
    // Look before opening: opening a FIFO would block the check.
    let meta = match fs::metadata(&path) {
        Ok(meta) if meta.is_file() => meta,
        Ok(_) => {
            ctx.error(attr.pos, format!("{what}: not a regular file"));
            return None;
        }
        Err(err) => {
            ctx.error(attr.pos, format!("{what}: cannot read: {err}"));
            return None;
        }
    };
    if let Err(err) = fs::File::open(&path) {
        ctx.error(attr.pos, format!("{what}: cannot read: {err}"));
        return None;
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o007 != 0 {
        ctx.error(
            attr.pos,
            format!("{what}: accessible by others (mode {mode:03o}), run chmod 600 on it"),
        );
        return None;
    }
    if mode & 0o070 != 0 {
        ctx.warn(
            attr.pos,
            format!("{what}: accessible by its group (mode {mode:03o}), chmod 600 is safer"),
        );
    }
    Some(path)
}

/// The failure journal: if it exists it must be a regular file; a world-writable one (as
/// sersync 2.5 left its `chmod 777` script) is a warning.
pub(super) fn fail_log_file(ctx: &mut Ctx<'_>, node: Node<'_>, path: &Path) {
    let pos = ctx.attr(node, "path").map_or(node.start(), |a| a.pos);
    let what = format!("<failLog path=\"{}\">", path.display());
    match fs::symlink_metadata(path) {
        Ok(meta) if !meta.is_file() => {
            ctx.error(pos, format!("{what}: exists and is not a regular file"))
        }
        Ok(meta) if meta.permissions().mode() & 0o022 != 0 => {
            let mode = meta.permissions().mode() & 0o777;
            ctx.warn(
                pos,
                format!("{what}: writable by others (mode {mode:03o}), run chmod 600 on it"),
            );
        }
        _ => {}
    }
}

/// `<binary path>`: a bare name looked up in `PATH` (a warning when not found), or an
/// absolute path to an existing file.
pub(super) fn rsync_binary(ctx: &mut Ctx<'_>, node: Node<'_>) -> PathBuf {
    let default = PathBuf::from("rsync");
    let Some(attr) = ctx
        .attr(node, "path")
        .filter(|a| !a.value.trim().is_empty())
    else {
        ctx.warn(node.start(), "<binary> without path, using rsync from PATH");
        return default;
    };
    let path = ctx.path(attr.value.trim());
    let what = format!("<binary path=\"{}\">", path.display());
    let is_bare = path.components().count() == 1
        && matches!(path.components().next(), Some(Component::Normal(_)));
    if is_bare {
        let found = std::env::var_os("PATH")
            .is_some_and(|dirs| std::env::split_paths(&dirs).any(|dir| dir.join(&path).is_file()));
        if !found {
            ctx.warn(attr.pos, format!("{what}: not found in PATH"));
        }
        return path;
    }
    if !path.is_absolute() {
        ctx.error(
            attr.pos,
            format!("{what}: neither a bare name nor an absolute path"),
        );
    } else if !path.is_file() {
        ctx.error(attr.pos, format!("{what}: no such file"));
    }
    path
}

/// `/a/b///` → `/a/b`; `/` stays `/`.
fn strip_trailing_slashes(path: PathBuf) -> PathBuf {
    let components: PathBuf = path.components().collect();
    if components.as_os_str().is_empty() {
        path
    } else {
        components
    }
}

/// The canonical form of `path`, following symlinks as far as the path exists, so that a
/// mirror that does not exist yet can still be compared with the watch directory.
fn resolve(path: &Path) -> PathBuf {
    let mut existing = path;
    let mut rest = Vec::new();
    loop {
        if let Ok(canonical) = existing.canonicalize() {
            return rest
                .iter()
                .rev()
                .fold(canonical, |acc, name| acc.join(name));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return path.components().collect(),
        }
    }
}
