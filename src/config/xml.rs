//! `confxml.xml` text → [`Config`]: decoding, the top-level walk and the sections
//! directly under `<head>`.
//!
//! Names of elements and attributes are compared case-insensitively, as sersync 2.5 did.
//! A boolean is on only when its value is exactly `true`. Every problem is collected with
//! its line and column (nothing stops at the first one); unknown elements and attributes
//! and suspicious values are warnings. `ctx.rs` is the reading context; `sersync.rs` and
//! `rsync.rs` read `<sersync>`, `plugins.rs` the plugin sections, and `validate.rs` holds
//! the checks that look at the filesystem.

use std::path::Path;

use super::ctx::{Ctx, is, pattern_children};
use super::tree::{self, Node};
use super::{
    Config, HostConfig, InotifyToggles, LogConfig, ParseOptions, Problem, WatchBackend, plugins,
    sersync,
};
use crate::filter::{Filter, Rule};

/// Parses the bytes of a configuration file, with no command-line options.
///
/// # Errors
/// Every problem found, in file order.
pub fn parse(bytes: &[u8], path: &Path) -> Result<Config, Vec<Problem>> {
    parse_with(bytes, path, &ParseOptions::default())
}

/// Parses the bytes of a configuration file; `path` is only used in messages.
///
/// # Errors
/// Every problem found, in file order.
pub fn parse_with(
    bytes: &[u8],
    path: &Path,
    options: &ParseOptions,
) -> Result<Config, Vec<Problem>> {
    // The stock file declares ISO-8859-1; it is ASCII in practice, so valid UTF-8 is read
    // as such and anything else is decoded as Latin-1 (every byte is a character).
    let (text, latin1) = match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (bytes.iter().map(|&b| char::from(b)).collect(), true),
    };
    let mut ctx = Ctx::new(&text, path, latin1);
    let root = match tree::parse(&text) {
        Ok(root) => root,
        Err(err) => {
            ctx.error(err.offset, format!("malformed xml: {}", err.message));
            return Err(ctx.finish().0);
        }
    };
    let head = root.node();
    if !is(head, "head") {
        let name = head.name();
        let message = format!("root element is <{name}>, expected <head>");
        ctx.error(head.start(), message);
        return Err(ctx.finish().0);
    }
    let mut config = read_head(&mut ctx, head, options);
    let (problems, warnings) = ctx.finish();
    if problems.is_empty() {
        config.warnings = warnings;
        Ok(config)
    } else {
        Err(problems)
    }
}

fn read_head(ctx: &mut Ctx<'_>, head: Node<'_>, options: &ParseOptions) -> Config {
    ctx.check_attrs(head, &["version"]);
    ctx.check_children(
        head,
        &[
            "host",
            "debug",
            "fileSystem",
            "filter",
            "inotify",
            "sersync",
            "plugin",
            "pidfile",
            "log",
            "watch",
        ],
    );
    let host = read_host(ctx, head);
    let debug = read_switch(ctx, head, "debug", "start");
    let xfs = read_switch(ctx, head, "fileSystem", "xfs");
    let filter = read_filter(ctx, head);
    let inotify = read_inotify(ctx, head);
    let watch_backend = read_watch(ctx, head);
    let sync = sersync::read(ctx, head, options);
    let sections = plugins::read(ctx, head, &sync.enabled, options, &sync.roots);
    let pidfile = ctx.child(head, "pidfile").and_then(|n| {
        ctx.check_attrs(n, &["path"]);
        ctx.abs_path(n, "path")
    });
    let log = read_log(ctx, head);
    Config {
        path: ctx.file.to_path_buf(),
        host,
        debug,
        xfs,
        filter,
        inotify,
        watch_backend,
        roots: sync.roots,
        rsync: sync.rsync,
        fail_log: sync.fail_log,
        crontab: sync.crontab,
        plugins: sync.enabled.iter().map(|&(kind, _)| kind).collect(),
        running: sections.running,
        command: sections.command,
        socket: sections.socket,
        http: sections.http,
        cdn: sections.cdn,
        pidfile,
        log,
        warnings: Vec::new(),
    }
}

/// `<debug start>`, `<fileSystem xfs>`: one boolean attribute, off when missing.
fn read_switch(ctx: &mut Ctx<'_>, head: Node<'_>, element: &str, attr: &str) -> bool {
    let Some(node) = ctx.child(head, element) else {
        return false;
    };
    ctx.check_attrs(node, &[attr]);
    ctx.flag(node, attr, false)
}

