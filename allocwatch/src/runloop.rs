//! The run loop: drains the ring buffers, watches the targets, the clock and
//! the signals, and hands snapshots to a command, for one session or for
//! several at once (one per target process). `record`, `top` and `explain`
//! drive it with one session.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

use crate::budget::{Budget, Switch};
use crate::error::{AppError, Result};
use crate::session::Session;
use crate::stats::Snapshot;
use crate::target::Gone;

/// Why a run stopped.
#[derive(Clone, Debug)]
pub enum Stop {
    /// The `duration` given to [`run`] passed.
    Duration,
    /// SIGINT or SIGTERM.
    Signal(&'static str),
    /// Every target went away; this is how the last one went.
    Target(Gone),
}

impl Stop {
    /// Whether allocwatch ended the run (rather than the target): a program
    /// allocwatch launched is then stopped too.
    #[must_use]
    pub fn by_allocwatch(&self) -> bool {
        matches!(self, Stop::Duration | Stop::Signal(_))
    }
}

/// SIGINT and SIGTERM listeners. Created before the user is told that
/// tracing runs, so that a signal sent right after is never missed (tokio
/// keeps a signal that arrives before the listener is polled).
pub struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts listening.
    ///
    /// # Errors
    /// When the signal handlers cannot be installed.
    pub fn listen() -> Result<Signals> {
        let listen = |kind| signal(kind).map_err(|e| AppError::other(format!("signal: {e}")));
        Ok(Signals {
            int: listen(SignalKind::interrupt())?,
            term: listen(SignalKind::terminate())?,
        })
    }
}

/// One traced process in a run: its session, its `--max-overhead` budget,
/// and whether it is gone.
pub struct Traced {
    pub session: Session,
    budget: Option<Budget>,
    gone: Option<Gone>,
}

impl Traced {
    /// A session to run; with `max_overhead` (percent of one core), its
    /// mode switches to keep under that cost.
    #[must_use]
    pub fn new(session: Session, max_overhead: Option<f64>) -> Traced {
        let budget = max_overhead.map(|pct| Budget::new(pct, session.mode()));
        Traced {
            session,
            budget,
            gone: None,
        }
    }

    /// The budget, with its history of switches.
    #[must_use]
    pub fn budget(&self) -> Option<&Budget> {
        self.budget.as_ref()
    }

    /// How the target went away, once it did.
    #[must_use]
    pub fn gone(&self) -> Option<&Gone> {
        self.gone.as_ref()
    }

    /// Feeds the budget a snapshot and makes the switch it decides on.
    fn observe(&mut self, snap: &Snapshot) -> Result<Option<(Switch, String)>> {
        let Some(b) = self.budget.as_mut() else {
            return Ok(None);
        };
        let Some(sw) = b.observe(snap.elapsed, snap.counters.hits, snap.total_allocs) else {
            return Ok(None);
        };
        self.session.switch_to(sw.to)?;
        let notice = b.notice(&sw);
        Ok(Some((sw, notice)))
    }
}

/// What the run loop hands over, for the session at `index`.
pub enum Tick<'a> {
    /// The snapshot at a refresh.
    Window { index: usize, snap: &'a Snapshot },
    /// A mode switch `--max-overhead` just made, with its notice.
    Switch {
        index: usize,
        switch: &'a Switch,
        notice: &'a str,
    },
    /// The target went away (its last events are counted; the run goes on
    /// while another target is traced).
    Gone { index: usize, gone: &'a Gone },
}

/// When a run ticks and ends.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// How often a snapshot of every session is handed over.
    pub refresh: Duration,
}

/// How often `--max-overhead` looks at the cost (whatever the refresh).
const BUDGET_EVERY: Duration = Duration::from_secs(1);

/// The fixed schedules of a run: windows do not drift (`record --interval`
/// windows stay aligned), the budget looks every second.
struct Clock {
    refresh: Duration,
    next_window: Instant,
    next_budget: Instant,
}

