//! Seeded random filesystem churn: create, append, truncate, delete and rename files and
//! directories, deep `mkdir -p`, moves in and out of the tree; plus, each behind its own
//! switch ([`Features`]), the patterns operators produce that fresh names and fresh
//! mtimes never show: name reuse, old mtimes, same-size same-second rewrites, type
//! flips and the renames operators make (chains, swaps, exchanges, `mv -T`, deploy
//! swaps, moves into and out of the names [`EXCLUDES`] keeps off a mirror).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Which of the operator patterns the churn produces. Each has its own switch so that
/// one whose fix is not merged yet can stay off while the others run.
/// `SERSYNC_CHURN=+name,-name,…` overrides [`Features::DEFAULT`] (names as the fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// A file deleted or renamed away, then a new file under the same name.
    pub reuse_file_names: bool,
    /// A directory deleted or renamed away (log rotation, `mv d out/`), then a new one
    /// under the same name. Needs the scheduler's subtree `--delete` sync.
    pub reuse_dir_names: bool,
    /// `utime` into the past after a write, `cp -p`-like copies (content with an older
    /// mtime). Needs `-u` kept out of pushes.
    pub old_mtimes: bool,
    /// A rewrite with the same size within the same second as the previous write.
    /// Event pushes pass `--ignore-times`; full syncs need a nanosecond compare.
    pub same_second_rewrites: bool,
    /// Directory ⇄ file ⇄ symlink under the same name. Needs the scheduler to treat a
    /// path whose parent stopped being a directory as gone.
    pub type_flips: bool,
    /// Renames as operators make them: chains (`a→b→c` within a millisecond), swaps
    /// through a third name, `RENAME_EXCHANGE`, `mv -T` of a directory over an emptied
    /// one, deploy swaps (`mv release release.old; mv release.new release`) and moves
    /// into and out of names [`EXCLUDES`] matches (a config that mirrors this churn with
    /// those excludes must compare without them).
    pub operator_moves: bool,
}

/// `<filter>` excludes for a churn with [`Features::operator_moves`]: files and
/// directories renamed to `….tmp` or into `cache/` leave the mirror, and come back when
/// renamed out.
pub const EXCLUDES: [&str; 2] = [r"(.*)\.tmp", r"^cache/*"];

impl Features {
    /// Every operator pattern is on: each one's fix is merged (subtree `--delete` syncs of
    /// re-created directories, `-u` kept out of pushes, nanosecond full syncs, paths whose
    /// parent stopped being a directory settled as gone, moves made on the remote).
    pub const DEFAULT: Features = Features {
        reuse_file_names: true,
        reuse_dir_names: true,
        old_mtimes: true,
        same_second_rewrites: true,
        type_flips: true,
        operator_moves: true,
    };

    /// [`Features::DEFAULT`] with `SERSYNC_CHURN` applied; an unknown name panics
    /// (a typo must not silently run the default).
    pub fn from_env() -> Features {
        let mut features = Features::DEFAULT;
        let Ok(spec) = std::env::var("SERSYNC_CHURN") else {
            return features;
        };
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (on, name) = match item.strip_prefix('-') {
                Some(name) => (false, name),
                None => (true, item.trim_start_matches('+')),
            };
            let switch = match name {
                "reuse_file_names" => &mut features.reuse_file_names,
                "reuse_dir_names" => &mut features.reuse_dir_names,
                "old_mtimes" => &mut features.old_mtimes,
                "same_second_rewrites" => &mut features.same_second_rewrites,
                "type_flips" => &mut features.type_flips,
                "operator_moves" => &mut features.operator_moves,
                other => panic!("SERSYNC_CHURN: unknown feature {other:?}"),
            };
            *switch = on;
        }
        features
    }
}

/// A small deterministic generator (xorshift64*), so a seed replays the same run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn entries(root: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut files = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    let mut stack = vec![PathBuf::new()];
    while let Some(dir) = stack.pop() {
        let Ok(read) = std::fs::read_dir(root.join(&dir)) else {
            continue;
        };
        for entry in read.flatten() {
            let rel = dir.join(entry.file_name());
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(rel.clone());
                stack.push(rel);
            } else {
                files.push(rel);
            }
        }
    }
    (files, dirs)
}

