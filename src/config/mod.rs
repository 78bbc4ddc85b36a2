//! Validated configuration: what `confxml.xml` says, as plain typed data.
//!
//! `xml.rs` turns the text into a [`Config`] in one pass and collects every
//! problem with its line and column. Nothing here can be invalid once built:
//! regexes are compiled, paths are absolute, durations are `Duration`s.

mod ctx;
mod plugins;
mod rsync;
mod sersync;
#[cfg(test)]
mod tests;
pub mod tree;
mod validate;
mod xml;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::filter::Filter;
pub use crate::secret::Secret;

pub(crate) use rsync::strip_update;
pub use xml::{parse, parse_with};

/// Default `<failLog path>` when the element or attribute is missing.
pub const DEFAULT_FAIL_LOG: &str = "/var/lib/sersync/faillog";
/// Default `timeToExecute`: the longest gap between two retries of a failing remote.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(60 * 60);
/// Default crontab `schedule` when the value is missing, zero or negative (as sersync 2.5).
pub const DEFAULT_CRONTAB_INTERVAL: Duration = Duration::from_secs(600 * 60);

/// Everything the daemon needs from the configuration file.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from (for messages).
    pub path: PathBuf,
    /// `<host hostip port start>`: the status and metrics HTTP endpoint.
    pub host: HostConfig,
    /// `<debug start>`: log every raw event, watch and rsync argv.
    pub debug: bool,
    /// `<fileSystem xfs>`: accepted for compatibility; `DT_UNKNOWN` is always resolved with `lstat`.
    pub xfs: bool,
    /// `<filter start>` + `<exclude expression>`: regexes on root-relative paths.
    pub filter: Filter,
    /// `<inotify>` toggles.
    pub inotify: InotifyToggles,
    /// New `<watch backend>`: which kernel interface reports changes.
    pub watch_backend: WatchBackend,
    /// One entry per `<sersync><localpath>`, in file order.
    pub roots: Vec<RootConfig>,
    /// `<sersync><rsync>`: how rsync is invoked.
    pub rsync: RsyncConfig,
    /// `<sersync><failLog>`: the failure journal.
    pub fail_log: FailLogConfig,
    /// `<sersync><crontab start="true">`: periodic full sync; `None` when off.
    pub crontab: Option<CrontabConfig>,
    /// Plugins enabled by `<sersync><plugin start="true" name=…>` (usually at most one).
    pub plugins: Vec<PluginKind>,
    /// The plugins that run (those enabled, or the one `-m` selects), resolved by
    /// validation: each with its section and the root it serves.
    pub running: Vec<Plugin>,
    /// `<plugin name="command">` section, when present.
    pub command: Option<CommandConfig>,
    /// `<plugin name="socket">` section, when present.
    pub socket: Option<SocketConfig>,
    /// `<plugin name="http">` section, when present.
    pub http: Option<HttpPluginConfig>,
    /// `<plugin name="refreshCDN">` section, when present.
    pub cdn: Option<CdnConfig>,
    /// New `<pidfile path>`; `None` means the built-in default is used with `-d`.
    pub pidfile: Option<PathBuf>,
    /// New `<log path level>`.
    pub log: LogConfig,
    /// Warnings found while parsing (unknown elements, `True` for `true` …), already formatted
    /// as `FILE:LINE:COL: message`; the caller logs them once logging is set up.
    pub warnings: Vec<String>,
}

/// `<host hostip port start>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// `hostip` (default `127.0.0.1`; sersync's `localhost` is accepted).
    pub ip: String,
    /// `port` (default 8008).
    pub port: u16,
    /// New `start="true"`: serve `/metrics` and `/status` on that address.
    pub start: bool,
}

/// New `<watch backend="…">`: how changes are learnt from the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WatchBackend {
    /// `inotify` (the default, as sersync 2.5): one watch per directory, added by a walk
    /// at start; works for any user on any filesystem.
    #[default]
    Inotify,
    /// `fanotify`: one mark per filesystem, nothing walked (ready in milliseconds at any
    /// tree size); needs root (`CAP_SYS_ADMIN`), Linux 5.17 and filesystems with file
    /// handles. When it cannot be set up, sersync says why and uses inotify.
    Fanotify,
}