impl Clock {
    fn new(refresh: Duration) -> Clock {
        let now = Instant::now();
        Clock {
            refresh,
            next_window: now + refresh,
            next_budget: now + BUDGET_EVERY,
        }
    }

    /// Whether a budget look and a window are due now; moves them on.
    fn due(&mut self, budgets: bool) -> (bool, bool) {
        let now = Instant::now();
        let budget = budgets && now >= self.next_budget;
        if budget {
            self.next_budget = (self.next_budget + BUDGET_EVERY).max(now);
        }
        let window = now >= self.next_window;
        if window {
            self.next_window += self.refresh;
            if self.next_window <= now {
                // Far behind (a stalled process): skip, do not burst.
                self.next_window = now + self.refresh;
            }
        }
        (budget, window)
    }
}

/// Runs until `schedule.duration`, a signal, or every target going away;
/// calls `tick` with a snapshot of each session about every refresh, with
/// each mode switch a budget decides on, and with each target that goes.
///
/// # Errors
/// When a mode switch fails.
pub async fn run(
    traced: &mut [Traced],
    signals: Signals,
    schedule: Schedule,
    mut tick: impl FnMut(Tick<'_>),
) -> Result<Stop> {
    let mut runner = Runner::new(signals, schedule);
    let stop = loop {
        if let Some(stop) = runner.step(traced, &mut tick).await? {
            break stop;
        }
    };
    finish(traced);
    Ok(stop)
}

/// Whatever the targets did before the stop is still in the ring buffers:
/// counts it (for [`run`], and for callers that drive [`Runner`] themselves).
pub fn finish(traced: &mut [Traced]) {
    for t in traced.iter_mut().filter(|t| t.gone.is_none()) {
        t.session.pump();
        t.session.flush_logs();
    }
}

/// The loop's state between steps: the signals, the clock and the deadline.
/// [`run`] steps it until it stops; a caller that also serves requests,
/// or adds and removes sessions between steps (the daemon), steps it itself.
pub struct Runner {
    sigint: tokio::signal::unix::Signal,
    sigterm: tokio::signal::unix::Signal,
    deadline: Option<Instant>,
    ticker: tokio::time::Interval,
    clock: Clock,
    /// Stop when every target is gone (else only at the deadline or a signal).
    stop_when_gone: bool,
    /// A failed mode switch gives that target up instead of ending the run.
    drop_on_failed_switch: bool,
}

impl Runner {
    /// A run on `schedule` that stops at its duration, at a signal, or once
    /// every target is gone.
    #[must_use]
    pub fn new(signals: Signals, schedule: Schedule) -> Runner {
        let Signals { int, term } = signals;
        Runner {
            sigint: int,
            sigterm: term,
            deadline: schedule.duration.map(|d| Instant::now() + d),
            ticker: tokio::time::interval(schedule.refresh.min(Duration::from_millis(20))),
            clock: Clock::new(schedule.refresh),
            stop_when_gone: true,
            drop_on_failed_switch: false,
        }
    }

    /// Goes on when no target is left (a daemon waits for signals), and
    /// gives up a target whose mode switch fails (detached like one that
    /// went: `Tick::Gone` with [`Gone::Dropped`]) instead of ending the run.
    #[must_use]
    pub fn keep_running(mut self) -> Runner {
        self.stop_when_gone = false;
        self.drop_on_failed_switch = true;
        self
    }

    /// Checks the targets every `every` instead of every 20 ms (a target
    /// that went is noticed later; its counts are read all the same).
    #[must_use]
    pub fn check_every(mut self, every: Duration) -> Runner {
        self.ticker = tokio::time::interval(every.min(self.clock.refresh));
        self
    }

    /// Waits for the next thing to do and does it: drain ring buffers, or
    /// check the targets and take the snapshots due, or stop. Returns the
    /// stop, if this was it. Cancel-safe: nothing is lost when the future
    /// is dropped before it completes (all its work happens after its one
    /// wait), so callers can `select!` it against their own work.
    ///
    /// # Errors
    /// When a mode switch fails.
    pub async fn step(
        &mut self,
        traced: &mut [Traced],
        tick: &mut impl FnMut(Tick<'_>),
    ) -> Result<Option<Stop>> {
        tokio::select! {
            () = any_events(traced) => pump_live(traced),
            _ = self.ticker.tick() => {
                if let Some(last) = check_targets(traced, tick)
                    && self.stop_when_gone
                {
                    return Ok(Some(Stop::Target(last)));
                }
                let budgets = traced.iter().any(|t| t.budget.is_some() && t.gone.is_none());
                let (budget_due, window_due) = self.clock.due(budgets);
                if budget_due || window_due {
                    let drop = self.drop_on_failed_switch;
                    snapshots(traced, budget_due, window_due, drop, tick)?;
                }
            }
            () = sleep_until(self.deadline) => return Ok(Some(Stop::Duration)),
            _ = self.sigint.recv() => return Ok(Some(Stop::Signal("SIGINT"))),
            _ = self.sigterm.recv() => return Ok(Some(Stop::Signal("SIGTERM"))),
        }
        Ok(None)
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn pump_live(traced: &mut [Traced]) {
    for t in traced.iter_mut().filter(|t| t.gone.is_none()) {
        t.session.pump();
    }
}

/// Resolves when any live session has events in its ring buffer.
async fn any_events(traced: &mut [Traced]) {
    let mut waits: Vec<Pin<Box<dyn Future<Output = ()> + '_>>> = traced
        .iter_mut()
        .filter(|t| t.gone.is_none())
        .map(|t| Box::pin(t.session.events_ready()) as Pin<Box<dyn Future<Output = ()>>>)
        .collect();
    std::future::poll_fn(|cx| {
        if waits.iter_mut().any(|w| w.as_mut().poll(cx).is_ready()) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}

/// Drains every live session and notes the targets that went away (after
/// counting their last events); returns how the last one went once none
/// is left.
fn check_targets(traced: &mut [Traced], tick: &mut impl FnMut(Tick<'_>)) -> Option<Gone> {
    let mut last = None;
    for (index, t) in traced.iter_mut().enumerate() {
        if t.gone.is_some() {
            continue;
        }
        t.session.pump();
        if let Some(gone) = t.session.check_target() {
            t.session.pump();
            t.session.flush_logs();
            tick(Tick::Gone { index, gone: &gone });
            last = Some(gone.clone());
            t.gone = Some(gone);
        }
    }
    if traced.iter().all(|t| t.gone.is_some()) {
        last.or_else(|| traced.last().and_then(|t| t.gone.clone()))
    } else {
        None
    }
}

/// One snapshot (a read of every kernel map) per live session serves both
/// the budget and the window. A failed mode switch ends the run, or, with
/// `drop_failed`, gives that target up.
fn snapshots(
    traced: &mut [Traced],
    budget_due: bool,
    window_due: bool,
    drop_failed: bool,
    tick: &mut impl FnMut(Tick<'_>),
) -> Result<()> {
    for (index, t) in traced.iter_mut().enumerate() {
        if t.gone.is_some() {
            continue;
        }
        let snap = t.session.snapshot();
        let observed = if budget_due {
            t.observe(&snap)
        } else {
            Ok(None)
        };
        match observed {
            Ok(Some((switch, notice))) => tick(Tick::Switch {
                index,
                switch: &switch,
                notice: &notice,
            }),
            Ok(None) => {}
            Err(e) if drop_failed => {
                let gone = Gone::Dropped(format!("its mode switch failed ({})", e.message));
                tick(Tick::Gone { index, gone: &gone });
                t.gone = Some(gone);
                continue;
            }
            Err(e) => return Err(e),
        }
        if window_due {
            tick(Tick::Window { index, snap: &snap });
        }
    }
    Ok(())
}
