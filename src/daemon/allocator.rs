//! The allocator's arenas: at most two unless the operator says otherwise.
//!
//! glibc gives every thread that allocates an arena of its own, up to eight per core, and
//! an arena keeps the memory freed in it. Each push worker builds and frees one batch's
//! argument vector, entries and rsync's copy of them per run (a few hundred KB for
//! 4,096 paths), so ten remotes, whose batches keep all ten workers busy at once, left
//! ten arenas each holding one batch's worth: measured with `scripts/bench --fanout 10`,
//! peak RSS 15.6 MB with the default and 13.9 MB with two arenas (one remote: 8.8 and
//! 8.2 MB). The threads allocate rarely and briefly, so two arenas cost no waiting worth
//! measuring. `MALLOC_ARENA_MAX` or `GLIBC_TUNABLES` in the environment are glibc's own
//! knobs and win.

/// Caps glibc's arenas at two unless `MALLOC_ARENA_MAX` or an `arena_max` tunable is
/// set; call before any thread starts. Nothing on other C libraries.
pub fn cap_arenas() {
    let env = |name| std::env::var_os(name);
    if let Some(arenas) = arena_cap(
        env("MALLOC_ARENA_MAX").as_deref(),
        env("GLIBC_TUNABLES").as_deref(),
    ) {
        set_arena_max(arenas);
    }
}

/// The arena cap to set, given the two environment variables glibc reads for it: none
/// when the operator set either.
fn arena_cap(
    malloc_arena_max: Option<&std::ffi::OsStr>,
    glibc_tunables: Option<&std::ffi::OsStr>,
) -> Option<i32> {
    let tunable =
        glibc_tunables.is_some_and(|t| t.to_string_lossy().contains("glibc.malloc.arena_max"));
    (malloc_arena_max.is_none() && !tunable).then_some(2)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_arena_max(arenas: libc::c_int) {
    // SAFETY: `mallopt` only sets a tunable of glibc's allocator; M_ARENA_MAX is one it
    // knows, and it is called before any other thread exists (the caller's contract),
    // though glibc takes its own lock for it anyway. A refusal (0) leaves the default.
    let _ = unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_arenas: i32) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn the_operators_setting_wins() {
        let os = |s: &'static str| Some(OsStr::new(s));
        let table: [(Option<&OsStr>, Option<&OsStr>, Option<i32>); 5] = [
            (None, None, Some(2)),
            (os("8"), None, None),
            (None, os("glibc.malloc.arena_max=4"), None),
            (None, os("glibc.malloc.tcache_count=0"), Some(2)),
            (
                os(""),
                os("glibc.malloc.arena_max=1:glibc.malloc.trim_threshold=0"),
                None,
            ),
        ];
        for (max, tunables, want) in table {
            assert_eq!(arena_cap(max, tunables), want, "{max:?} {tunables:?}");
        }
    }
}
