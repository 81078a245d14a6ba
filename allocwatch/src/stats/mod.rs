//! Pure aggregation of probe events into per-site and per-pool totals.
//!
//! The [`Aggregator`] receives raw events (a type pointer, a size and a raw
//! user stack) and keeps, per distinct stack, a count and a byte total. Each
//! distinct stack is resolved once, through a [`Resolver`], to an allocation
//! site: the first frame outside the Go runtime, with file, line and the Go
//! type name. Sites are what every view and export shows. Nothing here touches
//! the kernel or the target: it is tested with a fake resolver.

mod pools;
mod rates;

pub use pools::{
    Callers, PoolCallerStats, PoolKey, PoolOp, PoolSnapshot, PoolStats, pool_display_name,
    pool_with_new,
};
pub use rates::{
    COST_PER_HIT_NS, PoolRate, Rates, SiteRate, cost_ns, cost_pct, cost_share, per_s, share,
};

use std::collections::HashMap;

use allocwatch_common::{AggKey, SAMPLE_SIZE_MASK, SAMPLED_BIT};
use std::sync::Arc;
use std::time::Duration;

use crate::plan::Mode;

/// One symbolized frame.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    pub function: Arc<str>,
    pub file: Arc<str>,
    pub line: u32,
}

/// What identifies an allocation site in every output.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SiteKey {
    pub function: Arc<str>,
    pub file: Arc<str>,
    pub line: u32,
    pub type_name: Arc<str>,
}

/// A distinct stack resolved to its site.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub site: SiteKey,
    /// The stack from the site outwards (the site first), inline frames expanded.
    pub stack: Arc<[Frame]>,
    /// The pool whose `New` caused this allocation, when `sync.(*Pool).Get` is on the stack.
    pub pool_new_func: Option<Arc<str>>,
}

/// Turns raw stacks into sites: implemented over a Go binary by
/// `symbolize::GoResolver`, faked in tests.
pub trait Resolver {
    /// `frames[0]` is the probed instruction, `frames[1..]` return addresses.
    fn resolve_alloc(&mut self, typ: u64, frames: &[u64]) -> Resolved;
    /// The function containing a return address (for pool call sites).
    fn caller(&mut self, ret_addr: u64) -> Frame;
    /// The function that asked for a pool operation: of the caller of
    /// `Get`/`Put` and its callers (`callers`, innermost first, 0 where the
    /// walk ended), the first frame that is not a forwarding wrapper.
    fn pool_user(&mut self, callers: &Callers) -> Frame {
        self.caller(callers[0])
    }
    /// A pool's global variable (`name` or `name+0x10`), when it has one.
    fn pool_symbol(&mut self, pool: u64) -> Option<Arc<str>>;
    /// The function at a code address (a pool's `New`).
    fn function_name(&mut self, code: u64) -> Arc<str>;
    /// A pool's `New` function read from the live pool, when it can be read
    /// (before any miss has shown it).
    fn pool_new_func(&mut self, _pool: u64) -> Option<Arc<str>> {
        None
    }
}

/// Number of power-of-two size buckets kept per site.
pub const SIZE_BUCKETS: usize = 48;

/// A site's allocations per power-of-two size bucket: bucket `i` counts
/// sizes `2^(i-1) < size <= 2^i` (bucket 0: size 0 or 1). Sparse (most
/// sites allocate one or two sizes): the non-zero buckets in ascending
/// order, 16 bytes each, where a full array took 384 bytes per site and
/// per snapshot copy (a third of the daemon's memory at 50,000 sites).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SizeHist(Vec<(u8, u64)>);

impl SizeHist {
    /// Adds `n` to `bucket` (the last bucket takes anything above it).
    pub fn add(&mut self, bucket: usize, n: u64) {
        if n == 0 {
            return;
        }
        #[expect(clippy::cast_possible_truncation, reason = "below SIZE_BUCKETS")]
        let b = bucket.min(SIZE_BUCKETS - 1) as u8;
        match self.0.binary_search_by_key(&b, |e| e.0) {
            Ok(i) => self.0[i].1 += n,
            Err(i) => self.0.insert(i, (b, n)),
        }
    }

    /// The count of `bucket`.
    #[must_use]
    pub fn get(&self, bucket: usize) -> u64 {
        self.0
            .iter()
            .find(|e| usize::from(e.0) == bucket)
            .map_or(0, |e| e.1)
    }

