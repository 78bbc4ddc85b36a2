//! The top-level `<plugin name=…>` sections: `command`, `socket`, `http`, `refreshCDN`.
//!
//! A section is checked strictly only when its plugin runs (enabled in `<sersync>`, or
//! chosen with `-m`); otherwise its problems are warnings, because the stock file ships
//! sections that point at hosts and directories that do not exist.

use std::time::Duration;

use super::tree::Node;

use super::ctx::{Ctx, Enabled, is, pattern_children};
use super::{
    CdnApi, CdnConfig, CdnProvider, ChinaCacheAccount, CommandConfig, HostPort, HttpPluginConfig,
    ParseOptions, Plugin, PluginKind, ProgramWords, RootConfig, Secret, SocketConfig, validate,
};
use crate::filter::Rule;

/// The plugin sections found in the file.
#[derive(Default)]
pub(super) struct Sections {
    /// The plugins that run, resolved (see [`Plugin`]).
    pub running: Vec<Plugin>,
    pub command: Option<CommandConfig>,
    pub socket: Option<SocketConfig>,
    pub http: Option<HttpPluginConfig>,
    pub cdn: Option<CdnConfig>,
}

/// Reads every `<plugin name>` child of `<head>`, and requires the section of each plugin
/// that runs.
pub(super) fn read(
    ctx: &mut Ctx<'_>,
    head: Node<'_>,
    enabled: &Enabled,
    options: &ParseOptions,
    roots: &[RootConfig],
) -> Sections {
    let running: Enabled = match options.standalone_plugin {
        Some(kind) => vec![(kind, head.start())],
        None => enabled.clone(),
    };
    let mut sections = Sections::default();
    let mut seen: Vec<PluginKind> = Vec::new();
    for node in head.children().filter(|c| is(*c, "plugin")) {
        let name = ctx.attr(node, "name");
        let Some(kind) = name.and_then(|a| PluginKind::from_name(a.value.trim())) else {
            let what = name.map_or("<plugin> without name".to_owned(), |a| {
                format!("<plugin name=\"{}\">: unknown plugin", a.value)
            });
            ctx.warn(node.start(), format!("{what}, section ignored"));
            continue;
        };
        if seen.contains(&kind) {
            ctx.warn(
                node.start(),
                format!(
                    "duplicate <plugin name=\"{}\">: only the first one is used",
                    kind.name()
                ),
            );
            continue;
        }
        seen.push(kind);
        let mark = ctx.mark();
        let root = match kind {
            PluginKind::Command => {
                sections.command = read_command(ctx, node);
                None
            }
            PluginKind::Socket => {
                sections.socket = read_socket(ctx, node);
                sections.socket.as_ref().map(|s| s.root.clone())
            }
            PluginKind::Http => {
                sections.http = read_http(ctx, node);
                sections.http.as_ref().map(|h| h.root.clone())
            }
            PluginKind::RefreshCdn => {
                sections.cdn = read_cdn(ctx, node);
                sections.cdn.as_ref().map(|c| c.root.clone())
            }
        };
        // With -m the plugin's own root is the one watched; otherwise it must be one of
        // the `<sersync>` roots, checked here once so that starting it cannot fail on it.
        if let Some(root) = root.filter(|_| options.standalone_plugin.is_none()) {
            if roots.iter().all(|r| r.path != root) {
                let at = node
                    .children()
                    .find(|c| is(*c, "localpath"))
                    .and_then(|lp| ctx.attr(lp, "watch"))
                    .map_or(node.start(), |a| a.pos);
                ctx.error(
                    at,
                    format!(
                        "<localpath watch=\"{}\">: not a watched <localpath> of <sersync>; plugin {} serves one of them",
                        root.display(),
                        kind.name()
                    ),
                );
            }
        }
        if running.iter().all(|&(k, _)| k != kind) {
            ctx.demote(mark, &format!("plugin {} is not enabled", kind.name()));
        }
    }
    for &(kind, offset) in &running {
        if !seen.contains(&kind) {
            let how = if options.standalone_plugin.is_some() {
                "selected with -m"
            } else {
                "enabled"
            };
            let msg = format!(
                "plugin {} is {how} but there is no <plugin name=\"{}\"> section",
                kind.name(),
                kind.name()
            );
            ctx.error(offset, msg);
        }
    }
    sections.running = running
        .iter()
        .filter_map(|&(kind, _)| resolve(&sections, kind, roots, options))
        .collect();
    sections
}

