//! `allocwatch record`: trace for a while, then write the files and a
//! summary.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{announce, init_stderr_log, output, release_target, summary};
use crate::budget::Budget;
use crate::cli::{FoldedWeight, RecordArgs};
use crate::error::{AppError, Result};
use crate::escape::Analysis;
use crate::export::csv::{PoolsCsv, SitesCsv};
use crate::export::folded::Weight;
use crate::export::series::{IntervalCsv, WriteError};
use crate::export::summary::{self as run_summary, RunSummary, Stopped};
use crate::export::{AtomicFile, flame, folded, pprof, speedscope};
use crate::plan::Mode;
use crate::runloop::{self, Schedule, Signals, Stop, Tick, Traced};
use crate::session::Session;
use crate::stats::Snapshot;
use crate::target::Gone;

/// `allocwatch record`.
///
/// # Errors
/// Bad flags or outputs (before anything is attached), a target that
/// cannot be traced, an output that cannot be written.
pub async fn record(a: RecordArgs, verbose: u8) -> Result<()> {
    init_stderr_log(verbose);
    let spec = a.target.spec()?;
    // Output paths are checked before anything is attached.
    let mut files = Files::open(&a)?;
    let escape = a.escape.request()?;
    let s = Session::start(&spec, a.target.session_options())?;
    let mut series = Series::start(&a, &mut files)?;
    let signals = Signals::listen()?;
    announce(&s);
    // The compiler runs while the target is traced.
    let job = escape.map(|r| crate::escape::Job::start(r, s.bin.build_info().clone()));
    let mut traced = [Traced::new(s, a.target.max_overhead)];
    let schedule = Schedule {
        duration: a.duration,
        refresh: a.interval.unwrap_or(Duration::from_secs(1)),
    };
    // A bar until --duration (on a terminal only).
    let bar = a
        .duration
        .map(|d| crate::progress::Progress::timed("tracing", d));
    let stop = runloop::run(&mut traced, signals, schedule, |t| match t {
        Tick::Switch { notice, .. } => {
            let line = format!("allocwatch: {notice}");
            match &bar {
                Some(b) => b.println(&line),
                None => eprintln!("{line}"),
            }
        }
        Tick::Window { snap, .. } => series.window(snap),
        Tick::Gone { .. } => {}
    })
    .await?;
    drop(bar);
    let [t] = &mut traced;
    let snap = t.session.snapshot();
    // Tracing is over: the target is given back (its MemProfileRate set
    // back, every probe detached) before anything is written.
    release_target(&mut t.session);
    let analysis = job.and_then(crate::escape::cmd::finish).map(Arc::new);
    let mut written: Vec<PathBuf> = Vec::new();
    // A time series that failed keeps its completed windows; the other
    // outputs are still written, and the failure is reported at the end.
    let series_result = series.finish(&snap, &mut written);
    let run = Run {
        a: &a,
        s: &t.session,
        snap: &snap,
        budget: t.budget(),
    };
    written.extend(files.write_whole_run(&run, analysis.clone())?);
    if stop.by_allocwatch() {
        // A program allocwatch started does not outlive the recording.
        t.session.target.terminate();
    }
    let sum = RunSummary::new(
        &summary_run(&t.session, &stop, t.budget(), &written, a.top),
        &snap,
    );
    let json = files
        .json
        .take()
        .map(|f| output::write(f, |w| sum.write(w)))
        .transpose()?;
    summary::print(&sum, json.as_deref());
    if let Some(b) = t.budget() {
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

/// `--interval`: the CSV files as time series, one flushed window per
/// tick. They are at their final paths from the start (see
/// `export::series`); a series that fails keeps its completed windows.
struct Series {
    csv: Option<IntervalCsv>,
    error: Option<WriteError>,
}

impl Series {
    fn start(a: &RecordArgs, files: &mut Files) -> Result<Series> {
        if a.interval.is_none() {
            return Ok(Series {
                csv: None,
                error: None,
            });
        }
        if a.csv.is_some() && a.escape.source.is_some() {
            log::warn!(
                "--interval: the sites CSV gets no escape column (the compiler's reasons are known only at the end)"
            );
        }
        let csv = IntervalCsv::start(files.csv.take(), files.pools.take(), a.target.mode_column())
            .map_err(|e| AppError::other(e.to_string()))?;
        Ok(Series {
            csv: Some(csv),
            error: None,
        })
    }

    fn window(&mut self, snap: &Snapshot) {
        if let Some(w) = self.csv.as_mut()
            && self.error.is_none()
            && let Err(e) = w.window(snap)
        {
            log::error!("{e}");
            self.error = Some(e);
        }
    }

    fn finish(
        self,
        end: &Snapshot,
        written: &mut Vec<PathBuf>,
    ) -> std::result::Result<(), WriteError> {
        match (self.error, self.csv) {
            (Some(e), _) => Err(e),
            (None, Some(w)) => w.finish(end).map(|paths| written.extend(paths)),
            (None, None) => Ok(()),
        }
    }
}

/// What the whole-run outputs are made of.
struct Run<'a> {
    a: &'a RecordArgs,
    s: &'a Session,
    snap: &'a Snapshot,
    budget: Option<&'a Budget>,
}

/// The whole-run output files, opened before tracing starts.
struct Files {
    csv: Option<AtomicFile>,
    pools: Option<AtomicFile>,
    pprof: Option<AtomicFile>,
    folded: Option<AtomicFile>,
    svg: Option<AtomicFile>,
    speedscope: Option<AtomicFile>,
    /// `--json`: written last, it lists the others.
    json: Option<AtomicFile>,
}

impl Files {
    fn open(a: &RecordArgs) -> Result<Files> {
        let [csv, pools, pprof, folded, svg, speedscope, json] = output::create_all([
            ("--csv", a.csv.as_deref()),
            ("--pools-csv", a.pools_csv.as_deref()),
            ("--pprof", a.pprof.as_deref()),
            ("--folded", a.folded.as_deref()),
            ("--svg", a.svg.as_deref()),
            ("--speedscope", a.speedscope.as_deref()),
            ("--json", a.json.as_deref()),
        ])?;
        Ok(Files {
            csv,
            pools,
            pprof,
            folded,
            svg,
            speedscope,
            json,
        })
    }

    /// Writes every file still to write; returns their paths.
    fn write_whole_run(
        &mut self,
        r: &Run<'_>,
        analysis: Option<Arc<Analysis>>,
    ) -> Result<Vec<PathBuf>> {
        let snap = r.snap;
        let mut written = Vec::new();
        if let Some(f) = self.csv.take() {
            let escape =
                r.a.escape
                    .source
                    .is_some()
                    .then(|| crate::escape::cmd::column(analysis));
            let mode_column = r.a.target.mode_column();
            written.push(output::write(f, |w| {
                let mut c = SitesCsv::with_columns(w, escape, mode_column)?;
                c.write_window(Duration::ZERO, snap)?;
                c.flush()
            })?);
        }
        if let Some(f) = self.pools.take() {
            written.push(output::write(f, |w| {
                let mut c = PoolsCsv::new(w)?;
                c.write_window(Duration::ZERO, snap)?;
                c.flush()
            })?);
        }
        let weight = match r.a.folded_weight {
            FoldedWeight::Bytes => Weight::Bytes,
            FoldedWeight::Allocs => Weight::Allocs,
        };
        if let Some(f) = self.pprof.take() {
            let meta = pprof::ProfileMeta {
                executable: r.s.target.exe_display.clone(),
                start: std::time::SystemTime::now()
                    .checked_sub(snap.elapsed)
                    .unwrap_or(std::time::UNIX_EPOCH),
                comments: profile_comments(r.s.plan.mode, &target_line(r.s), snap, r.budget),
            };
            written.push(output::write(f, |w| pprof::write(snap, &meta, w))?);
        }
        if let Some(f) = self.folded.take() {
            written.push(output::write(f, |w| folded::write(snap, weight, w))?);
        }
        if let Some(f) = self.svg.take() {
            let meta = flame_meta(r.s, snap, weight);
            written.push(output::write(f, |w| flame::write(snap, weight, &meta, w))?);
        }
        if let Some(f) = self.speedscope.take() {
            let name = format!("Heap allocations of {}", target_line(r.s));
            written.push(output::write(f, |w| speedscope::write(snap, &name, w))?);
        }
        Ok(written)
    }
}

/// What `record --json` (and the human summary) says about the run besides
/// its counts.
fn summary_run<'a>(
    s: &'a Session,
    stop: &Stop,
    budget: Option<&'a Budget>,
    written: &'a [PathBuf],
    top: usize,
) -> run_summary::Run<'a> {
    run_summary::Run {
        pid: s.target.pid,
        exe: &s.target.exe_display,
        go_version: &s.plan.go_version,
        launched: s.target.launched(),
        mode: s.plan.mode,
        max_overhead: budget.map(|b| (b.pct, &b.switches[..])),
        stopped: match stop {
            Stop::Duration => Stopped::Duration,
            Stop::Signal(sig) => Stopped::Signal(sig),
            // Dropped: only runs that keep running (the daemon) drop targets.
            Stop::Target(Gone::Exited(m) | Gone::Dropped(m)) => Stopped::TargetExited(m.clone()),
            Stop::Target(Gone::Replaced(m)) => Stopped::TargetReplaced(m.clone()),
        },
        program_run_time: s.program_run_time(),
        files: written,
        top,
    }
}