    /// The non-zero buckets and their counts, in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.0.iter().map(|&(b, n)| (usize::from(b), n))
    }

    /// Each bucket less what `earlier` had in it (never below zero).
    #[must_use]
    pub fn since(&self, earlier: &SizeHist) -> SizeHist {
        SizeHist(
            self.0
                .iter()
                .map(|&(b, n)| (b, n.saturating_sub(earlier.get(usize::from(b)))))
                .filter(|e| e.1 > 0)
                .collect(),
        )
    }
}

/// Totals of one site.
#[derive(Clone, Debug)]
pub struct SiteStats {
    pub key: SiteKey,
    pub allocs: u64,
    pub bytes: u64,
    /// Allocations per size bucket.
    pub size_hist: SizeHist,
    /// The stack of the first allocation seen at this site.
    pub stack: Arc<[Frame]>,
    /// Set when the allocation was made by a `sync.Pool`'s `New` (a pool miss).
    pub pool_new_func: Option<Arc<str>>,
    /// Of `allocs`, how many are estimates scaled from the runtime's
    /// memory-profile samples (sampled mode).
    pub sampled_allocs: u64,
}

/// Which mode counted a site's allocations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counted {
    /// All of them in this mode.
    Only(Mode),
    /// Some in each: a mode switch happened meanwhile.
    Mixed,
}

impl Counted {
    /// `exact`, `sampled` (estimates) or `mixed`, as the outputs print it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Counted::Only(m) => m.name(),
            Counted::Mixed => "mixed",
        }
    }
}

impl SiteStats {
    /// How the counts were made: exactly, sampled (estimates), or both.
    #[must_use]
    pub fn mode(&self) -> Counted {
        if self.sampled_allocs == 0 {
            Counted::Only(Mode::Exact)
        } else if self.sampled_allocs >= self.allocs {
            Counted::Only(Mode::Sampled)
        } else {
            Counted::Mixed
        }
    }
}

/// Kernel-side counters (summed over CPUs), cumulative like everything in
/// a [`Snapshot`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Probe hits in the target.
    pub hits: u64,
    /// Nested hits skipped (already counted at `runtime.mallocgc`).
    pub nested: u64,
    /// Events lost because the ring buffer was full.
    pub lost: u64,
    /// Stacks that could not be read.
    pub stack_errors: u64,
    /// Hits from another process (filtered out).
    pub other_process: u64,
    /// Allocations (or pool operations) of a new key when the aggregation
    /// map (or the pool map) was full: sent one by one through the ring
    /// buffer.
    pub agg_full: u64,
    /// Allocations whose site lay deeper in the runtime than a key
    /// reaches: sent one by one.
    pub key_truncated: u64,
    /// Of `lost`, the events that only carried a new key's full stack (the
    /// allocation was counted; its site lacks the full stack).
    pub lost_stacks: u64,
}

impl Counters {
    /// `self - earlier`, counter by counter.
    #[must_use]
    pub fn since(&self, earlier: &Counters) -> Counters {
        let d = |now: u64, then: u64| now.saturating_sub(then);
        Counters {
            hits: d(self.hits, earlier.hits),
            nested: d(self.nested, earlier.nested),
            lost: d(self.lost, earlier.lost),
            stack_errors: d(self.stack_errors, earlier.stack_errors),
            other_process: d(self.other_process, earlier.other_process),
            agg_full: d(self.agg_full, earlier.agg_full),
            key_truncated: d(self.key_truncated, earlier.key_truncated),
            lost_stacks: d(self.lost_stacks, earlier.lost_stacks),
        }
    }
}

/// A consistent copy of everything, taken at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Time since tracing started.
    pub elapsed: Duration,
    pub sites: Vec<SiteStats>,
    pub pools: Vec<PoolSnapshot>,
    pub counters: Counters,
    pub total_allocs: u64,
    pub total_bytes: u64,
}

/// A kernel key's return addresses, preceded by a placeholder for the
/// probed instruction (the shape [`Resolver::resolve_alloc`] takes).
fn resolver_frames(key: &AggKey) -> Vec<u64> {
    let n = (key.nframes as usize).min(key.frames.len());
    std::iter::once(0)
        .chain(key.frames[..n].iter().copied())
        .collect()
}

/// What the aggregator remembers of a kernel key.
#[derive(Clone, Copy, Debug)]
struct KeyEntry {
    site: usize,
    /// The kernel's cumulative totals when last read.
    count: u64,
    bytes: u64,
    /// Whether the key's full stack has been seen.
    has_stack: bool,
}

