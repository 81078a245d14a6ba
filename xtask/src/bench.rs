//! `cargo xtask bench`: the benchmarks of docs/benchmarks.md
//! (`allocwatch/tests/bench.rs`, every one an `#[ignore]`d test).

use anyhow::Result;

use crate::util;

pub fn bench(seconds: u32) -> Result<()> {
    util::step("benchmarks");
    util::run(
        util::cargo()
            .args([
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
