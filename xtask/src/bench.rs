//! `cargo xtask bench`: the benchmarks of docs/benchmarks.md
//! (`allocwatch/tests/bench.rs`, every one an `#[ignore]`d test).

use anyhow::Result;

use crate::util;

pub fn bench(seconds: u32, baseline: Option<&std::path::Path>) -> Result<()> {
    util::step("benchmarks");
    let mut cmd = util::cargo();
    if let Some(b) = baseline {
        // Benchmark 8 (quitting) measures it next to this build.
        cmd.env("ALLOCWATCH_BENCH_BASELINE", std::fs::canonicalize(b)?);
    }
    util::run(
        cmd.args([
            "test",
            "--release",
            "-p",
            "allocwatch",
            "--test",
            "bench",
            "--",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("ALLOCWATCH_BENCH_SECONDS", seconds.to_string()),
    )?;
    println!(
        "benchmark table: {} (ALLOCWATCH_BENCH_ROUNDS sets the repetitions)",
        util::root().join("target/bench/results.md").display()
    );
    Ok(())
}
