//! Per-pool and per-call-site `sync.Pool` counters.
//!
//! A pool is identified by its address (`*sync.Pool`), displayed by the name
//! of the global variable holding it when the binary has one, otherwise by
//! its address and the function that used it first
//! (`0xc000012345 (main.handle)`). A call site is the function (and line)
//! that called `Get` or `Put`, past forwarding wrappers (the resolver
//! decides which frames are wrappers, see `symbolize`).
//!
//! A pool's miss cost is what the kernel charged to it: the allocations made
//! inside the `p.New()` calls of its own misses (exact mode only; a window
//! that was partly in sampled mode has no miss cost).

use std::collections::HashMap;
use std::sync::Arc;

use allocwatch_common::POOL_CALLERS;

use super::{Frame, Resolver};

/// What a pool probe saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    /// Allocations made inside this pool's own `p.New()` calls, and their
    /// bytes (requested sizes), counted in exact mode.
    pub miss_allocs: u64,
    pub miss_bytes: u64,
    /// Reads of the kernel's totals made while (or since) sampled mode
    /// counted: when non-zero, the miss cost is not known.
    pub sampled_reads: u64,
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

    /// `(miss_allocs, miss_bytes)`, `None` when (part of) the window was
    /// traced in sampled mode, where allocations are not seen one by one.
    #[must_use]
    pub fn miss_cost(&self) -> Option<(u64, u64)> {
        (self.sampled_reads == 0).then_some((self.miss_allocs, self.miss_bytes))
    }

    /// Charges allocations made inside this pool's own `p.New()` calls.
    pub fn charge_miss(&mut self, allocs: u64, bytes: u64) {
        self.miss_allocs += allocs;
        self.miss_bytes += bytes;
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
            miss_allocs: self.miss_allocs.saturating_sub(o.miss_allocs),
            miss_bytes: self.miss_bytes.saturating_sub(o.miss_bytes),
            sampled_reads: self.sampled_reads.saturating_sub(o.sampled_reads),
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
    /// The pool's data symbol, or its address and first user.
    name: Option<Arc<str>>,
    new_func: Option<Arc<str>>,
    stats: PoolStats,
    callers: HashMap<Callers, usize>,
    caller_stats: Vec<PoolCallerStats>,
}

#[derive(Default)]
pub(super) struct Pools {
    pools: HashMap<PoolKey, PoolEntry>,
    /// return addresses -> the user's frame (past wrappers), resolved once
    callers: HashMap<Callers, Frame>,
    /// Last cumulative kernel totals per (op, pool, arg, callers).
    totals: HashMap<PoolCall, u64>,
    /// Last cumulative miss cost per pool (allocations, bytes).
    miss_totals: HashMap<PoolKey, (u64, u64)>,
}

/// The pool whose `New` function is `new_func`: the pool a site's
/// allocations were made for when its stack shows that `New`.
#[must_use]
pub fn pool_with_new(pools: &[PoolSnapshot], new_func: &str) -> Option<usize> {
    pools
        .iter()
        .position(|p| p.new_func.as_deref() == Some(new_func))
}

/// Return addresses of a pool operation: the caller of `Get`/`Put` and its
/// callers, innermost first, 0 where the walk ended.
pub type Callers = [u64; POOL_CALLERS];

/// A pool's display name: its data symbol, else its address and the
/// function that used it first.
#[must_use]
pub fn pool_display_name(pool: u64, symbol: Option<&str>, user: &str) -> String {
    match symbol {
        Some(s) => s.to_string(),
        None => format!("{pool:#x} ({user})"),
    }
}

/// One kind of pool operation as the kernel counts it: the operation, the
/// pool, its argument (`New`'s code address for a miss) and its callers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct PoolCall {
    pub op: PoolOp,
    pub pool: u64,
    pub arg: u64,
    pub callers: Callers,
}

impl PoolCall {
    pub(super) fn new(op: PoolOp, pool: u64, arg: u64, callers: Callers) -> PoolCall {
        PoolCall {
            op,
            pool,
            arg,
            callers,
        }
    }
}

impl Pools {
    /// Takes the kernel's cumulative count of `call`.
    pub(super) fn set_total<R: Resolver>(&mut self, r: &mut R, call: PoolCall, total: u64) {
        let last = self.totals.entry(call).or_insert(0);
        let d = total.saturating_sub(*last);
        *last = total;
        if d > 0 {
            self.add(r, call, d);
        }
    }

    /// Takes the kernel's cumulative miss cost of one pool.
    pub(super) fn set_miss_total(&mut self, pool: u64, allocs: u64, bytes: u64) {
        let last = self.miss_totals.entry(pool).or_insert((0, 0));
        let (da, db) = (allocs.saturating_sub(last.0), bytes.saturating_sub(last.1));
        *last = (allocs, bytes);
        if da > 0 || db > 0 {
            self.pools
                .entry(pool)
                .or_default()
                .stats
                .charge_miss(da, db);
        }
    }

    /// Marks every pool's miss cost as unknown for the current window
    /// (sampled mode counted since the last read).
    pub(super) fn mark_sampled(&mut self) {
        for e in self.pools.values_mut() {
            e.stats.sampled_reads += 1;
        }
    }

    /// Counts `n` operations `call`.
    pub(super) fn add<R: Resolver>(&mut self, r: &mut R, call: PoolCall, n: u64) {
        let PoolCall {
            op,
            pool,
            arg,
            callers,
        } = call;
        let frame = self
            .callers
            .entry(callers)
            .or_insert_with(|| r.pool_user(&callers))
            .clone();
        let e = self.pools.entry(pool).or_default();
        if e.name.is_none() {
            let symbol = r.pool_symbol(pool);
            e.name = Some(Arc::from(pool_display_name(
                pool,
                symbol.as_deref(),
                &frame.function,
            )));
            e.new_func = e.new_func.take().or_else(|| r.pool_new_func(pool));
        }
        if op == PoolOp::New && e.new_func.is_none() && arg != 0 {
            e.new_func = Some(r.function_name(arg));
        }
        e.stats.add(op, n);
        // Call sites are keyed by function, not by address: the miss probes
        // (which see Get's return address) and Get agree, and a function's
        // Get and Put (on different lines) count together.
        let caller = callers;
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
