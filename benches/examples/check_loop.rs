//! One Check of the fixed org (`Org::build(10_000, 100)`, as `benches/engine.rs`) run N
//! times in a loop, for counting instructions, which unlike time is repeatable on a
//! noisy VM: run it twice under callgrind with two counts, and the difference of the
//! totals divided by the difference of the counts is the cost of one Check.
//!
//! `cargo build --release -p arbiter-benches --no-default-features --example check_loop`,
//! then `valgrind --tool=callgrind target/release/examples/check_loop N [PERMISSION]`
//! (PERMISSION `viewer`, the default, is the "direct relation" row; `view` is "direct via
//! permission").
#![allow(clippy::print_stdout, clippy::unwrap_used, reason = "a measuring tool")]

use std::hint::black_box;

use arbiter_benches::Org;
use arbiter_engine::{CheckRequest, Consistency, Decision};

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let permission = std::env::args().nth(2).unwrap_or_else(|| "viewer".into());
    let org = Org::build(10_000, 100).unwrap();
    let q = CheckRequest {
        resource_type: "doc",
        resource_id: "d42",
        permission: &permission,
        subject_type: "user",
        subject_id: "u297",
        consistency: Consistency::MinimizeLatency,
        ..Default::default()
    };
    let allowed = (0..n)
        .filter(|_| black_box(org.engine.check(black_box(&q))).is_ok_and(|r| r.decision == Decision::Allowed))
        .count();
    println!("{allowed} of {n} allowed");
}
