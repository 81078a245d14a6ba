//! Pure aggregation of probe events into per-site and per-pool totals.
//!
//! The [`Aggregator`] receives raw events (a type pointer, a size and a raw
//! user stack) and keeps, per distinct stack, a count and a byte total. Each
//! distinct stack is resolved once, through a [`Resolver`], to an allocation
//! site: the first frame outside the Go runtime, with file, line and the Go
//! type name. Sites are what every view and export shows. Nothing here touches
//! the kernel or the target: it is tested with a fake resolver.

mod pools;

pub use pools::{PoolCallerStats, PoolKey, PoolOp, PoolSnapshot, PoolStats};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

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
    /// A pool's display name: its global variable, or its address.
    fn pool_name(&mut self, pool: u64) -> Arc<str>;
    /// The function at a code address (a pool's `New`).
    fn function_name(&mut self, code: u64) -> Arc<str>;
}

/// Number of power-of-two size buckets kept per site.
pub const SIZE_BUCKETS: usize = 48;

/// Totals of one site.
#[derive(Clone, Debug)]
pub struct SiteStats {
    pub key: SiteKey,
    pub allocs: u64,
    pub bytes: u64,
    /// `size_hist[i]` counts allocations with `2^(i-1) < size <= 2^i` (bucket 0: size 0 or 1).
    pub size_hist: [u64; SIZE_BUCKETS],
    /// The stack of the first allocation seen at this site.
    pub stack: Arc<[Frame]>,
    /// Set when the allocation was made by a `sync.Pool`'s `New` (a pool miss).
    pub pool_new_func: Option<Arc<str>>,
}

/// Kernel-side counters (summed over CPUs).
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
    total_allocs: u64,
    total_bytes: u64,
}

fn hash_stack(typ: u64, frames: &[u64]) -> u64 {
    // FNV-1a over words: cheap, and collisions are resolved by comparing.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ typ;
    for &f in frames {
        h = (h ^ f).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The size bucket of an allocation size.
#[must_use]
pub fn size_bucket(size: u64) -> usize {
    if size <= 1 {
        0
    } else {
        ((64 - (size - 1).leading_zeros()) as usize).min(SIZE_BUCKETS - 1)
    }
}

impl<R: Resolver> Aggregator<R> {
    pub fn new(resolver: R) -> Self {
        Aggregator {
            resolver,
            by_hash: HashMap::new(),
            stacks: Vec::new(),
            sites: Vec::new(),
            site_index: HashMap::new(),
            pools: pools::Pools::default(),
            total_allocs: 0,
            total_bytes: 0,
        }
    }

    pub fn resolver_mut(&mut self) -> &mut R {
        &mut self.resolver
    }

    /// Records one allocation. `frames` is the raw user stack of the event.
    pub fn add_alloc(&mut self, typ: u64, size: u64, frames: &[u64]) {
        let h = hash_stack(typ, frames);
        let site = match self.by_hash.get(&h).and_then(|c| {
            c.iter()
                .find(|&&i| self.stacks[i].typ == typ && *self.stacks[i].frames == *frames)
        }) {
            Some(&i) => self.stacks[i].site,
            None => self.new_stack(h, typ, frames),
        };
        let s = &mut self.sites[site];
        s.allocs += 1;
        s.bytes += size;
        s.size_hist[size_bucket(size)] += 1;
        self.total_allocs += 1;
        self.total_bytes += size;
    }

    fn new_stack(&mut self, h: u64, typ: u64, frames: &[u64]) -> usize {
        let resolved = self.resolver.resolve_alloc(typ, frames);
        let site = match self.site_index.get(&resolved.site) {
            Some(&i) => i,
            None => {
                let i = self.sites.len();
                self.site_index.insert(resolved.site.clone(), i);
                self.sites.push(SiteStats {
                    key: resolved.site,
                    allocs: 0,
                    bytes: 0,
                    size_hist: [0; SIZE_BUCKETS],
                    stack: resolved.stack,
                    pool_new_func: resolved.pool_new_func,
                });
                i
            }
        };
        let idx = self.stacks.len();
        self.stacks.push(StackEntry {
            typ,
            frames: frames.into(),
            site,
        });
        self.by_hash.entry(h).or_default().push(idx);
        site
    }

    /// Records one pool operation.
    pub fn add_pool(&mut self, op: PoolOp, pool: u64, arg: u64, caller: u64) {
        self.pools.add(&mut self.resolver, op, pool, arg, caller);
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
            s.size_hist = [0; SIZE_BUCKETS];
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
                    for (x, y) in d.size_hist.iter_mut().zip(b.size_hist.iter()) {
                        *x = x.saturating_sub(*y);
                    }
                }
                (d.allocs > 0).then_some(d)
            })
            .collect();
        Snapshot {
            elapsed: self.elapsed.saturating_sub(earlier.elapsed),
            sites,
            pools: pools::pools_since(&self.pools, &earlier.pools),
            counters: Counters {
                hits: self.counters.hits.saturating_sub(earlier.counters.hits),
                nested: self.counters.nested.saturating_sub(earlier.counters.nested),
                lost: self.counters.lost.saturating_sub(earlier.counters.lost),
                stack_errors: self
                    .counters
                    .stack_errors
                    .saturating_sub(earlier.counters.stack_errors),
            },
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
