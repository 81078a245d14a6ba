//! The only module that talks to the kernel: loads the eBPF object, attaches
//! the plan's uprobes, reads the ring buffer and the counters.

use std::num::NonZeroU32;
use std::os::fd::AsRawFd;
use std::path::Path;

use allocwatch_common::{
    AggKey, AggValue, AllocEvent, EVENT_STACK_ONLY, MAX_FRAMES, POOL_CALLERS, PoolEvent, PoolKey,
    PoolValue, SAMPLED_BIT, SLOT_FRAMES, Slot, cookie, counter, kind, names,
};
use aya::maps::{Array, MapData, PerCpuArray, PerCpuHashMap, RingBuf};
use aya::{Ebpf, EbpfLoader};
use aya_log::EbpfLogger;
use std::collections::HashMap;
use tokio::io::unix::AsyncFd;

use crate::error::{AppError, Result};
use crate::plan::{ProbePlan, Program};
use crate::stats::Counters;
use links::{Attacher, Links, is_exact_entry};

mod addrset;
mod btf;
pub mod execs;
mod links;
mod multi;

/// aya-log's ring buffer map and the size allocwatch gives it.
const AYA_LOGS: &str = "AYA_LOGS";
const AYA_LOGS_BYTES: u32 = 16 << 10;

/// The eBPF object built by `build.rs`.
static BPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/allocwatch.bpf.o"));

/// One event from the ring buffer.
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    /// A key seen for the first time (counted in the kernel), with its full stack.
    KeyStack { key: &'a AggKey, frames: &'a [u64] },
    /// One allocation the kernel could not aggregate.
    Alloc {
        cookie: u64,
        size: u64,
        typ: u64,
        /// A memory-profile sample (sampled mode), to be scaled.
        sampled: bool,
        frames: &'a [u64],
    },
    Pool {
        cookie: u64,
        pool: u64,
        arg: u64,
        callers: [u64; POOL_CALLERS],
    },
}

/// How to load the programs (defaults: the real programs, the ring buffer
/// size compiled into the object).
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// Benchmarks: attach one of the floor programs at every probe instead.
    pub bench: Option<BenchPrograms>,
    /// Size of the `EVENTS` ring buffer in bytes instead of
    /// [`RINGBUF_BYTES`](allocwatch_common::RINGBUF_BYTES): a power of two
    /// multiple of the page size (tests shrink it to make it overflow).
    pub ringbuf_bytes: Option<u32>,
}

/// The programs benchmarks attach instead of the real ones, to measure floors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchPrograms {
    /// An empty program: the cost of the uprobe trap alone.
    Noop,
    /// One user read of the return address: the least any attribution needs.
    Read1,
    /// Two user reads (return address and the caller's frame record): the
    /// least attribution through one runtime frame needs.
    Read2,
}

/// Loaded programs with their probes attached. Dropping it (or
/// [`Tracer::detach`]) detaches every probe, all at once.
pub struct Tracer {
    ring: AsyncFd<RingBuf<MapData>>,
    logger: Option<AsyncFd<EbpfLogger<&'static dyn log::Log>>>,
    counters: PerCpuArray<MapData, u64>,
    slots: PerCpuArray<MapData, Slot>,
    agg: PerCpuHashMap<MapData, AggKey, AggValue>,
    pool_agg: PerCpuHashMap<MapData, PoolKey, PoolValue>,
    pool_miss_agg: PerCpuHashMap<MapData, u64, AggValue>,
    /// Every probe attached now.
    links: Links,
    /// Which allocation programs count (`allocwatch_common::mode`).
    mode: Array<MapData, u32>,
    /// The exact-mode allocation probes (a switchable session detaches
    /// them in sampled mode and attaches them again).
    exact: Vec<crate::plan::PlannedProbe>,
    exe: std::path::PathBuf,
    pid: u32,
    /// Keeps the kernel's run-time statistics of BPF programs on.
    _stats: Option<std::os::fd::OwnedFd>,
    // Last: the programs and their links go when the rest is done.
    _ebpf: Ebpf,
}

