//! `record --pid`: attaching to a Go program that is already running, and
//! detaching from it again, against the real kernel.
//!
//! - Counts are exact from the moment allocwatch says it is tracing: the
//!   `allocs` fixture waits (`ALLOCWATCH_WAIT=1`) until allocwatch has
//!   printed `tracing PID`, then runs its workload; every site's count and
//!   bytes must match what the fixture measured (Go 1.21 and 1.27, default
//!   and PIE+stripped).
//! - `--duration` stops on time, writes the CSV and exits 0, and the target
//!   keeps running unharmed (no probe left behind): it later stops on
//!   SIGTERM with status 0 and its normal report. Also after five
//!   attach/detach cycles in a row.
//! - The same with capabilities instead of root (`setcap`, user nobody).
//! - Only the traced process is counted: a second process of the same
//!   executable, allocating three times as much at the same time, adds
//!   nothing (the uprobes' per-process scope; Go 1.21 and 1.27).
//! - The verifier's work per loaded program stays under a bound (the
//!   kernel's `verified_insns`): an attach costs ~0.2 s, not seconds.

mod support;

use support::proc::Proc;
use support::{
    FixtureResult, SiteRow, allocwatch, check_exact, parse_result, read_site_rows, read_summary,
    skip_unless_root,
};

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Variant, fixture, record_cmd, start_record, toolchain};

const SIGTERM: i32 = libc::SIGTERM;

/// [`start_record`], and when it had attached.
fn start_record_at(cmd: Command) -> (Proc, Instant) {
    let aw = start_record(cmd);
    (aw, Instant::now())
}

fn fixture_cmd(bin: &Path, n: Option<u32>) -> Command {
    let mut c = Command::new(bin);
    c.env("ALLOCWATCH_WAIT", "1")
        .env("GOMAXPROCS", "1")
        .env("GOGC", "off");
    if let Some(n) = n {
        c.env("ALLOCWATCH_N", n.to_string());
    }
    c
}

/// Attaches to a waiting `allocs` fixture, lets it run, and checks the counts.
fn attach_exact(version: &str, variant: Variant) {
    let what = format!("go{version} {}", variant.name());
    let bin = fixture(&toolchain(version), "allocs", variant);
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("sites.csv");
    let json = dir.path().join("summary.json");
    let (mut fx, pid) = Proc::ready(fixture_cmd(&bin, Some(1000)), "allocs fixture");
    let mut aw = start_record(record_cmd(&[
        "--pid",
        &pid.to_string(),
        "--csv",
        csv.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]));
    fx.go();
    let (status, stdout) = fx.finish(Duration::from_secs(60));
    assert!(
        status.success(),
        "{what}: fixture failed ({status}):\n{stdout}"
    );
    // allocwatch notices the exit by itself.
    let (aw_status, stderr) = aw.finish(Duration::from_secs(10));
    assert!(
        aw_status.success(),
        "{what}: allocwatch failed ({aw_status}):\n{stderr}"
    );
    let summary = read_summary(&json);
    assert_eq!(summary.stop.reason, "target_exited", "{what}:\n{stderr}");
    check_exact(
        &what,
        &read_site_rows(&csv),
        &parse_result(&stdout),
        &summary,
    );
}

#[test]
fn attach_exact_counts_go1_21() {
    if skip_unless_root() {
        return;
    }
    for v in [Variant::Default, Variant::PieStripped] {
        attach_exact("1.21.13", v);
    }
}

#[test]
fn attach_exact_counts_go1_27() {
    if skip_unless_root() {
        return;
    }
    for v in [Variant::Default, Variant::PieStripped] {
        attach_exact("1.27.3", v);
    }
}

/// A running `spin` fixture (allocating in a loop for up to an hour).
fn running_spin(version: &str, variant: Variant) -> Proc {
    let bin = fixture(&toolchain(version), "spin", variant);
    let (mut fx, _) = Proc::ready(fixture_cmd(&bin, None), "spin fixture");
    fx.go();
    std::thread::sleep(Duration::from_millis(50));
    assert!(fx.running(), "spin fixture is not running");
    fx
}

