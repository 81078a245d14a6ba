//! The commands: `inspect`, `record` and `top`, on top of [`Session`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use crate::budget::Budget;
use crate::cli::{ExplainArgs, FoldedWeight, InspectArgs, RecordArgs, TargetArgs, TopArgs};
use crate::error::{AppError, Result};
use crate::export::csv::{PoolsCsv, SitesCsv};
use crate::export::folded::Weight;
use crate::export::series::IntervalCsv;
use crate::export::{AtomicFile, check_writable, flame, folded, pprof};
use crate::plan::{self, PlanOptions, ProbePlan};
use crate::session::{self, Options, Session, TargetSpec};
use crate::stats::Snapshot;
use crate::target::{Gone, RateOverride};

/// Measured cost of one uprobe hit at a `PUSHQ BP` on the reference machine
/// (see docs/benchmarks.md); used for the overhead estimate.
pub use crate::budget::COST_PER_HIT_NS;

fn init_stderr_log(verbose: u8) {
    let level = match verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    let _ = env_logger::Builder::new()
        .filter_level(level)
        .format(|buf, r| {
            writeln!(
                buf,
                "allocwatch: {}: {}",
                r.level().as_str().to_lowercase(),
                r.args()
            )
        })
        .parse_env("ALLOCWATCH_LOG")
        .try_init();
}

fn target_spec(t: &TargetArgs) -> Result<TargetSpec> {
    if t.sample_rate.is_some() && t.mode != crate::plan::Mode::Sampled && t.max_overhead.is_none() {
        return Err(AppError::usage(
            "--sample-rate sets the rate of the runtime's memory-profile samples, which only sampled mode uses",
        )
        .hint("add --mode sampled (or --max-overhead PCT)"));
    }
    match (t.pid, t.command.is_empty()) {
        (Some(pid), true) => Ok(TargetSpec::Pid(pid)),
        (None, false) => Ok(TargetSpec::Launch(t.command.clone())),
        (Some(_), false) => Err(AppError::usage(
            "give either --pid PID or -- PROGRAM ARGS…, not both",
        )),
        (None, true) => Err(AppError::usage(
            "nothing to trace: give --pid PID or -- PROGRAM ARGS…",
        )
        .hint("example: allocwatch record --pid 1234 --duration 10s --csv sites.csv")),
    }
}

/// `allocwatch inspect`.
pub fn inspect(a: &InspectArgs, verbose: u8) -> Result<()> {
    init_stderr_log(verbose);
    let (path, what) = match (&a.binary, a.pid) {
        (_, Some(pid)) => {
            let t = crate::target::Target::from_pid(pid)?;
            (t.exe.clone(), format!("PID {pid} ({})", t.exe_display))
        }
        (Some(p), None) => (p.clone(), p.display().to_string()),
        (None, None) => return Err(AppError::usage("give a Go executable or --pid PID")),
    };
    let bin = session::open_binary(&path, &what)?;
    let plan = plan::plan(
        &bin,
        PlanOptions {
            pools: !a.no_pools,
            mode: a.mode,
            switchable: false,
        },
    )
    .map_err(|e| AppError::target(format!("{what}: cannot plan probes: {e}")))?;
    let mut out = std::io::stdout().lock();
    let res = if a.json {
        serde_json::to_writer_pretty(&mut out, &plan)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out))
    } else {
        print_plan(&mut out, &what, &plan)
    };
    match res {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(AppError::other(format!("cannot write: {e}")))
        }
        _ => Ok(()),
    }
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn print_plan(out: &mut impl Write, what: &str, p: &ProbePlan) -> std::io::Result<()> {
    writeln!(out, "target:        {what}")?;
    writeln!(out, "go version:    {}", p.go_version)?;
    match p.mem_profile_rate_addr {
        Some(a) => writeln!(
            out,
            "mode:          {} (runtime.MemProfileRate at {a:#x})",
            p.mode.name()
        )?,
        None => writeln!(out, "mode:          {}", p.mode.name())?,
    }
    if p.memory_profiling_disabled == Some(true) {
        writeln!(
            out,
            "memory profiling: off (the program never references runtime.MemProfile); tracing sets runtime.MemProfileRate for the session"
        )?;
    }
    writeln!(
        out,
        "stripped: {}   PIE: {}   external linking: {}   PGO: {}",
        yes(p.stripped),
        yes(p.pie),
        yes(p.external_link),
        yes(p.pgo)
    )?;
    let n_spec = p
        .probes
        .iter()
        .filter(|x| x.role.starts_with("alloc ("))
        .count();
    writeln!(
        out,
        "size-specialized malloc: {}",
        if p.size_specialized_malloc {
            format!("yes ({n_spec} entries)")
        } else {
            "no".into()
        }
    )?;
    match &p.pools {
        crate::plan::PoolTracing::Enabled => writeln!(out, "sync.Pool tracing: enabled")?,
        crate::plan::PoolTracing::Disabled(r) => {
            writeln!(out, "sync.Pool tracing: disabled ({r})")?
        }
    }
    writeln!(out, "probes ({}):", p.probes.len())?;
    writeln!(
        out,
        "  {:<40} {:>7} {:>12}  {:<36} ROLE",
        "FUNCTION", "OFFSET", "FILE OFFSET", "PLACEMENT"
    )?;
    for pr in &p.probes {
        writeln!(
            out,
            "  {:<40} {:>7} {:>12}  {:<36} {}",
            pr.function,
            format!("+{:#x}", pr.offset),
            format!("{:#x}", pr.file_offset),
            pr.placement,
            pr.role
        )?;
    }
    for w in &p.warnings {
        writeln!(out, "warning: {w}")?;
    }
    Ok(())
}