/// Churns `root` for `length` with [`Features::from_env`]; `outside` is a scratch dir
/// on the same filesystem.
pub fn run(root: &Path, outside: &Path, seed: u64, length: Duration) {
    run_with(root, outside, seed, length, Features::from_env());
}

/// [`run`] with these features.
pub fn run_with(root: &Path, outside: &Path, seed: u64, length: Duration, features: Features) {
    let mut rng = Rng::new(seed);
    let deadline = Instant::now() + length;
    let mut counter = 0u64;
    let mut moves_made = 0usize;
    while Instant::now() < deadline {
        let (files, dirs) = entries(root);
        for _ in 0..20 {
            counter += 1;
            let dir = &dirs[rng.below(dirs.len())];
            let name = format!("n{}", rng.below(40));
            let _ = match rng.below(12) {
                0..=2 => std::fs::write(
                    root.join(dir).join(&name),
                    vec![b'a' + (counter % 26) as u8; rng.below(3000)],
                ),
                3 if !files.is_empty() => {
                    use std::io::Write;
                    let f = &files[rng.below(files.len())];
                    std::fs::OpenOptions::new()
                        .append(true)
                        .open(root.join(f))
                        .and_then(|mut h| h.write_all(b"appended"))
                }
                4 if !files.is_empty() => {
                    let f = &files[rng.below(files.len())];
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(root.join(f))
                        .and_then(|h| h.set_len(rng.below(10) as u64))
                }
                5 if !files.is_empty() => {
                    std::fs::remove_file(root.join(&files[rng.below(files.len())]))
                }
                6 => std::fs::create_dir_all(root.join(dir).join(&name).join("p/q")),
                7 if !files.is_empty() => {
                    let f = &files[rng.below(files.len())];
                    std::fs::rename(root.join(f), root.join(dir).join(format!("m{counter}")))
                }
                8 if dirs.len() > 1 => {
                    let d = &dirs[1 + rng.below(dirs.len() - 1)];
                    let target = root.join(dir).join(format!("md{counter}"));
                    if target.starts_with(root.join(d)) {
                        Ok(())
                    } else {
                        std::fs::rename(root.join(d), target)
                    }
                }
                9 if dirs.len() > 1 => {
                    std::fs::remove_dir_all(root.join(&dirs[1 + rng.below(dirs.len() - 1)]))
                }
                10 if dirs.len() > 1 => {
                    let d = &dirs[1 + rng.below(dirs.len() - 1)];
                    std::fs::rename(root.join(d), outside.join(format!("out{counter}")))
                }
                11 => {
                    let scratch = outside.join(format!("in{counter}"));
                    std::fs::create_dir_all(scratch.join("x"))
                        .and_then(|()| std::fs::write(scratch.join("x/f"), b"in"))
                        .and_then(|()| {
                            std::fs::rename(&scratch, root.join(dir).join(format!("in{counter}")))
                        })
                }
                _ => Ok(()),
            };
            if rng.below(4) == 0 {
                let _ = operator_pattern(root, outside, &files, &dirs, &mut rng, counter, features);
            }
            // Drawn only when on, so that a churn without it replays as before.
            if features.operator_moves
                && rng.below(24) == 0
                && operator_move(root, &files, &dirs, &mut rng, counter).is_ok()
            {
                moves_made += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(rng.below(20) as u64));
    }
    eprintln!("churn seed {seed}: {counter} operations, {moves_made} operator moves made");
}

/// One of the enabled operator patterns, on a random existing name.
fn operator_pattern(
    root: &Path,
    outside: &Path,
    files: &[PathBuf],
    dirs: &[PathBuf],
    rng: &mut Rng,
    counter: u64,
    features: Features,
) -> std::io::Result<()> {
    let file = (!files.is_empty()).then(|| root.join(&files[rng.below(files.len())]));
    let dir = (dirs.len() > 1).then(|| root.join(&dirs[1 + rng.below(dirs.len() - 1)]));
    let content = |n: usize| vec![b'A' + (counter % 26) as u8; n];
    match rng.below(5) {
        0 if features.reuse_file_names => {
            let Some(f) = file else { return Ok(()) };
            if rng.below(2) == 0 {
                std::fs::remove_file(&f)?;
            } else {
                std::fs::rename(&f, f.with_extension(format!("r{counter}")))?;
            }
            std::fs::write(&f, content(rng.below(500)))
        }
        1 if features.reuse_dir_names => {
            let Some(d) = dir else { return Ok(()) };
            match rng.below(3) {
                0 => std::fs::rename(&d, d.with_extension(format!("old{counter}")))?,
                1 => std::fs::rename(&d, outside.join(format!("gone{counter}")))?,
                _ => std::fs::remove_dir_all(&d)?,
            }
            std::fs::create_dir(&d)?;
            std::fs::write(d.join("new.log"), content(rng.below(200)))
        }
        2 if features.old_mtimes => {
            let Some(f) = file else { return Ok(()) };
            let past =
                SystemTime::now() - Duration::from_secs(86_400 * (1 + rng.below(900) as u64));
            // tar x, cp -p, rsync -a, unzip: the content arrives complete with an older
            // mtime, often through a temporary name renamed over the old file.
            let staged = f.with_extension(format!("cp{counter}"));
            std::fs::write(&staged, content(1 + rng.below(700)))?;
            set_mtime(&staged, past)?;
            if rng.below(3) > 0 {
                std::fs::rename(&staged, &f)?;
            }
            Ok(())
        }
        3 if features.same_second_rewrites => {
            let Some(f) = file else { return Ok(()) };
            let len = std::fs::symlink_metadata(&f)?.len() as usize;
            std::fs::write(&f, content(len))?;
            std::fs::write(&f, vec![b'a' + (counter % 26) as u8; len])
        }
        4 if features.type_flips => {
            let target = match (file, dir) {
                (Some(f), _) if rng.below(2) == 0 => f,
                (_, Some(d)) => d,
                (Some(f), None) => f,
                (None, None) => return Ok(()),
            };
            let was_dir = std::fs::symlink_metadata(&target)?.is_dir();
            if was_dir {
                std::fs::remove_dir_all(&target)?;
            } else {
                std::fs::remove_file(&target)?;
            }
            match (was_dir, rng.below(2)) {
                (true, 0) => std::fs::write(&target, content(rng.below(100))),
                (false, 0) => {
                    std::fs::create_dir(&target)?;
                    std::fs::write(target.join("inside"), content(10))
                }
                _ => std::os::unix::fs::symlink(format!("flip{counter}"), &target),
            }
        }
        _ => Ok(()),
    }
}

/// One operator rename pattern ([`Features::operator_moves`]) on random names of
/// `files` and `dirs` (root-relative, the root first among `dirs`).
fn operator_move(
    root: &Path,
    files: &[PathBuf],
    dirs: &[PathBuf],
    rng: &mut Rng,
    counter: u64,
) -> std::io::Result<()> {
    let file = (!files.is_empty()).then(|| files[rng.below(files.len())].clone());
    let dir = (dirs.len() > 1).then(|| dirs[1 + rng.below(dirs.len() - 1)].clone());
    let into = &dirs[rng.below(dirs.len())];
    let at = |rel: &Path| root.join(rel);
    let fresh = |prefix: &str| into.join(format!("{prefix}{counter}"));
    // A random existing name, a file or a directory.
    let any = match (&file, &dir) {
        (Some(f), Some(d)) => Some(if rng.below(2) == 0 { f } else { d }).cloned(),
        (Some(f), None) => Some(f.clone()),
        (None, Some(d)) => Some(d.clone()),
        (None, None) => None,
    };
    let Some(a) = any else { return Ok(()) };
    match rng.below(7) {
        0 => {
            // A chain within the same millisecond: a → b → c (c sometimes a again).
            let b = fresh("ch");
            let c = if rng.below(4) == 0 {
                a.clone()
            } else {
                fresh("chc")
            };
            std::fs::rename(at(&a), at(&b))?;
            std::fs::rename(at(&b), at(&c))
        }
        which @ (1 | 2) => {
            // A name unrelated to `a` (neither at or below the other).
            let (files, dirs) = entries(root);
            let others: Vec<&PathBuf> = files
                .iter()
                .chain(dirs.iter().skip(1))
                .filter(|p| !p.starts_with(&a) && !a.starts_with(p))
                .collect();
            if others.is_empty() {
                return Ok(());
            }
            let b = others[rng.below(others.len())].clone();
            if which == 2 {
                // RENAME_EXCHANGE of two names (file, directory or one of each).
                return exchange(&at(&a), &at(&b));
            }
            // A swap through a third name: a → t, b → a, t → b.
            let t = a.with_file_name(format!("swap{counter}"));
            std::fs::rename(at(&a), at(&t))?;
            std::fs::rename(at(&b), at(&a))?;
            std::fs::rename(at(&t), at(&b))
        }
        3 => {
            // `mv -T d e` over an emptied directory, whose old content on the remote
            // must go.
            let Some(d) = dir else { return Ok(()) };
            let e = fresh("mt");
            if e.starts_with(&d) {
                return Ok(());
            }
            std::fs::create_dir(at(&e))?;
            std::fs::write(at(&e).join("old"), b"replaced by mv -T")?;
            if rng.below(2) == 0 {
                // Give the watcher (and maybe the remote) a look at it first.
                std::thread::sleep(Duration::from_millis(rng.below(30) as u64));
            }
            std::fs::remove_file(at(&e).join("old"))?;
            std::fs::rename(at(&d), at(&e))
        }
        4 => {
            // A deploy swap: mv release release.old; mv release.new release.
            let Some(release) = dir else { return Ok(()) };
            let new = suffixed(&at(&release), ".new");
            let old = suffixed(&at(&release), &format!(".old{counter}"));
            copy_tree(&at(&release), &new)?;
            std::fs::write(new.join(format!("deployed{counter}")), b"new release")?;
            std::fs::rename(at(&release), &old)?;
            std::fs::rename(&new, at(&release))?;
            if rng.below(2) == 0 {
                std::fs::remove_dir_all(&old)?;
            }
            Ok(())
        }
        5 => {
            // Into an excluded name: `x → x.tmp`, or a directory into `cache/`.
            if rng.below(2) == 0 {
                std::fs::rename(at(&a), suffixed(&at(&a), ".tmp"))
            } else {
                std::fs::create_dir_all(root.join("cache"))?;
                std::fs::rename(at(&a), root.join(format!("cache/in{counter}")))
            }
        }
        _ => {
            // Out of an excluded name: an editor's `x.tmp → x`, or something in `cache/`.
            if rng.below(2) == 0 {
                let staged = fresh("ed").with_extension("tmp");
                std::fs::write(at(&staged), vec![b'e'; rng.below(900)])?;
                std::fs::rename(at(&staged), at(&staged.with_extension("")))
            } else {
                let cached: Vec<PathBuf> = std::fs::read_dir(root.join("cache"))
                    .map(|read| read.flatten().map(|e| e.path()).collect())
                    .unwrap_or_default();
                if cached.is_empty() {
                    return Ok(());
                }
                std::fs::rename(&cached[rng.below(cached.len())], at(&fresh("out")))
            }
        }
    }
}

/// `path` with `suffix` appended to its last component.
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// `cp -a from to` of files, directories and symlinks (modes and contents).
pub fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&source, &target)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&source)?, &target)?;
        } else {
            std::fs::copy(&source, &target)?;
        }
    }
    std::fs::set_permissions(to, std::fs::metadata(from)?.permissions())
}

/// `renameat2(a, b, RENAME_EXCHANGE)` (what `mv --exchange` does; std has no wrapper):
/// both names stay, their contents swap.
#[allow(unsafe_code)]
pub fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let cstr = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    };
    let (a, b) = (cstr(a)?, cstr(b)?);
    // SAFETY: both pointers are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `utime` of a path (not following a symlink is not needed: only files are passed).
fn set_mtime(path: &Path, when: SystemTime) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.set_times(
        std::fs::FileTimes::new()
            .set_modified(when)
            .set_accessed(when),
    )
}
