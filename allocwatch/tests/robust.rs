//! Robustness against the real kernel: what happens when the ring buffer or
//! the kernel's aggregation map overflows, when the target execs another
//! program or its PID is reused, when it runs in another mount namespace,
//! when allocwatch is killed, and what allocwatch does to the file system
//! and the network.
//!
//! - `ring_buffer_overflow_is_counted_and_reported` /
//!   `aggregation_map_overflow_falls_back_to_single_events`: the `flood`
//!   fixture allocates objects of thousands of distinct `reflect.StructOf`
//!   types, each a new kernel aggregation key whose stack goes through the
//!   ring buffer.
//! - `exec_*`: the `execer` fixture replaces itself (`syscall.Exec`).
//! - `pid_reuse_is_noticed`: allocwatch is frozen (SIGSTOP) while its
//!   target exits and the PID is given to a new process
//!   (`/proc/sys/kernel/ns_last_pid`).
//! - `target_in_another_mount_namespace`: a fixture whose executable
//!   exists only in its own mount namespace.
//! - `sigkill_leaves_no_probe_behind`: the `paced` fixture reports its own
//!   allocation speed while allocwatch attaches and is killed.
//! - `output_files_are_created_safely`, `no_network_port`.

mod support;

use support::proc::Proc;
use support::{
    FixtureResult, RunSummary, SiteRow, allocwatch, check_sites, parse_result, probed_bytes,
    read_site_rows, read_summary, skip_unless_root,
};

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use support::{Variant, fixture, record_cmd, start_record, toolchain};

const GO: &str = "1.27.3";

/// Runs `cmd` to the end (killing it after `timeout`): status, stdout, stderr.
fn run(mut cmd: Command, timeout: Duration) -> (ExitStatus, String, String) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = reader(Box::new(child.stdout.take().expect("stdout")));
    let err = reader(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not exit within {timeout:?}; stderr:\n{}",
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (
        status,
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    )
}

fn go_env(c: &mut Command) -> &mut Command {
    c.env("GOMAXPROCS", "1").env("GOGC", "off")
}

// ---------------------------------------------------------------------------
// 1. Overflows: the ring buffer, the kernel's aggregation map

