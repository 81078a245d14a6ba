//! `allocwatch explain`: trace for `--duration`, run the compiler's escape
//! analysis meanwhile, and print why the hot sites are on the heap.

use super::{announce, init_stderr_log, output, release_target};
use crate::cli::ExplainArgs;
use crate::error::{AppError, Result};
use crate::runloop::{self, Schedule, Signals, Traced};
use crate::session::Session;

/// `allocwatch explain`.
///
/// # Errors
/// Bad flags, a target that cannot be traced, an escape analysis that
/// fails, stdout that cannot be written.
pub async fn explain(a: ExplainArgs, verbose: u8) -> Result<()> {
    init_stderr_log(verbose);
    let spec = a.target.spec()?;
    let req = crate::escape::cmd::request(&a.source, a.go.as_deref(), a.allow_root_build)?;
    let mut opts = a.target.session_options();
    // The report is about the sites, not the counts: no mode switches.
    opts.max_overhead = None;
    let s = Session::start(&spec, opts)?;
    let signals = Signals::listen()?;
    announce(&s);
    let job = crate::escape::Job::start(req, s.bin.build_info().clone());
    let mut traced = [Traced::new(s, None)];
    let schedule = Schedule {
        duration: Some(a.duration),
        refresh: std::time::Duration::from_secs(1),
    };
    let stop = runloop::run(&mut traced, signals, schedule, |_| {}).await?;
    let [t] = &mut traced;
    let s = &mut t.session;
    let snap = s.snapshot();
    release_target(s);
    if stop.by_allocwatch() {
        s.target.terminate();
    }
    let analysis = job
        .wait()
        .map_err(|e| AppError::other(format!("escape analysis failed: {e}")))?;
    let what = format!(
        "PID {} ({}), {}",
        s.target.pid, s.target.exe_display, s.plan.go_version
    );
    output::print(|mut out| {
        crate::escape::report::write_report(&mut out, &analysis, &snap, &what, a.top)
    })
}