/// Why `path` cannot be created, in words: "No such file or directory" is
/// about the directory, so say which one.
fn write_error(path: &Path, e: &std::io::Error) -> String {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if e.kind() == std::io::ErrorKind::NotFound && !dir.exists() {
        format!("the directory {} does not exist", dir.display())
    } else {
        e.to_string()
    }
}

fn create_output(path: &Path, flag: &str) -> Result<AtomicFile> {
    let fail = |e: &std::io::Error| {
        AppError::usage(format!(
            "cannot write {flag} {}: {}",
            path.display(),
            write_error(path, e)
        ))
        .hint("the directory must exist and be writable")
    };
    check_writable(path).map_err(|e| fail(&e))?;
    AtomicFile::create(path).map_err(|e| fail(&e))
}

/// Why a trace stopped.
#[derive(Debug)]
enum Stop {
    Duration,
    Signal(&'static str),
    Target(Gone),
}

/// What the event loop hands over.
enum Tick<'a> {
    /// The snapshot at a refresh.
    Window(&'a Snapshot),
    /// A mode switch `--max-overhead` just made, with its notice.
    Switch(&'a crate::budget::Switch, &'a str),
}

/// How often `--max-overhead` looks at the cost (whatever the refresh).
const BUDGET_EVERY: Duration = Duration::from_secs(1);

/// SIGINT and SIGTERM listeners. Created before the user is told that
/// tracing runs, so that a signal sent right after is never missed (tokio
/// keeps a signal that arrives before the listener is polled).
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn listen() -> Result<Signals> {
        let int =
            signal(SignalKind::interrupt()).map_err(|e| AppError::other(format!("signal: {e}")))?;
        let term =
            signal(SignalKind::terminate()).map_err(|e| AppError::other(format!("signal: {e}")))?;
        Ok(Signals { int, term })
    }
}

/// Runs the event loop until `duration`, a signal, or the target going away;
/// calls `tick` with a snapshot about every `refresh`, on a fixed schedule
/// (ticks do not drift: `record --interval` windows stay aligned), and with
/// each mode switch `budget` decides on (it looks every second).
async fn trace_loop(
    s: &mut Session,
    signals: Signals,
    duration: Option<Duration>,
    refresh: Duration,
    mut budget: Option<&mut Budget>,
    mut tick: impl FnMut(Tick<'_>),
) -> Result<Stop> {
    let Signals {
        int: mut sigint,
        term: mut sigterm,
    } = signals;
    let deadline = duration.map(|d| tokio::time::Instant::now() + d);
    let mut ticker = tokio::time::interval(refresh.min(Duration::from_millis(20)));
    let mut next_tick = tokio::time::Instant::now() + refresh;
    let mut next_budget = tokio::time::Instant::now() + BUDGET_EVERY;
    let stop = loop {
        tokio::select! {
            () = s.events_ready() => { s.pump(); }
            _ = ticker.tick() => {
                s.pump();
                if let Some(g) = s.check_target() {
                    break Stop::Target(g);
                }
                let now = tokio::time::Instant::now();
                let budget_due = budget.is_some() && now >= next_budget;
                let window_due = now >= next_tick;
                if !(budget_due || window_due) {
                    continue;
                }
                // One snapshot (a read of every kernel map) serves both.
                let snap = s.snapshot();
                if budget_due && let Some(b) = budget.as_deref_mut() {
                    next_budget = (next_budget + BUDGET_EVERY).max(now);
                    if let Some(sw) = b.observe(snap.elapsed, snap.counters.hits, snap.total_allocs) {
                        s.switch_to(sw.to)?;
                        tick(Tick::Switch(&sw, &b.notice(&sw)));
                    }
                }
                if window_due {
                    next_tick += refresh;
                    if next_tick <= now {
                        // Far behind (a stalled process): skip, do not burst.
                        next_tick = now + refresh;
                    }
                    tick(Tick::Window(&snap));
                }
            }
            () = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                break Stop::Duration;
            }
            _ = sigint.recv() => break Stop::Signal("SIGINT"),
            _ = sigterm.recv() => break Stop::Signal("SIGTERM"),
        }
    };
    // Whatever the target did before the stop is still in the ring buffer.
    s.pump();
    s.flush_logs();
    Ok(stop)
}