pub(super) fn load_error(e: &dyn std::fmt::Display) -> AppError {
    AppError::env(format!("cannot load the eBPF programs: {e}"))
        .hint("allocwatch needs root, or CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN, and a kernel ≥ 5.15 with BTF")
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// The key a slot counts under.
fn slot_key(s: &Slot) -> AggKey {
    let mut frames = [0; allocwatch_common::KEY_FRAMES];
    frames[..SLOT_FRAMES].copy_from_slice(&s.frames);
    AggKey {
        typ: s.typ,
        frames,
        nframes: s.nframes.min(SLOT_FRAMES as u32),
        bucket: s.bucket,
    }
}

/// The `MODE` map's value for `mode`.
fn mode_value(mode: crate::plan::Mode) -> u32 {
    match mode {
        crate::plan::Mode::Exact => allocwatch_common::mode::EXACT,
        crate::plan::Mode::Sampled => allocwatch_common::mode::SAMPLED,
    }
}

/// Multi-uprobe links where the kernel has them, unless
/// `ALLOCWATCH_UPROBE_LINKS=perf` asks for one perf-event link per probe
/// (the only way on kernels before 6.6; see `links`).
fn attacher(ebpf: &Ebpf, plan: &ProbePlan, bench: Option<BenchPrograms>) -> Attacher {
    if std::env::var_os("ALLOCWATCH_UPROBE_LINKS").is_some_and(|v| v == "perf") {
        return Attacher::PerProbe;
    }
    let mut names: Vec<&'static str> = plan
        .probes
        .iter()
        .map(|p| program_for(p.program, cookie::kind(p.cookie), bench))
        .collect();
    names.sort_unstable();
    names.dedup();
    match multi::Programs::load(ebpf, BPF_OBJECT, &names) {
        Ok(p) => Attacher::Multi(p),
        Err(e) => {
            log::info!("multi-uprobe links unavailable ({e}): one link per probe");
            Attacher::PerProbe
        }
    }
}

/// The program that serves a probe.
pub(super) fn program_for(
    program: Program,
    kind: u32,
    bench: Option<BenchPrograms>,
) -> &'static str {
    match bench {
        Some(BenchPrograms::Noop) => return names::PROG_NOOP,
        Some(BenchPrograms::Read1) => return names::PROG_FLOOR_READ1,
        Some(BenchPrograms::Read2) => return names::PROG_FLOOR_READ2,
        None => {}
    }
    match (program, kind) {
        (Program::Pool, _) => names::PROG_POOL,
        (Program::Alloc, cookie::ALLOC_SPECIALIZED) => names::PROG_ALLOC_SPECIALIZED,
        (Program::Alloc, cookie::ALLOC_SAMPLE) => names::PROG_ALLOC_SAMPLE,
        (Program::Alloc, _) => names::PROG_ALLOC,
    }
}

/// The decoded bytes of one ring buffer record.
fn decode(buf: &[u8]) -> Option<Event<'_>> {
    let k = u32::from_ne_bytes(buf.get(0..4)?.try_into().ok()?);
    match k {
        kind::ALLOC if buf.len() >= size_of::<AllocEvent>() => {
            // SAFETY: the ring buffer holds a whole AllocEvent written by the
            // eBPF program; records are 8-byte aligned.
            let ev = unsafe { &*buf.as_ptr().cast::<AllocEvent>() };
            let n = (ev.nframes as usize).min(MAX_FRAMES);
            let frames = &ev.frames[..n];
            if ev.flags & EVENT_STACK_ONLY != 0 {
                Some(Event::KeyStack {
                    key: &ev.key,
                    frames,
                })
            } else {
                Some(Event::Alloc {
                    cookie: ev.cookie,
                    size: ev.size,
                    typ: ev.key.typ,
                    sampled: ev.key.bucket & SAMPLED_BIT != 0,
                    frames,
                })
            }
        }
        kind::POOL if buf.len() >= size_of::<PoolEvent>() => {
            // SAFETY: as above, for PoolEvent.
            let ev = unsafe { &*buf.as_ptr().cast::<PoolEvent>() };
            Some(Event::Pool {
                cookie: ev.cookie,
                pool: ev.pool,
                arg: ev.arg,
                callers: ev.callers,
            })
        }
        _ => None,
    }
}