/// The running plugin `kind` with its section and root index; `None` where `read` has
/// reported why it cannot run. With `-m` the index is 0: the pipeline watches that
/// plugin's own `localpath` alone (`Pipeline::start_standalone`).
fn resolve(
    sections: &Sections,
    kind: PluginKind,
    roots: &[RootConfig],
    options: &ParseOptions,
) -> Option<Plugin> {
    let index = |root: &std::path::Path| {
        if options.standalone_plugin.is_some() {
            Some(0)
        } else {
            roots.iter().position(|r| r.path == root)
        }
    };
    Some(match kind {
        PluginKind::Command => Plugin::Command(sections.command.clone()?),
        PluginKind::Socket => {
            let section = sections.socket.clone()?;
            Plugin::Socket {
                root: index(&section.root)?,
                section,
            }
        }
        PluginKind::Http => {
            let section = sections.http.clone()?;
            Plugin::Http {
                root: index(&section.root)?,
                section,
            }
        }
        PluginKind::RefreshCdn => {
            let section = sections.cdn.clone()?;
            Plugin::RefreshCdn {
                root: index(&section.root)?,
                section,
            }
        }
    })
}

/// Runs `read` and keeps its result only when it recorded no error.
fn clean<T>(ctx: &mut Ctx<'_>, read: impl FnOnce(&mut Ctx<'_>) -> Option<T>) -> Option<T> {
    let mark = ctx.mark();
    let value = read(ctx);
    if !ctx.errors_since(mark) { value } else { None }
}

fn read_command(ctx: &mut Ctx<'_>, node: Node<'_>) -> Option<CommandConfig> {
    clean(ctx, |ctx| {
        ctx.check_attrs(node, &["name"]);
        ctx.check_children(node, &["param", "filter"]);
        let mut command = CommandConfig {
            prefix: ProgramWords(vec!["/bin/sh".to_owned()]),
            suffix: Vec::new(),
            ignore_error: false,
            include: None,
            timeout: Duration::from_secs(60),
            concurrency: 4,
        };
        if let Some(param) = ctx.child(node, "param") {
            ctx.check_attrs(
                param,
                &["prefix", "suffix", "ignoreError", "timeout", "concurrency"],
            );
            if let Some(attr) = ctx.attr(param, "prefix") {
                match ProgramWords::new(words(ctx, attr.value, attr.pos, "<param prefix")?) {
                    Some(prefix) => command.prefix = prefix,
                    None => ctx.error(
                        attr.pos,
                        "<param prefix=\"\">: empty, there is no command to run",
                    ),
                }
            }
            if let Some(attr) = ctx.attr(param, "suffix") {
                command.suffix = words(ctx, attr.value, attr.pos, "<param suffix")?;
            }
            command.ignore_error = ctx.flag(param, "ignoreError", false);
            command.timeout = seconds(ctx, param, "timeout").unwrap_or(command.timeout);
            command.concurrency = ctx
                .integer(param, "concurrency", 1, 1024)
                .unwrap_or(command.concurrency);
        }
        if let Some(filter) = ctx.child(node, "filter") {
            ctx.check_attrs(filter, &["start"]);
            let start = ctx.flag(filter, "start", false);
            let mark = ctx.mark();
            let mut include = Vec::new();
            for pattern in pattern_children(ctx, filter, "include") {
                include.extend(ctx.compile(pattern, "expression", true, Rule::new));
            }
            if start {
                command.include = Some(include);
            } else {
                ctx.demote(mark, "the command <filter> is off");
            }
        }
        Some(command)
    })
}

fn words(ctx: &mut Ctx<'_>, value: &str, pos: usize, what: &str) -> Option<Vec<String>> {
    match shell_words::split(value) {
        Ok(words) => Some(words),
        Err(_) => {
            ctx.error(pos, format!("{what}=\"{value}\">: unbalanced quotes"));
            None
        }
    }
}

/// A positive number of seconds, decimals allowed.
fn seconds(ctx: &mut Ctx<'_>, node: Node<'_>, name: &str) -> Option<Duration> {
    ctx.parse_attr(node, name, |v| {
        match v.parse::<f64>().ok().filter(|s| *s > 0.0) {
            Some(secs) => Duration::try_from_secs_f64(secs).map_err(|_| "too large".to_owned()),
            None => Err("not a number of seconds above 0".to_owned()),
        }
    })
}