/// `record --csv F [extra] -- flood` with `n` types allocated `rounds` times.
fn record_flood(
    n: u32,
    rounds: u32,
    extra: &[&str],
) -> (FixtureResult, Vec<SiteRow>, String, RunSummary) {
    let bin = fixture(&toolchain(GO), "flood", Variant::Default);
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("sites.csv");
    let json = dir.path().join("summary.json");
    let mut cmd = record_cmd(&[
        "--csv",
        csv.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    cmd.args(extra).arg("--").arg(&bin);
    go_env(&mut cmd)
        .env("ALLOCWATCH_N", n.to_string())
        .env("ALLOCWATCH_ROUNDS", rounds.to_string());
    let (status, stdout, stderr) = run(cmd, Duration::from_secs(120));
    assert!(
        status.success(),
        "record -- flood {extra:?}: {status}\n{stderr}"
    );
    (
        parse_result(&stdout),
        read_site_rows(&csv),
        stderr,
        read_summary(&json),
    )
}

/// A flood of new keys through a one-page ring buffer loses events, and
/// says so: `events lost: N` with N > 0 and a warning naming what is
/// missing. Most lost events only carried a new key's stack (the kernel
/// counted the allocation in its map): the flood's own count is still
/// exact. With the default 32 MiB nothing is lost.
#[test]
fn ring_buffer_overflow_is_counted_and_reported() {
    if skip_unless_root() {
        return;
    }
    let n = 5000;
    let (res, rows, stderr, summary) = record_flood(n, 1, &["--ringbuf-bytes", "4096"]);
    let lost = summary.events.lost;
    eprintln!("4 KiB ring buffer: {lost} events lost of {n} new keys");
    assert!(lost > 0, "a 4 KiB ring buffer held {n} stacks?\n{stderr}");
    let warning = stderr
        .lines()
        .find(|l| l.contains("warning:") && l.contains("did not fit in the ring buffer"))
        .unwrap_or_else(|| panic!("no warning line about the lost events:\n{stderr}"));
    assert!(
        warning.contains(&format!("{lost} events"))
            && warning.contains("new sites lack their full stack"),
        "{warning}"
    );
    let counted: u64 = rows
        .iter()
        .filter(|r| r.function == "reflect.New")
        .map(|r| r.allocs)
        .sum();
    assert_eq!(counted, u64::from(n), "reflect.New allocations:\n{stderr}");
    assert_eq!(res.sites[0].count, i64::from(n));

    let (res, rows, stderr, summary) = record_flood(n, 1, &[]);
    assert_eq!(summary.events.lost, 0, "{summary:#?}");
    assert!(!stderr.contains("did not fit"), "{stderr}");
    check_sites("default ring buffer", &rows, &res, &summary);

    // Sizes the kernel would refuse are usage errors, before anything runs.
    for bad in ["5000", "2048", "0"] {
        let mut cmd = record_cmd(&["--ringbuf-bytes", bad, "--", "/bin/true"]);
        cmd.env_remove("ALLOCWATCH_N");
        let (status, _, stderr) = run(cmd, Duration::from_secs(10));
        assert_eq!(status.code(), Some(2), "--ringbuf-bytes {bad}: {stderr}");
    }
}

/// More distinct keys than the kernel's aggregation map holds (70 000 types,
/// more than its 65 536 entries): the allocations of keys that found the map full are
/// sent one by one, the summary says so, and every allocation is still
/// counted exactly (two rounds: 140 000 calls of reflect.New).
#[test]
fn aggregation_map_overflow_falls_back_to_single_events() {
    if skip_unless_root() {
        return;
    }
    let (n, rounds) = (75_000, 2);
    let (res, rows, stderr, summary) = record_flood(n, rounds, &[]);
    assert_eq!(summary.events.lost, 0, "{summary:#?}");
    let note = stderr
        .lines()
        .find(|l| l.contains("aggregation maps were full"))
        .unwrap_or_else(|| panic!("no note about the full aggregation map:\n{stderr}"));
    let sent = summary.events.agg_full;
    assert!(
        note.contains(&format!(": {sent} operations were sent one by one")),
        "{note}"
    );
    // At least the types beyond the capacity of the map and of every CPU's
    // slots (which count a key without the map), in both rounds.
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get() as u32);
    let held = allocwatch_common::AGG_ENTRIES + allocwatch_common::SLOTS * cpus;
    assert!(
        n > held && sent >= 2 * u64::from(n - held),
        "only {sent} allocations sent one by one ({n} types, the kernel holds {held}): {note}"
    );
    assert_eq!(res.sites[0].count, i64::from(n * rounds));
    check_sites("aggregation map overflow", &rows, &res, &summary);
}

// ---------------------------------------------------------------------------
// 2. exec and PID reuse

fn execer_cmd(bin: &Path, n: u32) -> Command {
    let mut c = Command::new(bin);
    go_env(&mut c)
        .env("ALLOCWATCH_WAIT", "1")
        .env("ALLOCWATCH_N", n.to_string());
    c
}

/// The executable a process runs now.
fn exe_of(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default()
}

/// `record --pid` of an `execer` that, after its workload, execs `argv`:
/// allocwatch stops by itself, says the target replaced itself, and
/// reports exactly the workload's allocations, nothing of the new program.
fn exec_case(argv: &str, expect: &str, new_program: &Path) {
    let what = format!("exec {argv}");
    let bin = fixture(&toolchain(GO), "execer", Variant::Default);
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("sites.csv");
    let json = dir.path().join("summary.json");
    let (mut fx, pid) = Proc::ready(execer_cmd(&bin, 1000), "execer");
    let mut aw = start_record(record_cmd(&[
        "--pid",
        &pid.to_string(),
        "--csv",
        csv.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]));
    fx.send("go");
    fx.out
        .wait_for(Duration::from_secs(30), |l| l.starts_with("result "))
        .unwrap_or_else(|| panic!("{what}: no result: {:?}", fx.out.seen));
    let res = parse_result(&fx.out.seen.join("\n"));
    let t0 = Instant::now();
    fx.send(&format!("exec {argv}"));
    let summary = aw
        .out
        .wait_for(Duration::from_secs(10), |l| l.contains("events lost:"));
    let stopped = t0.elapsed();
    assert!(
        summary.as_deref().is_some_and(|s| s.contains(expect)),
        "{what}: allocwatch did not stop saying {expect:?} ({stopped:?}); stderr:\n{}",
        aw.out.seen.join("\n")
    );
    let (status, stderr) = aw.finish(Duration::from_secs(20));
    assert!(status.success(), "{what}: allocwatch {status}\n{stderr}");
    eprintln!("{what}: allocwatch stopped {stopped:?} after the exec");
    // The same process now runs the new program.
    assert!(
        fx.child.try_wait().expect("wait").is_none(),
        "{what}: the target died"
    );
    assert_eq!(exe_of(pid), new_program, "{what}");
    let summary = read_summary(&json);
    assert_eq!(
        summary.stop.reason, "target_replaced",
        "{what}: {summary:#?}"
    );
    check_sites(&what, &read_site_rows(&csv), &res, &summary);
}

/// exec of another program (`/bin/sleep`, another Go program): the
/// executable's inode changes, allocwatch stops with "replaced itself with
/// another program (exec)".
#[test]
fn exec_of_another_program_stops_tracing() {
    if skip_unless_root() {
        return;
    }
    let sleep = std::fs::canonicalize("/bin/sleep").expect("/bin/sleep");
    exec_case(
        &format!("{} 30", sleep.display()),
        "replaced itself with another program (exec)",
        &sleep,
    );
    let spin = fixture(&toolchain(GO), "spin", Variant::Default);
    exec_case(
        &spin.display().to_string(),
        "replaced itself with another program (exec)",
        &spin,
    );
}

/// exec of the same executable: same PID, start time and inode, but a new
/// address space (and, for PIE, new addresses). allocwatch notices through
/// the `/proc/PID/mem` it opened at attach time, which no longer reads.
#[test]
fn exec_of_the_same_executable_stops_tracing() {
    if skip_unless_root() {
        return;
    }
    let bin = fixture(&toolchain(GO), "execer", Variant::Default);
    exec_case(
        &bin.display().to_string(),
        "replaced itself with a new run of the same executable (exec)",
        &bin,
    );
}

/// `record -- prog` whose program execs `/bin/sleep`: allocwatch stops, says
/// so, and has the program's own allocations exactly.
#[test]
fn exec_of_launched_program_stops_tracing() {
    if skip_unless_root() {
        return;
    }
    let bin = fixture(&toolchain(GO), "execer", Variant::PieStripped);
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("sites.csv");
    let mut cmd = record_cmd(&["--csv", csv.to_str().unwrap(), "--"]);
    cmd.arg(&bin);
    go_env(&mut cmd).env("ALLOCWATCH_N", "1000");
    let mut aw = start_record(cmd);
    let line = aw.out.seen.last().cloned().unwrap_or_default();
    let pid: u32 = line
        .split("tracing PID ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no PID in {line:?}"));
    // The program reads this after its workload.
    aw.send("exec /bin/sleep 30");
    let (status, stderr) = aw.finish(Duration::from_secs(20));
    let sleep = std::fs::canonicalize("/bin/sleep").expect("/bin/sleep");
    let now = exe_of(pid);
    // SAFETY: kill(2); the sleep is allocwatch's orphan now.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert!(status.success(), "{status}\n{stderr}");
    assert!(
        stderr.contains("replaced itself with another program (exec)"),
        "{stderr}"
    );
    assert_eq!(now, sleep);
    let rows = read_site_rows(&csv);
    let allocs: u64 = rows
        .iter()
        .filter(|r| r.function == "main.allocT" && r.type_name == "main.T")
        .map(|r| r.allocs)
        .sum();
    assert_eq!(allocs, 1000, "{stderr}");
}