/// Loads the eBPF object with the target's PID, the runtime addresses of
/// its `runtime.mallocgc*` functions and of its runtime (as bitmaps), and
/// the `p.New()` return.
fn load(plan: &ProbePlan, tgid: u32, bias: u64, opts: LoadOptions) -> Result<Ebpf> {
    let bitmap = |ranges: &[(u64, u64)]| addrset::build(ranges, bias).map_err(AppError::target);
    let malloc = bitmap(&plan.merged_malloc_ranges())?;
    let runtime = bitmap(&plan.runtime_ranges)?;
    let new_return = plan.pool_new_return.map_or(0, |a| a + bias);
    let entries = |b: &addrset::Bitmap| u32::try_from(b.words.len()).unwrap_or(u32::MAX);
    let mut loader = EbpfLoader::new();
    loader
        .override_global(names::TARGET_TGID, &tgid, true)
        .override_global(names::POOL_NEW_RETURN, &new_return, true)
        .override_global(names::MALLOC_SET, &malloc.set, true)
        .override_global(names::RUNTIME_SET, &runtime.set, true)
        .map_max_entries(names::MALLOC_BITS, entries(&malloc))
        .map_max_entries(names::RUNTIME_BITS, entries(&runtime))
        // aya-log's ring (128 KiB by default, mapped whole into this process
        // with its data pages twice): the programs log one line per CPU at
        // most (the first lost event).
        .map_max_entries(AYA_LOGS, AYA_LOGS_BYTES);
    // arm64: which register holds the pool at Get's miss sites (the
    // allocator's choice, read from the code); only that build has it.
    let pool_reg = plan.pool_register.map_or(u32::MAX, u32::from);
    if cfg!(target_arch = "aarch64") {
        loader.override_global(names::POOL_REG, &pool_reg, true);
    }
    if let Some(bytes) = opts.ringbuf_bytes {
        // The kernel refuses other sizes with EINVAL.
        if !bytes.is_power_of_two() || u64::from(bytes) % page_size() != 0 {
            return Err(AppError::usage(format!(
                "ring buffer size {bytes} is not a power of two multiple of the page size ({})",
                page_size()
            )));
        }
        loader.map_max_entries(names::EVENTS, bytes);
    }
    let mut ebpf = loader.load(BPF_OBJECT).map_err(|e| load_error(&e))?;
    fill_bits(&mut ebpf, names::MALLOC_BITS, &malloc)?;
    fill_bits(&mut ebpf, names::RUNTIME_BITS, &runtime)?;
    Ok(ebpf)
}

/// Writes the non-zero words of `bitmap` into array map `name` (created
/// zeroed), before any program runs.
fn fill_bits(ebpf: &mut Ebpf, name: &str, bitmap: &addrset::Bitmap) -> Result<()> {
    let map = ebpf
        .map_mut(name)
        .ok_or_else(|| AppError::other(format!("map {name} missing from the eBPF object")))?;
    let mut bits: aya::maps::Array<_, u64> =
        aya::maps::Array::try_from(map).map_err(|e| load_error(&e))?;
    for (i, &w) in bitmap.words.iter().enumerate() {
        if w != 0 {
            let i = u32::try_from(i).map_err(|e| AppError::other(e.to_string()))?;
            bits.set(i, w, 0).map_err(|e| load_error(&e))?;
        }
    }
    Ok(())
}