/// The mode as the dashboard's header shows it.
fn mode_label(mode: crate::plan::Mode, max_overhead: Option<f64>, rate: Option<&str>) -> String {
    let rate = rate.unwrap_or_default();
    match max_overhead {
        Some(pct) => format!("{} (--max-overhead {pct}%{rate})", mode.name()),
        None if rate.is_empty() => mode.name().into(),
        None => format!("{} ({})", mode.name(), rate.trim_start_matches(", ")),
    }
}

fn human_bytes(b: u64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "display")]
    let v = b as f64;
    match b {
        0..1024 => format!("{b} B"),
        1024..1_048_576 => format!("{:.1} KiB", v / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", v / 1_048_576.0),
        _ => format!("{:.2} GiB", v / 1_073_741_824.0),
    }
}

/// `allocwatch record`.
pub async fn record(a: RecordArgs, verbose: u8) -> Result<()> {
    init_stderr_log(verbose);
    let spec = target_spec(&a.target)?;
    check_distinct_outputs(&a)?;
    // Output paths are checked before anything is attached.
    let mut csv_file = a
        .csv
        .as_deref()
        .map(|p| create_output(p, "--csv"))
        .transpose()?;
    let mut pools_file = a
        .pools_csv
        .as_deref()
        .map(|p| create_output(p, "--pools-csv"))
        .transpose()?;
    let escape = a
        .escape
        .source
        .as_deref()
        .map(|d| crate::escape::cmd::request(d, a.escape.go.as_deref()))
        .transpose()?;
    let mut pprof_file = a
        .pprof
        .as_deref()
        .map(|p| create_output(p, "--pprof"))
        .transpose()?;
    let mut folded_file = a
        .folded
        .as_deref()
        .map(|p| create_output(p, "--folded"))
        .transpose()?;
    let mut svg_file = a
        .svg
        .as_deref()
        .map(|p| create_output(p, "--svg"))
        .transpose()?;
    let json_file = a
        .json
        .as_deref()
        .map(|p| create_output(p, "--json"))
        .transpose()?;
    let mut s = Session::start(
        &spec,
        Options {
            pools: a.target.trace_pools(),
            bench: a.target.bench(),
            mode: a.target.mode,
            ringbuf_bytes: a.target.ringbuf_bytes,
            max_overhead: a.target.max_overhead,
            sample_rate: a.target.sample_rate,
        },
    )?;
    // Sampled counts are estimates: the rows say which mode counted them.
    let mode_column = a.target.mode_column();
    // With --interval the CSV files are at their final paths from now on
    // and grow by one flushed window per tick (see export::series).
    let mut series = match a.interval {
        Some(_) => Some(
            IntervalCsv::start(csv_file.take(), pools_file.take(), mode_column)
                .map_err(|e| AppError::other(e.to_string()))?,
        ),
        None => None,
    };
    if a.interval.is_some() && a.csv.is_some() && a.escape.source.is_some() {
        log::warn!(
            "--interval: the sites CSV gets no escape column (the compiler's reasons are known only at the end)"
        );
    }
    let signals = Signals::listen()?;
    announce(&s);
    // The compiler runs while the target is traced.
    let job = escape.map(|r| crate::escape::Job::start(r, s.bin.build_info().clone()));
    let mut series_error = None;
    let refresh = a.interval.unwrap_or(Duration::from_secs(1));
    let mut budget = a.target.max_overhead.map(|pct| Budget::new(pct, s.mode()));
    let stop = trace_loop(
        &mut s,
        signals,
        a.duration,
        refresh,
        budget.as_mut(),
        |t| match t {
            Tick::Switch(_, notice) => eprintln!("allocwatch: {notice}"),
            Tick::Window(snap) => {
                if let Some(w) = series.as_mut()
                    && series_error.is_none()
                    && let Err(e) = w.window(snap)
                {
                    log::error!("{e}");
                    series_error = Some(e);
                }
            }
        },
    )
    .await?;
    let snap = s.snapshot();
    // Tracing is over: the target is given back (its MemProfileRate set
    // back, every probe detached) before anything is written.
    release_target(&mut s);
    let analysis = job
        .and_then(crate::escape::cmd::finish)
        .map(std::sync::Arc::new);
    let mut written: Vec<PathBuf> = Vec::new();
    // A time series that failed keeps its completed windows; the other
    // outputs are still written, and the failure is reported at the end.
    let series_result = match (series_error, series.take()) {
        (Some(e), _) => Err(e),
        (None, Some(w)) => w.finish(&snap).map(|paths| written.extend(paths)),
        (None, None) => Ok(()),
    };
    if let Some(f) = csv_file.take() {
        let column = a
            .escape
            .source
            .is_some()
            .then(|| crate::escape::cmd::column(analysis.clone()));
        written.push(write_sites(f, &snap, column, mode_column)?);
    }
    if let Some(f) = pools_file.take() {
        written.push(write_pools(f, &snap)?);
    }
    let weight = match a.folded_weight {
        FoldedWeight::Bytes => Weight::Bytes,
        FoldedWeight::Allocs => Weight::Allocs,
    };
    if let Some(f) = pprof_file.take() {
        let meta = pprof::ProfileMeta {
            executable: s.target.exe_display.clone(),
            start: std::time::SystemTime::now()
                .checked_sub(snap.elapsed)
                .unwrap_or(std::time::UNIX_EPOCH),
            comments: profile_comments(&s, &snap, budget.as_ref()),
        };
        written.push(write_output(f, |w| pprof::write(&snap, &meta, w))?);
    }
    if let Some(f) = folded_file.take() {
        written.push(write_output(f, |w| folded::write(&snap, weight, w))?);
    }
    if let Some(f) = svg_file.take() {
        let meta = flame::FlameMeta {
            title: format!("Heap allocations ({})", weight.unit()),
            subtitle: Some(format!(
                "PID {} ({}), {}: {:.2} s, {} allocations, {} bytes; {}",
                s.target.pid,
                s.target.exe_display,
                s.plan.go_version,
                snap.elapsed.as_secs_f64(),
                snap.total_allocs,
                snap.total_bytes,
                match s.plan.mode {
                    crate::plan::Mode::Exact => pprof::EXACT_COMMENT,
                    crate::plan::Mode::Sampled => pprof::SAMPLED_COMMENT,
                }
            )),
        };
        written.push(write_output(f, |w| flame::write(&snap, weight, &meta, w))?);
    }
    if s.target.launched() && matches!(stop, Stop::Signal(_) | Stop::Duration) {
        // A program allocwatch started does not outlive the recording.
        s.target.kill_launched();
    }
    if let Some(f) = json_file {
        let run = json_run(&s, &stop, budget.as_ref(), &written, a.top);
        let sum = crate::export::summary::RunSummary::new(&run, &snap);
        written.push(write_output(f, |w| sum.write(w))?);
    }
    summary(&s, &snap, &stop, &written, a.top);
    if let Some(b) = &budget {
        eprintln!(
            "allocwatch: mode switches (--max-overhead {}% of one core): {}; rows counted in sampled mode are marked sampled (or mixed) in the mode column",
            b.pct,
            b.history()
        );
    }
    if let Some(an) = &analysis {
        crate::escape::cmd::print_summary(an, &snap, a.top);
    }
    series_result.map_err(|e| AppError::other(e.to_string()))
}

