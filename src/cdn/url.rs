//! Pure mapping from a changed path to the public URL that has to be purged.
//!
//! Two forms, as sersync 2.5 `CdnRefreshInterface.cpp` had them:
//! - plain: `sendurl base` + the path relative to the plugin's `localpath watch`
//!   (`/data/site` + `img/a.jpg` → `http://cdn.example.com/img/a.jpg`);
//! - `regexurl regex="true"`: the regex is *searched* in the absolute path, and the URL is
//!   `base` + capture group 1 + the text after the match. No match means no purge.
//!
//! Directories get a trailing `/` (they are purged as ChinaCache `dirs`, Cloudflare
//! `prefixes`, webhook `dirs`). Unlike the original, the path part is percent-encoded
//! (see [`crate::urlencode::encode_path`]), and one trailing `/` of `base` is dropped so that `base/` and
//! `base` give the same URL instead of a `//` the original produced.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::config::CdnConfig;
use crate::paths::abs_path;
use crate::urlencode::encode_path;

/// The URL to purge for `rel` (relative to `root`, the plugin's `localpath`), or `None`
/// when `url_regex` is set and does not match the absolute path.
pub fn purge_url(cdn: &CdnConfig, root: &Path, rel: &Path, is_dir: bool) -> Option<String> {
    let base = cdn.base_url.strip_suffix('/').unwrap_or(&cdn.base_url);
    let rel_bytes = rel.as_os_str().as_bytes();
    let tail: Vec<u8> = match &cdn.url_regex {
        None => {
            let mut tail = Vec::with_capacity(rel_bytes.len() + 1);
            if !rel_bytes.is_empty() {
                tail.push(b'/');
                tail.extend_from_slice(rel_bytes);
            }
            tail
        }
        Some(regex) => {
            let abs = abs_path(root, rel);
            let abs = abs.as_os_str().as_bytes();
            let caps = regex.captures(abs)?;
            let whole = caps.get(0)?;
            let mut tail = caps.get(1).map_or_else(Vec::new, |m| m.as_bytes().to_vec());
            tail.extend_from_slice(&abs[whole.end()..]);
            tail
        }
    };
    let mut url = String::with_capacity(base.len() + tail.len() + 1);
    url.push_str(base);
    url.push_str(&encode_path(&tail));
    if is_dir && !url.ends_with('/') {
        url.push('/');
    }
    Some(url)
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::path::PathBuf;

    use super::*;
    use crate::config::CdnApi;

    fn cdn(base: &str, regex: Option<&str>) -> CdnConfig {
        CdnConfig {
            root: PathBuf::from("/data0/htdocs/cms.xoyo.com/site"),
            api: CdnApi::Purge { target: None },
            base_url: base.into(),
            url_regex: regex.map(|r| regex::bytes::Regex::new(r).expect("test regex")),
            batch: 30,
            rate_per_sec: 10.0,
            timeout: std::time::Duration::from_secs(1),
        }
    }

    fn map(cdn: &CdnConfig, rel: &[u8], is_dir: bool) -> Option<String> {
        let rel = Path::new(OsStr::from_bytes(rel));
        purge_url(cdn, &cdn.root, rel, is_dir)
    }

    #[test]
    fn plain_mapping_matches_the_stock_example() {
        let cdn = cdn("http://pic.xoyo.com/cms", None);
        assert_eq!(
            map(&cdn, b"jx3.xoyo.com/images/a.jpg", false).as_deref(),
            Some("http://pic.xoyo.com/cms/jx3.xoyo.com/images/a.jpg")
        );
    }

    #[test]
    fn regex_mapping_matches_the_stock_example() {
        let cdn = cdn(
            "http://pic.xoyo.com/cms",
            Some("cms.xoyo.com/site([/a-zA-Z0-9]*).xoyo.com/images"),
        );
        assert_eq!(
            map(&cdn, b"jx3.xoyo.com/images/a.jpg", false).as_deref(),
            Some("http://pic.xoyo.com/cms/jx3/a.jpg")
        );
    }

    #[test]
    fn regex_without_match_gives_no_url() {
        let cdn = cdn("http://x", Some("nomatch([a-z]+)"));
        assert_eq!(map(&cdn, b"a.jpg", false), None);
    }

    #[test]
    fn regex_without_group_keeps_the_rest() {
        let cdn = cdn("http://x", Some("/site"));
        assert_eq!(
            map(&cdn, b"a.jpg", false).as_deref(),
            Some("http://x/a.jpg")
        );
    }

    #[test]
    fn directories_get_one_trailing_slash() {
        let cdn = cdn("http://x/", None);
        assert_eq!(map(&cdn, b"a/b", true).as_deref(), Some("http://x/a/b/"));
        assert_eq!(map(&cdn, b"", true).as_deref(), Some("http://x/"));
    }

    #[test]
    fn spaces_non_ascii_and_raw_bytes_are_percent_encoded() {
        let cdn = cdn("http://x", None);
        assert_eq!(
            map(&cdn, "a b/é 100%?#.jpg".as_bytes(), false).as_deref(),
            Some("http://x/a%20b/%C3%A9%20100%25%3F%23.jpg")
        );
        assert_eq!(
            map(&cdn, b"bad\xff\n.txt", false).as_deref(),
            Some("http://x/bad%FF%0A.txt")
        );
        assert_eq!(
            map(&cdn, b"keep-._~!$&'()*+,;=:@", false).as_deref(),
            Some("http://x/keep-._~!$&'()*+,;=:@")
        );
    }
}