/// Takes map `name` (`what`, for the error) out of `ebpf`, typed.
fn take_map<M>(ebpf: &mut Ebpf, name: &str, what: &str) -> Result<M>
where
    M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| AppError::other(format!("{what} missing from the eBPF object")))?;
    M::try_from(map).map_err(|e| load_error(&e))
}

/// Run-time statistics cost two clock reads per hit: only on request
/// (`ALLOCWATCH_BPF_STATS`).
fn run_time_stats() -> Option<std::os::fd::OwnedFd> {
    std::env::var_os("ALLOCWATCH_BPF_STATS")?;
    aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .map_err(|e| log::debug!("BPF run-time statistics unavailable: {e}"))
        .ok()
}

impl Tracer {
    /// Loads the programs for process `tgid`, with the runtime addresses of
    /// the `runtime.mallocgc*` functions, and attaches every probe of `plan`
    /// (vaddrs already in the plan; `bias` is the target's load bias) to
    /// `exe` for that process only. The plan must be of this machine's
    /// architecture (`ProbePlan::check_traceable_here`: the session checks
    /// it, before it writes anything into the target).
    pub fn attach(plan: &ProbePlan, exe: &Path, tgid: u32, bias: u64) -> Result<Tracer> {
        Self::attach_programs(plan, exe, tgid, bias, LoadOptions::default())
    }

    /// Like [`Tracer::attach`], with [`LoadOptions`].
    pub fn attach_programs(
        plan: &ProbePlan,
        exe: &Path,
        tgid: u32,
        bias: u64,
        opts: LoadOptions,
    ) -> Result<Tracer> {
        let mut ebpf = load(plan, tgid, bias, opts)?;
        // Before any map leaves `ebpf` (the logger takes its own).
        let attacher = attacher(&ebpf, plan, opts.bench);
        let logger = match EbpfLogger::init(&mut ebpf) {
            // SAFETY: the logger owns its ring buffer map's fd for its whole life.
            Ok(l) => unsafe { AsyncFd::register(l) }.ok(),
            Err(e) => {
                log::debug!("eBPF logs unavailable: {e}");
                None
            }
        };
        let Some(pid) = NonZeroU32::new(tgid) else {
            return Err(AppError::target("PID 0 cannot be traced"));
        };
        let mut mode: Array<MapData, u32> = take_map(&mut ebpf, names::MODE, "mode map")?;
        mode.set(0, mode_value(plan.mode), 0)
            .map_err(|e| load_error(&e))?;
        // Get last: a Get is never counted without its Put and miss probes
        // already in place (no spurious misses or "not put").
        let mut probes: Vec<_> = plan.probes.iter().collect();
        probes.sort_by_key(|p| cookie::kind(p.cookie) == cookie::POOL_GET);
        let mut links = Links::new(attacher);
        if let Err(e) = links.attach(&mut ebpf, &probes, exe, pid.get(), opts.bench) {
            links.detach_all(&mut ebpf);
            return Err(e);
        }
        let exact = plan
            .probes
            .iter()
            .filter(|p| is_exact_entry(p))
            .cloned()
            .collect();
        let ring: RingBuf<MapData> = take_map(&mut ebpf, names::EVENTS, "ring buffer map")?;
        // SAFETY: RingBuf owns its map fd until it is dropped with the AsyncFd.
        let ring = unsafe { AsyncFd::register(ring) }
            .map_err(|e| AppError::other(format!("cannot poll the ring buffer: {e}")))?;
        Ok(Tracer {
            ring,
            logger,
            counters: take_map(&mut ebpf, names::COUNTERS, "counters map")?,
            slots: take_map(&mut ebpf, names::SLOTS, "slot map")?,
            agg: take_map(&mut ebpf, names::AGG, "aggregation map")?,
            pool_agg: take_map(&mut ebpf, names::POOL_AGG, "pool map")?,
            links,
            pool_miss_agg: take_map(&mut ebpf, names::POOL_MISS_AGG, "pool miss map")?,
            mode,
            exact,
            exe: exe.to_path_buf(),
            pid: pid.get(),
            _stats: run_time_stats(),
            _ebpf: ebpf,
        })
    }

