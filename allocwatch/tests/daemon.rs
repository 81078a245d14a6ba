//! `allocwatch daemon`, against the real kernel and real Go programs: the
//! daemon is attached by `--pid` to a fixture and read back over HTTP.
//!
//! - `/metrics` shows the exact counts (exact mode) per function, line and
//!   type of two `allocs` fixtures (Go 1.21 and 1.27) traced at once, each
//!   under its own `pid`, still after they exit, and forgets them after
//!   `--retain`; `/targets` lists them.
//! - `go tool pprof -top http://…/debug/pprof/allocs?pid=…&seconds=3` (the
//!   real go tool) names the hot function of a fixture that allocates
//!   without pause.
//! - SIGTERM: every probe gone from the target, exit 0 within 1 s.
//! - `--exe`: processes that match, running at the start and started later,
//!   exact; others not listed; a match that is not Go skipped.
//! - A process started later, of an executable already traced or named by
//!   its path, is counted exactly from its first allocation (held at its
//!   exec while attached); another process of the same file that no
//!   pattern matches runs on, unlisted.
//! - 20 short-lived processes in a row and one in a mount namespace of
//!   its own: each exact from its first instruction, and the daemon holds
//!   no more BPF file descriptors after them than before; a PID reused by
//!   a new process: both listed, the series are the new one's.
//! - A `--pid` that execs into a Go program is traced from the exec.
//! - A real Prometheus scrapes it and answers PromQL with the counts;
//!   `promtool check metrics` lints the exposition.
//! - A PID that is not a Go program is skipped with one log line.
//! - Bad flags exit 2, a port in use exits 4, before anything is attached.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use support::http::{get_text, start_daemon_cmd};
use support::proc::Proc;
use support::sites::{FixtureResult, SiteRow, assert_sites, check_metrics};
use support::{
    Variant, allocwatch, fixture, parse_result, probe_sites, read_probed, skip_unless_root,
    target_dir, toolchain,
};

const GO: &str = "1.27.3";

/// How long the daemon may take to exit after SIGTERM (the issue's bound).
const EXIT_AFTER_SIGTERM: Duration = Duration::from_secs(1);

/// `allocwatch daemon --listen 127.0.0.1:0 ARGS`, once it serves: the
/// process (stderr read line by line) and the address it bound.
fn start_daemon(args: &[&str]) -> (Proc, SocketAddr) {
    let mut c = Command::new(allocwatch());
    c.arg("daemon").args(["--listen", "127.0.0.1:0"]).args(args);
    start_daemon_cmd(c)
}

/// One sample of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

/// The samples of a Prometheus text exposition (label values unescaped).
fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| parse_sample(l).unwrap_or_else(|| panic!("bad sample line {l:?}")))
        .collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut labels = HashMap::new();
    let mut r = &line[name_end..];
    if let Some(mut rest) = r.strip_prefix('{') {
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                r = after;
                break;
            }
            let eq = rest.find("=\"")?;
            let (value, used) = unquote(&rest[eq + 2..])?;
            labels.insert(rest[..eq].to_string(), value);
            rest = &rest[eq + 2 + used..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }
    Some(Sample {
        name,
        labels,
        value: r.trim().parse().ok()?,
    })
}

/// A label value up to its closing quote, unescaped, and the bytes it took.
fn unquote(s: &str) -> Option<(String, usize)> {
    let mut value = String::new();
    let mut it = s.char_indices();
    loop {
        match it.next()? {
            (i, '"') => return Some((value, i + 1)),
            (_, '\\') => match it.next()?.1 {
                'n' => value.push('\n'),
                c => value.push(c),
            },
            (_, c) => value.push(c),
        }
    }
}

/// The samples named `name` of process `pid`.
fn of<'a>(samples: &'a [Sample], name: &str, pid: u32) -> Vec<&'a Sample> {
    let pid = pid.to_string();
    samples
        .iter()
        .filter(|s| s.name == name && s.labels.get("pid") == Some(&pid))
        .collect()
}

/// One entry of `/targets`.
#[derive(Debug, Deserialize)]
struct TargetJson {
    pid: u32,
    exe: String,
    go_version: Option<String>,
    mode: Option<String>,
    state: String,
    reason: Option<String>,
}

fn targets(addr: SocketAddr) -> Vec<TargetJson> {
    serde_json::from_str(&get_text(addr, "/targets")).expect("/targets JSON")
}

/// The allocation series of `pid` as sites-CSV rows (objects and bytes
/// joined by their labels).
fn site_rows(samples: &[Sample], pid: u32) -> Vec<SiteRow> {
    let key =
        |s: &Sample| ["function", "file", "line", "type", "mode"].map(|k| s.labels[k].clone());
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let bytes: HashMap<[String; 5], u64> = of(samples, "allocwatch_alloc_bytes_total", pid)
        .into_iter()
        .map(|s| (key(s), s.value as u64))
        .collect();
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    of(samples, "allocwatch_alloc_objects_total", pid)
        .into_iter()
        .map(|s| {
            let k = key(s);
            SiteRow {
                bytes: bytes[&k],
                allocs: s.value as u64,
                function: k[0].clone(),
                file: k[1].clone(),
                line: k[2].parse().unwrap_or(0),
                type_name: k[3].clone(),
            }
        })
        .collect()
}

/// Every site the fixture measured, against the `/metrics` series of `pid`
/// (summed over the rows of its function, line and type; a count of −1 asks
/// for at least one allocation); and the runtime's own count of the
/// workload's allocations.
fn check_exact(samples: &[Sample], pid: u32, res: &FixtureResult) {
    let rows = site_rows(samples, pid);
    let what = format!("PID {pid} ({})", res.go);
    assert_sites(&what, &rows, res);
    check_metrics(&what, &rows, res);
    assert!(
        of(samples, "allocwatch_alloc_objects_total", pid)
            .iter()
            .all(|r| r.labels["mode"] == "exact"),
        "exact mode: every series is exact"
    );
    let lost = of(samples, "allocwatch_events_lost_total", pid);
    assert!(
        lost.len() == 1 && lost[0].value == 0.0,
        "events lost: {lost:?}"
    );
}