impl fmt::Display for WatchBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WatchBackend::Inotify => "inotify",
            WatchBackend::Fanotify => "fanotify",
        })
    }
}

/// `<inotify>` children; each turns on an inotify event kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools)]
pub struct InotifyToggles {
    /// `<delete>`: deletions are mirrored (rsync deletes on the remote).
    pub delete: bool,
    /// `<createFolder>`: new directories are watched and pushed.
    pub create_folder: bool,
    /// `<createFile>`: a file is pushed on create (usually off: pushed on close_write).
    pub create_file: bool,
    /// `<closeWrite>`: a file is pushed when a writer closes it.
    pub close_write: bool,
    /// `<moveFrom>`: a path moved away is deleted on the remote.
    pub move_from: bool,
    /// `<moveTo>`: a path moved in is pushed.
    pub move_to: bool,
    /// `<attrib>`: metadata changes (chmod, chown, touch) are pushed.
    pub attrib: bool,
    /// `<modify>`: every write is pushed (not recommended).
    pub modify: bool,
}

impl InotifyToggles {
    /// Every event off.
    pub fn none() -> InotifyToggles {
        InotifyToggles {
            delete: false,
            create_folder: false,
            create_file: false,
            close_write: false,
            move_from: false,
            move_to: false,
            attrib: false,
            modify: false,
        }
    }
}

impl Default for InotifyToggles {
    /// The stock sersync 2.5 values.
    fn default() -> Self {
        InotifyToggles {
            delete: true,
            create_folder: true,
            create_file: false,
            close_write: true,
            move_from: true,
            move_to: true,
            attrib: false,
            modify: false,
        }
    }
}

/// One `<localpath watch>` with its remotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootConfig {
    /// Absolute, existing directory, without trailing slash.
    pub path: PathBuf,
    /// At least one.
    pub remotes: Vec<Remote>,
}

/// One `<remote>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    /// `<remote ip name>`: rsync daemon module `name` on `ip`.
    Daemon {
        /// Host name or address.
        host: String,
        /// rsync module name.
        module: String,
        /// New `<remote port>`: this daemon's TCP port, over `<userDefinedPort>` (so that
        /// daemons on one host, e.g. relays on a loopback test bed, can be told apart).
        /// Part of the remote's journal key when set; `<userDefinedPort>` is not.
        port: Option<u16>,
    },
    /// `<remote ip name>` with `<ssh start="true">`: `name` is a path on `ip`.
    Ssh {
        /// `[user@]host`.
        host: String,
        /// Remote directory.
        path: String,
    },
    /// New `<remote path="/srv/mirror">`: a local directory.
    Local {
        /// Absolute directory.
        path: PathBuf,
    },
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Remote::Daemon {
                host,
                module,
                port: None,
            } => write!(f, "{host}::{module}"),
            Remote::Daemon {
                host,
                module,
                port: Some(port),
            } => write!(f, "{host}::{module} (port {port})"),
            Remote::Ssh { host, path } => write!(f, "{host}:{path}"),
            Remote::Local { path } => write!(f, "{}", path.display()),
        }
    }
}

/// `<sersync><rsync>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsyncConfig {
    /// `<commonParams params>` split as shell words (default `-artuz`), without `-u` /
    /// `--update` unless `<update start="true"/>` keeps it (see `config::rsync`).
    pub common_params: Vec<String>,
    /// `<auth start="true" users passwordfile>`.
    pub auth: Option<Auth>,
    /// `<userDefinedPort start="true" port>`: rsync daemon TCP port.
    pub port: Option<u16>,
    /// `<timeout start="true" time>`: rsync `--timeout` in seconds.
    pub timeout: Option<u32>,
    /// `<ssh start="true">`.
    pub ssh: bool,
    /// The rsync binary (new `<rsync><binary path="…"/>`, default `rsync` from `PATH`).
    pub binary: PathBuf,
    /// New `<rsync><warm start idleSeconds/>`: warm clients (`push::warm`).
    pub warm: WarmConfig,
    /// New `<ssh shareConnection>` (default `true`): one ssh connection per ssh
    /// destination, owned by sersync and shared by every rsync run (`push::share`).
    pub share_ssh: bool,
    /// The directory of the shared connections' sockets: set by the pipeline once it
    /// started them, never by the parser. `None`: every rsync over ssh connects alone.
    pub ssh_control_dir: Option<PathBuf>,
}

