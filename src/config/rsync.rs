//! `<sersync><rsync>`: how rsync is invoked (common parameters, daemon login, port,
//! I/O timeout, ssh, and the new `<binary path>` and `<update start>`).
//!
//! `-u` (`--update`, in the stock `-artuz`) is removed from `commonParams` unless
//! `<update start="true"/>` asks for it: rsync's "receiver is newer" rule beats even
//! `--ignore-times`, so a file that arrives with an older mtime (`tar x`, `cp -p`,
//! `rsync -a`, `unzip`, `mv` of an older file over a newer one) would never replace the
//! mirror's copy, and full syncs could not repair it. In a mirror the source is the truth.

use std::path::PathBuf;

use super::tree::Node;

use super::ctx::Ctx;
use super::{Auth, RsyncConfig, WarmConfig, validate};

/// Reads `<rsync>`; a missing element gives sersync's defaults (`-artuz`, no auth, ssh off).
/// With `pushes` (not a `-m` run) the rsync program must be found; an error about it points
/// at `<binary>`, else `<rsync>`, else `outer` (the enclosing element).
pub(super) fn read(
    ctx: &mut Ctx<'_>,
    node: Option<Node<'_>>,
    outer: usize,
    pushes: bool,
) -> RsyncConfig {
    let rsync = read_element(ctx, node);
    if pushes {
        let binary = node.and_then(|n| ctx.child(n, "binary"));
        let at = binary.or(node).map_or(outer, |n| n.start());
        validate::rsync_found(ctx, at, &rsync.binary);
    }
    rsync
}

fn read_element(ctx: &mut Ctx<'_>, node: Option<Node<'_>>) -> RsyncConfig {
    let mut rsync = RsyncConfig {
        common_params: vec!["-artuz".to_owned()],
        auth: None,
        port: None,
        timeout: None,
        ssh: false,
        binary: PathBuf::from("rsync"),
        warm: WarmConfig::default(),
        share_ssh: true,
        ssh_control_dir: None,
    };
    let Some(node) = node else {
        strip_update(&mut rsync.common_params);
        return rsync;
    };
    ctx.check_attrs(node, &[]);
    ctx.check_children(
        node,
        &[
            "commonParams",
            "auth",
            "userDefinedPort",
            "timeout",
            "ssh",
            "binary",
            "update",
            "warm",
        ],
    );
    let keep_update = ctx.child(node, "update").is_some_and(|update| {
        ctx.check_attrs(update, &["start"]);
        ctx.flag(update, "start", false)
    });
    let mut params_pos = None;
    if let Some(params) = ctx.child(node, "commonParams") {
        ctx.check_attrs(params, &["params"]);
        if let Some(attr) = ctx.attr(params, "params") {
            params_pos = Some((attr.pos, attr.value.to_owned()));
            match shell_words::split(attr.value) {
                Ok(words) => rsync.common_params = words,
                Err(_) => ctx.error(
                    attr.pos,
                    format!(
                        "<commonParams params=\"{}\">: unbalanced quotes",
                        attr.value
                    ),
                ),
            }
            if !rsync.common_params.iter().any(|w| is_recursive(w)) {
                let msg = format!(
                    "<commonParams params=\"{}\">: no -a or -r, directories are not pushed",
                    attr.value
                );
                ctx.warn(attr.pos, msg);
            }
        }
    }
    if let Some(ssh) = ctx.child(node, "ssh") {
        ctx.check_attrs(ssh, &["start", "shareConnection"]);
        rsync.ssh = ctx.flag(ssh, "start", false);
        rsync.share_ssh = strict_flag(ctx, ssh, "shareConnection", true);
    }
    if let Some(auth) = ctx.child(node, "auth") {
        rsync.auth = read_auth(ctx, auth, rsync.ssh);
    }
    if let Some(port) = ctx.child(node, "userDefinedPort") {
        ctx.check_attrs(port, &["start", "port"]);
        let start = ctx.flag(port, "start", false);
        let value = ctx.port(port, "port");
        if start {
            rsync.port = value;
            if ctx
                .attr(port, "port")
                .is_none_or(|a| a.value.trim().is_empty())
            {
                ctx.error(
                    port.start(),
                    "<userDefinedPort start=\"true\"> without port",
                );
            }
        }
    }
    if let Some(timeout) = ctx.child(node, "timeout") {
        ctx.check_attrs(timeout, &["start", "time"]);
        let start = ctx.flag(timeout, "start", false);
        let value = ctx.integer(timeout, "time", 0, u32::MAX);
        if start {
            rsync.timeout = value;
            if ctx
                .attr(timeout, "time")
                .is_none_or(|a| a.value.trim().is_empty())
            {
                ctx.error(timeout.start(), "<timeout start=\"true\"> without time");
            }
        }
    }
    if let Some(binary) = ctx.child(node, "binary") {
        ctx.check_attrs(binary, &["path"]);
        rsync.binary = validate::rsync_binary(ctx, binary);
    }
    if !keep_update && strip_update(&mut rsync.common_params) {
        if let Some((pos, value)) = params_pos {
            let msg = format!(
                "<commonParams params=\"{value}\">: -u (--update) removed: it keeps a mirror file that is newer than the source's (tar x, cp -p, mv of an older file) for ever; add <update start=\"true\"/> to <rsync> to keep it (two-way setups only)"
            );
            ctx.warn(pos, msg);
        }
    }
    if let Some(warm) = ctx.child(node, "warm") {
        rsync.warm = read_warm(ctx, warm);
    }
    rsync
}

