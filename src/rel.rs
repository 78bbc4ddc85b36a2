//! One root-relative path shared by every remote queue of its root, and by the jobs
//! that push it.
//!
//! The scheduler builds one [`Rel`] per event and hands each remote's queue a clone (a
//! reference count, not a copy), so ten remotes of a root with a 100,000-path backlog
//! hold one copy of each path; a batch's [`crate::job::Entry`] holds the same clone, so
//! a job copies no path either. Ordered by its bytes with `/` below every other byte,
//! which is `Path`'s component order for the normalized relative paths queues hold, at
//! a fraction of the cost: the queues' ordered maps and range scans (a directory's
//! descendants follow it) work unchanged.
//!
//! Beside the path sits the size the push worker measured for the batch byte limit
//! ([`Rel::size`]): measured once per root, not once per remote, and forgotten by the
//! queues at the path's next change ([`Rel::forget_size`]). A leaf: imports nothing of
//! the crate.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::ffi::OsStr;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

/// A shared, normalized root-relative path (no leading `/`, no `.` or empty
/// components, no trailing `/`: spellings `Path` holds equal are one `Rel`). A `..`
/// component, which no event carries (only a hand-edited journal could), sorts by its
/// bytes rather than first as in `Path`. One pointer wide: every queue slot and batch
/// entry of every remote holds one.
#[derive(Clone)]
pub struct Rel(Arc<Shared>);

/// What every holder of one [`Rel`] shares.
struct Shared {
    /// The file's size as last measured, [`UNKNOWN`] when not measured since the path
    /// last changed (a heuristic for the batch byte limit, never for correctness).
    size: AtomicU64,
    path: Box<Path>,
}

/// [`Shared::size`] when no measurement is kept.
const UNKNOWN: u64 = u64::MAX;

impl Rel {
    /// `path` shared, normalized when it is not already (`a//b/./c/` is `a/b/c`).
    pub fn new(path: PathBuf) -> Rel {
        if is_normal(path.as_os_str().as_bytes()) {
            return Rel::shared(path.into_boxed_path());
        }
        let normal: PathBuf = path
            .components()
            .filter(|c| !matches!(c, Component::CurDir | Component::RootDir))
            .collect();
        Rel::shared(normal.into_boxed_path())
    }

    /// `path` exactly as given, not normalized: a journal entry read back from the file
    /// (0.1.0 wrote `.` and other spellings) must name the entry it clears. Queues never
    /// hold one: the scheduler hands them the normalized form ([`Rel::from`]).
    pub fn verbatim(path: PathBuf) -> Rel {
        Rel::shared(path.into_boxed_path())
    }

    fn shared(path: Box<Path>) -> Rel {
        Rel(Arc::new(Shared {
            size: AtomicU64::new(UNKNOWN),
            path,
        }))
    }

    /// The path.
    pub fn as_path(&self) -> &Path {
        &self.0.path
    }

    /// The size measured for this path since its last change, if any.
    pub fn size(&self) -> Option<u64> {
        let size = self.0.size.load(AtomicOrdering::Relaxed);
        (size != UNKNOWN).then_some(size)
    }

    /// Keeps `size` as measured now, for every holder of this `Rel`.
    pub fn set_size(&self, size: u64) {
        self.0
            .size
            .store(size.min(UNKNOWN - 1), AtomicOrdering::Relaxed);
    }

    /// The path changed: the next batch measures it again.
    pub fn forget_size(&self) {
        self.0.size.store(UNKNOWN, AtomicOrdering::Relaxed);
    }

    /// Whether both are the same stored path (not merely equal ones).
    #[cfg(test)]
    pub(crate) fn shares(&self, other: &Rel) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    fn bytes(&self) -> &[u8] {
        self.0.path.as_os_str().as_bytes()
    }
}

/// A [`Rel`] as a hash key of its bytes, looked up by `&[u8]` ([`key()`]). `Rel`'s own
/// `Hash` is `Path`'s (so that maps keyed by `Rel` answer `&Path` lookups), which walks
/// the bytes looking for separators, and `Path`'s `==` compares components; the
/// in-flight tables and a batch's chosen paths, where every queued path of every remote
/// is looked up with its parents, hash and compare bytes instead.
#[derive(Clone)]
pub struct RelKey(pub Rel);

