use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::*;

const CAPS: Caps = Caps { max_paths: 100 };

fn batch(queue: &mut TargetQueue, now: Instant) -> Vec<(String, Op)> {
    match queue.next_plan(now, CAPS) {
        Some(Plan::Batch(taken)) => taken
            .into_iter()
            .map(|t| (t.rel.display().to_string(), t.pending.op))
            .collect(),
        Some(Plan::Full(..) | Plan::Subtree(..) | Plan::Move { .. }) => {
            panic!("unexpected full sync or move")
        }
        None => Vec::new(),
    }
}

fn observe(queue: &mut TargetQueue, rel: &str, op: Op, is_dir: bool, now: Instant) {
    queue.observe(PathBuf::from(rel), op, is_dir, 0, now);
}

#[test]
fn merge_rules_latest_op_wins() {
    // (events, expected single op or none)
    let table: &[(&[Op], Op)] = &[
        (&[Op::Update, Op::Update, Op::Update], Op::Update),
        (&[Op::Update, Op::Delete], Op::Delete),
        (&[Op::Delete, Op::Update], Op::Update),
        (&[Op::Delete, Op::Delete], Op::Delete),
    ];
    let now = Instant::now();
    for (events, expected) in table {
        let mut queue = TargetQueue::default();
        for op in *events {
            observe(&mut queue, "f", *op, false, now);
        }
        assert_eq!(
            batch(&mut queue, now),
            vec![("f".to_owned(), *expected)],
            "{events:?}"
        );
    }
}

#[test]
fn directory_delete_subsumes_children() {
    let now = Instant::now();
    let mut queue = TargetQueue::default();
    for rel in ["d/a", "d/b/c", "d b", "e"] {
        observe(&mut queue, rel, Op::Update, false, now);
    }
    observe(&mut queue, "d", Op::Delete, true, now);
    let mut got = batch(&mut queue, now);
    got.sort();
    assert_eq!(
        got,
        vec![
            ("d".into(), Op::Delete),
            ("d b".into(), Op::Update),
            ("e".into(), Op::Update)
        ]
    );
}

#[test]
fn a_path_in_flight_waits_for_the_next_batch() {
    let now = Instant::now();
    let mut queue = TargetQueue::default();
    observe(&mut queue, "f", Op::Update, false, now);
    let first = queue.next_plan(now, CAPS);
    observe(&mut queue, "f", Op::Update, false, now);
    observe(&mut queue, "g", Op::Update, false, now);
    assert_eq!(
        batch(&mut queue, now),
        vec![("g".to_owned(), Op::Update)],
        "f is in flight"
    );
    let Some(Plan::Batch(taken)) = first else {
        panic!("first batch")
    };
    queue.succeeded(&taken, &Ran::Batch);
    assert_eq!(batch(&mut queue, now), vec![("f".to_owned(), Op::Update)]);
}

#[test]
fn nothing_below_a_running_directory_delete_goes() {
    let now = Instant::now();
    let mut queue = TargetQueue::default();
    observe(&mut queue, "d", Op::Delete, true, now);
    let running = queue.next_plan(now, CAPS);
    observe(&mut queue, "d/x", Op::Update, false, now);
    observe(&mut queue, "other", Op::Update, false, now);
    assert_eq!(
        batch(&mut queue, now),
        vec![("other".to_owned(), Op::Update)]
    );
    let Some(Plan::Batch(taken)) = running else {
        panic!("running batch")
    };
    queue.succeeded(&taken, &Ran::Batch);
    assert_eq!(batch(&mut queue, now), vec![("d/x".to_owned(), Op::Update)]);
}