/// One `record --pid --duration` run on a running spin: exit 0 on time and a
/// CSV with its one allocation site. Returns the allocations seen.
fn record_spin_for(fx: &mut Proc, duration: Duration, what: &str) -> u64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("sites.csv");
    let json = csv.with_extension("json");
    let d = format!("{}ms", duration.as_millis());
    let (mut aw, attached) = start_record_at(record_cmd(&[
        "--pid",
        &fx.child.id().to_string(),
        "--duration",
        &d,
        "--csv",
        csv.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]));
    // Tracing stops (summary line, files written) on time...
    let summary = aw.out.wait_for(duration + Duration::from_secs(10), |l| {
        l.contains("events lost:")
    });
    let stopped = attached.elapsed();
    assert!(
        summary.is_some(),
        "{what}: no summary line; stderr:
{}",
        aw.out.seen.join("\n")
    );
    // ...and the process exits once every probe is detached.
    let (status, stderr) = aw.finish(Duration::from_secs(20));
    let exited = attached.elapsed();
    eprintln!("{what}: stopped {stopped:?} and exited {exited:?} after attaching");
    assert!(
        status.success(),
        "{what}: allocwatch failed ({status}):\n{stderr}"
    );
    let summary = read_summary(&json);
    assert_eq!(summary.stop.reason, "duration", "{what}:\n{stderr}");
    assert!(
        stopped + Duration::from_millis(50) >= duration
            && stopped < duration + Duration::from_millis(1500),
        "{what}: --duration {d} stopped tracing after {stopped:?}"
    );
    let rows = read_site_rows(&csv);
    // A GC that starts inside spinAlloc allocates the runtime's own objects
    // (runtime.g, mark worker nodes, ...) there too, each under its own type.
    let spin: Vec<&SiteRow> = rows
        .iter()
        .filter(|r| r.function == "main.spinAlloc" && r.type_name == "main.T")
        .collect();
    assert_eq!(spin.len(), 1, "{what}: rows {rows:?}");
    assert!(spin[0].allocs > 0, "{what}: no allocation seen");
    assert_eq!(spin[0].bytes, 24 * spin[0].allocs, "{what}: 24 bytes each");
    assert_eq!(summary.events.lost, 0, "{what}:\n{summary:#?}");
    spin[0].allocs
}

/// After allocwatch detached: the target still runs for a while, then stops
/// on SIGTERM with status 0 and its normal report, having allocated more
/// than allocwatch saw.
fn check_unharmed(mut fx: Proc, seen: u64, what: &str) {
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        fx.running(),
        "{what}: the target stopped after allocwatch detached"
    );
    fx.signal(SIGTERM);
    let (status, stdout) = fx.finish(Duration::from_secs(10));
    assert!(
        status.success(),
        "{what}: target ended with {status}:\n{stdout}"
    );
    let res: FixtureResult = parse_result(&stdout);
    assert_eq!(res.stopped_by, "signal", "{what}");
    assert!(
        res.n > seen,
        "{what}: target made {} allocations, allocwatch saw {seen}",
        res.n
    );
}

#[test]
fn duration_stops_and_target_survives() {
    if skip_unless_root() {
        return;
    }
    let mut fx = running_spin("1.27.3", Variant::Default);
    let seen = record_spin_for(&mut fx, Duration::from_secs(1), "--duration 1s");
    check_unharmed(fx, seen, "--duration 1s");
}

#[test]
fn repeated_attach_detach() {
    if skip_unless_root() {
        return;
    }
    // PIE + stripped Go 1.21: five probes (each uprobe takes ~0.1 s to detach).
    let what = "go1.21.13 pie-stripped";
    let mut fx = running_spin("1.21.13", Variant::PieStripped);
    let mut seen = 0;
    for i in 1..=5 {
        let run = format!("{what}: attach {i}");
        seen += record_spin_for(&mut fx, Duration::from_millis(300), &run);
        assert!(fx.running(), "{run}: the target stopped");
    }
    check_unharmed(fx, seen, what);
}

