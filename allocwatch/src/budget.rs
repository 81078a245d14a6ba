//! `--max-overhead`: when to switch between exact and sampled mode.
//!
//! Pure logic over cumulative totals: probe hits (every uprobe trap the
//! target took) and allocations (exact counts, or estimates scaled from
//! samples). Exact mode costs about [`COST_PER_HIT_NS`] of the target's CPU
//! time per hit; the cost is a percentage of one core. Exact mode switches to
//! sampled when its cost stays above the budget for [`SUSTAIN`]; sampled mode
//! switches back when what exact mode *would* cost at the current allocation
//! rate stays below [`BACK_BELOW`] × the budget for as long (the gap keeps it
//! from flapping at the limit).

use std::time::Duration;

use crate::plan::Mode;
#[cfg(doc)]
use crate::stats::COST_PER_HIT_NS;
use crate::stats::cost_pct;

/// How long the cost must stay over (or under) the budget before a switch.
pub const SUSTAIN: Duration = Duration::from_secs(3);

/// Tolerance on [`SUSTAIN`] for refreshes that come a little early.
const SLACK: Duration = Duration::from_millis(250);

/// Sampled mode switches back below this fraction of the budget.
pub const BACK_BELOW: f64 = 0.75;

/// A decided switch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Switch {
    /// Seconds since tracing started.
    pub at: Duration,
    pub to: Mode,
    /// The cost that decided it: exact mode's measured cost (to sampled), or
    /// its estimated cost (back to exact), in % of one core.
    pub cost_pct: f64,
    /// How long it had been over (or under).
    pub sustained: Duration,
}

/// The controller: feed it cumulative totals at every refresh.
#[derive(Clone, Debug)]
pub struct Budget {
    pub pct: f64,
    mode: Mode,
    last: Option<(Duration, u64, u64)>,
    /// Since when (and the totals then) the condition for a switch has held.
    since: Option<(Duration, u64, u64)>,
    /// Exact mode's hits per allocation (nested entries, pool probes), to
    /// turn an allocation rate into exact mode's hit rate.
    hits_per_alloc: f64,
    pub switches: Vec<Switch>,
}

impl Budget {
    #[must_use]
    pub fn new(pct: f64, mode: Mode) -> Budget {
        Budget {
            pct,
            mode,
            last: None,
            since: None,
            hits_per_alloc: 1.0,
            switches: Vec::new(),
        }
    }

