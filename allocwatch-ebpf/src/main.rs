//! allocwatch's eBPF programs.
//!
//! - `alloc_entry` (at `runtime.mallocgc`), `alloc_specialized` (at Go
//!   1.27's size-specialized entries) and `alloc_sample` (at
//!   `runtime.profilealloc`, sampled mode) run at the frame setup after the
//!   stack check (`PUSHQ BP` on x86-64, `MOVD.W R30` on arm64; what differs
//!   between the two is in `mod arch`). They are one function compiled three times with the kind of
//!   entry as a constant, so a hit pays for neither the attach cookie nor a
//!   PID check (the kernel runs a uprobe attached for one process only in
//!   that process; tests/attach.rs checks it). They read the Go register ABI
//!   arguments (size, `*_type`), skip nested hits (a specialized
//!   entry called by `runtime.mallocgc*`), and walk the frame pointers from
//!   the return address through the runtime's own frames to the first frame
//!   outside the runtime (the allocation site).
//! - Where the counting goes: a key of at most two return addresses (the
//!   site is the caller, or the caller's caller: almost every allocation) is
//!   counted in its slot of `SLOTS`, a per-CPU direct-mapped cache that costs
//!   no hashing of a whole key; a slot belongs to the first key that lands in
//!   it. Other keys go to the per-CPU hash map `AGG` under (type, return
//!   addresses, size bucket). The first time a key is seen (per CPU for a
//!   slot), its full user stack goes to userspace through the ring buffer.
//!   Allocations neither can hold (map full, or runtime frames too deep for a
//!   key) are sent one by one.
//! - `pool_probe` runs at `sync.(*Pool).Get`/`Put` and at the two miss paths
//!   inside `Get`, and counts each operation in `POOL_AGG` under (pool, the
//!   caller's and its callers' return addresses, operation). At the
//!   `p.New()` call it also pushes (pool, stack depth) on the goroutine's
//!   entry in `POOL_MISSES` (keyed by `g`). While any goroutine has
//!   such an entry (`MISSES_IN_FLIGHT` ≠ 0), the exact allocation programs
//!   look their goroutine up and charge the allocation, per pool in
//!   `POOL_MISS_AGG`, to the innermost miss whose `New` frame is still on
//!   the stack above it (found by walking the frame pointers; its return
//!   address is the one into `Get`). Misses whose `New` is gone are dropped
//!   by the allocation that finds them so, and by `Get`/`Put` of the same
//!   goroutine at the same depth or above. (No probe at the return point:
//!   every `Get` passes that instruction, which the kernel cannot emulate;
//!   and no uretprobes, which crash Go programs.)
//! - `noop`, `floor_read1` and `floor_read2` are for benchmarks: the floor
//!   costs of a hit.
//!
//! Every hit is counted in `COUNTERS`, and so is every event that did not fit
//! in the ring buffer: nothing is dropped silently. docs/benchmarks.md has
//! what each part costs.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![expect(internal_features, reason = "the BPF target's only atomic add")]

use allocwatch_common::{
    AGG_ENTRIES, AddrSet, AggKey, AggValue, AllocEvent, EVENT_STACK_ONLY, KEY_FRAMES, MAX_FRAMES,
    MISS_ENTRIES, MISS_NESTING, MissStack, POOL_CALLERS, POOL_ENTRIES, PoolEvent, PoolKey,
    PoolValue, RINGBUF_BYTES, SAMPLE_SIZE_MASK, SAMPLED_BIT, Slot, cookie, counter, mode,
    size_bucket, slot_index,
};
use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_F_USER_STACK, BPF_NOEXIST},
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user,
        generated::{bpf_get_attach_cookie, bpf_get_stack},
    },
    macros::{map, uprobe},
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::ProbeContext,
};
use aya_log_ebpf::warn;

/// The process being traced (its tgid in the initial PID namespace). Set by
/// the loader; hits from any other process are counted and ignored.
#[unsafe(no_mangle)]
static TARGET_TGID: u32 = 0;

/// The `runtime.mallocgc*` functions, set by the loader (bits in
/// `MALLOC_BITS`).
#[unsafe(no_mangle)]
static MALLOC_SET: AddrSet = AddrSet::EMPTY;

/// The runtime's own functions, set by the loader (bits in `RUNTIME_BITS`).
#[unsafe(no_mangle)]
static RUNTIME_SET: AddrSet = AddrSet::EMPTY;

/// Runtime address of the instruction right after the `CALL reg` of
/// `p.New()` in `sync.(*Pool).Get` (the return address of a `New` call),
/// set by the loader; 0 without pool tracing.
#[unsafe(no_mangle)]
static POOL_NEW_RETURN: u64 = 0;

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(RINGBUF_BYTES, 0);

/// The bits of `MALLOC_SET`; sized and filled by the loader.
#[map]
static MALLOC_BITS: Array<u64> = Array::with_max_entries(1, 0);

