//! The `<sersync>` section: watch roots and their remotes, rsync options, the failure
//! journal, the periodic full sync and which plugins run after each push.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::tree::Node;

use super::ctx::{Ctx, Enabled, is, pattern_children};
use super::{
    CrontabConfig, DEFAULT_CRONTAB_INTERVAL, DEFAULT_FAIL_LOG, DEFAULT_RETRY_MAX, FailLogConfig,
    ParseOptions, PluginKind, Remote, RootConfig, RsyncConfig, rsync, validate,
};

/// What `<sersync>` yields.
pub(super) struct Sersync {
    pub roots: Vec<RootConfig>,
    pub rsync: RsyncConfig,
    pub fail_log: FailLogConfig,
    pub crontab: Option<CrontabConfig>,
    /// Plugins with `start="true"`, with the offset of their element.
    pub enabled: Enabled,
}

/// Reads `<sersync>`. With `-m` for a plugin other than `command` nothing here is used
/// for the run, so its problems are only warnings.
pub(super) fn read(ctx: &mut Ctx<'_>, head: Node<'_>, options: &ParseOptions) -> Sersync {
    let mark = ctx.mark();
    let sync = read_strict(ctx, head, options);
    if let Some(kind) = options
        .standalone_plugin
        .filter(|&k| k != PluginKind::Command)
    {
        ctx.demote(mark, &format!("-m {} runs the plugin alone", kind.name()));
    }
    sync
}

fn read_strict(ctx: &mut Ctx<'_>, head: Node<'_>, options: &ParseOptions) -> Sersync {
    let node = ctx.child(head, "sersync");
    let rsync_node = node.and_then(|n| ctx.child(n, "rsync"));
    let outer = node.unwrap_or(head).start();
    let rsync = rsync::read(ctx, rsync_node, outer, options.standalone_plugin.is_none());
    let mut sync = Sersync {
        roots: Vec::new(),
        rsync,
        fail_log: FailLogConfig {
            path: PathBuf::from(DEFAULT_FAIL_LOG),
            retry_max: DEFAULT_RETRY_MAX,
        },
        crontab: None,
        enabled: Vec::new(),
    };
    // Only `-m socket|http|refreshCDN` can do without a root of their own.
    let needs_roots = options
        .standalone_plugin
        .is_none_or(|k| k == PluginKind::Command);
    let Some(node) = node else {
        if !needs_roots {
            return sync;
        }
        ctx.error(
            head.start(),
            "<head> has no <sersync> section: nothing to watch",
        );
        return sync;
    };
    ctx.check_attrs(node, &[]);
    ctx.check_children(
        node,
        &["localpath", "rsync", "failLog", "crontab", "plugin"],
    );
    let needs_remotes = options.standalone_plugin.is_none();
    let mut watched: Vec<(PathBuf, usize)> = Vec::new();
    for localpath in node.children().filter(|c| is(*c, "localpath")) {
        let Some(root) = read_localpath(ctx, localpath, &sync.rsync, needs_remotes) else {
            continue;
        };
        let offset = localpath.start();
        if let Some((_, first)) = watched.iter().find(|(p, _)| *p == root.path) {
            let line = ctx.line(*first);
            ctx.error(
                offset,
                format!(
                    "<localpath watch=\"{}\">: already watched (line {line})",
                    root.path.display()
                ),
            );
            continue;
        }
        if let Some((outer, _)) = watched
            .iter()
            .find(|(p, _)| root.path.starts_with(p) || p.starts_with(&root.path))
        {
            let msg = format!(
                "<localpath watch=\"{}\">: nested with {}, changes are pushed twice",
                root.path.display(),
                outer.display()
            );
            ctx.warn(offset, msg);
        }
        watched.push((root.path.clone(), offset));
        sync.roots.push(root);
    }
    if needs_roots && node.children().all(|c| !is(c, "localpath")) {
        ctx.error(
            node.start(),
            "<sersync> has no <localpath>: nothing to watch",
        );
    }
    if let Some(fail_log) = ctx.child(node, "failLog") {
        sync.fail_log = read_fail_log(ctx, fail_log);
    }
    if let Some(crontab) = ctx.child(node, "crontab") {
        sync.crontab = read_crontab(ctx, crontab);
        if sync.crontab.as_ref().is_some_and(|c| c.excludes.is_empty()) && filter_on(ctx, head) {
            ctx.warn(
                crontab.start(),
                "<crontab start=\"true\"> with <filter start=\"true\">: sersync 2.5 turned the periodic full sync off here (unless <crontabfilter> had globs); sersync keeps it on, and it skips the filtered paths",
            );
        }
    }
    sync.enabled = read_enabled_plugins(ctx, node);
    sync
}