/// As user nobody, with the README's `setcap` line instead of root: tracing
/// a program nobody launches through allocwatch, and one nobody started
/// earlier (`--pid`), both with exact counts.
#[test]
fn capabilities_instead_of_root() {
    if skip_unless_root() {
        return;
    }
    if !support::have_tool("setpriv", "--version", "running as user nobody") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let aw = dir.path().join("allocwatch");
    std::fs::copy(allocwatch(), &aw).unwrap();
    let fix = dir.path().join("allocs");
    std::fs::copy(
        fixture(&toolchain("1.27.3"), "allocs", Variant::Default),
        &fix,
    )
    .unwrap();
    for f in [&aw, &fix] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let setcap = Command::new("setcap")
        .arg("cap_bpf,cap_perfmon,cap_sys_admin,cap_sys_ptrace+ep")
        .arg(&aw)
        .output();
    match setcap {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            support::skip(&format!(
                "setcap failed here: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
            return;
        }
        Err(e) => {
            support::skip(&format!("setcap (libcap2-bin) is not available: {e}"));
            return;
        }
    }
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::os::unix::fs::chown(&out, Some(65534), Some(65534)).unwrap();
    let nobody = |prog: &Path| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(prog)
            .current_dir(&out);
        c
    };

    // Launched by allocwatch.
    let csv = out.join("launch.csv");
    let json = out.join("launch.json");
    let mut c = nobody(&aw);
    c.args(["record", "--csv"])
        .arg(&csv)
        .arg("--json")
        .arg(&json)
        .arg("--")
        .arg(&fix)
        .env("ALLOCWATCH_N", "1000")
        .env("GOMAXPROCS", "1")
        .env("GOGC", "off")
        .stdin(Stdio::null());
    let o = c.output().expect("run allocwatch as nobody");
    let stderr = String::from_utf8_lossy(&o.stderr);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "nobody + setcap, launch: {}\n{stderr}",
        o.status
    );
    check_exact(
        "nobody + setcap, launch",
        &read_site_rows(&csv),
        &parse_result(&stdout),
        &read_summary(&json),
    );

    // Already running, started by nobody.
    let mut fc = nobody(&fix);
    fc.env("ALLOCWATCH_WAIT", "1")
        .env("ALLOCWATCH_N", "1000")
        .env("GOMAXPROCS", "1")
        .env("GOGC", "off");
    let (mut fx, pid) = Proc::ready(fc, "allocs fixture (nobody)");
    let csv = out.join("pid.csv");
    let json = out.join("pid.json");
    let mut c = nobody(&aw);
    c.args(["record", "--pid", &pid.to_string(), "--csv"])
        .arg(&csv)
        .arg("--json")
        .arg(&json);
    let mut awp = start_record(c);
    fx.go();
    let (status, stdout) = fx.finish(Duration::from_secs(60));
    assert!(status.success(), "fixture as nobody: {status}");
    let (aw_status, stderr) = awp.finish(Duration::from_secs(10));
    assert!(
        aw_status.success(),
        "nobody + setcap, --pid: {aw_status}\n{stderr}"
    );
    check_exact(
        "nobody + setcap, --pid",
        &read_site_rows(&csv),
        &parse_result(&stdout),
        &read_summary(&json),
    );
    let meta = std::fs::metadata(&csv).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        65534,
        "the CSV belongs to nobody"
    );

    // A process of another user (root): CAP_SYS_PTRACE lets allocwatch read
    // its executable and memory map.
    let mut spin = running_spin("1.27.3", Variant::Default);
    let csv = out.join("root.csv");
    let mut c = nobody(&aw);
    c.args([
        "record",
        "--duration",
        "300ms",
        "--pid",
        &spin.child.id().to_string(),
        "--csv",
    ])
    .arg(&csv);
    let mut awr = start_record(c);
    let (aw_status, stderr) = awr.finish(Duration::from_secs(20));
    assert!(
        aw_status.success(),
        "nobody + setcap, root's process: {aw_status}\n{stderr}"
    );
    let rows = read_site_rows(&csv);
    assert!(
        rows.iter()
            .any(|r| r.function == "main.spinAlloc" && r.allocs > 0),
        "{rows:?}"
    );
    assert!(spin.running(), "root's process stopped");
}