/// The bits of `RUNTIME_SET`; sized and filled by the loader.
#[map]
static RUNTIME_BITS: Array<u64> = Array::with_max_entries(1, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// `allocwatch_common::mode`: which allocation programs count.
#[map]
static MODE: Array<u32> = Array::with_max_entries(1, 0);

#[map]
static SLOTS: PerCpuArray<Slot> = PerCpuArray::with_max_entries(allocwatch_common::SLOTS, 0);

#[map]
static AGG: PerCpuHashMap<AggKey, AggValue> = PerCpuHashMap::with_max_entries(AGG_ENTRIES, 0);

#[map]
static POOL_AGG: PerCpuHashMap<PoolKey, PoolValue> =
    PerCpuHashMap::with_max_entries(POOL_ENTRIES, 0);

/// The `p.New()` calls in flight, per goroutine (`g` pointer).
#[map]
static POOL_MISSES: HashMap<u64, MissStack> = HashMap::with_max_entries(MISS_ENTRIES, 0);

/// How many goroutines have an entry in `POOL_MISSES`: while 0 (almost
/// always), an allocation pays one array read for the miss accounting.
#[map]
static MISSES_IN_FLIGHT: Array<u64> = Array::with_max_entries(1, 0);

/// Per pool: allocations (and bytes) made inside its own `p.New()` calls.
#[map]
static POOL_MISS_AGG: PerCpuHashMap<u64, AggValue> =
    PerCpuHashMap::with_max_entries(POOL_ENTRIES, 0);

/// Per CPU: set once the first lost event has been logged.
#[map]
static LOG_ONCE: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

const EEXIST: i32 = 17;

/// What [`add_or_insert`] did.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Upsert {
    /// Added to this CPU's value of an existing entry.
    Added,
    /// Inserted the entry (its first value).
    Inserted,
    /// The map is full: nothing counted.
    Full,
}

/// Adds to this CPU's value of `key` in `map` with `add`; when the map has no
/// entry for `key`, inserts `first()` (`BPF_NOEXIST`). When another CPU
/// inserted it meanwhile (`EEXIST`), this CPU's slot of it exists now and
/// `add` goes there.
#[inline(always)]
fn add_or_insert<K, V>(
    map: &PerCpuHashMap<K, V>,
    key: &K,
    first: impl FnOnce() -> V,
    add: impl Fn(&mut V),
) -> Upsert {
    if let Some(v) = map.get_ptr_mut(key) {
        // SAFETY: this CPU's slot of the value; only this CPU's programs write it.
        add(unsafe { &mut *v });
        return Upsert::Added;
    }
    match map.insert(key, first(), u64::from(BPF_NOEXIST)) {
        Ok(()) => Upsert::Inserted,
        Err(e) if e == -EEXIST => {
            if let Some(v) = map.get_ptr_mut(key) {
                // SAFETY: as above.
                add(unsafe { &mut *v });
            }
            Upsert::Added
        }
        Err(_) => Upsert::Full,
    }
}

#[inline(always)]
fn bump(index: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU's program instance writes it.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn target_tgid() -> u32 {
    // SAFETY: a read of a loader-set constant.
    unsafe { core::ptr::read_volatile(&TARGET_TGID) }
}

/// Counts a lost event and logs the first loss on each CPU.
#[inline(always)]
fn lost(ctx: &ProbeContext, flags: u32) {
    bump(counter::LOST);
    if flags & EVENT_STACK_ONLY != 0 {
        bump(counter::LOST_STACKS);
    }
    if let Some(p) = LOG_ONCE.get_ptr_mut(0) {
        // SAFETY: per-CPU slot.
        unsafe {
            if *p == 0 {
                *p = 1;
                warn!(ctx, "ring buffer full: events are counted as lost");
            }
        }
    }
}

/// True when `addr` is in `set` (one array read; see `AddrSet`).
#[inline(always)]
fn in_set(set: &'static AddrSet, bits: &'static Array<u64>, addr: u64) -> bool {
    // SAFETY: reads of a loader-set constant.
    let (base, slots, shift) = unsafe {
        (
            core::ptr::read_volatile(&set.base),
            core::ptr::read_volatile(&set.slots),
            core::ptr::read_volatile(&set.shift),
        )
    };
    let slot = addr.wrapping_sub(base) >> (shift & 63);
    if slot >= slots {
        return false;
    }
    bits.get((slot >> 6) as u32)
        .is_some_and(|w| (*w >> (slot & 63)) & 1 != 0)
}

/// True when `addr` is in one of the runtime's own functions.
#[inline(always)]
fn in_runtime(addr: u64) -> bool {
    in_set(&RUNTIME_SET, &RUNTIME_BITS, addr)
}

