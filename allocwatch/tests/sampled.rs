//! Sampled mode (`--mode sampled`): the runtime's own memory-profile samples,
//! scaled as pprof scales them, against the real kernel.
//!
//! - Byte shares of ten sites agree with exact mode (Go 1.21 and 1.27).
//! - A program with memory profiling off (`noprofile`: nothing references
//!   `runtime.MemProfile`, so the runtime starts with `MemProfileRate` 0):
//!   allocwatch sets the rate for the session, says so, the estimates are
//!   within 10 % of the program's own counts, and the rate reads 0 again
//!   once allocwatch has exited, at the end of `--duration`, on SIGINT and on
//!   SIGTERM (Go 1.21 and 1.27; default, stripped and PIE+stripped builds).
//!   The rate is read by the test through `/proc/PID/mem` at the address the
//!   program itself prints (`&runtime.MemProfileRate`), cross-checked with
//!   the symbol table of unstripped builds.
//! - A program with profiling off launched by `record -- PROGRAM` runs with
//!   512 KiB from its start (the runtime does not zero it), within 10 %.
//! - `--sample-rate` on a program with profiling on: the old rate (512 KiB)
//!   is back after exit; `--max-overhead` on a program with profiling off
//!   starts and sets the rate back too.

mod support;

use support::noprofile::{NoProfileResult, check_launched_estimates};
use support::proc::Proc;
use support::{allocwatch, parse_result, read_site_rows, read_word};

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Variant, fixture, toolchain};

#[derive(Debug, serde::Deserialize)]
struct Row {
    function: String,
    #[serde(rename = "type")]
    type_name: String,
    bytes: u64,
}

/// Runs `record --mode MODE --csv F -- bin` and returns bytes per function.
fn bytes_by_function(
    bin: &Path,
    mode: &str,
    secs: &str,
) -> (HashMap<String, u64>, Vec<Row>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv_path = dir.path().join("sites.csv");
    let out = Command::new(allocwatch())
        .args(["record", "--mode", mode, "--csv"])
        .arg(&csv_path)
        .arg("--")
        .arg(bin)
        .env("ALLOCWATCH_SECONDS", secs)
        .env("GOMAXPROCS", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run allocwatch");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "allocwatch --mode {mode} failed:\n{stderr}"
    );
    let mut r = csv::Reader::from_path(&csv_path).expect("csv");
    let rows: Vec<Row> = r.deserialize().map(|x| x.expect("row")).collect();
    let mut by = HashMap::new();
    for row in &rows {
        if row.function.starts_with("main.share") {
            *by.entry(row.function.clone()).or_insert(0) += row.bytes;
        }
    }
    (by, rows, stderr)
}

fn shares(by: &HashMap<String, u64>) -> HashMap<String, f64> {
    let total: u64 = by.values().sum();
    #[allow(clippy::cast_precision_loss)]
    by.iter()
        .map(|(k, v)| (k.clone(), 100.0 * *v as f64 / total.max(1) as f64))
        .collect()
}

/// Byte shares of ten sites (1 % to 40 %) in sampled mode are within ±3
/// percentage points of exact mode's.
#[test]
fn sampled_shares_match_exact() {
    if support::skip_unless_root() {
        return;
    }
    for version in ["1.21.13", "1.27.3"] {
        let bin = fixture(&toolchain(version), "shares", Variant::Default);
        let (exact, _, _) = bytes_by_function(&bin, "exact", "6");
        let (sampled, rows, stderr) = bytes_by_function(&bin, "sampled", "6");
        assert!(
            stderr.contains("sampled mode"),
            "the summary names the mode:\n{stderr}"
        );
        assert!(
            stderr.contains("estimates"),
            "the summary says the numbers are estimates:\n{stderr}"
        );
        assert_eq!(
            exact.len(),
            10,
            "go{version}: exact mode sees the ten sites: {exact:?}"
        );
        assert_eq!(
            sampled.len(),
            10,
            "go{version}: sampled mode sees the ten sites: {sampled:?}\n{stderr}"
        );
        let (e, s) = (shares(&exact), shares(&sampled));
        for (f, es) in &e {
            let ss = s[f];
            assert!(
                (es - ss).abs() <= 3.0,
                "go{version}: {f}: exact {es:.2}% vs sampled {ss:.2}%"
            );
        }
        // A sample knows no type: the column is empty, never a guess.
        for r in rows.iter().filter(|r| r.function.starts_with("main.share")) {
            assert!(
                r.type_name.is_empty() || r.type_name == "[]uint8",
                "unexpected type {:?}",
                r.type_name
            );
        }
    }
}

