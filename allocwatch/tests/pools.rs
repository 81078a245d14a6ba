//! sync.Pool hit ratios, from outside the process, against the real kernel.
//!
//! The `pools` fixture uses pools in deterministic patterns (GOMAXPROCS=1,
//! GOGC=off) and counts its own gets, misses (calls of New), nil returns and
//! puts; allocwatch's numbers must equal them, per pool and per call site.

mod support;

use std::path::Path;

use support::pools::{PoolRow, PoolsResult, check_pools};
use support::{RunSummary, Variant, fixture, parse_result, record_pools_csv, toolchain};

fn record_pools(bin: &Path, n: u32) -> (Vec<PoolRow>, PoolsResult, RunSummary) {
    let n = n.to_string();
    let (rows, run) = record_pools_csv(bin, &[("ALLOCWATCH_N", &n)]);
    (rows, parse_result(&run.stdout), run.summary)
}

fn pools_for(version: &str) {
    if support::skip_unless_root() {
        return;
    }
    let tc = toolchain(version);
    for v in [
        Variant::Default,
        Variant::Stripped,
        Variant::Pie,
        Variant::PieStripped,
    ] {
        let what = format!("go{version} {}", v.name());
        let bin = fixture(&tc, "pools", v);
        let (rows, res, summary) = record_pools(&bin, 500);
        check_pools(&what, &rows, &res, &summary, v == Variant::Default);
    }
}

#[test]
fn pool_counts_go1_21() {
    pools_for("1.21.13");
}
#[test]
fn pool_counts_go1_22() {
    pools_for("1.22.10");
}
#[test]
fn pool_counts_go1_23() {
    pools_for("1.23.9");
}
#[test]
fn pool_counts_go1_24() {
    pools_for("1.24.11");
}
#[test]
fn pool_counts_go1_25() {
    pools_for("1.25.5");
}
#[test]
fn pool_counts_go1_26() {
    pools_for("1.26.6");
}
#[test]
fn pool_counts_go1_27() {
    pools_for("1.27.3");
}
