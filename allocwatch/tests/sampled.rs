//! Sampled mode (`--mode sampled`): the runtime's own memory-profile samples,
//! scaled as pprof scales them, against the real kernel.

mod support;

use support::allocwatch;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};

use support::{Variant, fixture, is_root, toolchain};

#[derive(Debug, serde::Deserialize)]
struct Row {
    function: String,
    #[serde(rename = "type")]
    type_name: String,
    bytes: u64,
}

/// Runs `record --mode MODE --csv F -- bin` and returns bytes per function.
fn bytes_by_function(
    bin: &Path,
    mode: &str,
    secs: &str,
) -> (HashMap<String, u64>, Vec<Row>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv_path = dir.path().join("sites.csv");
    let out = Command::new(allocwatch())
        .args(["record", "--mode", mode, "--csv"])
        .arg(&csv_path)
        .arg("--")
        .arg(bin)
        .env("ALLOCWATCH_SECONDS", secs)
        .env("GOMAXPROCS", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run allocwatch");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "allocwatch --mode {mode} failed:\n{stderr}"
    );
    let mut r = csv::Reader::from_path(&csv_path).expect("csv");
    let rows: Vec<Row> = r.deserialize().map(|x| x.expect("row")).collect();
    let mut by = HashMap::new();
    for row in &rows {
        if row.function.starts_with("main.share") {
            *by.entry(row.function.clone()).or_insert(0) += row.bytes;
        }
    }
    (by, rows, stderr)
}

fn shares(by: &HashMap<String, u64>) -> HashMap<String, f64> {
    let total: u64 = by.values().sum();
    #[allow(clippy::cast_precision_loss)]
    by.iter()
        .map(|(k, v)| (k.clone(), 100.0 * *v as f64 / total.max(1) as f64))
        .collect()
}

/// Byte shares of ten sites (1 % to 40 %) in sampled mode are within ±3
/// percentage points of exact mode's.
#[test]
fn sampled_shares_match_exact() {
    if !is_root() {
        eprintln!("skipped: needs root to load eBPF programs");
        return;
    }
    for version in ["1.21.13", "1.27.3"] {
        let bin = fixture(&toolchain(version), "shares", Variant::Default);
        let (exact, _, _) = bytes_by_function(&bin, "exact", "6");
        let (sampled, rows, stderr) = bytes_by_function(&bin, "sampled", "6");
        assert!(
            stderr.contains("sampled mode"),
            "the summary names the mode:\n{stderr}"
        );
        assert!(
            stderr.contains("estimates"),
            "the summary says the numbers are estimates:\n{stderr}"
        );
        assert_eq!(
            exact.len(),
            10,
            "go{version}: exact mode sees the ten sites: {exact:?}"
        );
        assert_eq!(
            sampled.len(),
            10,
            "go{version}: sampled mode sees the ten sites: {sampled:?}\n{stderr}"
        );
        let (e, s) = (shares(&exact), shares(&sampled));
        for (f, es) in &e {
            let ss = s[f];
            assert!(
                (es - ss).abs() <= 3.0,
                "go{version}: {f}: exact {es:.2}% vs sampled {ss:.2}%"
            );
        }
        // A sample knows no type: the column is empty, never a guess.
        for r in rows.iter().filter(|r| r.function.starts_with("main.share")) {
            assert!(
                r.type_name.is_empty() || r.type_name == "[]uint8",
                "unexpected type {:?}",
                r.type_name
            );
        }
    }
}

/// A binary that never references runtime.MemProfile has memory profiling
/// disabled: sampled mode says so and how to get samples, and does not pretend.
#[test]
fn sampled_mode_refuses_when_profiling_is_disabled() {
    if !is_root() {
        eprintln!("skipped: needs root to load eBPF programs");
        return;
    }
    let bin = fixture(&toolchain("1.27.3"), "spin", Variant::Stripped);
    let out = Command::new(allocwatch())
        .args(["record", "--mode", "sampled", "--"])
        .arg(&bin)
        .env("ALLOCWATCH_SECONDS", "5")
        .stdin(Stdio::null())
        .output()
        .expect("run allocwatch");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("memory profiling is disabled"), "{stderr}");
    assert!(stderr.contains("--mode exact"), "{stderr}");
}