/// What differs between the architectures: which registers hold the Go
/// register ABI's arguments, the return address, the frame pointer and
/// `g` at a probe on a function's frame setup, and where the frame record
/// of a pool's `New` lies. The frame records themselves are the same two
/// words on both ([saved frame pointer, return address]).
#[cfg(bpf_target_arch = "x86_64")]
mod arch {
    use aya_ebpf::{bindings::pt_regs, helpers::bpf_probe_read_user, programs::ProbeContext};

    /// The registers a program needs, each loaded once with a fixed offset
    /// from the context (the verifier rejects loads through a modified
    /// context pointer).
    #[derive(Clone, Copy)]
    pub struct Regs {
        /// The first three integer arguments: RAX, RBX, RCX.
        pub args: [u64; 3],
        pub sp: u64,
        /// RBP: at a function's `PUSHQ BP`, still its caller's frame pointer.
        pub fp: u64,
        /// RDX: the closure context (`p.New` at its call).
        pub ctxt: u64,
    }

    #[inline(always)]
    pub fn regs(ctx: &ProbeContext) -> Regs {
        let r: *const pt_regs = ctx.regs;
        // SAFETY: `r` is the probe's register frame, valid for the whole run;
        // volatile keeps each load a direct context access.
        unsafe {
            Regs {
                args: [
                    core::ptr::read_volatile(&raw const (*r).rax),
                    core::ptr::read_volatile(&raw const (*r).rbx),
                    core::ptr::read_volatile(&raw const (*r).rcx),
                ],
                sp: core::ptr::read_volatile(&raw const (*r).rsp),
                fp: core::ptr::read_volatile(&raw const (*r).rbp),
                ctxt: core::ptr::read_volatile(&raw const (*r).rdx),
            }
        }
    }

    /// At the `PUSHQ BP`, `[RSP]` is still the return address.
    #[inline(always)]
    pub fn return_address(regs: &Regs) -> Option<u64> {
        // SAFETY: reads user memory through the checked helper.
        unsafe { bpf_probe_read_user(regs.sp as *const u64) }.ok()
    }

    /// R14: the current goroutine's `g` in Go code.
    #[inline(always)]
    pub fn g(ctx: &ProbeContext) -> u64 {
        let r: *const pt_regs = ctx.regs;
        // SAFETY: the probe's register frame; a direct context load.
        unsafe { core::ptr::read_volatile(&raw const (*r).r14) }
    }

    /// The pool pointer `p` at the miss sites inside `Get` (RCX there in
    /// Go 1.21–1.27; tests/gobin.rs checks it).
    #[inline(always)]
    pub fn pool_at_miss(_ctx: &ProbeContext, regs: &Regs) -> u64 {
        regs.args[2]
    }

    /// Where the frame record of the `New` that `Get` called with its SP
    /// at `get_sp` is (see `new_is_live`): its address, exactly (`PUSHQ
    /// BP` puts it 16 bytes below `Get`'s SP, below the return address its
    /// `CALL` pushed); no saved frame pointer is needed to tell it.
    #[inline(always)]
    pub fn new_record(get_sp: u64) -> (u64, Option<u64>) {
        (get_sp.wrapping_sub(16), None)
    }

    /// `bpf_get_stack` from a probe at the frame setup already holds the
    /// caller (the kernel reads `[RSP]` there).
    pub const STACK_MISSES_CALLER: bool = false;
}

#[cfg(bpf_target_arch = "aarch64")]
mod arch {
    use aya_ebpf::{bindings::user_pt_regs, programs::ProbeContext};

    /// See the x86-64 module.
    #[derive(Clone, Copy)]
    pub struct Regs {
        /// The first three integer arguments: R0, R1, R2.
        pub args: [u64; 3],
        pub sp: u64,
        /// R29: at a function's `MOVD.W R30`, still its caller's frame pointer.
        pub fp: u64,
        /// R26: the closure context (`p.New` at its call).
        pub ctxt: u64,
        /// R30 (LR): the return address, not yet saved.
        pub lr: u64,
    }

    #[inline(always)]
    pub fn regs(ctx: &ProbeContext) -> Regs {
        let r = ctx.regs.cast::<user_pt_regs>().cast_const();
        // SAFETY: on arm64 a uprobe's context is the user register frame
        // (`bpf_user_pt_regs_t`), valid for the whole run; volatile keeps
        // each load a direct context access.
        unsafe {
            Regs {
                args: [
                    core::ptr::read_volatile(&raw const (*r).regs[0]),
                    core::ptr::read_volatile(&raw const (*r).regs[1]),
                    core::ptr::read_volatile(&raw const (*r).regs[2]),
                ],
                sp: core::ptr::read_volatile(&raw const (*r).sp),
                fp: core::ptr::read_volatile(&raw const (*r).regs[29]),
                ctxt: core::ptr::read_volatile(&raw const (*r).regs[26]),
                lr: core::ptr::read_volatile(&raw const (*r).regs[30]),
            }
        }
    }