/// Polls `/targets` until `pred` holds for `pid`'s entry (or it is gone,
/// for `None`), for at most `timeout`.
fn wait_target(
    addr: SocketAddr,
    pid: u32,
    timeout: Duration,
    pred: impl Fn(Option<&TargetJson>) -> bool,
) -> Vec<TargetJson> {
    let deadline = Instant::now() + timeout;
    loop {
        let list = targets(addr);
        if pred(list.iter().find(|t| t.pid == pid)) {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "PID {pid} not as expected within {timeout:?}: {list:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM: exit 0 within [`EXIT_AFTER_SIGTERM`].
fn terminate(d: &mut Proc) -> String {
    let t0 = Instant::now();
    d.signal(libc::SIGTERM);
    let (status, err) = d.finish(Duration::from_secs(10));
    let took = t0.elapsed();
    assert!(
        status.success(),
        "daemon exit after SIGTERM: {status}\n{err}"
    );
    assert!(
        took <= EXIT_AFTER_SIGTERM,
        "the daemon took {took:?} to exit after SIGTERM\n{err}"
    );
    err
}

/// An `allocs` fixture built by Go `version`, waiting to run `n` iterations.
fn allocs(version: &str, n: u32) -> (Proc, u32, std::path::PathBuf) {
    let bin = fixture(&toolchain(version), "allocs", Variant::Default);
    let mut c = Command::new(&bin);
    c.env("ALLOCWATCH_WAIT", "1")
        .env("ALLOCWATCH_N", n.to_string())
        .env("GOMAXPROCS", "1")
        .env("GOGC", "off");
    let (fx, pid) = Proc::ready(c, &format!("allocs (Go {version})"));
    (fx, pid, bin)
}

#[test]
fn metrics_show_exact_counts_also_after_exit() {
    if skip_unless_root() {
        return;
    }
    // Two processes of two Go versions, each its own series.
    let mut fixtures = [allocs("1.21.13", 2000), allocs(GO, 3000)];
    let pids: Vec<u32> = fixtures.iter().map(|f| f.1).collect();
    let retain = Duration::from_secs(6);
    let (mut d, addr) = start_daemon(&[
        "--pid",
        &pids[0].to_string(),
        "--pid",
        &pids[1].to_string(),
        "--mode",
        "exact",
        "--retain",
        "6s",
    ]);
    let list = targets(addr);
    for ((_, pid, bin), go) in fixtures.iter().zip(["go1.21.13", "go1.27.3"]) {
        let t = list.iter().find(|t| t.pid == *pid).expect("listed");
        assert_eq!(t.state, "tracing", "{list:?}");
        assert_eq!(t.mode.as_deref(), Some("exact"));
        assert_eq!(t.go_version.as_deref(), Some(go));
        assert_eq!(
            std::fs::canonicalize(&t.exe).ok(),
            std::fs::canonicalize(bin).ok()
        );
    }
    fixtures.iter_mut().for_each(|f| f.0.go());
    let results: Vec<FixtureResult> = fixtures
        .iter_mut()
        .map(|(fx, _, _)| {
            let (status, out) = fx.finish(Duration::from_secs(60));
            assert!(status.success(), "{}: {status}\n{out}", fx.name);
            parse_result(&out)
        })
        .collect();
    // The daemon notices the exits, takes the last counts and keeps them.
    for &pid in &pids {
        wait_target(addr, pid, Duration::from_secs(5), |t| {
            t.is_some_and(|t| t.state == "exited")
        });
    }
    let exited = Instant::now();
    let samples = parse_metrics(&get_text(addr, "/metrics"));
    for (&pid, res) in pids.iter().zip(&results) {
        check_exact(&samples, pid, res);
        let info = of(&samples, "allocwatch_target_info", pid);
        assert_eq!(info.len(), 1, "target_info of an exited target: {info:?}");
        assert_eq!(info[0].labels["go_version"], res.go);
    }
    let traced: Vec<_> = samples
        .iter()
        .filter(|s| s.name == "allocwatch_targets")
        .collect();
    assert!(
        traced.len() == 1 && traced[0].value == 0.0,
        "nothing traced now: {traced:?}"
    );
    // After --retain they are forgotten.
    for &pid in &pids {
        wait_target(addr, pid, retain + Duration::from_secs(5), |t| t.is_none());
    }
    assert!(
        exited.elapsed() + Duration::from_millis(500) >= retain,
        "forgotten before --retain"
    );
    let samples = parse_metrics(&get_text(addr, "/metrics"));
    for &pid in &pids {
        assert!(
            of(&samples, "allocwatch_alloc_objects_total", pid).is_empty(),
            "series of a target forgotten after --retain"
        );
    }
    terminate(&mut d);
}

#[test]
fn bad_flags_and_a_busy_port() {
    let run = |args: &[&str]| {
        let out = Command::new(allocwatch())
            .arg("daemon")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run allocwatch daemon");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&[]);
    assert_eq!(code, Some(2), "neither --pid nor --exe: {err}");
    let (code, err) = run(&["--exe", "("]);
    assert_eq!(code, Some(2), "a bad --exe pattern: {err}");
    assert!(err.contains("--exe"), "{err}");
    let (code, err) = run(&["--pid", "1", "--mode", "exact", "--sample-rate", "4096"]);
    assert_eq!(code, Some(2), "--sample-rate in exact mode: {err}");
    assert!(err.contains("error: --sample-rate"), "{err}");
    let (code, err) = run(&["--pid", "1", "--listen", "localhost"]);
    assert_eq!(code, Some(2), "--listen without a port: {err}");
    if skip_unless_root() {
        return;
    }
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().expect("addr").to_string();
    let (code, err) = run(&["--pid", "1", "--listen", &addr]);
    assert_eq!(code, Some(4), "a port in use: {err}");
    assert!(
        err.contains(&format!("error: cannot listen on {addr}")) && err.contains("hint:"),
        "{err}"
    );
    assert!(!err.contains("tracing PID"), "nothing attached: {err}");
}

/// A spin fixture that allocates `main.spinAlloc` without pause.
fn spin() -> (Proc, u32, std::path::PathBuf) {
    let bin = fixture(&toolchain(GO), "spin", Variant::Default);
    let mut c = Command::new(&bin);
    c.env("ALLOCWATCH_WAIT", "1")
        .env("ALLOCWATCH_SECONDS", "120")
        .env("GOMAXPROCS", "1");
    let (mut fx, pid) = Proc::ready(c, "spin");
    fx.go();
    (fx, pid, bin)
}

#[test]
fn go_tool_pprof_reads_a_delta_profile() {
    if skip_unless_root() {
        return;
    }
    let (mut fx, pid, _) = spin();
    let (mut d, addr) = start_daemon(&["--pid", &pid.to_string()]);
    let tc = toolchain(GO);
    let tmp = tempfile::tempdir().expect("tempdir");
    let url = format!("http://{addr}/debug/pprof/allocs?pid={pid}&seconds=3");
    let t0 = Instant::now();
    let out = Command::new(tc.go())
        .args(["tool", "pprof", "-top", &url])
        .env("GOROOT", &tc.goroot)
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOCACHE", target_dir().join("gocache").join(&tc.version))
        .env("GOPATH", target_dir().join("gopath"))
        .env("PPROF_TMPDIR", tmp.path())
        .env("HOME", tmp.path())
        .stdin(Stdio::null())
        .output()
        .expect("run go tool pprof");
    let took = t0.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "go tool pprof: {}\n{stderr}\n{stdout}",
        out.status
    );
    assert!(
        took >= Duration::from_secs(3),
        "a 3 s delta came after {took:?}"
    );
    // The first row of the table is the hottest function.
    let first = stdout
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat  flat%"))
        .nth(1)
        .unwrap_or_else(|| panic!("no -top table:\n{stdout}\n{stderr}"));
    assert!(
        first.trim_end().ends_with("main.spinAlloc"),
        "the hot function is main.spinAlloc:\n{stdout}"
    );
    assert!(fx.running(), "the fixture runs on");
    terminate(&mut d);
}

#[test]
fn sigterm_detaches_everything_and_exits_0() {
    if skip_unless_root() {
        return;
    }
    let (mut fx, pid, bin) = spin();
    let sites = probe_sites(&bin);
    let (mut d, _addr) = start_daemon(&["--pid", &pid.to_string(), "--mode", "exact"]);
    let probed = read_probed(pid, &sites);
    assert!(
        probed.iter().any(|(_, now, _)| *now == 0xcc),
        "probes installed while the daemon traces: {probed:x?}"
    );
    let err = terminate(&mut d);
    let after = read_probed(pid, &sites);
    assert!(
        after.iter().all(|(_, now, file)| now == file),
        "every probe removed after SIGTERM: {after:x?}\n{err}"
    );
    assert!(fx.running(), "the target runs on");
    fx.signal(libc::SIGINT);
    let (status, out) = fx.finish(Duration::from_secs(30));
    assert!(status.success(), "spin: {status}\n{out}");
}

#[test]
fn a_pid_that_is_not_go_is_skipped() {
    if skip_unless_root() {
        return;
    }
    let mut sleep = Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("start sleep");
    let pid = sleep.id();
    let (mut d, addr) = start_daemon(&["--pid", &pid.to_string()]);
    let list = targets(addr);
    let t = list.iter().find(|t| t.pid == pid).expect("listed");
    assert_eq!(t.state, "skipped", "{list:?}");
    assert!(
        t.reason.as_deref().is_some_and(|r| r.contains("not a Go")),
        "{t:?}"
    );
    let samples = parse_metrics(&get_text(addr, "/metrics"));
    assert!(of(&samples, "allocwatch_target_info", pid).is_empty());
    let err = terminate(&mut d);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains(&format!("PID {pid}")))
        .collect();
    assert_eq!(lines.len(), 1, "one log line for the skipped PID:\n{err}");
    assert!(
        lines[0].contains("not traced") && lines[0].contains("not a Go"),
        "{}",
        lines[0]
    );
    let _ = sleep.kill();
    let _ = sleep.wait();
}

/// A fixture run from `exe`, waiting to run `n` iterations (as [`allocs`]).
fn allocs_from(exe: &std::path::Path, n: u32, name: &str) -> (Proc, u32) {
    let mut c = Command::new(exe);
    c.env("ALLOCWATCH_WAIT", "1")
        .env("ALLOCWATCH_N", n.to_string())
        .env("GOMAXPROCS", "1")
        .env("GOGC", "off");
    Proc::ready(c, name)
}

#[test]
fn exe_traces_matching_processes_running_and_started_later() {
    if skip_unless_root() {
        return;
    }
    // Copies of the fixture under a name no other process has.
    let dir = tempfile::tempdir_in(target_dir()).expect("tempdir");
    let name = format!("aw-discover-{}", std::process::id());
    let bin = fixture(&toolchain(GO), "allocs", Variant::Default);
    let exe = dir.path().join(&name);
    std::fs::copy(&bin, &exe).expect("copy the fixture");
    // A program that matches and is not Go.
    let not_go = dir.path().join(format!("{name}-sleep"));
    std::fs::copy("/bin/sleep", &not_go).expect("copy sleep");

    let (mut early, early_pid) = allocs_from(&exe, 2000, "early allocs");
    let (mut d, addr) = start_daemon(&["--exe", &format!("^{name}"), "--mode", "exact"]);
    let list = wait_target(addr, early_pid, Duration::from_secs(1), |t| {
        t.is_some_and(|t| t.state == "tracing")
    });
    assert!(
        list.iter().all(|t| t.pid == early_pid),
        "only the process that matches: {list:?}"
    );
    // The same Go program not matching (another name), then one that matches.
    let (mut other, other_pid) = allocs_from(&bin, 1000, "allocs of another name");
    let started = Instant::now();
    let (mut late, late_pid) = allocs_from(&exe, 3000, "late allocs");
    wait_target(addr, late_pid, Duration::from_secs(10), |t| {
        t.is_some_and(|t| t.state == "tracing" && t.go_version.as_deref() == Some("go1.27.3"))
    });
    eprintln!(
        "PID {late_pid} traced {:?} after its start",
        started.elapsed()
    );
    let mut sleeper = Command::new(&not_go).arg("60").spawn().expect("start");
    let list = wait_target(addr, sleeper.id(), Duration::from_secs(10), |t| {
        t.is_some_and(|t| t.state == "skipped")
    });
    assert!(
        !list.iter().any(|t| t.pid == other_pid),
        "a process that does not match is not listed: {list:?}"
    );
    let _ = sleeper.kill();
    let _ = sleeper.wait();

    let mut results = Vec::new();
    for (fx, pid) in [(&mut early, early_pid), (&mut late, late_pid)] {
        fx.go();
        let (status, out) = fx.finish(Duration::from_secs(60));
        assert!(status.success(), "{}: {status}\n{out}", fx.name);
        results.push((pid, parse_result::<FixtureResult>(&out)));
    }
    other.go();
    let _ = other.finish(Duration::from_secs(60));
    for (pid, _) in &results {
        wait_target(addr, *pid, Duration::from_secs(5), |t| {
            t.is_some_and(|t| t.state == "exited")
        });
    }
    let samples = parse_metrics(&get_text(addr, "/metrics"));
    for (pid, res) in &results {
        check_exact(&samples, *pid, res);
    }
    assert!(of(&samples, "allocwatch_target_info", other_pid).is_empty());
    let err = terminate(&mut d);
    let skipped: Vec<&str> = err.lines().filter(|l| l.contains("not traced")).collect();
    assert_eq!(skipped.len(), 1, "one line for the one skipped:\n{err}");
    let latency = err
        .lines()
        .find(|l| l.contains(&format!("PID {late_pid} traced from")))
        .unwrap_or_else(|| panic!("no line on when PID {late_pid} was traced:\n{err}"));
    eprintln!("{latency}");
}

/// A fixture run from `exe` straight away (no wait): `n` iterations,
/// then its result.
fn allocs_now(exe: &std::path::Path, n: u32, name: &str) -> (u32, FixtureResult) {
    let mut c = Command::new(exe);
    c.env("ALLOCWATCH_N", n.to_string())
        .env("GOMAXPROCS", "1")
        .env("GOGC", "off");
    let mut fx = Proc::spawn(c, name, false);
    let pid = fx.child.id();
    let (status, out) = fx.finish(Duration::from_secs(60));
    assert!(status.success(), "{name}: {status}\n{out}");
    (pid, parse_result(&out))
}

#[test]
fn a_process_started_later_is_counted_from_its_first_allocation() {
    if skip_unless_root() {
        return;
    }
    let dir = tempfile::tempdir_in(target_dir()).expect("tempdir");
    let tag = std::process::id();
    // `named` (Go 1.27): an --exe pattern names it by its absolute path,
    // and nothing runs it at the start. `known` (Go 1.21): a pattern that
    // is no whole name matches it, and one process of it runs at the start:
    // armed once that one is traced.
    let named = dir.path().join(format!("aw-named-{tag}"));
    std::fs::copy(fixture(&toolchain(GO), "allocs", Variant::Default), &named).expect("copy");
    let known_name = format!("aw-known-{tag}");
    let known = dir.path().join(&known_name);
    std::fs::copy(
        fixture(&toolchain("1.21.13"), "allocs", Variant::Default),
        &known,
    )
    .expect("copy");
    // `by_name`: a pattern spells out the start of its base name, nothing
    // runs it.
    let prefix = format!("aw-nm{}-", tag % 100_000);
    let by_name = dir.path().join(format!("{prefix}x"));
    std::fs::copy(
        fixture(&toolchain(GO), "allocs", Variant::Default),
        &by_name,
    )
    .expect("copy");
    let by_name_pattern = format!("^{prefix}");
    // The same file as `named` under a name no pattern matches.
    let alias = dir.path().join(format!("aw-alias-{tag}"));
    std::fs::hard_link(&named, &alias).expect("hard link");

    let (mut running, running_pid) = allocs_from(&known, 1000, "known, running");
    let named_pattern = format!("^{}$", regex::escape(&named.display().to_string()));
    let (mut d, addr) = start_daemon(&[
        "--exe",
        &named_pattern,
        "--exe",
        &format!("^{known_name}"),
        "--exe",
        &by_name_pattern,
        "--mode",
        "exact",
        "-v",
    ]);
    wait_target(addr, running_pid, Duration::from_secs(5), |t| {
        t.is_some_and(|t| t.state == "tracing")
    });
    // Each allocates from its first instruction on and exits: counted
    // exactly only if traced from the start.
    let mut results = Vec::new();
    for (exe, what) in [(&named, "named"), (&known, "known"), (&by_name, "by name")] {
        let (pid, res) = allocs_now(exe, 2000, what);
        wait_target(addr, pid, Duration::from_secs(5), |t| {
            t.is_some_and(|t| t.state == "exited")
        });
        results.push((pid, res));
    }
    // The armed file rewritten in place (same inode) with another build:
    // a hold patches no instruction, so the new program runs as built, and
    // is counted from its start too.
    let other =
        std::fs::read(fixture(&toolchain("1.21.13"), "allocs", Variant::Default)).expect("read");
    std::fs::write(&named, other).expect("rewrite in place");
    let (pid, res) = allocs_now(&named, 1500, "named, rewritten");
    assert_eq!(res.go, "go1.21.13");
    wait_target(addr, pid, Duration::from_secs(5), |t| {
        t.is_some_and(|t| t.state == "exited")
    });
    results.push((pid, res));
    // Several at once: each held while those before it are attached, for
    // a second at most; every one runs to its end.
    let burst: Vec<Proc> = (0..6)
        .map(|i| {
            let mut c = Command::new(&known);
            c.env("ALLOCWATCH_N", "100").env("GOMAXPROCS", "1");
            Proc::spawn(c, &format!("known, burst {i}"), false)
        })
        .collect();
    for mut fx in burst {
        let (status, out) = fx.finish(Duration::from_secs(30));
        assert!(status.success(), "{}: {status}\n{out}", fx.name);
    }
    // A process of an armed file that is not wanted: held a moment, let go,
    // never listed.
    let (alias_pid, _) = allocs_now(&alias, 10, "alias");
    let samples = parse_metrics(&get_text(addr, "/metrics"));
    for (pid, res) in &results {
        check_exact(&samples, *pid, res);
    }
    assert!(
        !targets(addr).iter().any(|t| t.pid == alias_pid),
        "a process no pattern matches is not listed"
    );
    running.go();
    let (status, out) = running.finish(Duration::from_secs(60));
    assert!(status.success(), "{status}\n{out}");
    let err = terminate(&mut d);
    for (pid, _) in &results {
        let line = err
            .lines()
            .find(|l| l.contains(&format!("PID {pid} traced from")))
            .unwrap_or_else(|| panic!("no line on when PID {pid} was traced:\n{err}"));
        assert!(line.contains("from its first instruction"), "{line}");
        eprintln!("{line}");
    }
    for f in [&named, &known] {
        let armed = format!("new processes of {} are held at their exec", f.display());
        assert!(err.contains(&armed), "{armed}:\n{err}");
    }
    let armed = format!("new processes named {prefix}… are held at their exec");
    assert!(err.contains(&armed), "{armed}:\n{err}");
}

/// On a kernel whose BTF does not say where an exec'd file is
/// (`ALLOCWATCH_EXEC_FILES=off` makes the daemon behave so), the
/// executable of a traced process is not armed, but a name `--exe` spells
/// out is still held: its new process is counted from its first
/// instruction.
#[test]
fn without_the_exec_d_file_a_name_is_still_held() {
    if skip_unless_root() {
        return;
    }
    let dir = tempfile::tempdir_in(target_dir()).expect("tempdir");
    let name = format!("aw-nofile-{}", std::process::id() % 100_000);
    let exe = dir.path().join(&name);
    std::fs::copy(fixture(&toolchain(GO), "allocs", Variant::Default), &exe).expect("copy");
    let (mut running, running_pid) = allocs_from(&exe, 100, "running");
    let mut c = Command::new(allocwatch());
    c.arg("daemon")
        .args(["--listen", "127.0.0.1:0", "--mode", "exact", "-v"])
        .args(["--exe", &format!("^{name}$")])
        .env("ALLOCWATCH_EXEC_FILES", "off");
    let (mut d, addr) = start_daemon_cmd(c);
    wait_target(addr, running_pid, Duration::from_secs(5), |t| {
        t.is_some_and(|t| t.state == "tracing")
    });
    let (pid, res) = allocs_now(&exe, 2000, "new");
    wait_target(addr, pid, Duration::from_secs(5), |t| {
        t.is_some_and(|t| t.state == "exited")
    });
    check_exact(&parse_metrics(&get_text(addr, "/metrics")), pid, &res);
    running.go();
    let (status, out) = running.finish(Duration::from_secs(60));
    assert!(status.success(), "{status}\n{out}");
    let err = terminate(&mut d);
    assert!(
        err.contains("held by the names --exe spells out only"),
        "the daemon says what it cannot hold:\n{err}"
    );
    assert!(
        err.contains(&format!("new processes named {name} are held")),
        "{err}"
    );
    assert!(
        !err.contains(&format!("new processes of {} are held", exe.display())),
        "no executable is armed without the file in the notes:\n{err}"
    );
    let line = err
        .lines()
        .find(|l| l.contains(&format!("PID {pid} traced from")))
        .unwrap_or_else(|| panic!("no line on when PID {pid} was traced:\n{err}"));
    assert!(line.contains("from its first instruction"), "{line}");
}

/// The daemon's file descriptors for BPF objects and perf events, by
/// kind (`anon_inode:bpf-map`, `anon_inode:bpf-prog`, …): what tracing a
/// process holds.
fn bpf_fds(pid: u32) -> std::collections::BTreeMap<String, usize> {
    let mut kinds = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .flatten()
    {
        let Ok(link) = std::fs::read_link(e.path()) else {
            continue;
        };
        let link = link.to_string_lossy().into_owned();
        if link.starts_with("anon_inode:bpf") || link.contains("perf_event") {
            *kinds.entry(link).or_insert(0) += 1;
        }
    }
    kinds
}

/// The daemon's resident set size, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A copy of the Go 1.27 `allocs` fixture under a name no other process
/// has (`prefix` and this test process's PID, within the 15 bytes the
/// kernel keeps of a process name), in a directory of its own: the
/// directory, the name, the path.
fn allocs_copy(prefix: &str) -> (tempfile::TempDir, String, std::path::PathBuf) {
    let dir = tempfile::tempdir_in(target_dir()).expect("tempdir");
    let name = format!("{prefix}{}", std::process::id() % 100_000);
    let exe = dir.path().join(&name);
    std::fs::copy(fixture(&toolchain(GO), "allocs", Variant::Default), &exe).expect("copy");
    (dir, name, exe)
}

#[test]
fn short_lived_processes_and_another_mount_namespace_leave_nothing_behind() {
    if skip_unless_root() {
        return;
    }
    let (dir, name, exe) = allocs_copy("aw-lc");
    let bin = fixture(&toolchain(GO), "allocs", Variant::Default);
    let (mut d, addr) = start_daemon(&[
        "--exe",
        &format!("^{name}$"),
        "--mode",
        "exact",
        "--retain",
        "2s",
    ]);
    let daemon = d.child.id();
    let before = bpf_fds(daemon);
    // 20 processes in a row, each exact from its first instruction to its
    // exit, and forgotten 2 s later.
    let mut rss = Vec::new();
    for i in 0..20 {
        let (pid, res) = allocs_now(&exe, 200, &format!("short-lived {i}"));
        wait_target(addr, pid, Duration::from_secs(5), |t| {
            t.is_some_and(|t| t.state == "exited")
        });
        check_exact(&parse_metrics(&get_text(addr, "/metrics")), pid, &res);
        rss.push(rss_kib(daemon));
    }
    // One more of the same name in a mount namespace of its own, from a
    // file that exists only there.
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t tmpfs none "$1" && cp "$2" "$1/$3" && exec "$1/$3""#)
        .arg("sh")
        .arg(&mnt)
        .arg(&bin)
        .arg(&name)
        .env("ALLOCWATCH_N", "300")
        .env("GOMAXPROCS", "1")
        .env("GOGC", "off");
    let mut fx = Proc::spawn(c, "allocs in a mount namespace", false);
    let ns_pid = fx.child.id();
    let (status, out) = fx.finish(Duration::from_secs(60));
    assert!(status.success(), "{status}\n{out}");
    let list = wait_target(addr, ns_pid, Duration::from_secs(5), |t| {
        t.is_some_and(|t| t.state == "exited")
    });
    let inside = mnt.join(&name);
    assert!(!inside.exists(), "the namespace's file is not visible here");
    let t = list.iter().find(|t| t.pid == ns_pid).expect("listed");
    assert_eq!(
        t.exe,
        inside.display().to_string(),
        "the path as it sees it"
    );
    let res: FixtureResult = parse_result(&out);
    check_exact(&parse_metrics(&get_text(addr, "/metrics")), ns_pid, &res);
    // Every probe, program, map and link of the 21 went with them.
    let deadline = Instant::now() + Duration::from_secs(5);
    while bpf_fds(daemon) != before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        bpf_fds(daemon),
        before,
        "BPF file descriptors of the daemon"
    );
    // Memory: with each process forgotten after --retain, the RSS levels
    // off (a leak of one process's tracing, ~8 MiB with its ring buffer,
    // or of its parsed executable would show).
    eprintln!("daemon RSS after each process (KiB): {rss:?}");
    let grown = rss[19].saturating_sub(rss[7]);
    assert!(
        grown < 4 << 10,
        "RSS grew {grown} KiB over the last 12 short-lived processes: {rss:?}"
    );
    let err = terminate(&mut d);
    let held = err.matches("traced from its first instruction").count();
    assert_eq!(held, 21, "each traced from its first instruction:\n{err}");
}

#[test]
fn a_reused_pid_is_traced_as_the_new_process() {
    if skip_unless_root() {
        return;
    }
    let (_dir, name, exe) = allocs_copy("aw-ru");
    let (mut d, addr) = start_daemon(&["--exe", &format!("^{name}$"), "--mode", "exact"]);
    let (pid, _) = allocs_now(&exe, 300, "first");
    wait_target(addr, pid, Duration::from_secs(5), |t| {
        t.is_some_and(|t| t.state == "exited")
    });
    // The same PID for a new process of the same file: other processes on
    // the machine fork too, so try until it is ours.
    let mut reused = None;
    for _ in 0..50 {
        if std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).is_err() {
            break;
        }
        let mut c = Command::new(&exe);
        c.env("ALLOCWATCH_WAIT", "1")
            .env("ALLOCWATCH_N", "700")
            .env("GOMAXPROCS", "1")
            .env("GOGC", "off");
        let mut fx = Proc::spawn(c, "second", false);
        if fx.child.id() == pid {
            reused = Some(fx);
            break;
        }
        let _ = fx.child.kill();
        let _ = fx.finish(Duration::from_secs(10));
    }
    let Some(mut fx) = reused else {
        support::skip(&format!(
            "PID {pid} could not be reused through ns_last_pid"
        ));
        terminate(&mut d);
        return;
    };
    assert_eq!(fx.wait_ready(), pid);
    let list = wait_target(addr, pid, Duration::from_secs(5), |t| {
        t.is_some_and(|t| t.state == "tracing")
    });
    let states: Vec<&str> = list
        .iter()
        .filter(|t| t.pid == pid)
        .map(|t| t.state.as_str())
        .collect();
    assert_eq!(
        states,
        ["tracing", "exited"],
        "both processes listed: {list:?}"
    );
    fx.go();
    let (status, out) = fx.finish(Duration::from_secs(60));
    assert!(status.success(), "{status}\n{out}");
    let res: FixtureResult = parse_result(&out);
    wait_target(addr, pid, Duration::from_secs(5), |t| {
        t.is_some_and(|t| t.state == "exited")
    });
    // The series of the PID are the newer process's alone (no sum, no
    // duplicate labels).
    check_exact(&parse_metrics(&get_text(addr, "/metrics")), pid, &res);
    terminate(&mut d);
}

