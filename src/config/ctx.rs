//! The reading context: where problems and warnings are collected while the tree of a
//! configuration file is walked, and the typed readers of attribute values (booleans,
//! numbers, paths, regexes) that name the element and attribute in every message.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::tree::Node;

use super::{PluginKind, Problem};

/// The children of `<filter>` / `<crontabfilter>`: sersync read every child as a pattern,
/// whatever its name; so do we, with a warning when the name is not the expected one.
pub(super) fn pattern_children<'a>(
    ctx: &mut Ctx<'_>,
    node: Node<'a>,
    expected: &str,
) -> Vec<Node<'a>> {
    let children: Vec<_> = node.children().collect();
    for child in &children {
        if !is(*child, expected) {
            let (name, parent) = (child.name(), node.name());
            ctx.warn(
                child.start(),
                format!("<{name}> in <{parent}> is read as <{expected}> (as sersync 2.5 did)"),
            );
        }
        ctx.check_attrs(*child, &["expression"]);
    }
    children
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> u32 {
    let before = text.get(..offset).unwrap_or(text);
    let row = before.bytes().filter(|&b| b == b'\n').count() + 1;
    u32::try_from(row).unwrap_or(u32::MAX)
}

/// The notes as problems in file order, with positions found in one walk of the text.
fn problems(text: &str, mut notes: Vec<Note>) -> Vec<Problem> {
    notes.sort_by_key(|note| note.offset);
    let (mut line, mut col) = (1_u32, 1_u32);
    let mut chars = text.char_indices().peekable();
    let mut out = Vec::with_capacity(notes.len());
    for note in notes {
        while let Some(&(at, c)) = chars.peek() {
            if at >= note.offset {
                break;
            }
            if c == '\n' {
                (line, col) = (line.saturating_add(1), 1);
            } else {
                col = col.saturating_add(1);
            }
            chars.next();
        }
        out.push(Problem {
            line,
            col,
            message: note.message,
        });
    }
    out
}

/// True when `node` is an element named `name` (case-insensitive).
pub(super) fn is(node: Node<'_>, name: &str) -> bool {
    node.name().eq_ignore_ascii_case(name)
}

/// An attribute value and the byte offset of the attribute, for messages.
#[derive(Debug, Clone, Copy)]
pub(super) struct Attr<'a> {
    pub value: &'a str,
    pub pos: usize,
}

/// A message at a byte offset of the text; turned into a [`Problem`] at the end.
struct Note {
    offset: usize,
    message: String,
    /// What to do about it; shown after an error, dropped when the error is demoted (an
    /// unused section needs no fixing).
    fix: Option<String>,
}

/// Where problems and warnings are collected while the tree is walked. Positions are
/// byte offsets until [`Ctx::finish`] turns them all into lines and columns in one pass.
pub(super) struct Ctx<'a> {
    text: &'a str,
    pub file: &'a Path,
    latin1: bool,
    errors: Vec<Note>,
    warnings: Vec<Note>,
}

