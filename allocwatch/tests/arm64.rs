//! arm64: what allocwatch recorded in the arm64 VM, checked against the
//! fixtures' own counts with the same checks as on amd64 (`trace.rs`,
//! `pools.rs`, `pool_wrappers.rs`, `sampled.rs`, `runtime_profile.rs`).
//!
//! There is no arm64 machine here: `cargo xtask test --arm64` (and the
//! full `cargo xtask test`) cross-builds allocwatch and the fixtures, runs
//! them in a `qemu-system-aarch64` VM on Debian's arm64 kernel, saves the
//! files each run wrote, and runs these tests on them with
//! `ALLOCWATCH_ARM64_RESULTS` set to their directory. Without it they have
//! nothing to check, so they are `#[ignore]`d in the ordinary run and fail
//! when asked for without it.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;

use support::noprofile::{NoProfileResult, check_launched_estimates};
use support::pools::{PoolsResult, check_pools};
use support::poolwrap::{PoolwrapResult, check_poolwrap};
use support::profile::{Totals, by_site, check_exact_rate_1, check_sampled, profile_diff_of};
use support::{
    FixtureResult, SiteRow, check_exact, parse_result, read_csv, read_site_rows, read_summary,
};

const GO_VERSIONS: &[&str] = &["1.21.13", "1.27.3"];

/// The directory of the VM's files.
fn results() -> PathBuf {
    let dir = std::env::var_os("ALLOCWATCH_ARM64_RESULTS").expect(
        "ALLOCWATCH_ARM64_RESULTS is not set: these tests check what the arm64 VM recorded; run `cargo xtask test --arm64`",
    );
    PathBuf::from(dir)
}

/// The fixture's stdout of run `name`, and its `--json` summary.
fn run(name: &str) -> (String, support::RunSummary) {
    let dir = results();
    let out = std::fs::read_to_string(dir.join(format!("{name}.out")))
        .unwrap_or_else(|e| panic!("{name}.out: {e}"));
    (out, read_summary(&dir.join(format!("{name}.json"))))
}

/// Exact mode on arm64: every site of `allocs` (Go 1.21 and 1.27, default
/// and PIE + stripped builds) has exactly the fixture's count and bytes.
#[test]
#[ignore = "checks the arm64 VM's output: run by `cargo xtask test --arm64`"]
fn exact_counts_on_arm64() {
    for v in GO_VERSIONS {
        for b in ["default", "pie-stripped"] {
            let name = format!("allocs-{b}-go{v}");
            let (out, summary) = run(&name);
            let rows = read_site_rows(&results().join(format!("{name}.csv")));
            let res: FixtureResult = parse_result(&out);
            assert!(
                res.go.starts_with(&format!("go{}", &v[..4])),
                "{name}: {}",
                res.go
            );
            check_exact(&format!("arm64 {name}"), &rows, &res, &summary);
        }
    }
}

/// Pools on arm64: gets, misses, nil returns, puts, hit ratios and what
/// each `New` allocated equal the fixture's, per pool and per caller.
#[test]
#[ignore = "checks the arm64 VM's output: run by `cargo xtask test --arm64`"]
fn pool_counts_on_arm64() {
    for v in GO_VERSIONS {
        for b in ["default", "pie-stripped"] {
            let name = format!("pools-{b}-go{v}");
            let (out, summary) = run(&name);
            let rows = read_csv(&results().join(format!("{name}.csv")));
            let res: PoolsResult = parse_result(&out);
            check_pools(
                &format!("arm64 {name}"),
                &rows,
                &res,
                &summary,
                b == "default",
            );
        }
    }
}

/// Pools as real services build them, on arm64: each pool charged its own
/// misses' allocations, symbol-less pools named after their user, the
/// functions that asked (past the forwarding wrappers, found in arm64
/// code) listed as callers.
#[test]
#[ignore = "checks the arm64 VM's output: run by `cargo xtask test --arm64`"]
fn pool_wrappers_on_arm64() {
    for v in GO_VERSIONS {
        for b in ["default", "stripped"] {
            let name = format!("poolwrap-{b}-go{v}");
            let (out, summary) = run(&name);
            let rows = read_csv(&results().join(format!("{name}.csv")));
            let res: PoolwrapResult = parse_result(&out);
            check_poolwrap(&format!("arm64 {name}"), &rows, &res, &summary);
        }
    }
}

/// The runtime's own profile of the window (the fixture wrote it in the
/// VM), and allocwatch's rows of run `name`.
fn against_the_profile(
    name: &str,
    by_line: bool,
) -> (
    HashMap<String, Totals>,
    HashMap<String, Totals>,
    Vec<SiteRow>,
) {
    let dir = results();
    let rows = read_site_rows(&dir.join(format!("{name}.csv")));
    let runtime = profile_diff_of(
        &dir.join(format!("{name}.before.pb.gz")),
        &dir.join(format!("{name}.after.pb.gz")),
        by_line,
    );
    (by_site(&rows, by_line), runtime, rows)
}

/// On arm64, against the Go runtime's own `allocs` profile (as
/// tests/runtime_profile.rs): sampled mode on `profcmp` (maps that grow,
/// text/template, generics; Go 1.21 and 1.27), and exact mode on `iters`
/// at `GODEBUG=memprofilerate=1` (range-over-func iterators; Go 1.27,
/// default and stripped), site by site.
#[test]
#[ignore = "checks the arm64 VM's output: run by `cargo xtask test --arm64`"]
fn runtime_profile_agreement_on_arm64() {
    for v in GO_VERSIONS {
        let name = format!("profcmp-default-go{v}");
        let (mine, runtime, rows) = against_the_profile(&name, false);
        check_sampled(&format!("arm64 {name}"), &mine, &runtime, &rows);
    }
    let newest = GO_VERSIONS[GO_VERSIONS.len() - 1];
    for b in ["default", "stripped"] {
        let name = format!("iters-{b}-go{newest}");
        let (mine, runtime, rows) = against_the_profile(&name, true);
        check_exact_rate_1(&format!("arm64 {name}"), &mine, &runtime, &rows);
    }
}

/// Sampled mode on arm64: a stripped program with memory profiling off,
/// launched by `record --mode sampled`, runs at 512 KiB from its start and
/// the estimates are within 10 % of its own counts.
#[test]
#[ignore = "checks the arm64 VM's output: run by `cargo xtask test --arm64`"]
fn sampled_estimates_on_arm64() {
    for v in GO_VERSIONS {
        let name = format!("noprofile-stripped-go{v}");
        let (out, summary) = run(&name);
        let res: NoProfileResult = parse_result(&out);
        assert_eq!(summary.mode.initial, "sampled", "{name}");
        let rows = read_site_rows(&results().join(format!("{name}.csv")));
        check_launched_estimates(&name, &res, &rows);
    }
}
