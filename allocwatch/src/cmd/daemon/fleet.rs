//! The daemon's targets: the sessions the run loop drives (one per traced
//! process), and, for `--retain`, the processes that are no longer traced
//! (exited: their final counts; skipped: why). The loop owns the fleet;
//! the HTTP handlers see it only through [`Request`]s answered with
//! [`TargetView`]s, copies taken at that moment.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::oneshot;

use super::super::{announce, release_target};
use super::container;
use crate::budget::Budget;
use crate::plan::Mode;
use crate::runloop::{Tick, Traced};
use crate::session::{Options, Session, TargetSpec};
use crate::stats::Snapshot;
use crate::target::Gone;

/// What stays true of a target while it is known.
#[derive(Debug)]
pub struct Meta {
    pub pid: u32,
    /// The executable's path as the process sees it ("" when unreadable).
    pub exe: String,
    /// The container ID ("" when not in a container).
    pub container: String,
    /// e.g. `go1.27.3` ("" when not traced).
    pub go_version: String,
    /// The mode the session started in (`None` when not traced).
    pub plan_mode: Option<Mode>,
    /// When tracing started (or the process was skipped).
    pub since: SystemTime,
}

/// Whether a target is traced.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    Tracing,
    /// The process went (exited, or exec'd); `how` says which.
    Exited {
        at: SystemTime,
        how: String,
    },
    /// allocwatch gave it up (`why`) and detached.
    Dropped {
        at: SystemTime,
        why: String,
    },
    /// allocwatch could not trace it.
    Skipped {
        reason: String,
    },
}

impl State {
    /// `tracing`, `exited` or `skipped`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            State::Tracing => "tracing",
            State::Exited { .. } => "exited",
            State::Dropped { .. } => "dropped",
            State::Skipped { .. } => "skipped",
        }
    }
}

/// A copy of one target's state, for the HTTP handlers.
#[derive(Clone, Debug)]
pub struct TargetView {
    pub meta: Arc<Meta>,
    pub state: State,
    /// The mode counting now (`None` when not traced).
    pub mode: Option<Mode>,
    /// Cumulative counts since tracing started: fresh for a traced target,
    /// the final ones for an exited target; `None` when not asked for, or
    /// never traced.
    pub snap: Option<Arc<Snapshot>>,
    /// Estimated share of one core that tracing costs the target now.
    pub cost_ratio: f64,
    /// `--max-overhead`'s controller, with its history of switches.
    pub budget: Option<Budget>,
}

/// What an HTTP handler asks the loop for.
pub enum Request {
    /// Every known target; with `counts`, each with its snapshot.
    Targets {
        counts: bool,
        reply: oneshot::Sender<Vec<TargetView>>,
    },
    /// The target with this PID and its snapshot: the traced process, else
    /// the one that exited last with that PID.
    Target {
        pid: u32,
        reply: oneshot::Sender<Option<TargetView>>,
    },
}

/// Hits over the last seconds, for the cost estimate, from the snapshots
/// taken (at scrapes, and every refresh).
#[derive(Debug, Default)]
struct CostMeter {
    /// (time since attach, cumulative hits), oldest first: at most one
    /// older than [`COST_WINDOW`] before the newest.
    samples: VecDeque<(Duration, u64)>,
}

/// What the cost estimate averages over, at least (when snapshots are
/// that far apart).
const COST_WINDOW: Duration = Duration::from_secs(10);

impl CostMeter {
    fn observe(&mut self, elapsed: Duration, hits: u64) {
        self.samples.push_back((elapsed, hits));
        while self.samples.len() > 2 && self.samples[1].0 + COST_WINDOW <= elapsed {
            self.samples.pop_front();
        }
    }

    /// Share of one core since the newest snapshot at least
    /// [`COST_WINDOW`] old (since the attach while there is none).
    fn ratio(&self) -> f64 {
        let Some(&(t1, h1)) = self.samples.back() else {
            return 0.0;
        };
        let (t0, h0) = match self.samples.front() {
            Some(&(t0, h0)) if t0 + COST_WINDOW <= t1 => (t0, h0),
            _ => (Duration::ZERO, 0),
        };
        crate::stats::cost_pct(h1.saturating_sub(h0), t1.saturating_sub(t0)) / 100.0
    }
}

