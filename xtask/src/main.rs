//! Project tasks: `cargo xtask setup | test | demo | bench | lint`.
//!
//! `setup` installs everything the project needs on a Debian-like machine and
//! is idempotent: it prints each step and skips what is already there.

mod arm64;
mod bench;
mod setup;
mod testrun;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the BPF toolchain, test tools and Go toolchains; check the kernel.
    Setup {
        /// Also what the arm64 checks need: the cross toolchain, qemu, and
        /// Debian's arm64 kernel and busybox (under target/arm64/).
        #[arg(long)]
        arm64: bool,
    },
    /// Setup, rustfmt, then every test (unit and privileged integration
    /// tests) with clippy running beside them; refuses to start without root
    /// or a prerequisite, lists skipped tests at the end and, under CI=true,
    /// fails when any test skipped or clippy warned.
    Test {
        /// Only the arm64 checks: allocwatch cross-built for aarch64, run in a
        /// qemu-system-aarch64 VM on Debian's arm64 kernel (the whole suite
        /// runs them too, at its end).
        #[arg(long)]
        arm64: bool,
        /// Arguments passed to the integration test binaries (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Setup, build, start the demo Go service and open `allocwatch top` on it.
    Demo,
    /// Setup and run the benchmarks; prints results for docs/benchmarks.md.
    Bench {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 3)]
        seconds: u32,
        /// Another allocwatch binary (e.g. built from an older commit) that
        /// the quit benchmark also measures, in the same run.
        #[arg(long)]
        baseline: Option<std::path::PathBuf>,
    },
    /// rustfmt and clippy on the workspace and on the eBPF crate.
    Lint,
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup { arm64 } => {
            setup::setup()?;
            if arm64 {
                arm64::setup()?;
            }
            Ok(())
        }
        Cmd::Test { arm64: true, .. } => {
            if !setup::is_root() {
                testrun::require_prerequisites()?;
            }
            setup::setup()?;
            arm64::setup()?;
            arm64::test(None)
        }
        Cmd::Test { arm64: false, args } => {
            // Root first: setup installs as root, and without root every
            // privileged test would only skip.
            if !setup::is_root() {
                testrun::require_prerequisites()?;
            }
            let go = setup::setup_go_beside()?;
            arm64::setup()?;
            fmt_check()?;
            testrun::test(&args, go)
        }
        Cmd::Demo => {
            setup::setup()?;
            demo()
        }
        Cmd::Bench { seconds, baseline } => {
            setup::setup()?;
            bench::bench(seconds, baseline.as_deref())
        }
        Cmd::Lint => lint(),
    }
}

fn lint() -> Result<()> {
    fmt_check()?;
    clippy(&util::root().join("target"), util::run)
}

fn fmt_check() -> Result<()> {
    util::step("rustfmt --check");
    util::run(util::cargo().args(["fmt", "--all", "--check"]))
}

/// clippy on the workspace and on the eBPF crate, built in `target_dir`,
/// each command run by `run`.
fn clippy(
    target_dir: &std::path::Path,
    run: impl Fn(&mut std::process::Command) -> Result<()>,
) -> Result<()> {
    util::step("clippy (workspace)");
    run(util::cargo()
        .args(["clippy", "--workspace", "--all-targets", "--target-dir"])
        .arg(target_dir)
        .args(["--", "-D", "warnings"])
        // The eBPF object of the main build (cargo finds it up to date).
        .env("ALLOCWATCH_BPF_TARGET_DIR", util::root().join("target/bpf")))?;
    let root = util::root();
    // The programs read the registers of one architecture: checked for each.
    for arch in ["x86_64", "aarch64"] {
        util::step(&format!(
            "clippy (eBPF crate for {arch}, Debian's clippy for the BPF target)"
        ));
        run(util::ebpf_cargo()
            .current_dir(root.join("allocwatch-ebpf"))
            .args([
                "check",
                "--release",
                "--target",
                "bpfel-unknown-none",
                "--target-dir",
            ])
            .arg(root.join("target/bpf-clippy").join(arch))
            .env("RUSTC_WORKSPACE_WRAPPER", "/usr/bin/clippy-driver")
            .env(
                "RUSTFLAGS",
                format!("-D warnings --cfg bpf_target_arch=\"{arch}\""),
            ))?;
    }
    Ok(())
}

/// clippy while the tests run: at the lowest CPU priority, in a target
/// directory of its own (cargo locks one per build), its output shown once
/// it is done.
fn clippy_beside() -> Result<()> {
    let dir = util::root().join("target/clippy");
    let start = std::time::Instant::now();
    let result = clippy(&dir, |c| util::run_quiet(&mut util::niced(c, 19)));
    util::step(&format!(
        "clippy, run beside the tests: {} ({:.0} s)",
        if result.is_ok() { "clean" } else { "FAILED" },
        start.elapsed().as_secs_f64()
    ));
    result
}

fn demo() -> Result<()> {
    let root = util::root();
    util::step("building allocwatch (release)");
    util::run(util::cargo().args(["build", "--release", "-p", "allocwatch"]))?;
    util::step("building the demo service with Go 1.27");
    let go = util::go_root("1.27.3");
    let out = root.join("target/demo/demo");
    util::run(
        util::go_cmd(&go)
            .current_dir(root.join("testdata"))
            .args(["build", "-o"])
            .arg(&out)
            .arg("./demo"),
    )?;
    let log = root.join("target/demo/demo.log");
    let mut demo = std::process::Command::new(&out)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(root.join("target/demo/demo.err"))?)
        .spawn()?;
    println!(
        "xtask: demo service running as PID {} (log: {})",
        demo.id(),
        log.display()
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let status = std::process::Command::new(root.join("target/release/allocwatch"))
        .args(["top", "--pid", &demo.id().to_string()])
        .status();
    let _ = demo.kill();
    let _ = demo.wait();
    println!("xtask: demo service stopped");
    let status = status?;
    anyhow::ensure!(status.success(), "allocwatch top exited with {status}");
    Ok(())
}
