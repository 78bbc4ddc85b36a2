//! `<filter>` exclude rules: one documented form.
//!
//! Each `<exclude expression>` is a regex that must match the *whole* path relative to
//! the root, with `/` separators and no leading `/` (`dir/sub/name`). A directory is
//! tested twice: as `dir/sub` and as `dir/sub/`, so `^static/*` and `(.*)\.svn` from
//! stock sersync files keep working. A path is excluded when it, or any of its parent
//! directories, is excluded, so an excluded directory hides its whole subtree.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use regex::bytes::Regex;

/// `pattern` compiled to match whole paths only, as sersync's `boost::regex_match`:
/// `^(?:pattern)$`. The one place a rule is anchored.
///
/// # Errors
/// The regex error, also when `pattern` compiles alone but not once wrapped (a
/// `(?x)` comment that swallows the closing group, for one).
pub fn anchored(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

/// One `<exclude expression>`: the pattern as written and its anchored regex.
#[derive(Debug, Clone)]
pub struct Rule {
    pattern: String,
    regex: Regex,
}

impl Rule {
    /// Compiles `pattern` anchored at both ends ([`anchored`]).
    ///
    /// # Errors
    /// When the anchored pattern is not a valid regex; there is no unanchored fallback,
    /// which would exclude more than the rule says.
    pub fn new(pattern: &str) -> Result<Rule, regex::Error> {
        Ok(Rule {
            pattern: pattern.to_owned(),
            regex: anchored(pattern)?,
        })
    }

    /// The pattern as written.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Whether the rule matches all of `bytes`.
    pub fn is_match(&self, bytes: &[u8]) -> bool {
        self.regex.is_match(bytes)
    }
}

/// Compiled exclude rules, built once by config validation and shared read-only by
/// every stage.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// The rules, in file order (each anchored: a [`Rule`] cannot be built otherwise).
    pub excludes: Vec<Rule>,
}

impl Filter {
    /// The rules, in file order.
    pub fn new(excludes: Vec<Rule>) -> Filter {
        Filter { excludes }
    }

    /// Compiles every pattern ([`Rule::new`]).
    ///
    /// # Errors
    /// The first pattern that does not compile.
    pub fn from_patterns<S: AsRef<str>>(patterns: &[S]) -> Result<Filter, regex::Error> {
        let excludes = patterns
            .iter()
            .map(|p| Rule::new(p.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Filter { excludes })
    }

    /// The patterns as written, in file order.
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.excludes.iter().map(Rule::pattern)
    }

    /// True when there are no rules.
    pub fn is_empty(&self) -> bool {
        self.excludes.is_empty()
    }

    /// True when `rel` itself matches a rule (its parents are not looked at).
    pub fn matches(&self, rel: &Path, is_dir: bool) -> bool {
        if self.excludes.is_empty() {
            return false;
        }
        let bytes = rel.as_os_str().as_bytes();
        if self.excludes.iter().any(|rule| rule.is_match(bytes)) {
            return true;
        }
        if is_dir {
            let mut with_slash = Vec::with_capacity(bytes.len() + 1);
            with_slash.extend_from_slice(bytes);
            with_slash.push(b'/');
            return self
                .excludes
                .iter()
                .any(|rule| rule.regex.is_match(&with_slash));
        }
        false
    }

    /// True when `rel` or any directory above it matches a rule.
    pub fn is_excluded(&self, rel: &Path, is_dir: bool) -> bool {
        if self.excludes.is_empty() {
            return false;
        }
        let mut ancestors = rel
            .ancestors()
            .skip(1)
            .filter(|p| !p.as_os_str().is_empty());
        self.matches(rel, is_dir) || ancestors.any(|dir| self.matches(dir, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(patterns: &[&str]) -> Filter {
        Filter::from_patterns(patterns).expect("test regex")
    }

    #[test]
    fn stock_patterns_keep_their_meaning() {
        let f = filter(&[r"(.*)\.svn", r"(.*)\.gz", r"^info/*", r"^static/*"]);
        assert!(f.is_excluded(Path::new("a/b.gz"), false));
        assert!(f.is_excluded(Path::new("x.gz"), false));
        assert!(!f.is_excluded(Path::new("x.gzip"), false));
        assert!(f.is_excluded(Path::new("static"), true));
        assert!(f.is_excluded(Path::new("static/css/a.css"), false));
        assert!(f.is_excluded(Path::new("info"), true));
        assert!(!f.is_excluded(Path::new("information.txt"), false));
        assert!(f.is_excluded(Path::new("proj/.svn"), true));
        assert!(f.is_excluded(Path::new("proj/.svn/entries"), false));
    }

    #[test]
    fn match_must_span_whole_path() {
        let f = filter(&[r"cache"]);
        assert!(f.is_excluded(Path::new("cache"), true));
        assert!(!f.is_excluded(Path::new("a/cache"), true));
        let f = filter(&[r"(.*/)?cache/"]);
        assert!(f.is_excluded(Path::new("a/cache"), true));
        assert!(f.is_excluded(Path::new("a/cache/x"), false));
        assert!(!f.is_excluded(Path::new("a/cache"), false));
    }

    #[test]
    fn alternation_is_anchored_as_a_whole() {
        let f = filter(&[r"a|ab"]);
        assert!(f.is_excluded(Path::new("ab"), false));
        assert!(!f.is_excluded(Path::new("abc"), false));
    }

    #[test]
    fn a_pattern_that_cannot_be_anchored_is_an_error_not_a_looser_rule() {
        // Alone it compiles (`#` starts a comment in `(?x)` mode); wrapped, the comment
        // swallows `)$`. Falling back to the unanchored regex would exclude every path
        // that merely contains `cache`.
        assert!(Regex::new("(?x)cache # temp files").is_ok());
        assert!(Rule::new("(?x)cache # temp files").is_err());
        assert!(Filter::from_patterns(&["ok", "(?x)cache # temp"]).is_err());
        assert_eq!(
            filter(&["(?x) cache"]).patterns().collect::<Vec<_>>(),
            ["(?x) cache"]
        );
    }

    #[test]
    fn empty_filter_excludes_nothing() {
        assert!(!Filter::default().is_excluded(Path::new("x"), false));
    }
}