    /// Makes the allocation programs of `mode` count (and the others idle).
    pub fn set_mode(&mut self, mode: crate::plan::Mode) -> Result<()> {
        self.mode
            .set(0, mode_value(mode), 0)
            .map_err(|e| AppError::other(format!("cannot switch modes: {e}")))
    }

    /// Detaches the exact-mode allocation probes, on a thread of their own
    /// (the kernel takes ~0.1 s or more to release uprobes); the probes'
    /// programs stop counting as soon as the mode is sampled.
    pub fn detach_exact(&mut self) {
        let n = self.links.detach_exact_background(&mut self._ebpf);
        log::info!("detaching the exact-mode probes ({n} links)");
    }

    /// Attaches the exact-mode allocation probes again.
    pub fn attach_exact(&mut self) -> Result<()> {
        let probes: Vec<_> = self.exact.iter().collect();
        self.links
            .attach(&mut self._ebpf, &probes, &self.exe, self.pid, None)
    }

    /// Detaches every probe, all at once, and returns when the kernel has
    /// removed them all from the target (also those a switch to sampled
    /// mode was still detaching). The maps stay readable. Dropping the
    /// tracer does the same.
    pub fn detach(&mut self) {
        let t0 = std::time::Instant::now();
        let n = self.links.detach_all(&mut self._ebpf);
        if n > 0 {
            log::info!("detached every probe ({n} links) in {:?}", t0.elapsed());
        }
    }

    /// Number of uprobes attached.
    #[must_use]
    pub fn attached(&self) -> usize {
        self.links.count()
    }

