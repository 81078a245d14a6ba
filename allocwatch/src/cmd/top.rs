//! `allocwatch top`: the live dashboard.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::mpsc::Sender;

use super::{COST_PER_HIT_NS, init_file_log, release_target};
use crate::cli::TopArgs;
use crate::error::{AppError, Result};
use crate::runloop::{self, Schedule, Signals, Stop, Tick, Traced};
use crate::session::Session;
use crate::target::{Gone, RateOverride};
use crate::tui::Feed;

/// `allocwatch top`.
///
/// # Errors
/// Bad flags, a target that cannot be traced, a terminal that cannot be
/// used.
pub async fn top(a: TopArgs, _verbose: u8) -> Result<()> {
    let spec = a.target.spec()?;
    let log_path = init_file_log(a.log_file.as_deref())?;
    let escape = a.escape.request()?;
    let s = Session::start(&spec, a.target.session_options())?;
    // The header names the rate allocwatch set (the status line says why).
    let rate_note = s
        .rate_override()
        .map(|r| format!(", MemProfileRate {} set by allocwatch", r.set));
    let info = target_info(&s, &a, &log_path, rate_note.as_deref());
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    if let Some(req) = escape {
        // `go build` takes seconds: the dashboard gets the reasons when ready.
        let job = crate::escape::Job::start(req, s.bin.build_info().clone());
        let tx = tx.clone();
        tokio::task::spawn_blocking(move || {
            let msg = match job.wait() {
                Ok(an) => Feed::Escape(Arc::new(an)),
                Err(e) => Feed::Notice(format!("escape analysis failed: {e}")),
            };
            let _ = tx.blocking_send(msg);
        });
    }
    let opts = crate::tui::TuiOptions {
        refresh: a.refresh,
        export_dir: a.export_dir.clone(),
        rate_window: a.rate_window,
    };
    let ui = crate::tui::run(info, rx, opts);
    tokio::pin!(ui);
    let signals = Signals::listen()?;
    let mut traced = [Traced::new(s, a.target.max_overhead)];
    let result = tokio::select! {
        r = &mut ui => r.map_err(|e| AppError::other(format!("{e:#}"))),
        () = feed(&mut traced, signals, a.refresh, &tx) => Ok(()),
    };
    // The way out, in this order: the dashboard has given the terminal back
    // (`tui::run` restores it before it returns); the target is released
    // (its MemProfileRate set back, every probe detached at once); a
    // program allocwatch launched is stopped (it does not outlive the
    // dashboard); the process exits.
    let [t] = &mut traced;
    release_target(&mut t.session);
    t.session.target.terminate();
    result
}

/// What the dashboard's header says after the mode: `--max-overhead`, and
/// the rate allocwatch set (e.g. ", MemProfileRate 524288 set by allocwatch").
fn mode_note(max_overhead: Option<f64>, rate: Option<&str>) -> String {
    let rate = rate.unwrap_or_default();
    match max_overhead {
        Some(pct) => format!(" (--max-overhead {pct}%{rate})"),
        None if rate.is_empty() => String::new(),
        None => format!(" ({})", rate.trim_start_matches(", ")),
    }
}

fn target_info(
    s: &Session,
    a: &TopArgs,
    log_path: &Path,
    rate_note: Option<&str>,
) -> crate::tui::TargetInfo {
    let mut warnings = s.plan.warnings.clone();
    warnings.extend(s.rate_override().map(RateOverride::announcement));
    crate::tui::TargetInfo {
        pid: s.target.pid,
        command: s.target.command.clone(),
        go_version: s.plan.go_version.clone(),
        stripped: s.plan.stripped,
        pie: s.plan.pie,
        mode: Some(s.mode()),
        mode_note: mode_note(a.target.max_overhead, rate_note),
        mode_column: a.target.mode_column(),
        cost_per_hit_ns: COST_PER_HIT_NS,
        log_path: log_path.display().to_string(),
        warnings,
    }
}

/// Feeds the dashboard until the trace stops; then sends the last
/// snapshot, gives the target back and says why it stopped (the numbers
/// stay on screen). Never returns: the dashboard decides when to quit.
async fn feed(
    traced: &mut [Traced; 1],
    signals: Signals,
    refresh: std::time::Duration,
    tx: &Sender<Feed>,
) {
    let schedule = Schedule {
        duration: None,
        refresh,
    };
    let stop = runloop::run(traced, signals, schedule, |t| match t {
        Tick::Switch { switch, notice, .. } => {
            log::warn!("{notice}");
            let _ = tx.try_send(Feed::ModeSwitch {
                mode: switch.to,
                notice: notice.to_owned(),
            });
        }
        Tick::Window { snap, .. } => {
            let _ = tx.try_send(Feed::Snapshot(Box::new(snap.clone())));
        }
        Tick::Gone { .. } => {}
    })
    .await;
    let [t] = traced;
    let snap = t.session.snapshot();
    let _ = tx.send(Feed::Snapshot(Box::new(snap))).await;
    let pid = t.session.target.pid;
    let mut msg = match &stop {
        Ok(Stop::Target(Gone::Exited(m) | Gone::Replaced(m) | Gone::Dropped(m))) => {
            format!("pid {pid} {m}")
        }
        Ok(Stop::Signal(sig)) => format!("tracing stopped by {sig}"),
        Ok(Stop::Duration) => "tracing stopped".into(),
        Err(e) => format!("tracing failed: {}", e.message),
    };
    // Nothing left to trace: the numbers stay on screen.
    if let Some(m) = t.session.release_target() {
        log::info!("{m}");
        msg = format!("{msg}; {m}");
    }
    let _ = tx.send(Feed::TargetExited(msg)).await;
    std::future::pending::<()>().await;
}