impl Hash for RelKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.bytes().hash(state);
    }
}

impl PartialEq for RelKey {
    fn eq(&self, other: &RelKey) -> bool {
        self.0 == other.0
    }
}

impl Eq for RelKey {}

impl std::fmt::Debug for RelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.as_path().fmt(f)
    }
}

impl Borrow<[u8]> for RelKey {
    fn borrow(&self) -> &[u8] {
        self.0.bytes()
    }
}

/// The bytes a [`RelKey`] (or a byte-keyed map of paths) is looked up by.
pub fn key(path: &Path) -> &[u8] {
    path.as_os_str().as_bytes()
}

/// Whether `bytes` is already in normal form, so the bytes order equals `Path`'s.
fn is_normal(bytes: &[u8]) -> bool {
    bytes
        .split(|b| *b == b'/')
        .enumerate()
        .all(|(i, part)| part != b"." && (!part.is_empty() || (i == 0 && bytes.is_empty())))
}

/// The proper ancestors of a normalized relative path, nearest first, ending with the
/// empty path (the root): `Path::ancestors().skip(1)` without parsing components.
pub fn parents(path: &Path) -> impl Iterator<Item = &Path> {
    let bytes = path.as_os_str().as_bytes();
    let mut end = (!bytes.is_empty()).then_some(bytes.len());
    std::iter::from_fn(move || {
        let at = end?;
        let parent = bytes[..at].iter().rposition(|b| *b == b'/').unwrap_or(0);
        end = (parent > 0).then_some(parent);
        Some(Path::new(OsStr::from_bytes(&bytes[..parent])))
    })
}

impl Deref for Rel {
    type Target = Path;
    fn deref(&self) -> &Path {
        self.as_path()
    }
}

impl AsRef<Path> for Rel {
    fn as_ref(&self) -> &Path {
        self.as_path()
    }
}

impl AsRef<OsStr> for Rel {
    fn as_ref(&self) -> &OsStr {
        self.as_path().as_os_str()
    }
}

// Hash and equality agree with `Path`'s (for a normalized path, equal components are
// equal bytes), so a map keyed by `Rel` answers lookups by `&Path`.
impl Borrow<Path> for Rel {
    fn borrow(&self) -> &Path {
        self.as_path()
    }
}

impl Hash for Rel {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_path().hash(state);
    }
}

impl PartialEq for Rel {
    fn eq(&self, other: &Rel) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.bytes() == other.bytes()
    }
}

impl Eq for Rel {}

impl Ord for Rel {
    fn cmp(&self, other: &Rel) -> Ordering {
        let (a, b) = (self.bytes(), other.bytes());
        let same = common_prefix(a, b);
        // `/` ends a component: a name sorts before its longer siblings (`a/x` < `a-b`).
        let rank = |byte: Option<&u8>| byte.map(|&b| if b == b'/' { 0 } else { u16::from(b) + 1 });
        rank(a.get(same)).cmp(&rank(b.get(same)))
    }
}

