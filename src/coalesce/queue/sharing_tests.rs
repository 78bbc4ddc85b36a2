//! Queues that share their root's ledger against queues with a ledger each (what every
//! remote had before the ledger): the same plans, pending changes, counts and lingering
//! after every step of random observes (all remotes through `observe_all`, one remote
//! alone), plans with small batch caps, successes, failures, unsent and partial
//! failures, moves and ticks; 3 remotes, and 66 (past the 64 that share merges).
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

const PATHS: [&str; 7] = ["a", "a/b", "a/b/c", "a-b", "b", "b/x", "a/c"];

#[derive(Debug, Clone)]
enum S {
    Obs(u8, bool, bool, u8),
    ObsOne(usize, u8, bool, bool),
    Plan(usize, usize),
    Done(usize, u8),
    Move(u8, u8, bool),
    /// Some milliseconds later: held paths and backoffs expire.
    Tick(u8),
}

fn step(n: usize) -> impl Strategy<Value = S> {
    prop_oneof![
        3 => (any::<u8>(), any::<bool>(), any::<bool>(), 0u8..3).prop_map(|(p, d, dir, m)| S::Obs(p, d, dir, m)),
        1 => (0..n, any::<u8>(), any::<bool>(), any::<bool>()).prop_map(|(r, p, d, dir)| S::ObsOne(r, p, d, dir)),
        3 => (0..n, 1usize..4).prop_map(|(r, m)| S::Plan(r, m)),
        2 => (0..n, 0u8..5).prop_map(|(r, k)| S::Done(r, k)),
        1 => (any::<u8>(), any::<u8>(), any::<bool>()).prop_map(|(a, b, d)| S::Move(a, b, d)),
        1 => (0u8..20).prop_map(S::Tick),
    ]
}

fn p(i: u8) -> PathBuf {
    PathBuf::from(PATHS[usize::from(i) % PATHS.len()])
}

struct Side {
    queues: Vec<TargetQueue>,
    jobs: Vec<VecDeque<Plan>>,
    shared: bool,
}

impl Side {
    fn new(n: usize, shared: bool) -> Side {
        let ledger = Ledger::shared();
        let queues = (0..n)
            .map(|r| {
                if shared {
                    TargetQueue::sharing(PendingView::new(Arc::clone(&ledger), r))
                } else {
                    TargetQueue::default()
                }
            })
            .collect();
        Side {
            queues,
            jobs: (0..n).map(|_| VecDeque::new()).collect(),
            shared,
        }
    }

    fn observe(&mut self, rel: &Rel, op: Op, is_dir: bool, mask: u32, now: Instant) {
        if !self.shared {
            for q in &mut self.queues {
                q.observe(rel.clone(), op, is_dir, mask, now);
            }
            return;
        }
        let change = Merge {
            op,
            is_dir,
            mask,
            seen: Seen::at(now),
        };
        let mut queues: Vec<&mut TargetQueue> = self.queues.iter_mut().collect();
        observe_all(&mut queues, rel, change, now);
    }

    fn run(&mut self, s: &S, now: Instant) -> String {
        match *s {
            S::Obs(i, d, dir, m) => {
                let rel = Rel::from(p(i).as_path());
                let op = if d { Op::Delete } else { Op::Update };
                self.observe(&rel, op, dir, u32::from(m), now);
                String::new()
            }
            S::ObsOne(r, i, d, dir) => {
                let op = if d { Op::Delete } else { Op::Update };
                self.queues[r].observe(p(i), op, dir, 7, now);
                String::new()
            }
            S::Plan(r, m) => {
                let plan = self.queues[r].next_plan(now, Caps { max_paths: m });
                let out = format!("{plan:?}");
                if let Some(plan) = plan {
                    self.jobs[r].push_back(plan);
                }
                out
            }
            S::Move(a, b, dir) => {
                for q in &mut self.queues {
                    q.observe_move(p(a), p(b), dir, 0, now, true);
                }
                String::new()
            }
            S::Tick(ms) => {
                for q in &mut self.queues {
                    q.tick(now + Duration::from_millis(u64::from(ms)));
                }
                String::new()
            }
            S::Done(r, k) => {
                let Some(plan) = self.jobs[r].pop_front() else {
                    return String::new();
                };
                let q = &mut self.queues[r];
                let backoff = Duration::from_millis(5);
                match plan {
                    Plan::Batch(taken) => match k {
                        0 => q.succeeded(&taken, &Ran::Batch),
                        1 => q.failed(taken, Ran::Batch, false, backoff, now),
                        2 => q.failed(taken, Ran::Batch, true, backoff, now),
                        3 => {
                            let mut taken = taken;
                            let rest = taken.split_off(taken.len() / 2);
                            q.unsent(rest);
                            q.succeeded(&taken, &Ran::Batch);
                        }
                        _ => {
                            let mut taken = taken;
                            let retry = taken.split_off(taken.len() / 2);
                            q.partially_failed(&taken, retry, &Ran::Batch, backoff, now);
                        }
                    },
                    Plan::Full(req) => q.succeeded(&[], &Ran::Full(req)),
                    Plan::Subtree(rel) => {
                        if k == 1 {
                            q.failed(Vec::new(), Ran::Subtree(rel), false, backoff, now)
                        } else {
                            q.succeeded(&[], &Ran::Subtree(rel))
                        }
                    }
                    Plan::Move { moves, taken, .. } => {
                        if k == 1 {
                            q.failed(taken, Ran::Move(moves), false, backoff, now)
                        } else {
                            q.succeeded(&taken, &Ran::Move(moves))
                        }
                    }
                }
                String::new()
            }
        }
    }

    fn state(&self, now: Instant) -> Vec<String> {
        self.queues
            .iter()
            .map(|q| {
                format!(
                    "{:?} len={} linger={:?}",
                    q.pending_view().entries(),
                    q.pending_len(),
                    q.lingering(now, Duration::from_millis(3), 100)
                )
            })
            .collect()
    }
}

fn run(n: usize, steps: &[S]) {
    let base = Instant::now();
    let mut a = Side::new(n, true);
    let mut b = Side::new(n, false);
    for (i, s) in steps.iter().enumerate() {
        let now = base + Duration::from_millis(i as u64);
        let x = a.run(s, now);
        let y = b.run(s, now);
        assert_eq!(x, y, "step {i} {s:?}");
        assert_eq!(a.state(now), b.state(now), "after step {i} {s:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn shared_queues_are_their_own(steps in prop::collection::vec(step(3), 1..80)) {
        run(3, &steps);
    }
}

#[test]
fn sixty_six_remotes() {
    let steps: Vec<S> = (0..400u32)
        .map(|i| {
            let h = i.wrapping_mul(2654435761) >> 7;
            match h % 6 {
                0 | 1 => S::Obs((h >> 3) as u8, h & 8 != 0, h & 16 != 0, 0),
                2 => S::Plan(((h >> 4) % 66) as usize, 2),
                3 => S::Done(((h >> 4) % 66) as usize, ((h >> 2) % 5) as u8),
                4 => S::ObsOne(((h >> 4) % 66) as usize, (h >> 3) as u8, false, false),
                _ => S::Plan(((h >> 4) % 3) as usize + 63, 3),
            }
        })
        .collect();
    run(66, &steps);
}