fn set_ns_last_pid(pid: u32) -> bool {
    std::fs::write("/proc/sys/kernel/ns_last_pid", pid.to_string()).is_ok()
}

/// The target exits while allocwatch is frozen (SIGSTOP), and its PID is
/// given to a new process of the same executable (same inode) through
/// `/proc/sys/kernel/ns_last_pid`. Thawed, allocwatch sees another start
/// time, stops with "its PID now belongs to another process", keeps the
/// old process's exact counts, and leaves the new process alone.
#[test]
fn pid_reuse_is_noticed() {
    if skip_unless_root() {
        return;
    }
    let bin = fixture(&toolchain(GO), "execer", Variant::Default);
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("sites.csv");
    let json = dir.path().join("summary.json");
    let (mut fx, pid) = Proc::ready(execer_cmd(&bin, 1000), "execer");
    let mut aw = start_record(record_cmd(&[
        "--pid",
        &pid.to_string(),
        "--csv",
        csv.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]));
    aw.stop();
    fx.send("go");
    fx.close_stdin();
    let (status, stdout) = fx.finish(Duration::from_secs(30));
    assert!(status.success(), "execer: {status}\n{stdout}");
    let res: FixtureResult = parse_result(&stdout);
    drop(fx);
    // Other processes on the machine fork too: retry until the PID is ours.
    let (mut reused, mut tries) = (None, 0);
    for _ in 0..200 {
        if !set_ns_last_pid(pid - 1) {
            break;
        }
        let mut c = execer_cmd(&bin, 1000);
        c.stdout(Stdio::piped()).stdin(Stdio::piped());
        let mut child = c.spawn().expect("spawn");
        tries += 1;
        if child.id() == pid {
            eprintln!("PID {pid} reused after {tries} tries");
            reused = Some(child);
            break;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    aw.signal(libc::SIGCONT);
    let Some(mut child) = reused else {
        support::skip(&format!(
            "PID {pid} could not be reused through ns_last_pid"
        ));
        return;
    };
    let summary = aw
        .out
        .wait_for(Duration::from_secs(10), |l| l.contains("events lost:"));
    let (aw_status, stderr) = aw.finish(Duration::from_secs(20));
    assert!(
        summary
            .as_deref()
            .is_some_and(|s| s.contains("its PID now belongs to another process")),
        "allocwatch did not notice the reuse:\n{stderr}"
    );
    assert!(aw_status.success(), "{aw_status}\n{stderr}");
    let summary = read_summary(&json);
    assert_eq!(summary.stop.reason, "target_exited", "{summary:#?}");
    check_sites("PID reuse", &read_site_rows(&csv), &res, &summary);
    // The new process runs normally.
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "go").expect("go");
    drop(stdin);
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    let res2: FixtureResult = parse_result(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(res2.n, 1000);
}

// ---------------------------------------------------------------------------
// 3. Containers: another mount namespace

/// A fixture started in its own mount namespace from a tmpfs mounted only
/// there: its executable's path does not exist in allocwatch's namespace.
/// allocwatch reads and probes it through `/proc/PID/exe`, with exact counts
/// (default and PIE).
#[test]
fn target_in_another_mount_namespace() {
    if skip_unless_root() {
        return;
    }
    for variant in [Variant::Default, Variant::Pie] {
        let what = format!("mount namespace, {}", variant.name());
        let bin = fixture(&toolchain(GO), "allocs", variant);
        let dir = tempfile::tempdir().expect("tempdir");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mkdir");
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount -t tmpfs none "$1" && cp "$2" "$1/allocs" && exec "$1/allocs""#)
            .arg("sh")
            .arg(&mnt)
            .arg(&bin);
        go_env(&mut c)
            .env("ALLOCWATCH_WAIT", "1")
            .env("ALLOCWATCH_N", "1000");
        let (mut fx, pid) = Proc::ready(c, "allocs in a mount namespace");
        let inside = mnt.join("allocs");
        assert!(!inside.exists(), "{what}: the fixture is visible outside");
        assert_eq!(exe_of(pid), inside, "{what}");
        let csv = dir.path().join("sites.csv");
        let json = dir.path().join("summary.json");
        let mut aw = start_record(record_cmd(&[
            "--pid",
            &pid.to_string(),
            "--csv",
            csv.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ]));
        assert!(
            aw.out
                .seen
                .iter()
                .any(|l| l.contains(&*inside.to_string_lossy())),
            "{what}: the tracing line names the path as the target sees it: {:?}",
            aw.out.seen
        );
        fx.send("go");
        let (status, stdout) = fx.finish(Duration::from_secs(60));
        assert!(status.success(), "{what}: fixture {status}\n{stdout}");
        let (aw_status, stderr) = aw.finish(Duration::from_secs(20));
        assert!(aw_status.success(), "{what}: {aw_status}\n{stderr}");
        assert!(stderr.contains("target exited"), "{what}:\n{stderr}");
        let res: FixtureResult = parse_result(&stdout);
        // mapInsert's count is not deterministic; the others are exact.
        let res = FixtureResult {
            sites: res.sites.into_iter().filter(|s| s.count >= 0).collect(),
            ..res
        };
        let summary = read_summary(&json);
        assert_eq!(summary.stop.reason, "target_exited", "{what}: {summary:#?}");
        check_sites(&what, &read_site_rows(&csv), &res, &summary);
    }
}

// ---------------------------------------------------------------------------
// 4. SIGKILL of allocwatch

/// Reads `pace … ns_per_alloc=X` lines from now on: the best of `count`
/// intervals after skipping `skip` (which may straddle a change).
fn pace(fx: &mut Proc, skip: usize, count: usize) -> f64 {
    fx.out.drain();
    let mut best = f64::INFINITY;
    for i in 0..skip + count {
        let line = fx
            .out
            .wait_for(Duration::from_secs(10), |l| l.starts_with("pace "))
            .unwrap_or_else(|| panic!("paced stopped reporting: {:?}", fx.out.seen));
        let x: f64 = line
            .split("ns_per_alloc=")
            .nth(1)
            .and_then(|x| x.trim().parse().ok())
            .unwrap_or_else(|| panic!("bad pace line {line:?}"));
        if i >= skip {
            best = best.min(x);
        }
    }
    best
}

/// allocwatch killed with SIGKILL while tracing: no clean-up code runs, yet
/// no uprobe remains. The probed instructions read back as the file's bytes
/// again (`0xcc` while traced), and no uprobe is registered through tracefs.
/// The target's cost per allocation before, during and after is printed for
/// the log; timings are compared in benchmarks (`cargo xtask bench`), not
/// asserted here on a shared machine.
#[test]
fn sigkill_leaves_no_probe_behind() {
    if skip_unless_root() {
        return;
    }
    let bin = fixture(&toolchain(GO), "paced", Variant::Default);
    let mut c = Command::new(&bin);
    go_env(&mut c)
        .env("ALLOCWATCH_SECONDS", "120")
        .env("ALLOCWATCH_REPORT_MS", "100");
    let mut fx = Proc::spawn(c, "paced", false);
    let pid = fx.child.id();
    let untraced = pace(&mut fx, 2, 8);
    for (f, now, file) in probed_bytes(pid, &bin) {
        assert_eq!(now, file, "{f} differs before tracing");
    }
    let mut aw = start_record(record_cmd(&["--pid", &pid.to_string()]));
    let traced = pace(&mut fx, 2, 5);
    let during = probed_bytes(pid, &bin);
    assert!(
        during.iter().all(|(_, now, _)| *now == 0xcc),
        "probed instructions while traced: {during:x?}"
    );
    let aw_pid = aw.child.id();
    aw.signal(libc::SIGKILL);
    let (status, _) = aw.finish(Duration::from_secs(20));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    assert!(!Path::new(&format!("/proc/{aw_pid}")).exists());
    let after = pace(&mut fx, 2, 8);
    eprintln!(
        "ns per allocation: untraced {untraced:.1}, traced {traced:.1}, after SIGKILL of allocwatch {after:.1}"
    );
    for (f, now, file) in probed_bytes(pid, &bin) {
        assert_eq!(now, file, "{f}: a probe remains after SIGKILL");
    }
    for events in [
        "/sys/kernel/tracing/uprobe_events",
        "/sys/kernel/debug/tracing/uprobe_events",
    ] {
        if let Ok(s) = std::fs::read_to_string(events) {
            let bin_s = bin.to_string_lossy();
            assert!(
                !s.lines().any(|l| l.contains(&*bin_s)),
                "{events} still names the target:\n{s}"
            );
        }
    }
    fx.signal(libc::SIGTERM);
    let (status, stdout) = fx.finish(Duration::from_secs(10));
    assert!(status.success(), "{stdout}");
    assert_eq!(parse_result::<FixtureResult>(&stdout).stopped_by, "signal");
}

// ---------------------------------------------------------------------------
// 6. Files and network

/// The PID the kernel hands out next (in this PID namespace), roughly.
fn last_pid() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The files allocwatch writes: created `O_EXCL` under a temporary name in
/// the destination directory, renamed into place. Symlinks planted at the
/// temporary names it will try (for every PID it may get) and at the
/// destinations are never followed: the files they point to are neither
/// created nor changed, the destinations become regular files, the planted
/// links stay as they were. Through sudo (`SUDO_UID`/`SUDO_GID`, here
/// nobody's) the files belong to that user; their mode is 0644 even with
/// umask 0.
#[test]
fn output_files_are_created_safely() {
    if skip_unless_root() {
        return;
    }
    let bin = fixture(&toolchain(GO), "allocs", Variant::Default);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let outside = dir.path().join("outside");
    std::fs::create_dir(&out).unwrap();
    std::fs::create_dir(&outside).unwrap();
    let victim = outside.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let sites = out.join("sites.csv");
    let pools = out.join("pools.csv");
    std::os::unix::fs::symlink(&victim, &sites).unwrap();
    std::os::unix::fs::symlink(outside.join("created-through-dest"), &pools).unwrap();
    // allocwatch's PID is not known before it starts: plant links for the
    // next few hundred, at the first two temporary names (it tries 16).
    let first = last_pid() + 1;
    let candidates = first..first + 400;
    let mut planted = Vec::new();
    for pid in candidates.clone() {
        for name in ["sites.csv", "pools.csv"] {
            for attempt in 0..2 {
                let link = out.join(format!(".{name}.{pid}.{attempt}.tmp"));
                let to = if attempt == 0 {
                    victim.clone()
                } else {
                    outside.join(format!("created-through-tmp-{pid}-{name}"))
                };
                std::os::unix::fs::symlink(&to, &link).unwrap();
                planted.push((link, to));
            }
        }
    }
    let mut cmd = record_cmd(&[
        "--csv",
        sites.to_str().unwrap(),
        "--pools-csv",
        pools.to_str().unwrap(),
        "--",
    ]);
    cmd.arg(&bin)
        .env("ALLOCWATCH_N", "100")
        .env("SUDO_UID", "65534")
        .env("SUDO_GID", "65534");
    go_env(&mut cmd);
    // SAFETY: umask(2) in the child before exec; async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let mut aw = Proc::spawn(cmd, "allocwatch", true);
    let aw_pid = aw.child.id();
    let (status, stderr) = aw.finish(Duration::from_secs(60));
    assert!(status.success(), "{status}\n{stderr}");
    assert!(
        candidates.contains(&aw_pid),
        "allocwatch got PID {aw_pid}, outside the planted {candidates:?}: rerun"
    );
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "precious\n",
        "the victim was written through a symlink"
    );
    let outside_now: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        outside_now,
        vec![std::ffi::OsString::from("victim")],
        "files were created through symlinks"
    );
    for (link, to) in &planted {
        assert_eq!(
            &std::fs::read_link(link).unwrap(),
            to,
            "planted link changed"
        );
    }
    for f in [&sites, &pools] {
        let meta = std::fs::symlink_metadata(f).unwrap();
        assert!(
            meta.file_type().is_file(),
            "{} is not a regular file",
            f.display()
        );
        assert_eq!(meta.mode() & 0o7777, 0o644, "{}", f.display());
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534), "{}", f.display());
        assert!(meta.nlink() == 1);
    }
    assert!(
        std::fs::read_to_string(&sites)
            .unwrap()
            .starts_with("window_start_s,")
    );
    assert!(
        read_site_rows(&sites)
            .iter()
            .any(|r| r.function == "main.allocSmall")
    );
    // Nothing else is left in the directory: no temporary file.
    let planted_names: HashSet<_> = planted
        .iter()
        .map(|(l, _)| l.file_name().unwrap().to_owned())
        .collect();
    let extra: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| !planted_names.contains(n) && n != "sites.csv" && n != "pools.csv")
        .collect();
    assert!(extra.is_empty(), "left behind: {extra:?}");
}

