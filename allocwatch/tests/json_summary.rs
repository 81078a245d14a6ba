//! `record --json FILE`, against the real kernel: every field of the
//! documented schema is there (and nothing undocumented), its numbers agree
//! with the CSV files of the same run, and its pool counts are the `pools`
//! fixture's exact counts.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};

use serde::Deserialize;
use support::{
    PoolCount, RunSummary, SiteRow, Variant, allocwatch, fixture, parse_result, read_csv,
    read_site_rows, record_json, record_refused, skip_unless_root, toolchain, workspace_root,
};

#[derive(Debug, Deserialize)]
struct PoolsResult {
    go: String,
    n: u64,
    pools: Vec<PoolCount>,
    callsites: Vec<PoolCount>,
}

#[derive(Debug, Deserialize)]
struct PoolRow {
    pool: String,
    gets: u64,
    hits: u64,
    misses: u64,
    nil_returns: u64,
    puts: u64,
    miss_allocs: Option<u64>,
    miss_bytes: Option<u64>,
}

/// Every key of a JSON value, as `a.b.c` paths (array elements under `a[]`).
fn keys(v: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                out.push(p.clone());
                keys(x, &p, out);
            }
        }
        serde_json::Value::Array(a) => {
            for x in a {
                keys(x, &format!("{path}[]"), out);
            }
        }
        _ => {}
    }
}

/// The CSV rows and the summary agree: totals, every site, every pool.
fn check_against_csv(what: &str, s: &RunSummary, sites: &[SiteRow], pools: &[PoolRow]) {
    let (allocs, bytes) = sites
        .iter()
        .fold((0, 0), |(a, b), r| (a + r.allocs, b + r.bytes));
    assert_eq!(
        (s.totals.allocs, s.totals.bytes),
        (allocs, bytes),
        "{what}: totals vs the sites CSV"
    );
    assert_eq!(s.totals.sampled_allocs, 0, "{what}: exact mode");
    // --top is larger than the number of sites: every row is listed.
    assert_eq!(s.top_sites.len(), sites.len(), "{what}: top sites");
    let by_key: HashMap<(&str, u32, &str), &SiteRow> = sites
        .iter()
        .map(|r| ((r.function.as_str(), r.line, r.type_name.as_str()), r))
        .collect();
    for t in &s.top_sites {
        let r = by_key
            .get(&(t.function.as_str(), t.line, t.type_name.as_str()))
            .unwrap_or_else(|| panic!("{what}: {t:?} is not in the CSV"));
        assert_eq!((t.allocs, t.bytes), (r.allocs, r.bytes), "{what}: {t:?}");
        assert!(
            t.file.ends_with(&r.file) || r.file.ends_with(&t.file),
            "{what}: file of {t:?} vs {}",
            r.file
        );
    }
    assert!(
        s.top_sites.windows(2).all(|w| w[0].bytes >= w[1].bytes),
        "{what}: top sites are not sorted by bytes"
    );
    assert_eq!(s.pools.len(), pools.len(), "{what}: pools");
    for p in &s.pools {
        let r = pools
            .iter()
            .find(|r| r.pool == p.name)
            .unwrap_or_else(|| panic!("{what}: pool {} is not in the CSV", p.name));
        assert_eq!(
            (p.gets, p.hits, p.misses, p.nil_returns, p.puts),
            (r.gets, r.hits, r.misses, r.nil_returns, r.puts),
            "{what}: pool {}",
            p.name
        );
        let cost = p.miss_cost.as_ref().map(|c| (c.allocs, c.bytes));
        let csv_cost = r.miss_allocs.zip(r.miss_bytes);
        assert_eq!(cost, csv_cost, "{what}: miss cost of {}", p.name);
    }
}

/// The `pools` fixture's exact counts, per pool and per caller.
fn check_exact_pools(what: &str, s: &RunSummary, res: &PoolsResult) {
    for want in &res.pools {
        let p = s
            .pools
            .iter()
            .find(|p| p.name == want.pool)
            .unwrap_or_else(|| panic!("{what}: no pool {}: {:#?}", want.pool, s.pools));
        assert_eq!(
            (p.gets, p.misses, p.nil_returns, p.puts),
            (want.gets, want.misses, want.nil_returns, want.puts),
            "{what}: {}",
            want.pool
        );
        assert_eq!(p.hits, want.gets - want.misses - want.nil_returns);
        let new_func = (!want.new_func.is_empty()).then(|| want.new_func.clone());
        assert_eq!(p.new_func, new_func, "{what}: New of {}", want.pool);
        #[allow(clippy::cast_precision_loss)]
        let ratio = (want.gets > 0).then(|| p.hits as f64 / want.gets as f64);
        assert_eq!(p.hit_ratio, ratio, "{what}: hit ratio of {}", want.pool);
    }
    for c in &res.callsites {
        assert_eq!(
            s.caller_counts(|p| p.name == c.pool, &c.func),
            Some([c.gets, c.misses, c.nil_returns, c.puts]),
            "{what}: caller {} of {}",
            c.func,
            c.pool
        );
        let caller = s
            .pools
            .iter()
            .flat_map(|p| &p.callers)
            .find(|x| x.function == c.func)
            .expect("caller listed");
        assert!(
            caller.file.ends_with("main.go") && caller.line > 0,
            "{caller:?}"
        );
    }
}