/// How `record` is stopped.
#[derive(Clone, Copy, Debug)]
enum Stop {
    Duration,
    Sigint,
    Sigterm,
}

/// The `.symtab` address of `name`, and the first byte the file holds
/// there (`None` in `.bss`). `None` without the symbol.
fn symbol(bin: &Path, name: &str) -> Option<(u64, Option<u8>)> {
    use object::{Object, ObjectSection, ObjectSymbol};
    let data = std::fs::read(bin).expect("read fixture");
    let obj = object::File::parse(&*data).expect("parse ELF");
    let addr = obj.symbols().find(|s| s.name() == Ok(name))?.address();
    let byte = obj
        .sections()
        .find_map(|sec| sec.data_range(addr, 1).ok().flatten())
        .and_then(|b| b.first().copied());
    Some((addr, byte))
}

/// The runtime load bias of `bin` in `pid` (0 unless PIE).
fn load_bias(pid: u32, bin: &Path) -> u64 {
    use object::{Object, ObjectSegment};
    let data = std::fs::read(bin).expect("read fixture");
    let obj = object::File::parse(&*data).expect("parse ELF");
    let first = obj.segments().map(|s| s.address()).min().expect("PT_LOAD");
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("exe");
    let start = maps
        .lines()
        .find(|l| l.ends_with(&*exe.to_string_lossy()))
        .and_then(|l| u64::from_str_radix(l.split('-').next()?, 16).ok())
        .expect("the executable's first mapping");
    start - (first & !0xfff)
}

/// The fixture's answer to `rate`: (`runtime.MemProfileRate`, its address).
fn ask_rate(fx: &mut Proc) -> (u64, u64) {
    fx.send("rate");
    let line = fx
        .out
        .wait_for(Duration::from_secs(10), |l| l.starts_with("rate "))
        .expect("rate line");
    let mut it = line.split_whitespace().skip(1);
    let rate = it.next().and_then(|v| v.parse().ok()).expect("rate value");
    let addr = it
        .next()
        .and_then(|v| u64::from_str_radix(v, 16).ok())
        .expect("rate address");
    (rate, addr)
}

/// `record --mode sampled --pid` on a waiting `noprofile` fixture, stopped by
/// `stop`: the rate is set (and announced) while tracing, the estimates are
/// within 10 % of the fixture's counts, and the rate is 0 again afterwards.
fn profiling_switched_on_and_back(version: &str, variant: Variant, stop: Stop) {
    let what = format!("go{version} {} {stop:?}", variant.name());
    let tc = toolchain(version);
    let bin = fixture(&tc, "noprofile", variant);
    let mut cmd = Command::new(&bin);
    cmd.env("ALLOCWATCH_WAIT", "1").env("GOMAXPROCS", "1");
    let (mut fx, pid) = Proc::ready(cmd, "noprofile fixture");
    let (rate, addr) = ask_rate(&mut fx);
    assert_eq!(rate, 0, "{what}: the linker switched memory profiling off");
    if let Some((sym, flag)) = symbol(&bin, "runtime.MemProfileRate")
        .map(|(a, _)| a)
        .zip(symbol(&bin, "runtime.disableMemoryProfiling"))
    {
        assert_eq!(
            addr,
            sym + load_bias(pid, &bin),
            "{what}: address vs .symtab"
        );
        assert_eq!(
            flag.1,
            Some(1),
            "{what}: disableMemoryProfiling in the file"
        );
    }
    assert_eq!(read_word(pid, addr), 0, "{what}: /proc/PID/mem before");

    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("sites.csv");
    let mut aw_cmd = Command::new(allocwatch());
    aw_cmd
        .args([
            "record",
            "--mode",
            "sampled",
            "--pid",
            &pid.to_string(),
            "--csv",
        ])
        .arg(&csv);
    if let Stop::Duration = stop {
        aw_cmd.args(["--duration", "8s"]);
    }
    let mut aw = Proc::spawn(aw_cmd, "allocwatch", true);
    let tracing = aw
        .out
        .wait_for(Duration::from_secs(30), |l| l.contains("tracing PID"));
    let announced = aw.out.seen.join("\n");
    assert!(tracing.is_some(), "{what}: never traced:\n{announced}");
    assert!(
        announced.contains(&format!(
            "memory profiling is off in PID {pid} (runtime.MemProfileRate = 0"
        )) && announced.contains("set runtime.MemProfileRate to 524288 for this session"),
        "{what}: the announcement:\n{announced}"
    );
    assert_eq!(read_word(pid, addr), 524_288, "{what}: rate while tracing");

    fx.send("run");
    let line = fx
        .out
        .wait_for(Duration::from_secs(60), |l| l.starts_with("result "))
        .unwrap_or_else(|| panic!("{what}: no result: {:?}", fx.out.seen));
    let res: NoProfileResult = parse_result(&line);
    assert_eq!(
        (res.rate_before, res.rate_after),
        (524_288, 524_288),
        "{what}: the program saw the rate"
    );
    assert!(
        aw.running(),
        "{what}: allocwatch stopped before the workload ended"
    );
    match stop {
        Stop::Duration => {}
        Stop::Sigint => aw.signal(libc::SIGINT),
        Stop::Sigterm => aw.signal(libc::SIGTERM),
    }
    let (status, stderr) = aw.finish(Duration::from_secs(30));
    assert!(status.success(), "{what}: {status}\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "runtime.MemProfileRate of PID {pid} set back to 0"
        )),
        "{what}:\n{stderr}"
    );
    assert_eq!(read_word(pid, addr), 0, "{what}: /proc/PID/mem after exit");
    assert_eq!(
        ask_rate(&mut fx),
        (0, addr),
        "{what}: the program's own view after"
    );

    let rows = read_site_rows(&csv);
    for s in &res.sites {
        let (allocs, bytes) = rows
            .iter()
            .filter(|r| r.function == s.func)
            .fold((0, 0), |(a, b), r| (a + r.allocs, b + r.bytes));
        #[allow(clippy::cast_precision_loss)]
        let off = |got: u64, want: u64| (got as f64 - want as f64).abs() / want as f64;
        assert!(
            off(allocs, s.count) <= 0.10 && off(bytes, s.bytes) <= 0.10,
            "{what} ({}): {}: estimated {allocs} allocs / {bytes} bytes, true {} / {}",
            res.go,
            s.func,
            s.count,
            s.bytes
        );
    }
    fx.close_stdin();
    let (st, _) = fx.finish(Duration::from_secs(20));
    assert!(st.success(), "{what}: fixture {st}");
}

