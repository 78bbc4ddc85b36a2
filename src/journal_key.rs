//! The journal's name for one remote of one root, and for a root's CDN purges.
//!
//! A leaf (it imports only `config`), so that `status`, `pipeline`, `coalesce` and `cdn`
//! can all name it without importing each other. The text form is versioned and pinned by a golden test: it must never
//! follow a log message or `Remote`'s `Display`, or an upgrade would orphan every pending
//! journal entry. 0.1.0 wrote `<root> -> <remote>` (and `cdn <root>`); that form is
//! recognised ([`TargetKey::legacy_text`]) and its entries are moved to the current one.

use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::config::Remote;

/// The journal key of a remote as text: the versioned form of [`TargetKey`]
/// (`v2 daemon /srv/www 10.0.0.2::www`), stable across restarts, upgrades and config
/// edits that keep the root and the remote.
pub fn target_key(root: &Path, remote: &Remote) -> String {
    TargetKey::new(root, remote).to_string()
}

/// Prefix of every current key.
const VERSION: &str = "v2";

/// What a key names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Dest {
    Daemon {
        host: String,
        module: String,
        port: Option<u16>,
    },
    Ssh {
        host: String,
        path: String,
    },
    Local {
        path: PathBuf,
    },
    Cdn,
}

/// One remote of one root (or the CDN purges of a root) in the journal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetKey {
    root: PathBuf,
    dest: Dest,
}

impl TargetKey {
    /// The key of `remote` of `root`.
    pub fn new(root: &Path, remote: &Remote) -> TargetKey {
        let dest = match remote {
            Remote::Daemon { host, module, port } => Dest::Daemon {
                host: host.clone(),
                module: module.clone(),
                port: *port,
            },
            Remote::Ssh { host, path } => Dest::Ssh {
                host: host.clone(),
                path: path.clone(),
            },
            Remote::Local { path } => Dest::Local { path: path.clone() },
        };
        TargetKey {
            root: root.to_path_buf(),
            dest,
        }
    }

    /// The key of the CDN purges of `root`.
    pub fn cdn(root: &Path) -> TargetKey {
        TargetKey {
            root: root.to_path_buf(),
            dest: Dest::Cdn,
        }
    }

    /// Whether a key's text (current or 0.1.0) names CDN purges.
    pub fn is_cdn_text(text: &str) -> bool {
        text.starts_with("v2 cdn ") || text.starts_with("cdn ")
    }

    /// The text 0.1.0 wrote for this key, spelled out here (not through `Display` of
    /// anything) so it stays what 0.1.0 wrote.
    pub fn legacy_text(&self) -> String {
        let root = self.root.display();
        match &self.dest {
            // 0.1.0 had no per-remote port: its entry for the daemon is this remote's.
            Dest::Daemon { host, module, .. } => format!("{root} -> {host}::{module}"),
            Dest::Ssh { host, path } => format!("{root} -> {host}:{path}"),
            Dest::Local { path } => format!("{root} -> {}", path.display()),
            Dest::Cdn => format!("cdn {root}"),
        }
    }
}

/// `v2 <kind> <root> [<destination>] [port=<n>]`, fields separated by one space; in each field `%`,
/// space, control bytes and (in a name that is not UTF-8) every byte above 0x7F are
/// written `%XX`, so the text is one line, unambiguous and byte-exact.
impl fmt::Display for TargetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let root = field(self.root.as_os_str().as_bytes());
        match &self.dest {
            Dest::Daemon { host, module, port } => {
                write!(
                    f,
                    "{VERSION} daemon {root} {}::{}",
                    field(host.as_bytes()),
                    field(module.as_bytes())
                )?;
                // A trailing field (the module field has no space), only for
                // `<remote port>`: keys of remotes without one stay as they were.
                match port {
                    Some(port) => write!(f, " port={port}"),
                    None => Ok(()),
                }
            }
            Dest::Ssh { host, path } => write!(
                f,
                "{VERSION} ssh {root} {}:{}",
                field(host.as_bytes()),
                field(path.as_bytes())
            ),
            Dest::Local { path } => write!(
                f,
                "{VERSION} local {root} {}",
                field(path.as_os_str().as_bytes())
            ),
            Dest::Cdn => write!(f, "{VERSION} cdn {root}"),
        }
    }
}

