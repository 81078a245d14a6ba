//! Deterministic synthetic data for the dashboard's tests and render benchmark.
//!
//! Snapshots are cumulative, like the session's: `at(t)` grows linearly with
//! `t`, so rates between two of them are exact and snapshots never change
//! from run to run.

use std::sync::Arc;
use std::time::Duration;

use super::feed::TargetInfo;
use crate::stats::{
    Counters, Frame, PoolCallerStats, PoolSnapshot, PoolStats, SiteKey, SiteStats, SizeHist,
    Snapshot, pool_with_new, size_bucket,
};

/// The target shown in test headers.
#[must_use]
pub fn info() -> TargetInfo {
    TargetInfo {
        pid: 4242,
        command: "/srv/shop/bin/shop-api -listen :8080".to_owned(),
        go_version: "go1.24.2".to_owned(),
        stripped: false,
        pie: true,
        mode: Some(crate::plan::Mode::Exact),
        mode_note: String::new(),
        mode_column: false,
        cost_per_hit_ns: 250.0,
        log_path: "/tmp/allocwatch-4242.log".to_owned(),
        warnings: Vec::new(),
    }
}

fn frame(function: &str, file: &str, line: u32) -> Frame {
    Frame {
        function: Arc::from(function),
        file: Arc::from(file),
        line,
    }
}

#[expect(clippy::too_many_arguments, reason = "one row of a table of test data")]
fn site(
    function: &str,
    file: &str,
    line: u32,
    type_name: &str,
    per_s: u64,
    size: u64,
    t: u64,
    pool: Option<&str>,
) -> SiteStats {
    let allocs = per_s * t;
    let mut size_hist = SizeHist::default();
    // Three quarters at `size`, a quarter at four times `size`.
    let big = allocs / 4;
    size_hist.add(size_bucket(size), allocs - big);
    size_hist.add(size_bucket(size * 4), big);
    SiteStats {
        key: SiteKey {
            function: Arc::from(function),
            file: Arc::from(file),
            line,
            type_name: Arc::from(type_name),
        },
        allocs,
        bytes: (allocs - big) * size + big * size * 4,
        size_hist,
        stack: Arc::from(vec![
            frame(function, file, line),
            frame("main.(*Server).ServeHTTP", "/srv/shop/server.go", 61),
            frame(
                "net/http.serverHandler.ServeHTTP",
                "/usr/local/go/src/net/http/server.go",
                3301,
            ),
            frame(
                "net/http.(*conn).serve",
                "/usr/local/go/src/net/http/server.go",
                2102,
            ),
            frame(
                "runtime.goexit",
                "/usr/local/go/src/runtime/asm_amd64.s",
                1700,
            ),
        ]),
        pool_new_func: pool.map(Arc::from),
        sampled_allocs: 0,
    }
}

fn pool(
    name: &str,
    new_func: Option<&str>,
    per_s: [u64; 4],
    t: u64,
    callers: &[(&str, &str, u32, u64)],
) -> PoolSnapshot {
    let [gets, misses, nil_returns, puts] = per_s.map(|n| n * t);
    let stats = PoolStats {
        gets,
        misses,
        nil_returns,
        puts,
        ..PoolStats::default()
    };
    let total_weight: u64 = callers.iter().map(|c| c.3).sum::<u64>().max(1);
    let callers = callers
        .iter()
        .map(|&(f, file, line, w)| PoolCallerStats {
            caller: frame(f, file, line),
            stats: PoolStats {
                gets: gets * w / total_weight,
                misses: misses * w / total_weight,
                nil_returns: nil_returns * w / total_weight,
                puts: puts * w / total_weight,
                ..PoolStats::default()
            },
        })
        .collect();
    PoolSnapshot {
        pool: name.bytes().fold(0xc000_0000u64, |h, b| {
            h.wrapping_mul(31).wrapping_add(u64::from(b))
        }),
        name: Arc::from(name),
        new_func: new_func.map(Arc::from),
        stats,
        callers,
    }
}