    /// At the `MOVD.W R30`, the return address is still in LR.
    #[inline(always)]
    pub fn return_address(regs: &Regs) -> Option<u64> {
        Some(regs.lr)
    }

    /// R28: the current goroutine's `g` in Go code.
    #[inline(always)]
    pub fn g(ctx: &ProbeContext) -> u64 {
        let r = ctx.regs.cast::<user_pt_regs>().cast_const();
        // SAFETY: the probe's register frame; a direct context load.
        unsafe { core::ptr::read_volatile(&raw const (*r).regs[28]) }
    }

    /// The register that holds `p` at the miss sites inside `Get`, chosen
    /// by Go's register allocator (R2 in Go 1.21–1.27), found by the loader
    /// from the load of `p.New`.
    #[unsafe(no_mangle)]
    static POOL_REG: u32 = 2;

    /// The pool pointer `p` at the miss sites inside `Get` (register
    /// `POOL_REG`; a branch per register, since a context load needs a
    /// fixed offset: the verifier keeps only the loader's).
    #[inline(always)]
    pub fn pool_at_miss(ctx: &ProbeContext, _regs: &Regs) -> u64 {
        let r = ctx.regs.cast::<user_pt_regs>().cast_const();
        // SAFETY: a read of a loader-set constant.
        let n = unsafe { core::ptr::read_volatile(&POOL_REG) };
        macro_rules! reg {
            ($($i:literal)*) => {
                match n {
                    // SAFETY: the probe's register frame; direct context loads.
                    $($i => unsafe { core::ptr::read_volatile(&raw const (*r).regs[$i]) },)*
                    _ => 0,
                }
            };
        }
        reg!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 19 20 21 22 23 24 25)
    }

    /// See the x86-64 module. `New`'s frame record is below `Get`'s SP by
    /// `New`'s frame size, which differs per `New`: it lies below `Get`'s
    /// own record (at `Get`'s SP − 8, where its `SUB $8, RSP, R29` put it),
    /// and it is the record whose saved frame pointer is that one.
    #[inline(always)]
    pub fn new_record(get_sp: u64) -> (u64, Option<u64>) {
        let get_fp = get_sp.wrapping_sub(8);
        (get_fp.wrapping_sub(16), Some(get_fp))
    }

    /// The kernel's arm64 user stack walk starts at the probed instruction
    /// and goes on from R29's frame record: the caller, in LR, is missing.
    pub const STACK_MISSES_CALLER: bool = true;
}

#[cfg(not(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64")))]
compile_error!("build with --cfg bpf_target_arch=\"x86_64\" or \"aarch64\" (allocwatch/build.rs does)");

use arch::Regs;

#[uprobe]
pub fn alloc_entry(ctx: ProbeContext) -> u32 {
    alloc(&ctx, cookie::ALLOC_ENTRY);
    0
}

#[uprobe]
pub fn alloc_specialized(ctx: ProbeContext) -> u32 {
    alloc(&ctx, cookie::ALLOC_SPECIALIZED);
    0
}

#[uprobe]
pub fn alloc_sample(ctx: ProbeContext) -> u32 {
    alloc(&ctx, cookie::ALLOC_SAMPLE);
    0
}

/// The hot path, one copy per kind of entry (`kind` is a constant in each),
/// so that no hit pays for the attach cookie or the PID: the kernel runs a
/// uprobe attached for one process only for that process.
#[inline(always)]
fn alloc(ctx: &ProbeContext, kind: u32) {
    bump(counter::HITS);
    let sampled = MODE.get(0).is_some_and(|m| *m == mode::SAMPLED);
    if sampled != (kind == cookie::ALLOC_SAMPLE) {
        return;
    }
    let regs = arch::regs(ctx);
    let Some(ret0) = arch::return_address(&regs) else {
        return;
    };
    if kind == cookie::ALLOC_SPECIALIZED && in_set(&MALLOC_SET, &MALLOC_BITS, ret0) {
        bump(counter::NESTED);
        return;
    }
    // Exact mode only: a sample is not one allocation (userspace shows the
    // miss cost as unknown for a window in sampled mode).
    if kind != cookie::ALLOC_SAMPLE && misses_in_flight() {
        charge_miss(ctx, regs.sp, regs.fp, regs.args[0]);
    }
    let (size, typ, bucket) = size_type_bucket(kind, regs);
    // The common cases: the site is the caller (Go 1.27's size-specialized
    // calls) or the caller's caller (newobject, makeslice, ...).
    let mut f1 = 0;
    let mut nframes = 1;
    let mut bp = regs.fp;
    // SAFETY (the read): checked user read of a frame record [saved BP,
    // return address]; when it fails, the key ends at `ret0`.
    if in_runtime(ret0)
        && let Ok(rec) = unsafe { bpf_probe_read_user(bp as *const [u64; 2]) }
    {
        bp = rec[0];
        f1 = rec[1];
        // A zero return address ends the stack (as in the walk below).
        nframes = if f1 == 0 { 1 } else { 2 };
        if f1 != 0 && in_runtime(f1) {
            walk_and_count(ctx, size, short_key(typ, ret0, f1, 2, bucket), bp, f1);
            return;
        }
    }
    if !count_in_slot(ctx, size, typ, [ret0, f1], nframes, bucket) {
        // The slot belongs to another key.
        count_key(ctx, size, &short_key(typ, ret0, f1, nframes, bucket));
    }
}