/// A traced target's side of [`Fleet::traced`].
struct Live {
    meta: Arc<Meta>,
    cost: CostMeter,
}

/// A target no longer traced, listed until `until`.
struct Retired {
    view: TargetView,
    until: Instant,
}

/// What the daemon knows of the traced targets besides their sessions:
/// `live.0[i]` describes `traced[i]` (kept apart so that the run loop's
/// step can borrow the sessions while its ticks update this).
#[derive(Default)]
pub struct LiveTargets(Vec<Live>);

impl LiveTargets {
    /// What the run loop hands over: the cost of each target, the mode
    /// switches, and the targets that went (`gone`, released by
    /// [`Fleet::release_gone`] after the loop's step).
    pub fn on_tick(&mut self, t: &Tick<'_>, gone: &mut Vec<usize>) {
        match t {
            Tick::Window { index, snap } => {
                if let Some(l) = self.0.get_mut(*index) {
                    l.cost.observe(snap.elapsed, snap.counters.hits);
                }
            }
            Tick::Switch { notice, .. } => eprintln!("allocwatch: {notice}"),
            Tick::Gone { index, .. } => gone.push(*index),
        }
    }
}

/// The daemon's targets.
pub struct Fleet {
    /// The sessions, driven by the run loop.
    pub traced: Vec<Traced>,
    pub live: LiveTargets,
    retired: Vec<Retired>,
    retain: Duration,
}

impl Fleet {
    #[must_use]
    pub fn new(retain: Duration) -> Fleet {
        Fleet {
            traced: Vec::new(),
            live: LiveTargets::default(),
            retired: Vec::new(),
            retain,
        }
    }

    /// Number of processes traced now.
    #[must_use]
    pub fn tracing(&self) -> usize {
        self.traced.len()
    }

    /// True when `pid` is traced now.
    #[must_use]
    pub fn is_traced(&self, pid: u32) -> bool {
        self.live.0.iter().any(|l| l.meta.pid == pid)
    }

    /// The session of `pid` when it is traced now.
    #[must_use]
    pub fn session(&self, pid: u32) -> Option<&Session> {
        let i = self.live.0.iter().position(|l| l.meta.pid == pid)?;
        self.traced.get(i).map(|t| &t.session)
    }

    /// Starts tracing `pid`; a process that cannot be traced is logged in
    /// one line and listed as skipped, never an error.
    pub fn attach(&mut self, pid: u32, opts: Options, max_overhead: Option<f64>) {
        match Session::start(&TargetSpec::Pid(pid), opts) {
            Ok(s) => {
                announce(&s);
                let meta = Meta {
                    pid,
                    exe: s.target.exe_display.clone(),
                    container: container::of_pid(pid),
                    go_version: s.plan.go_version.clone(),
                    plan_mode: Some(s.plan.mode),
                    since: SystemTime::now(),
                };
                self.live.0.push(Live {
                    meta: Arc::new(meta),
                    cost: CostMeter::default(),
                });
                self.traced.push(Traced::new(s, max_overhead));
            }
            Err(e) => {
                log::warn!("not traced: {}", e.message);
                let meta = Meta {
                    pid,
                    exe: super::discover::exe_of(pid).unwrap_or_default(),
                    container: container::of_pid(pid),
                    go_version: String::new(),
                    plan_mode: None,
                    since: SystemTime::now(),
                };
                self.retire(TargetView {
                    meta: Arc::new(meta),
                    state: State::Skipped { reason: e.message },
                    mode: None,
                    snap: None,
                    cost_ratio: 0.0,
                    budget: None,
                });
            }
        }
    }

    /// Takes the final counts of the targets that went, gives their probes
    /// and maps back, and keeps the counts for `--retain`.
    pub fn release_gone(&mut self, mut gone: Vec<usize>) {
        gone.sort_unstable();
        gone.dedup();
        for i in gone.into_iter().rev() {
            if i >= self.traced.len() {
                continue;
            }
            let mut t = self.traced.remove(i);
            let live = self.live.0.remove(i);
            let snap = t.session.snapshot();
            release_target(&mut t.session);
            let at = SystemTime::now();
            let (how, state) = match t.gone() {
                Some(Gone::Dropped(why)) => (
                    format!("no longer traced: {why}"),
                    State::Dropped {
                        at,
                        why: why.clone(),
                    },
                ),
                Some(Gone::Exited(m) | Gone::Replaced(m)) => {
                    (m.clone(), State::Exited { at, how: m.clone() })
                }
                None => (
                    "gone".into(),
                    State::Exited {
                        at,
                        how: "gone".into(),
                    },
                ),
            };
            eprintln!(
                "allocwatch: PID {} ({}) {how}: its last counts stay exported for {} s",
                live.meta.pid,
                live.meta.exe,
                self.retain.as_secs()
            );
            let view = TargetView {
                meta: live.meta,
                state,
                mode: Some(t.session.mode()),
                snap: Some(Arc::new(snap)),
                cost_ratio: 0.0,
                budget: t.budget().cloned(),
            };
            // The session (its maps and ring buffer) goes here.
            drop(t);
            self.retire(view);
        }
    }