/// `allocwatch explain`: trace for `--duration`, run the compiler's escape
/// analysis meanwhile, and print why the hot sites are on the heap.
pub async fn explain(a: ExplainArgs, verbose: u8) -> Result<()> {
    init_stderr_log(verbose);
    let spec = target_spec(&a.target)?;
    let req = crate::escape::cmd::request(&a.source, a.go.as_deref())?;
    let mut s = Session::start(
        &spec,
        Options {
            pools: a.target.trace_pools(),
            bench: a.target.bench(),
            mode: a.target.mode,
            ringbuf_bytes: a.target.ringbuf_bytes,
            max_overhead: None,
            sample_rate: a.target.sample_rate,
        },
    )?;
    let signals = Signals::listen()?;
    announce(&s);
    let job = crate::escape::Job::start(req, s.bin.build_info().clone());
    let stop = trace_loop(
        &mut s,
        signals,
        Some(a.duration),
        Duration::from_secs(1),
        None,
        |_| {},
    )
    .await?;
    let snap = s.snapshot();
    release_target(&mut s);
    if s.target.launched() && matches!(stop, Stop::Signal(_) | Stop::Duration) {
        s.target.kill_launched();
    }
    let analysis = job
        .wait()
        .map_err(|e| AppError::other(format!("escape analysis failed: {e}")))?;
    let what = format!(
        "PID {} ({}), {}",
        s.target.pid, s.target.exe_display, s.plan.go_version
    );
    let mut out = std::io::stdout().lock();
    match crate::escape::report::write_report(&mut out, &analysis, &snap, &what, a.top)
        .and_then(|()| out.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(AppError::other(format!("cannot write: {e}")))
        }
        _ => Ok(()),
    }
}