/// A file in flight whose name became a directory: its receiver renames a file onto the
/// name, so nothing below it may run beside it (`./f/x` would make `f` a directory there).
#[test]
fn nothing_below_a_running_file_push_goes() {
    let now = Instant::now();
    let mut queue = TargetQueue::default();
    observe(&mut queue, "f", Op::Update, false, now);
    let running = queue.next_plan(now, CAPS);
    observe(&mut queue, "f", Op::Update, true, now);
    observe(&mut queue, "f/x", Op::Update, false, now);
    observe(&mut queue, "other", Op::Update, false, now);
    assert_eq!(
        batch(&mut queue, now),
        vec![("other".to_owned(), Op::Update)]
    );
    let Some(Plan::Batch(taken)) = running else {
        panic!("running batch")
    };
    queue.succeeded(&taken, &Ran::Batch);
    let mut got = batch(&mut queue, now);
    got.sort();
    assert_eq!(
        got,
        vec![("f".to_owned(), Op::Update), ("f/x".to_owned(), Op::Update)]
    );
}

#[test]
fn delete_waits_for_running_pushes_below_it() {
    let now = Instant::now();
    let mut queue = TargetQueue::default();
    observe(&mut queue, "d/x", Op::Update, false, now);
    let running = queue.next_plan(now, CAPS);
    observe(&mut queue, "d", Op::Delete, true, now);
    assert!(
        batch(&mut queue, now).is_empty(),
        "delete of d must wait for d/x"
    );
    let Some(Plan::Batch(taken)) = running else {
        panic!("running batch")
    };
    queue.succeeded(&taken, &Ran::Batch);
    assert_eq!(batch(&mut queue, now), vec![("d".to_owned(), Op::Delete)]);
}

#[test]
fn new_directories_and_their_files_go_together() {
    let now = Instant::now();
    let mut queue = TargetQueue::default();
    for (rel, dir) in [
        ("a", true),
        ("a/b", true),
        ("a/b/c", true),
        ("a/b/c/f", false),
    ] {
        observe(&mut queue, rel, Op::Update, dir, now);
    }
    assert_eq!(batch(&mut queue, now).len(), 4);
}

#[test]
fn batches_respect_the_path_cap_in_fifo_order() {
    let now = Instant::now();
    let mut queue = TargetQueue::default();
    for i in 0..250 {
        observe(&mut queue, &format!("f{i:03}"), Op::Update, false, now);
    }
    let first = batch(&mut queue, now);
    assert_eq!(first.len(), 100);
    assert_eq!(first[0].0, "f000");
    assert_eq!(batch(&mut queue, now).len(), 100);
    assert_eq!(batch(&mut queue, now).len(), 50);
    assert_eq!(queue.pending_len(), 0);
}

#[test]
fn remote_down_backs_off_then_retries_everything_pending() {
    let now = Instant::now();
    let mut queue = TargetQueue::default();
    observe(&mut queue, "a", Op::Update, false, now);
    let Some(Plan::Batch(taken)) = queue.next_plan(now, CAPS) else {
        panic!("batch")
    };
    queue.failed(taken, Ran::Batch, true, Duration::from_secs(2), now);
    observe(&mut queue, "b", Op::Update, false, now);
    assert!(batch(&mut queue, now).is_empty(), "backing off");
    assert_eq!(queue.next_wakeup(), Some(now + Duration::from_secs(2)));
    let later = now + Duration::from_secs(2);
    queue.tick(later);
    let mut got = batch(&mut queue, later);
    got.sort();
    assert_eq!(
        got,
        vec![("a".into(), Op::Update), ("b".into(), Op::Update)]
    );
}

#[test]
fn partial_failure_holds_only_the_failed_paths() {
    let now = Instant::now();
    let mut queue = TargetQueue::default();
    observe(&mut queue, "bad", Op::Update, false, now);
    let Some(Plan::Batch(taken)) = queue.next_plan(now, CAPS) else {
        panic!("batch")
    };
    queue.failed(taken, Ran::Batch, false, Duration::from_secs(60), now);
    observe(&mut queue, "good", Op::Update, false, now);
    assert_eq!(
        batch(&mut queue, now),
        vec![("good".to_owned(), Op::Update)]
    );
    let later = now + Duration::from_secs(3);
    queue.tick(later);
    assert_eq!(
        batch(&mut queue, later),
        vec![("bad".to_owned(), Op::Update)]
    );
}

