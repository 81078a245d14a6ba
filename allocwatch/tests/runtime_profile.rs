//! allocwatch against the Go runtime's own allocation profile, on code
//! nobody here wrote (maps that grow, map literals, text/template with a
//! FuncMap, generics, range-over-func iterators of the standard library).
//!
//! The fixtures write their own `allocs` profile before and after their
//! workload (two forced GCs before each, so that the window is complete);
//! the difference of the two is the runtime's account of the workload. The
//! runtime's profile names frames by `return address − 1` through the
//! inline tree; the site of a sample is its first frame outside the
//! runtime's allocation machinery, the same rule allocwatch documents
//! (written out again here, not taken from allocwatch).

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};

use support::profile::{Totals, by_site, check_exact_rate_1, check_sampled, profile_diff};
use support::{Variant, allocwatch, fixture, read_site_rows, skip_unless_root, toolchain};

/// Runs `allocwatch record ARGS --csv F -- bin` with the fixture writing
/// its profiles into a temporary directory; returns allocwatch's totals and
/// the runtime's account of the window, by function (or `function:line`),
/// and the CSV's rows.
fn run(
    bin: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    by_line: bool,
) -> (
    HashMap<String, Totals>,
    HashMap<String, Totals>,
    Vec<support::SiteRow>,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("sites.csv");
    let out = Command::new(allocwatch())
        .arg("record")
        .args(args)
        .arg("--csv")
        .arg(&csv)
        .arg("--")
        .arg(bin)
        .env("ALLOCWATCH_PROFILE_DIR", dir.path())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run allocwatch");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "allocwatch {args:?} failed:\n{stderr}"
    );
    let rows = read_site_rows(&csv);
    (
        by_site(&rows, by_line),
        profile_diff(dir.path(), by_line),
        rows,
    )
}

/// Sampled mode rides the runtime's own samples: for every function with
/// ≥ 8 MiB in the runtime's profile of the window, allocwatch's estimate is
/// within 25 % in bytes — maps that grow (whose runtime frames are deeper
/// than a kernel key) included. And a site is one row: a sample's type is
/// empty, never `<untyped>` beside it.
#[test]
fn sampled_mode_agrees_with_the_runtime_profile() {
    if skip_unless_root() {
        return;
    }
    for version in ["1.21.13", "1.27.3"] {
        let bin = fixture(&toolchain(version), "profcmp", Variant::Default);
        let (mine, runtime, rows) = run(
            &bin,
            &["--mode", "sampled"],
            &[("ALLOCWATCH_ROUNDS", "2")],
            false,
        );
        check_sampled(&format!("go{version}"), &mine, &runtime, &rows);
    }
}

/// Exact mode against the runtime at `GODEBUG=memprofilerate=1` (every
/// allocation recorded), on loops over `slices.Backward`, `slices.All`,
/// `maps.Keys` and an iterator of the fixture's own, whose loop bodies the
/// compiler inlines into the iterators inlined into the functions: every
/// site (function and line) counts the same number of objects. Tiny allocations (pointer-
/// free, < 16 B) are the documented exception: the runtime's profiler never
/// sees one that fits the current tiny block, allocwatch counts each.
/// What a thread started during a loop allocates is left out of
/// allocwatch's side (`support::profile::thread_start_type`): the runtime's profile does
/// not count it at the user's line.
#[test]
fn exact_mode_agrees_with_the_rate_1_profile_on_iterators() {
    if skip_unless_root() {
        return;
    }
    for (version, variant) in [
        ("1.23.9", Variant::Default),
        ("1.27.3", Variant::Default),
        ("1.27.3", Variant::Stripped),
    ] {
        let bin = fixture(&toolchain(version), "iters", variant);
        let (mine, runtime, rows) = run(&bin, &[], &[("GODEBUG", "memprofilerate=1")], true);
        check_exact_rate_1(
            &format!("go{version} {}", variant.name()),
            &mine,
            &runtime,
            &rows,
        );
    }
}