#[test]
fn profiling_off_switched_on_and_back_at_end_of_duration() {
    if support::skip_unless_root() {
        return;
    }
    profiling_switched_on_and_back("1.27.3", Variant::Default, Stop::Duration);
    profiling_switched_on_and_back("1.21.13", Variant::Stripped, Stop::Duration);
}

#[test]
fn profiling_off_switched_on_and_back_on_sigint() {
    if support::skip_unless_root() {
        return;
    }
    profiling_switched_on_and_back("1.21.13", Variant::Default, Stop::Sigint);
    profiling_switched_on_and_back("1.27.3", Variant::PieStripped, Stop::Sigint);
}

#[test]
fn profiling_off_switched_on_and_back_on_sigterm() {
    if support::skip_unless_root() {
        return;
    }
    profiling_switched_on_and_back("1.27.3", Variant::Stripped, Stop::Sigterm);
    profiling_switched_on_and_back("1.21.13", Variant::PieStripped, Stop::Sigterm);
}

/// `--sample-rate` on a program with memory profiling on (`shares`
/// references runtime.MemProfile): the rate is the one asked for while
/// tracing, and its old 512 KiB after allocwatch exits.
#[test]
fn sample_rate_is_set_and_the_old_rate_restored() {
    if support::skip_unless_root() {
        return;
    }
    for version in ["1.21.13", "1.27.3"] {
        let bin = fixture(&toolchain(version), "shares", Variant::Default);
        let (sym, _) = symbol(&bin, "runtime.MemProfileRate").expect(".symtab");
        let mut cmd = Command::new(&bin);
        cmd.env("ALLOCWATCH_SECONDS", "30").env("GOMAXPROCS", "1");
        let mut fx = Proc::spawn(cmd, "shares fixture", false);
        let pid = fx.child.id();
        std::thread::sleep(Duration::from_millis(200));
        let addr = sym + load_bias(pid, &bin);
        assert_eq!(read_word(pid, addr), 524_288, "go{version}: before");
        let mut aw_cmd = Command::new(allocwatch());
        aw_cmd.args([
            "record",
            "--mode",
            "sampled",
            "--sample-rate",
            "65536",
            "--pid",
            &pid.to_string(),
        ]);
        let mut aw = Proc::spawn(aw_cmd, "allocwatch", true);
        assert!(
            aw.out
                .wait_for(Duration::from_secs(30), |l| l.contains("tracing PID"))
                .is_some(),
            "go{version}: {:?}",
            aw.out.seen
        );
        let seen = aw.out.seen.join("\n");
        assert!(
            seen.contains(&format!(
                "set runtime.MemProfileRate of PID {pid} to 65536 (--sample-rate) for this session; it was 524288"
            )),
            "go{version}:\n{seen}"
        );
        assert_eq!(read_word(pid, addr), 65_536, "go{version}: while tracing");
        std::thread::sleep(Duration::from_millis(500));
        aw.signal(libc::SIGINT);
        let (status, stderr) = aw.finish(Duration::from_secs(30));
        assert!(status.success(), "go{version}: {status}\n{stderr}");
        assert!(
            stderr.contains(&format!(
                "runtime.MemProfileRate of PID {pid} set back to 524288"
            )),
            "go{version}:\n{stderr}"
        );
        assert_eq!(read_word(pid, addr), 524_288, "go{version}: after exit");
        assert!(fx.running(), "go{version}: the target runs on");
    }
}

