//! `allocwatch daemon`: traces Go processes unattended, one session per
//! process driven by one [run loop](crate::runloop), and serves what it
//! counts over HTTP: Prometheus metrics, pprof profiles, the list of
//! targets ([`http`]).
//!
//! The loop owns the [`Fleet`]; between its steps it answers the HTTP
//! handlers' requests, gives back the targets that went (their final
//! counts kept for `--retain`) and forgets those retained for longer.
//! Processes come from `--pid` and `--exe` ([`discover`]): those running
//! at the start, then each process that execs and is wanted, attached from
//! the same loop.

mod container;
mod discover;
mod fleet;
mod http;
mod metrics;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;

use super::init_stderr_log;
use crate::cli::DaemonArgs;
use crate::error::{AppError, Result};
use crate::plan::Mode;
use crate::probe::execs::ExecWatch;
use crate::runloop::{Runner, Schedule, Signals, Stop, Tick};
use crate::session::Options;
use discover::{Discovery, Patterns};
use fleet::{Fleet, Request};

/// Each target's ring buffer. It carries only what the kernel does not
/// count itself (the stack of each new key, allocations sent alone), and
/// all its pages are mapped into allocwatch at once, the data twice over:
/// `record`'s 32 MiB would cost 64 MiB of RSS per target, 4 MiB cost 8
/// (benchmark 9: 430 MiB for 50 targets before any event). 512 KiB hold
/// ~1,400 new stacks between two drains, and the loop drains a ring as
/// soon as the kernel says it has data. Lost events are counted and
/// exported (`allocwatch_events_lost_total`).
const RINGBUF_BYTES: u32 = 512 << 10;

/// How often the loop takes a snapshot of every target for the cost
/// estimate when nothing scrapes (the endpoints read the kernel's counts
/// when asked; a snapshot reads every slot of the kernel's maps).
const REFRESH: Duration = Duration::from_secs(10);

/// How often the loop looks whether each target is still there (`record`:
/// every 20 ms). Counts do not depend on it: a target's maps are read
/// after it went.
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// How long held processes wait, at most, for the attaches ahead of
/// theirs in one turn of the loop (each takes ~0.2 s): those after that go
/// on unheld and are attached a moment later.
const HOLD_AT_MOST: Duration = Duration::from_secs(1);

/// `allocwatch daemon`.
///
/// # Errors
/// Bad flags, missing privileges or kernel features, an address that
/// cannot be listened on. A process that cannot be traced is not an error.
pub async fn daemon(a: DaemonArgs, verbose: u8) -> Result<()> {
    init_stderr_log(verbose);
    let (opts, max_overhead) = session_options(&a)?;
    crate::envcheck::check()?;
    let signals = Signals::listen()?;
    let listener = bind(a.listen).await?;
    let addr = listener
        .local_addr()
        .map_err(|e| AppError::env(format!("--listen {}: {e}", a.listen)))?;
    let patterns = Patterns::new(a.exe.clone());
    let watch = match ExecWatch::start() {
        Ok(w) => Some(w),
        Err(e) if patterns.is_empty() => {
            log::warn!(
                "{}: a --pid target that execs is not traced again",
                e.message
            );
            None
        }
        Err(e) => return Err(e),
    };
    let mut fleet = Fleet::new(a.retain);
    let mut pids = a.pids.clone();
    pids.sort_unstable();
    pids.dedup();
    let mut discovery = Discovery::new(patterns, &pids, watch);
    if a.no_hold {
        discovery = discovery.without_hold();
    } else if !crate::envcheck::can_signal_any_process() && !a.exe.is_empty() {
        // A process stopped at its exec would stay stopped.
        log::warn!(
            "no CAP_KILL: new processes are not held at their first instruction (what they allocate before they are attached is not counted)"
        );
        discovery = discovery.without_hold();
    }
    discovery.arm_literals();
    let found = discover::scan(discovery.patterns());
    pids.extend(found.iter().filter(|p| !a.pids.contains(p)));
    for &pid in &pids {
        fleet.attach(pid, opts, max_overhead);
        if let Some(s) = fleet.session(pid) {
            discovery.arm(&s.target, None);
        }
    }
    trim_heap();
    let (tx, rx) = mpsc::channel(64);
    let app = http::router(tx, a.max_sites as usize);
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            log::error!("HTTP server: {e}");
        }
    });
    eprintln!(
        "allocwatch: daemon tracing {} of {} processes{}; serving http://{addr}/metrics, /debug/pprof/allocs?pid=PID, /targets and /sd/pprof",
        fleet.tracing(),
        pids.len(),
        if a.exe.is_empty() {
            ""
        } else {
            ", and every process started later that --exe matches"
        }
    );
    let attach = |fleet: &mut Fleet, pid: u32| fleet.attach(pid, opts, max_overhead);
    let stop = drive(&mut fleet, &mut discovery, attach, signals, rx).await;
    // Nothing is served from here on; every target is given back at once.
    server.abort();
    fleet.release_all();
    let stop = stop?;
    let by = match stop {
        Stop::Signal(s) => s,
        Stop::Duration | Stop::Target(_) => "the run loop",
    };
    eprintln!("allocwatch: stopped by {by}: every probe detached");
    Ok(())
}

