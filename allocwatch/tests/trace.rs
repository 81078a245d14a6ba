//! Exact allocation tracing against the real kernel and real Go programs.
//!
//! Each fixture in `testdata/fixtures/allocs` allocates a known number of
//! objects of known types from known functions and reports them; allocwatch's
//! CSV must show exactly those counts at exactly those sites, for every Go
//! version 1.21–1.27 and every build variant.

mod support;

use support::{
    FixtureResult, RunSummary, SiteRow, check_exact, parse_result, read_site_rows, record_json,
    skip_unless_root,
};

use std::path::Path;

use support::{Variant, fixture, have_gcc, toolchain};

/// `allocwatch record --csv F --json J -- fixture`, returning the rows, the
/// fixture's report and the run's summary.
fn record_launch(bin: &Path, n: u32) -> (Vec<SiteRow>, FixtureResult, RunSummary) {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv_path = dir.path().join("sites.csv");
    let n = n.to_string();
    let run = record_json(
        &["--csv".as_ref(), csv_path.as_os_str()],
        bin,
        &[("ALLOCWATCH_N", &n)],
    );
    (
        read_site_rows(&csv_path),
        parse_result(&run.stdout),
        run.summary,
    )
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
        let (rows, res, summary) = record_launch(&bin, 1000);
        check_exact(&format!("go{version} {}", v.name()), &rows, &res, &summary);
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