/// Tells the user (and scripts waiting for it) that the probes are in place:
/// from this line on, every allocation of the target is counted.
fn announce(s: &Session) {
    let mut e = std::io::stderr().lock();
    for w in &s.plan.warnings {
        let _ = writeln!(e, "allocwatch: warning: {w}");
    }
    if let Some(r) = s.rate_override() {
        let _ = writeln!(e, "allocwatch: {}", r.announcement());
    }
    let _ = writeln!(
        e,
        "allocwatch: tracing PID {} ({}): {} probes attached in {} ms",
        s.target.pid,
        s.target.exe_display,
        s.plan.probes.len(),
        s.attach_time.as_millis()
    );
    let _ = e.flush();
}

/// Gives the target back (its `runtime.MemProfileRate` set back when
/// allocwatch set it, every probe detached) and says what was set back.
/// Dropping the session would too; this is the moment: right after the
/// last counts were read.
fn release_target(s: &mut Session) {
    if let Some(m) = s.release_target() {
        log::info!("{m}");
        eprintln!("allocwatch: {m}");
    }
}

/// Two outputs at one path would overwrite each other.
fn check_distinct_outputs(a: &RecordArgs) -> Result<()> {
    let outputs = [
        ("--csv", &a.csv),
        ("--pools-csv", &a.pools_csv),
        ("--pprof", &a.pprof),
        ("--folded", &a.folded),
        ("--svg", &a.svg),
        ("--json", &a.json),
    ];
    let given: Vec<(&str, &Path)> = outputs
        .iter()
        .filter_map(|(flag, p)| p.as_deref().map(|p| (*flag, p)))
        .collect();
    for (i, (f1, p1)) in given.iter().enumerate() {
        if let Some((f2, _)) = given[i + 1..].iter().find(|(_, p2)| p1 == p2) {
            return Err(AppError::usage(format!(
                "{f1} and {f2} both write {}",
                p1.display()
            )));
        }
    }
    Ok(())
}

/// What a profile says about how it was made.
fn profile_comments(s: &Session, snap: &Snapshot, budget: Option<&Budget>) -> Vec<String> {
    let how = match s.plan.mode {
        crate::plan::Mode::Exact => [
            pprof::EXACT_COMMENT,
            "every heap allocation of the target during the recording, counted by a uprobe on the \
             Go runtime's allocation entry points; values are neither sampled nor scaled",
        ],
        crate::plan::Mode::Sampled => [
            pprof::SAMPLED_COMMENT,
            "the runtime's own memory-profile samples (about one per MemProfileRate bytes), \
             scaled as pprof scales them; types are not known",
        ],
    };
    let mut c: Vec<String> = how.iter().map(ToString::to_string).collect();
    if let Some(b) = budget {
        c.push(format!(
            "--max-overhead {}% of one core: mode switches: {}; samples counted in sampled mode have the label mode=sampled (or mixed): their values are estimates",
            b.pct,
            b.history()
        ));
    }
    c.push(format!(
        "target: PID {} ({}), {}; recorded for {:.2} s",
        s.target.pid,
        s.target.exe_display,
        s.plan.go_version,
        snap.elapsed.as_secs_f64()
    ));
    c.push(
        "one stack per allocation site and type (the deepest seen); label type = the Go type"
            .to_string(),
    );
    if snap.counters.lost > 0 {
        c.push(format!(
            "warning: {} events did not fit in the ring buffer: counts are low",
            snap.counters.lost
        ));
    }
    c
}