/// A few realistic sites and pools, `t` seconds after tracing started.
#[must_use]
pub fn at(t: u64) -> Snapshot {
    let sites = sites_at(t);
    let mut pools = pools_at(t);
    // What the kernel charges a pool: the allocations of its New.
    for s in &sites {
        let pool = s
            .pool_new_func
            .as_deref()
            .and_then(|f| pool_with_new(&pools, f));
        if let Some(i) = pool {
            pools[i].stats.charge_miss(s.allocs, s.bytes);
        }
    }
    let counters = Counters {
        hits: 6000 * t,
        nested: 100 * t,
        ..Counters::default()
    };
    snapshot(t, sites, pools, counters)
}

/// The snapshot of `sites` and `pools` at `t` seconds, with their totals.
fn snapshot(t: u64, sites: Vec<SiteStats>, pools: Vec<PoolSnapshot>, c: Counters) -> Snapshot {
    Snapshot {
        elapsed: Duration::from_secs(t),
        total_allocs: sites.iter().map(|s| s.allocs).sum(),
        total_bytes: sites.iter().map(|s| s.bytes).sum(),
        sites,
        pools,
        counters: c,
    }
}

fn sites_at(t: u64) -> Vec<SiteStats> {
    vec![
        site(
            "main.(*Server).handleOrder",
            "/srv/shop/orders.go",
            88,
            "[]uint8",
            1200,
            512,
            t,
            None,
        ),
        site(
            "main.(*Server).handleOrder",
            "/srv/shop/orders.go",
            88,
            "main.Order",
            300,
            160,
            t,
            None,
        ),
        site(
            "encoding/json.(*decodeState).object",
            "/usr/local/go/src/encoding/json/decode.go",
            745,
            "map[string]interface {}",
            800,
            48,
            t,
            None,
        ),
        site(
            "main.newBuffer",
            "/srv/shop/pool.go",
            14,
            "*bytes.Buffer",
            40,
            64,
            t,
            Some("main.newBuffer"),
        ),
        site(
            "strings.(*Builder).grow",
            "/usr/local/go/src/strings/builder.go",
            75,
            "[]uint8",
            2500,
            24,
            t,
            None,
        ),
        site(
            "github.com/acme/shop/internal/cart.(*Cart).AddItem",
            "/srv/shop/internal/cart/cart.go",
            131,
            "*github.com/acme/shop/internal/cart.Item",
            90,
            96,
            t,
            None,
        ),
    ]
}

fn pools_at(t: u64) -> Vec<PoolSnapshot> {
    vec![
        pool(
            "main.bufPool",
            Some("main.newBuffer"),
            [1000, 40, 0, 990],
            t,
            &[
                ("main.(*Server).handleOrder", "/srv/shop/orders.go", 70, 3),
                ("main.writeJSON", "/srv/shop/json.go", 22, 1),
            ],
        ),
        pool(
            "net/http.bufioReaderPool",
            None,
            [200, 0, 0, 200],
            t,
            &[(
                "net/http.newBufioReader",
                "/usr/local/go/src/net/http/server.go",
                829,
                1,
            )],
        ),
        pool(
            "main.scratchPool",
            Some("main.glob..func1"),
            [50, 35, 0, 20],
            t,
            &[("main.render", "/srv/shop/render.go", 40, 1)],
        ),
    ]
}

/// `n` generated sites (for the render benchmark), `t` seconds in.
#[must_use]
pub fn many(n: usize, t: u64) -> Snapshot {
    let mut sites = Vec::with_capacity(n);
    for i in 0..n {
        let u = i as u64;
        let function = format!(
            "example.com/svc/pkg{}.(*Type{}).Method{}",
            i % 37,
            i % 101,
            i
        );
        let file = format!("/src/example.com/svc/pkg{}/file{}.go", i % 37, i % 13);
        let line = u32::try_from(i % 2000).unwrap_or(0) + 1;
        let type_name = [
            "[]uint8",
            "*pkg.Item",
            "map[string]int",
            "string",
            "[]*pkg.Node",
        ][i % 5];
        let per_s = 1 + (u.wrapping_mul(2_654_435_761) % 5000);
        sites.push(site(
            &function,
            &file,
            line,
            type_name,
            per_s,
            8 << (i % 8),
            t,
            None,
        ));
    }
    let counters = Counters {
        hits: sites.iter().map(|s| s.allocs).sum(),
        ..Counters::default()
    };
    snapshot(t, sites, at(t).pools, counters)
}