/// The `<localpath watch>` of a plugin section and its one expected child.
fn localpath<'a>(
    ctx: &mut Ctx<'_>,
    node: Node<'a>,
    children: &[&str],
) -> Option<(Option<std::path::PathBuf>, Node<'a>)> {
    ctx.check_attrs(node, &["name"]);
    ctx.check_children(node, &["localpath"]);
    let plugin = plugin_name(node);
    let Some(localpath) = ctx.child(node, "localpath") else {
        ctx.error(
            node.start(),
            format!("<plugin name=\"{plugin}\"> without <localpath watch>"),
        );
        return None;
    };
    ctx.check_attrs(localpath, &["watch"]);
    ctx.check_children(localpath, children);
    let watch = validate::watch_dir(ctx, localpath);
    let first = children.first().copied().unwrap_or_default();
    let Some(child) = ctx.child(localpath, first) else {
        ctx.error(
            localpath.start(),
            format!("<plugin name=\"{plugin}\"><localpath> without <{first}>"),
        );
        return None;
    };
    Some((watch, child))
}

/// The `name` of a plugin section as written, for messages.
fn plugin_name(node: Node<'_>) -> String {
    let attr = node
        .attributes()
        .find(|a| a.name().eq_ignore_ascii_case("name"));
    attr.map_or_else(String::new, |a| a.value().to_owned())
}

fn read_socket(ctx: &mut Ctx<'_>, node: Node<'_>) -> Option<SocketConfig> {
    clean(ctx, |ctx| {
        let (root, deshost) = localpath(ctx, node, &["deshost"])?;
        ctx.check_attrs(deshost, &["ip", "port", "format"]);
        let host = ctx
            .attr(deshost, "ip")
            .map(|a| a.value.trim().to_owned())
            .filter(|v| !v.is_empty());
        if host.is_none() {
            ctx.error(deshost.start(), "<deshost> without ip");
        }
        let host = host.filter(|_| {
            ctx.attr(deshost, "ip")
                .is_none_or(|attr| validate::host(ctx, "deshost", "ip", attr))
        });
        let port = ctx.port(deshost, "port");
        if ctx
            .attr(deshost, "port")
            .is_none_or(|a| a.value.trim().is_empty())
        {
            ctx.error(deshost.start(), "<deshost> without port");
        }
        let lines = ctx
            .parse_attr(deshost, "format", |v| {
                match v.to_ascii_lowercase().as_str() {
                    "lines" => Ok(true),
                    "path" => Ok(false),
                    _ => Err("expected lines or path".to_owned()),
                }
            })
            .unwrap_or(false);
        Some(SocketConfig {
            root: root?,
            host: host?,
            port: port?,
            lines,
        })
    })
}

fn read_http(ctx: &mut Ctx<'_>, node: Node<'_>) -> Option<HttpPluginConfig> {
    clean(ctx, |ctx| {
        let (root, deshost) = localpath(ctx, node, &["deshost"])?;
        ctx.check_attrs(deshost, &["url", "port"]);
        let url = http_url(ctx, deshost, "url");
        if url.is_none()
            && ctx
                .attr(deshost, "url")
                .is_none_or(|a| a.value.trim().is_empty())
        {
            ctx.error(deshost.start(), "<deshost> without url");
        }
        Some(HttpPluginConfig {
            root: root?,
            url: url?,
        })
    })
}

/// An `http://` or `https://` URL attribute; missing or empty gives `None`.
fn http_url(ctx: &mut Ctx<'_>, node: Node<'_>, name: &str) -> Option<String> {
    ctx.parse_attr(node, name, |v| {
        let lower = v.to_ascii_lowercase();
        if (lower.starts_with("http://") || lower.starts_with("https://"))
            && !v.contains(char::is_whitespace)
        {
            Ok(v.to_owned())
        } else {
            Err("not an http:// or https:// url".to_owned())
        }
    })
}