/// Gives the heap's free pages back to the kernel. Without it glibc keeps
/// what a scrape's snapshots or an attach freed, and the daemon's RSS stays
/// near its highest (benchmark 9: 145–185 MiB after the same run).
pub(super) fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions; it only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The session options of `--mode`, `--max-overhead`, `--sample-rate` and
/// `--pools`/`--no-pools`.
fn session_options(a: &DaemonArgs) -> Result<(Options, Option<f64>)> {
    // --max-overhead starts exact and falls back to samples.
    let mode = if a.max_overhead.is_some() {
        Mode::Exact
    } else {
        a.mode
    };
    if a.sample_rate.is_some() && mode == Mode::Exact && a.max_overhead.is_none() {
        return Err(AppError::usage(
            "--sample-rate sets the rate of the runtime's memory-profile samples, which exact mode does not use",
        )
        .hint("drop --mode exact (the daemon samples by default), or add --max-overhead PCT"));
    }
    let opts = Options {
        pools: crate::cli::trace_pools(mode, a.pools, a.no_pools),
        bench: None,
        mode,
        ringbuf_bytes: Some(RINGBUF_BYTES),
        max_overhead: a.max_overhead,
        sample_rate: a.sample_rate,
        progress: false,
    };
    Ok((opts, a.max_overhead))
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        let err = AppError::env(format!("cannot listen on {addr}: {e}"));
        if e.kind() == std::io::ErrorKind::AddrInUse {
            err.hint("another program uses that port: choose another with --listen ADDR:PORT")
        } else {
            err
        }
    })
}

/// Steps the run loop until a signal; between steps, answers requests,
/// gives back the targets that went, and attaches (`attach`) the processes
/// that exec'd and are wanted.
async fn drive(
    fleet: &mut Fleet,
    discovery: &mut Discovery,
    attach: impl Fn(&mut Fleet, u32),
    signals: Signals,
    mut requests: mpsc::Receiver<Request>,
) -> Result<Stop> {
    let schedule = Schedule {
        duration: None,
        refresh: REFRESH,
    };
    let mut runner = Runner::new(signals, schedule)
        .keep_running()
        .check_every(CHECK_EVERY);
    loop {
        let mut gone = Vec::new();
        let live = &mut fleet.live;
        let mut tick = |t: Tick<'_>| live.on_tick(&t, &mut gone);
        tokio::select! {
            step = runner.step(&mut fleet.traced, &mut tick) => {
                if let Some(stop) = step? {
                    return Ok(stop);
                }
            }
            Some(req) = requests.recv() => fleet.serve(req),
            () = discovery.wait_execs() => {}
        }
        if !gone.is_empty() {
            fleet.release_gone(gone);
            trim_heap();
        }
        let turn = std::time::Instant::now();
        for mut r in discovery.take_ready(|pid| fleet.is_traced(pid)) {
            if r.held && turn.elapsed() >= HOLD_AT_MOST {
                // Many started at once: the rest are not kept waiting for
                // the attaches before theirs.
                discovery.resume(r.pid);
                r.held = false;
            }
            attach(fleet, r.pid);
            if let Some(s) = fleet.session(r.pid) {
                discovery.arm(&s.target, r.file);
                let ms = r.seen.elapsed().as_millis();
                if r.held {
                    eprintln!(
                        "allocwatch: PID {} traced from its first instruction (held {ms} ms at its exec)",
                        r.pid
                    );
                } else {
                    eprintln!(
                        "allocwatch: PID {} traced from {ms} ms after its exec",
                        r.pid
                    );
                }
            }
        }
        // Attached or not, no process stays held past this turn.
        discovery.resume_held();
        fleet.expire();
    }
}