/// The size, type and size bucket of the allocation: `profilealloc(mp, x,
/// size)` (sampled mode) knows no type; it is called from the allocation
/// functions, so its walk to the site is the same.
#[inline(always)]
fn size_type_bucket(kind: u32, regs: Regs) -> (u64, u64, u32) {
    if kind == cookie::ALLOC_SAMPLE {
        let size = regs.args[2];
        let s = if size > SAMPLE_SIZE_MASK as u64 {
            SAMPLE_SIZE_MASK
        } else {
            size as u32
        };
        (size, 0, SAMPLED_BIT | s)
    } else {
        (regs.args[0], regs.args[1], size_bucket(regs.args[0]))
    }
}

/// Counts the allocation in its slot of `SLOTS` when the slot holds its key
/// (type, the two return addresses, bucket) or is free (then its stack goes
/// to userspace, at most once per CPU; userspace keeps the first); false
/// when another key holds the slot.
#[inline(always)]
fn count_in_slot(
    ctx: &ProbeContext,
    size: u64,
    typ: u64,
    [ret0, f1]: [u64; 2],
    nframes: u32,
    bucket: u32,
) -> bool {
    let Some(s) = SLOTS.get_ptr_mut(slot_index(typ, ret0, f1, bucket)) else {
        return false;
    };
    // SAFETY: this CPU's slot; only this CPU's programs write it.
    unsafe {
        if (*s).nframes == nframes
            && (*s).frames[0] == ret0
            && (*s).frames[1] == f1
            && (*s).typ == typ
            && (*s).bucket == bucket
        {
            (*s).count += 1;
            (*s).bytes += size;
            return true;
        }
        if (*s).nframes == 0 {
            (*s).typ = typ;
            (*s).frames = [ret0, f1];
            (*s).bucket = bucket;
            (*s).count = 1;
            (*s).bytes = size;
            core::ptr::write_volatile(&raw mut (*s).nframes, nframes);
            let key = short_key(typ, ret0, f1, nframes, bucket);
            send_alloc(ctx, size, &key, EVENT_STACK_ONLY);
            return true;
        }
    }
    false
}

/// True while some goroutine is inside a `p.New()` call: the one check the
/// miss accounting costs an allocation otherwise.
#[inline(always)]
fn misses_in_flight() -> bool {
    MISSES_IN_FLIGHT.get(0).is_some_and(|n| *n != 0)
}

/// The goroutine's stack depth at `sp`: `g.stack.hi − SP` (`g.stack.hi`
/// is the second word of `g`). It does not change when Go copies the stack.
#[inline(always)]
fn stack_depth(g: u64, sp: u64) -> Option<u64> {
    // SAFETY: checked user read.
    let hi: u64 = unsafe { bpf_probe_read_user((g + 8) as *const u64) }.ok()?;
    hi.checked_sub(sp)
}

/// Frame records an allocation walks up to find the `New` call it is in.
const MISS_WALK: u32 = 16;

/// Whether the `New` call of a miss at stack depth `d` is still on the
/// stack above frame pointer `*bp`, walking (and advancing `*bp`) at most
/// `*steps` < [`MISS_WALK`] frame records: `Some(true)` when the frame
/// record of `New` is found (`arch::new_record`: below `Get`'s SP at
/// `g.stack.hi − d`, its return address the one into `Get`), `Some(false)`
/// when the walk passes above it, `None` when the walk ends first.
#[inline(always)]
fn new_is_live(bp: &mut u64, steps: &mut u32, hi: u64, d: u64) -> Option<bool> {
    // The highest address the record can have (on x86-64, its address),
    // and its saved frame pointer where that tells it (`arch::new_record`).
    let (highest, fp) = arch::new_record(hi.wrapping_sub(d));
    // SAFETY: a read of a loader-set constant.
    let ret_new = unsafe { core::ptr::read_volatile(&POOL_NEW_RETURN) };
    while *steps < MISS_WALK {
        if *bp == 0 || *bp > highest {
            return Some(false);
        }
        // SAFETY: checked user read of a frame record.
        let Ok(rec) = (unsafe { bpf_probe_read_user(*bp as *const [u64; 2]) }) else {
            return None;
        };
        *steps += 1;
        if fp.map_or(*bp == highest, |fp| rec[0] == fp) {
            return Some(rec[1] == ret_new);
        }
        *bp = rec[0];
    }
    None
}