/// `<rsync><warm start="true" idleSeconds="20"/>`: one rsync client per remote started
/// ahead of need (each holds one daemon connection and one process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmConfig {
    /// `start` (default `true`).
    pub start: bool,
    /// `idleSeconds`: a warm client older than this is replaced (default 20).
    pub idle: std::time::Duration,
}

impl Default for WarmConfig {
    fn default() -> Self {
        WarmConfig {
            start: true,
            idle: std::time::Duration::from_secs(20),
        }
    }
}

/// rsync daemon authentication. The password itself is never read by us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// User name put before the host.
    pub user: String,
    /// Password file handed to rsync with `--password-file` (mode 0600, checked).
    pub password_file: PathBuf,
}

/// `<failLog path timeToExecute>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailLogConfig {
    /// Journal file.
    pub path: PathBuf,
    /// `timeToExecute` minutes: the longest gap between two retries of a failing remote.
    pub retry_max: Duration,
}

/// `<crontab start="true" schedule>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrontabConfig {
    /// `schedule` minutes (decimals allowed).
    pub interval: Duration,
    /// `<crontabfilter start="true">` globs, passed to rsync as `--exclude`.
    pub excludes: Vec<String>,
}

/// Plugin names accepted by `<plugin name>` and `-m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PluginKind {
    /// `command`
    Command,
    /// `socket`
    Socket,
    /// `http`
    Http,
    /// `refreshCDN`
    RefreshCdn,
}

impl PluginKind {
    /// Parses a plugin name as sersync spells it (case-insensitive).
    pub fn from_name(name: &str) -> Option<PluginKind> {
        match name.to_ascii_lowercase().as_str() {
            "command" => Some(PluginKind::Command),
            "socket" => Some(PluginKind::Socket),
            "http" => Some(PluginKind::Http),
            "refreshcdn" => Some(PluginKind::RefreshCdn),
            _ => None,
        }
    }

    /// The name as sersync spells it.
    pub fn name(self) -> &'static str {
        match self {
            PluginKind::Command => "command",
            PluginKind::Socket => "socket",
            PluginKind::Http => "http",
            PluginKind::RefreshCdn => "refreshCDN",
        }
    }
}

/// A plugin that runs, as validation resolved it: its section and, for the plugins
/// bound to one `<localpath>`, the index of that root in [`Config::roots`] (with `-m`,
/// 0: the pipeline then watches that `localpath` alone). The plugin stage starts these,
/// so it never looks for a missing section or an unwatched root.
#[derive(Debug, Clone)]
pub enum Plugin {
    /// The command plugin: every root.
    Command(CommandConfig),
    /// The socket plugin and its root.
    Socket {
        /// Index in [`Config::roots`].
        root: usize,
        /// Its section.
        section: SocketConfig,
    },
    /// The http plugin and its root.
    Http {
        /// Index in [`Config::roots`].
        root: usize,
        /// Its section.
        section: HttpPluginConfig,
    },
    /// refreshCDN and its root.
    RefreshCdn {
        /// Index in [`Config::roots`].
        root: usize,
        /// Its section.
        section: CdnConfig,
    },
}

impl Plugin {
    /// Which plugin this is.
    pub fn kind(&self) -> PluginKind {
        match self {
            Plugin::Command(_) => PluginKind::Command,
            Plugin::Socket { .. } => PluginKind::Socket,
            Plugin::Http { .. } => PluginKind::Http,
            Plugin::RefreshCdn { .. } => PluginKind::RefreshCdn,
        }
    }
}