const SIGINT: i32 = 2;
const SIGKILL: i32 = 9;

/// `record --pid` without `--duration` stops at Ctrl-C (SIGINT), writes its
/// CSV, exits 0, and leaves the target running.
#[test]
fn sigint_stops_record_and_target_survives() {
    if skip_unless_root() {
        return;
    }
    let fx = running_spin("1.27.3", Variant::PieStripped);
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("sites.csv");
    let mut aw = start_record(record_cmd(&[
        "--pid",
        &fx.child.id().to_string(),
        "--csv",
        csv.to_str().unwrap(),
    ]));
    std::thread::sleep(Duration::from_millis(300));
    aw.signal(SIGINT);
    let (status, stderr) = aw.finish(Duration::from_secs(20));
    assert!(
        status.success(),
        "allocwatch after SIGINT: {status}\n{stderr}"
    );
    assert!(stderr.contains("SIGINT received"), "{stderr}");
    let rows = read_site_rows(&csv);
    let seen: u64 = rows
        .iter()
        .filter(|r| r.function == "main.spinAlloc" && r.type_name == "main.T")
        .map(|r| r.allocs)
        .sum();
    assert!(seen > 0, "{rows:?}");
    check_unharmed(fx, seen, "after SIGINT");
}

/// `record -- prog` stopped by SIGTERM: the CSV is written, allocwatch
/// exits 0, and the program it launched does not outlive it.
#[test]
fn sigterm_stops_record_and_ends_launched_program() {
    if skip_unless_root() {
        return;
    }
    let bin = fixture(&toolchain("1.27.3"), "spin", Variant::Default);
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("sites.csv");
    let mut cmd = record_cmd(&["--csv", csv.to_str().unwrap(), "--"]);
    cmd.arg(&bin).env("GOMAXPROCS", "1").env("GOGC", "off");
    let mut aw = start_record(cmd);
    let line = aw.out.seen.last().cloned().unwrap_or_default();
    let pid: u32 = line
        .split("tracing PID ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no PID in {line:?}"));
    std::thread::sleep(Duration::from_millis(300));
    aw.signal(SIGTERM);
    let (status, stderr) = aw.finish(Duration::from_secs(20));
    assert!(
        status.success(),
        "allocwatch after SIGTERM: {status}\n{stderr}"
    );
    assert!(stderr.contains("SIGTERM received"), "{stderr}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the launched program {pid} outlived allocwatch"
    );
    let rows = read_site_rows(&csv);
    assert!(
        rows.iter()
            .any(|r| r.function == "main.spinAlloc" && r.allocs > 0),
        "{rows:?}"
    );
}

/// allocwatch killed with SIGKILL (no clean-up code runs): the kernel drops
/// its probes with its file descriptors, and the target runs on unharmed.
#[test]
fn sigkill_of_allocwatch_leaves_target_unharmed() {
    if skip_unless_root() {
        return;
    }
    let fx = running_spin("1.27.3", Variant::Default);
    let mut aw = start_record(record_cmd(&["--pid", &fx.child.id().to_string()]));
    std::thread::sleep(Duration::from_millis(200));
    aw.signal(SIGKILL);
    let (status, _) = aw.finish(Duration::from_secs(20));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(SIGKILL)
    );
    check_unharmed(fx, 0, "after SIGKILL of allocwatch");
}