#[test]
fn a_pid_that_execs_into_a_go_program_is_traced_from_then() {
    if skip_unless_root() {
        return;
    }
    let bin = fixture(&toolchain(GO), "allocs", Variant::Default);
    // A shell that waits for a line, then execs the fixture (same PID).
    let mut c = Command::new("sh");
    c.args(["-c", "read line; exec \"$0\""])
        .arg(&bin)
        .env("ALLOCWATCH_WAIT", "1")
        .env("ALLOCWATCH_N", "2500")
        .env("GOMAXPROCS", "1")
        .env("GOGC", "off");
    let mut fx = Proc::spawn(c, "sh, then allocs", false);
    let pid = fx.child.id();
    let (mut d, addr) = start_daemon(&["--pid", &pid.to_string(), "--mode", "exact"]);
    let list = targets(addr);
    let t = list.iter().find(|t| t.pid == pid).expect("listed");
    assert_eq!(t.state, "skipped", "sh is not Go: {list:?}");
    fx.send("exec");
    assert_eq!(fx.wait_ready(), pid, "the fixture has the shell's PID");
    wait_target(addr, pid, Duration::from_secs(10), |t| {
        t.is_some_and(|t| t.state == "tracing")
    });
    fx.go();
    let (status, out) = fx.finish(Duration::from_secs(60));
    assert!(status.success(), "{status}\n{out}");
    let res: FixtureResult = parse_result(&out);
    // Listed twice now: skipped (the shell), exited (the Go program).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !targets(addr)
        .iter()
        .any(|t| t.pid == pid && t.state == "exited")
    {
        assert!(Instant::now() < deadline, "{:?}", targets(addr));
        std::thread::sleep(Duration::from_millis(50));
    }
    check_exact(&parse_metrics(&get_text(addr, "/metrics")), pid, &res);
    terminate(&mut d);
}