/// Charges one allocation of `size` bytes to the pool whose `p.New()` call
/// it is made in: the innermost miss of this goroutine whose `New` is still
/// on the stack between the allocation (frame pointer `fp`) and `Get`.
/// Misses whose `New` is no longer there (it returned, or panicked) are
/// dropped on the way.
#[inline(always)]
fn charge_miss(ctx: &ProbeContext, sp: u64, fp: u64, size: u64) {
    let g = arch::g(ctx);
    let Some(st) = POOL_MISSES.get_ptr_mut(g) else {
        return;
    };
    // SAFETY: checked user read of g.stack.hi.
    let Ok(hi) = (unsafe { bpf_probe_read_user((g + 8) as *const u64) }) else {
        return;
    };
    let depth = hi.wrapping_sub(sp);
    // SAFETY: the entry of this goroutine, which runs here; only its own
    // probes write it.
    let st = unsafe { &mut *st };
    let mut pool = 0;
    let (mut bp, mut steps) = (fp, 0);
    // Read once, written once: each read of map memory is a new unknown
    // to the verifier, and would multiply the states it explores.
    let n = st.n;
    let mut live = n;
    let mut i = MISS_NESTING;
    while i > 0 {
        i -= 1;
        if (i as u32) >= n {
            continue;
        }
        let (Some(&d), Some(&p)) = (st.depths.get(i), st.pools.get(i)) else {
            break;
        };
        let on_stack = if d < depth {
            new_is_live(&mut bp, &mut steps, hi, d)
        } else {
            Some(false)
        };
        match on_stack {
            Some(true) => {
                pool = p;
                break;
            }
            Some(false) => live = i as u32,
            None => {
                if live < n {
                    st.n = live;
                }
                bump(counter::MISS_UNTRACKED);
                return;
            }
        }
    }
    if live < n {
        st.n = live;
    }
    if live == 0 && POOL_MISSES.remove(g).is_ok() {
        in_flight_add(u64::MAX);
    }
    if pool == 0 {
        return;
    }
    if add_or_insert(
        &POOL_MISS_AGG,
        &pool,
        || first_alloc(size),
        |v| add_alloc(v, size),
    ) == Upsert::Full
    {
        bump(counter::AGG_FULL);
    }
}

/// The value of a key's first allocation.
#[inline(always)]
fn first_alloc(size: u64) -> AggValue {
    AggValue {
        count: 1,
        bytes: size,
    }
}

#[inline(always)]
fn add_alloc(v: &mut AggValue, size: u64) {
    v.count += 1;
    v.bytes += size;
}

/// Adds `delta` (±1) to the in-flight count, atomically (several CPUs).
#[inline(always)]
fn in_flight_add(delta: u64) {
    if let Some(p) = MISSES_IN_FLIGHT.get_ptr_mut(0) {
        // SAFETY: a valid, aligned map value. The BPF target has no atomic
        // read-modify-write in `core::sync::atomic` (no compare-and-swap);
        // the intrinsic compiles to the BPF atomic add.
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                p, delta,
            )
        };
    }
}

/// Entries of `st` that lie at `depth` or deeper are over (their `New`
/// returned, or panicked): drops them.
#[inline(always)]
fn pop_from(st: &mut MissStack, depth: u64) {
    let mut i = 0;
    while i < MISS_NESTING {
        if (i as u32) < st.n && st.depths[i] >= depth {
            st.n = i as u32;
            break;
        }
        i += 1;
    }
}

/// At the `CALL reg` of `p.New()`: this goroutine's allocations until that
/// call returns are the miss's.
#[inline(always)]
fn miss_begins(ctx: &ProbeContext, pool: u64, sp: u64) {
    let g = arch::g(ctx);
    let Some(depth) = stack_depth(g, sp) else {
        return;
    };
    if let Some(st) = POOL_MISSES.get_ptr_mut(g) {
        // SAFETY: this goroutine's entry (see `charge_miss`).
        let st = unsafe { &mut *st };
        pop_from(st, depth);
        let n = st.n as usize;
        if n < MISS_NESTING {
            st.pools[n] = pool;
            st.depths[n] = depth;
            st.n += 1;
        } else {
            bump(counter::MISS_UNTRACKED);
        }
        return;
    }
    let mut st = MissStack::default();
    st.pools[0] = pool;
    st.depths[0] = depth;
    st.n = 1;
    if POOL_MISSES.insert(g, st, u64::from(BPF_NOEXIST)).is_ok() {
        in_flight_add(1);
    } else {
        bump(counter::MISS_UNTRACKED);
    }
}