/// Two processes of one executable, `record --pid A`: only A's allocations
/// are counted, none of B's, while both allocate at the same time. This
/// guards the per-process scope of the uprobes (attached with A's PID): a
/// uprobe belongs to the executable's file (inode and offset), which B
/// maps too, so only that scope keeps B's hits away from the programs.
fn other_process_of_same_executable(version: &str, variant: Variant) {
    const N_A: u32 = 100_000;
    // Clearly distinguishable from A's count, and from twice it.
    const N_B: u32 = 3 * N_A;
    let what = format!("go{version} {}", variant.name());
    let bin = fixture(&toolchain(version), "spin", variant);
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("sites.csv");
    let json = dir.path().join("summary.json");
    let (mut a, pid_a) = Proc::ready(fixture_cmd(&bin, Some(N_A)), "spin fixture A");
    let (mut b, pid_b) = Proc::ready(fixture_cmd(&bin, Some(N_B)), "spin fixture B");
    let exe_id = |pid: u32| {
        let m = std::fs::metadata(format!("/proc/{pid}/exe")).expect("/proc/PID/exe");
        (
            std::os::unix::fs::MetadataExt::dev(&m),
            std::os::unix::fs::MetadataExt::ino(&m),
        )
    };
    assert_eq!(exe_id(pid_a), exe_id(pid_b), "{what}: A and B run one file");
    let mut aw = start_record(record_cmd(&[
        "--pid",
        &pid_a.to_string(),
        "--csv",
        csv.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]));
    // B first, so that it is allocating when A starts: B, untraced, is the
    // faster of the two.
    b.go();
    a.go();
    let (status_a, stdout_a) = a.finish(Duration::from_secs(60));
    let (status_b, stdout_b) = b.finish(Duration::from_secs(60));
    assert!(
        status_a.success(),
        "{what}: fixture A failed ({status_a}):\n{stdout_a}"
    );
    assert!(
        status_b.success(),
        "{what}: fixture B failed ({status_b}):\n{stdout_b}"
    );
    let (res_a, res_b): (FixtureResult, FixtureResult) =
        (parse_result(&stdout_a), parse_result(&stdout_b));
    assert_eq!(
        (res_a.n, res_a.stopped_by.as_str()),
        (u64::from(N_A), "limit"),
        "{what}: A"
    );
    assert_eq!(
        (res_b.n, res_b.stopped_by.as_str()),
        (u64::from(N_B), "limit"),
        "{what}: B"
    );
    // allocwatch stops by itself when A exits.
    let (aw_status, stderr) = aw.finish(Duration::from_secs(20));
    assert!(
        aw_status.success(),
        "{what}: allocwatch failed ({aw_status}):\n{stderr}"
    );
    let summary = read_summary(&json);
    assert_eq!(summary.stop.reason, "target_exited", "{what}:\n{stderr}");
    assert_eq!(
        summary.events.lost, 0,
        "{what}: events were lost:\n{stderr}"
    );

    let rows = read_site_rows(&csv);
    let spin: Vec<&SiteRow> = rows
        .iter()
        .filter(|r| r.function == "main.spinAlloc")
        .collect();
    let seen: u64 = spin.iter().map(|r| r.allocs).sum();
    let n_a = u64::from(N_A);
    let n_b = u64::from(N_B);
    let whose = if seen == n_a + n_b {
        "A's + B's: B was counted too"
    } else if seen > n_a {
        "more than A's: some of B's were counted"
    } else if seen < n_a {
        "fewer than A's: some of A's were missed"
    } else {
        "A's"
    };
    assert_eq!(
        seen, n_a,
        "{what}: main.spinAlloc counted {seen} allocations ({whose}); A made {n_a}, B {n_b}; rows {rows:?}\nallocwatch stderr:\n{stderr}"
    );
    assert_eq!(spin.len(), 1, "{what}: rows {rows:?}");
    assert_eq!(spin[0].type_name, "main.T", "{what}");
    assert_eq!(spin[0].bytes, 24 * n_a, "{what}: 24 bytes each");
    // Whatever the site (in a PIE, B's stacks would not resolve to A's
    // sites), the whole recording holds A's workload and A's few runtime
    // and result-printing allocations, nothing like B's 300 000.
    let total: u64 = rows.iter().map(|r| r.allocs).sum();
    assert!(
        total - n_a < 2_000,
        "{what}: {total} allocations recorded in all, A's workload made {n_a}; rows {rows:?}"
    );
    // A's own accounting: exact at its site, consistent with runtime/metrics.
    check_exact(&what, &rows, &res_a, &summary);
}