/// A TCP port free on loopback now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A PromQL query through Prometheus' HTTP API: each result's value.
fn prom_query(prom: SocketAddr, query: &str) -> Vec<f64> {
    let mut path = String::from("/api/v1/query?query=");
    for b in query.bytes() {
        if b.is_ascii_alphanumeric() || b"_-.".contains(&b) {
            path.push(b as char);
        } else {
            path.push_str(&format!("%{b:02X}"));
        }
    }
    let v: serde_json::Value =
        serde_json::from_str(&get_text(prom, &path)).expect("Prometheus API JSON");
    assert_eq!(v["status"], "success", "{v}");
    v["data"]["result"]
        .as_array()
        .expect("a vector")
        .iter()
        .map(|r| {
            r["value"][1]
                .as_str()
                .expect("value")
                .parse()
                .expect("number")
        })
        .collect()
}

/// Prometheus itself (Debian's package): `promtool check metrics` finds
/// nothing to say about the exposition's names and types, and a real
/// Prometheus scraping the daemon (in the format it negotiates) answers
/// PromQL with the exact counts of an `allocs` fixture.
/// Debian's Prometheus, with its own configuration (`scrape_configs`, the
/// jobs' YAML; every second) and data directory (kept with the process),
/// on a free loopback port.
fn start_prometheus(scrape_configs: &str) -> (Proc, SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n{scrape_configs}"),
    )
    .expect("config");
    let prom: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut p = Command::new("prometheus");
    p.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={prom}"));
    (Proc::spawn(p, "prometheus", true), prom, dir)
}

