//! The ledger against a model: one ordered map per remote, as the queues had before.
//! Whatever the operations, every remote's view equals its own map.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Step {
    Merge {
        remote: usize,
        path: u8,
        op: bool,
        mask: u8,
        at: u8,
    },
    MergeAll {
        path: u8,
        op: bool,
        mask: u8,
        at: u8,
    },
    Insert {
        remote: usize,
        path: u8,
        attempts: u8,
        at: u8,
    },
    Remove {
        remote: usize,
        path: u8,
    },
    Take {
        remote: usize,
        path: u8,
        take: bool,
    },
    Drain {
        remote: usize,
    },
}

const PATHS: [&str; 6] = ["a", "a/b", "a/b/c", "a-b", "b", "b/x"];

fn path(i: u8) -> &'static str {
    PATHS[usize::from(i) % PATHS.len()]
}

fn seen(at: u8) -> Seen {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    Seen::at(base + Duration::from_millis(u64::from(at % 3)))
}

fn op(delete: bool) -> Op {
    if delete { Op::Delete } else { Op::Update }
}

fn merge(delete: bool, mask: u8, at: u8) -> Merge {
    Merge {
        op: op(delete),
        is_dir: false,
        mask: mask.into(),
        seen: seen(at),
    }
}

/// What one remote's own map did with a merge; returns whether the path was new there.
fn model_merge(m: &mut BTreeMap<PathBuf, Pending>, p: &str, change: Merge) -> bool {
    let was = m.get(Path::new(p)).copied();
    m.insert(
        PathBuf::from(p),
        was.map_or(change.fresh(), |old| change.onto(old)),
    );
    was.is_none()
}

fn step(remotes: usize) -> impl Strategy<Value = Step> {
    let r = 0..remotes;
    prop_oneof![
        (r.clone(), any::<u8>(), any::<bool>(), 0u8..3, any::<u8>()).prop_map(
            |(remote, path, op, mask, at)| Step::Merge {
                remote,
                path,
                op,
                mask,
                at
            }
        ),
        (any::<u8>(), any::<bool>(), 0u8..3, any::<u8>())
            .prop_map(|(path, op, mask, at)| Step::MergeAll { path, op, mask, at }),
        (r.clone(), any::<u8>(), 0u8..3, any::<u8>()).prop_map(|(remote, path, attempts, at)| {
            Step::Insert {
                remote,
                path,
                attempts,
                at,
            }
        }),
        (r.clone(), any::<u8>()).prop_map(|(remote, path)| Step::Remove { remote, path }),
        (r.clone(), any::<u8>(), any::<bool>()).prop_map(|(remote, path, take)| Step::Take {
            remote,
            path,
            take
        }),
        r.prop_map(|remote| Step::Drain { remote }),
    ]
}