/// A one-line description of how a profile was made.
fn mode_comment(mode: Mode) -> &'static str {
    match mode {
        Mode::Exact => pprof::EXACT_COMMENT,
        Mode::Sampled => pprof::SAMPLED_COMMENT,
    }
}

fn flame_meta(s: &Session, snap: &Snapshot, weight: Weight) -> flame::FlameMeta {
    flame::FlameMeta {
        title: format!("Heap allocations ({})", weight.unit()),
        subtitle: Some(format!(
            "PID {} ({}), {}: {:.2} s, {} allocations, {} bytes; {}",
            s.target.pid,
            s.target.exe_display,
            s.plan.go_version,
            snap.elapsed.as_secs_f64(),
            snap.total_allocs,
            snap.total_bytes,
            mode_comment(s.plan.mode)
        )),
    }
}

/// `PID 1234 (/srv/api), go1.27.3`: who a profile is of.
pub(super) fn target_line(s: &Session) -> String {
    format!(
        "PID {} ({}), {}",
        s.target.pid, s.target.exe_display, s.plan.go_version
    )
}

/// What a profile says about how it was made: `mode` is the mode tracing
/// started in, `target` the [`target_line`].
pub(super) fn profile_comments(
    mode: Mode,
    target: &str,
    snap: &Snapshot,
    budget: Option<&Budget>,
) -> Vec<String> {
    let how = match mode {
        Mode::Exact => {
            "every heap allocation of the target during the recording, counted by a uprobe on the \
             Go runtime's allocation entry points; values are neither sampled nor scaled"
        }
        Mode::Sampled => {
            "the runtime's own memory-profile samples (about one per MemProfileRate bytes), \
             scaled as pprof scales them; types are not known"
        }
    };
    let mut c = vec![mode_comment(mode).to_string(), how.to_string()];
    if let Some(b) = budget {
        c.push(format!(
            "--max-overhead {}% of one core: mode switches: {}; samples counted in sampled mode have the label mode=sampled (or mixed): their values are estimates",
            b.pct,
            b.history()
        ));
    }
    c.push(format!(
        "target: {target}; recorded for {:.2} s",
        snap.elapsed.as_secs_f64()
    ));
    c.push(
        "one stack per allocation site and type (the deepest seen); label type = the Go type"
            .to_string(),
    );
    c.extend(pprof::counter_comments(&snap.counters));
    c
}
