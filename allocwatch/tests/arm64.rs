//! arm64: what allocwatch recorded in the arm64 VM, checked against the
//! fixtures' own counts with the same checks as on amd64 (`trace.rs`,
//! `pools.rs`, `sampled.rs`).
//!
//! There is no arm64 machine here: `cargo xtask test --arm64` (and the
//! full `cargo xtask test`) cross-builds allocwatch and the fixtures, runs
//! them in a `qemu-system-aarch64` VM on Debian's arm64 kernel, saves the
//! files each run wrote, and runs these tests on them with
//! `ALLOCWATCH_ARM64_RESULTS` set to their directory. Without it they have
//! nothing to check, so they are `#[ignore]`d in the ordinary run and fail
//! when asked for without it.

mod support;

use std::path::PathBuf;

use support::pools::{PoolsResult, check_pools};
use support::{FixtureResult, check_exact, parse_result, read_csv, read_site_rows, read_summary};

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

#[derive(Debug, serde::Deserialize)]
struct NoProfileSite {
    func: String,
    count: u64,
}

#[derive(Debug, serde::Deserialize)]
struct NoProfileResult {
    rate_before: u64,
    sites: Vec<NoProfileSite>,
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
        assert_eq!(res.rate_before, 524_288, "{name}: the rate at start");
        assert_eq!(summary.mode.initial, "sampled", "{name}");
        let rows = read_site_rows(&results().join(format!("{name}.csv")));
        for s in &res.sites {
            let allocs: u64 = rows
                .iter()
                .filter(|r| r.function == s.func)
                .map(|r| r.allocs)
                .sum();
            #[allow(clippy::cast_precision_loss)]
            let off = (allocs as f64 - s.count as f64).abs() / s.count as f64;
            assert!(
                off <= 0.10,
                "{name}: {}: estimated {allocs}, true {}",
                s.func,
                s.count
            );
        }
    }
}
