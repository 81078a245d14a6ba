//! sync.Pools as real services build them, against the real kernel: pools
//! that share one `New` (buckets made by one constructor), a generic wrapper
//! pool, a forwarding helper, and pools without a data symbol.
//!
//! The `poolwrap` fixture counts its own gets, misses and puts per pool and
//! per user function, and knows what one call of each `New` allocates
//! (objects and requested bytes). allocwatch must charge each pool exactly
//! the allocations of its *own* misses, name each symbol-less pool after the
//! function that uses it, and list the functions that asked (not the
//! wrappers) as its callers.

mod support;

use std::path::Path;

use support::poolwrap::{PoolwrapResult, PoolwrapRow, check_poolwrap};
use support::{
    RunSummary, Variant, fixture, parse_result, record_pools_csv, skip_unless_root, toolchain,
};

fn record(bin: &Path) -> (Vec<PoolwrapRow>, PoolwrapResult, RunSummary) {
    let (rows, run) = record_pools_csv(bin, &[]);
    (rows, parse_result(&run.stdout), run.summary)
}

fn check(version: &str, variant: Variant) {
    let what = format!("go{version} {}", variant.name());
    let bin = fixture(&toolchain(version), "poolwrap", variant);
    let (rows, res, summary) = record(&bin);
    check_poolwrap(&what, &rows, &res, &summary);
}

fn run(version: &str) {
    if skip_unless_root() {
        return;
    }
    for v in [Variant::Default, Variant::Stripped] {
        check(version, v);
    }
}

#[test]
fn shared_new_wrappers_and_names_go1_21() {
    run("1.21.13");
}

#[test]
fn shared_new_wrappers_and_names_go1_27() {
    run("1.27.3");
}