#[test]
fn failed_path_does_not_override_a_newer_change() {
    let now = Instant::now();
    let mut queue = TargetQueue::default();
    observe(&mut queue, "f", Op::Update, false, now);
    let Some(Plan::Batch(taken)) = queue.next_plan(now, CAPS) else {
        panic!("batch")
    };
    observe(&mut queue, "f", Op::Delete, false, now);
    queue.failed(taken, Ran::Batch, true, Duration::from_secs(1), now);
    queue.tick(now + Duration::from_secs(1));
    assert_eq!(
        batch(&mut queue, now + Duration::from_secs(1)),
        vec![("f".to_owned(), Op::Delete)]
    );
}

#[test]
fn full_sync_waits_for_running_batches_and_covers_pending() {
    let now = Instant::now();
    let mut queue = TargetQueue::default();
    observe(&mut queue, "a", Op::Update, false, now);
    let Some(Plan::Batch(running)) = queue.next_plan(now, CAPS) else {
        panic!("batch")
    };
    queue.request_full(FullRequest {
        reason: "rescan",
        extra_excludes: Vec::new(),
    });
    observe(&mut queue, "b", Op::Update, false, now);
    assert!(
        queue.next_plan(now, CAPS).is_none(),
        "full waits for the running batch"
    );
    queue.succeeded(&running, &Ran::Batch);
    let ran = match queue.next_plan(now, CAPS) {
        Some(Plan::Full(request)) => {
            assert_eq!(request.reason, "rescan");
            assert_eq!(
                queue.pending_len(),
                1,
                "pending paths are not trusted to a quick check: b stays queued"
            );
            Ran::Full(request)
        }
        other => panic!("expected a full sync, got {other:?}"),
    };
    observe(&mut queue, "c", Op::Update, false, now);
    assert!(
        queue.next_plan(now, CAPS).is_none(),
        "nothing runs beside a full sync"
    );
    queue.succeeded(&[], &ran);
    let mut after = batch(&mut queue, now);
    after.sort();
    assert_eq!(
        after,
        vec![("b".into(), Op::Update), ("c".into(), Op::Update)],
        "pushed after the full sync"
    );
}

#[test]
fn one_probe_at_a_time_while_failing() {
    let now = Instant::now();
    let mut queue = TargetQueue::default();
    observe(&mut queue, "a", Op::Update, false, now);
    let Some(Plan::Batch(taken)) = queue.next_plan(now, CAPS) else {
        panic!("batch")
    };
    queue.failed(taken, Ran::Batch, true, Duration::ZERO, now);
    queue.tick(now);
    assert!(queue.next_plan(now, CAPS).is_some());
    observe(&mut queue, "b", Op::Update, false, now);
    assert!(
        queue.next_plan(now, CAPS).is_none(),
        "second job while failing"
    );
}

#[test]
fn delete_and_a_change_below_it_never_share_a_batch() {
    let now = Instant::now();
    let mut queue = TargetQueue::default();
    observe(&mut queue, "d/x", Op::Update, false, now);
    observe(&mut queue, "e", Op::Update, false, now);
    // `d` was a directory and is now a file: its replacement must not run beside d/x.
    observe(&mut queue, "d", Op::Update, false, now);
    let first = batch(&mut queue, now);
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(!first.iter().any(|(p, _)| p == "d"), "{first:?}");
}