#[derive(Clone, Debug)]
struct StackEntry {
    typ: u64,
    frames: Box<[u64]>,
    site: usize,
}

/// Aggregates events; see the module documentation.
pub struct Aggregator<R> {
    resolver: R,
    /// hash of (typ, frames) -> indices into `stacks`
    by_hash: HashMap<u64, Vec<usize>>,
    stacks: Vec<StackEntry>,
    sites: Vec<SiteStats>,
    site_index: HashMap<SiteKey, usize>,
    pools: pools::Pools,
    keys: HashMap<AggKey, KeyEntry>,
    /// Samples sent alone, per (site, size): how many, and how many
    /// allocations they have been counted as so far.
    lone_samples: HashMap<(usize, u64), (u64, u64)>,
    /// `runtime.MemProfileRate` of the target (sampled mode).
    sample_rate: u64,
    total_allocs: u64,
    total_bytes: u64,
}

/// The number of allocations one memory-profile sample of `size` bytes
/// stands for at sampling rate `rate`, as pprof computes it:
/// `1 / (1 − e^(−size/rate))`.
#[must_use]
pub fn sample_scale(size: u64, rate: u64) -> f64 {
    if rate <= 1 || size == 0 {
        return 1.0;
    }
    #[expect(clippy::cast_precision_loss, reason = "sizes and rates far below 2^52")]
    let x = size as f64 / rate as f64;
    1.0 / -(-x).exp_m1()
}

/// The type word under which sampled stacks are cached (no real type
/// descriptor lies at the top of the address space).
const SAMPLED_STACK: u64 = u64::MAX;

/// A sample carries no type: its site's type stays empty rather than a guess
/// (`<untyped>` would make a second row of the same site).
fn blank_sampled_type(resolved: &mut Resolved) {
    if &*resolved.site.type_name == "<untyped>" {
        resolved.site.type_name = Arc::from("");
    }
}