fn check(version: &str) {
    let what = format!("go{version}");
    let bin = fixture(&toolchain(version), "pools", Variant::Default);
    let dir = tempfile::tempdir().expect("tempdir");
    let (sites_csv, pools_csv) = (dir.path().join("sites.csv"), dir.path().join("pools.csv"));
    let run = record_json(
        &[
            "--csv".as_ref(),
            sites_csv.as_os_str(),
            "--pools-csv".as_ref(),
            pools_csv.as_os_str(),
            "--top".as_ref(),
            "100000".as_ref(),
        ],
        &bin,
        &[("ALLOCWATCH_N", "500")],
    );
    let s = &run.summary;
    let res: PoolsResult = parse_result(&run.stdout);
    assert_eq!(res.n, 500);

    assert_eq!(s.schema_version, 1, "{what}");
    assert!(
        s.target.launched && s.target.pid > 0,
        "{what}: {:?}",
        s.target
    );
    assert_eq!(s.target.exe, bin.display().to_string(), "{what}");
    assert_eq!(s.target.go_version, res.go, "{what}");
    assert_eq!(
        (
            s.mode.initial.as_str(),
            s.mode.max_overhead_pct,
            s.mode.switches.len()
        ),
        ("exact", None, 0),
        "{what}: mode"
    );
    assert_eq!(
        (s.stop.reason.as_str(), s.stop.detail.as_deref()),
        ("target_exited", Some("exited with status 0")),
        "{what}: stop"
    );
    assert!(s.duration_s > 0.0, "{what}: duration {}", s.duration_s);
    assert_eq!(
        (s.events.lost, s.events.lost_stacks, s.events.uncounted),
        (0, 0, 0),
        "{what}: {:?}",
        s.events
    );
    assert_eq!(s.events.agg_full, 0, "{what}");
    // The pool probes run only in the target (a per-process uprobe).
    assert_eq!(s.events.other_process, 0, "{what}");
    // Every allocation and every pool operation is at least one probe hit.
    let pool_ops: u64 = s.pools.iter().map(|p| p.gets + p.puts).sum();
    assert!(
        s.probes.hits >= s.totals.allocs + pool_ops,
        "{what}: {} hits for {} allocations and {pool_ops} pool operations",
        s.probes.hits,
        s.totals.allocs
    );
    #[allow(clippy::cast_precision_loss)]
    let cost_ms = s.probes.hits as f64 * s.probes.cost_per_hit_ns / 1e6;
    assert!(
        (s.probes.estimated_cost_ms - cost_ms).abs() < 1e-6,
        "{what}"
    );
    assert_eq!(
        s.files,
        [
            sites_csv.display().to_string(),
            pools_csv.display().to_string()
        ],
        "{what}: files"
    );

    let sites: Vec<SiteRow> = read_site_rows(&sites_csv);
    let pools: Vec<PoolRow> = read_csv(&pools_csv);
    check_against_csv(&what, s, &sites, &pools);
    check_exact_pools(&what, s, &res);
}

#[test]
fn json_summary_agrees_with_csv_and_fixture_go1_21() {
    if skip_unless_root() {
        return;
    }
    check("1.21.13");
}

#[test]
fn json_summary_agrees_with_csv_and_fixture_go1_27() {
    if skip_unless_root() {
        return;
    }
    check("1.27.3");
}

/// Every field the summary writes is documented in docs/json-summary.md
/// (as `` `path` `` in its table), and every documented field is written
/// (those of mode switches only with `--max-overhead`).
#[test]
fn json_summary_fields_are_documented() {
    if skip_unless_root() {
        return;
    }
    let bin = fixture(&toolchain("1.27.3"), "pools", Variant::Default);
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("s.json");
    let status = Command::new(allocwatch())
        .args(["record", "--json"])
        .arg(&json)
        .arg("--")
        .arg(&bin)
        .env("ALLOCWATCH_N", "100")
        .env("GOMAXPROCS", "1")
        .env("GOGC", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run allocwatch");
    assert!(status.success(), "{status}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).expect("JSON");
    let mut written = Vec::new();
    keys(&v, "", &mut written);
    written.sort();
    written.dedup();
    let doc = std::fs::read_to_string(workspace_root().join("docs/json-summary.md"))
        .expect("docs/json-summary.md");
    let documented: Vec<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(k, _)| k.to_string()))
        .collect();
    let missing: Vec<&String> = written.iter().filter(|k| !documented.contains(k)).collect();
    assert!(missing.is_empty(), "written, not documented: {missing:?}");
    // A run without --max-overhead makes no switch: their fields cannot show.
    let absent: Vec<&String> = documented
        .iter()
        .filter(|k| !written.contains(k) && !k.starts_with("mode.switches[]."))
        .collect();
    assert!(absent.is_empty(), "documented, not written: {absent:?}");
}

/// `--json` goes through the output checks of the other files: the same
/// path as another output, or a directory that does not exist, is a usage
/// error (exit 2) before anything is attached, and nothing is left behind.
#[test]
fn json_summary_path_is_checked_first() {
    if skip_unless_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let same = dir.path().join("out");
    let missing = dir.path().join("no/such/dir/s.json");
    let cases: [(&[&Path], &str); 2] = [
        (
            &[Path::new("--csv"), &same, Path::new("--json"), &same],
            "--csv and --json both write",
        ),
        (&[Path::new("--json"), &missing], "cannot write --json"),
    ];
    for (args, want) in cases {
        let mut args = args.to_vec();
        args.extend([Path::new("--"), Path::new("/bin/true")]);
        record_refused(&args, want);
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "files left behind"
    );
}
