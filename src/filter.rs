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

/// Compiled exclude rules, shared read-only by every stage.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    excludes: Vec<Regex>,
}

impl Filter {
    /// Rules from already compiled regexes (compiled during config validation). Each is
    /// anchored at both ends here, as sersync's `boost::regex_match` full match.
    pub fn new(excludes: Vec<Regex>) -> Filter {
        let excludes = excludes
            .into_iter()
            .map(|re| Regex::new(&format!("^(?:{})$", re.as_str())).unwrap_or(re))
            .collect();
        Filter { excludes }
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
        if self.excludes.iter().any(|re| re.is_match(bytes)) {
            return true;
        }
        if is_dir {
            let mut with_slash = Vec::with_capacity(bytes.len() + 1);
            with_slash.extend_from_slice(bytes);
            with_slash.push(b'/');
            return self.excludes.iter().any(|re| re.is_match(&with_slash));
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
        Filter::new(
            patterns
                .iter()
                .map(|p| Regex::new(p).expect("test regex"))
                .collect(),
        )
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
    fn empty_filter_excludes_nothing() {
        assert!(!Filter::default().is_excluded(Path::new("x"), false));
    }
}