fn hash_stack(typ: u64, frames: &[u64]) -> u64 {
    // FNV-1a over words: cheap, and collisions are resolved by comparing.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ typ;
    for &f in frames {
        h = (h ^ f).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The index into [`SiteStats::size_hist`] of an allocation size: the
/// kernel's bucket ([`allocwatch_common::size_bucket`]).
#[must_use]
pub fn size_bucket(size: u64) -> usize {
    allocwatch_common::size_bucket(size) as usize
}

// Every bucket the kernel makes has its place in `size_hist`.
const _: () = assert!(allocwatch_common::size_bucket(u64::MAX) as usize == SIZE_BUCKETS - 1);

impl<R: Resolver> Aggregator<R> {
    pub fn new(resolver: R) -> Self {
        Aggregator {
            resolver,
            by_hash: HashMap::new(),
            stacks: Vec::new(),
            sites: Vec::new(),
            site_index: HashMap::new(),
            pools: pools::Pools::default(),
            keys: HashMap::new(),
            lone_samples: HashMap::new(),
            sample_rate: 0,
            total_allocs: 0,
            total_bytes: 0,
        }
    }

    pub fn resolver_mut(&mut self) -> &mut R {
        &mut self.resolver
    }

    /// Records one allocation. `frames` is the raw user stack of the event.
    pub fn add_alloc(&mut self, typ: u64, size: u64, frames: &[u64]) {
        let site = self.stack_site(typ, frames, false);
        self.add_to_site(site, 1, size, size_bucket(size), false);
    }

    /// Records one memory-profile sample of `size` bytes that the kernel
    /// could not aggregate (its runtime frames are deeper than a key, as
    /// where maps grow): scaled exactly like an aggregated sample.
    pub fn add_sample(&mut self, size: u64, frames: &[u64]) {
        let site = self.stack_site(0, frames, true);
        // Scaled from the running number of samples of this size at this
        // site, as for a kernel key: rounding each sample alone would add
        // up to half an allocation per sample.
        let (samples, reported) = {
            let e = self.lone_samples.entry((site, size)).or_default();
            e.0 += 1;
            *e
        };
        let (count, _) = self.scale_samples(samples, size);
        let dc = count.saturating_sub(reported);
        if let Some(e) = self.lone_samples.get_mut(&(site, size)) {
            e.1 = count;
        }
        self.add_to_site(site, dc, dc.saturating_mul(size), size_bucket(size), true);
    }

    /// The site of a raw stack, resolved once per distinct stack.
    fn stack_site(&mut self, typ: u64, frames: &[u64], sampled: bool) -> usize {
        // A sample's stack resolves to an untyped site of its own.
        let typ_key = if sampled { SAMPLED_STACK } else { typ };
        let h = hash_stack(typ_key, frames);
        let known = self.by_hash.get(&h).and_then(|c| {
            c.iter()
                .find(|&&i| self.stacks[i].typ == typ_key && *self.stacks[i].frames == *frames)
        });
        if let Some(&i) = known {
            return self.stacks[i].site;
        }
        let mut resolved = self.resolver.resolve_alloc(typ, frames);
        if sampled {
            blank_sampled_type(&mut resolved);
        }
        let site = self.site_for(resolved);
        let idx = self.stacks.len();
        self.stacks.push(StackEntry {
            typ: typ_key,
            frames: frames.into(),
            site,
        });
        self.by_hash.entry(h).or_default().push(idx);
        site
    }

    /// `samples` memory-profile samples of `size` bytes each, as the
    /// (allocations, bytes) they stand for at the target's sampling rate.
    fn scale_samples(&self, samples: u64, size: u64) -> (u64, u64) {
        #[expect(clippy::cast_precision_loss, reason = "sample counts are small")]
        let est = samples as f64 * sample_scale(size, self.sample_rate);
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "rounded estimate"
        )]
        let est = est.round() as u64;
        (est, est.saturating_mul(size))
    }

    fn add_to_site(&mut self, site: usize, allocs: u64, bytes: u64, bucket: usize, sampled: bool) {
        let s = &mut self.sites[site];
        s.allocs += allocs;
        s.bytes += bytes;
        if sampled {
            s.sampled_allocs += allocs;
        }
        s.size_hist.add(bucket, allocs);
        self.total_allocs += allocs;
        self.total_bytes += bytes;
    }

    /// Takes the kernel's cumulative totals of one key; the difference since
    /// the last read is added to the key's site.
    pub fn set_key_totals(&mut self, key: &AggKey, count: u64, bytes: u64) {
        let sampled = key.bucket & SAMPLED_BIT != 0;
        let (count, bytes, bucket) = if sampled {
            // `count` samples of exactly `size` bytes each.
            let size = u64::from(key.bucket & SAMPLE_SIZE_MASK);
            let (c, b) = self.scale_samples(count, size);
            (c, b, size_bucket(size))
        } else {
            (count, bytes, key.bucket as usize)
        };
        let entry = self.key_entry(key);
        let dc = count.saturating_sub(entry.count);
        let db = bytes.saturating_sub(entry.bytes);
        let site = entry.site;
        if let Some(e) = self.keys.get_mut(key) {
            e.count = count;
            e.bytes = bytes;
        }
        if dc == 0 && db == 0 {
            return;
        }
        self.add_to_site(site, dc, db, bucket, sampled);
    }

    /// Sets the target's `runtime.MemProfileRate` (sampled mode).
    pub fn set_sample_rate(&mut self, rate: u64) {
        self.sample_rate = rate;
    }

    /// Takes the full stack the kernel sent for a key seen for the first
    /// time: it gives the key's site its stack and its pool (if any).
    pub fn add_key_stack(&mut self, key: &AggKey, frames: &[u64]) {
        let entry = self.key_entry(key);
        if entry.has_stack || frames.len() < 2 {
            return;
        }
        let site = entry.site;
        if let Some(e) = self.keys.get_mut(key) {
            e.has_stack = true;
        }
        let full = self.resolver.resolve_alloc(key.typ, frames);
        let s = &mut self.sites[site];
        if full.stack.len() > s.stack.len() {
            s.stack = full.stack;
        }
        if s.pool_new_func.is_none() {
            s.pool_new_func = full.pool_new_func;
        }
    }

    fn key_entry(&mut self, key: &AggKey) -> KeyEntry {
        if let Some(e) = self.keys.get(key) {
            return *e;
        }
        let mut resolved = self.resolver.resolve_alloc(key.typ, &resolver_frames(key));
        if key.bucket & SAMPLED_BIT != 0 {
            blank_sampled_type(&mut resolved);
        }
        let site = self.site_for(resolved);
        let e = KeyEntry {
            site,
            count: 0,
            bytes: 0,
            has_stack: false,
        };
        self.keys.insert(*key, e);
        e
    }

    fn site_for(&mut self, resolved: Resolved) -> usize {
        match self.site_index.get(&resolved.site) {
            Some(&i) => i,
            None => {
                let i = self.sites.len();
                self.site_index.insert(resolved.site.clone(), i);
                self.sites.push(SiteStats {
                    key: resolved.site,
                    allocs: 0,
                    bytes: 0,
                    size_hist: SizeHist::default(),
                    stack: resolved.stack,
                    pool_new_func: resolved.pool_new_func,
                    sampled_allocs: 0,
                });
                i
            }
        }
    }

    /// Records one pool operation.
    pub fn add_pool(&mut self, op: PoolOp, pool: u64, arg: u64, callers: Callers) {
        let call = pools::PoolCall::new(op, pool, arg, callers);
        self.pools.add(&mut self.resolver, call, 1);
    }

    /// Takes the kernel's cumulative count of one (pool, callers, operation).
    pub fn set_pool_total(
        &mut self,
        op: PoolOp,
        pool: u64,
        arg: u64,
        callers: Callers,
        total: u64,
    ) {
        let call = pools::PoolCall::new(op, pool, arg, callers);
        self.pools.set_total(&mut self.resolver, call, total);
    }

    /// Takes the kernel's cumulative miss cost of one pool: allocations
    /// made inside its own `p.New()` calls (exact mode).
    pub fn set_pool_miss_total(&mut self, pool: u64, allocs: u64, bytes: u64) {
        self.pools.set_miss_total(pool, allocs, bytes);
    }

    /// Says that sampled mode counted since the last read: the pools' miss
    /// costs of the windows that include this read are unknown.
    pub fn mark_pools_sampled(&mut self) {
        self.pools.mark_sampled();
    }

    /// Number of distinct stacks seen.
    #[must_use]
    pub fn distinct_stacks(&self) -> usize {
        self.stacks.len()
    }

    /// Forgets all counts (sites and stacks stay known).
    pub fn reset(&mut self) {
        for s in &mut self.sites {
            s.allocs = 0;
            s.bytes = 0;
            s.size_hist = SizeHist::default();
        }
        self.pools.reset();
        self.total_allocs = 0;
        self.total_bytes = 0;
    }

    #[must_use]
    pub fn snapshot(&self, elapsed: Duration, counters: Counters) -> Snapshot {
        Snapshot {
            elapsed,
            sites: self
                .sites
                .iter()
                .filter(|s| s.allocs > 0)
                .cloned()
                .collect(),
            pools: self.pools.snapshot(),
            counters,
            total_allocs: self.total_allocs,
            total_bytes: self.total_bytes,
        }
    }
}