    /// Hands every event now in the ring buffer to `f`; returns how many.
    pub fn drain(&mut self, mut f: impl FnMut(Event<'_>)) -> usize {
        let mut n = 0;
        let rb = self.ring.get_mut();
        while let Some(item) = rb.next() {
            if let Some(ev) = decode(&item) {
                f(ev);
            }
            n += 1;
        }
        n
    }

    /// Waits until the ring buffer has data (or the logger has records, which are flushed).
    pub async fn readable(&mut self) {
        if let Some(logger) = &mut self.logger {
            tokio::select! {
                g = self.ring.readable_mut() => {
                    if let Ok(mut g) = g {
                        g.clear_ready();
                    }
                }
                g = logger.readable_mut() => {
                    if let Ok(mut g) = g {
                        g.get_inner_mut().flush();
                        g.clear_ready();
                    }
                }
            }
        } else if let Ok(mut g) = self.ring.readable_mut().await {
            g.clear_ready();
        }
    }

    /// Flushes eBPF-side log records to the `log` crate.
    pub fn flush_logs(&mut self) {
        if let Some(l) = &mut self.logger {
            l.get_mut().flush();
        }
    }

    /// Hands every key the kernel counted, with its totals summed over CPUs
    /// (from the slots and the aggregation map), to `f`, once per key.
    pub fn read_aggregates(&self, mut f: impl FnMut(&AggKey, AggValue)) {
        let mut totals: HashMap<AggKey, AggValue> = HashMap::new();
        let mut add = |k: AggKey, v: &AggValue| {
            let t = totals.entry(k).or_default();
            t.count += v.count;
            t.bytes += v.bytes;
        };
        for i in 0..allocwatch_common::SLOTS {
            match self.slots.get(&i, 0) {
                Ok(per_cpu) => {
                    for s in per_cpu.iter().filter(|s| s.nframes != 0) {
                        add(
                            slot_key(s),
                            &AggValue {
                                count: s.count,
                                bytes: s.bytes,
                            },
                        );
                    }
                }
                Err(e) => log::debug!("reading slot {i}: {e}"),
            }
        }
        for item in self.agg.iter() {
            match item {
                Ok((k, per_cpu)) => per_cpu.iter().for_each(|v| add(k, v)),
                Err(e) => log::debug!("reading the aggregation map: {e}"),
            }
        }
        for (k, v) in &totals {
            f(k, *v);
        }
    }

    /// Hands every (pool, callers, operation) of the kernel's pool map,
    /// with its count summed over CPUs, to `f`, in the order the keys were
    /// first seen.
    pub fn read_pools(&self, mut f: impl FnMut(&PoolKey, u64)) {
        let mut keys = Vec::new();
        for item in self.pool_agg.iter() {
            match item {
                Ok((k, per_cpu)) => {
                    let count = per_cpu.iter().map(|v| v.count).sum::<u64>();
                    let first = per_cpu
                        .iter()
                        .map(|v| v.first_ns)
                        .filter(|&t| t != 0)
                        .min()
                        .unwrap_or(u64::MAX);
                    keys.push((first, k, count));
                }
                Err(e) => log::debug!("reading the pool map: {e}"),
            }
        }
        keys.sort_by_key(|&(first, _, _)| first);
        for (_, k, count) in &keys {
            f(k, *count);
        }
    }

    /// Hands every pool's allocations made inside its own `p.New()` calls
    /// (exact mode), summed over CPUs, to `f`.
    pub fn read_pool_misses(&self, mut f: impl FnMut(u64, AggValue)) {
        for item in self.pool_miss_agg.iter() {
            match item {
                Ok((pool, per_cpu)) => {
                    let mut t = AggValue::default();
                    for v in per_cpu.iter() {
                        t.count += v.count;
                        t.bytes += v.bytes;
                    }
                    f(pool, t);
                }
                Err(e) => log::debug!("reading the pool miss map: {e}"),
            }
        }
    }

    /// Total run time (ns) and runs of the eBPF programs so far, as the
    /// kernel measures them (the time spent in the programs, not in the trap).
    #[must_use]
    pub fn program_run_time(&self) -> (u64, u64) {
        if let Some(progs) = self.links.multi() {
            return progs.run_time();
        }
        let mut total = (0, 0);
        for name in [
            names::PROG_ALLOC,
            names::PROG_ALLOC_SPECIALIZED,
            names::PROG_ALLOC_SAMPLE,
            names::PROG_POOL,
            names::PROG_NOOP,
            names::PROG_FLOOR_READ1,
            names::PROG_FLOOR_READ2,
        ] {
            if let Some(info) = self._ebpf.program(name).and_then(|p| p.info().ok()) {
                total.0 += u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX);
                total.1 += info.run_count();
            }
        }
        total
    }

    /// Kernel counter `i` (`allocwatch_common::counter`), summed over CPUs.
    fn counter(&self, i: u32) -> u64 {
        self.counters
            .get(&i, 0)
            .map(|v| v.iter().sum::<u64>())
            .unwrap_or(0)
    }

    /// The kernel-side counters, summed over CPUs.
    #[must_use]
    pub fn counters(&self) -> Counters {
        let sum = |i: u32| self.counter(i);
        Counters {
            hits: sum(counter::HITS),
            nested: sum(counter::NESTED),
            lost: sum(counter::LOST),
            stack_errors: sum(counter::STACK_ERRORS),
            other_process: sum(counter::OTHER_PROCESS),
            agg_full: sum(counter::AGG_FULL),
            key_truncated: sum(counter::KEY_TRUNCATED),
            lost_stacks: sum(counter::LOST_STACKS),
        }
    }

    /// The ring buffer's file descriptor (for diagnostics).
    #[must_use]
    pub fn ring_fd(&self) -> i32 {
        self.ring.get_ref().as_raw_fd()
    }
}

impl Drop for Tracer {
    /// Detaches every probe at once before the programs and maps go (the
    /// programs would otherwise drop their links one after another).
    fn drop(&mut self) {
        self.detach();
    }
}