/// Socket inodes of a process's open files.
fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    rd.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// Inodes of the sockets in `pid`'s network namespace, per table
/// (`/proc/PID/net/<table>`, the inode in column `col`).
fn socket_table(pid: u32, table: &str) -> Vec<(u64, String)> {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
        return Vec::new();
    };
    // The inode's column: Unix sockets have fewer fields before it.
    let col = if table == "unix" { 6 } else { 9 };
    s.lines()
        .skip(1)
        .filter_map(|line| {
            let ino = line.split_whitespace().nth(col)?.parse().ok()?;
            Some((ino, format!("{table}: {}", line.trim())))
        })
        .collect()
}

/// Checks, for about `dur`, that every socket `pid` has open is a Unix or
/// netlink socket: none is TCP, UDP, raw or anything else that reaches
/// the network. Returns the most socket fds it saw at once.
fn assert_no_network_socket(pid: u32, dur: Duration, what: &str) -> usize {
    let end = Instant::now() + dur;
    let mut seen = 0;
    while Instant::now() < end {
        let mine = socket_inodes(pid);
        seen = seen.max(mine.len());
        for table in [
            "tcp", "tcp6", "udp", "udp6", "raw", "raw6", "udplite", "udplite6",
        ] {
            for (ino, desc) in socket_table(pid, table) {
                assert!(
                    !mine.contains(&ino),
                    "{what}: allocwatch has a network socket: {desc}"
                );
            }
        }
        let local: HashSet<u64> = ["unix", "netlink"]
            .iter()
            .flat_map(|t| socket_table(pid, t))
            .map(|(ino, _)| ino)
            .collect();
        // A socket closed meanwhile is in no table any more: look again.
        let still = socket_inodes(pid);
        for ino in mine.iter().filter(|i| still.contains(i)) {
            assert!(
                local.contains(ino),
                "{what}: socket {ino} of allocwatch is neither Unix nor netlink"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    seen
}

/// allocwatch opens no network socket: while `record` and `top` (in a
/// tmux terminal) trace a program, every socket they have open is a Unix
/// or netlink socket (tokio's signal handling uses a Unix socket pair);
/// none is TCP, UDP or raw, listening or not.
#[test]
fn no_network_port() {
    if skip_unless_root() {
        return;
    }
    let bin = fixture(&toolchain(GO), "paced", Variant::Default);
    let mut c = Command::new(&bin);
    go_env(&mut c).env("ALLOCWATCH_SECONDS", "60");
    let fx = Proc::spawn(c, "paced", false);
    let pid = fx.child.id().to_string();

    let aw = start_record(record_cmd(&["--pid", &pid]));
    let n = assert_no_network_socket(aw.child.id(), Duration::from_secs(1), "record");
    eprintln!("record: {n} socket fds, all Unix or netlink");
    drop(aw);

    if !support::have_tool("tmux", "-V", "`top`") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("top.log");
    let sock = format!("allocwatch-robust-{}", std::process::id());
    let script = format!(
        "exec {} top --pid {pid} --log-file {}",
        allocwatch().display(),
        log.display()
    );
    let ok = Command::new("tmux")
        .args([
            "-L",
            &sock,
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            "120",
            "-y",
            "40",
        ])
        .arg(&script)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "tmux new-session failed");
    struct Kill(String);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("tmux")
                .args(["-L", &self.0, "kill-server"])
                .status();
        }
    }
    let _server = Kill(sock.clone());
    // The pane's process is allocwatch (exec).
    let deadline = Instant::now() + Duration::from_secs(30);
    let top_pid: u32 = loop {
        let o = Command::new("tmux")
            .args(["-L", &sock, "display", "-p", "#{pane_pid}"])
            .output()
            .expect("tmux display");
        let p = String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        if p != 0 && exe_of(p) == std::fs::canonicalize(allocwatch()).unwrap() {
            break p;
        }
        assert!(Instant::now() < deadline, "top did not start");
        std::thread::sleep(Duration::from_millis(50));
    };
    // Attached once the kernel has put an int3 (0xcc) on every probed
    // instruction of the target.
    let fx_pid = fx.child.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let probed = probed_bytes(fx_pid, &bin);
        if probed.iter().all(|(_, now, _)| *now == 0xcc) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "top did not attach within 30 s: probed bytes {probed:?}; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let n = assert_no_network_socket(top_pid, Duration::from_secs(1), "top");
    eprintln!("top: {n} socket fds, all Unix or netlink");
    drop(fx);
}

