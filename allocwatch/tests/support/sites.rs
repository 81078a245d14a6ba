//! The sites CSV (`record --csv`) checked against the counts a fixture
//! reports on its `result` line.

use super::summary::RunSummary;
use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::Deserialize;

/// One row of the sites CSV (`record --csv`).
#[derive(Debug, Deserialize)]
pub struct SiteRow {
    pub function: String,
    pub file: String,
    pub line: u32,
    #[serde(rename = "type")]
    pub type_name: String,
    pub allocs: u64,
    pub bytes: u64,
}

/// Every row of a sites CSV.
pub fn read_site_rows(path: &Path) -> Vec<SiteRow> {
    super::read_csv(path)
}

/// One allocation site a fixture counted: `count` allocations of
/// `bytes` bytes (−1: not known exactly) at `func`:`line` (0: any line).
#[derive(Debug, Deserialize)]
pub struct Site {
    pub func: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub count: i64,
    pub bytes: i64,
    pub line: u32,
}

/// The `result` line of the fixtures that report sites (`allocs`,
/// `flood`, `execer`, …); fields a fixture does not print are empty.
#[derive(Debug, Deserialize)]
pub struct FixtureResult {
    pub go: String,
    #[serde(default)]
    pub n: u64,
    #[serde(default)]
    pub sites: Vec<Site>,
    /// `runtime/metrics` over the workload window.
    #[serde(default)]
    pub metrics: HashMap<String, u64>,
    #[serde(default)]
    pub stopped_by: String,
}

/// Every site the fixture reports has exactly its count and bytes in the
/// CSV (summed over the rows of its function, line and type; a count of −1
/// asks for at least one allocation), and the `--json` summary says no event was lost.
pub fn check_sites(what: &str, rows: &[SiteRow], res: &FixtureResult, summary: &RunSummary) {
    check_sites_where(what, rows, res, summary, |_| true);
}

/// [`check_sites`], where a site whose type the fixture leaves open counts
/// the rows whose type passes `open_type`.
pub fn check_sites_where(
    what: &str,
    rows: &[SiteRow],
    res: &FixtureResult,
    summary: &RunSummary,
    open_type: impl Fn(&str) -> bool,
) {
    let failures = site_mismatches(rows, res, open_type);
    assert!(
        failures.is_empty(),
        "{what} ({}):\n  {}\nallocwatch summary:\n{summary:#?}",
        res.go,
        failures.join("\n  ")
    );
    assert!(
        summary.events.lost == 0,
        "{what}: events were lost:\n{summary:#?}"
    );
}

/// Every site the fixture reports has exactly its count and bytes in
/// `rows`, whatever they were read from (a CSV, a snapshot, `/metrics`).
pub fn assert_sites(what: &str, rows: &[SiteRow], res: &FixtureResult) {
    let failures = site_mismatches(rows, res, |_| true);
    assert!(
        failures.is_empty(),
        "{what} ({}):\n  {}",
        res.go,
        failures.join("\n  ")
    );
}

/// The fixture's sites that `rows` do not count exactly (summed over the
/// rows of the site's function, line and type; a count of −1 asks for at
/// least one allocation), one line each; a site whose type the fixture
/// leaves open counts the rows whose type passes `open_type`.
pub fn site_mismatches(
    rows: &[SiteRow],
    res: &FixtureResult,
    open_type: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut failures = Vec::new();
    for s in &res.sites {
        let matching: Vec<&SiteRow> = rows
            .iter()
            .filter(|r| {
                r.function == s.func
                    && (s.line == 0 || r.line == s.line)
                    && if s.type_name.is_empty() {
                        open_type(&r.type_name)
                    } else {
                        r.type_name == s.type_name
                    }
            })
            .collect();
        let allocs: u64 = matching.iter().map(|r| r.allocs).sum();
        let bytes: u64 = matching.iter().map(|r| r.bytes).sum();
        let ok = if s.count < 0 {
            allocs > 0
        } else {
            allocs == s.count as u64 && (s.bytes < 0 || bytes == s.bytes as u64)
        };
        if !ok {
            let near: Vec<String> = rows
                .iter()
                .filter(|r| r.function == s.func)
                .take(10)
                .map(|r| {
                    format!(
                        "{}:{} {} allocs={} bytes={}",
                        r.file, r.line, r.type_name, r.allocs, r.bytes
                    )
                })
                .collect();
            failures.push(format!(
                "{} line {} type {:?}: expected {} allocs / {} bytes, got {allocs} / {bytes}; rows of that function: {near:?}",
                s.func, s.line, s.type_name, s.count, s.bytes
            ));
        }
    }
    failures
}

/// The fixture's `runtime/metrics` over its workload window count every
/// allocation call (`allocs:objects` counts tiny blocks, `tiny/allocs:objects`
/// the tiny allocations combined into them). allocwatch's counts at the
/// workload's own sites must agree. The window also holds a few allocations
/// of the runtime itself (new Ms started during the fixture's forced GCs,
/// timers: 4–13 measured), which allocwatch attributes to runtime frames; hence
/// the tolerance: the runtime's count may exceed the sites' by at most 64, never
/// fall short.
pub fn check_metrics(what: &str, rows: &[SiteRow], res: &FixtureResult) {
    let m = |k: &str| {
        res.metrics
            .get(k)
            .copied()
            .unwrap_or_else(|| panic!("{what}: metric {k} missing"))
    };
    let runtime_calls = m("/gc/heap/allocs:objects") + m("/gc/heap/tiny/allocs:objects");
    let site_funcs: HashSet<&str> = res.sites.iter().map(|s| s.func.as_str()).collect();
    let traced: u64 = rows
        .iter()
        .filter(|r| site_funcs.contains(r.function.as_str()))
        .map(|r| r.allocs)
        .sum();
    assert!(
        runtime_calls >= traced,
        "{what}: runtime/metrics saw {runtime_calls} allocations in the workload, allocwatch {traced} at its sites"
    );
    assert!(
        runtime_calls - traced <= 64,
        "{what}: runtime/metrics saw {runtime_calls} allocations in the workload, allocwatch only {traced} at its sites"
    );
}

/// [`check_sites`] and [`check_metrics`]: the fixture's exact counts, and
/// the runtime's own count over the same window.
pub fn check_exact(what: &str, rows: &[SiteRow], res: &FixtureResult, summary: &RunSummary) {
    check_sites(what, rows, res, summary);
    check_metrics(what, rows, res);
}
