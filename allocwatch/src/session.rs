//! A tracing session: from a PID or a command line to attached probes and a
//! stream of aggregated snapshots. Shared by `record` and `top`.
//!
//! Go binary → [`plan`](crate::plan) → [`probe::Tracer`] → events →
//! [`stats::Aggregator`] → snapshots for the dashboard and the exporters.

use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use allocwatch_common::cookie;

use crate::error::{AppError, Result};
use crate::gobin::GoBinary;
use crate::plan::{self, PlanOptions, ProbePlan};
use crate::probe::{Event, LoadOptions, Tracer};
use crate::stats::{Aggregator, PoolOp, Snapshot};
use crate::symbolize::GoResolver;
use crate::target::{Gone, RateOverride, Target};
use crate::weak_cache::WeakCache;

/// What to trace.
#[derive(Clone, Debug)]
pub enum TargetSpec {
    Pid(u32),
    /// Launch this command and trace it from its first instruction.
    Launch(Vec<OsString>),
}

/// Session options.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub pools: bool,
    /// Attach floor programs instead of the real ones (benchmarks only).
    pub bench: Option<crate::probe::BenchPrograms>,
    pub mode: crate::plan::Mode,
    /// Ring buffer size in bytes instead of the default (tests only).
    pub ringbuf_bytes: Option<u32>,
    /// `--max-overhead`: start exact, ready to switch to sampled and back.
    pub max_overhead: Option<f64>,
    /// `--sample-rate`: the `runtime.MemProfileRate` to set for the session
    /// (sampled mode, `--max-overhead`).
    pub sample_rate: Option<u64>,
    /// Show progress while reading, planning and attaching (on a terminal).
    pub progress: bool,
}

/// `ALLOCWATCH_FAIL_SWITCH_BACK=PID` makes the switch of that process back
/// to exact mode fail, so that what follows a failed switch can be tested
/// (attaching probes again does not fail on a healthy kernel).
fn fail_switch_back(pid: u32) -> bool {
    std::env::var("ALLOCWATCH_FAIL_SWITCH_BACK").is_ok_and(|v| v == pid.to_string())
}

/// The rate allocwatch sets in a program that has memory profiling off: the
/// runtime's default (`runtime.MemProfileRate = 512 * 1024`).
pub const DEFAULT_SAMPLE_RATE: u64 = 512 * 1024;

/// Opens and parses a Go executable, mapping failures to target errors.
pub fn open_binary(path: &Path, what: &str) -> Result<GoBinary> {
    GoBinary::open(path).map_err(|e| {
        let err = AppError::target(format!("{what}: {e}"));
        match e {
            crate::gobin::GoBinError::GoTooOld { .. } => err.hint(
                "allocwatch supports Go ≥ 1.17 (register ABI); rebuild the program with a newer Go",
            ),
            crate::gobin::GoBinError::NotGo | crate::gobin::GoBinError::NotElf => err.hint(
                "allocwatch traces programs built by the Go toolchain (Linux amd64 and arm64 executables)",
            ),
            _ => err,
        }
    })
}

/// An executable file as it is on disk now.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

/// The parsed executables sessions use now, by file: processes that run the
/// same executable (a daemon tracing every replica of a service) share one
/// parse, and one copy of the file in memory.
static BINARIES: WeakCache<FileKey, GoBinary> = WeakCache::new();

/// [`open_binary`], shared with every session that runs the same file (same
/// device, inode, size and modification time) while one still holds it.
fn shared_binary(path: &Path, what: &str) -> Result<Arc<GoBinary>> {
    use std::os::unix::fs::MetadataExt;
    let key = std::fs::metadata(path).ok().map(|m| FileKey {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    });
    let Some(key) = key else {
        return open_binary(path, what).map(Arc::new);
    };
    BINARIES.get_or_try_insert(key, || open_binary(path, what))
}