#[test]
fn other_process_of_same_executable_not_counted_go1_27() {
    if skip_unless_root() {
        return;
    }
    other_process_of_same_executable("1.27.3", Variant::Default);
}

#[test]
fn other_process_of_same_executable_not_counted_go1_21() {
    if skip_unless_root() {
        return;
    }
    for v in [Variant::Default, Variant::PieStripped] {
        other_process_of_same_executable("1.21.13", v);
    }
}

/// Most instructions the kernel's verifier may walk for one allocation
/// program. They measured 48,999 (`alloc_specialized`) and 43,752
/// (`alloc_entry`) on 2026-12-03. Before the address sets became bitmaps
/// they were 484,405 and 144,450, and an exact-mode attach took ~1.2 s of
/// verifier time instead of ~0.2 s: this bound catches such a regression
/// without timing anything.
const MAX_VERIFIED_INSNS: u32 = 100_000;

/// Each allocation and pool program that an exact-mode attach loads (Go
/// 1.27: `runtime.mallocgc`, the size-specialized entries and the pools)
/// costs the verifier at most [`MAX_VERIFIED_INSNS`], as the kernel reports
/// it for the loaded programs (`bpf_prog_info.verified_insns`).
#[test]
fn verifier_work_per_program_stays_small() {
    if skip_unless_root() {
        return;
    }
    let fx = running_spin("1.27.3", Variant::Default);
    let mut aw = start_record(record_cmd(&[
        "--pid",
        &fx.child.id().to_string(),
        "--duration",
        "3s",
    ]));
    let wanted = ["alloc_entry", "alloc_specializ", "pool_probe"];
    let mut seen = Vec::new();
    for info in aya::programs::loaded_programs().flatten() {
        let Some(name) = info.name_as_str() else {
            continue;
        };
        if !wanted.contains(&name) {
            continue;
        }
        let verified = info
            .verified_instruction_count()
            .expect("kernel ≥ 5.16 reports verified_insns");
        eprintln!("{name}: {verified} instructions verified");
        assert!(
            verified <= MAX_VERIFIED_INSNS,
            "{name}: the verifier walked {verified} instructions (bound {MAX_VERIFIED_INSNS})"
        );
        seen.push(name.to_string());
    }
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen,
        ["alloc_entry", "alloc_specializ", "pool_probe"],
        "programs loaded"
    );
    let (status, stderr) = aw.finish(Duration::from_secs(20));
    assert!(status.success(), "allocwatch failed ({status}):\n{stderr}");
    fx.signal(SIGTERM);
}

/// On a terminal, `record` shows what it is doing while it reads the
/// executable and attaches, and a bar until `--duration`; with stderr not
/// a terminal (a pipe, as everywhere else in the tests) none of it. The
/// terminal is a pseudo-terminal from util-linux's `script`.
#[test]
fn progress_shows_on_a_terminal_only() {
    if skip_unless_root() {
        return;
    }
    let fx = running_spin("1.27.3", Variant::Default);
    let pid = fx.child.id().to_string();
    let cmdline = format!(
        "{} record --pid {pid} --duration 2s",
        allocwatch().display()
    );
    let tty = support::on_terminal(&cmdline, Command::new("script"));
    for want in [
        "reading fixtures-spin",
        "attaching 19 probes",
        "tracing [",
        "of 2s",
    ] {
        assert!(tty.contains(want), "no {want:?} on the terminal:\n{tty}");
    }
    assert!(tty.contains("(duration reached)"), "{tty}");

    let mut aw = start_record(record_cmd(&["--pid", &pid, "--duration", "2s"]));
    let (status, stderr) = aw.finish(Duration::from_secs(20));
    assert!(status.success(), "{stderr}");
    for unwanted in ["reading fixtures-spin", "tracing [", "\r"] {
        assert!(
            !stderr.contains(unwanted),
            "{unwanted:?} in piped stderr:\n{stderr}"
        );
    }
    drop(fx);
}