#[test]
fn a_small_backlog_lingers_behind_a_running_batch() {
    let linger = Duration::from_millis(50);
    let now = Instant::now();
    let mut queue = TargetQueue::default();
    observe(&mut queue, "first", Op::Update, false, now);
    assert_eq!(
        queue.lingering(now, linger, 3),
        None,
        "nothing running: a change goes at once"
    );
    let running = queue.next_plan(now, CAPS);
    observe(&mut queue, "a", Op::Update, false, now);
    observe(
        &mut queue,
        "b",
        Op::Update,
        false,
        now + Duration::from_millis(10),
    );
    assert_eq!(queue.lingering(now, linger, 3), Some(now + linger));
    assert_eq!(
        queue.lingering(now + linger, linger, 3),
        None,
        "the oldest waited long enough"
    );
    observe(&mut queue, "c", Op::Update, false, now);
    assert_eq!(
        queue.lingering(now, linger, 3),
        None,
        "a full batch goes beside the running one"
    );
    let Some(Plan::Batch(taken)) = running else {
        panic!("running batch")
    };
    queue.succeeded(&taken, &Ran::Batch);
    assert_eq!(queue.lingering(now, linger, 100), None, "the batch ended");
}

fn subtree(queue: &mut TargetQueue, now: Instant) -> Option<PathBuf> {
    match queue.next_plan(now, CAPS) {
        Some(Plan::Subtree(rel)) => Some(rel),
        _ => None,
    }
}

/// A directory deleted and a directory again under the same name gets a subtree sync of
/// it (never a whole-root one), whether its delete was queued, running or done.
#[test]
fn a_directory_deleted_then_recreated_gets_a_subtree_sync() {
    let now = Instant::now();
    // (delete state when the new directory is seen)
    for state in ["queued", "in flight", "done", "failed"] {
        let mut queue = TargetQueue::default();
        observe(&mut queue, "logs", Op::Delete, true, now);
        let delete = match state {
            "queued" => None,
            _ => match queue.next_plan(now, CAPS) {
                Some(Plan::Batch(taken)) => Some(taken),
                other => panic!("{state}: delete batch expected, got {other:?}"),
            },
        };
        if state == "done" {
            queue.succeeded(delete.as_deref().unwrap_or_default(), &Ran::Batch);
        }
        observe(&mut queue, "logs", Op::Update, true, now);
        observe(&mut queue, "logs/new.log", Op::Update, false, now);
        if state == "in flight" || state == "failed" {
            assert_eq!(
                subtree(&mut queue, now),
                None,
                "{state}: not beside the delete"
            );
            let taken = delete.clone().unwrap_or_default();
            if state == "failed" {
                queue.failed(taken, Ran::Batch, false, Duration::from_secs(1), now);
            } else {
                queue.succeeded(&taken, &Ran::Batch);
            }
        }
        assert_eq!(
            subtree(&mut queue, now),
            Some(PathBuf::from("logs")),
            "{state}"
        );
        assert!(
            queue.take_full().is_none(),
            "{state}: never a whole-root sync"
        );
        assert!(
            batch(&mut queue, now).is_empty(),
            "{state}: nothing below logs beside its subtree sync"
        );
        queue.succeeded(&[], &Ran::Subtree(PathBuf::from("logs")));
        let mut after = batch(&mut queue, now);
        after.sort();
        assert_eq!(
            after,
            vec![
                ("logs".into(), Op::Update),
                ("logs/new.log".into(), Op::Update)
            ],
            "{state}: pushed after the subtree sync"
        );
    }
}

#[test]
fn replacements_that_need_no_subtree_sync() {
    let now = Instant::now();
    // A file replaced by a file, a deleted file replaced by a directory, a directory
    // replaced by a file (pushed with --force, it replaces the remote directory whole).
    let table: &[&[(&str, Op, bool)]] = &[
        &[("f", Op::Delete, false), ("f", Op::Update, false)],
        &[("f", Op::Delete, false), ("f", Op::Update, true)],
        &[("d", Op::Delete, true), ("d", Op::Update, false)],
        &[
            ("d", Op::Delete, true),
            ("d", Op::Update, false),
            ("d", Op::Update, false),
        ],
    ];
    for events in table {
        let mut queue = TargetQueue::default();
        for (rel, op, dir) in *events {
            observe(&mut queue, rel, *op, *dir, now);
        }
        assert!(
            matches!(queue.next_plan(now, CAPS), Some(Plan::Batch(_))),
            "{events:?}"
        );
    }
    // dir → file → dir: the directory comes back, the remote may hold the old one.
    let mut queue = TargetQueue::default();
    observe(&mut queue, "d", Op::Delete, true, now);
    observe(&mut queue, "d", Op::Update, true, now);
    observe(&mut queue, "d/x", Op::Delete, true, now);
    observe(&mut queue, "d/x", Op::Update, true, now);
    assert_eq!(
        subtree(&mut queue, now),
        Some(PathBuf::from("d")),
        "merged into d"
    );
    assert_eq!(subtree(&mut queue, now), None, "d/x is inside d's subtree");
}

