//! What the pool fixtures (`pools`, `poolsgc`, `pgo`, …) report about their
//! `sync.Pool`s on their `result` line.

use serde::Deserialize;

use super::RunSummary;

/// One pool's operations as the fixture counted them, in all (`pools`) or
/// from one calling function (`callsites`: `func`, `line`).
#[derive(Debug, Deserialize)]
pub struct PoolCount {
    pub pool: String,
    pub new_func: String,
    pub gets: u64,
    pub misses: u64,
    pub nil_returns: u64,
    pub puts: u64,
    #[serde(default)]
    pub func: String,
    #[serde(default)]
    pub line: u32,
    /// Whether `New` was called from a `Get` inlined into the caller (`pgo`).
    #[serde(default)]
    pub get_inlined: Option<bool>,
}

/// What each pool's `New` allocated (one site per `New` function).
#[derive(Debug, Deserialize)]
pub struct NewSite {
    pub func: String,
    pub count: u64,
    pub bytes: u64,
}

/// The `result` of the `pools` fixture.
#[derive(Debug, Deserialize)]
pub struct PoolsResult {
    pub go: String,
    pub pools: Vec<PoolCount>,
    pub callsites: Vec<PoolCount>,
    pub sites: Vec<NewSite>,
}

/// A row of `--pools-csv`.
#[derive(Debug, Deserialize)]
pub struct PoolRow {
    pub pool: String,
    pub new_func: String,
    pub gets: u64,
    pub hits: u64,
    pub misses: u64,
    pub nil_returns: u64,
    pub puts: u64,
    pub hit_ratio: String,
    pub miss_allocs: Option<u64>,
    pub miss_bytes: Option<u64>,
}

/// The row of a fixture pool: by variable name when the binary has symbols,
/// else by New function, else (nil New) by having nil returns.
fn find<'a>(rows: &'a [PoolRow], p: &PoolCount) -> Option<&'a PoolRow> {
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

/// The `pools` fixture's counts against allocwatch's (`rows` of its
/// `--pools-csv`, and its `--json` summary), per pool, per `New` and per
/// calling function; `named`: the binary has symbols, so pools are named
/// by their variable.
pub fn check_pools(
    what: &str,
    rows: &[PoolRow],
    res: &PoolsResult,
    summary: &RunSummary,
    named: bool,
) {
    for p in &res.pools {
        let row = find(rows, p)
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
        if named {
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
        let of_pool = |p: &super::summary::Pool| match p.new_func.as_deref() {
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
