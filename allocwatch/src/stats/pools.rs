//! Per-pool and per-call-site `sync.Pool` counters.
//!
//! A pool is identified by its address (`*sync.Pool`), displayed by the name
//! of the global variable holding it when the binary has one. A call site is
//! the function (and line) that called `Get` or `Put`.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Frame, Resolver};

/// What a pool probe saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolOp {
    /// `Get` was called.
    Get,
    /// `Get` found nothing and called `p.New()` (a miss).
    New,
    /// `Get` found nothing and `p.New` is nil: it returns nil.
    Nil,
    /// `Put` was called with a non-nil value.
    Put,
}

pub type PoolKey = u64;

/// Counters of one pool, or of one call site of a pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub gets: u64,
    pub misses: u64,
    pub nil_returns: u64,
    pub puts: u64,
}

impl PoolStats {
    /// Gets served from the pool.
    #[must_use]
    pub fn hits(&self) -> u64 {
        self.gets.saturating_sub(self.misses + self.nil_returns)
    }

    /// `(gets − misses − nil returns) / gets`, `None` without gets.
    #[must_use]
    pub fn hit_ratio(&self) -> Option<f64> {
        #[expect(clippy::cast_precision_loss, reason = "ratios of counts")]
        (self.gets > 0).then(|| self.hits() as f64 / self.gets as f64)
    }

    /// Objects taken and not returned (gets − puts, never below zero).
    #[must_use]
    pub fn gets_without_puts(&self) -> u64 {
        self.gets.saturating_sub(self.puts)
    }

    fn add(&mut self, op: PoolOp, n: u64) {
        match op {
            PoolOp::Get => self.gets += n,
            PoolOp::New => self.misses += n,
            PoolOp::Nil => self.nil_returns += n,
            PoolOp::Put => self.puts += n,
        }
    }

    fn minus(&self, o: &PoolStats) -> PoolStats {
        PoolStats {
            gets: self.gets.saturating_sub(o.gets),
            misses: self.misses.saturating_sub(o.misses),
            nil_returns: self.nil_returns.saturating_sub(o.nil_returns),
            puts: self.puts.saturating_sub(o.puts),
        }
    }
}

/// A call site of a pool's `Get`/`Put`.
#[derive(Clone, Debug)]
pub struct PoolCallerStats {
    pub caller: Frame,
    pub stats: PoolStats,
}

/// One pool at one moment.
#[derive(Clone, Debug)]
pub struct PoolSnapshot {
    pub pool: PoolKey,
    pub name: Arc<str>,
    /// The `New` function, once a miss has shown it.
    pub new_func: Option<Arc<str>>,
    pub stats: PoolStats,
    pub callers: Vec<PoolCallerStats>,
}

#[derive(Default)]
struct PoolEntry {
    name: Option<Arc<str>>,
    new_func: Option<Arc<str>>,
    stats: PoolStats,
    callers: HashMap<u64, usize>,
    caller_stats: Vec<PoolCallerStats>,
}

#[derive(Default)]
pub(super) struct Pools {
    pools: HashMap<PoolKey, PoolEntry>,
    /// return address -> caller frame, resolved once
    callers: HashMap<u64, Frame>,
    /// Last cumulative kernel totals per (op, pool, arg, caller).
    totals: HashMap<(u8, u64, u64, u64), u64>,
}

impl Pools {
    pub(super) fn set_total<R: Resolver>(
        &mut self,
        r: &mut R,
        op: PoolOp,
        pool: u64,
        arg: u64,
        caller: u64,
        total: u64,
    ) {
        let last = self
            .totals
            .entry((op as u8, pool, arg, caller))
            .or_insert(0);
        let d = total.saturating_sub(*last);
        *last = total;
        if d > 0 {
            self.add(r, op, pool, arg, caller, d);
        }
    }

    pub(super) fn add<R: Resolver>(
        &mut self,
        r: &mut R,
        op: PoolOp,
        pool: u64,
        arg: u64,
        caller: u64,
        n: u64,
    ) {
        let e = self.pools.entry(pool).or_default();
        if e.name.is_none() {
            e.name = Some(r.pool_name(pool));
            e.new_func = r.pool_new_func(pool);
        }
        if op == PoolOp::New && e.new_func.is_none() && arg != 0 {
            e.new_func = Some(r.function_name(arg));
        }
        e.stats.add(op, n);
        let frame = self
            .callers
            .entry(caller)
            .or_insert_with(|| r.caller(caller));
        // Call sites are keyed by function, not by address: the miss probes
        // (which see Get's return address) and Get agree, and a function's
        // Get and Put (on different lines) count together.
        let idx = match e.callers.get(&caller) {
            Some(&i) => i,
            None => {
                let i = match e
                    .caller_stats
                    .iter()
                    .position(|c| c.caller.function == frame.function)
                {
                    Some(i) => i,
                    None => {
                        e.caller_stats.push(PoolCallerStats {
                            caller: frame.clone(),
                            stats: PoolStats::default(),
                        });
                        e.caller_stats.len() - 1
                    }
                };
                e.callers.insert(caller, i);
                i
            }
        };
        e.caller_stats[idx].stats.add(op, n);
    }

    pub(super) fn reset(&mut self) {
        for e in self.pools.values_mut() {
            e.stats = PoolStats::default();
            for c in &mut e.caller_stats {
                c.stats = PoolStats::default();
            }
        }
    }

    pub(super) fn snapshot(&self) -> Vec<PoolSnapshot> {
        let mut v: Vec<PoolSnapshot> = self
            .pools
            .iter()
            .map(|(&pool, e)| PoolSnapshot {
                pool,
                name: e
                    .name
                    .clone()
                    .unwrap_or_else(|| Arc::from(format!("{pool:#x}"))),
                new_func: e.new_func.clone(),
                stats: e.stats,
                callers: e.caller_stats.clone(),
            })
            .collect();
        v.sort_by(|a, b| b.stats.gets.cmp(&a.stats.gets).then(a.name.cmp(&b.name)));
        v
    }
}

pub(super) fn pools_since(now: &[PoolSnapshot], earlier: &[PoolSnapshot]) -> Vec<PoolSnapshot> {
    now.iter()
        .map(|p| {
            let mut d = p.clone();
            if let Some(b) = earlier.iter().find(|b| b.pool == p.pool) {
                d.stats = p.stats.minus(&b.stats);
                for c in &mut d.callers {
                    if let Some(bc) = b
                        .callers
                        .iter()
                        .find(|bc| bc.caller.function == c.caller.function)
                    {
                        c.stats = c.stats.minus(&bc.stats);
                    }
                }
            }
            d
        })
        .collect()
}