#[test]
fn a_failed_subtree_sync_is_asked_for_again_and_backs_off() {
    let now = Instant::now();
    let mut queue = TargetQueue::default();
    queue.request_subtree(PathBuf::from("d"));
    let rel = subtree(&mut queue, now).expect("subtree");
    queue.failed(
        Vec::new(),
        Ran::Subtree(rel),
        false,
        Duration::from_secs(2),
        now,
    );
    assert!(queue.is_failing());
    assert_eq!(subtree(&mut queue, now), None, "backing off");
    let later = now + Duration::from_secs(2);
    queue.tick(later);
    assert_eq!(subtree(&mut queue, later), Some(PathBuf::from("d")));
}

#[test]
fn failing_subtree_syncs_starve_neither_each_other_nor_batches() {
    let now = Instant::now();
    let mut queue = TargetQueue::default();
    queue.request_subtree(PathBuf::from("a"));
    queue.request_subtree(PathBuf::from("b"));
    observe(&mut queue, "f", Op::Update, false, now);
    let mut order = Vec::new();
    for _ in 0..4 {
        let plan = queue.next_plan(now, CAPS).expect("a probe");
        let (label, taken, ran) = match plan {
            Plan::Subtree(rel) => (rel.display().to_string(), Vec::new(), Ran::Subtree(rel)),
            Plan::Batch(taken) => ("batch".to_owned(), taken, Ran::Batch),
            Plan::Full(_) | Plan::Move { .. } => panic!("no full sync"),
        };
        order.push(label);
        queue.failed(taken, ran, true, Duration::ZERO, now);
        queue.tick(now);
    }
    assert_eq!(order, ["a", "batch", "b", "batch"]);
}

#[test]
fn a_directory_delete_done_long_ago_is_forgotten_unless_still_queued() {
    let now = Instant::now();
    let later = now + DELETE_MEMORY + Duration::from_secs(1);
    // Done long ago: forgotten, a new directory of that name is a plain update.
    let mut queue = TargetQueue::default();
    observe(&mut queue, "d", Op::Delete, true, now);
    let Some(Plan::Batch(taken)) = queue.next_plan(now, CAPS) else {
        panic!("delete")
    };
    queue.succeeded(&taken, &Ran::Batch);
    queue.tick(later);
    observe(&mut queue, "d", Op::Update, true, later);
    assert_eq!(batch(&mut queue, later), vec![("d".to_owned(), Op::Update)]);
    // Still queued (the remote was down all along): remembered.
    let mut queue = TargetQueue::default();
    observe(&mut queue, "d", Op::Delete, true, now);
    queue.tick(later);
    observe(&mut queue, "d", Op::Update, true, later);
    assert_eq!(subtree(&mut queue, later), Some(PathBuf::from("d")));
}

/// Every remote holds a `Pending` per queued path and a `Taken` per path in flight.
#[test]
fn per_remote_path_records_stay_small_and_keep_their_instant() {
    assert_eq!(std::mem::size_of::<Pending>(), 16);
    assert_eq!(std::mem::size_of::<Taken>(), 24);
    let now = Instant::now();
    for instant in [
        now,
        now + Duration::from_nanos(1),
        now + Duration::from_secs(86_400 * 365),
        now.checked_sub(Duration::from_secs(3)).unwrap_or(now),
    ] {
        assert_eq!(Seen::at(instant).instant(), instant);
    }
    assert!(Seen::at(now) < Seen::at(now + Duration::from_nanos(1)));
}