fn pool_op(kind: u32) -> Option<PoolOp> {
    match kind {
        cookie::POOL_GET => Some(PoolOp::Get),
        cookie::POOL_NEW => Some(PoolOp::New),
        cookie::POOL_NIL => Some(PoolOp::Nil),
        cookie::POOL_PUT => Some(PoolOp::Put),
        _ => None,
    }
}

/// An attached, running trace.
pub struct Session {
    pub target: Target,
    pub bin: Arc<GoBinary>,
    pub plan: ProbePlan,
    tracer: Tracer,
    agg: Aggregator<GoResolver>,
    started: Instant,
    /// How long loading and attaching took.
    pub attach_time: Duration,
    /// Sampled mode: the runtime address of `runtime.MemProfileRate`.
    rate_addr: Option<u64>,
    /// The mode counting now (a switchable session changes it).
    mode: crate::plan::Mode,
    /// The `runtime.MemProfileRate` allocwatch set, set back at the end.
    rate_override: Option<RateOverride>,
    /// Sampled mode counted since the last read of the kernel's totals.
    sampled_since_read: bool,
}

impl Session {
    /// Finds or launches the target, plans and attaches the probes. A
    /// launched target starts running only once everything is attached.
    pub fn start(spec: &TargetSpec, opts: Options) -> Result<Session> {
        let t0 = Instant::now();
        let mut target = match spec {
            TargetSpec::Pid(pid) => {
                let t = Target::from_pid(*pid)?;
                crate::envcheck::check()?;
                t
            }
            TargetSpec::Launch(argv) => {
                crate::envcheck::check()?;
                Target::launch(argv)?
            }
        };
        let (bin, plan, tracer, bias, rate_override) = match Self::prepare(&target, opts) {
            Ok(parts) => parts,
            Err(e) => {
                target.terminate();
                return Err(e);
            }
        };
        let mode = plan.mode;
        let mut agg = Aggregator::new(GoResolver::new(bin.clone(), bias).with_pid(target.pid));
        let rate_addr = plan.mem_profile_rate_addr.map(|a| a + bias);
        if let Some(addr) = rate_addr {
            // The rate in force (allocwatch's, when it set one).
            let rate = crate::target::read_u64(target.pid, addr).unwrap_or(0);
            agg.set_sample_rate(rate);
        }
        let attach_time = t0.elapsed();
        log::info!(
            "attached {} probes to PID {} in {attach_time:?}",
            tracer.attached(),
            target.pid
        );
        if let Err(e) = target.resume() {
            target.terminate();
            return Err(e);
        }
        Ok(Session {
            target,
            bin,
            plan,
            tracer,
            agg,
            started: Instant::now(),
            attach_time,
            rate_addr,
            mode,
            rate_override,
            sampled_since_read: false,
        })
    }

    #[expect(clippy::type_complexity, reason = "the parts of a session, once")]
    fn prepare(
        target: &Target,
        opts: Options,
    ) -> Result<(Arc<GoBinary>, ProbePlan, Tracer, u64, Option<RateOverride>)> {
        let what = format!("PID {} ({})", target.pid, target.exe_display);
        let progress = opts.progress.then(|| {
            let size = std::fs::metadata(&target.exe).map_or(0, |m| m.len());
            #[expect(clippy::cast_precision_loss, reason = "a size to show")]
            let mb = size as f64 / 1e6;
            let shown = Path::new(&target.exe_display);
            let name = shown.file_name().map_or_else(
                || target.exe_display.clone(),
                |n| n.to_string_lossy().into_owned(),
            );
            crate::progress::Progress::spinner(format!("reading {name} ({mb:.1} MB)"))
        });
        let bin = shared_binary(&target.exe, &what)?;
        if let Some(p) = &progress {
            p.say("planning the probes");
        }
        let plan = plan::plan(
            &bin,
            PlanOptions {
                pools: opts.pools,
                mode: opts.mode,
                switchable: opts.max_overhead.is_some(),
            },
        )
        .map_err(|e| AppError::target(format!("{what}: cannot plan probes: {e}")))?;
        // Before anything is written into the target (the sample rate).
        plan.check_traceable_here()
            .map_err(|e| AppError::target(format!("{what}: {e}")))?;
        let bias = if bin.is_pie() {
            target.load_bias(bin.first_load_vaddr())?
        } else {
            0
        };
        let load = LoadOptions {
            bench: opts.bench,
            ringbuf_bytes: opts.ringbuf_bytes,
        };
        // Before attaching: the runtime's first samples at a new rate (one
        // per P right away, from Go 1.24) fall before counting starts.
        let rate_override = set_sample_rate(target, &plan, bias, opts.sample_rate)?;
        if let Some(p) = &progress {
            p.say(format!(
                "loading the eBPF programs, attaching {} probes",
                plan.probes.len()
            ));
        }
        let tracer = Tracer::attach_programs(&plan, &target.exe, target.pid, bias, load)?;
        drop(progress);
        Ok((bin, plan, tracer, bias, rate_override))
    }