/// At `Get` or `Put` (SP at their frame setup): the misses of this
/// goroutine at this depth or deeper are over (their `New` returned or
/// panicked). Allocations drop such misses too; this keeps a goroutine that
/// stops allocating from leaving one behind.
#[inline(always)]
fn miss_prune(ctx: &ProbeContext, sp: u64) {
    let g = arch::g(ctx);
    let Some(st) = POOL_MISSES.get_ptr_mut(g) else {
        return;
    };
    let Some(depth) = stack_depth(g, sp) else {
        return;
    };
    // SAFETY: this goroutine's entry (see `charge_miss`).
    let st = unsafe { &mut *st };
    pop_from(st, depth);
    if st.n == 0 && POOL_MISSES.remove(g).is_ok() {
        in_flight_add(u64::MAX);
    }
}

#[inline(always)]
fn short_key(typ: u64, f0: u64, f1: u64, nframes: u32, bucket: u32) -> AggKey {
    let mut key = AggKey {
        typ,
        frames: [0; KEY_FRAMES],
        nframes,
        bucket,
    };
    key.frames[0] = f0;
    key.frames[1] = f1;
    key
}

/// Walks the frame pointers on from `bp` (`ret` is the return address
/// already in `key`, still inside the runtime) to the site, then counts.
#[inline(always)]
fn walk_and_count(ctx: &ProbeContext, size: u64, mut key: AggKey, mut bp: u64, mut ret: u64) {
    let mut n: usize = 2;
    while n < KEY_FRAMES {
        if !in_runtime(ret) {
            break;
        }
        // SAFETY: checked user read of a frame record [saved BP, return address].
        let Ok(rec) = (unsafe { bpf_probe_read_user(bp as *const [u64; 2]) }) else {
            break;
        };
        bp = rec[0];
        ret = rec[1];
        if ret == 0 {
            break;
        }
        key.frames[n] = ret;
        n += 1;
    }
    key.nframes = n as u32;
    if n == KEY_FRAMES && in_runtime(ret) {
        // The site lies deeper than a key reaches: send this allocation alone.
        bump(counter::KEY_TRUNCATED);
        send_alloc(ctx, size, &key, 0);
        return;
    }
    count_key(ctx, size, &key);
}

/// Counts one allocation under `key` in the aggregation map (the first
/// time, also sends its stack).
#[inline(always)]
fn count_key(ctx: &ProbeContext, size: u64, key: &AggKey) {
    match add_or_insert(&AGG, key, || first_alloc(size), |v| add_alloc(v, size)) {
        Upsert::Added => {}
        Upsert::Inserted => send_alloc(ctx, size, key, EVENT_STACK_ONLY),
        Upsert::Full => {
            bump(counter::AGG_FULL);
            send_alloc(ctx, size, key, 0);
        }
    }
}

/// Sends one allocation with its full user stack.
#[inline(always)]
fn send_alloc(ctx: &ProbeContext, size: u64, key: &AggKey, flags: u32) {
    let Some(mut entry) = EVENTS.reserve::<AllocEvent>(0) else {
        lost(ctx, flags);
        return;
    };
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: the helper only reads the context's attach cookie.
    let ck = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points to reserved ring buffer memory of the right size;
    // every field is written before submit.
    unsafe {
        (*ev).kind = allocwatch_common::kind::ALLOC;
        (*ev).tgid = tgid;
        (*ev).cookie = ck;
        (*ev).size = size;
        (*ev).key = *key;
        (*ev).flags = flags;
        // Where the caller is missing from the kernel's walk, the stack
        // goes one word further in, and the caller (`key.frames[0]`) is
        // put after the probed instruction.
        let skip = usize::from(arch::STACK_MISSES_CALLER);
        let got = bpf_get_stack(
            ctx.as_ptr(),
            (&raw mut (*ev).frames[skip]).cast(),
            ((MAX_FRAMES - skip) * 8) as u32,
            u64::from(BPF_F_USER_STACK),
        );
        if got < 0 {
            bump(counter::STACK_ERRORS);
            (*ev).nframes = 0;
        } else if arch::STACK_MISSES_CALLER && got >= 8 {
            (*ev).frames[0] = (*ev).frames[1];
            (*ev).frames[1] = key.frames[0];
            (*ev).nframes = (got as u32) / 8 + 1;
        } else {
            (*ev).nframes = (got as u32) / 8;
        }
    }
    entry.submit(0);
}