/// Short options of rsync that take an argument: in a cluster, what follows one of them
/// is its argument (`-e ssh`, `-essh`, `-T/tmp`), not more options.
const SHORT_WITH_ARGUMENT: &[char] = &['e', 'B', 'f', 'T', 'M', '@'];

/// Removes `-u` from every short-option cluster (`-artuz` → `-artz`, `-u` alone goes
/// away) and every `--update`, leaving option arguments alone; true when it removed any.
pub(crate) fn strip_update(params: &mut Vec<String>) -> bool {
    let mut removed = false;
    let mut out = Vec::with_capacity(params.len());
    let mut next_is_argument = false;
    for word in params.drain(..) {
        if std::mem::take(&mut next_is_argument) {
            out.push(word);
            continue;
        }
        if word == "--update" {
            removed = true;
            continue;
        }
        let Some(cluster) = word.strip_prefix('-').filter(|c| !c.starts_with('-')) else {
            out.push(word);
            continue;
        };
        let mut kept = String::from("-");
        let mut chars = cluster.chars();
        while let Some(c) = chars.next() {
            if SHORT_WITH_ARGUMENT.contains(&c) {
                kept.push(c);
                let rest: String = chars.by_ref().collect();
                next_is_argument = rest.is_empty();
                kept.push_str(&rest);
            } else if c == 'u' {
                removed = true;
            } else {
                kept.push(c);
            }
        }
        if kept != "-" || cluster.is_empty() {
            out.push(kept);
        }
    }
    *params = out;
    removed
}

/// `<warm start idleSeconds>`; `idleSeconds` from 1 to 3600 (daemons commonly time out
/// an idle connection after 60 s or more, so the default of 20 stays well under).
fn read_warm(ctx: &mut Ctx<'_>, node: Node<'_>) -> WarmConfig {
    ctx.check_attrs(node, &["start", "idleSeconds"]);
    let mut warm = WarmConfig {
        start: ctx.flag(node, "start", true),
        ..WarmConfig::default()
    };
    if let Some(seconds) = ctx.integer(node, "idleSeconds", 1u64, 3600) {
        warm.idle = std::time::Duration::from_secs(seconds);
    }
    warm
}

/// A new boolean attribute: exactly `true` or `false` (absent: `default`); anything else
/// is an error at the value (a new setting has no sersync 2.5 configs to stay lenient for).
fn strict_flag(ctx: &mut Ctx<'_>, node: Node<'_>, name: &str, default: bool) -> bool {
    let Some(attr) = ctx.attr(node, name) else {
        return default;
    };
    match attr.value {
        "true" => true,
        "false" => false,
        value => {
            let msg = format!(
                "<{} {name}=\"{value}\">: expected true or false",
                node.name()
            );
            ctx.error(attr.pos, msg);
            default
        }
    }
}

/// True for an rsync option that makes it descend into directories.
fn is_recursive(word: &str) -> bool {
    matches!(word, "--archive" | "--recursive")
        || (word.starts_with('-') && !word.starts_with("--") && word.contains(['a', 'r']))
}

fn read_auth(ctx: &mut Ctx<'_>, node: Node<'_>, ssh: bool) -> Option<Auth> {
    ctx.check_attrs(node, &["start", "users", "passwordfile"]);
    if !ctx.flag(node, "start", false) {
        return None;
    }
    if ssh {
        let msg = "<auth start=\"true\"> cannot be combined with <ssh start=\"true\">: rsync accepts --password-file only for rsync daemons";
        ctx.error(node.start(), msg);
    }
    let user = ctx
        .attr(node, "users")
        .map(|a| a.value.trim())
        .filter(|v| !v.is_empty());
    if user.is_none() {
        ctx.error(node.start(), "<auth start=\"true\"> without users");
    }
    let password_file = validate::secret_file(ctx, node, "passwordfile");
    Some(Auth {
        user: user?.to_owned(),
        password_file: password_file?,
    })
}