    /// The `runtime.MemProfileRate` allocwatch set for this session (set
    /// back by [`Session::release_target`], or when the session is dropped).
    #[must_use]
    pub fn rate_override(&self) -> Option<&RateOverride> {
        self.rate_override.as_ref()
    }

    /// Moves every event in the ring buffer into the aggregator.
    pub fn pump(&mut self) -> usize {
        let Session { tracer, agg, .. } = self;
        tracer.drain(|ev| match ev {
            Event::KeyStack { key, frames } => agg.add_key_stack(key, frames),
            Event::Alloc {
                size,
                sampled: true,
                frames,
                ..
            } => agg.add_sample(size, frames),
            Event::Alloc {
                size, typ, frames, ..
            } => agg.add_alloc(typ, size, frames),
            Event::Pool {
                cookie: ck,
                pool,
                arg,
                callers,
            } => {
                if let Some(op) = pool_op(cookie::kind(ck)) {
                    agg.add_pool(op, pool, arg, callers);
                }
            }
        })
    }

    /// Reads the kernel's aggregated totals into the aggregator (after
    /// draining the ring buffer, so that new keys arrive with their stacks).
    pub fn collect(&mut self) {
        // The live rate; 0 (switched off, or set back at the end) produces
        // no samples and would unscale the ones already counted.
        if let Some(rate) = self
            .rate_addr
            .and_then(|a| crate::target::read_u64(self.target.pid, a))
            .filter(|&r| r > 0)
        {
            self.agg.set_sample_rate(rate);
        }
        self.pump();
        let Session { tracer, agg, .. } = self;
        tracer.read_aggregates(|k, v| agg.set_key_totals(k, v.count, v.bytes));
        tracer.read_pools(|k, total| {
            if let Some(op) = pool_op(k.op) {
                agg.set_pool_total(op, k.pool, k.arg, k.callers, total);
            }
        });
        tracer.read_pool_misses(|pool, v| agg.set_pool_miss_total(pool, v.count, v.bytes));
        // The kernel charges misses in exact mode only.
        if self.mode == crate::plan::Mode::Sampled || self.sampled_since_read {
            self.agg.mark_pools_sampled();
        }
        self.sampled_since_read = false;
    }

    /// Waits until events are ready.
    pub async fn events_ready(&mut self) {
        self.tracer.readable().await;
    }

    /// Cumulative totals since the start (reads the kernel's maps first).
    pub fn snapshot(&mut self) -> Snapshot {
        self.collect();
        self.agg
            .snapshot(self.started.elapsed(), self.tracer.counters())
    }

    /// The mode counting now.
    #[must_use]
    pub fn mode(&self) -> crate::plan::Mode {
        self.mode
    }