#[uprobe]
pub fn pool_probe(ctx: ProbeContext) -> u32 {
    match try_pool_probe(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

fn try_pool_probe(ctx: &ProbeContext) -> Result<u32, u32> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid != target_tgid() {
        bump(counter::OTHER_PROCESS);
        return Ok(0);
    }
    bump(counter::HITS);
    // SAFETY: the helper only reads the context's attach cookie.
    let ck = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let op = cookie::kind(ck);
    let Some((pool, arg, first, bp)) = pool_operation(ctx, op) else {
        return Ok(0);
    };
    let callers = pool_callers(first, bp);
    let key = PoolKey {
        pool,
        callers,
        arg,
        op,
        _pad: 0,
    };
    let first_value = || PoolValue {
        count: 1,
        // SAFETY: the helper has no preconditions.
        first_ns: unsafe { bpf_ktime_get_ns() },
    };
    if add_or_insert(&POOL_AGG, &key, first_value, |v| v.count += 1) == Upsert::Full {
        bump(counter::AGG_FULL);
        let Some(mut entry) = EVENTS.reserve::<PoolEvent>(0) else {
            lost(ctx, 0);
            return Ok(0);
        };
        entry.write(PoolEvent {
            kind: allocwatch_common::kind::POOL,
            tgid,
            cookie: ck,
            pool,
            arg,
            callers,
        });
        entry.submit(0);
    }
    Ok(0)
}

/// The operation `op` of a pool probe: (pool, `New`'s code for a miss,
/// return address into the caller, the caller's frame pointer); `None` for
/// what does not count (`Put(nil)`, an unknown cookie). Also keeps the
/// goroutine's misses in flight up to date.
#[inline(always)]
fn pool_operation(ctx: &ProbeContext, op: u32) -> Option<(u64, u64, u64, u64)> {
    let regs = arch::regs(ctx);
    // At Get's and Put's frame setup, the return address is the one into
    // the caller and the frame pointer the caller's; inside Get (the miss
    // probes), the frame pointer is Get's and its record holds the return
    // address into the caller.
    match op {
        cookie::POOL_GET | cookie::POOL_PUT => {
            // Put(x any): the type word of x.
            if op == cookie::POOL_PUT && regs.args[1] == 0 {
                // Put(nil) returns early and does not count.
                return None;
            }
            if misses_in_flight() {
                miss_prune(ctx, regs.sp);
            }
            let ret = arch::return_address(&regs).unwrap_or(0);
            Some((regs.args[0], 0, ret, regs.fp))
        }
        cookie::POOL_NEW | cookie::POOL_NIL => {
            let rec = read_frame(regs.fp);
            let pool = arch::pool_at_miss(ctx, &regs);
            let newfn = if op == cookie::POOL_NEW {
                miss_begins(ctx, pool, regs.sp);
                // The funcval's code pointer.
                read_u64(regs.ctxt)
            } else {
                0
            };
            Some((pool, newfn, rec[1], rec[0]))
        }
        _ => None,
    }
}

/// A user word, 0 when unreadable.
#[inline(always)]
fn read_u64(addr: u64) -> u64 {
    // SAFETY: checked user read.
    unsafe { bpf_probe_read_user(addr as *const u64) }.unwrap_or(0)
}

/// A frame record [saved BP, return address], zeros when unreadable.
#[inline(always)]
fn read_frame(bp: u64) -> [u64; 2] {
    // SAFETY: checked user read.
    unsafe { bpf_probe_read_user(bp as *const [u64; 2]) }.unwrap_or([0; 2])
}

/// `first` (the return address into the caller) and the return addresses
/// of the callers above it, from the caller's frame pointer `bp` on.
#[inline(always)]
fn pool_callers(first: u64, mut bp: u64) -> [u64; POOL_CALLERS] {
    let mut callers = [0; POOL_CALLERS];
    callers[0] = first;
    let mut i = 1;
    while i < POOL_CALLERS {
        if bp == 0 {
            break;
        }
        let rec = read_frame(bp);
        if rec[1] == 0 {
            break;
        }
        callers[i] = rec[1];
        bp = rec[0];
        i += 1;
    }
    callers
}

/// Per CPU: where the `floor_read*` programs store what they read.
#[map]
static SCRATCH: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Benchmarks only: the least a program must do to attribute an allocation
/// made directly by its site (Go 1.27's size-specialized calls): the
/// return address (one user read on x86-64, at `[RSP]`).
#[uprobe]
pub fn floor_read1(ctx: ProbeContext) -> u32 {
    let regs = arch::regs(&ctx);
    let ret = arch::return_address(&regs).unwrap_or(0);
    if let Some(p) = SCRATCH.get_ptr_mut(0) {
        // SAFETY: per-CPU slot.
        unsafe { *p = ret };
    }
    0
}

/// Benchmarks only: the same for an allocation that passes one runtime
/// frame (`newobject` → `mallocgc`): the return address and the caller's
/// frame record.
#[uprobe]
pub fn floor_read2(ctx: ProbeContext) -> u32 {
    let regs = arch::regs(&ctx);
    let ret = arch::return_address(&regs).unwrap_or(0);
    let rec = read_frame(regs.fp);
    if let Some(p) = SCRATCH.get_ptr_mut(0) {
        // SAFETY: per-CPU slot.
        unsafe { *p = ret ^ rec[1] };
    }
    0
}

/// Does nothing: attached at the same points as the real programs by the
/// benchmarks, it measures the floor cost of a uprobe hit.
#[uprobe]
pub fn noop(_ctx: ProbeContext) -> u32 {
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "license")]
pub static LICENSE: [u8; 4] = *b"GPL\0";