impl<'a> Ctx<'a> {
    /// A context for `text`, read from `file`; `latin1` when the bytes were not UTF-8.
    pub fn new(text: &'a str, file: &'a Path, latin1: bool) -> Ctx<'a> {
        Ctx {
            text,
            file,
            latin1,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Records an error at a byte offset of the text.
    pub fn error(&mut self, offset: usize, message: impl Into<String>) {
        let message = message.into();
        self.errors.push(Note {
            offset,
            message,
            fix: None,
        });
    }

    /// Records an error with the one thing to do about it (`create it: mkdir -p …`),
    /// printed after the message as `message, fix`.
    pub fn error_with_fix(&mut self, offset: usize, message: impl Into<String>, fix: String) {
        let message = message.into();
        self.errors.push(Note {
            offset,
            message,
            fix: Some(fix),
        });
    }

    /// Records a warning at a byte offset of the text.
    pub fn warn(&mut self, offset: usize, message: impl Into<String>) {
        let message = message.into();
        self.warnings.push(Note {
            offset,
            message,
            fix: None,
        });
    }

    /// How many errors were recorded so far; pass it to [`Ctx::errors_since`] or
    /// [`Ctx::demote`].
    pub fn mark(&self) -> usize {
        self.errors.len()
    }

    /// True when an error was recorded after `mark`.
    pub fn errors_since(&self, mark: usize) -> bool {
        self.errors.len() > mark
    }

    /// The 1-based line of a byte offset.
    pub fn line(&self, offset: usize) -> u32 {
        line_of(self.text, offset)
    }

    /// Turns the errors recorded since `mark` into warnings, noting why they do not count.
    pub fn demote(&mut self, mark: usize, why: &str) {
        let demoted = self.errors.drain(mark..).map(|note| Note {
            message: format!("{} (ignored: {why})", note.message),
            fix: None,
            ..note
        });
        self.warnings.extend(demoted);
    }

    /// The errors as problems, and the warnings formatted `FILE:LINE:COL: message`, both
    /// in file order.
    pub fn finish(self) -> (Vec<Problem>, Vec<String>) {
        let file = self.file.display();
        let warnings = problems(self.text, self.warnings)
            .into_iter()
            .map(|p| format!("{file}:{}:{}: {}", p.line, p.col, p.message))
            .collect();
        let errors = self
            .errors
            .into_iter()
            .map(|note| match note.fix {
                Some(fix) => Note {
                    message: format!("{}, {fix}", note.message),
                    fix: None,
                    ..note
                },
                None => note,
            })
            .collect();
        (problems(self.text, errors), warnings)
    }

    /// The first child element named `name`; a second one draws a warning.
    pub fn child<'n>(&mut self, node: Node<'n>, name: &str) -> Option<Node<'n>> {
        let mut found = node.children().filter(|c| is(*c, name));
        let first = found.next();
        if let Some(extra) = found.next() {
            self.warn(
                extra.start(),
                format!("duplicate <{name}>: only the first one is used"),
            );
        }
        first
    }

    /// Warns about child elements whose names are not in `known`.
    pub fn check_children(&mut self, node: Node<'_>, known: &[&str]) {
        for child in node.children() {
            let name = child.name();
            if !known.iter().any(|k| k.eq_ignore_ascii_case(name)) {
                let parent = node.name();
                self.warn(
                    child.start(),
                    format!("unknown element <{name}> in <{parent}>, ignored"),
                );
            }
        }
    }

    /// Warns about attributes whose names are not in `known`.
    pub fn check_attrs(&mut self, node: Node<'_>, known: &[&str]) {
        for attr in node.attributes() {
            let name = attr.name();
            if !known.iter().any(|k| k.eq_ignore_ascii_case(name)) {
                let element = node.name();
                self.warn(
                    attr.start(),
                    format!("unknown attribute {name} on <{element}>, ignored"),
                );
            }
        }
    }

    /// The attribute `name` (case-insensitive), if present.
    pub fn attr<'n>(&self, node: Node<'n>, name: &str) -> Option<Attr<'n>> {
        node.attributes()
            .find(|a| a.name().eq_ignore_ascii_case(name))
            .map(|a| Attr {
                value: a.value(),
                pos: a.start(),
            })
    }

    /// A boolean attribute: on only when exactly `true`; missing means `default`.
    pub fn flag(&mut self, node: Node<'_>, name: &str, default: bool) -> bool {
        let Some(attr) = self.attr(node, name) else {
            return default;
        };
        let element = node.name();
        let value = attr.value;
        match value {
            "true" => true,
            "false" => false,
            _ if matches!(
                value.trim().to_ascii_lowercase().as_str(),
                "true" | "yes" | "1" | "on"
            ) =>
            {
                self.warn(attr.pos, format!("<{element} {name}=\"{value}\">: read as false, only lower-case true turns it on"));
                false
            }
            _ => {
                self.warn(
                    attr.pos,
                    format!(
                        "<{element} {name}=\"{value}\">: neither true nor false, read as false"
                    ),
                );
                false
            }
        }
    }

    /// A trimmed, non-empty attribute checked by `check`; missing or empty gives `None`,
    /// an invalid value records an error naming the element and attribute.
    pub fn parse_attr<T>(
        &mut self,
        node: Node<'_>,
        name: &str,
        check: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let attr = self.attr(node, name)?;
        let value = attr.value.trim();
        if value.is_empty() {
            return None;
        }
        match check(value) {
            Ok(parsed) => Some(parsed),
            Err(why) => {
                let element = node.name();
                self.error(attr.pos, format!("<{element} {name}=\"{value}\">: {why}"));
                None
            }
        }
    }

    /// A whole number attribute within `min..=max`.
    pub fn integer<T: FromStr + PartialOrd + std::fmt::Display>(
        &mut self,
        node: Node<'_>,
        name: &str,
        min: T,
        max: T,
    ) -> Option<T> {
        self.parse_attr(node, name, |v| match v.parse::<T>() {
            Ok(n) if n >= min && n <= max => Ok(n),
            _ => Err(format!("not a whole number from {min} to {max}")),
        })
    }

    /// A TCP port attribute (1–65535).
    pub fn port(&mut self, node: Node<'_>, name: &str) -> Option<u16> {
        self.integer(node, name, 1, u16::MAX)
    }

    /// A decimal number attribute (`0.1`, `60`); finite, any sign.
    pub fn decimal(&mut self, node: Node<'_>, name: &str) -> Option<f64> {
        self.parse_attr(node, name, |v| match v.parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(n),
            _ => Err("not a number".to_owned()),
        })
    }

    /// A path attribute that must be absolute; missing or empty gives `None`.
    pub fn abs_path(&mut self, node: Node<'_>, name: &str) -> Option<PathBuf> {
        let path = self.parse_attr(node, name, |v| Ok(v.to_owned()))?;
        let path = self.path(&path);
        if path.is_absolute() {
            Some(path)
        } else {
            let pos = self.attr(node, name).map_or(node.start(), |a| a.pos);
            let element = node.name();
            self.error(
                pos,
                format!(
                    "<{element} {name}=\"{}\">: not an absolute path",
                    path.display()
                ),
            );
            None
        }
    }

    /// A path from an attribute value. A file decoded as Latin-1 gets its bytes back, so a
    /// non-UTF-8 directory name written in such a file still names the same directory.
    pub fn path(&self, value: &str) -> PathBuf {
        if self.latin1 && value.chars().all(|c| u32::from(c) <= 0xff) {
            let bytes = value
                .chars()
                .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
                .collect();
            PathBuf::from(OsString::from_vec(bytes))
        } else {
            PathBuf::from(value)
        }
    }

    /// Compiles the regex in attribute `name`; `anchored` wraps it as `^(?:…)$`
    /// ([`crate::filter::anchored`]).
    pub fn regex(
        &mut self,
        node: Node<'_>,
        name: &str,
        anchored: bool,
    ) -> Option<regex::bytes::Regex> {
        if anchored {
            self.compile(node, name, true, crate::filter::anchored)
        } else {
            self.compile(node, name, false, regex::bytes::Regex::new)
        }
    }

    /// Compiles the pattern in attribute `name` with `compile`; a missing attribute or a
    /// pattern that does not compile is an error at its line:col, an empty one a warning.
    /// `anchored` says that `compile` wraps the pattern as `^(?:…)$`, so that a pattern
    /// valid only unwrapped is explained.
    pub fn compile<T>(
        &mut self,
        node: Node<'_>,
        name: &str,
        anchored: bool,
        compile: impl FnOnce(&str) -> Result<T, regex::Error>,
    ) -> Option<T> {
        let element = node.name();
        let Some(attr) = self.attr(node, name) else {
            self.error(node.start(), format!("<{element}> without {name}"));
            return None;
        };
        if attr.value.is_empty() {
            self.warn(attr.pos, format!("<{element} {name}=\"\">: empty, ignored"));
            return None;
        }
        match compile(attr.value) {
            Ok(compiled) => Some(compiled),
            Err(err) => {
                let mut why = regex_error(&err);
                if anchored && regex::bytes::Regex::new(attr.value).is_ok() {
                    why = format!("invalid once anchored as ^(?:…)$ to match whole paths: {why}");
                } else {
                    why = format!("invalid regex: {why}");
                }
                self.error(
                    attr.pos,
                    format!("<{element} {name}=\"{}\">: {why}", attr.value),
                );
                None
            }
        }
    }
}

/// The one-line reason from a regex error (its `Display` is a multi-line drawing).
fn regex_error(err: &regex::Error) -> String {
    let text = err.to_string();
    text.lines()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or_else(|| text.lines().last().unwrap_or("unknown error"))
        .to_owned()
}

/// Which plugin a name in the file means, and whether it is enabled.
pub(super) type Enabled = Vec<(PluginKind, usize)>;