/// How many bytes `a` and `b` share at their start, eight at a time.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut at = 0;
    while at + 8 <= n {
        let word = |s: &[u8]| <[u8; 8]>::try_from(&s[at..at + 8]).map(u64::from_le_bytes);
        let (Ok(x), Ok(y)) = (word(a), word(b)) else {
            break;
        };
        if x != y {
            // Little-endian: the lowest differing byte is the first one.
            return at + ((x ^ y).trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    at + a[at..n]
        .iter()
        .zip(&b[at..n])
        .take_while(|(x, y)| x == y)
        .count()
}

impl PartialOrd for Rel {
    fn partial_cmp(&self, other: &Rel) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Debug for Rel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_path().fmt(f)
    }
}

impl From<PathBuf> for Rel {
    fn from(path: PathBuf) -> Rel {
        Rel::new(path)
    }
}

impl From<&Path> for Rel {
    fn from(path: &Path) -> Rel {
        if is_normal(path.as_os_str().as_bytes()) {
            return Rel::shared(Box::from(path));
        }
        Rel::new(path.to_path_buf())
    }
}

impl From<String> for Rel {
    fn from(path: String) -> Rel {
        Rel::new(PathBuf::from(path))
    }
}

impl From<&str> for Rel {
    fn from(path: &str) -> Rel {
        Rel::from(Path::new(path))
    }
}

impl From<&PathBuf> for Rel {
    fn from(path: &PathBuf) -> Rel {
        Rel::from(path.as_path())
    }
}

impl From<Rel> for PathBuf {
    fn from(rel: Rel) -> PathBuf {
        rel.to_path_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_like_path_components() {
        let names = [
            "",
            "a",
            "a b",
            "a-b",
            "a.txt",
            "a/b",
            "a/b/c",
            "a/b-c",
            "a/bc",
            "a0",
            "b",
            "ab/c",
            "a/\u{e9}",
            "\u{e9}",
            "~",
            "a/~",
            // Past the first eight bytes.
            "upload/2024/a.jpg",
            "upload/2024-b.jpg",
            "upload/2024/a.jpgx",
            "upload/20240",
            "upload/2024/a/b.jpg",
            "upload/2024",
        ];
        for x in names {
            for y in names {
                let (px, py) = (Path::new(x), Path::new(y));
                assert_eq!(
                    Rel::from(px).cmp(&Rel::from(py)),
                    px.cmp(py),
                    "{x:?} vs {y:?}"
                );
                assert_eq!(Rel::from(px) == Rel::from(py), px == py, "{x:?} == {y:?}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn orders_like_path_for_any_normal_paths(
            x in "[a-c ./~-]{1,6}(/[a-c ./~-]{1,6}){0,3}",
            y in "[a-c ./~-]{1,6}(/[a-c ./~-]{1,6}){0,3}",
        ) {
            let (px, py) = (Path::new(&x), Path::new(&y));
            let plain = |s: &str| is_normal(s.as_bytes()) && !s.split('/').any(|c| c == "..");
            proptest::prop_assume!(plain(&x) && plain(&y));
            proptest::prop_assert_eq!(Rel::from(px).cmp(&Rel::from(py)), px.cmp(py));
            proptest::prop_assert_eq!(Rel::from(px) == Rel::from(py), px == py);
        }
    }

    #[test]
    fn a_measured_size_is_shared_by_every_clone_until_forgotten() {
        let rel = Rel::from("d/a.txt");
        let clone = rel.clone();
        assert_eq!(clone.size(), None);
        rel.set_size(0);
        assert_eq!(clone.size(), Some(0));
        clone.forget_size();
        assert_eq!(rel.size(), None);
        // An equal path built apart is another stored path: nothing is shared with it.
        rel.set_size(7);
        assert_eq!(Rel::from("d/a.txt").size(), None);
        assert_eq!(std::mem::size_of::<Rel>(), std::mem::size_of::<usize>());
    }

    #[test]
    fn parents_are_the_proper_ancestors() {
        for path in ["", "a", "a/b", "a/b/c", "ab/cd/ef.txt"] {
            let path = Path::new(path);
            let want: Vec<&Path> = path.ancestors().skip(1).collect();
            assert_eq!(parents(path).collect::<Vec<_>>(), want, "{path:?}");
        }
    }

    #[test]
    fn normalizes_what_path_considers_equal() {
        for (raw, normal) in [
            ("a//b", "a/b"),
            ("a/./b/", "a/b"),
            ("./a", "a"),
            ("/a", "a"),
            ("a/b", "a/b"),
            ("", ""),
        ] {
            assert_eq!(
                Rel::from(Path::new(raw)).as_path().as_os_str(),
                normal,
                "{raw:?}"
            );
        }
        // A journal entry keeps its spelling, to clear exactly what the file holds.
        assert_eq!(Rel::verbatim(PathBuf::from(".")).as_path().as_os_str(), ".");
        let mut map = std::collections::HashMap::new();
        map.insert(Rel::from(Path::new("a/b")), 1);
        assert_eq!(map.get(Path::new("a/b")), Some(&1));
    }
}