    fn retire(&mut self, view: TargetView) {
        self.retired.push(Retired {
            view,
            until: Instant::now() + self.retain,
        });
    }

    /// Forgets the targets no longer traced for longer than `--retain`.
    pub fn expire(&mut self) {
        let now = Instant::now();
        self.retired.retain(|r| r.until > now);
    }

    /// Answers a request from an HTTP handler (a handler that gave up is
    /// not an error).
    pub fn serve(&mut self, req: Request) {
        match req {
            Request::Targets { counts, reply } => {
                let mut views: Vec<TargetView> = (0..self.traced.len())
                    .map(|i| self.live_view(i, counts))
                    .collect();
                views.extend(self.retired.iter().map(|r| {
                    let mut v = r.view.clone();
                    if !counts {
                        v.snap = None;
                    }
                    v
                }));
                let _ = reply.send(views);
            }
            Request::Target { pid, reply } => {
                let view = match self.live.0.iter().position(|l| l.meta.pid == pid) {
                    Some(i) => Some(self.live_view(i, true)),
                    None => self
                        .retired
                        .iter()
                        .rev()
                        .find(|r| r.view.meta.pid == pid && r.view.snap.is_some())
                        .map(|r| r.view.clone()),
                };
                let _ = reply.send(view);
            }
        }
    }

    /// The traced target `i` now; with `counts`, a fresh snapshot (a read
    /// of its kernel maps).
    fn live_view(&mut self, i: usize, counts: bool) -> TargetView {
        let t = &mut self.traced[i];
        let live = &mut self.live.0[i];
        let snap = counts.then(|| Arc::new(t.session.snapshot()));
        if let Some(s) = &snap {
            live.cost.observe(s.elapsed, s.counters.hits);
        }
        TargetView {
            meta: live.meta.clone(),
            state: State::Tracing,
            mode: Some(t.session.mode()),
            snap,
            cost_ratio: live.cost.ratio(),
            budget: t.budget().cloned(),
        }
    }

    /// Gives every target back (what allocwatch set in it set back, every
    /// probe detached), all at once.
    pub fn release_all(&mut self) {
        crate::runloop::finish(&mut self.traced);
        std::thread::scope(|scope| {
            for t in &mut self.traced {
                scope.spawn(|| release_target(&mut t.session));
            }
        });
        self.traced.clear();
        self.live.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_over_the_last_seconds() {
        let mut m = CostMeter::default();
        assert!(m.ratio().abs() < f64::EPSILON);
        // 100,000 hits in the first second: ~10.5 % of a core (since the attach).
        m.observe(Duration::from_secs(1), 100_000);
        let first = m.ratio();
        assert!((first - 0.105).abs() < 1e-9, "{first}");
        // Then idle, read every second: until a snapshot is 10 s old the
        // estimate is since the attach; then over the last 10 s, back to 0.
        for s in 2..=10 {
            m.observe(Duration::from_secs(s), 100_000);
        }
        assert!((m.ratio() - 0.0105).abs() < 1e-9, "{}", m.ratio());
        m.observe(Duration::from_secs(11), 100_000);
        assert!(m.ratio().abs() < f64::EPSILON, "{}", m.ratio());
        assert!(m.samples.len() <= 12, "{}", m.samples.len());
        // Read 30 s apart (a scrape interval): over those 30 s.
        m.observe(Duration::from_secs(41), 100_000 + 30 * 1000);
        assert!((m.ratio() - 1000.0 * 1.05e-6).abs() < 1e-9, "{}", m.ratio());
        assert_eq!(m.samples.len(), 2);
    }
}