fn read_cdn(ctx: &mut Ctx<'_>, node: Node<'_>) -> Option<CdnConfig> {
    clean(ctx, |ctx| {
        let (root, info) = localpath(ctx, node, &["cdninfo", "sendurl", "regexurl"])?;
        ctx.check_attrs(
            info,
            &[
                "domainname",
                "port",
                "username",
                "passwd",
                "provider",
                "tokenfile",
                "zone",
                "endpoint",
                "url",
                "batch",
                "rate",
                "timeout",
            ],
        );
        let text = |ctx: &mut Ctx<'_>, name| {
            ctx.attr(info, name)
                .map(|a| a.value.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let provider = ctx
            .parse_attr(info, "provider", |v| {
                match v.to_ascii_lowercase().as_str() {
                    "chinacache" => Ok(CdnProvider::ChinaCache),
                    "purge" => Ok(CdnProvider::Purge),
                    "cloudflare" => Ok(CdnProvider::Cloudflare),
                    "webhook" => Ok(CdnProvider::Webhook),
                    _ => Err("expected chinacache, purge, cloudflare or webhook".to_owned()),
                }
            })
            .unwrap_or(CdnProvider::ChinaCache);
        let domain = text(ctx, "domainname");
        let port = ctx.port(info, "port").unwrap_or(80);
        let username = text(ctx, "username").unwrap_or_default();
        let password = ctx
            .attr(info, "passwd")
            .map(|a| Secret::from(a.value))
            .unwrap_or_default();
        let zone = text(ctx, "zone");
        let endpoint = http_url(ctx, info, "endpoint")
            .unwrap_or_else(|| "https://api.cloudflare.com".to_owned());
        let webhook_url = http_url(ctx, info, "url");
        let at = info.start();
        let api = match provider {
            CdnProvider::ChinaCache => match domain {
                Some(host) => Some(CdnApi::ChinaCache(ChinaCacheAccount {
                    endpoint: HostPort { host, port },
                    username,
                    password,
                })),
                None => {
                    ctx.error(at, "<cdninfo> without domainname");
                    None
                }
            },
            CdnProvider::Purge => Some(CdnApi::Purge {
                target: domain.map(|host| HostPort { host, port }),
            }),
            CdnProvider::Cloudflare => {
                let token_file = validate::secret_file(ctx, info, "tokenfile");
                if zone.is_none() {
                    ctx.error(at, "<cdninfo provider=\"cloudflare\"> without zone");
                }
                match (zone, token_file) {
                    (Some(zone), Some(token_file)) => Some(CdnApi::Cloudflare {
                        zone,
                        token_file,
                        endpoint: endpoint.trim_end_matches('/').to_owned(),
                    }),
                    _ => None,
                }
            }
            CdnProvider::Webhook => match webhook_url {
                Some(url) => Some(CdnApi::Webhook {
                    url: Secret::from(url),
                }),
                None => {
                    ctx.error(at, "<cdninfo provider=\"webhook\"> without url");
                    None
                }
            },
        };
        let mut cdn = CdnConfig {
            root: std::path::PathBuf::new(),
            api: api.unwrap_or(CdnApi::Purge { target: None }),
            base_url: String::new(),
            url_regex: None,
            batch: ctx.integer(info, "batch", 1, 10_000).unwrap_or(30),
            rate_per_sec: rate(ctx, info).unwrap_or(10.0),
            timeout: seconds(ctx, info, "timeout").unwrap_or(Duration::from_secs(10)),
        };
        // The `<localpath>` that `localpath()` found `info` in: the first one.
        let localpath = node
            .children()
            .find(|c| is(*c, "localpath"))
            .unwrap_or(node);
        read_urls(ctx, localpath, &mut cdn);
        cdn.root = root?;
        Some(cdn)
    })
}

fn rate(ctx: &mut Ctx<'_>, info: Node<'_>) -> Option<f64> {
    ctx.parse_attr(info, "rate", |v| match v.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err("not a number of requests per second above 0".to_owned()),
    })
}

/// `<sendurl base>` and `<regexurl regex match>`.
fn read_urls(ctx: &mut Ctx<'_>, localpath: Node<'_>, cdn: &mut CdnConfig) {
    match ctx.child(localpath, "sendurl") {
        Some(sendurl) => {
            ctx.check_attrs(sendurl, &["base"]);
            match ctx
                .attr(sendurl, "base")
                .map(|a| a.value.trim())
                .filter(|v| !v.is_empty())
            {
                Some(base) => cdn.base_url = base.to_owned(),
                None => ctx.error(sendurl.start(), "<sendurl> without base"),
            }
        }
        None => ctx.error(
            localpath.start(),
            "<plugin name=\"refreshCDN\"><localpath> without <sendurl base>",
        ),
    }
    let Some(regexurl) = ctx.child(localpath, "regexurl") else {
        return;
    };
    ctx.check_attrs(regexurl, &["regex", "match"]);
    if !ctx.flag(regexurl, "regex", false) {
        return;
    }
    let Some(regex) = ctx.regex(regexurl, "match", false) else {
        return;
    };
    if regex.captures_len() < 2 {
        let pos = ctx
            .attr(regexurl, "match")
            .map_or(regexurl.start(), |a| a.pos);
        ctx.error(
            pos,
            format!(
                "<regexurl match=\"{}\">: no capture group, the url needs group 1",
                regex.as_str()
            ),
        );
        return;
    }
    cdn.url_regex = Some(regex);
}