    #[must_use]
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// What the current mode's condition measures over `dt` with `dh` hits
    /// and `da` allocations: the cost (exact: measured; sampled: what exact
    /// would cost), and whether it calls for a switch.
    fn judge(&self, dt: Duration, dh: u64, da: u64) -> (f64, bool) {
        match self.mode {
            Mode::Exact => {
                let c = cost_pct(dh, dt);
                (c, c > self.pct)
            }
            Mode::Sampled => {
                #[expect(clippy::cast_precision_loss, reason = "an estimate")]
                #[expect(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "an estimate"
                )]
                let exact_hits = (da as f64 * self.hits_per_alloc) as u64;
                let c = cost_pct(exact_hits, dt);
                (c, c < self.pct * BACK_BELOW)
            }
        }
    }

    /// Takes the totals at `t` (about once a second); returns a switch to
    /// make now, if any (the caller makes it; the controller already counts
    /// on the new mode). A switch needs every observation for [`SUSTAIN`]
    /// to call for it, and so must the average over that whole time (which
    /// is what the switch reports: one sample of the runtime stands for
    /// thousands of small allocations, so a single second is noisy).
    pub fn observe(&mut self, t: Duration, hits: u64, allocs: u64) -> Option<Switch> {
        let (t0, h0, a0) = self.last.replace((t, hits, allocs))?;
        let dt = t.saturating_sub(t0);
        if dt.is_zero() {
            return None;
        }
        let dh = hits.saturating_sub(h0);
        let da = allocs.saturating_sub(a0);
        if self.mode == Mode::Exact && da > 0 {
            #[expect(clippy::cast_precision_loss, reason = "a ratio")]
            let r = dh as f64 / da as f64;
            self.hits_per_alloc = r.clamp(1.0, 4.0);
        }
        if !self.judge(dt, dh, da).1 {
            self.since = None;
            return None;
        }
        let (ts, hs, as_) = *self.since.get_or_insert((t0, h0, a0));
        let sustained = t.saturating_sub(ts);
        // Refreshes land a few ms early or late: a tick's worth of slack.
        if sustained + SLACK < SUSTAIN {
            return None;
        }
        let (cost, want) = self.judge(
            sustained,
            hits.saturating_sub(hs),
            allocs.saturating_sub(as_),
        );
        if !want {
            return None;
        }
        let to = match self.mode {
            Mode::Exact => Mode::Sampled,
            Mode::Sampled => Mode::Exact,
        };
        self.mode = to;
        self.since = None;
        let sw = Switch {
            at: t,
            to,
            cost_pct: cost,
            sustained,
        };
        self.switches.push(sw);
        Some(sw)
    }

    /// The line that announces a switch.
    #[must_use]
    pub fn notice(&self, sw: &Switch) -> String {
        match sw.to {
            Mode::Sampled => format!(
                "at {:.1} s: tracing cost ~{:.1}% of one core, over the {}% budget for {:.0} s: switching to sampled mode (counts from here on are estimates)",
                sw.at.as_secs_f64(),
                sw.cost_pct,
                self.pct,
                sw.sustained.as_secs_f64()
            ),
            Mode::Exact => format!(
                "at {:.1} s: exact tracing would cost ~{:.1}% of one core, under {}% ({} × the {}% budget) for {:.0} s: switching back to exact mode",
                sw.at.as_secs_f64(),
                sw.cost_pct,
                self.pct * BACK_BELOW,
                BACK_BELOW,
                self.pct,
                sw.sustained.as_secs_f64()
            ),
        }
    }

    /// "sampled at 12.0 s, exact at 25.0 s", or "none".
    #[must_use]
    pub fn history(&self) -> String {
        if self.switches.is_empty() {
            return "none".into();
        }
        self.switches
            .iter()
            .map(|s| format!("{} at {:.1} s", s.to.name(), s.at.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: u64) -> Duration {
        Duration::from_secs(x)
    }

    #[test]
    fn switches_after_a_sustained_excess_and_back_after_a_sustained_calm() {
        let mut b = Budget::new(5.0, Mode::Exact);
        let (mut hits, mut allocs) = (0, 0);
        let mut step = |b: &mut Budget, t: u64, h: u64, a: u64| {
            hits += h;
            allocs += a;
            b.observe(s(t), hits, allocs)
        };
        assert_eq!(step(&mut b, 0, 0, 0), None);
        // 1 % of a core: nothing.
        for t in 1..=4 {
            assert_eq!(step(&mut b, t, 10_000, 10_000), None);
        }
        // 21 % for two seconds, then calm again: not sustained.
        assert_eq!(step(&mut b, 5, 200_000, 200_000), None);
        assert_eq!(step(&mut b, 6, 200_000, 200_000), None);
        assert_eq!(step(&mut b, 7, 10_000, 10_000), None);
        // Three seconds over: switch at the third.
        assert_eq!(step(&mut b, 8, 200_000, 200_000), None);
        assert_eq!(step(&mut b, 9, 200_000, 200_000), None);
        let sw = step(&mut b, 10, 200_000, 200_000).expect("switch to sampled");
        assert_eq!(sw.to, Mode::Sampled);
        assert_eq!(sw.at, s(10));
        assert!((sw.cost_pct - 21.0).abs() < 1e-9);
        assert_eq!(b.mode(), Mode::Sampled);
        // Sampled: few hits, but the estimated allocation rate is still
        // high: exact would cost 21 %: stay.
        for t in 11..=15 {
            assert_eq!(step(&mut b, t, 50, 200_000), None);
        }
        // Just under the budget but above 0.75 of it (4.2 %): stay.
        for t in 16..=20 {
            assert_eq!(step(&mut b, t, 50, 40_000), None);
        }
        // 1 %: back after three seconds.
        assert_eq!(step(&mut b, 21, 50, 10_000), None);
        assert_eq!(step(&mut b, 22, 50, 10_000), None);
        let sw = step(&mut b, 23, 50, 10_000).expect("switch back");
        assert_eq!(sw.to, Mode::Exact);
        assert_eq!(b.history(), "sampled at 10.0 s, exact at 23.0 s");
        assert!(b.notice(&sw).contains("switching back to exact mode"));
    }

    #[test]
    fn nested_hits_count_toward_the_estimate() {
        // Exact: 2 hits per allocation (e.g. mallocgc calling a
        // size-specialized entry), 3 % of a core: under a 5 % budget.
        let mut b = Budget::new(5.0, Mode::Exact);
        b.observe(s(0), 0, 0);
        assert_eq!(b.observe(s(1), 30_000, 15_000), None);
        b.mode = Mode::Sampled;
        // Sampled at 22k allocations/s: exact would take 44k hits/s = 4.6 %,
        // above 0.75 × 5 %: it must not switch back.
        for t in 2..8 {
            assert_eq!(b.observe(s(t), 30_000 + t, 15_000 + 22_000 * (t - 1)), None);
        }
    }
}