fn field(bytes: &[u8]) -> String {
    let escape = |out: &mut String, b: u8| out.push_str(&format!("%{b:02X}"));
    let mut out = String::with_capacity(bytes.len());
    if let Ok(text) = std::str::from_utf8(bytes) {
        for c in text.chars() {
            match u8::try_from(c) {
                Ok(b) if b == b'%' || b == b' ' || b < 0x20 || b == 0x7f => escape(&mut out, b),
                _ => out.push(c),
            }
        }
    } else {
        for &b in bytes {
            if b == b'%' || b == b' ' || !(0x20..0x7f).contains(&b) {
                escape(&mut out, b);
            } else {
                out.push(char::from(b));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    /// Golden: these strings are in operators' journals. Never change one; add a new
    /// version instead and keep reading this one.
    #[test]
    fn text_forms_are_pinned() {
        let root = Path::new("/srv/www");
        let table = [
            (
                Remote::Daemon {
                    host: "10.0.0.2".into(),
                    module: "www".into(),
                    port: None,
                },
                "v2 daemon /srv/www 10.0.0.2::www",
                "/srv/www -> 10.0.0.2::www",
            ),
            (
                Remote::Ssh {
                    host: "deploy@h".into(),
                    path: "/var/www copy".into(),
                },
                "v2 ssh /srv/www deploy@h:/var/www%20copy",
                "/srv/www -> deploy@h:/var/www copy",
            ),
            (
                Remote::Local {
                    path: "/mnt/mirror".into(),
                },
                "v2 local /srv/www /mnt/mirror",
                "/srv/www -> /mnt/mirror",
            ),
        ];
        for (remote, text, legacy) in table {
            let key = TargetKey::new(root, &remote);
            assert_eq!(key.to_string(), text);
            assert_eq!(key.legacy_text(), legacy);
        }
        // `<remote port>` is part of the daemon's identity (two daemons on one host);
        // 0.1.0's key, which had no port, is still recognised as this remote's.
        let with_port = TargetKey::new(
            root,
            &Remote::Daemon {
                host: "::1".into(),
                module: "www".into(),
                port: Some(8731),
            },
        );
        assert_eq!(
            with_port.to_string(),
            "v2 daemon /srv/www ::1::www port=8731"
        );
        assert_eq!(with_port.legacy_text(), "/srv/www -> ::1::www");
        let cdn = TargetKey::cdn(root);
        assert_eq!(cdn.to_string(), "v2 cdn /srv/www");
        assert_eq!(cdn.legacy_text(), "cdn /srv/www");
        assert!(TargetKey::is_cdn_text("v2 cdn /srv/www"));
        assert!(TargetKey::is_cdn_text("cdn /srv/www"));
        assert!(!TargetKey::is_cdn_text("v2 local /cdn /x"));
    }

    #[test]
    fn fields_are_escaped_unambiguously() {
        use std::os::unix::ffi::OsStrExt as _;
        let odd = Path::new(OsStr::from_bytes(b"/a b/%/\xff"));
        let key = TargetKey::new(
            odd,
            &Remote::Local {
                path: "/图片/x".into(),
            },
        );
        assert_eq!(key.to_string(), "v2 local /a%20b/%25/%FF /图片/x");
        let a = TargetKey::new(
            Path::new("/a"),
            &Remote::Local {
                path: "/b /c".into(),
            },
        );
        let b = TargetKey::new(Path::new("/a /b"), &Remote::Local { path: "/c".into() });
        assert_ne!(a.to_string(), b.to_string());
    }
}
