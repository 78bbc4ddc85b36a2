//! Path helpers shared by the stages. A leaf: it imports nothing from the crate.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// `root` joined with `rel`, byte-exact; an empty `rel` is the root itself (no
/// trailing `/`).
pub fn abs_path(root: &Path, rel: &Path) -> PathBuf {
    if rel.as_os_str().is_empty() {
        return root.to_path_buf();
    }
    let mut bytes = root.as_os_str().as_bytes().to_vec();
    if !bytes.ends_with(b"/") {
        bytes.push(b'/');
    }
    bytes.extend_from_slice(rel.as_os_str().as_bytes());
    PathBuf::from(OsString::from_vec(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abs_path_is_byte_exact() {
        let rel = Path::new(std::ffi::OsStr::from_bytes(b"a b/\xff\n-x"));
        assert_eq!(
            abs_path(Path::new("/srv"), rel).as_os_str().as_bytes(),
            b"/srv/a b/\xff\n-x"
        );
        assert_eq!(
            abs_path(Path::new("/srv"), Path::new("")),
            Path::new("/srv")
        );
        assert_eq!(abs_path(Path::new("/"), Path::new("a")), Path::new("/a"));
    }
}
