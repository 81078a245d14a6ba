//! The benchmarks of docs/benchmarks.md, run by `cargo xtask bench`:
//!
//! ```sh
//! cargo test --release -p allocwatch --test bench -- --ignored --nocapture --test-threads=1
//! ```
//!
//! Every benchmark is an `#[ignore]`d test, so the normal test suite skips
//! them. Environment: `ALLOCWATCH_BENCH_SECONDS` (run time of one
//! measurement, default 3), `ALLOCWATCH_BENCH_ROUNDS` (repetitions of each
//! measurement, default 5 for the allocation benchmarks 1 and 7 and 3 for the
//! others).
//!
//! The machine they were written for is a shared, noisy 2-vCPU VM, so:
//! - the variants of one benchmark run interleaved in one test, in an order
//!   rotated every round, and every figure is the median over the rounds;
//!   ratios are computed between medians of the same run;
//! - the cost of an operation is measured as CPU time (the target's
//!   utime + stime from `wait4`, which the kernel derives from its precise
//!   per-task run time) divided by the operations the target counted. The
//!   uprobe trap and the eBPF program run in the target's context, so they
//!   are included; CPU time is not inflated when other work on the machine
//!   takes the CPU away, as wall time is. The fixture's own wall-clock
//!   figure is printed next to it;
//! - results are printed, not asserted, except where they are exact (the
//!   counts allocwatch reports against the counts the fixture made).
//!
//! Each benchmark prints lines `BENCH | name | value | unit | target | status`
//! and the last test (`z_summary`) prints them all again and writes them to
//! `target/bench/results.md`.

mod support;

use support::allocwatch;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::proc::{Lines, Proc};
use support::{GoToolchain, Variant, fixture, skip_unless_root, toolchain};

const GO: &str = "1.27.3";

// ---------------------------------------------------------------------------
// Settings and reporting