/// `<plugin name="command">`.
#[derive(Debug, Clone)]
pub struct CommandConfig {
    /// `prefix` split as shell words (the program and its first arguments).
    pub prefix: ProgramWords,
    /// `suffix` split as shell words (arguments after the path).
    pub suffix: Vec<String>,
    /// `ignoreError="true"`: discard the command's output and exit status.
    pub ignore_error: bool,
    /// `<filter start="true"><include expression>`: rules on the absolute path, anchored
    /// (a [`crate::filter::Rule`] always is) so `is_match` is sersync's full match; `None`
    /// means every path runs the command.
    pub include: Option<Vec<crate::filter::Rule>>,
    /// New `timeout` attribute on `<param>` (seconds, default 60).
    pub timeout: Duration,
    /// New `concurrency` attribute on `<param>` (default 4).
    pub concurrency: usize,
}

/// A program and its first arguments: never empty, so there is always something to run
/// (an empty `prefix` is refused when the file is read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramWords(Vec<String>);

impl ProgramWords {
    /// `words`, unless there are none.
    pub fn new(words: Vec<String>) -> Option<ProgramWords> {
        (!words.is_empty()).then_some(ProgramWords(words))
    }

    /// The program (the first word).
    pub fn program(&self) -> &str {
        self.0.first().map_or("", String::as_str)
    }

    /// Every word, the program first.
    pub fn words(&self) -> &[String] {
        &self.0
    }
}

/// `<plugin name="socket">`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketConfig {
    /// `<localpath watch>`: the root whose events are sent.
    pub root: PathBuf,
    /// `<deshost ip>`.
    pub host: String,
    /// `<deshost port>`.
    pub port: u16,
    /// New `<deshost format="lines">`: `EVENT PATH\n` over one persistent connection;
    /// default `false`, the original bare path per connection.
    pub lines: bool,
}

/// `<plugin name="http">`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpPluginConfig {
    /// `<localpath watch>`.
    pub root: PathBuf,
    /// `<deshost url>`: where the form is POSTed.
    pub url: String,
}

/// CDN purge API, chosen by the new `<cdninfo provider>` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CdnProvider {
    /// The original ChinaCache `HEAD /index.jsp?user=…` message (default).
    ChinaCache,
    /// HTTP `PURGE` per URL (Varnish, nginx cache purge, Fastly).
    Purge,
    /// Cloudflare `purge_cache` API.
    Cloudflare,
    /// JSON POST of `{"urls":[…],"dirs":[…]}`.
    Webhook,
}

/// `<plugin name="refreshCDN">`.
#[derive(Debug, Clone)]
pub struct CdnConfig {
    /// `<localpath watch>`: the root whose changes are purged.
    pub root: PathBuf,
    /// The purge API and exactly the settings it needs (checked when the file is read).
    pub api: CdnApi,
    /// `<sendurl base>`: public URL prefix (never empty).
    pub base_url: String,
    /// `<regexurl regex="true" match>`: compiled `match` (searched, not anchored; it has at
    /// least one capture group); `None` when `regex` is not `true`.
    pub url_regex: Option<regex::bytes::Regex>,
    /// New `<cdninfo batch>`: URLs per request (default 30).
    pub batch: usize,
    /// New `<cdninfo rate>`: requests per second at most (default 10).
    pub rate_per_sec: f64,
    /// New `<cdninfo timeout>` seconds per request (default 10).
    pub timeout: Duration,
}

/// A `host:port` endpoint (`<cdninfo domainname port>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Where and as whom ChinaCache purges are sent.
#[derive(Debug, Clone)]
pub struct ChinaCacheAccount {
    /// `<cdninfo domainname port>`.
    pub endpoint: HostPort,
    /// `<cdninfo username>`.
    pub username: String,
    /// `<cdninfo passwd>`. Prints as `<redacted>`.
    pub password: Secret<String>,
}

