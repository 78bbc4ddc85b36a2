//! An argument vector held in one buffer.
//!
//! A batch passes its paths to rsync as arguments (`push::rsync::batch_argv`): 4,096 of
//! them for a full batch. As a `Vec<OsString>` that is one allocation per path plus 24
//! bytes of vector slot each, about 300 KB a batch; here it is the bytes themselves and
//! 4 bytes a path, about 100 KB, in two allocations, handed to the child run, which drops
//! it once rsync started (a failure's command line is built again from the batch). Ten
//! remotes of a root start ten such batches at once. A leaf: imports nothing of the
//! crate.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;

/// Arguments, in order: their bytes back to back and where each one ends.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Argv {
    bytes: Vec<u8>,
    /// End offset of each argument in `bytes`.
    ends: Vec<u32>,
}

impl Argv {
    /// No arguments.
    pub fn new() -> Argv {
        Argv::default()
    }

    /// Room for `args` arguments of `bytes` bytes in all.
    pub fn with_capacity(args: usize, bytes: usize) -> Argv {
        Argv {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(args),
        }
    }

    /// Appends one argument.
    pub fn push(&mut self, arg: impl AsRef<OsStr>) {
        self.push_parts(&[arg.as_ref().as_bytes()]);
    }

    /// Appends one argument made of `parts` joined (`./` and a path), without building it
    /// on its own first.
    pub fn push_parts(&mut self, parts: &[&[u8]]) {
        for part in parts {
            self.bytes.extend_from_slice(part);
        }
        // An argument vector cannot pass 4 GiB (the kernel's limit is far below).
        self.ends
            .push(u32::try_from(self.bytes.len()).unwrap_or(u32::MAX));
    }

    /// Appends every argument of `args`.
    pub fn extend<I>(&mut self, args: I)
    where
        I: IntoIterator,
        I::Item: AsRef<OsStr>,
    {
        for arg in args {
            self.push(arg);
        }
    }

    /// How many arguments.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// No arguments.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The arguments in order.
    pub fn iter(&self) -> Args<'_> {
        Args {
            argv: self,
            next: 0,
        }
    }

    /// Keeps only the arguments for which `keep` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(&OsStr) -> bool) {
        let kept: Argv = self.iter().filter(|a| keep(a)).collect();
        *self = kept;
    }

    /// The arguments as separate strings (for tests that compare whole vectors).
    pub fn to_vec(&self) -> Vec<OsString> {
        self.iter().map(OsStr::to_os_string).collect()
    }

    fn arg(&self, index: usize) -> Option<&OsStr> {
        let end = *self.ends.get(index)? as usize;
        let start = match index.checked_sub(1) {
            Some(before) => self.ends.get(before).map_or(0, |e| *e as usize),
            None => 0,
        };
        Some(OsStr::from_bytes(self.bytes.get(start..end)?))
    }
}

/// The arguments of an [`Argv`], in order.
#[derive(Clone)]
pub struct Args<'a> {
    argv: &'a Argv,
    next: usize,
}

impl<'a> Iterator for Args<'a> {
    type Item = &'a OsStr;

    fn next(&mut self) -> Option<&'a OsStr> {
        let arg = self.argv.arg(self.next)?;
        self.next += 1;
        Some(arg)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.argv.len().saturating_sub(self.next);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Args<'_> {}

impl<'a> IntoIterator for &'a Argv {
    type Item = &'a OsStr;
    type IntoIter = Args<'a>;

    fn into_iter(self) -> Args<'a> {
        self.iter()
    }
}

impl<A: AsRef<OsStr>> FromIterator<A> for Argv {
    fn from_iter<I: IntoIterator<Item = A>>(args: I) -> Argv {
        let mut out = Argv::new();
        out.extend(args);
        out
    }
}

impl From<Vec<OsString>> for Argv {
    fn from(args: Vec<OsString>) -> Argv {
        let bytes = args.iter().map(|a| a.len()).sum();
        let mut out = Argv::with_capacity(args.len(), bytes);
        out.extend(&args);
        out
    }
}

impl From<&[OsString]> for Argv {
    fn from(args: &[OsString]) -> Argv {
        args.iter().collect()
    }
}

impl fmt::Debug for Argv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(argv: &Argv) -> Vec<String> {
        argv.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn arguments_come_back_in_order_including_empty_ones() {
        let mut argv: Argv = ["-a", "", "--", "./x"].into_iter().collect();
        argv.push_parts(&[b"./", b"dir/file"]);
        assert_eq!(argv.len(), 5);
        assert_eq!(strings(&argv), ["-a", "", "--", "./x", "./dir/file"]);
        assert_eq!(argv.to_vec().len(), 5);
        assert!(Argv::new().is_empty());
        assert_eq!(Argv::new().iter().count(), 0);
    }

    #[test]
    fn bytes_that_are_not_utf8_survive() {
        let name = OsStr::from_bytes(b"caf\xe9\n-x");
        let argv: Argv = [name].into_iter().collect();
        assert_eq!(argv.iter().next(), Some(name));
    }

    #[test]
    fn retain_keeps_the_others_in_order() {
        let mut argv: Argv = ["a", "b", "c", "b"].into_iter().collect();
        argv.retain(|a| a != "b");
        assert_eq!(strings(&argv), ["a", "c"]);
    }

    #[test]
    fn a_vector_converts_both_ways() {
        let v: Vec<OsString> = vec!["--".into(), "./a b".into()];
        let argv = Argv::from(v.clone());
        assert_eq!(argv.to_vec(), v);
        assert_eq!(Argv::from(&v[..]), argv);
        assert_eq!(format!("{argv:?}"), r#"["--", "./a b"]"#);
    }
}
