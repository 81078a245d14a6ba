//! Quitting is instant and leaves the target untouched: by the time
//! `record` prints its summary, every probe is gone from the target, and
//! the process exits right after — at the end of `--duration`, on SIGINT
//! and on SIGTERM. The dashboard's `q`: tests/top_e2e.rs.
//!
//! "Gone from the target" is read from the target itself: while a uprobe
//! is installed, the kernel has written an `int3` (`0xcc`) over the probed
//! instruction in the target's text; once it is removed the instruction
//! reads back as the executable file's byte (`/proc/PID/mem`).

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde::Deserialize;
use support::proc::Proc;
use support::{
    Variant, allocwatch, fixture, parse_result, probe_sites, read_probed, skip_unless_root,
    toolchain,
};

const GO: &str = "1.27.3";

/// How long `record` may live after printing its summary. Generous on
/// purpose, as the machine may be busy: releasing the probes takes ~0.1 s
/// with multi-uprobe links, where one perf-event link per probe (19 here)
/// took ~2 s, the kernel releasing them one after another
/// (docs/benchmarks.md). Speed itself is measured by `cargo xtask bench`.
const EXIT_AFTER_SUMMARY: Duration = Duration::from_secs(1);

#[derive(Debug, Deserialize)]
struct SpinResult {
    n: u64,
    stopped_by: String,
}

#[derive(Clone, Copy, Debug)]
enum Stop {
    Duration,
    Signal(i32),
}

/// How the probes are attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Links {
    /// The default: multi-uprobe links where the kernel has them.
    Default,
    /// `ALLOCWATCH_UPROBE_LINKS=perf`: one perf-event link per probe, as
    /// on kernels before 6.6 (released one after another: slow).
    PerProbe,
}

/// `record --pid` on a running spin, stopped by `stop`: the probes are in
/// the target while tracing, all gone when the summary is printed, the
/// process exits within [`EXIT_AFTER_SUMMARY`], and the target runs on.
fn record_then_stop(stop: Stop, links: Links) {
    let bin = fixture(&toolchain(GO), "spin", Variant::Default);
    let mut c = Command::new(&bin);
    c.env("ALLOCWATCH_SECONDS", "120").env("GOMAXPROCS", "1");
    let mut fx = Proc::spawn(c, "spin", false);
    let pid = fx.child.id();
    let sites = probe_sites(&bin);
    std::thread::sleep(Duration::from_millis(200));
    for (f, now, file) in read_probed(pid, &sites) {
        assert_eq!(now, file, "{f} differs before tracing");
    }
    let mut args = vec!["record".to_string(), "--pid".into(), pid.to_string()];
    if let Stop::Duration = stop {
        args.extend(["--duration".into(), "1s".into()]);
    }
    let mut cmd = Command::new(allocwatch());
    cmd.args(&args);
    if links == Links::PerProbe {
        cmd.env("ALLOCWATCH_UPROBE_LINKS", "perf");
    }
    let mut aw = Proc::spawn(cmd, "allocwatch", true);
    let tracing = aw
        .out
        .wait_for(Duration::from_secs(30), |l| l.contains("tracing PID"));
    assert!(tracing.is_some(), "not tracing: {:?}", aw.out.seen);
    let during = read_probed(pid, &sites);
    assert!(
        during.iter().all(|(_, now, _)| *now == 0xcc),
        "{stop:?}: probed instructions while traced: {during:x?}"
    );
    if let Stop::Signal(sig) = stop {
        std::thread::sleep(Duration::from_millis(500));
        aw.signal(sig);
    }
    let summary = aw
        .out
        .wait_for(Duration::from_secs(20), |l| l.contains("events lost:"));
    let printed = Instant::now();
    // Read at once: nothing may still be attached when the summary says
    // tracing is over.
    let at_summary = read_probed(pid, &sites);
    assert!(summary.is_some(), "{stop:?}: no summary: {:?}", aw.out.seen);
    while matches!(aw.child.try_wait(), Ok(None)) && printed.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let lived = printed.elapsed();
    let (status, stderr) = aw.finish(Duration::from_secs(5));
    eprintln!("{stop:?}, {links:?}: allocwatch exited {lived:?} after its summary");
    assert!(status.success(), "{stop:?}: allocwatch failed:\n{stderr}");
    for (f, now, file) in &at_summary {
        assert_eq!(
            now, file,
            "{stop:?}: {f} still probed when the summary was printed: {at_summary:x?}"
        );
    }
    for (f, now, file) in read_probed(pid, &sites) {
        assert_eq!(
            now, file,
            "{stop:?}: {f} still probed after allocwatch exited"
        );
    }
    assert!(
        lived < EXIT_AFTER_SUMMARY,
        "{stop:?}: allocwatch lived {lived:?} after its summary"
    );
    // The target runs on, unharmed, and allocates.
    std::thread::sleep(Duration::from_millis(200));
    assert!(fx.running(), "{stop:?}: the target stopped");
    fx.signal(libc::SIGTERM);
    let (status, stdout) = fx.finish(Duration::from_secs(10));
    assert!(status.success(), "{stop:?}: target ended with {status}");
    let res: SpinResult = parse_result(&stdout);
    assert_eq!(res.stopped_by, "signal", "{stop:?}");
    assert!(res.n > 0, "{stop:?}");
}

#[test]
fn record_duration_releases_the_target_before_its_summary() {
    if skip_unless_root() {
        return;
    }
    record_then_stop(Stop::Duration, Links::Default);
}

#[test]
fn record_sigint_releases_the_target_before_its_summary() {
    if skip_unless_root() {
        return;
    }
    record_then_stop(Stop::Signal(libc::SIGINT), Links::Default);
}

#[test]
fn record_sigterm_releases_the_target_before_its_summary() {
    if skip_unless_root() {
        return;
    }
    record_then_stop(Stop::Signal(libc::SIGTERM), Links::Default);
}

/// The same with one perf-event link per probe (kernels before 6.6): slow
/// to release, but released before the summary all the same.
#[test]
fn record_with_per_probe_links_releases_the_target_before_its_summary() {
    if skip_unless_root() {
        return;
    }
    record_then_stop(Stop::Duration, Links::PerProbe);
}