/// The purge API of `<cdninfo provider>`, each with what it cannot work without, so that
/// nothing the configuration stage checked is checked again when the stage starts.
#[derive(Debug, Clone)]
pub enum CdnApi {
    /// The original ChinaCache `HEAD /index.jsp?user=…` message (default).
    ChinaCache(ChinaCacheAccount),
    /// HTTP `PURGE` per URL (Varnish, nginx cache purge, Fastly).
    Purge {
        /// `<cdninfo domainname port>`: where to send it; without it, the URL's own host.
        target: Option<HostPort>,
    },
    /// Cloudflare `purge_cache` API.
    Cloudflare {
        /// New `<cdninfo zone>`.
        zone: String,
        /// New `<cdninfo tokenfile>`: the bearer token file (read when the stage starts).
        token_file: PathBuf,
        /// New `<cdninfo endpoint>` (API base, default `https://api.cloudflare.com`).
        endpoint: String,
    },
    /// JSON POST of `{"urls":[…],"dirs":[…]}`.
    Webhook {
        /// New `<cdninfo url>`. Prints as `<redacted>`.
        url: Secret<String>,
    },
}

impl CdnApi {
    /// Which provider this is.
    pub fn provider(&self) -> CdnProvider {
        match self {
            CdnApi::ChinaCache(_) => CdnProvider::ChinaCache,
            CdnApi::Purge { .. } => CdnProvider::Purge,
            CdnApi::Cloudflare { .. } => CdnProvider::Cloudflare,
            CdnApi::Webhook { .. } => CdnProvider::Webhook,
        }
    }
}

/// New `<log path level>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogConfig {
    /// Log file used with `-d` (and in the foreground when given).
    pub path: Option<PathBuf>,
    /// `error`, `warn`, `info`, `debug` or `trace`; `RUST_LOG` overrides it.
    pub level: Option<String>,
}

/// What `parse` must know besides the file: the command line can change which parts of the
/// file are used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParseOptions {
    /// `-m NAME`: run this plugin alone. Its section is then required and checked strictly;
    /// `<sersync>` remotes are not required, and for every plugin but `command` the whole
    /// `<sersync>` section is only checked leniently (its problems become warnings).
    pub standalone_plugin: Option<PluginKind>,
}

/// One problem found in a configuration file, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub col: u32,
    /// What is wrong, lower case, no final period.
    pub message: String,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid configuration.
    #[error("{}", format_problems(path, problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem, in file order.
        problems: Vec<Problem>,
    },
}

/// The largest configuration file read; more is surely not a configuration (and
/// `-o /dev/zero` must not fill the memory).
const MAX_CONFIG_BYTES: u64 = 16 << 20;

fn read_limited(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    if file.metadata()?.is_dir() {
        return Err(std::io::Error::other("is a directory"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(std::io::Error::other(
            "larger than 16 MiB, not a configuration file",
        ));
    }
    Ok(bytes)
}

fn format_problems(path: &Path, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}:{}:{}: {}", path.display(), p.line, p.col, p.message))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Reads and validates a configuration file.
    ///
    /// # Errors
    /// [`ConfigError::Read`] when the file cannot be read, [`ConfigError::Invalid`] with
    /// every problem found otherwise.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, &ParseOptions::default())
    }

    /// Reads and validates a configuration file for the given command-line options
    /// (`-m` changes which sections are required).
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn load_with(path: &Path, options: &ParseOptions) -> Result<Config, ConfigError> {
        let bytes = read_limited(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        parse_with(&bytes, path, options).map_err(|problems| ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        })
    }

    /// The remotes of every root as `(root index, remote index, remote)`.
    pub fn targets(&self) -> impl Iterator<Item = (usize, usize, &Remote)> + '_ {
        self.roots.iter().enumerate().flat_map(|(root_idx, root)| {
            root.remotes
                .iter()
                .enumerate()
                .map(move |(remote_idx, remote)| (root_idx, remote_idx, remote))
        })
    }
}