/// True when `<head><filter start="true">` (read here only to compare with sersync 2.5).
fn filter_on(ctx: &Ctx<'_>, head: Node<'_>) -> bool {
    head.children()
        .find(|c| is(*c, "filter"))
        .and_then(|f| ctx.attr(f, "start"))
        .is_some_and(|a| a.value == "true")
}

fn read_localpath(
    ctx: &mut Ctx<'_>,
    node: Node<'_>,
    rsync: &RsyncConfig,
    needs_remotes: bool,
) -> Option<RootConfig> {
    ctx.check_attrs(node, &["watch"]);
    ctx.check_children(node, &["remote"]);
    let mark = ctx.mark();
    let watch = validate::watch_dir(ctx, node);
    let mut remotes = Vec::new();
    for remote in node.children().filter(|c| is(*c, "remote")) {
        remotes.extend(read_remote(ctx, remote, rsync, watch.as_deref()));
    }
    if needs_remotes && node.children().all(|c| !is(c, "remote")) {
        let what = watch
            .as_ref()
            .map_or(String::new(), |w| format!(" watch=\"{}\"", w.display()));
        ctx.error(
            node.start(),
            format!("<localpath{what}> has no <remote>: nowhere to push"),
        );
    }
    let path = watch?;
    (!ctx.errors_since(mark)).then_some(RootConfig { path, remotes })
}

fn read_remote(
    ctx: &mut Ctx<'_>,
    node: Node<'_>,
    rsync: &RsyncConfig,
    root: Option<&Path>,
) -> Option<Remote> {
    ctx.check_attrs(node, &["ip", "name", "path", "port"]);
    let offset = node.start();
    let port_attr = ctx
        .attr(node, "port")
        .map(|a| (a.pos, a.value.trim().is_empty()));
    let port = match port_attr {
        None => None,
        Some((pos, true)) => {
            let msg = "<remote port=\"\">: empty (give the rsync daemon's port, or leave port out for <userDefinedPort>)";
            ctx.error(pos, msg);
            return None;
        }
        // A bad value is reported at its line:col.
        Some(_) => Some(ctx.port(node, "port")?),
    };
    let port_attr = port_attr.map(|(pos, _)| pos);
    let ip_attr = ctx.attr(node, "ip").filter(|a| !a.value.trim().is_empty());
    let ip = ip_attr.map(|a| a.value.trim());
    let name_attr = ctx.attr(node, "name");
    let name = name_attr.map(|a| a.value.trim()).filter(|v| !v.is_empty());
    if let Some((attr, trimmed)) = name_attr.zip(name).filter(|(a, t)| a.value != *t) {
        ctx.warn(
            attr.pos,
            format!(
                "<remote name=\"{}\">: surrounding spaces removed, using \"{trimmed}\"",
                attr.value
            ),
        );
    }
    if let (Some(pos), true) = (port_attr, ctx.attr(node, "path").is_some() || rsync.ssh) {
        let over = if rsync.ssh {
            "<ssh start=\"true\">: give ssh's port in <commonParams> (-e \"ssh -p PORT\")"
        } else {
            "a local directory has none"
        };
        ctx.error(
            pos,
            format!("<remote port>: only for an rsync daemon remote; {over}"),
        );
        return None;
    }
    if let Some(path) = ctx.attr(node, "path") {
        if ip.is_some() || name.is_some() {
            ctx.error(
                offset,
                "<remote>: path (a local directory) cannot be combined with ip or name",
            );
            return None;
        }
        return validate::local_remote(ctx, node, path, root).map(|path| Remote::Local { path });
    }
    let (Some(host), Some(host_attr)) = (ip, ip_attr) else {
        ctx.error(
            offset,
            "<remote> without ip (or path for a local directory)",
        );
        return None;
    };
    if !validate::host(ctx, "remote", "ip", host_attr) {
        return None;
    }
    let Some(name) = name else {
        let what = if rsync.ssh {
            "remote path"
        } else {
            "rsync module"
        };
        ctx.error(
            offset,
            format!("<remote ip=\"{host}\"> without name (the {what})"),
        );
        return None;
    };
    if rsync.ssh {
        return Some(Remote::Ssh {
            host: host.to_owned(),
            path: name.to_owned(),
        });
    }
    if name.starts_with('/') {
        let hint =
            "an rsync module name looks like this is a path: did you mean <ssh start=\"true\"/>?";
        ctx.warn(offset, format!("<remote name=\"{name}\">: {hint}"));
    }
    Some(Remote::Daemon {
        host: host.to_owned(),
        module: name.to_owned(),
        port,
    })
}

