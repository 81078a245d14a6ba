//! `cargo xtask test`: refuses to start without what the suite needs, runs
//! it, and reports every skipped test.
//!
//! Tests record a skip through `allocwatch/tests/support/skip.rs`: one file
//! per skip in the run's own directory under `target/test-skips/`, named by
//! `ALLOCWATCH_SKIP_DIR`. A skip is not a pass: the run ends with the list,
//! and under `CI=true` any skip fails it.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::{setup, util};

/// The variable that names the run's skip directory to the tests.
const SKIP_DIR_VAR: &str = "ALLOCWATCH_SKIP_DIR";

/// Fails at once, naming each fix, when the suite cannot run here.
pub fn require_prerequisites() -> Result<()> {
    let missing = setup::missing_for_tests();
    if missing.is_empty() {
        return Ok(());
    }
    for m in &missing {
        eprintln!("xtask: MISSING: {}\nxtask:   fix: {}", m.what, m.fix);
    }
    bail!(
        "cargo xtask test cannot run its tests here ({} missing, listed above); \
         the integration tests would otherwise skip instead of checking",
        missing.len()
    )
}

/// A new directory of its own under `target/test-skips/` (created, never reused).
fn new_skip_dir() -> Result<PathBuf> {
    let parent = util::root().join("target/test-skips");
    std::fs::create_dir_all(&parent)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = parent.join(format!("run-{}-{stamp}", std::process::id()));
    // create_dir fails on anything already there, a symlink included.
    std::fs::create_dir(&dir)?;
    Ok(dir)
}

/// The skips recorded in `dir`, one `test: reason` line each, sorted.
fn read_skips(dir: &Path) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let text = std::fs::read_to_string(e?.path())?;
        lines.extend(text.lines().map(str::to_string));
    }
    lines.sort();
    Ok(lines)
}

/// The `#[ignore]`d tests, as libtest lists them: the benchmarks of
/// tests/bench.rs and helpers that tests run in a child process (`*_child`).
fn ignored_tests() -> Option<Vec<String>> {
    let out = util::output(util::cargo().args([
        "test",
        "-q",
        "-p",
        "allocwatch",
        "--tests",
        "--",
        "--list",
        "--ignored",
    ]))?;
    Some(
        out.lines()
            .filter_map(|l| l.strip_suffix(": test"))
            .map(str::to_string)
            .collect(),
    )
}

pub fn test(args: &[String]) -> Result<()> {
    let dir = new_skip_dir()?;
    util::step("unit tests");
    let mut unit = util::cargo();
    unit.args(["test", "--workspace", "--lib", "--bins"])
        .env(SKIP_DIR_VAR, &dir);
    let mut result = util::run(&mut unit);
    if result.is_ok() {
        util::step("integration tests (real kernel, real Go toolchains; one at a time)");
        let mut cmd = util::cargo();
        cmd.args([
            "test",
            "-p",
            "allocwatch",
            "--tests",
            "--",
            "--test-threads=1",
        ])
        .args(args)
        .env(SKIP_DIR_VAR, &dir);
        result = util::run(&mut cmd);
    }
    let skips = read_skips(&dir)?;
    std::fs::remove_dir_all(&dir)?;
    report(&skips);
    result?;
    if !skips.is_empty() && std::env::var("CI").as_deref() == Ok("true") {
        bail!(
            "{} skipped under CI=true, where a skip fails the run (listed above)",
            if skips.len() == 1 {
                "1 test".to_string()
            } else {
                format!("{} tests", skips.len())
            }
        );
    }
    Ok(())
}

fn report(skips: &[String]) {
    util::step("skipped tests");
    if skips.is_empty() {
        println!("xtask: no test skipped");
    } else {
        let n = skips.len();
        println!(
            "xtask: {n} {} skipped:",
            if n == 1 { "test" } else { "tests" }
        );
        for s in skips {
            println!("xtask:   {s}");
        }
    }
    let Some(ignored) = ignored_tests() else {
        println!("xtask: (the list of #[ignore]d tests is not available)");
        return;
    };
    let (helpers, benches): (Vec<String>, Vec<String>) =
        ignored.into_iter().partition(|t| t.ends_with("_child"));
    println!(
        "xtask: not skips: {} #[ignore]d tests, which libtest counts as `ignored` above: \
         {} benchmarks of tests/bench.rs (`cargo xtask bench` runs them) and {} helpers \
         that tests start in a child process ({})",
        benches.len() + helpers.len(),
        benches.len(),
        helpers.len(),
        helpers.join(", ")
    );
}
