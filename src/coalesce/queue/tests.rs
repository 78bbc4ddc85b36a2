use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;

const CAPS: Caps = Caps {
    max_paths: 100,
    max_bytes: 1 << 30,
};

fn no_size(_: &Path) -> u64 {
    0
}

fn batch(queue: &mut TargetQueue, now: Instant) -> Vec<(String, Op)> {
    match queue.next_plan(now, CAPS, no_size) {
        Some(Plan::Batch(taken)) => taken
            .into_iter()
            .map(|t| (t.entry.rel.display().to_string(), t.entry.op))
            .collect(),
        Some(Plan::Full(..)) => panic!("unexpected full sync"),
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
    let first = queue.next_plan(now, CAPS, no_size);
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
    queue.succeeded(&taken, false);
    assert_eq!(batch(&mut queue, now), vec![("f".to_owned(), Op::Update)]);
}

#[test]
fn nothing_below_a_running_directory_delete_goes() {
    let now = Instant::now();
    let mut queue = TargetQueue::default();
    observe(&mut queue, "d", Op::Delete, true, now);
    let running = queue.next_plan(now, CAPS, no_size);
    observe(&mut queue, "d", Op::Update, true, now);
    observe(&mut queue, "d/x", Op::Update, false, now);
    observe(&mut queue, "other", Op::Update, false, now);
    assert_eq!(
        batch(&mut queue, now),
        vec![("other".to_owned(), Op::Update)]
    );
    let Some(Plan::Batch(taken)) = running else {
        panic!("running batch")
    };
    queue.succeeded(&taken, false);
    let mut got = batch(&mut queue, now);
    got.sort();
    assert_eq!(
        got,
        vec![("d".into(), Op::Update), ("d/x".into(), Op::Update)]
    );
}

#[test]
fn delete_waits_for_running_pushes_below_it() {
    let now = Instant::now();
    let mut queue = TargetQueue::default();
    observe(&mut queue, "d/x", Op::Update, false, now);
    let running = queue.next_plan(now, CAPS, no_size);
    observe(&mut queue, "d", Op::Delete, true, now);
    assert!(
        batch(&mut queue, now).is_empty(),
        "delete of d must wait for d/x"
    );
    let Some(Plan::Batch(taken)) = running else {
        panic!("running batch")
    };
    queue.succeeded(&taken, false);
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
fn byte_cap_splits_batches_but_never_starves_a_big_file() {
    let now = Instant::now();
    let mut queue = TargetQueue::default();
    for rel in ["big1", "big2", "small"] {
        observe(&mut queue, rel, Op::Update, false, now);
    }
    let caps = Caps {
        max_paths: 100,
        max_bytes: 1000,
    };
    let size = |p: &Path| {
        if p.to_string_lossy().starts_with("big") {
            5000
        } else {
            10
        }
    };
    let mut sizes = Vec::new();
    while let Some(Plan::Batch(taken)) = queue.next_plan(now, caps, size) {
        sizes.push(taken.len());
    }
    assert_eq!(sizes.iter().sum::<usize>(), 3);
    assert!(sizes.len() >= 2, "{sizes:?}");
}

#[test]
fn remote_down_backs_off_then_retries_everything_pending() {
    let now = Instant::now();
    let mut queue = TargetQueue::default();
    observe(&mut queue, "a", Op::Update, false, now);
    let Some(Plan::Batch(taken)) = queue.next_plan(now, CAPS, no_size) else {
        panic!("batch")
    };
    queue.failed(taken, None, true, Duration::from_secs(2), now);
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
    let Some(Plan::Batch(taken)) = queue.next_plan(now, CAPS, no_size) else {
        panic!("batch")
    };
    queue.failed(taken, None, false, Duration::from_secs(60), now);
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
    let Some(Plan::Batch(taken)) = queue.next_plan(now, CAPS, no_size) else {
        panic!("batch")
    };
    observe(&mut queue, "f", Op::Delete, false, now);
    queue.failed(taken, None, true, Duration::from_secs(1), now);
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
    let Some(Plan::Batch(running)) = queue.next_plan(now, CAPS, no_size) else {
        panic!("batch")
    };
    queue.request_full(FullRequest {
        reason: "rescan",
        extra_excludes: Vec::new(),
    });
    observe(&mut queue, "b", Op::Update, false, now);
    assert!(
        queue.next_plan(now, CAPS, no_size).is_none(),
        "full waits for the running batch"
    );
    queue.succeeded(&running, false);
    let full = match queue.next_plan(now, CAPS, no_size) {
        Some(Plan::Full(request, covered)) => {
            assert_eq!(request.reason, "rescan");
            assert!(
                covered.is_empty(),
                "pending paths are not trusted to a quick check"
            );
            covered
        }
        other => panic!("expected a full sync, got {other:?}"),
    };
    observe(&mut queue, "c", Op::Update, false, now);
    assert!(
        queue.next_plan(now, CAPS, no_size).is_none(),
        "nothing runs beside a full sync"
    );
    queue.succeeded(&full, true);
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
    let Some(Plan::Batch(taken)) = queue.next_plan(now, CAPS, no_size) else {
        panic!("batch")
    };
    queue.failed(taken, None, true, Duration::ZERO, now);
    queue.tick(now);
    assert!(queue.next_plan(now, CAPS, no_size).is_some());
    observe(&mut queue, "b", Op::Update, false, now);
    assert!(
        queue.next_plan(now, CAPS, no_size).is_none(),
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
    let running = queue.next_plan(now, CAPS, no_size);
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
    queue.succeeded(&taken, false);
    assert_eq!(queue.lingering(now, linger, 100), None, "the batch ended");
}

#[test]
fn a_directory_replaced_before_its_delete_went_out_gets_a_full_sync() {
    let now = Instant::now();
    let mut queue = TargetQueue::default();
    observe(&mut queue, "d", Op::Delete, true, now);
    observe(&mut queue, "d", Op::Update, true, now);
    observe(&mut queue, "d/new", Op::Update, false, now);
    match queue.next_plan(now, CAPS, no_size) {
        Some(Plan::Full(request, covered)) => {
            assert_eq!(request.reason, "replaced directory");
            assert!(covered.is_empty());
            assert_eq!(queue.pending_len(), 2, "still pushed after the full sync");
        }
        other => panic!("expected a full sync, got {other:?}"),
    }
    // A file replaced by a file, or a deleted file replaced by a directory, needs none.
    let mut queue = TargetQueue::default();
    observe(&mut queue, "f", Op::Delete, false, now);
    observe(&mut queue, "f", Op::Update, true, now);
    assert_eq!(batch(&mut queue, now), vec![("f".to_owned(), Op::Update)]);
}

#[test]
fn a_failed_directory_delete_superseded_by_a_new_directory_gets_a_full_sync() {
    let now = Instant::now();
    let mut queue = TargetQueue::default();
    observe(&mut queue, "d", Op::Delete, true, now);
    let Some(Plan::Batch(taken)) = queue.next_plan(now, CAPS, no_size) else {
        panic!("delete batch")
    };
    // d is created again while its delete runs; the delete then fails.
    observe(&mut queue, "d", Op::Update, true, now);
    observe(&mut queue, "d/new", Op::Update, false, now);
    queue.failed(taken, None, true, Duration::from_secs(1), now);
    let later = now + Duration::from_secs(2);
    queue.tick(later);
    match queue.next_plan(later, CAPS, no_size) {
        Some(Plan::Full(request, covered)) => {
            assert_eq!(request.reason, "replaced directory");
            assert!(covered.is_empty(), "{covered:?}");
            assert_eq!(
                queue.pending_len(),
                2,
                "pushed as a batch after the full sync"
            );
        }
        other => panic!("expected a full sync, got {other:?}"),
    }
}