/// `--max-overhead` falls back on the runtime's samples: on a program with
/// memory profiling off it starts (it used to refuse), sets the rate at the
/// start for the session, and sets it back at the end.
#[test]
fn max_overhead_on_a_program_with_profiling_off() {
    if support::skip_unless_root() {
        return;
    }
    let bin = fixture(&toolchain("1.27.3"), "noprofile", Variant::Stripped);
    let mut cmd = Command::new(&bin);
    cmd.env("ALLOCWATCH_WAIT", "1").env("GOMAXPROCS", "1");
    let (mut fx, pid) = Proc::ready(cmd, "noprofile fixture");
    let (_, addr) = ask_rate(&mut fx);
    let out = Command::new(allocwatch())
        .args(["record", "--max-overhead", "5", "--duration", "1s", "--pid"])
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("run allocwatch");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stderr}", out.status);
    assert!(
        stderr.contains("memory profiling is off in PID")
            && stderr.contains(&format!(
                "runtime.MemProfileRate of PID {pid} set back to 0"
            )),
        "{stderr}"
    );
    assert_eq!(read_word(pid, addr), 0, "after exit");
    assert_eq!(ask_rate(&mut fx).0, 0);
}

/// `--sample-rate` takes a positive number of bytes, and only where samples
/// are used: anything else is a usage error (exit 2) before anything starts.
#[test]
fn bad_sample_rates_are_usage_errors() {
    for (args, want) in [
        (
            &["--mode", "sampled", "--sample-rate", "0"][..],
            "not a positive number of bytes",
        ),
        (
            &["--mode", "sampled", "--sample-rate", "-4096"][..],
            "not a positive number of bytes",
        ),
        (
            &["--mode", "sampled", "--sample-rate", "4k"][..],
            "not a positive number of bytes",
        ),
        (&["--sample-rate", "4096"][..], "--sample-rate"),
    ] {
        let mut args = args.to_vec();
        args.extend(["--pid", "1"]);
        support::record_refused(&args, want);
    }
}

/// `record --mode sampled -- PROGRAM` on a program with memory profiling
/// off: allocwatch keeps the runtime from zeroing the rate at start (the
/// program sees 512 KiB from its first line) and the estimates are within
/// 10 % of its counts (Go 1.21 and 1.27, stripped).
#[test]
fn launched_program_with_profiling_off_is_sampled_from_the_start() {
    if support::skip_unless_root() {
        return;
    }
    for version in ["1.21.13", "1.27.3"] {
        let bin = fixture(&toolchain(version), "noprofile", Variant::Stripped);
        let dir = tempfile::tempdir().expect("tempdir");
        let csv = dir.path().join("sites.csv");
        let out = Command::new(allocwatch())
            .args(["record", "--mode", "sampled", "--csv"])
            .arg(&csv)
            .arg("--")
            .arg(&bin)
            .env("GOMAXPROCS", "1")
            .stdin(Stdio::null())
            .output()
            .expect("run allocwatch");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "go{version}: {}\n{stderr}",
            out.status
        );
        assert!(
            stderr.contains("memory profiling is off in PID"),
            "go{version}:\n{stderr}"
        );
        let res: NoProfileResult = parse_result(&String::from_utf8_lossy(&out.stdout));
        check_launched_estimates(&format!("go{version}"), &res, &read_site_rows(&csv));
    }
}
