//! allocwatch's eBPF programs.
//!
//! Two uprobe programs serve every attach point; the attach cookie
//! (`allocwatch_common::cookie`) says what the point is:
//!
//! - `alloc_entry` runs at the `PUSHQ BP` of `runtime.mallocgc` and of the
//!   size-specialized allocation entries. It reads the Go register ABI
//!   arguments (RAX = size, RBX = `*_type`), skips nested hits (a specialized
//!   entry called by `runtime.mallocgc*`), captures the user stack and sends an
//!   [`AllocEvent`] through the ring buffer.
//! - `pool_probe` runs at `sync.(*Pool).Get`/`Put` and at the two miss paths
//!   inside `Get`, and sends a [`PoolEvent`].
//!
//! Every hit is counted in `COUNTERS`, and so is every event that did not fit
//! in the ring buffer: nothing is dropped silently.
#![no_std]
#![no_main]

use allocwatch_common::{
    AllocEvent, MAX_FRAMES, MAX_RANGES, MallocRanges, PoolEvent, RINGBUF_BYTES, cookie, counter,
    kind,
};
use aya_ebpf::{
    bindings::{BPF_F_USER_STACK, pt_regs},
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_user,
        generated::{bpf_get_attach_cookie, bpf_get_stack},
    },
    macros::{map, uprobe},
    maps::{PerCpuArray, RingBuf},
    programs::ProbeContext,
    EbpfContext,
};
use aya_log_ebpf::warn;

/// The process being traced (its tgid in the initial PID namespace). Set by
/// the loader; hits from any other process are counted and ignored.
#[unsafe(no_mangle)]
static TARGET_TGID: u32 = 0;

/// `runtime.mallocgc*` address ranges, set by the loader.
#[unsafe(no_mangle)]
static MALLOC_RANGES: MallocRanges = MallocRanges::EMPTY;

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(RINGBUF_BYTES, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Per CPU: set once the first lost event has been logged.
#[map]
static LOG_ONCE: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

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
fn lost(ctx: &ProbeContext) {
    bump(counter::LOST);
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

/// True when `addr` lies inside one of the `runtime.mallocgc*` functions.
#[inline(always)]
fn inside_malloc(addr: u64) -> bool {
    // SAFETY: a read of a loader-set constant.
    let n = unsafe { core::ptr::read_volatile(&MALLOC_RANGES.count) };
    let mut i = 0usize;
    while i < MAX_RANGES as usize {
        if i as u64 >= n {
            break;
        }
        // SAFETY: i < MAX_RANGES, a read of a loader-set constant.
        let [start, end] = unsafe { core::ptr::read_volatile(&MALLOC_RANGES.ranges[i]) };
        if addr >= start && addr < end {
            return true;
        }
        i += 1;
    }
    false
}

/// The registers a program needs, each loaded once with a fixed offset from
/// the context (the verifier rejects loads through a modified context pointer).
#[derive(Clone, Copy)]
struct Regs {
    rax: u64,
    rbx: u64,
    rcx: u64,
    rdx: u64,
    rsp: u64,
    rbp: u64,
}

#[inline(always)]
fn regs(ctx: &ProbeContext) -> Regs {
    let r: *const pt_regs = ctx.regs;
    // SAFETY: `r` is the probe's register frame, valid for the whole run;
    // volatile keeps each load a direct context access.
    unsafe {
        Regs {
            rax: core::ptr::read_volatile(&raw const (*r).rax),
            rbx: core::ptr::read_volatile(&raw const (*r).rbx),
            rcx: core::ptr::read_volatile(&raw const (*r).rcx),
            rdx: core::ptr::read_volatile(&raw const (*r).rdx),
            rsp: core::ptr::read_volatile(&raw const (*r).rsp),
            rbp: core::ptr::read_volatile(&raw const (*r).rbp),
        }
    }
}

#[uprobe]
pub fn alloc_entry(ctx: ProbeContext) -> u32 {
    match try_alloc_entry(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

fn try_alloc_entry(ctx: &ProbeContext) -> Result<u32, u32> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid != target_tgid() {
        bump(counter::OTHER_PROCESS);
        return Ok(0);
    }
    bump(counter::HITS);
    // SAFETY: the helper only reads the context's attach cookie.
    let ck = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let regs = regs(ctx);
    if cookie::kind(ck) == cookie::ALLOC_SPECIALIZED {
        // At the PUSHQ BP, [RSP] is still the return address.
        // SAFETY: reads user memory through the checked helper.
        let ret: u64 = unsafe { bpf_probe_read_user(regs.rsp as *const u64) }.map_err(|_| 0u32)?;
        if inside_malloc(ret) {
            bump(counter::NESTED);
            return Ok(0);
        }
    }
    let Some(mut entry) = EVENTS.reserve::<AllocEvent>(0) else {
        lost(ctx);
        return Ok(0);
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points to reserved ring buffer memory of the right size;
    // every field is written before submit.
    unsafe {
        (*ev).kind = kind::ALLOC;
        (*ev).tgid = tgid;
        (*ev).cookie = ck;
        (*ev).size = regs.rax;
        (*ev).typ = regs.rbx;
        (*ev)._pad = 0;
        let got = bpf_get_stack(
            ctx.as_ptr(),
            (&raw mut (*ev).frames).cast(),
            (MAX_FRAMES * 8) as u32,
            u64::from(BPF_F_USER_STACK),
        );
        if got < 0 {
            bump(counter::STACK_ERRORS);
            (*ev).nframes = 0;
        } else {
            (*ev).nframes = (got as u32) / 8;
        }
    }
    entry.submit(0);
    Ok(0)
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
    let regs = regs(ctx);
    let (pool, arg, caller) = match cookie::kind(ck) {
        cookie::POOL_GET => {
            // SAFETY: checked user read of the return address at [RSP].
            let ret: u64 = unsafe { bpf_probe_read_user(regs.rsp as *const u64) }.unwrap_or(0);
            (regs.rax, 0, ret)
        }
        cookie::POOL_PUT => {
            if regs.rbx == 0 {
                // Put(nil) returns early and does not count.
                return Ok(0);
            }
            // SAFETY: checked user read of the return address at [RSP].
            let ret: u64 = unsafe { bpf_probe_read_user(regs.rsp as *const u64) }.unwrap_or(0);
            (regs.rax, regs.rcx, ret)
        }
        cookie::POOL_NEW | cookie::POOL_NIL => {
            // Inside Get, after its frame setup: Get's return address is [RBP+8].
            // SAFETY: checked user read.
            let ret: u64 =
                unsafe { bpf_probe_read_user((regs.rbp + 8) as *const u64) }.unwrap_or(0);
            let newfn = if cookie::kind(ck) == cookie::POOL_NEW {
                // SAFETY: checked user read of the funcval's code pointer.
                unsafe { bpf_probe_read_user(regs.rdx as *const u64) }.unwrap_or(0)
            } else {
                0
            };
            (regs.rcx, newfn, ret)
        }
        _ => return Ok(0),
    };
    let Some(mut entry) = EVENTS.reserve::<PoolEvent>(0) else {
        lost(ctx);
        return Ok(0);
    };
    entry.write(PoolEvent { kind: kind::POOL, tgid, cookie: ck, pool, arg, caller });
    entry.submit(0);
    Ok(0)
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
