//! Tracing must not change what a program does, even one that stresses the
//! runtime where uprobes are delicate.
//!
//! The `stackgrow` fixture grows goroutine stacks to ~256 KiB (copied many
//! times while allocating: `morestack` re-enters the probed functions),
//! shrinks them again through GCs, runs hundreds of goroutines in waves,
//! panics and recovers (allocating inside a deferred call while panicking)
//! and calls `runtime.Goexit`. For every Go version 1.21–1.27 its output
//! before `result` and its exit status must be identical with and without
//! `allocwatch record -- prog`, and allocwatch must count exactly the
//! allocations the fixture reports (nothing lost, nothing counted twice).

mod support;

use support::allocwatch;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use support::{
    FixtureResult, RunSummary, Variant, check_sites_where, fixture, read_site_rows, read_summary,
    toolchain,
};

/// The fixture's environment: N = 100000 (2000 goroutines, ~430k
/// allocations), both CPUs and the GC on, so that stacks are also shrunk
/// and scanned concurrently with the traced goroutines.
fn env(cmd: &mut Command) -> &mut Command {
    cmd.env("ALLOCWATCH_N", "100000")
        .env("GOMAXPROCS", "2")
        .env_remove("GOGC")
        .env_remove("ALLOCWATCH_WAIT")
        .stdin(Stdio::null())
}

/// Output lines before `result`, and the `result` object.
fn split_output(what: &str, out: &Output) -> (Vec<String>, FixtureResult) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut before = Vec::new();
    for line in stdout.lines() {
        if let Some(json) = line.strip_prefix("result ") {
            let res = serde_json::from_str(json)
                .unwrap_or_else(|e| panic!("{what}: bad result JSON ({e}): {json}"));
            return (before, res);
        }
        before.push(line.to_string());
    }
    panic!(
        "{what}: no result line; stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A type of the runtime's own (`runtime.g`, `[]*runtime.g`, …), or
/// `[]uintptr`: the two profiling stack buffers of a new thread's `m`
/// (`mProfStackInit`, Go ≥ 1.23, 1,080 bytes each), made when a `go`
/// statement wakes a new thread.
fn runtime_type(t: &str) -> bool {
    t == "[]uintptr"
        || t.trim_start_matches(['[', ']', '*'])
            .starts_with("runtime.")
}

/// The fixture's sites against the CSV. A site whose type the fixture leaves
/// open (`main.spawn`, the closure of `go worker(st, wg)`) excludes rows of
/// runtime types: the `go` statement also makes the runtime allocate new
/// `g`s (`newproc1` → `malg`, on the system stack), a varying number of them
/// (dead `g`s are reused), and now and then a new thread (`runtime.mPadded`
/// and its `[]uintptr` stack buffers), which allocwatch rightly attributes
/// to that line but the fixture does not count.
fn check_counts(what: &str, csv: &Path, res: &FixtureResult, summary: &RunSummary) {
    let rows = read_site_rows(csv);
    check_sites_where(what, &rows, res, summary, |t| !runtime_type(t));
}

fn soak(version: &str) {
    if support::skip_unless_root() {
        return;
    }
    let what = format!("stackgrow go{version}");
    let bin = fixture(&toolchain(version), "stackgrow", Variant::Default);

    let t0 = Instant::now();
    let plain = env(&mut Command::new(&bin)).output().expect("run fixture");
    let t_plain = t0.elapsed();
    let (plain_lines, plain_res) = split_output(&what, &plain);
    assert!(
        plain.status.success(),
        "{what}: failed untraced: {}",
        plain.status
    );
    assert!(
        plain_lines
            .iter()
            .any(|l| l.starts_with("stackgrow goroutines=")),
        "{what}: unexpected output {plain_lines:?}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("sites.csv");
    let json = dir.path().join("summary.json");
    let t0 = Instant::now();
    let traced = env(Command::new(allocwatch())
        .args(["record", "--top", "0", "--csv"])
        .arg(&csv)
        .arg("--json")
        .arg(&json)
        .arg("--")
        .arg(&bin))
    .output()
    .expect("run allocwatch");
    let t_traced = t0.elapsed();
    let stderr = String::from_utf8_lossy(&traced.stderr).into_owned();
    assert!(
        traced.status.success(),
        "{what}: allocwatch failed ({}):\n{stderr}",
        traced.status
    );
    let (traced_lines, traced_res) = split_output(&what, &traced);
    assert_eq!(
        plain_lines, traced_lines,
        "{what}: output differs under tracing"
    );
    let summary = read_summary(&json);
    assert_eq!(
        (summary.stop.reason.as_str(), summary.stop.detail.as_deref()),
        ("target_exited", Some("exited with status 0")),
        "{what}: the traced program did not exit 0:\n{stderr}"
    );
    // The reported counts are deterministic: the same traced or not.
    let counts = |r: &FixtureResult| {
        r.sites
            .iter()
            .map(|s| (s.func.clone(), s.line, s.count, s.bytes))
            .collect::<Vec<_>>()
    };
    assert_eq!(counts(&plain_res), counts(&traced_res), "{what}");
    check_counts(&what, &csv, &traced_res, &summary);
    eprintln!("{what}: untraced {t_plain:?}, traced (attach + run + detach) {t_traced:?}");
}

#[test]
fn stackgrow_go1_21() {
    soak("1.21.13");
}
#[test]
fn stackgrow_go1_22() {
    soak("1.22.10");
}
#[test]
fn stackgrow_go1_23() {
    soak("1.23.9");
}
#[test]
fn stackgrow_go1_24() {
    soak("1.24.11");
}
#[test]
fn stackgrow_go1_25() {
    soak("1.25.5");
}
#[test]
fn stackgrow_go1_26() {
    soak("1.26.6");
}
#[test]
fn stackgrow_go1_27() {
    soak("1.27.3");
}