fn read_host(ctx: &mut Ctx<'_>, head: Node<'_>) -> HostConfig {
    let mut host = HostConfig {
        ip: "127.0.0.1".into(),
        port: 8008,
        start: false,
    };
    let Some(node) = ctx.child(head, "host") else {
        return host;
    };
    ctx.check_attrs(node, &["hostip", "port", "start"]);
    host.start = ctx.flag(node, "start", false);
    host.port = ctx.port(node, "port").unwrap_or(host.port);
    if let Some(attr) = ctx
        .attr(node, "hostip")
        .filter(|a| !a.value.trim().is_empty())
    {
        let ip = attr.value.trim();
        if ip.eq_ignore_ascii_case("localhost") {
            host.ip = "127.0.0.1".into();
        } else if ip.parse::<std::net::IpAddr>().is_ok() {
            host.ip = ip.to_owned();
        } else if host.start {
            ctx.error(
                attr.pos,
                format!("<host hostip=\"{ip}\">: not an ip address"),
            );
        } else {
            ctx.warn(
                attr.pos,
                format!("<host hostip=\"{ip}\">: not an ip address, ignored"),
            );
        }
    }
    host
}

fn read_filter(ctx: &mut Ctx<'_>, head: Node<'_>) -> Filter {
    let Some(node) = ctx.child(head, "filter") else {
        return Filter::default();
    };
    ctx.check_attrs(node, &["start"]);
    let start = ctx.flag(node, "start", false);
    let mark = ctx.mark();
    let mut rules = Vec::new();
    for pattern in pattern_children(ctx, node, "exclude") {
        if let Some(rule) = ctx.compile(pattern, "expression", true, Rule::new) {
            rules.push(rule);
        }
    }
    if !start {
        ctx.demote(mark, "<filter> is off");
        rules.clear();
    }
    Filter::new(rules)
}

fn read_inotify(ctx: &mut Ctx<'_>, head: Node<'_>) -> InotifyToggles {
    let mut toggles = InotifyToggles::default();
    let Some(node) = ctx.child(head, "inotify") else {
        return toggles;
    };
    ctx.check_attrs(node, &[]);
    let names = [
        "delete",
        "createFolder",
        "createFile",
        "closeWrite",
        "moveFrom",
        "moveTo",
        "attrib",
        "modify",
    ];
    ctx.check_children(node, &names);
    let fields = [
        &mut toggles.delete,
        &mut toggles.create_folder,
        &mut toggles.create_file,
        &mut toggles.close_write,
        &mut toggles.move_from,
        &mut toggles.move_to,
        &mut toggles.attrib,
        &mut toggles.modify,
    ];
    for (name, field) in names.into_iter().zip(fields) {
        if let Some(child) = ctx.child(node, name) {
            ctx.check_attrs(child, &["start"]);
            *field = ctx.flag(child, "start", *field);
        }
    }
    let any_push = toggles.create_folder
        || toggles.create_file
        || toggles.close_write
        || toggles.move_to
        || toggles.attrib
        || toggles.modify;
    if !any_push {
        ctx.warn(
            node.start(),
            "<inotify>: no create, write or move-in event is on: new files are never pushed",
        );
    }
    toggles
}

/// New `<watch backend="inotify|fanotify"/>`.
fn read_watch(ctx: &mut Ctx<'_>, head: Node<'_>) -> WatchBackend {
    let Some(node) = ctx.child(head, "watch") else {
        return WatchBackend::default();
    };
    ctx.check_attrs(node, &["backend"]);
    ctx.parse_attr(node, "backend", |v| match v.to_ascii_lowercase().as_str() {
        "inotify" => Ok(WatchBackend::Inotify),
        "fanotify" => Ok(WatchBackend::Fanotify),
        _ => Err("expected inotify or fanotify".to_owned()),
    })
    .unwrap_or_default()
}

fn read_log(ctx: &mut Ctx<'_>, head: Node<'_>) -> LogConfig {
    let Some(node) = ctx.child(head, "log") else {
        return LogConfig::default();
    };
    ctx.check_attrs(node, &["path", "level"]);
    let path = ctx.abs_path(node, "path");
    let level = ctx.parse_attr(node, "level", |v| {
        let level = v.to_ascii_lowercase();
        match level.as_str() {
            "error" | "warn" | "info" | "debug" | "trace" => Ok(level),
            _ => Err("expected error, warn, info, debug or trace".to_owned()),
        }
    });
    LogConfig { path, level }
}
