//! Seeded random filesystem churn: create, append, truncate, delete and rename files and
//! directories, deep `mkdir -p`, moves in and out of the tree.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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

/// Churns `root` for `length`; `outside` is a scratch dir on the same filesystem.
pub fn run(root: &Path, outside: &Path, seed: u64, length: Duration) {
    let mut rng = Rng::new(seed);
    let deadline = Instant::now() + length;
    let mut counter = 0u64;
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
        }
        std::thread::sleep(Duration::from_millis(rng.below(20) as u64));
    }
}