    /// Switches a switchable session to `to`, without a moment counted twice
    /// or not at all: the other mode's probes are attached first (idle), then
    /// the counting programs change in one map write, then the exact probes
    /// go (in sampled mode; the kernel detaches them in the background).
    pub fn switch_to(&mut self, to: crate::plan::Mode) -> Result<()> {
        use crate::plan::Mode;
        if to == self.mode || !self.plan.switchable {
            return Ok(());
        }
        match to {
            Mode::Sampled => {
                self.tracer.set_mode(Mode::Sampled)?;
                self.tracer.detach_exact();
            }
            Mode::Exact => {
                if fail_switch_back(self.target.pid) {
                    return Err(AppError::env(
                        "attaching the exact-mode probes again failed (ALLOCWATCH_FAIL_SWITCH_BACK)",
                    ));
                }
                self.tracer.attach_exact()?;
                self.tracer.set_mode(Mode::Exact)?;
                self.sampled_since_read = true;
            }
        }
        self.mode = to;
        Ok(())
    }

    /// Time (ns) and runs of the eBPF programs so far.
    #[must_use]
    pub fn program_run_time(&self) -> (u64, u64) {
        self.tracer.program_run_time()
    }

    /// Time since the probes were attached.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Checks whether the target is still there and still the same program.
    pub fn check_target(&mut self) -> Option<Gone> {
        self.target.check()
    }

    /// Flushes eBPF-side logs.
    pub fn flush_logs(&mut self) {
        self.tracer.flush_logs();
    }

    /// Gives the target back once tracing is over (after the last
    /// snapshot): first whatever allocwatch changed in the target is set
    /// back, then every probe is detached, all at once; returns when the
    /// kernel has removed them all, so the target runs untouched from then
    /// on. The kernel's maps stay readable. Idempotent; dropping the
    /// session does the same. Returns what setting back did, the first
    /// time something was set back (a rate allocwatch set).
    pub fn release_target(&mut self) -> Option<String> {
        let restored = self.rate_override.as_mut().and_then(RateOverride::restore);
        self.tracer.detach();
        restored
    }
}

/// Sets `runtime.MemProfileRate` for a sampled (or switchable) session when
/// the program has memory profiling off, or `--sample-rate` asks for a
/// rate: the runtime reads it on every allocation, so it takes effect at
/// once. A launched program that has not run yet would set the rate to 0
/// at start when the linker switched profiling off: its
/// `runtime.disableMemoryProfiling` is cleared too.
fn set_sample_rate(
    target: &Target,
    plan: &ProbePlan,
    bias: u64,
    requested: Option<u64>,
) -> Result<Option<RateOverride>> {
    let Some(addr) = plan.mem_profile_rate_addr.map(|a| a + bias) else {
        return Ok(None);
    };
    let pid = target.pid;
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        AppError::target(format!(
            "PID {pid}: cannot {what} runtime.MemProfileRate at {addr:#x}: {e}"
        ))
        .hint(
            "use --mode exact; sampled mode reads and sets runtime.MemProfileRate through \
             /proc/PID/mem, which without root takes CAP_DAC_OVERRIDE for another user's process",
        )
    };
    let live = crate::target::read_u64(pid, addr)
        .ok_or_else(|| fail("read", &"/proc/PID/mem is not readable"))?;
    let linker_disabled = plan.memory_profiling_disabled == Some(true);
    // Not started yet: the file's 512 KiB, which the runtime would zero.
    let clear_flag = target.launched() && linker_disabled;
    let old = if clear_flag { 0 } else { live };
    let Some(set) = requested.or((old == 0).then_some(DEFAULT_SAMPLE_RATE)) else {
        return Ok(None);
    };
    if set == old {
        return Ok(None);
    }
    let mem = crate::target::open_mem(pid).map_err(|e| fail("open /proc/PID/mem to set", &e))?;
    if clear_flag && let Some(flag) = plan.disable_flag_addr {
        crate::target::clear_byte(&mem, flag + bias)
            .map_err(|e| fail("clear runtime.disableMemoryProfiling to keep", &e))?;
    }
    RateOverride::apply(mem, pid, addr, old, set, linker_disabled)
        .map_err(|e| fail("set", &e))
        .map(Some)
}
