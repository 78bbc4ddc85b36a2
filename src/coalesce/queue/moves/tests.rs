use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::super::{Caps, Plan, Ran, Taken, TargetQueue};
use crate::job::Op;

const CAPS: Caps = Caps { max_paths: 100 };

/// One step of a history.
#[derive(Clone, Copy)]
enum Step {
    /// An update of a file.
    U(&'static str),
    /// An update of a directory.
    Ud(&'static str),
    /// A delete of a file.
    D(&'static str),
    /// A rename of a file.
    M(&'static str, &'static str),
    /// A rename of a directory.
    Md(&'static str, &'static str),
    /// A journal entry (a push that failed before).
    J(&'static str),
}
use Step::*;

fn apply(queue: &mut TargetQueue, steps: &[Step], now: Instant) {
    for step in steps {
        match *step {
            U(p) => queue.observe(PathBuf::from(p), Op::Update, false, 0, now),
            Ud(p) => queue.observe(PathBuf::from(p), Op::Update, true, 0, now),
            D(p) => queue.observe(PathBuf::from(p), Op::Delete, false, 0, now),
            M(a, b) => queue.observe_move(a.into(), b.into(), false, 0, now, true),
            Md(a, b) => queue.observe_move(a.into(), b.into(), true, 0, now, true),
            J(p) => queue.mark_journaled([PathBuf::from(p)]),
        }
    }
}

/// The plan as text, with what ends it.
fn describe(plan: Plan) -> (String, Vec<Taken>, Ran) {
    let ops = |taken: &[Taken]| {
        let mut ops: Vec<String> = taken
            .iter()
            .map(|t| format!("{} {}", t.pending.op, t.rel.display()))
            .collect();
        ops.sort();
        ops.join(",")
    };
    match plan {
        Plan::Batch(taken) => (format!("batch {}", ops(&taken)), taken, Ran::Batch),
        Plan::Subtree(rel) => (
            format!("subtree {}", rel.display()),
            Vec::new(),
            Ran::Subtree(rel),
        ),
        Plan::Full(request) => ("full".to_owned(), Vec::new(), Ran::Full(request)),
        Plan::Move { moves, taken, .. } => {
            let mut text = moves
                .iter()
                .map(|(from, to)| format!("move {}>{}", from.display(), to.display()))
                .collect::<Vec<_>>()
                .join(",");
            let deletes: Vec<String> = taken
                .iter()
                .filter(|t| t.pending.op == Op::Delete)
                .map(|t| t.rel.display().to_string())
                .collect();
            if !deletes.is_empty() {
                text.push_str(" then delete ");
                text.push_str(&deletes.join(","));
            }
            (text, taken, Ran::Move(moves))
        }
    }
}

/// Runs every job one at a time, each succeeding; the jobs in order.
fn drain(queue: &mut TargetQueue, now: Instant) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(plan) = queue.next_plan(now, CAPS) {
        let (text, taken, ran) = describe(plan);
        out.push(text);
        queue.succeeded(&taken, &ran);
        assert!(out.len() < 20, "no end: {out:?}");
    }
    assert!(queue.is_idle(), "left: {out:?} {:?}", queue);
    out
}

#[test]
fn moves_collapse_with_what_is_queued() {
    #[rustfmt::skip]
    let table: &[(&str, &[Step], &[&str])] = &[
        ("a file move", &[M("a", "b")], &["move a>b", "batch delete a"]),
        ("a directory move", &[Md("d", "e")], &["move d>e", "batch delete d"]),
        ("a chain is one move; the middle name is still deleted",
            &[M("a", "b"), M("b", "c")], &["move a>c", "batch delete a,delete b"]),
        ("a chain back to the start is no move",
            &[M("a", "b"), M("b", "a")], &["batch delete b,update a"]),
        ("a->b then a new a: its update goes after the move",
            &[M("a", "b"), U("a")], &["move a>b", "batch update a"]),
        ("a->b then a new directory a: a subtree sync of it after the move",
            &[Md("a", "b"), Ud("a")], &["move a>b", "subtree a", "batch update a"]),
        ("pending updates below a moved directory follow it",
            &[U("d/x"), U("d/s/y"), Md("d", "e")],
            &["move d>e", "batch delete d,update e/s/y,update e/x"]),
        ("a move over a directory drops what was queued below it (mv -T)",
            &[U("b/old"), Md("a", "b")], &["move a>b", "batch delete a"]),
        ("a move over an existing file", &[U("x"), M("a", "x")],
            &["move a>x", "batch delete a"]),
        ("a file queued and not pushed: an upload",
            &[U("a"), M("a", "b")], &["batch delete a,update b"]),
        ("a journaled file: an upload", &[J("a"), M("a", "b")], &["batch delete a,update b"]),
        ("a journaled directory: a subtree sync of the new name",
            &[J("d"), Md("d", "e")], &["subtree e", "batch delete d,update e"]),
        ("below a directory owing a subtree sync: an upload",
            &[Md("p", "q"), Ud("p"), Md("p", "r")],
            &["move p>q", "subtree p", "batch delete p,update r", "subtree r"]),
        ("a delete of the new name cancels the move",
            &[M("a", "b"), D("b")], &["batch delete a,delete b"]),
        ("a swap through a third name",
            &[M("a", "t"), M("b", "a"), M("t", "b")],
            &["move b>a", "move a>b", "batch delete t"]),
        // The watcher reports renameat2(RENAME_EXCHANGE) of two files as a→b, b→a, then
        // an update of what b is now.
        ("an exchange of two files", &[M("a", "b"), M("b", "a"), U("b")],
            &["batch update a,update b"]),
        ("a move out of a moved directory reads the first source; its delete waits",
            &[Md("a", "b"), M("b/x", "c")],
            &["move a>b", "move a/x>c", "batch delete a,delete b/x"]),
        ("a move into a directory whose parent then moves: the parent's move first",
            &[Md("in", "x/m/k"), Md("x/m", "y/n")],
            &["move x/m>y/n", "move in>y/n/k", "batch delete in,delete x/m"]),
        ("a move into a new directory waits for it",
            &[Ud("n"), M("a", "n/a")], &["batch update n", "move a>n/a", "batch delete a"]),
        ("file moves between two directories share one run",
            &[M("a/x", "b/x"), M("a/y", "b/z"), M("c/w", "b/w")],
            &["move a/x>b/x,move a/y>b/z", "move c/w>b/w", "batch delete a/x,delete a/y,delete c/w"]),
    ];
    let now = Instant::now();
    for (label, steps, expected) in table {
        let mut queue = TargetQueue::default();
        apply(&mut queue, steps, now);
        assert_eq!(&drain(&mut queue, now), expected, "{label}");
    }
}

#[test]
fn without_deletes_the_old_name_stays() {
    let now = Instant::now();
    let mut queue = TargetQueue::default();
    queue.observe_move("a".into(), "b".into(), false, 0, now, false);
    assert_eq!(drain(&mut queue, now), ["move a>b"]);
}

/// Nothing at or below either name runs beside a move, nor a delete above them.
#[test]
fn nothing_under_either_name_runs_beside_the_move() {
    let now = Instant::now();
    let mut queue = TargetQueue::default();
    apply(&mut queue, &[Md("d", "e")], now);
    let Some(plan) = queue.next_plan(now, CAPS) else {
        panic!("the move");
    };
    let (text, taken, ran) = describe(plan);
    assert_eq!(text, "move d>e");
    apply(&mut queue, &[U("e/y"), Ud("d"), U("d/z"), U("other")], now);
    let (other, other_taken, other_ran) = describe(queue.next_plan(now, CAPS).expect("other"));
    assert_eq!(other, "batch update other");
    assert!(
        queue.next_plan(now, CAPS).is_none(),
        "all wait for the move"
    );
    queue.succeeded(&other_taken, &other_ran);
    assert!(
        queue.next_plan(now, CAPS).is_none(),
        "all still wait for the move"
    );
    queue.succeeded(&taken, &ran);
    assert_eq!(
        drain(&mut queue, now),
        ["subtree d", "batch update d,update d/z,update e/y"]
    );
}

/// A move that failed as a whole is a move again (a directory journals as a subtree
/// sync of the new name); the old name's delete waits until a move succeeded.
#[test]
fn a_failed_move_is_a_move_again() {
    let now = Instant::now();
    let mut queue = TargetQueue::default();
    apply(&mut queue, &[Md("d", "e")], now);
    let (_, taken, ran) = describe(queue.next_plan(now, CAPS).expect("move"));
    let journaled: Vec<_> = taken
        .iter()
        .map(|t| queue.journal_form(crate::job::Work::Path(t.entry())))
        .collect();
    assert_eq!(
        journaled,
        [crate::job::Work::Path(crate::job::Entry {
            rel: "e".into(),
            op: Op::Delete,
            is_dir: true
        })],
        "the new directory replays as a subtree sync"
    );
    assert!(queue.next_plan(now, CAPS).is_none(), "the delete waits");
    queue.failed(taken, ran, true, Duration::ZERO, now);
    queue.tick(now);
    let (text, taken, ran) = describe(queue.next_plan(now, CAPS).expect("again"));
    assert_eq!(text, "move d>e", "the move again, not the delete");
    queue.succeeded(&taken, &ran);
    assert_eq!(drain(&mut queue, now), ["batch delete d"]);
}

/// A failed push below a moved directory's old name, back in the queue before the move
/// ran: the remote's copy may be stale, so the new name gets it after the move.
#[test]
fn a_failed_push_below_the_old_name_follows_the_move() {
    let now = Instant::now();
    let mut queue = TargetQueue::default();
    apply(&mut queue, &[U("d/x")], now);
    let (_, taken, ran) = describe(queue.next_plan(now, CAPS).expect("batch"));
    apply(&mut queue, &[Md("d", "e")], now);
    assert!(queue.next_plan(now, CAPS).is_none(), "the move waits");
    queue.failed(taken, ran, false, Duration::ZERO, now);
    queue.tick(now + Duration::from_secs(5));
    assert_eq!(
        drain(&mut queue, now + Duration::from_secs(5)),
        ["move d>e", "batch delete d,update e/x"]
    );
}

/// A directory moved onto a name the remote still holds (a deploy: `mv release
/// release.old; mv release.new release`) is compared by content; a move to a name the
/// remote has nothing at is not, a file move always is.
#[test]
fn moves_onto_names_the_remote_may_hold_compare_by_content() {
    let now = Instant::now();
    let mut queue = TargetQueue::default();
    apply(
        &mut queue,
        &[
            Md("release", "release.old"),
            Md("release.new", "release"),
            M("f", "g"),
        ],
        now,
    );
    let mut seen = Vec::new();
    while let Some(plan) = queue.next_plan(now, CAPS) {
        let by_content = matches!(
            plan,
            Plan::Move {
                by_content: true,
                ..
            }
        );
        let (text, taken, ran) = describe(plan);
        seen.push((text, by_content));
        queue.succeeded(&taken, &ran);
    }
    assert_eq!(
        seen,
        [
            ("move release>release.old".to_owned(), false),
            ("move release.new>release".to_owned(), true),
            ("move f>g".to_owned(), true),
            ("batch delete f,delete release.new".to_owned(), false),
        ]
    );
}