/// Writes one whole-run output and renames it into place.
fn write_output(
    mut f: AtomicFile,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<PathBuf> {
    let dest = f.dest().to_path_buf();
    let err = |e: &dyn std::fmt::Display| {
        AppError::other(format!("cannot write {}: {e}", dest.display()))
    };
    write(f.writer()).map_err(|e| err(&e))?;
    f.commit().map_err(|e| err(&e))
}

fn write_sites(
    mut f: AtomicFile,
    snap: &Snapshot,
    escape: Option<crate::export::csv::EscapeColumn>,
    mode_column: bool,
) -> Result<PathBuf> {
    let dest = f.dest().to_path_buf();
    let err = |e: &dyn std::fmt::Display| {
        AppError::other(format!("cannot write {}: {e}", dest.display()))
    };
    let mut w = SitesCsv::with_columns(f.writer(), escape, mode_column).map_err(|e| err(&e))?;
    w.write_window(Duration::ZERO, snap).map_err(|e| err(&e))?;
    w.flush().map_err(|e| err(&e))?;
    drop(w);
    f.commit().map_err(|e| err(&e))
}

fn write_pools(mut f: AtomicFile, snap: &Snapshot) -> Result<PathBuf> {
    let dest = f.dest().to_path_buf();
    let err = |e: &dyn std::fmt::Display| {
        AppError::other(format!("cannot write {}: {e}", dest.display()))
    };
    let mut w = PoolsCsv::new(f.writer()).map_err(|e| err(&e))?;
    w.write_window(Duration::ZERO, snap).map_err(|e| err(&e))?;
    w.flush().map_err(|e| err(&e))?;
    drop(w);
    f.commit().map_err(|e| err(&e))
}

fn summary(s: &Session, snap: &Snapshot, stop: &Stop, written: &[PathBuf], top: usize) {
    let mut e = std::io::stderr().lock();
    let why = match stop {
        Stop::Duration => "duration reached".to_string(),
        Stop::Signal(sig) => format!("{sig} received"),
        Stop::Target(Gone::Exited(m) | Gone::Replaced(m)) => format!("target {m}"),
    };
    let secs = snap.elapsed.as_secs_f64();
    let _ = writeln!(
        e,
        "allocwatch: PID {} ({}), {}, {} mode: {:.2}s ({why}): {} allocations, {} ({} bytes); events lost: {}",
        s.target.pid,
        s.target.exe_display,
        s.plan.go_version,
        if s.plan.switchable {
            "exact/sampled (--max-overhead)"
        } else {
            s.plan.mode.name()
        },
        secs,
        snap.total_allocs,
        human_bytes(snap.total_bytes),
        snap.total_bytes,
        snap.counters.lost
    );
    if s.plan.mode == crate::plan::Mode::Sampled {
        let _ = writeln!(
            e,
            "allocwatch: sampled mode: counts and bytes are estimates scaled from the runtime's memory-profile samples (as pprof does); types are not known"
        );
    }
    #[expect(clippy::cast_precision_loss, reason = "display")]
    let cost_ms = snap.counters.hits as f64 * COST_PER_HIT_NS / 1e6;
    let _ = writeln!(
        e,
        "allocwatch: {} probe hits: about {cost_ms:.0} ms of the target's CPU time at ~{COST_PER_HIT_NS:.0} ns per hit ({:.1}% of one core)",
        snap.counters.hits,
        if secs > 0.0 {
            cost_ms / 10.0 / secs
        } else {
            0.0
        }
    );
    let (run_ns, runs) = s.program_run_time();
    if runs > 0 {
        #[expect(clippy::cast_precision_loss, reason = "display")]
        let avg = run_ns as f64 / runs as f64;
        let _ = writeln!(
            e,
            "allocwatch: {runs} probe hits, {avg:.0} ns in eBPF programs per hit"
        );
    }
    let fb = s.fallbacks();
    if snap.counters.lost > 0 {
        // A lost key stack loses no count: the kernel counted the allocation.
        let stacks = fb.lost_stacks.min(snap.counters.lost);
        let uncounted = snap.counters.lost - stacks;
        let what = match (uncounted, stacks) {
            (0, _) => format!("counts are exact, but {stacks} new sites lack their full stack"),
            (_, 0) => format!("{uncounted} operations were not counted: counts are low"),
            _ => format!(
                "{uncounted} operations were not counted (counts are low) and {stacks} new sites lack their full stack"
            ),
        };
        let _ = writeln!(
            e,
            "allocwatch: warning: {} events did not fit in the ring buffer: {what}",
            snap.counters.lost
        );
    }
    if fb.agg_full > 0 {
        let _ = writeln!(
            e,
            "allocwatch: note: the kernel's aggregation maps were full ({} keys): {} operations were sent one by one instead",
            allocwatch_common::AGG_ENTRIES,
            fb.agg_full
        );
    }
    for (i, site) in snap.sites_by_bytes().iter().take(top).enumerate() {
        let _ = writeln!(
            e,
            "  {:>2}. {:>10} allocs {:>12}  {} {}:{}  {}",
            i + 1,
            site.allocs,
            human_bytes(site.bytes),
            site.key.function,
            short_file(&site.key.file),
            site.key.line,
            site.key.type_name
        );
    }
    for p in &snap.pools {
        let st = &p.stats;
        let _ = writeln!(
            e,
            "  pool {} (New: {}): gets={} hits={} misses={} nil_returns={} puts={} hit_ratio={}",
            p.name,
            p.new_func
                .as_deref()
                .unwrap_or(if st.nil_returns > 0 { "nil" } else { "?" }),
            st.gets,
            st.hits(),
            st.misses,
            st.nil_returns,
            st.puts,
            st.hit_ratio()
                .map_or_else(|| "-".into(), |r| format!("{:.1}%", r * 100.0)),
        );
        // What this pool's own misses allocated inside New (exact mode).
        match st.miss_cost() {
            Some((0, _)) => {}
            Some((n, b)) => {
                let _ = writeln!(
                    e,
                    "    misses cost {n} allocations, {} ({b} bytes)",
                    human_bytes(b)
                );
            }
            None if st.misses > 0 => {
                let _ = writeln!(e, "    misses cost: not known (sampled mode)");
            }
            None => {}
        }
        for c in &p.callers {
            let cs = &c.stats;
            let _ = writeln!(
                e,
                "    caller {} ({}:{}): gets={} misses={} nil_returns={} puts={}",
                c.caller.function,
                short_file(&c.caller.file),
                c.caller.line,
                cs.gets,
                cs.misses,
                cs.nil_returns,
                cs.puts
            );
        }
    }
    for path in written {
        let _ = writeln!(e, "allocwatch: wrote {}", path.display());
    }
}

/// What `record --json` says about the run besides its counts.
fn json_run<'a>(
    s: &'a Session,
    stop: &Stop,
    budget: Option<&'a Budget>,
    written: &'a [PathBuf],
    top: usize,
) -> crate::export::summary::Run<'a> {
    use crate::export::summary::Stopped;
    crate::export::summary::Run {
        pid: s.target.pid,
        exe: &s.target.exe_display,
        go_version: &s.plan.go_version,
        launched: s.target.launched(),
        mode: s.plan.mode,
        max_overhead: budget.map(|b| (b.pct, &b.switches[..])),
        stopped: match stop {
            Stop::Duration => Stopped::Duration,
            Stop::Signal(sig) => Stopped::Signal(sig),
            Stop::Target(Gone::Exited(m)) => Stopped::TargetExited(m.clone()),
            Stop::Target(Gone::Replaced(m)) => Stopped::TargetReplaced(m.clone()),
        },
        fallbacks: s.fallbacks(),
        program_run_time: s.program_run_time(),
        files: written,
        top,
    }
}

