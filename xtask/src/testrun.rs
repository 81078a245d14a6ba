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
    let out = util::output(util::cargo().args(INTEGRATION_TESTS).args([
        "-q",
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

/// Compiles into the Go build cache the tests use (`target/gocache/VERSION`,
/// same settings as `tests/support::build_go`) what the fixtures share: the
/// standard library they import, in the build modes the tests use, and on
/// the oldest and newest toolchains every fixture (the demo's `net/http`,
/// the profile writer's `runtime/pprof`). It runs beside the tests, which
/// mostly wait on Go programs, at a lower priority than theirs, so that most
/// fixtures the tests build later only need linking. A warm-up only: a
/// failure is reported, and a test that needs the package builds it (and
/// reports the error) itself.
fn warm_go_cache() {
    let versions = setup::GO_VERSIONS;
    let (oldest, newest) = (versions[0], versions[versions.len() - 1]);
    // The tests start with the oldest and newest toolchains.
    let order = [oldest, newest]
        .into_iter()
        .chain(versions[1..versions.len() - 1].iter().copied());
    let start = std::time::Instant::now();
    for v in order {
        let shared = if v == oldest || v == newest {
            every_fixture(v)
        } else {
            vec!["./internal/fixture".to_string()]
        };
        let mut builds = vec![(shared, None, None)];
        builds.push((
            vec!["./internal/fixture".into()],
            Some("-buildmode=pie"),
            None,
        ));
        if v.starts_with("1.26.") {
            // Go 1.26's size-specialized malloc, an experiment there.
            builds.push((
                vec!["./internal/fixture".into()],
                None,
                Some("sizespecializedmalloc"),
            ));
        }
        for (packages, mode, experiment) in builds {
            let mut go = util::go_cmd(&util::go_root(v));
            go.current_dir(util::root().join("testdata"))
                .arg("build")
                .args(mode)
                .args(&packages);
            if let Some(x) = experiment {
                go.env("GOEXPERIMENT", x);
            }
            let mut go = util::niced(&go, 5);
            if let Err(e) = util::run_quiet(&mut go) {
                println!("xtask: warning: warming the Go {v} build cache: {e}");
            }
        }
    }
    println!(
        "xtask: Go build caches warmed for the fixtures in {:.0} s",
        start.elapsed().as_secs_f64()
    );
}

/// The fixtures Go `v` builds (`go list` leaves out those its version
/// excludes), but those only the benchmarks build, with the demo and the
/// fixtures' shared packages.
/// The fixtures only `cargo xtask bench` builds.
const BENCH_ONLY: &[&str] = &["bigbin", "manysites"];

fn every_fixture(v: &str) -> Vec<String> {
    let listed = util::output(
        util::go_cmd(&util::go_root(v))
            .current_dir(util::root().join("testdata"))
            .args(["list", "./fixtures/..."]),
    )
    .unwrap_or_default();
    let mut packages: Vec<String> = listed
        .lines()
        .filter(|p| !BENCH_ONLY.iter().any(|b| p.ends_with(&format!("/{b}"))))
        .map(str::to_string)
        .collect();
    packages.extend(["./demo".to_string(), "./internal/...".to_string()]);
    packages
}

/// Builds and runs the suite; `go` installs the Go toolchains meanwhile.
pub fn test(args: &[String], go: std::thread::JoinHandle<Result<()>>) -> Result<()> {
    util::step("building the tests (the Go toolchains install meanwhile)");
    let built = util::run(util::cargo().args(["test", "--workspace", "--tests", "--no-run"]));
    go.join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the Go toolchain install panicked")))?;
    built?;
    require_prerequisites()?;
    let dir = new_skip_dir()?;
    // Beside the tests, which mostly wait on Go programs: the Go build cache
    // warm-up, and clippy at the lowest priority.
    let warm = std::thread::spawn(warm_go_cache);
    let lint = std::thread::spawn(crate::clippy_beside);
    // The aarch64 build for the arm64 checks at the end, niced as clippy.
    let arm = std::thread::spawn(|| crate::arm64::cross_build(true));
    util::step("unit tests");
    let mut unit = util::cargo();
    unit.args(["test", "--workspace", "--lib", "--bins"])
        .env(SKIP_DIR_VAR, &dir);
    let mut result = util::run(&mut unit);
    if result.is_ok() {
        util::step("integration tests (real kernel, real Go toolchains; one at a time)");
        let mut cmd = util::cargo();
        cmd.args(INTEGRATION_TESTS)
            .args(["--", "--test-threads=1"])
            .args(args)
            .env(SKIP_DIR_VAR, &dir);
        result = util::run(&mut cmd);
    }
    let _ = warm.join();
    let linted = lint
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the clippy thread panicked")));
    let arm64 = arm
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the aarch64 build panicked")))
        .and_then(|bin| {
            if result.is_ok() {
                crate::arm64::test(Some(bin))
            } else {
                Ok(())
            }
        });
    let skips = read_skips(&dir)?;
    std::fs::remove_dir_all(&dir)?;
    report(&skips);
    result?;
    linted?;
    arm64?;
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

/// `cargo test` over every integration test of the workspace, with the
/// features the `--workspace` build resolved (so nothing is rebuilt).
const INTEGRATION_TESTS: &[&str] = &["test", "--workspace", "--test", "*"];

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
    let (helpers, rest): (Vec<String>, Vec<String>) =
        ignored.into_iter().partition(|t| t.ends_with("_child"));
    // tests/arm64.rs: they check what the arm64 VM recorded, and run at
    // the end (see above), where the VM's files are.
    let (arm64, benches): (Vec<String>, Vec<String>) =
        rest.into_iter().partition(|t| t.ends_with("_on_arm64"));
    println!(
        "xtask: not skips: {} #[ignore]d tests, which libtest counts as `ignored` above: \
         {} benchmarks of tests/bench.rs (`cargo xtask bench` runs them), {} checks of \
         the arm64 VM's files (tests/arm64.rs, run after the VM: see its step) and {} \
         helpers that tests start in a child process ({})",
        benches.len() + arm64.len() + helpers.len(),
        benches.len(),
        arm64.len(),
        helpers.len(),
        helpers.join(", ")
    );
}