fn run(remotes: usize, steps: &[Step]) {
    let ledger = Ledger::shared();
    let views: Vec<PendingView> = (0..remotes)
        .map(|r| PendingView::new(Arc::clone(&ledger), r))
        .collect();
    let mut model: Vec<BTreeMap<PathBuf, Pending>> = vec![BTreeMap::new(); remotes];
    for (n, s) in steps.iter().enumerate() {
        match *s {
            Step::Merge {
                remote,
                path: p,
                op: o,
                mask,
                at,
            } => {
                let change = merge(o, mask, at);
                let vacant = views[remote].merge(Rel::from(Path::new(path(p))), change);
                let was_vacant = model_merge(&mut model[remote], path(p), change);
                assert_eq!(vacant, was_vacant, "step {n} {s:?}");
            }
            Step::MergeAll {
                path: p,
                op: o,
                mask,
                at,
            } => {
                let change = merge(o, mask, at);
                let rel = Rel::from(Path::new(path(p)));
                let vacant = views[0].merge_all(remotes, rel.clone(), change).vacant;
                for (r, m) in model.iter_mut().enumerate() {
                    let was_vacant = model_merge(m, path(p), change);
                    if r < 64 {
                        assert_eq!(
                            vacant & (1 << r) != 0,
                            was_vacant,
                            "step {n} {s:?} remote {r}"
                        );
                    } else {
                        // merge_all leaves remotes from 64 on to the caller
                        views[r].merge(rel.clone(), change);
                    }
                }
            }
            Step::Insert {
                remote,
                path: p,
                attempts,
                at,
            } => {
                let pending = Pending {
                    op: Op::Update,
                    is_dir: true,
                    mask: 9,
                    seen: seen(at),
                    attempts: attempts.into(),
                };
                views[remote].insert(Rel::from(Path::new(path(p))), pending);
                model[remote].insert(PathBuf::from(path(p)), pending);
            }
            Step::Remove { remote, path: p } => {
                let got = views[remote].remove(Path::new(path(p)));
                assert_eq!(
                    got,
                    model[remote].remove(Path::new(path(p))),
                    "step {n} {s:?}"
                );
            }
            Step::Take {
                remote,
                path: p,
                take,
            } => {
                let (mut l, r) = views[remote].lock();
                let got = l.take_if(r, Rel::from(Path::new(path(p))), |_, _| take);
                drop(l);
                let m = &mut model[remote];
                match got {
                    Take::Absent => assert!(!m.contains_key(Path::new(path(p))), "step {n} {s:?}"),
                    Take::Kept(rel) => {
                        assert!(!take && m.contains_key(rel.as_path()), "step {n} {s:?}");
                    }
                    Take::Taken(rel, pending) => {
                        assert!(take, "step {n}");
                        assert_eq!(m.remove(rel.as_path()), Some(pending), "step {n} {s:?}");
                    }
                }
            }
            Step::Drain { remote } => {
                let got: Vec<(PathBuf, Pending)> = views[remote]
                    .drain()
                    .into_iter()
                    .map(|(r, p)| (r.to_path_buf(), p))
                    .collect();
                let want: Vec<(PathBuf, Pending)> =
                    std::mem::take(&mut model[remote]).into_iter().collect();
                assert_eq!(got, want, "step {n} {s:?}");
            }
        }
        for (r, view) in views.iter().enumerate() {
            let got: Vec<(PathBuf, Pending)> = view
                .entries()
                .into_iter()
                .map(|(p, x)| (p.to_path_buf(), x))
                .collect();
            let want: Vec<(PathBuf, Pending)> =
                model[r].iter().map(|(p, x)| (p.clone(), *x)).collect();
            assert_eq!(got, want, "after step {n} {s:?}: remote {r}");
            assert_eq!(view.len(), want.len(), "after step {n}: remote {r}'s count");
            for p in PATHS {
                assert_eq!(view.get(Path::new(p)), model[r].get(Path::new(p)).copied());
                let below: Vec<PathBuf> = view
                    .descendants(Path::new(p))
                    .iter()
                    .map(|x| x.to_path_buf())
                    .collect();
                let want_below: Vec<PathBuf> = model[r]
                    .keys()
                    .filter(|k| k.starts_with(p) && k.as_path() != Path::new(p))
                    .cloned()
                    .collect();
                assert_eq!(below, want_below, "descendants of {p}, remote {r}");
            }
        }
    }
    // Nothing left behind: an empty view for every remote is an empty map.
    for view in &views {
        view.drain();
    }
    assert!(ledger.borrow().slots.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn every_view_is_its_own_map(steps in prop::collection::vec(step(3), 1..60)) {
        run(3, &steps);
    }

    #[test]
    fn one_remote_is_a_plain_map(steps in prop::collection::vec(step(1), 1..40)) {
        run(1, &steps);
    }
}

#[test]
fn remotes_past_the_shared_bits_keep_their_own() {
    let mut steps = Vec::new();
    for (i, remote) in [0usize, 63, 64, 69].into_iter().enumerate() {
        steps.push(Step::MergeAll {
            path: 1,
            op: false,
            mask: 1,
            at: 0,
        });
        steps.push(Step::Take {
            remote,
            path: 1,
            take: true,
        });
        steps.push(Step::Merge {
            remote,
            path: 1,
            op: i % 2 == 0,
            mask: 2,
            at: 1,
        });
        steps.push(Step::Insert {
            remote,
            path: 2,
            attempts: 1,
            at: 2,
        });
    }
    steps.push(Step::MergeAll {
        path: 2,
        op: true,
        mask: 0,
        at: 2,
    });
    steps.push(Step::Drain { remote: 64 });
    run(70, &steps);
}

#[test]
fn a_burst_to_ten_remotes_is_stored_once() {
    let ledger = Ledger::shared();
    let view = PendingView::new(Arc::clone(&ledger), 0);
    for i in 0..100 {
        let rel = Rel::from(Path::new(&format!("d/{i}")));
        view.merge_all(10, rel.clone(), merge(false, 1, 0));
        view.merge_all(10, rel, merge(false, 2, 1));
    }
    let ledger = ledger.borrow();
    assert_eq!(ledger.slots.len(), 100);
    assert!(
        ledger
            .slots
            .values()
            .all(|s| s.members == (1 << 10) - 1 && s.others.is_none())
    );
    assert_eq!(ledger.len(9), 100);
}

/// The dispatch orders against a model: one deque per remote.
#[derive(Debug, Clone)]
enum OrderStep {
    /// New for every remote at once: the shared log.
    All(u8),
    Own(usize, u8),
    Front(usize, u8),
    Pop(usize),
    Clear(usize),
}

fn order_step(remotes: usize) -> impl Strategy<Value = OrderStep> {
    let r = 0..remotes;
    prop_oneof![
        any::<u8>().prop_map(OrderStep::All),
        (r.clone(), any::<u8>()).prop_map(|(r, p)| OrderStep::Own(r, p)),
        (r.clone(), any::<u8>()).prop_map(|(r, p)| OrderStep::Front(r, p)),
        r.clone().prop_map(OrderStep::Pop),
        r.clone().prop_map(OrderStep::Pop),
        r.prop_map(OrderStep::Clear),
    ]
}

fn run_orders(remotes: usize, steps: &[OrderStep]) {
    let ledger = Ledger::shared();
    let views: Vec<PendingView> = (0..remotes)
        .map(|r| PendingView::new(Arc::clone(&ledger), r))
        .collect();
    // The remotes read the shared log from its start, as after the scheduler's first merge.
    ledger.borrow_mut().cursors = vec![0; remotes];
    let mut orders: Vec<Order> = (0..remotes).map(|_| Order::default()).collect();
    let mut model: Vec<std::collections::VecDeque<String>> = vec![Default::default(); remotes];
    for (n, s) in steps.iter().enumerate() {
        match *s {
            OrderStep::All(p) => {
                ledger
                    .borrow_mut()
                    .log
                    .push_back(Rel::from(Path::new(path(p))));
                for m in &mut model {
                    m.push_back(path(p).to_owned());
                }
            }
            OrderStep::Own(r, p) => {
                orders[r].push_back(&views[r], Rel::from(Path::new(path(p))));
                model[r].push_back(path(p).to_owned());
            }
            OrderStep::Front(r, p) => {
                orders[r].push_front(Rel::from(Path::new(path(p))));
                model[r].push_front(path(p).to_owned());
            }
            OrderStep::Pop(r) => {
                let got = {
                    let mut l = ledger.borrow_mut();
                    let got = orders[r].pop_front(&mut l, r);
                    l.compact();
                    got
                };
                let got = got.map(|rel| rel.to_string_lossy().into_owned());
                assert_eq!(got, model[r].pop_front(), "step {n} {s:?}");
            }
            OrderStep::Clear(r) => {
                orders[r].clear(&views[r]);
                model[r].clear();
            }
        }
        for r in 0..remotes {
            let mut all = Vec::new();
            let none: Option<()> = orders[r].find_map(&views[r], |rel| {
                all.push(rel.to_string_lossy().into_owned());
                None
            });
            assert!(none.is_none());
            let want: Vec<String> = model[r].iter().cloned().collect();
            assert_eq!(all, want, "after step {n} {s:?}: remote {r}'s order");
        }
        // The log holds nothing every remote has read.
        let l = ledger.borrow();
        let slowest = l.cursors.iter().copied().min().unwrap_or(0);
        assert!(l.log_base <= slowest, "after step {n}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn every_order_is_its_own_deque(steps in prop::collection::vec(order_step(3), 1..80)) {
        run_orders(3, &steps);
    }
}

/// `merge_all` for the first `k` remotes only (the others keep their base as it is).
#[derive(Debug, Clone)]
enum PStep {
    All(usize, u8, bool, u8),
    One(usize, u8, bool, u8),
    Rm(usize, u8),
    Ins(usize, u8, u8),
}

fn pstep() -> impl Strategy<Value = PStep> {
    prop_oneof![
        (1usize..4, any::<u8>(), any::<bool>(), 0u8..3)
            .prop_map(|(k, p, o, m)| PStep::All(k, p, o, m)),
        (0usize..3, any::<u8>(), any::<bool>(), 0u8..3)
            .prop_map(|(r, p, o, m)| PStep::One(r, p, o, m)),
        (0usize..3, any::<u8>()).prop_map(|(r, p)| PStep::Rm(r, p)),
        (0usize..3, any::<u8>(), 0u8..3).prop_map(|(r, p, a)| PStep::Ins(r, p, a)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn merging_into_some_remotes_leaves_the_others_alone(steps in prop::collection::vec(pstep(), 1..50)) {
        let ledger = Ledger::shared();
        let views: Vec<PendingView> = (0..3).map(|r| PendingView::new(Arc::clone(&ledger), r)).collect();
        let mut model: Vec<BTreeMap<PathBuf, Pending>> = vec![BTreeMap::new(); 3];
        for s in &steps {
            match *s {
                PStep::All(k, p, o, m) => {
                    let k = k.min(3);
                    let v = views[0].merge_all(k, Rel::from(Path::new(path(p))), merge(o, m, 0)).vacant;
                    for (r, own) in model.iter_mut().enumerate().take(k) {
                        let was = model_merge(own, path(p), merge(o, m, 0));
                        prop_assert_eq!(v & (1 << r) != 0, was);
                    }
                }
                PStep::One(r, p, o, m) => { views[r].merge(Rel::from(Path::new(path(p))), merge(o, m, 1)); model_merge(&mut model[r], path(p), merge(o, m, 1)); }
                PStep::Rm(r, p) => { prop_assert_eq!(views[r].remove(Path::new(path(p))), model[r].remove(Path::new(path(p)))); }
                PStep::Ins(r, p, a) => {
                    let pending = Pending { op: Op::Update, is_dir: true, mask: 9, seen: seen(a), attempts: a.into() };
                    views[r].insert(Rel::from(Path::new(path(p))), pending);
                    model[r].insert(PathBuf::from(path(p)), pending);
                }
            }
            for r in 0..3 {
                let got: Vec<(PathBuf, Pending)> = views[r].entries().into_iter().map(|(p, x)| (p.to_path_buf(), x)).collect();
                let want: Vec<(PathBuf, Pending)> = model[r].iter().map(|(p, x)| (p.clone(), *x)).collect();
                prop_assert_eq!(&got, &want, "{:?}", s);
                prop_assert_eq!(views[r].len(), want.len());
            }
        }
        for v in &views { v.drain(); }
        prop_assert!(ledger.borrow().slots.is_empty(), "slots left: {:?}", ledger.borrow().slots);
    }
}

#[test]
fn a_merge_into_no_remote_leaves_nothing() {
    let ledger = Ledger::shared();
    let view = PendingView::new(Arc::clone(&ledger), 0);
    let joined = view.merge_all(0, Rel::from(Path::new("a")), merge(false, 1, 0));
    assert_eq!(
        joined,
        Joined {
            vacant: 0,
            logged: false
        }
    );
    assert!(ledger.borrow().slots.is_empty());
}
