//! sync.Pool hit ratios, from outside the process, against the real kernel.
//!
//! The `pools` fixture uses pools in deterministic patterns (GOMAXPROCS=1,
//! GOGC=off) and counts its own gets, misses (calls of New), nil returns and
//! puts; allocwatch's numbers must equal them, per pool and per call site.

mod support;

use std::path::Path;

use serde::Deserialize;
use support::{PoolCount, RunSummary, Variant, fixture, parse_result, record_pools_csv, toolchain};

#[derive(Debug, Deserialize)]
struct NewSite {
    func: String,
    count: u64,
    bytes: u64,
}

#[derive(Debug, Deserialize)]
struct FixtureResult {
    go: String,
    pools: Vec<PoolCount>,
    callsites: Vec<PoolCount>,
    /// What each pool's New allocated (one site per New function).
    sites: Vec<NewSite>,
}

#[derive(Debug, Deserialize)]
struct Row {
    pool: String,
    new_func: String,
    gets: u64,
    hits: u64,
    misses: u64,
    nil_returns: u64,
    puts: u64,
    hit_ratio: String,
    miss_allocs: Option<u64>,
    miss_bytes: Option<u64>,
}

fn record_pools(bin: &Path, n: u32) -> (Vec<Row>, FixtureResult, RunSummary) {
    let n = n.to_string();
    let (rows, run) = record_pools_csv(bin, &[("ALLOCWATCH_N", &n)]);
    (rows, parse_result(&run.stdout), run.summary)
}

/// The row of a fixture pool: by variable name when the binary has symbols,
/// else by New function, else (nil New) by having nil returns.
fn find<'a>(rows: &'a [Row], p: &PoolCount) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.pool == p.pool)
        .or_else(|| {
            rows.iter()
                .find(|r| !p.new_func.is_empty() && r.new_func == p.new_func)
        })
        .or_else(|| {
            rows.iter()
                .find(|r| p.new_func.is_empty() && r.new_func.is_empty() && r.nil_returns > 0)
        })
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
        for p in &res.pools {
            let row = find(&rows, p)
                .unwrap_or_else(|| panic!("{what}: pool {} missing:\n{summary:#?}", p.pool));
            assert_eq!(
                (row.gets, row.misses, row.nil_returns, row.puts),
                (p.gets, p.misses, p.nil_returns, p.puts),
                "{what} ({}): pool {} (gets, misses, nil returns, puts)",
                res.go,
                p.pool
            );
            assert_eq!(
                row.hits,
                p.gets - p.misses - p.nil_returns,
                "{what}: hits of {}",
                p.pool
            );
            let ratio: f64 = row.hit_ratio.parse().expect("hit ratio");
            #[allow(clippy::cast_precision_loss)]
            let want = (p.gets - p.misses - p.nil_returns) as f64 / p.gets as f64;
            assert!(
                (ratio - want).abs() < 1e-3,
                "{what}: hit ratio of {}: {ratio} vs {want}",
                p.pool
            );
            if v == Variant::Default {
                assert_eq!(
                    row.pool, p.pool,
                    "{what}: pools of a binary with symbols are named by their variable"
                );
            }
            if !p.new_func.is_empty() {
                assert_eq!(row.new_func, p.new_func, "{what}: New of {}", p.pool);
            }
        }
        // Allocations made by each pool's New are attributed to that pool.
        for site in &res.sites {
            let row = rows
                .iter()
                .find(|r| r.new_func == site.func)
                .unwrap_or_else(|| panic!("{what}: no pool with New {}", site.func));
            assert_eq!(
                (row.miss_allocs, row.miss_bytes),
                (Some(site.count), Some(site.bytes)),
                "{what}: miss_allocs, miss_bytes of the pool with New {}",
                site.func
            );
            let pool = summary
                .pools
                .iter()
                .find(|p| p.new_func.as_deref() == Some(site.func.as_str()))
                .unwrap_or_else(|| panic!("{what}: no pool with New {}:\n{summary:#?}", site.func));
            let cost = pool.miss_cost.as_ref().map(|c| (c.allocs, c.bytes));
            assert_eq!(
                cost,
                Some((site.count, site.bytes)),
                "{what}: {}: the summary's miss cost (allocations, bytes)",
                site.func
            );
        }
        for c in &res.callsites {
            // The pool by its New function; a pool without New by its nil returns.
            let of_pool = |p: &support::summary::Pool| match p.new_func.as_deref() {
                Some(f) => f == c.new_func,
                None => c.new_func.is_empty() && p.nil_returns > 0,
            };
            let got = summary.caller_counts(of_pool, &c.func).unwrap_or_else(|| {
                panic!(
                    "{what}: no caller {} of {} in the summary:\n{summary:#?}",
                    c.func, c.pool
                )
            });
            assert_eq!(
                got,
                [c.gets, c.misses, c.nil_returns, c.puts],
                "{what}: caller {} of {}",
                c.func,
                c.pool
            );
        }
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
