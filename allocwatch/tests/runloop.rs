//! One run loop drives several sessions at once, one per target process:
//! the shape of a daemon that traces many processes. Two `allocs` fixtures,
//! built by different Go toolchains and asked for different numbers of
//! allocations, run at the same time under one loop; each session's
//! counts must be exactly what its own process measured, the loop must
//! hand over windows of both, say when each target goes, and stop once
//! both are gone.

mod support;

use std::process::Command;
use std::time::Duration;

use allocwatch::plan::Mode;
use allocwatch::runloop::{self, Schedule, Signals, Stop, Tick, Traced};
use allocwatch::session::{Options, Session, TargetSpec};
use allocwatch::stats::Snapshot;
use support::proc::Proc;
use support::sites::{FixtureResult, SiteRow, assert_sites, check_metrics};
use support::{Variant, fixture, parse_result, skip_unless_root, toolchain};

/// Every site the fixture measured, against the session's snapshot; and
/// the runtime's own count of the workload's allocations.
fn check(what: &str, snap: &Snapshot, res: &FixtureResult) {
    assert_eq!(snap.counters.lost, 0, "{what}: events were lost");
    let rows: Vec<SiteRow> = snap
        .sites
        .iter()
        .map(|s| SiteRow {
            function: s.key.function.to_string(),
            file: s.key.file.to_string(),
            line: s.key.line,
            type_name: s.key.type_name.to_string(),
            allocs: s.allocs,
            bytes: s.bytes,
        })
        .collect();
    assert_sites(what, &rows, res);
    check_metrics(what, &rows, res);
}

fn start(version: &str, n: u32) -> (Proc, u32) {
    let bin = fixture(&toolchain(version), "allocs", Variant::Default);
    let mut c = Command::new(&bin);
    c.env("ALLOCWATCH_WAIT", "1")
        .env("ALLOCWATCH_N", n.to_string())
        .env("GOMAXPROCS", "1")
        .env("GOGC", "off");
    Proc::ready(c, &format!("allocs (Go {version}, n={n})"))
}

#[test]
fn one_loop_traces_two_processes_exactly() {
    if skip_unless_root() {
        return;
    }
    let (mut p1, pid1) = start("1.21.13", 20_000);
    let (mut p2, pid2) = start("1.27.3", 30_000);
    let opts = Options {
        pools: true,
        bench: None,
        mode: Mode::Exact,
        ringbuf_bytes: None,
        max_overhead: None,
        sample_rate: None,
        progress: false,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // A session's ring buffer registers with the runtime's reactor.
    let _in_runtime = rt.enter();
    let mut traced: Vec<Traced> = [pid1, pid2]
        .into_iter()
        .map(|pid| {
            let s = Session::start(&TargetSpec::Pid(pid), opts)
                .unwrap_or_else(|e| panic!("attach to {pid}: {}", e.message));
            Traced::new(s, None)
        })
        .collect();
    let mut windows = [0u32; 2];
    let mut gone = Vec::new();
    let schedule = Schedule {
        duration: Some(Duration::from_secs(120)),
        refresh: Duration::from_millis(100),
    };
    let stop = rt
        .block_on(async {
            let signals = Signals::listen().expect("signals");
            runloop::run(&mut traced, signals, schedule, |t| match t {
                Tick::Window { index, .. } => {
                    // Both are traced and each has a window: let them run
                    // their workloads at the same time (a workload can be
                    // shorter than a window).
                    if windows == [0, 0] {
                        p1.go();
                        p2.go();
                    }
                    windows[index] += 1;
                }
                Tick::Gone { index, .. } => gone.push(index),
                Tick::Switch { .. } => panic!("no budget, no switch"),
            })
            .await
        })
        .expect("run");
    assert!(
        matches!(stop, Stop::Target(_)),
        "the loop must stop when both targets are gone, not on {stop:?}"
    );
    gone.sort_unstable();
    assert_eq!(gone, [0, 1], "each target's exit is reported once");
    assert!(
        windows.iter().all(|&w| w > 0),
        "both sessions get windows: {windows:?}"
    );
    for (i, (p, n)) in [(&mut p1, 20_000u64), (&mut p2, 30_000)]
        .into_iter()
        .enumerate()
    {
        let (status, out) = p.finish(Duration::from_secs(30));
        assert!(status.success(), "{}: {status}\n{out}", p.name);
        let res: FixtureResult = parse_result(&out);
        let snap = traced[i].session.snapshot();
        assert!(
            traced[i].gone().is_some(),
            "{}: the loop knows it is gone",
            p.name
        );
        check(&p.name, &snap, &res);
        assert!(
            snap.total_allocs >= n,
            "{}: {} allocations in all, fewer than the workload's {n}",
            p.name,
            snap.total_allocs
        );
    }
}