impl Snapshot {
    /// Per-site difference `self - earlier` (sites absent earlier count from 0):
    /// the allocations made between two snapshots.
    #[must_use]
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        let before: HashMap<&SiteKey, &SiteStats> =
            earlier.sites.iter().map(|s| (&s.key, s)).collect();
        let sites = self
            .sites
            .iter()
            .filter_map(|s| {
                let mut d = s.clone();
                if let Some(b) = before.get(&s.key) {
                    d.allocs = s.allocs.saturating_sub(b.allocs);
                    d.bytes = s.bytes.saturating_sub(b.bytes);
                    d.sampled_allocs = s.sampled_allocs.saturating_sub(b.sampled_allocs);
                    d.size_hist = s.size_hist.since(&b.size_hist);
                }
                // Bytes can arrive in a later read than their count (the
                // kernel adds them one after the other): keep such a row, or
                // windows would not add up to the totals.
                (d.allocs > 0 || d.bytes > 0).then_some(d)
            })
            .collect();
        Snapshot {
            elapsed: self.elapsed.saturating_sub(earlier.elapsed),
            sites,
            pools: pools::pools_since(&self.pools, &earlier.pools),
            counters: self.counters.since(&earlier.counters),
            total_allocs: self.total_allocs.saturating_sub(earlier.total_allocs),
            total_bytes: self.total_bytes.saturating_sub(earlier.total_bytes),
        }
    }

    /// Sites sorted by bytes, descending (ties: allocations, then key).
    #[must_use]
    pub fn sites_by_bytes(&self) -> Vec<&SiteStats> {
        let mut v: Vec<&SiteStats> = self.sites.iter().collect();
        v.sort_by(|a, b| {
            b.bytes
                .cmp(&a.bytes)
                .then(b.allocs.cmp(&a.allocs))
                .then(a.key.cmp(&b.key))
        });
        v
    }
}

#[cfg(test)]
mod tests;