fn read_fail_log(ctx: &mut Ctx<'_>, node: Node<'_>) -> FailLogConfig {
    ctx.check_attrs(node, &["path", "timeToExecute"]);
    let path = fail_log_path(ctx, node).unwrap_or_else(|| PathBuf::from(DEFAULT_FAIL_LOG));
    validate::fail_log_file(ctx, node, &path);
    let retry_max = match ctx.decimal(node, "timeToExecute") {
        Some(m) if m <= 0.0 => {
            let pos = ctx
                .attr(node, "timeToExecute")
                .map_or(node.start(), |a| a.pos);
            ctx.warn(
                pos,
                format!("<failLog timeToExecute=\"{m}\">: not above 0, using 60 minutes"),
            );
            DEFAULT_RETRY_MAX
        }
        Some(m) => minutes(ctx, node, "timeToExecute", m).unwrap_or(DEFAULT_RETRY_MAX),
        None => DEFAULT_RETRY_MAX,
    };
    FailLogConfig { path, retry_max }
}

/// `<failLog path>`: absolute, or relative to the working directory at start (a warning).
fn fail_log_path(ctx: &mut Ctx<'_>, node: Node<'_>) -> Option<PathBuf> {
    let attr = ctx
        .attr(node, "path")
        .filter(|a| !a.value.trim().is_empty())?;
    let path = ctx.path(attr.value.trim());
    if path.is_absolute() {
        return Some(path);
    }
    let what = format!("<failLog path=\"{}\">", path.display());
    validate::relative_to_start(ctx, &what, attr, &path)
}

fn read_crontab(ctx: &mut Ctx<'_>, node: Node<'_>) -> Option<CrontabConfig> {
    ctx.check_attrs(node, &["start", "schedule"]);
    ctx.check_children(node, &["crontabfilter"]);
    let start = ctx.flag(node, "start", false);
    let interval = match ctx.decimal(node, "schedule") {
        Some(m) if m > 0.0 => minutes(ctx, node, "schedule", m).unwrap_or(DEFAULT_CRONTAB_INTERVAL),
        _ => DEFAULT_CRONTAB_INTERVAL,
    };
    let mut excludes = Vec::new();
    if let Some(filter) = ctx.child(node, "crontabfilter") {
        ctx.check_attrs(filter, &["start"]);
        let on = ctx.flag(filter, "start", false);
        for pattern in pattern_children(ctx, filter, "exclude") {
            match ctx.attr(pattern, "expression") {
                Some(attr) if !attr.value.trim().is_empty() => {
                    excludes.push(attr.value.trim().to_owned())
                }
                Some(attr) => ctx.warn(attr.pos, "<exclude expression=\"\">: empty, ignored"),
                None => ctx.warn(pattern.start(), "<exclude> without expression, ignored"),
            }
        }
        if !on {
            excludes.clear();
        }
    }
    start.then_some(CrontabConfig { interval, excludes })
}

fn read_enabled_plugins(ctx: &mut Ctx<'_>, node: Node<'_>) -> Enabled {
    let mut enabled: Enabled = Vec::new();
    for plugin in node.children().filter(|c| is(*c, "plugin")) {
        ctx.check_attrs(plugin, &["start", "name"]);
        let start = ctx.flag(plugin, "start", false);
        let name = ctx.attr(plugin, "name");
        let kind = name.and_then(|a| PluginKind::from_name(a.value.trim()));
        match (start, name, kind) {
            (true, _, Some(kind)) if enabled.iter().all(|&(k, _)| k != kind) => {
                enabled.push((kind, plugin.start()));
            }
            (true, _, Some(_)) => {}
            (true, None, _) => ctx.error(plugin.start(), "<plugin start=\"true\"> without name"),
            (start, Some(attr), None) => {
                let msg = format!(
                    "<plugin name=\"{}\">: unknown plugin (expected command, socket, http or refreshCDN)",
                    attr.value
                );
                if start {
                    ctx.error(attr.pos, msg)
                } else {
                    ctx.warn(attr.pos, msg)
                }
            }
            (false, _, _) => {}
        }
    }
    enabled
}

/// `value` minutes as a duration (decimals allowed: `0.1` is 6 s), to the millisecond.
fn minutes(ctx: &mut Ctx<'_>, node: Node<'_>, name: &str, value: f64) -> Option<Duration> {
    let millis = (value * 60_000.0).round().max(1.0);
    if millis < 1.0e15 {
        // In range: below 2^53, so the conversion is exact.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        return Some(Duration::from_millis(millis as u64));
    }
    let pos = ctx.attr(node, name).map_or(node.start(), |a| a.pos);
    let element = node.name();
    ctx.error(pos, format!("<{element} {name}=\"{value}\">: too large"));
    None
}
