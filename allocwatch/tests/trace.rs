//! Exact allocation tracing against the real kernel and real Go programs.
//!
//! Each fixture in `testdata/fixtures/allocs` allocates a known number of
//! objects of known types from known functions and reports them; allocwatch's
//! CSV must show exactly those counts at exactly those sites, for every Go
//! version 1.21–1.27 and every build variant.

mod support;

use support::{SiteRow, allocwatch, parse_result, read_site_rows, skip_unless_root};

use std::path::Path;
use std::process::{Command, Stdio};

use serde::Deserialize;
use support::{Variant, fixture, have_gcc, toolchain};

#[derive(Debug, Deserialize)]
struct Site {
    func: String,
    #[serde(rename = "type")]
    type_name: String,
    count: i64,
    bytes: i64,
    line: u32,
}

#[derive(Debug, Deserialize)]
struct FixtureResult {
    go: String,
    sites: Vec<Site>,
    #[serde(default)]
    metrics: std::collections::HashMap<String, u64>,
}

/// `allocwatch record --csv F -- fixture`, returning the rows and the fixture's report.
fn record_launch(bin: &Path, n: u32) -> (Vec<SiteRow>, FixtureResult, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv_path = dir.path().join("sites.csv");
    let out = Command::new(allocwatch())
        .arg("record")
        .arg("--csv")
        .arg(&csv_path)
        .arg("--")
        .arg(bin)
        .env("ALLOCWATCH_N", n.to_string())
        .env("GOMAXPROCS", "1")
        .env("GOGC", "off")
        .stdin(Stdio::null())
        .output()
        .expect("run allocwatch");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "allocwatch failed ({}):\n{stderr}\n{stdout}",
        out.status
    );
    (read_site_rows(&csv_path), parse_result(&stdout), stderr)
}

/// Checks every site the fixture reports against the CSV rows.
fn check_sites(what: &str, rows: &[SiteRow], res: &FixtureResult, stderr: &str) {
    let mut failures = Vec::new();
    for s in &res.sites {
        let matching: Vec<&SiteRow> = rows
            .iter()
            .filter(|r| {
                r.function == s.func
                    && r.line == s.line
                    && (s.type_name.is_empty() || r.type_name == s.type_name)
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
    assert!(
        failures.is_empty(),
        "{what} ({}):\n  {}\nallocwatch stderr:\n{stderr}",
        res.go,
        failures.join("\n  ")
    );
    assert!(
        stderr.contains("events lost: 0"),
        "{what}: events were lost:\n{stderr}"
    );
    check_metrics(what, rows, res);
}

/// The fixture's `runtime/metrics` over its workload window count every
/// allocation call (`allocs:objects` counts tiny blocks, `tiny/allocs:objects`
/// the tiny allocations combined into them). allocwatch's counts at the
/// workload's own sites must agree. The window also holds a few allocations
/// of the runtime itself (new Ms started during the fixture's forced GCs,
/// timers: 4–13 measured), which allocwatch attributes to runtime frames; hence
/// the tolerance: the runtime's count may exceed the sites' by at most 64, never
/// fall short.
fn check_metrics(what: &str, rows: &[SiteRow], res: &FixtureResult) {
    let m = |k: &str| {
        res.metrics
            .get(k)
            .copied()
            .unwrap_or_else(|| panic!("{what}: metric {k} missing"))
    };
    let runtime_calls = m("/gc/heap/allocs:objects") + m("/gc/heap/tiny/allocs:objects");
    let site_funcs: std::collections::HashSet<&str> =
        res.sites.iter().map(|s| s.func.as_str()).collect();
    let traced: u64 = rows
        .iter()
        .filter(|r| site_funcs.contains(r.function.as_str()))
        .map(|r| r.allocs)
        .sum();
    let total: u64 = rows.iter().map(|r| r.allocs).sum();
    assert!(
        total >= traced && runtime_calls >= traced,
        "{what}: runtime/metrics saw {runtime_calls} allocations in the workload, allocwatch {traced} at its sites"
    );
    assert!(
        runtime_calls - traced <= 64,
        "{what}: runtime/metrics saw {runtime_calls} allocations in the workload, allocwatch only {traced} at its sites"
    );
}

fn exact_for(version: &str) {
    if skip_unless_root() {
        return;
    }
    let tc = toolchain(version);
    let mut variants = Variant::ALL_PORTABLE.to_vec();
    if have_gcc() {
        variants.push(Variant::External);
    }
    if tc.minor() == 26 {
        variants.push(Variant::SizeSpecialized);
    }
    for v in variants {
        let bin = fixture(&tc, "allocs", v);
        let (rows, res, stderr) = record_launch(&bin, 1000);
        check_sites(&format!("go{version} {}", v.name()), &rows, &res, &stderr);
    }
}

#[test]
fn exact_counts_go1_21() {
    exact_for("1.21.13");
}
#[test]
fn exact_counts_go1_22() {
    exact_for("1.22.10");
}
#[test]
fn exact_counts_go1_23() {
    exact_for("1.23.9");
}
#[test]
fn exact_counts_go1_24() {
    exact_for("1.24.11");
}
#[test]
fn exact_counts_go1_25() {
    exact_for("1.25.5");
}
#[test]
fn exact_counts_go1_26() {
    exact_for("1.26.6");
}
#[test]
fn exact_counts_go1_27() {
    exact_for("1.27.3");
}
