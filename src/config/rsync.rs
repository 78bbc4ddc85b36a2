//! `<sersync><rsync>`: how rsync is invoked (common parameters, daemon login, port,
//! I/O timeout, ssh, and the new `<binary path>`).

use std::path::PathBuf;

use roxmltree::Node;

use super::ctx::Ctx;
use super::{Auth, RsyncConfig, WarmConfig, validate};

/// Reads `<rsync>`; a missing element gives sersync's defaults (`-artuz`, no auth, ssh off).
pub(super) fn read(ctx: &mut Ctx<'_>, node: Option<Node<'_, '_>>) -> RsyncConfig {
    let mut rsync = RsyncConfig {
        common_params: vec!["-artuz".to_owned()],
        auth: None,
        port: None,
        timeout: None,
        ssh: false,
        binary: PathBuf::from("rsync"),
        warm: WarmConfig::default(),
    };
    let Some(node) = node else { return rsync };
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
            "warm",
        ],
    );
    if let Some(params) = ctx.child(node, "commonParams") {
        ctx.check_attrs(params, &["params"]);
        if let Some(attr) = ctx.attr(params, "params") {
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
        ctx.check_attrs(ssh, &["start"]);
        rsync.ssh = ctx.flag(ssh, "start", false);
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
                    port.range().start,
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
                ctx.error(
                    timeout.range().start,
                    "<timeout start=\"true\"> without time",
                );
            }
        }
    }
    if let Some(binary) = ctx.child(node, "binary") {
        ctx.check_attrs(binary, &["path"]);
        rsync.binary = validate::rsync_binary(ctx, binary);
    }
    if let Some(warm) = ctx.child(node, "warm") {
        rsync.warm = read_warm(ctx, warm);
    }
    rsync
}

/// `<warm start idleSeconds>`; `idleSeconds` from 1 to 3600 (daemons commonly time out
/// an idle connection after 60 s or more, so the default of 20 stays well under).
fn read_warm(ctx: &mut Ctx<'_>, node: Node<'_, '_>) -> WarmConfig {
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

/// True for an rsync option that makes it descend into directories.
fn is_recursive(word: &str) -> bool {
    matches!(word, "--archive" | "--recursive")
        || (word.starts_with('-') && !word.starts_with("--") && word.contains(['a', 'r']))
}

fn read_auth(ctx: &mut Ctx<'_>, node: Node<'_, '_>, ssh: bool) -> Option<Auth> {
    ctx.check_attrs(node, &["start", "users", "passwordfile"]);
    if !ctx.flag(node, "start", false) {
        return None;
    }
    if ssh {
        let msg = "<auth start=\"true\"> cannot be combined with <ssh start=\"true\">: rsync accepts --password-file only for rsync daemons";
        ctx.error(node.range().start, msg);
    }
    let user = ctx
        .attr(node, "users")
        .map(|a| a.value.trim())
        .filter(|v| !v.is_empty());
    if user.is_none() {
        ctx.error(node.range().start, "<auth start=\"true\"> without users");
    }
    let password_file = validate::secret_file(ctx, node, "passwordfile");
    Some(Auth {
        user: user?.to_owned(),
        password_file: password_file?,
    })
}
