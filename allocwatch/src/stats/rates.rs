//! Numbers computed from counts and time: per-second rates over a snapshot
//! (a window between two snapshots, or a whole run) and what the probe hits
//! cost the target. Views, summaries, reports and exports take them from
//! here and only format them.

use std::collections::HashMap;
use std::time::Duration;

use super::{PoolKey, SiteKey, SiteStats, Snapshot};

/// The target's CPU time one probe hit costs (the uprobe trap and the
/// program), measured on the development machine (docs/benchmarks.md).
pub const COST_PER_HIT_NS: f64 = 1050.0;

/// `n` per second over `over`; `None` when no time passed.
#[must_use]
pub fn per_s(n: u64, over: Duration) -> Option<f64> {
    let secs = over.as_secs_f64();
    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    (secs > 0.0).then(|| n as f64 / secs)
}

/// The target's CPU time, in ns, that `hits` probe hits cost.
#[must_use]
pub fn cost_ns(hits: u64) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "an estimate")]
    let hits = hits as f64;
    hits * COST_PER_HIT_NS
}

/// The fraction of one core that `hits_per_s` probe hits a second cost at
/// `ns_per_hit` each.
#[must_use]
pub fn cost_share(hits_per_s: f64, ns_per_hit: f64) -> f64 {
    hits_per_s * ns_per_hit / 1e9
}

/// The percentage of one core that `hits` probe hits in `over` cost (0 when
/// no time passed).
#[must_use]
pub fn cost_pct(hits: u64, over: Duration) -> f64 {
    per_s(hits, over).map_or(0.0, |r| cost_share(r, COST_PER_HIT_NS) * 100.0)
}

/// Fraction `part / whole`, 0 when `whole` is 0.
#[must_use]
pub fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    #[expect(clippy::cast_precision_loss, reason = "a fraction")]
    let f = part as f64 / whole as f64;
    f
}

impl SiteStats {
    /// Average allocation size, 0 without allocations.
    #[must_use]
    pub fn avg_size(&self) -> f64 {
        if self.allocs == 0 {
            return 0.0;
        }
        #[expect(clippy::cast_precision_loss, reason = "an average")]
        let avg = self.bytes as f64 / self.allocs as f64;
        avg
    }
}

/// Per-second rates of a site.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SiteRate {
    pub allocs: f64,
    pub bytes: f64,
}

/// Per-second rates of a pool.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PoolRate {
    pub gets: f64,
    pub misses: f64,
    pub puts: f64,
}

/// Per-second rates of everything in a snapshot, over its time.
#[derive(Clone, Debug, Default)]
pub struct Rates {
    pub sites: HashMap<SiteKey, SiteRate>,
    pub pools: HashMap<PoolKey, PoolRate>,
    pub allocs: f64,
    pub bytes: f64,
    /// Probe hits per second.
    pub hits: f64,
}

impl Snapshot {
    /// `n` per second over this snapshot's time; `None` when no time passed.
    #[must_use]
    pub fn per_s(&self, n: u64) -> Option<f64> {
        per_s(n, self.elapsed)
    }

    /// The rates of every site and pool and of the totals over this
    /// snapshot's time (rates between two snapshots: `newer.since(older).rates()`);
    /// `None` when no time passed.
    #[must_use]
    pub fn rates(&self) -> Option<Rates> {
        let r = |n: u64| self.per_s(n);
        let sites = self
            .sites
            .iter()
            .filter_map(|s| {
                let rate = SiteRate {
                    allocs: r(s.allocs)?,
                    bytes: r(s.bytes)?,
                };
                Some((s.key.clone(), rate))
            })
            .collect();
        let pools = self
            .pools
            .iter()
            .filter_map(|p| {
                let rate = PoolRate {
                    gets: r(p.stats.gets)?,
                    misses: r(p.stats.misses)?,
                    puts: r(p.stats.puts)?,
                };
                Some((p.pool, rate))
            })
            .collect();
        Some(Rates {
            sites,
            pools,
            allocs: r(self.total_allocs)?,
            bytes: r(self.total_bytes)?,
            hits: r(self.counters.hits)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_costs() {
        let s = Duration::from_secs;
        assert_eq!(per_s(10, s(4)), Some(2.5));
        assert_eq!(per_s(10, Duration::ZERO), None);
        // 100k hits/s × 1.05 µs = 10.5 % of one core.
        assert!((cost_pct(100_000, s(1)) - 10.5).abs() < 1e-9);
        assert!((cost_pct(200_000, s(2)) - 10.5).abs() < 1e-9);
        assert_eq!(cost_pct(5, Duration::ZERO), 0.0);
        assert!((cost_ns(3) - 3150.0).abs() < 1e-9);
        assert!((cost_share(4000.0, 250.0) - 0.001).abs() < 1e-12);
        assert_eq!((share(1, 4), share(1, 0)), (0.25, 0.0));
        let snap = Snapshot {
            elapsed: s(2),
            total_allocs: 7,
            total_bytes: 700,
            ..Snapshot::default()
        };
        let r = snap.rates().expect("time passed");
        assert_eq!((r.allocs, r.bytes, r.hits), (3.5, 350.0, 0.0));
        assert!(Snapshot::default().rates().is_none());
    }
}
