//! sync.Pool misses caused by garbage collection, against the real kernel.
//!
//! The `poolsgc` fixture uses one pool well (Get then Put every iteration)
//! while forcing GCs at known points — and, with GOGC on, letting the
//! runtime start its own. Each GC moves the pool's objects to the victim
//! cache and drops the previous victims, so Gets after two GCs miss. The
//! fixture counts every miss itself (calls of New); allocwatch's misses must
//! equal them, per pool, per call site and as allocations of the New
//! function.

mod support;

use std::path::Path;

use serde::Deserialize;
use support::{
    PoolCount, RunSummary, Variant, fixture, parse_result, record_sites_and_pools, toolchain,
};

const N: u32 = 10_000;

#[derive(Debug, Deserialize)]
struct Site {
    func: String,
    #[serde(rename = "type")]
    type_name: String,
    count: u64,
    line: u32,
}

#[derive(Debug, Deserialize)]
struct FixtureResult {
    go: String,
    n: u64,
    pools: Vec<PoolCount>,
    callsites: Vec<PoolCount>,
    sites: Vec<Site>,
    forced_gcs: u64,
    gcs: u64,
    misses_after_forced_gc: Vec<u64>,
}

#[derive(Debug, Deserialize)]
struct PoolRow {
    pool: String,
    new_func: String,
    gets: u64,
    hits: u64,
    misses: u64,
    nil_returns: u64,
    puts: u64,
}

#[derive(Debug, Deserialize)]
struct SiteRow {
    function: String,
    line: u32,
    #[serde(rename = "type")]
    type_name: String,
    allocs: u64,
}

struct Run {
    pools: Vec<PoolRow>,
    sites: Vec<SiteRow>,
    res: FixtureResult,
    summary: RunSummary,
}

/// `allocwatch record --csv … --pools-csv … -- poolsgc` with `GOGC=gogc`.
fn record(bin: &Path, gogc: &str) -> Run {
    let n = N.to_string();
    let (sites, pools, run) = record_sites_and_pools(bin, &[("ALLOCWATCH_N", &n), ("GOGC", gogc)]);
    Run {
        pools,
        sites,
        res: parse_result(&run.stdout),
        summary: run.summary,
    }
}

fn check(version: &str, variant: Variant, gogc: &str) {
    let what = format!("go{version} {} GOGC={gogc}", variant.name());
    let bin = fixture(&toolchain(version), "poolsgc", variant);
    let run = record(&bin, gogc);
    let (res, summary) = (&run.res, &run.summary);
    assert_eq!(res.n, u64::from(N), "{what}");
    let want = &res.pools[0];

    // The fixture's own story first: misses come after GCs.
    assert_eq!(
        (want.gets, want.puts, want.nil_returns),
        (res.n, res.n, 0),
        "{what}: fixture"
    );
    assert_eq!(res.forced_gcs, 13, "{what}: fixture");
    assert_eq!(
        res.misses_after_forced_gc,
        [0, 1, 0, 1, 0, 1, 0, 1, 0],
        "{what}: one forced GC keeps the object (victim cache), two drop it"
    );
    let forced_misses: u64 = res.misses_after_forced_gc.iter().sum();
    if gogc == "off" {
        assert_eq!(res.gcs, res.forced_gcs, "{what}: GCs with GOGC=off");
        assert_eq!(
            want.misses,
            1 + forced_misses,
            "{what}: the first Get, then one miss per double GC"
        );
    } else {
        assert!(
            res.gcs > res.forced_gcs,
            "{what}: the runtime started no GC of its own ({} GCs)",
            res.gcs
        );
        // At least the first Get and the misses after the double GCs.
        assert!(
            want.misses > forced_misses,
            "{what}: fixture misses {}",
            want.misses
        );
    }

    // allocwatch's counts: per pool…
    let row = run
        .pools
        .iter()
        .find(|r| r.new_func == want.new_func)
        .unwrap_or_else(|| panic!("{what}: no pool with New {}", want.new_func));
    assert_eq!(
        (row.gets, row.misses, row.nil_returns, row.puts),
        (want.gets, want.misses, want.nil_returns, want.puts),
        "{what} ({}): gcPool (gets, misses, nil returns, puts)",
        res.go
    );
    assert_eq!(row.hits, want.gets - want.misses, "{what}: hits");
    if variant == Variant::Default {
        assert_eq!(row.pool, want.pool, "{what}: pool name");
    }
    // …per call site…
    let c = &res.callsites[0];
    assert_eq!(
        summary.caller_counts(
            |p| p.new_func.as_deref() == Some(c.new_func.as_str()),
            &c.func
        ),
        Some([c.gets, c.misses, c.nil_returns, c.puts]),
        "{what}: caller {}\n{summary:#?}",
        c.func
    );
    // …and as allocations of New (and of the garbage maker, for scale).
    for s in &res.sites {
        let allocs: u64 = run
            .sites
            .iter()
            .filter(|r| r.function == s.func && r.line == s.line && r.type_name == s.type_name)
            .map(|r| r.allocs)
            .sum();
        assert_eq!(
            allocs, s.count,
            "{what}: allocations of {} ({}) at line {}",
            s.func, s.type_name, s.line
        );
    }
}

fn pools_gc_for(version: &str) {
    if support::skip_unless_root() {
        return;
    }
    for variant in [Variant::Default, Variant::Stripped] {
        for gogc in ["off", "100"] {
            check(version, variant, gogc);
        }
    }
}

#[test]
fn gc_misses_go1_21() {
    pools_gc_for("1.21.13");
}

#[test]
fn gc_misses_go1_27() {
    pools_gc_for("1.27.3");
}