#[test]
fn prometheus_scrapes_the_daemon() {
    if skip_unless_root()
        || !support::skip::have_tool("prometheus", "--version", "a real Prometheus scrape")
    {
        return;
    }
    let (mut fx, pid, _) = allocs(GO, 4000);
    let (mut d, addr) = start_daemon(&["--pid", &pid.to_string(), "--mode", "exact"]);
    fx.go();
    let (status, out) = fx.finish(Duration::from_secs(60));
    assert!(status.success(), "{status}\n{out}");
    let res: FixtureResult = parse_result(&out);
    wait_target(addr, pid, Duration::from_secs(5), |t| {
        t.is_some_and(|t| t.state == "exited")
    });

    // promtool's lint of the exposition.
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    {
        use std::io::Write;
        let mut stdin = lint.stdin.take().expect("stdin");
        stdin
            .write_all(get_text(addr, "/metrics").as_bytes())
            .expect("write");
    }
    let lint = lint.wait_with_output().expect("promtool");
    assert!(
        lint.status.success() && lint.stdout.is_empty() && lint.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}",
        lint.status,
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    // Prometheus, scraping every second.
    let (mut prometheus, prom, _dir) = start_prometheus(&format!(
        "  - job_name: allocwatch\n    static_configs:\n      - targets: [\"{addr}\"]\n"
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    let query =
        format!("sum(allocwatch_alloc_objects_total{{pid=\"{pid}\",function=~\"main\\\\..*\"}})");
    let total = loop {
        assert!(
            prometheus.running(),
            "prometheus exited: {:?}",
            prometheus.out.seen
        );
        if std::net::TcpStream::connect(prom).is_ok()
            && let Some(&total) = prom_query(prom, &query).first()
        {
            break total;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus has no allocwatch series: {:?}",
            prometheus.out.seen
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    // What /metrics says (exact, checked against the fixture).
    let samples = parse_metrics(&get_text(addr, "/metrics"));
    check_exact(&samples, pid, &res);
    let want: f64 = of(&samples, "allocwatch_alloc_objects_total", pid)
        .iter()
        .filter(|s| s.labels["function"].starts_with("main."))
        .map(|s| s.value)
        .sum();
    assert!(
        want > 0.0 && (total - want).abs() < 0.5,
        "Prometheus: {total} allocations by main.*, /metrics {want}"
    );
    let up = prom_query(prom, "up{job=\"allocwatch\"}");
    assert_eq!(up, vec![1.0], "the scrape is healthy");
    prometheus.signal(libc::SIGTERM);
    let _ = prometheus.finish(Duration::from_secs(20));
    terminate(&mut d);
}

/// Prometheus's HTTP service discovery, the way Parca (`http_sd_configs`)
/// and Grafana Alloy (`discovery.http`) find their profile targets: a real
/// Prometheus reads `/sd/pprof` and makes one target per traced process,
/// this daemon's address with `?pid=PID`, labelled with its executable;
/// that URL on the pprof path serves the process's gzipped profile.
#[test]
fn profile_scrapers_discover_the_traced_processes() {
    if skip_unless_root()
        || !support::skip::have_tool("prometheus", "--version", "a real service discovery")
    {
        return;
    }
    let (mut fx, pid, _) = allocs(GO, 1000);
    let (mut d, addr) = start_daemon(&["--pid", &pid.to_string()]);
    let (mut prometheus, prom, _dir) = start_prometheus(&format!(
        "  - job_name: profiles\n    http_sd_configs:\n      - url: http://{addr}/sd/pprof\n        refresh_interval: 1s\n"
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    let target = loop {
        assert!(
            prometheus.running(),
            "prometheus exited: {:?}",
            prometheus.out.seen
        );
        if std::net::TcpStream::connect(prom).is_ok() {
            let v: serde_json::Value =
                serde_json::from_str(&get_text(prom, "/api/v1/targets")).expect("JSON");
            if let Some(t) = v["data"]["activeTargets"]
                .as_array()
                .and_then(|a| a.first())
            {
                break t.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus discovered nothing: {:?}",
            prometheus.out.seen
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    prometheus.signal(libc::SIGTERM);
    let _ = prometheus.finish(Duration::from_secs(20));
    let url = target["scrapeUrl"].as_str().expect("scrapeUrl");
    assert_eq!(
        url,
        format!("http://{addr}/metrics?pid={pid}"),
        "one target: this daemon, the process's pid: {target}"
    );
    let labels = &target["labels"];
    assert_eq!(labels["pid"], pid.to_string(), "{target}");
    let exe = labels["exe"].as_str().expect("exe");
    assert_eq!(
        labels["service_name"].as_str(),
        exe.rsplit('/').next(),
        "{target}"
    );
    assert_eq!(labels["go_version"], "go1.27.3", "{target}");
    // The same target on the profile path: the gzipped profile.
    let (status, body) = support::http::get(addr, &format!("/debug/pprof/allocs?pid={pid}"));
    assert_eq!(status, 200);
    assert_eq!(body.get(..2), Some(&[0x1f, 0x8b][..]), "gzip");
    fx.go();
    let (status, out) = fx.finish(Duration::from_secs(60));
    assert!(status.success(), "{status}\n{out}");
    // Exited processes are no longer targets.
    wait_target(addr, pid, Duration::from_secs(5), |t| {
        t.is_some_and(|t| t.state == "exited")
    });
    let sd: serde_json::Value = serde_json::from_str(&get_text(addr, "/sd/pprof")).expect("JSON");
    assert_eq!(sd, serde_json::json!([]), "no traced process");
    terminate(&mut d);
}

/// A target whose `--max-overhead` switch fails is given up, not fatal:
/// the `phases` fixture costs exact mode far more than 5 % of a core in its
/// busy phase (300,000 allocations/s), so the daemon switches it to sampled
/// mode; in its quiet tail it switches back, and that switch is made to
/// fail (`ALLOCWATCH_FAIL_SWITCH_BACK`, a test hook: attaching probes again
/// does not fail on a healthy kernel). The target is then `dropped` at
/// `/targets` with the reason, its counts stay at `/metrics`, a second
/// target is still traced, the fixture runs to its end unharmed, and the
/// daemon still exits 0 on SIGTERM.
#[test]
fn a_failed_mode_switch_drops_that_target_only() {
    if skip_unless_root() {
        return;
    }
    let bin = fixture(&toolchain("1.27.3"), "phases", Variant::Default);
    let mut c = Command::new(&bin);
    c.env("ALLOCWATCH_WAIT", "1")
        .env("ALLOCWATCH_IDLE", "1")
        .env("ALLOCWATCH_PHASE", "5")
        .env("ALLOCWATCH_RATE", "2000")
        .env("ALLOCWATCH_RATE_B", "300000")
        .env("ALLOCWATCH_TAIL", "7")
        .env("ALLOCWATCH_TAIL_RATE", "2000")
        .env("GOMAXPROCS", "1")
        .env("GOGC", "off");
    let (mut fx, pid) = Proc::ready(c, "phases");
    let (mut other, other_pid, _) = allocs("1.21.13", 100);
    let mut d = Command::new(allocwatch());
    d.arg("daemon")
        .args(["--listen", "127.0.0.1:0", "--max-overhead", "5"])
        .args(["--pid", &pid.to_string(), "--pid", &other_pid.to_string()])
        .env("ALLOCWATCH_FAIL_SWITCH_BACK", pid.to_string());
    let (mut d, addr) = support::http::start_daemon_cmd(d);
    wait_target(addr, pid, Duration::from_secs(30), |t| {
        t.is_some_and(|t| t.state == "tracing")
    });
    fx.go();
    let list = wait_target(addr, pid, Duration::from_secs(30), |t| {
        t.is_some_and(|t| t.state == "dropped")
    });
    let dropped = list.iter().find(|t| t.pid == pid).unwrap();
    assert!(
        dropped
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("mode switch failed")),
        "{dropped:?}"
    );
    let still = list.iter().find(|t| t.pid == other_pid);
    assert_eq!(still.map(|t| t.state.as_str()), Some("tracing"), "{list:?}");
    let samples = parse_metrics(&get_text(addr, "/metrics"));
    let busy: f64 = of(&samples, "allocwatch_alloc_objects_total", pid)
        .iter()
        .filter(|s| s.labels["function"] == "main.allocB")
        .map(|s| s.value)
        .sum();
    assert!(
        busy > 0.0,
        "the dropped target's counts are gone from /metrics"
    );
    let (status, out) = fx.finish(Duration::from_secs(30));
    assert!(status.success(), "phases: {status}\n{out}");
    other.go();
    let (status, out) = other.finish(Duration::from_secs(30));
    assert!(status.success(), "allocs: {status}\n{out}");
    let err = terminate(&mut d);
    assert!(err.contains("mode switch failed"), "{err}");
}
