//! Checks that look at the filesystem: watch directories, local mirrors, secret files,
//! the failure journal and the rsync binary. Each records its problems in the context and
//! names the element and attribute it is about.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

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
            let quoted = shell_words::quote(&path.to_string_lossy()).into_owned();
            ctx.error_with_fix(
                attr.pos,
                format!("{what}: directory does not exist"),
                format!("create it (mkdir -p {quoted}) or correct the path"),
            );
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

/// `<binary path>`: a bare name (looked up in `PATH` by [`rsync_found`]), or an absolute
/// path to an existing file.
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
    if is_bare(&path) {
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

/// A bare rsync name must be found in `PATH` when the run pushes: without rsync every
/// change would only be journaled. `offset` is where the error points (the `<binary>`
/// element, or `<rsync>` / `<sersync>` when it is not given).
pub(super) fn rsync_found(ctx: &mut Ctx<'_>, offset: usize, binary: &Path) {
    if !is_bare(binary) {
        return;
    }
    let found = std::env::var_os("PATH")
        .is_some_and(|dirs| std::env::split_paths(&dirs).any(|dir| dir.join(binary).is_file()));
    if !found {
        let name = binary.display();
        ctx.error_with_fix(
            offset,
            format!("{name}: not found in PATH"),
            "install it (apt-get install rsync) or give its absolute path in <rsync><binary path=\"…\"/>"
                .to_owned(),
        );
    }
}

fn is_bare(path: &Path) -> bool {
    path.components().count() == 1 && matches!(path.components().next(), Some(Component::Normal(_)))
}

/// A host attribute (`<remote ip>`, `<deshost ip>`): every host attribute is checked
/// alike. A value starting with `-` cannot work (rsync and ssh would read it as an
/// option): an error, and `false`. Anything else that is neither an address nor a host
/// name (`{{ rsync_server_ip }}`, `{TARGET_HOST}`, `$remoteAddress`, non-ASCII) might
/// still resolve somewhere, so it is a warning.
pub(super) fn host(ctx: &mut Ctx<'_>, element: &str, name: &str, attr: Attr<'_>) -> bool {
    let value = attr.value.trim();
    let what = format!("<{element} {name}=\"{value}\">");
    if value.starts_with('-') {
        ctx.error(attr.pos, format!("{what}: not a host name"));
        return false;
    }
    if !is_host(value) {
        ctx.warn(
            attr.pos,
            format!(
                "{what}: neither a host name nor an address (a template placeholder left in?), connecting will likely fail"
            ),
        );
    }
    true
}

/// `[user@]host` where host is an IP address (`[::1]` too) or a DNS name: ASCII labels of
/// letters, digits, `-` and `_` (seen in real names), 1–63 bytes, dot-separated.
fn is_host(value: &str) -> bool {
    let host = value.rsplit_once('@').map_or(value, |(_, host)| host);
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The working directory when the first configuration was read: relative paths are
/// resolved against it once, so a reload after `-d` (which changes to `/`) keeps them.
fn start_dir() -> Result<&'static Path, String> {
    static START: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    START
        .get_or_init(|| std::env::current_dir().map_err(|e| e.to_string()))
        .as_deref()
        .map_err(Clone::clone)
}

/// A relative path that sersync 2.5 opened relative to its working directory
/// (`<failLog path="log/rsync_fail_log.sh">`): accepted with a warning, resolved once.
pub(super) fn relative_to_start(
    ctx: &mut Ctx<'_>,
    what: &str,
    attr: Attr<'_>,
    path: &Path,
) -> Option<PathBuf> {
    match start_dir() {
        Ok(dir) => {
            let resolved = dir.join(path);
            ctx.warn(
                attr.pos,
                format!(
                    "{what}: relative path, resolved against the working directory to {} (as sersync 2.5 did); an absolute path does not depend on where sersync starts",
                    resolved.display()
                ),
            );
            Some(resolved)
        }
        Err(err) => {
            ctx.error(
                attr.pos,
                format!("{what}: relative path, and the working directory is unknown: {err}"),
            );
            None
        }
    }
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