fn seconds() -> f64 {
    std::env::var("ALLOCWATCH_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s: &f64| *s > 0.0)
        .unwrap_or(3.0)
}

fn rounds(default: usize) -> usize {
    std::env::var("ALLOCWATCH_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|r: &usize| *r > 0)
        .unwrap_or(default)
}

fn go() -> GoToolchain {
    toolchain(GO)
}

/// Every table line printed so far (the tests run in one process, in name order).
static ROWS: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[derive(Clone, Copy)]
enum Goal {
    /// Informational.
    None,
    AtMost(f64),
    Below(f64),
}

impl Goal {
    fn text(self, unit: &str) -> String {
        match self {
            Goal::None => "-".into(),
            Goal::AtMost(x) => format!("≤ {} {unit}", num(x)),
            Goal::Below(x) => format!("< {} {unit}", num(x)),
        }
        .replace(" ×", "×")
    }
    fn status(self, v: f64) -> &'static str {
        match self {
            Goal::None => "-",
            Goal::AtMost(x) if v <= x => "PASS",
            Goal::Below(x) if v < x => "PASS",
            _ => "MISS",
        }
    }
}

fn num(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else if x.abs() >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// Prints and records one table line.
fn row(name: &str, value: f64, unit: &str, goal: Goal) {
    let line = format!(
        "| {name} | {} | {unit} | {} | {} |",
        num(value),
        goal.text(unit),
        goal.status(value)
    );
    println!("BENCH {line}");
    ROWS.lock().unwrap_or_else(|e| e.into_inner()).push(line);
}

/// A note printed under a benchmark (and kept for the summary).
fn note(text: &str) {
    println!("  {text}");
    ROWS.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(format!("  {text}"));
}

fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

fn list(v: &[f64]) -> String {
    v.iter().map(|x| num(*x)).collect::<Vec<_>>().join(" ")
}

// ---------------------------------------------------------------------------
// One traced (or untraced) run of the spin fixture

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// `main.spinAlloc`: 24-byte `main.T` (Go 1.27: `mallocgcSmallNoScanSC3`).
    Small,
    /// `main.spinAllocBig`: 128-byte `main.Big` (newobject → `mallocgc`).
    Big,
    /// `main.poolPair`: one `sync.Pool` Get + Put.
    Pool,
}

impl Mode {
    /// The workload's allocation site and type. (The runtime's own
    /// allocations while it starts a GC inside that call, e.g. the mark
    /// worker's `runtime.g`, are attributed to the same site with their own
    /// types: allocwatch is right to count them, the fixture does not.)
    fn site(self) -> (&'static str, &'static str) {
        match self {
            Mode::Small => ("main.spinAlloc", "main.T"),
            Mode::Big => ("main.spinAllocBig", "main.Big"),
            Mode::Pool => ("main.newBenchT", "main.T"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tracer {
    None,
    /// `allocwatch record --csv F`: exact mode (the default).
    Allocwatch,
    /// `allocwatch record --mode sampled --csv F`: the runtime's own
    /// memory-profile samples (spin has memory profiling off: allocwatch
    /// switches it on for the session), with `--sample-rate N` when given.
    AllocwatchSampled(Option<u64>),
    /// `allocwatch record --noop-programs`: empty programs at the same probes.
    Noop,
    /// `allocwatch record --bench-programs read1|read2`: programs that only
    /// make the user reads attribution needs (1: the return address; 2: and
    /// the caller's frame record) at the same probes.
    ReadFloor(&'static str),
    /// A bpftrace one-liner counting user stacks at this function's entry.
    Bpftrace(&'static str),
    /// bpftrace counting hits only (`@ = count()`), no stack: the cost of
    /// bpftrace's probe at the function's entry.
    BpftraceCount(&'static str),
}

impl Tracer {
    fn name(self) -> String {
        match self {
            Tracer::None => "untraced".into(),
            Tracer::Allocwatch => "allocwatch".into(),
            Tracer::AllocwatchSampled(None) => "allocwatch sampled".into(),
            Tracer::AllocwatchSampled(Some(r)) => format!("allocwatch sampled --sample-rate {r}"),
            Tracer::Noop => "noop (floor)".into(),
            Tracer::ReadFloor(n) => format!("{n} (read floor)"),
            Tracer::Bpftrace(f) => format!("bpftrace {f} ustack(3)"),
            Tracer::BpftraceCount(f) => format!("bpftrace {f} count only"),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Run {
    mode: Mode,
    threads: u32,
    tracer: Tracer,
    bpf_stats: bool,
}

#[derive(Debug, Default)]
struct Outcome {
    /// Operations the fixture did (allocations or Get+Put pairs).
    n: u64,
    /// The fixture's own figure: wall ns × threads / n.
    wall_ns_per_op: f64,
    /// The fixture's CPU time / n.
    cpu_ns_per_op: f64,
    /// allocwatch's line `… probes attached in M ms`.
    attach_ms: Option<f64>,
    /// allocwatch's `--json` summary: allocations, events lost.
    allocs: Option<u64>,
    lost: Option<u64>,
    /// `ALLOCWATCH_BPF_STATS=1`: program runs and ns per run (`--json`).
    bpf_hits: Option<u64>,
    bpf_ns_per_hit: Option<f64>,
    /// The tracer's CPU time from the release of the workload to its exit.
    tracer_cpu_ns: f64,
    /// Wall time from the release of the workload to the tracer's exit.
    tracer_wall: Duration,
    /// allocwatch CSV: allocations at the workload's site (Small, Big) or
    /// gets / puts of `main.benchPool` (Pool).
    csv_site_allocs: Option<u64>,
    /// allocwatch sampled CSV: the estimated allocations at the workload's
    /// function (any type: samples have none). Not exact, never compared.
    csv_sampled_allocs: Option<u64>,
    /// Probe hits (`--json`: `probes.hits`).
    hits: Option<u64>,
    csv_pool: Option<(u64, u64)>,
    /// bpftrace: sum of its counts.
    bpftrace_total: Option<u64>,
}

fn spin_bin() -> PathBuf {
    fixture(&go(), "spin", Variant::Default)
}

/// Parses `key=value` from the fixture's `bench …` line.
fn field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// The number right before `suffix` in `text` (e.g. "213482 allocations").
fn number_before(text: &str, suffix: &str) -> Option<f64> {
    let i = text.find(suffix)?;
    let head = text[..i].trim_end();
    let start = head
        .rfind(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or(0, |j| j + 1);
    head[start..].parse().ok()
}

/// Sums of the columns `cols` over the CSV rows whose columns match `keys`.
fn read_csv_counts(path: &Path, keys: &[(&str, &str)], cols: &[&str]) -> Option<Vec<u64>> {
    let mut r = csv::Reader::from_path(path).ok()?;
    let headers = r.headers().ok()?.clone();
    let idx = |c: &str| headers.iter().position(|h| h == c);
    let ks: Vec<(usize, &str)> = keys
        .iter()
        .map(|(c, v)| idx(c).map(|i| (i, *v)))
        .collect::<Option<_>>()?;
    let cis: Vec<usize> = cols.iter().map(|c| idx(c)).collect::<Option<_>>()?;
    let mut sums = vec![0u64; cols.len()];
    let mut found = false;
    for rec in r.records().flatten() {
        if ks.iter().all(|&(i, v)| rec.get(i) == Some(v)) {
            found = true;
            for (s, &ci) in sums.iter_mut().zip(&cis) {
                *s += rec.get(ci).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            }
        }
    }
    found.then_some(sums)
}

/// Starts the tracer against `pid` and waits until its probes are attached.
fn start_tracer(run: Run, pid: u32, bin: &Path, dir: &Path) -> Option<(Proc, Lines)> {
    let timeout = Duration::from_secs(120);
    match run.tracer {
        Tracer::None => None,
        Tracer::Allocwatch | Tracer::AllocwatchSampled(_) | Tracer::Noop | Tracer::ReadFloor(_) => {
            let mut cmd = Command::new(allocwatch());
            cmd.arg("record").arg("--pid").arg(pid.to_string());
            cmd.arg("--json").arg(dir.join("summary.json"));
            if run.tracer == Tracer::Noop {
                cmd.arg("--noop-programs");
            } else if let Tracer::ReadFloor(n) = run.tracer {
                cmd.arg("--bench-programs").arg(n);
            } else if let Tracer::AllocwatchSampled(rate) = run.tracer {
                cmd.args(["--mode", "sampled", "--csv"])
                    .arg(dir.join("sites.csv"));
                if let Some(r) = rate {
                    cmd.arg("--sample-rate").arg(r.to_string());
                }
            } else {
                cmd.arg("--csv").arg(dir.join("sites.csv"));
                if run.mode == Mode::Pool {
                    cmd.arg("--pools-csv").arg(dir.join("pools.csv"));
                }
            }
            if run.bpf_stats {
                cmd.env("ALLOCWATCH_BPF_STATS", "1");
            } else {
                cmd.env_remove("ALLOCWATCH_BPF_STATS");
            }
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let mut p = Proc::start(&mut cmd, "allocwatch");
            let mut lines = Lines::spawn(p.child.stderr.take().expect("stderr"));
            if lines
                .wait_for(timeout, |l| l.contains("probes attached in"))
                .is_none()
            {
                let rest = lines.finish(Duration::from_secs(5));
                panic!("allocwatch did not attach:\n{rest}");
            }
            Some((p, lines))
        }
        Tracer::Bpftrace(func) | Tracer::BpftraceCount(func) => {
            let action = if matches!(run.tracer, Tracer::Bpftrace(_)) {
                "@[ustack(3)] = count();"
            } else {
                "@ = count();"
            };
            let prog = format!(
                "BEGIN {{ printf(\"attached\\n\"); }} uprobe:{}:{func} {{ {action} }}",
                bin.display()
            );
            let mut cmd = Command::new("bpftrace");
            cmd.arg("-p")
                .arg(pid.to_string())
                .arg("-e")
                .arg(prog)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            let mut p = Proc::start(&mut cmd, "bpftrace");
            let mut lines = Lines::spawn(p.child.stdout.take().expect("stdout"));
            // bpftrace fires BEGIN once every probe is attached.
            if lines
                .wait_for(timeout, |l| l.trim() == "attached")
                .is_none()
            {
                let rest = lines.finish(Duration::from_secs(5));
                panic!("bpftrace did not attach:\n{rest}");
            }
            Some((p, lines))
        }
    }
}

/// One run: start the fixture (waiting), attach the tracer, release the
/// workload for `seconds()`, collect everything.
fn spin_run(run: Run) -> Outcome {
    let bin = spin_bin();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(&bin);
    cmd.env("GOMAXPROCS", run.threads.to_string())
        .env("GOGC", "off")
        .env("ALLOCWATCH_WAIT", "1")
        .env("ALLOCWATCH_BENCH", "1")
        .env("ALLOCWATCH_SECONDS", format!("{}", seconds()))
        .env("ALLOCWATCH_THREADS", run.threads.to_string())
        .env_remove("ALLOCWATCH_N")
        .env_remove("ALLOCWATCH_BIGOBJ")
        .env_remove("ALLOCWATCH_POOLBENCH")
        .env_remove("GOMEMLIMIT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    match run.mode {
        Mode::Small => {}
        Mode::Big => {
            cmd.env("ALLOCWATCH_BIGOBJ", "1");
        }
        Mode::Pool => {
            cmd.env("ALLOCWATCH_POOLBENCH", "1");
        }
    }
    let mut fx = Proc::start(&mut cmd, "spin fixture");
    let mut stdin = fx.child.stdin.take().expect("stdin");
    let mut out = Lines::spawn(fx.child.stdout.take().expect("stdout"));
    let ready = out
        .wait_for(Duration::from_secs(60), |l| l.starts_with("ready "))
        .unwrap_or_else(|| panic!("spin fixture not ready:\n{}", out.text()));
    let pid: u32 = ready[6..].trim().parse().expect("ready <pid>");

    let mut tracer = start_tracer(run, pid, &bin, dir.path());
    let cpu_at_release = tracer.as_ref().map_or(0.0, |(p, _)| p.cpu_now());
    let released = Instant::now();
    stdin.write_all(b"go\n").expect("release the workload");
    drop(stdin);

    let limit = Duration::from_secs_f64(seconds() * 20.0 + 120.0);
    let result = out.wait_for(limit, |l| l.starts_with("result "));
    let ended = fx.reap(Duration::from_secs(30));
    let text = out.text();
    assert!(
        result.is_some() && ended.success,
        "spin fixture ({run:?}) failed:\n{text}"
    );
    let bench = text
        .lines()
        .find(|l| l.starts_with("bench "))
        .expect("bench line");
    let n = field(bench, "allocs")
        .or_else(|| field(bench, "pairs"))
        .expect("bench count") as u64;
    let wall = field(bench, "ns_per_alloc")
        .or_else(|| field(bench, "ns_per_pair"))
        .expect("bench ns");
    let mut o = Outcome {
        n,
        wall_ns_per_op: wall,
        cpu_ns_per_op: ended.cpu_ns / n.max(1) as f64,
        ..Outcome::default()
    };

    if let Some((mut p, mut lines)) = tracer.take() {
        // allocwatch and bpftrace -p both stop when the target exits.
        let end = p.reap(Duration::from_secs(30));
        o.tracer_wall = released.elapsed();
        o.tracer_cpu_ns = end.cpu_ns - cpu_at_release;
        let log = lines.finish(Duration::from_secs(5));
        assert!(end.success, "{} failed:\n{log}", run.tracer.name());
        match run.tracer {
            Tracer::Bpftrace(_) | Tracer::BpftraceCount(_) => {
                o.bpftrace_total = Some(
                    log.lines()
                        .filter_map(|l| {
                            let l = l.trim();
                            l.strip_prefix("]: ").or_else(|| l.strip_prefix("@: "))
                        })
                        .filter_map(|v| v.trim().parse::<u64>().ok())
                        .sum(),
                );
            }
            _ => {
                o.attach_ms = log
                    .lines()
                    .find(|l| l.contains("probes attached in"))
                    .and_then(|l| number_before(l, " ms"));
                let summary = support::read_summary(&dir.path().join("summary.json"));
                o.allocs = Some(summary.totals.allocs);
                o.lost = Some(summary.events.lost);
                o.hits = Some(summary.probes.hits);
                o.bpf_hits = summary.probes.program_runs;
                o.bpf_ns_per_hit = summary.probes.program_ns_per_hit;
                if run.tracer == Tracer::Allocwatch {
                    if run.mode == Mode::Pool {
                        o.csv_pool = read_csv_counts(
                            &dir.path().join("pools.csv"),
                            &[("pool", "main.benchPool")],
                            &["gets", "puts"],
                        )
                        .map(|v| (v[0], v[1]));
                    } else {
                        let (func, typ) = run.mode.site();
                        o.csv_site_allocs = read_csv_counts(
                            &dir.path().join("sites.csv"),
                            &[("function", func), ("type", typ)],
                            &["allocs"],
                        )
                        .map(|v| v[0]);
                    }
                }
                if let Tracer::AllocwatchSampled(_) = run.tracer {
                    // Samples know no type: match the function only.
                    o.csv_sampled_allocs = read_csv_counts(
                        &dir.path().join("sites.csv"),
                        &[("function", run.mode.site().0)],
                        &["allocs"],
                    )
                    .map(|v| v[0]);
                }
            }
        }
    }
    o
}

/// Runs every variant `rounds` times, interleaved, the order rotated each
/// round. Prints one line per run.
fn interleaved(variants: &[Run], rounds: usize) -> Vec<Vec<Outcome>> {
    let mut out: Vec<Vec<Outcome>> = variants.iter().map(|_| Vec::new()).collect();
    for r in 0..rounds {
        for k in 0..variants.len() {
            let i = (k + r) % variants.len();
            let v = variants[i];
            let o = spin_run(v);
            println!(
                "  round {}/{rounds} {:?} {} threads={}: n={} cpu {:.1} ns/op, wall {:.1} ns/op{}{}",
                r + 1,
                v.mode,
                v.tracer.name(),
                v.threads,
                o.n,
                o.cpu_ns_per_op,
                o.wall_ns_per_op,
                o.bpf_ns_per_hit
                    .map(|x| format!(", {x:.0} ns in eBPF per hit"))
                    .unwrap_or_default(),
                o.lost.map(|x| format!(", lost {x}")).unwrap_or_default(),
            );
            out[i].push(o);
        }
    }
    out
}

/// Exactness of what allocwatch reported in its CSV, per run.
fn check_counts(what: &str, outcomes: &[Outcome], failures: &mut Vec<String>) {
    for (i, o) in outcomes.iter().enumerate() {
        if let Some(a) = o.csv_site_allocs
            && a != o.n
        {
            failures.push(format!(
                "{what} run {}: allocwatch counted {a} allocations at the site, the fixture made {}",
                i + 1,
                o.n
            ));
        }
        if let Some((g, p)) = o.csv_pool
            && (g != o.n || p != o.n)
        {
            failures.push(format!(
                "{what} run {}: allocwatch counted {g} gets / {p} puts, the fixture did {} pairs",
                i + 1,
                o.n
            ));
        }
        if let Some(t) = o.bpftrace_total
            && t < o.n
        {
            failures.push(format!(
                "{what} run {}: bpftrace counted {t} hits, fewer than the fixture's {} allocations (attached late?)",
                i + 1,
                o.n
            ));
        }
    }
}

fn cpu(v: &[Outcome]) -> Vec<f64> {
    v.iter().map(|o| o.cpu_ns_per_op).collect()
}

fn wall(v: &[Outcome]) -> Vec<f64> {
    v.iter().map(|o| o.wall_ns_per_op).collect()
}

// ---------------------------------------------------------------------------
// 1. ns per allocation

#[test]
#[ignore = "benchmark: cargo xtask bench"]
fn b1_alloc_overhead() {
    if skip_unless_root() {
        return;
    }
    println!(
        "\n## 1. Cost per allocation, spin fixture, 1 thread, GOMAXPROCS=1 GOGC=off, Go {GO} ({} s per run)",
        seconds()
    );
    let r = |mode, tracer| Run {
        mode,
        threads: 1,
        tracer,
        bpf_stats: false,
    };
    let variants = [
        r(Mode::Small, Tracer::None),
        r(Mode::Small, Tracer::Allocwatch),
        r(Mode::Small, Tracer::Noop),
        r(
            Mode::Small,
            Tracer::Bpftrace("runtime.mallocgcSmallNoScanSC3"),
        ),
        r(Mode::Big, Tracer::None),
        r(Mode::Big, Tracer::Allocwatch),
        r(Mode::Big, Tracer::Noop),
        r(Mode::Big, Tracer::Bpftrace("runtime.mallocgc")),
        r(Mode::Big, Tracer::BpftraceCount("runtime.mallocgc")),
        r(Mode::Small, Tracer::ReadFloor("read1")),
        r(Mode::Big, Tracer::ReadFloor("read2")),
    ];
    let res = interleaved(&variants, rounds(5));
    let mut failures = Vec::new();
    for (v, o) in variants.iter().zip(&res) {
        check_counts(
            &format!("{:?} {}", v.mode, v.tracer.name()),
            o,
            &mut failures,
        );
    }
    for (mode, base, readfloor, what) in [
        (Mode::Small, 0, 9, "24 B object (mallocgcSmallNoScanSC3)"),
        (Mode::Big, 4, 10, "128 B object (newobject → mallocgc)"),
    ] {
        let m = |i: usize| median(&cpu(&res[base + i]));
        let (u, aw, noop, bt) = (m(0), m(1), m(2), m(3));
        let rf = median(&cpu(&res[readfloor]));
        let reads = if mode == Mode::Small { 1 } else { 2 };
        let tag = if mode == Mode::Small { "small" } else { "big" };
        note(&format!("{what}: CPU ns per allocation, every run:"));
        for (i, name) in ["untraced", "allocwatch", "noop", "bpftrace"]
            .iter()
            .enumerate()
        {
            note(&format!(
                "  {name:<10} cpu [{}]  wall [{}]",
                list(&cpu(&res[base + i])),
                list(&wall(&res[base + i]))
            ));
        }
        row(&format!("{tag}: untraced"), u, "ns/alloc", Goal::None);
        row(
            &format!("{tag}: traced, allocwatch"),
            aw,
            "ns/alloc",
            Goal::None,
        );
        row(
            &format!("{tag}: traced, noop programs (floor)"),
            noop,
            "ns/alloc",
            Goal::None,
        );
        row(
            &format!("{tag}: traced, bpftrace ustack(3) count()"),
            bt,
            "ns/alloc",
            Goal::None,
        );
        row(
            &format!("{tag}: added cost, allocwatch"),
            aw - u,
            "ns/alloc",
            Goal::None,
        );
        row(
            &format!("{tag}: added cost, floor"),
            noop - u,
            "ns/alloc",
            Goal::None,
        );
        row(
            &format!("{tag}: added cost, bpftrace"),
            bt - u,
            "ns/alloc",
            Goal::None,
        );
        row(
            &format!("{tag}: allocwatch / floor (added cost)"),
            (aw - u) / (noop - u),
            "×",
            Goal::AtMost(1.15),
        );
        note(&format!(
            "  {:<10} cpu [{}]  wall [{}]",
            format!("read{reads}"),
            list(&cpu(&res[readfloor])),
            list(&wall(&res[readfloor]))
        ));
        row(
            &format!("{tag}: traced, read floor ({reads} user read(s), nothing else)"),
            rf,
            "ns/alloc",
            Goal::None,
        );
        row(
            &format!(
                "{tag}: read floor / floor (added cost): the least any attributing program costs"
            ),
            (rf - u) / (noop - u),
            "×",
            Goal::None,
        );
        row(
            &format!("{tag}: allocwatch / floor (total cost)"),
            aw / noop,
            "×",
            Goal::None,
        );
        row(
            &format!("{tag}: allocwatch / bpftrace (added cost)"),
            (aw - u) / (bt - u),
            "×",
            if mode == Mode::Big {
                Goal::AtMost(0.2)
            } else {
                Goal::None
            },
        );
        let wm = |i: usize| median(&wall(&res[base + i]));
        note(&format!(
            "{what}: wall-clock medians (fixture's own figure): untraced {:.1}, allocwatch {:.1}, noop {:.1}, bpftrace {:.1} ns/alloc",
            wm(0),
            wm(1),
            wm(2),
            wm(3)
        ));
    }
    let (u, bt, btc) = (
        median(&cpu(&res[4])),
        median(&cpu(&res[7])),
        median(&cpu(&res[8])),
    );
    note(&format!(
        "big, bpftrace `@ = count()` (no stack): cpu [{}]  wall [{}]",
        list(&cpu(&res[8])),
        list(&wall(&res[8]))
    ));
    row(
        "big: traced, bpftrace @ = count() (no stack)",
        btc,
        "ns/alloc",
        Goal::None,
    );
    row(
        "big: added cost, bpftrace count only",
        btc - u,
        "ns/alloc",
        Goal::None,
    );
    row(
        "big: bpftrace ustack(3) − count only",
        bt - btc,
        "ns/alloc",
        Goal::None,
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------
// 2. allocwatch's own CPU and lost events, two allocating threads

#[test]
#[ignore = "benchmark: cargo xtask bench"]
fn b2_two_threads_cpu_and_loss() {
    if skip_unless_root() {
        return;
    }
    println!(
        "\n## 2. allocwatch's own CPU and lost events: spin, 2 threads, GOMAXPROCS=2 ({} s per run)",
        seconds()
    );
    let r = |tracer| Run {
        mode: Mode::Small,
        threads: 2,
        tracer,
        bpf_stats: false,
    };
    let variants = [r(Tracer::None), r(Tracer::Allocwatch)];
    let res = interleaved(&variants, rounds(3));
    let mut failures = Vec::new();
    check_counts("2 threads allocwatch", &res[1], &mut failures);
    let traced = &res[1];
    let rate: Vec<f64> = traced
        .iter()
        .map(|o| o.allocs.unwrap_or(0) as f64 / seconds())
        .collect();
    let per_event: Vec<f64> = traced
        .iter()
        .map(|o| o.tracer_cpu_ns / o.allocs.unwrap_or(0).max(1) as f64)
        .collect();
    let core: Vec<f64> = traced
        .iter()
        .map(|o| 100.0 * o.tracer_cpu_ns / o.tracer_wall.as_nanos() as f64)
        .collect();
    let lost: Vec<f64> = traced
        .iter()
        .map(|o| o.lost.unwrap_or(u64::MAX) as f64)
        .collect();
    note(&format!("events/s [{}]", list(&rate)));
    note(&format!("allocwatch CPU ns/event [{}]", list(&per_event)));
    note(&format!("allocwatch % of one core [{}]", list(&core)));
    note(&format!(
        "target CPU ns/alloc untraced [{}], traced [{}]; wall ns × threads / alloc untraced [{}], traced [{}]",
        list(&cpu(&res[0])),
        list(&cpu(traced)),
        list(&wall(&res[0])),
        list(&wall(traced))
    ));
    row(
        "2 threads: untraced",
        median(&cpu(&res[0])),
        "ns/alloc",
        Goal::None,
    );
    row(
        "2 threads: traced",
        median(&cpu(traced)),
        "ns/alloc",
        Goal::None,
    );
    row(
        "2 threads: events traced",
        median(&rate),
        "events/s",
        Goal::None,
    );
    row(
        "2 threads: rate ceiling from the CPU cost (2 free cores)",
        2e9 / median(&cpu(traced)),
        "events/s",
        Goal::None,
    );
    row(
        "2 threads: allocwatch CPU per event",
        median(&per_event),
        "ns",
        Goal::None,
    );
    row(
        "2 threads: allocwatch CPU",
        median(&core),
        "% of one core",
        Goal::AtMost(30.0),
    );
    row(
        "2 threads: events lost (worst run)",
        lost.iter().copied().fold(0.0, f64::max),
        "events",
        Goal::AtMost(0.0),
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------
// 3. Probe attach time

/// Starts `bin` (waiting for its ready line), runs `allocwatch record --pid`
/// until it reports its probes, stops both.
struct Attach {
    /// The line's `attached in M ms`.
    reported_ms: f64,
    /// From starting allocwatch to reading that line.
    wall_ms: f64,
    /// allocwatch's CPU time (all threads) when the line was read.
    cpu_ms: f64,
    /// From the summary line to the exit (the probes are detached before
    /// the summary is printed; benchmark 8 measures quitting).
    detach_ms: f64,
    probes: u64,
}

fn attach_once(bin: &Path, args: &[&str], ready: &str) -> Attach {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env("ALLOCWATCH_WAIT", "1")
        .env("GOMAXPROCS", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut fx = Proc::start(&mut cmd, "target");
    let mut out = Lines::spawn(fx.child.stdout.take().expect("stdout"));
    out.wait_for(Duration::from_secs(60), |l| l.starts_with(ready))
        .unwrap_or_else(|| panic!("{} not ready:\n{}", bin.display(), out.text()));
    let t0 = Instant::now();
    let mut aw = Proc::start(
        Command::new(allocwatch())
            // --duration rather than a signal: allocwatch installs its
            // SIGINT handler only after printing the line.
            .args(["record", "--duration", "1s", "--pid", &fx.pid().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
        "allocwatch",
    );
    let mut lines = Lines::spawn(aw.child.stderr.take().expect("stderr"));
    let line = lines
        .wait_for(Duration::from_secs(120), |l| {
            l.contains("probes attached in")
        })
        .unwrap_or_else(|| {
            panic!(
                "allocwatch did not attach:\n{}",
                lines.finish(Duration::from_secs(5))
            )
        });
    let wall = t0.elapsed().as_secs_f64() * 1e3;
    let cpu_ms = aw.cpu_now() / 1e6;
    let summary = lines.wait_for(Duration::from_secs(60), |l| l.contains("events lost:"));
    let t_summary = Instant::now();
    let end = aw.reap(Duration::from_secs(60));
    let detach_ms = t_summary.elapsed().as_secs_f64() * 1e3;
    assert!(
        summary.is_some(),
        "allocwatch printed no summary:\n{}",
        lines.text()
    );
    assert!(
        end.success,
        "allocwatch failed:\n{}",
        lines.finish(Duration::from_secs(5))
    );
    fx.signal(libc::SIGTERM);
    drop(fx.child.stdin.take());
    let _ = fx.reap(Duration::from_secs(30));
    Attach {
        reported_ms: number_before(&line, " ms").expect("attach ms"),
        wall_ms: wall,
        cpu_ms,
        detach_ms,
        probes: number_before(&line, " probes attached").expect("probes") as u64,
    }
}

#[test]
#[ignore = "benchmark: cargo xtask bench"]
fn b3_attach_time() {
    if skip_unless_root() {
        return;
    }
    println!(
        "\n## 3. Probe attach time (`record --pid`: tracing PID …: N probes attached in M ms)"
    );
    let tc = go();
    let targets: [(&str, PathBuf, &[&str], &str); 3] = [
        (
            "bigbin",
            fixture(&tc, "bigbin", Variant::Default),
            &[],
            "ready ",
        ),
        (
            "demo",
            support::build_go(&tc, "demo", Variant::Default),
            &["-rps", "0"],
            "demo listening",
        ),
        ("spin", spin_bin(), &[], "ready "),
    ];
    let n = rounds(5);
    let mut runs: BTreeMap<&str, Vec<Attach>> = BTreeMap::new();
    for r in 0..n {
        for k in 0..targets.len() {
            let (name, bin, args, ready) = &targets[(k + r) % targets.len()];
            let a = attach_once(bin, args, ready);
            println!(
                "  round {}/{n} {name}: {} ms reported, {:.0} ms until the line, {:.0} ms CPU, {} probes; summary → exit {:.0} ms",
                r + 1,
                a.reported_ms,
                a.wall_ms,
                a.cpu_ms,
                a.probes,
                a.detach_ms
            );
            runs.entry(name).or_default().push(a);
        }
    }
    for (name, bin, _, _) in &targets {
        let mb = std::fs::metadata(bin).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
        let v = &runs[name];
        let reported: Vec<f64> = v.iter().map(|a| a.reported_ms).collect();
        let walls: Vec<f64> = v.iter().map(|a| a.wall_ms).collect();
        let cpus: Vec<f64> = v.iter().map(|a| a.cpu_ms).collect();
        let detach: Vec<f64> = v.iter().map(|a| a.detach_ms).collect();
        note(&format!(
            "{name} ({mb:.1} MB, {} probes): reported [{}] ms, allocwatch start → line [{}] ms, allocwatch CPU until then [{}] ms, summary → exit [{}] ms",
            v[0].probes,
            list(&reported),
            list(&walls),
            list(&cpus),
            list(&detach)
        ));
        let goal = if *name == "bigbin" {
            Goal::AtMost(500.0)
        } else {
            Goal::None
        };
        row(
            &format!("attach time, {name} ({mb:.1} MB)"),
            median(&reported),
            "ms",
            goal,
        );
        row(
            &format!("attach: allocwatch CPU until attached, {name}"),
            median(&cpus),
            "ms",
            Goal::None,
        );
        row(
            &format!("summary line → exit, {name}"),
            median(&detach),
            "ms",
            Goal::None,
        );
    }
}

// ---------------------------------------------------------------------------
// 4. sync.Pool probes

#[test]
#[ignore = "benchmark: cargo xtask bench"]
fn b4_pool_overhead() {
    if skip_unless_root() {
        return;
    }
    println!(
        "\n## 4. sync.Pool Get+Put pair, spin ALLOCWATCH_POOLBENCH=1, 1 thread ({} s per run)",
        seconds()
    );
    let r = |tracer| Run {
        mode: Mode::Pool,
        threads: 1,
        tracer,
        bpf_stats: false,
    };
    let variants = [r(Tracer::None), r(Tracer::Allocwatch), r(Tracer::Noop)];
    let res = interleaved(&variants, rounds(3));
    let mut failures = Vec::new();
    check_counts("pool allocwatch", &res[1], &mut failures);
    let m = |i: usize| median(&cpu(&res[i]));
    let (u, aw, noop) = (m(0), m(1), m(2));
    for (i, name) in ["untraced", "allocwatch", "noop"].iter().enumerate() {
        note(&format!(
            "{name:<10} cpu [{}]  wall [{}]",
            list(&cpu(&res[i])),
            list(&wall(&res[i]))
        ));
    }
    row("pool: untraced", u, "ns/pair", Goal::None);
    row("pool: traced, allocwatch", aw, "ns/pair", Goal::None);
    row(
        "pool: traced, noop programs (floor)",
        noop,
        "ns/pair",
        Goal::None,
    );
    row(
        "pool: added cost, allocwatch",
        aw - u,
        "ns/pair",
        Goal::None,
    );
    row("pool: added cost, floor", noop - u, "ns/pair", Goal::None);
    row(
        "pool: allocwatch / floor (added cost)",
        (aw - u) / (noop - u),
        "×",
        Goal::None,
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------
// 5. Dashboard

fn vm_hwm_kib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM")
}

/// Run in a fresh process by `b5_dashboard`: the peak RSS of building and
/// rendering the app with 10,000 sites.
#[test]
#[ignore = "helper of b5_dashboard"]
fn b5_dashboard_rss_child() {
    if std::env::var_os("ALLOCWATCH_BENCH_RSS_CHILD").is_none() {
        return;
    }
    let before = vm_hwm_kib();
    let _ = allocwatch::tui::bench_render(10_000);
    let _ = allocwatch::tui::bench_update(10_000);
    let after = vm_hwm_kib();
    println!("rss-child before_kib={before} after_kib={after}");
}

#[test]
#[ignore = "benchmark: cargo xtask bench"]
fn b5_dashboard() {
    println!("\n## 5. Dashboard with 10,000 sites (120×40 TestBackend, release build)");
    let n = rounds(5);
    let mut frames = Vec::new();
    let mut updates = Vec::new();
    for _ in 0..n {
        frames.push(allocwatch::tui::bench_render(10_000).as_secs_f64() * 1e3);
        updates.push(allocwatch::tui::bench_update(10_000).as_secs_f64() * 1e3);
    }
    note(&format!(
        "frame ms [{}], update ms [{}]",
        list(&frames),
        list(&updates)
    ));
    row(
        "dashboard: render one frame, 10k sites",
        median(&frames),
        "ms",
        Goal::AtMost(10.0),
    );
    row(
        "dashboard: ingest one snapshot, 10k sites",
        median(&updates),
        "ms",
        Goal::None,
    );

    let exe = std::env::current_exe().expect("current exe");
    let mut peaks = Vec::new();
    let mut bases = Vec::new();
    for _ in 0..3 {
        let out = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "b5_dashboard_rss_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("ALLOCWATCH_BENCH_RSS_CHILD", "1")
            .output()
            .expect("run the RSS child");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = text
            .lines()
            .find_map(|l| l.find("rss-child ").map(|i| &l[i..]))
            .unwrap_or_else(|| panic!("RSS child printed nothing:\n{text}"));
        bases.push(field(line, "before_kib").expect("before") / 1024.0);
        peaks.push(field(line, "after_kib").expect("after") / 1024.0);
    }
    note(&format!(
        "peak RSS (VmHWM) of a fresh test process: before [{}] MB, after 10k sites [{}] MB",
        list(&bases),
        list(&peaks)
    ));
    row(
        "dashboard: peak RSS with 10k sites (VmHWM)",
        median(&peaks),
        "MB",
        Goal::Below(100.0),
    );
}

// ---------------------------------------------------------------------------
// 6. Time inside the eBPF programs (kernel's run-time statistics)

#[test]
#[ignore = "benchmark: cargo xtask bench"]
fn b6_bpf_program_time() {
    if skip_unless_root() {
        return;
    }
    println!(
        "\n## 6. ns per hit inside the eBPF programs (ALLOCWATCH_BPF_STATS=1, kernel.bpf_stats), 1 thread ({} s per run)",
        seconds()
    );
    let r = |mode, tracer| Run {
        mode,
        threads: 1,
        tracer,
        bpf_stats: true,
    };
    let variants = [
        r(Mode::Small, Tracer::Allocwatch),
        r(Mode::Small, Tracer::Noop),
        r(Mode::Big, Tracer::Allocwatch),
        r(Mode::Big, Tracer::Noop),
    ];
    let res = interleaved(&variants, rounds(3));
    let per_hit = |i: usize| -> Vec<f64> {
        res[i]
            .iter()
            .map(|o| o.bpf_ns_per_hit.unwrap_or(f64::NAN))
            .collect()
    };
    for (i, (tag, name)) in [
        ("small", "allocwatch"),
        ("small", "noop"),
        ("big", "allocwatch"),
        ("big", "noop"),
    ]
    .iter()
    .enumerate()
    {
        note(&format!("{tag} {name}: ns per hit [{}]", list(&per_hit(i))));
        row(
            &format!("{tag}: in eBPF program per hit, {name}"),
            median(&per_hit(i)),
            "ns",
            Goal::None,
        );
    }
}

// ---------------------------------------------------------------------------
// 7. Sampled mode: the slowdown of the target

/// `--sample-rate` of b7's dense runs: 64 times the samples of 512 KiB.
const DENSE_RATE: u64 = 8192;

/// Samples (probe hits) per allocation of each run.
fn hits_per_alloc(v: &[Outcome]) -> Vec<f64> {
    v.iter()
        .map(|o| o.hits.unwrap_or(0) as f64 / o.n.max(1) as f64)
        .collect()
}

/// The cost of one sample (the runtime's profilealloc + allocwatch's probe),
/// from the dense runs' slowdown per sample, and the slowdown it predicts
/// at 512 KiB: a figure the noise of a shared machine moves far less than
/// a difference of 1 % between two medians.
fn per_sample_cost(tag: &str, untraced: f64, sampled: &[Outcome], dense: &[Outcome]) {
    let dense_cpu = median(&cpu(dense));
    let dense_hits = median(&hits_per_alloc(dense));
    let per_sample = (dense_cpu - untraced) / dense_hits.max(f64::MIN_POSITIVE);
    let hits = median(&hits_per_alloc(sampled));
    note(&format!(
        "  --sample-rate {DENSE_RATE}: cpu [{}] ns/alloc, {:.5} samples per allocation (512 KiB: {hits:.6}): {per_sample:.0} ns per sample",
        list(&cpu(dense)),
        dense_hits
    ));
    row(
        &format!("{tag}: cost of one sample (--sample-rate {DENSE_RATE} runs)"),
        per_sample,
        "ns",
        Goal::None,
    );
    row(
        &format!("{tag}: sampled: slowdown predicted from it at 512 KiB"),
        100.0 * per_sample * hits / untraced,
        "%",
        Goal::AtMost(3.0),
    );
}

#[test]
#[ignore = "benchmark: cargo xtask bench"]
fn b7_sampled_overhead() {
    if skip_unless_root() {
        return;
    }
    println!(
        "\n## 7. Slowdown by `record --mode sampled` (and exact), spin (memory profiling off: switched on by allocwatch), 1 thread, GOMAXPROCS=1 GOGC=off, Go {GO} ({} s per run)",
        seconds()
    );
    let r = |mode, tracer| Run {
        mode,
        threads: 1,
        tracer,
        bpf_stats: false,
    };
    let variants = [
        r(Mode::Small, Tracer::None),
        r(Mode::Small, Tracer::Allocwatch),
        r(Mode::Small, Tracer::AllocwatchSampled(None)),
        r(Mode::Big, Tracer::None),
        r(Mode::Big, Tracer::Allocwatch),
        r(Mode::Big, Tracer::AllocwatchSampled(None)),
        // 64 times the samples: the cost of one sample stands out of the noise.
        r(Mode::Small, Tracer::AllocwatchSampled(Some(DENSE_RATE))),
        r(Mode::Big, Tracer::AllocwatchSampled(Some(DENSE_RATE))),
    ];
    let res = interleaved(&variants, rounds(5));
    let mut failures = Vec::new();
    for (v, outcomes) in variants.iter().zip(&res) {
        let what = format!("{:?} {}", v.mode, v.tracer.name());
        // Exact mode's counts must be exact; sampled mode's are estimates.
        check_counts(&what, outcomes, &mut failures);
        if !matches!(v.tracer, Tracer::AllocwatchSampled(_)) {
            continue;
        }
        let func = v.mode.site().0;
        for (i, o) in outcomes.iter().enumerate() {
            match o.csv_sampled_allocs {
                Some(a) if a > 0 => {}
                Some(_) => failures.push(format!(
                    "{what} run {}: the sampled CSV's {func} row has 0 allocations",
                    i + 1
                )),
                None => failures.push(format!(
                    "{what} run {}: the sampled CSV has no row for {func}",
                    i + 1
                )),
            }
            if o.lost != Some(0) {
                failures.push(format!(
                    "{what} run {}: events lost: {}",
                    i + 1,
                    o.lost.map_or("(no summary)".to_string(), |x| x.to_string())
                ));
            }
        }
    }
    note(
        "the plain spin fixture: it never references runtime.MemProfile, so the linker switched memory profiling off (MemProfileRate 0): untraced and exact runs have no runtime sampling at all; in sampled runs allocwatch sets MemProfileRate to 512 KiB for the session, so the runtime's own sampling (profilealloc, mProf_Malloc) is part of the sampled figure",
    );
    for (mode, base, dense, what) in [
        (Mode::Small, 0, 6, "24 B object (mallocgcSmallNoScanSC3)"),
        (Mode::Big, 3, 7, "128 B object (newobject → mallocgc)"),
    ] {
        let tag = if mode == Mode::Small { "small" } else { "big" };
        let m = |i: usize| median(&cpu(&res[base + i]));
        let (u, exact, sampled) = (m(0), m(1), m(2));
        note(&format!(
            "{what}: CPU ns per allocation, every run (wall: the fixture's own figure):"
        ));
        for (i, name) in ["untraced", "exact", "sampled"].iter().enumerate() {
            note(&format!(
                "  {name:<9} cpu [{}]  wall [{}]",
                list(&cpu(&res[base + i])),
                list(&wall(&res[base + i]))
            ));
        }
        let sampled_runs = &res[base + 2];
        let per_run = |f: &dyn Fn(&Outcome) -> Option<u64>| -> String {
            sampled_runs
                .iter()
                .map(|o| f(o).map_or("?".to_string(), |x| x.to_string()))
                .collect::<Vec<_>>()
                .join(" ")
        };
        note(&format!(
            "  sampled: probe hits (samples) [{}], estimated allocations at {} [{}], fixture's allocations [{}], events lost [{}]",
            per_run(&|o| o.hits),
            mode.site().0,
            per_run(&|o| o.csv_sampled_allocs),
            per_run(&|o| Some(o.n)),
            per_run(&|o| o.lost),
        ));
        let wm = |i: usize| median(&wall(&res[base + i]));
        note(&format!(
            "  wall-clock medians: untraced {:.1}, exact {:.1}, sampled {:.1} ns/alloc",
            wm(0),
            wm(1),
            wm(2)
        ));
        row(
            &format!("{tag}, profiling off: untraced"),
            u,
            "ns/alloc",
            Goal::None,
        );
        row(
            &format!("{tag}, profiling off: traced, allocwatch exact"),
            exact,
            "ns/alloc",
            Goal::None,
        );
        row(
            &format!("{tag}, profiling switched on by allocwatch: traced, allocwatch sampled"),
            sampled,
            "ns/alloc",
            Goal::None,
        );
        row(
            &format!("{tag}: sampled: slowdown vs untraced"),
            100.0 * (sampled / u - 1.0),
            "%",
            Goal::AtMost(3.0),
        );
        row(
            &format!("{tag}: exact: slowdown vs untraced"),
            100.0 * (exact / u - 1.0),
            "%",
            Goal::None,
        );
        per_sample_cost(tag, u, &res[base + 2], &res[dense]);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------
// 8. Quitting: record's summary → exit, top's `q` → shell back

/// One allocwatch binary to quit, and how.
struct Quitter {
    name: &'static str,
    bin: PathBuf,
    /// Extra environment (`ALLOCWATCH_UPROBE_LINKS=perf`).
    env: &'static [(&'static str, &'static str)],
}

/// spin, running untraced (killed on drop).
fn running_spin() -> Proc {
    let mut fx = Proc::start(
        Command::new(spin_bin())
            .env("ALLOCWATCH_SECONDS", "600")
            .env("GOMAXPROCS", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        "spin",
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        matches!(fx.child.try_wait(), Ok(None)),
        "spin did not start"
    );
    fx
}

/// `record --pid --duration 1s`: ms from the summary line to the exit
/// (reaped), and from the end of the duration to the exit.
fn quit_record(q: &Quitter, pid: i32) -> (f64, f64) {
    let mut aw = Proc::start(
        Command::new(&q.bin)
            .args(["record", "--duration", "1s", "--pid", &pid.to_string()])
            .envs(q.env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
        q.name,
    );
    let mut lines = Lines::spawn(aw.child.stderr.take().expect("stderr"));
    lines
        .wait_for(Duration::from_secs(60), |l| l.contains("tracing PID"))
        .unwrap_or_else(|| panic!("{} did not attach:\n{}", q.name, lines.text()));
    let attached = Instant::now();
    let summary = lines.wait_for(Duration::from_secs(60), |l| l.contains("events lost:"));
    let printed = Instant::now();
    let end = aw.reap(Duration::from_secs(60));
    assert!(
        summary.is_some() && end.success,
        "{}:\n{}",
        q.name,
        lines.finish(Duration::from_secs(5))
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(printed.elapsed()), ms(attached.elapsed()) - 1e3)
}

/// `top --pid` in a 120×40 tmux session of its own: ms from sending `q` to
/// the shell printing top's exit status.
fn quit_top(q: &Quitter, pid: i32, dir: &Path) -> f64 {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let socket = format!(
        "allocwatch-bench-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let tmux = |args: &[&str]| -> String {
        let out = Command::new("tmux")
            .args(["-L", &socket, "-f", "/dev/null"])
            .args(args)
            .env("TERM", "xterm-256color")
            .stdin(Stdio::null())
            .output()
            .expect("run tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let env: String = q.env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
    let script = format!(
        "{env}'{}' top --pid {pid} --refresh 250ms --log-file '{}'; echo EXIT=$?; exec sleep 600",
        q.bin.display(),
        dir.join("top.log").display()
    );
    tmux(&[
        "new-session",
        "-d",
        "-x",
        "120",
        "-y",
        "40",
        "-s",
        "aw",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let start = Instant::now();
    while !tmux(&["capture-pane", "-p", "-t", "aw"]).contains("main.spinAlloc") {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{}: no dashboard:\n{}",
            q.name,
            tmux(&["capture-pane", "-p", "-t", "aw"])
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let pressed = Instant::now();
    tmux(&["send-keys", "-t", "aw", "-l", "q"]);
    while !tmux(&["capture-pane", "-p", "-t", "aw"]).contains("EXIT=0") {
        assert!(
            pressed.elapsed() < Duration::from_secs(60),
            "{}: no EXIT=0 after q",
            q.name
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let took = pressed.elapsed().as_secs_f64() * 1e3;
    tmux(&["kill-server"]);
    took
}

#[test]
#[ignore = "benchmark: cargo xtask bench"]
fn b8_quit() {
    if skip_unless_root() {
        return;
    }
    let tmux_ok = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    println!("\n## 8. Quitting: `record` summary → exit, `top` q → shell back (spin, Go {GO})");
    let mut quitters = vec![
        Quitter {
            name: "allocwatch",
            bin: allocwatch(),
            env: &[],
        },
        Quitter {
            name: "allocwatch, one perf link per probe",
            bin: allocwatch(),
            env: &[("ALLOCWATCH_UPROBE_LINKS", "perf")],
        },
    ];
    // An older build, measured in the same run for a before/after figure.
    if let Some(b) = std::env::var_os("ALLOCWATCH_BENCH_BASELINE") {
        quitters.push(Quitter {
            name: "baseline",
            bin: PathBuf::from(b),
            env: &[],
        });
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let n = rounds(5);
    let mut runs: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); quitters.len()];
    for r in 0..n {
        for k in 0..quitters.len() {
            let i = (k + r) % quitters.len();
            let q = &quitters[i];
            let fx = running_spin();
            let (summary, stop) = quit_record(q, fx.pid());
            let top = if tmux_ok {
                quit_top(q, fx.pid(), dir.path())
            } else {
                f64::NAN
            };
            println!(
                "  round {}/{n} {}: record summary → exit {summary:.0} ms, duration end → exit {stop:.0} ms; top q → shell {top:.0} ms",
                r + 1,
                q.name
            );
            runs[i].push((summary, stop, top));
        }
    }
    if !tmux_ok {
        note("tmux is not installed: top's q → shell back was not measured");
    }
    for (q, v) in quitters.iter().zip(&runs) {
        let col = |f: fn(&(f64, f64, f64)) -> f64| v.iter().map(f).collect::<Vec<f64>>();
        let (summary, stop, top) = (col(|x| x.0), col(|x| x.1), col(|x| x.2));
        note(&format!(
            "{}: record summary → exit [{}] ms, duration end → exit [{}] ms, top q → shell [{}] ms",
            q.name,
            list(&summary),
            list(&stop),
            list(&top)
        ));
        let goal = if q.name == "allocwatch" {
            Goal::AtMost(300.0)
        } else {
            Goal::None
        };
        row(
            &format!("quit: record summary → exit, {}", q.name),
            median(&summary),
            "ms",
            goal,
        );
        row(
            &format!("quit: record --duration end → exit, {}", q.name),
            median(&stop),
            "ms",
            Goal::None,
        );
        row(
            &format!("quit: top q → shell back, {}", q.name),
            median(&top),
            "ms",
            goal,
        );
    }
}

// ---------------------------------------------------------------------------
// 9. The daemon's own cost: CPU while idle, memory with many targets

/// `VmRSS` or `VmHWM` of `pid`, in MiB.
fn status_mib(pid: i32, key: &str) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .expect(key)
        / 1024.0
}

/// `n` manysites fixtures (1,000 allocation sites each), waiting.
fn manysites(n: usize) -> Vec<(Proc, u32)> {
    let bin = fixture(&go(), "manysites", Variant::Default);
    (0..n)
        .map(|_| {
            let mut c = Command::new(&bin);
            c.env("ALLOCWATCH_WAIT", "1").env("GOMAXPROCS", "1");
            Proc::ready(c, "manysites")
        })
        .collect()
}

/// `allocwatch daemon --listen 127.0.0.1:0 ARGS --pid …` on `pids`.
fn daemon_on(pids: &[u32], args: &[&str]) -> (Proc, std::net::SocketAddr) {
    let mut c = Command::new(allocwatch());
    c.args(["daemon", "--listen", "127.0.0.1:0"]).args(args);
    for p in pids {
        c.args(["--pid", &p.to_string()]);
    }
    // Exact mode attaches in ~0.2 s per target (~1.2 s before the address
    // bitmaps); 50 of them in a row.
    support::http::start_daemon_cmd_within(c, Duration::from_secs(300))
}

fn stop_daemon(mut d: Proc) {
    d.signal(libc::SIGTERM);
    let (status, err) = d.finish(Duration::from_secs(30));
    assert!(status.success(), "daemon: {status}\n{err}");
}

#[test]
#[ignore = "benchmark: cargo xtask bench"]
fn b9_daemon() {
    if skip_unless_root() {
        return;
    }
    println!("\n## 9. Daemon: CPU while idle (20 targets), memory (50 targets × 1,000 sites)");
    let mut targets = manysites(50);
    let pids: Vec<u32> = targets.iter().map(|t| t.1).collect();

    // Idle: 20 targets that allocate nothing, nothing scraped; the default
    // (sampled) mode. What remains is the loop's own work: a look at each
    // target every 250 ms, a snapshot of each every 10 s.
    let (d, _) = daemon_on(&pids[..20], &[]);
    std::thread::sleep(Duration::from_secs(2));
    let span = Duration::from_secs_f64(seconds().max(30.0));
    let (c0, t0) = (d.cpu_now(), Instant::now());
    std::thread::sleep(span);
    let pct = (d.cpu_now() - c0) / 1e9 / t0.elapsed().as_secs_f64() * 100.0;
    stop_daemon(d);
    note(&format!(
        "daemon CPU over {:.0} s with 20 idle targets (sampled mode, no scrape)",
        span.as_secs_f64()
    ));
    row(
        "daemon: CPU while idle, 20 targets",
        pct,
        "% of a core",
        Goal::AtMost(2.0),
    );

    // Memory: 50 targets in exact mode, each allocating once at its 1,000
    // sites (so each has 1,000 keys, their stacks through the ring buffer),
    // then two scrapes of /metrics (the default --max-sites 500: 501 series
    // per target).
    let (d, addr) = daemon_on(&pids, &["--mode", "exact"]);
    let (attached, attached_hwm) = (status_mib(d.pid(), "VmRSS:"), status_mib(d.pid(), "VmHWM:"));
    for (fx, _) in &mut targets {
        fx.send("go");
    }
    for (fx, pid) in &mut targets {
        let done = fx
            .out
            .wait_for(Duration::from_secs(60), |l| l.starts_with("done "));
        assert!(done.is_some(), "manysites {pid} did not finish");
    }
    let mut series = 0;
    for _ in 0..2 {
        let text = support::http::get_text(addr, "/metrics");
        series = text
            .lines()
            .filter(|l| l.starts_with("allocwatch_alloc_objects_total{"))
            .count();
    }
    let sites: usize = {
        let text = support::http::get_text(addr, "/metrics");
        text.lines()
            .filter(|l| l.starts_with("allocwatch_alloc_objects_total{") && l.contains("main.site"))
            .count()
    };
    let (rss, hwm) = (status_mib(d.pid(), "VmRSS:"), status_mib(d.pid(), "VmHWM:"));
    stop_daemon(d);
    for (fx, _) in &mut targets {
        fx.close_stdin();
        let _ = fx.finish(Duration::from_secs(10));
    }
    note(&format!(
        "RSS after attaching 50 targets: {attached:.0} MiB (peak so far {attached_hwm:.0} MiB); after their 50,000 sites and \
         scrapes of {series} allocation series ({sites} of them main.site*): {rss:.0} MiB, peak {hwm:.0} MiB"
    ));
    // Each target: its 500 hottest sites (most of them main.site*, the
    // runtime's start-up allocations among them) and one (other).
    assert_eq!(series, 50 * 501, "500 sites and (other) per target");
    assert!(sites > 50 * 400, "{sites} main.site* series");
    row(
        "daemon: RSS, 50 targets × 1,000 sites",
        rss,
        "MiB",
        Goal::AtMost(150.0),
    );
    row(
        "daemon: peak RSS (VmHWM), 50 targets × 1,000 sites",
        hwm,
        "MiB",
        Goal::None,
    );
}

// ---------------------------------------------------------------------------

#[test]
#[ignore = "benchmark: cargo xtask bench"]
fn z_summary() {
    let rows = ROWS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if rows.is_empty() {
        return;
    }
    let mut text =
        String::from("| benchmark | value | unit | target | status |\n|---|---|---|---|---|\n");
    for r in rows.iter().filter(|r| r.starts_with('|')) {
        text.push_str(r);
        text.push('\n');
    }
    text.push('\n');
    for r in rows.iter().filter(|r| !r.starts_with('|')) {
        text.push_str(r);
        text.push('\n');
    }
    println!("\n## Summary\n\n{text}");
    let dir = support::target_dir().join("bench");
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join("results.md"), &text);
        println!("(also written to {})", dir.join("results.md").display());
    }
}