fn short_file(f: &str) -> &str {
    f.rsplit('/').next().unwrap_or(f)
}

/// `allocwatch top`.
pub async fn top(a: TopArgs, _verbose: u8) -> Result<()> {
    let spec = target_spec(&a.target)?;
    let log_path = a
        .log_file
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("allocwatch.log"));
    init_file_log(&log_path)?;
    let escape = a
        .escape
        .source
        .as_deref()
        .map(|d| crate::escape::cmd::request(d, a.escape.go.as_deref()))
        .transpose()?;
    let mut s = Session::start(
        &spec,
        Options {
            pools: a.target.trace_pools(),
            bench: a.target.bench(),
            mode: a.target.mode,
            ringbuf_bytes: a.target.ringbuf_bytes,
            max_overhead: a.target.max_overhead,
            sample_rate: a.target.sample_rate,
        },
    )?;
    // The header names the rate allocwatch set (the status line says why).
    let rate = s.rate_override();
    let rate_note = rate.map(|r| format!(", MemProfileRate {} set by allocwatch", r.set));
    let mut warnings = s.plan.warnings.clone();
    warnings.extend(rate.map(RateOverride::announcement));
    let info = crate::tui::TargetInfo {
        pid: s.target.pid,
        command: s.target.command.clone(),
        go_version: s.plan.go_version.clone(),
        stripped: s.plan.stripped,
        pie: s.plan.pie,
        mode: mode_label(s.mode(), a.target.max_overhead, rate_note.as_deref()),
        mode_column: a.target.mode_column(),
        cost_per_hit_ns: COST_PER_HIT_NS,
        log_path: log_path.display().to_string(),
        warnings,
    };
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    if let Some(req) = escape {
        // `go build` takes seconds: the dashboard gets the reasons when ready.
        let (tx, info) = (tx.clone(), s.bin.build_info().clone());
        std::thread::spawn(move || {
            let msg = match req.run(&info) {
                Ok(an) => crate::tui::Feed::Escape(std::sync::Arc::new(an)),
                Err(e) => crate::tui::Feed::Notice(format!("escape analysis failed: {e}")),
            };
            let _ = tx.blocking_send(msg);
        });
    }
    let launched = s.target.launched();
    let opts = crate::tui::TuiOptions {
        refresh: a.refresh,
        export_dir: a.export_dir.clone(),
        rate_window: a.rate_window,
    };
    let ui = crate::tui::run(info, rx, opts);
    tokio::pin!(ui);
    let tx2 = tx.clone();
    let pid = s.target.pid;
    let max_overhead = a.target.max_overhead;
    let signals = Signals::listen()?;
    let feeder = async {
        let mut budget = max_overhead.map(|pct| Budget::new(pct, s.mode()));
        let stop = trace_loop(
            &mut s,
            signals,
            None,
            a.refresh,
            budget.as_mut(),
            |t| match t {
                Tick::Switch(sw, notice) => {
                    log::warn!("{notice}");
                    let _ = tx.try_send(crate::tui::Feed::ModeSwitch {
                        mode: mode_label(sw.to, max_overhead, rate_note.as_deref()),
                        notice: notice.to_owned(),
                    });
                }
                Tick::Window(snap) => {
                    let _ = tx.try_send(crate::tui::Feed::Snapshot(Box::new(snap.clone())));
                }
            },
        )
        .await;
        let snap = s.snapshot();
        let _ = tx2.send(crate::tui::Feed::Snapshot(Box::new(snap))).await;
        let mut msg = match &stop {
            Ok(Stop::Target(Gone::Exited(m) | Gone::Replaced(m))) => format!("pid {pid} {m}"),
            Ok(Stop::Signal(sig)) => format!("tracing stopped by {sig}"),
            Ok(Stop::Duration) => "tracing stopped".into(),
            Err(e) => format!("tracing failed: {}", e.message),
        };
        // Nothing left to trace: the numbers stay on screen.
        if let Some(m) = s.release_target() {
            log::info!("{m}");
            msg = format!("{msg}; {m}");
        }
        let _ = tx2.send(crate::tui::Feed::TargetExited(msg)).await;
        std::future::pending::<()>().await;
    };
    let result = tokio::select! {
        r = &mut ui => r.map_err(|e| AppError::other(format!("{e:#}"))),
        () = feeder => Ok(()),
    };
    // The way out, in this order: the dashboard has given the terminal back
    // (`tui::run` restores it before it returns); the target is released
    // (its MemProfileRate set back, every probe detached at once); a
    // program allocwatch launched is stopped; the process exits.
    release_target(&mut s);
    if launched {
        // A program allocwatch started does not outlive the dashboard.
        stop_launched(pid);
    }
    result
}

/// Stops a program `top` launched: SIGTERM, reaped (no zombie left
/// behind) as soon as it exits, SIGKILL after 2 s.
fn stop_launched(pid: u32) {
    let pid = pid.cast_signed();
    // SAFETY: kill(2) on the PID of our own child, not reaped yet.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        // SAFETY: waitpid on our own child, without blocking.
        if unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) } != 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: as above.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

fn init_file_log(path: &Path) -> Result<()> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| {
            AppError::usage(format!("cannot open the log file {}: {e}", path.display()))
        })?;
    let _ = env_logger::Builder::new()
        .filter_level(log::LevelFilter::Info)
        .parse_env("ALLOCWATCH_LOG")
        .target(env_logger::Target::Pipe(Box::new(f)))
        .try_init();
    Ok(())
}