/// `top`'s log as root: by default `allocwatch.log` in
/// `$XDG_STATE_HOME/allocwatch/` (directory 0700, file 0600); a symlink
/// planted at that path is refused (exit 2), and the file it points to is
/// untouched; under sudo (`SUDO_UID`/`SUDO_GID` = nobody) the directory
/// and the log are created as that user, and a place that user cannot
/// write to is refused rather than written as root. The log is opened
/// before the target is looked for, so a PID that does not exist (exit 3)
/// is enough.
#[test]
fn top_log_is_created_safely() {
    if skip_unless_root() {
        return;
    }
    let top = |state: &Path, sudo: bool| {
        let mut c = Command::new(allocwatch());
        c.args(["top", "--pid", "999999999"])
            .env("XDG_STATE_HOME", state)
            .env_remove("SUDO_UID")
            .env_remove("SUDO_GID")
            .stdin(Stdio::null());
        if sudo {
            c.env("SUDO_UID", "65534").env("SUDO_GID", "65534");
        }
        let out = c.output().expect("run allocwatch top");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o777;

    let state = tempfile::tempdir().unwrap();
    let log = state.path().join("allocwatch/allocwatch.log");
    let (code, err) = top(state.path(), false);
    assert_eq!(code, Some(3), "{err}");
    assert_eq!(mode(log.parent().unwrap()), 0o700);
    assert_eq!(mode(&log), 0o600);

    let outside = state.path().join("outside");
    std::fs::write(&outside, "keep").unwrap();
    std::fs::remove_file(&log).unwrap();
    std::os::unix::fs::symlink(&outside, &log).unwrap();
    let (code, err) = top(state.path(), false);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("is a symlink: not followed"), "{err}");
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep");
    assert!(
        std::fs::symlink_metadata(&log)
            .unwrap()
            .file_type()
            .is_symlink()
    );

    // Under sudo: the user's files, with the user's permissions.
    let theirs = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(theirs.path(), Some(65534), Some(65534)).unwrap();
    let (code, err) = top(theirs.path(), true);
    assert_eq!(code, Some(3), "{err}");
    let log = theirs.path().join("allocwatch/allocwatch.log");
    for p in [log.parent().unwrap(), log.as_path()] {
        let m = std::fs::metadata(p).unwrap();
        assert_eq!((m.uid(), m.gid()), (65534, 65534), "{}", p.display());
    }
    let roots = tempfile::tempdir().unwrap();
    let (code, err) = top(roots.path(), true);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
    assert!(!roots.path().join("allocwatch").exists());
}
