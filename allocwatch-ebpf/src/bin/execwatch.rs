//! The daemon's exec notification: `exec_notify` runs at the raw
//! tracepoint `sched_process_exec` (raw: attached by name with `bpf(2)`
//! alone, no tracefs, which containers and hardened units do not have),
//! once per successful `execve` on the machine, and sends the process's PID (its thread-group ID) to
//! userspace through the ring buffer `EXECS`. The daemon (`--exe`) looks at
//! the new executable there. An object of its own, so that watching execs
//! creates none of the tracing programs' maps.
//!
//! Nothing is dropped silently: an exec the ring buffer cannot hold is
//! counted in `EXECS_LOST`.
#![no_std]
#![no_main]

use allocwatch_common::EXEC_RINGBUF_BYTES;
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{map, raw_tracepoint},
    maps::{PerCpuArray, RingBuf},
    programs::RawTracePointContext,
};

#[map]
static EXECS: RingBuf = RingBuf::with_byte_size(EXEC_RINGBUF_BYTES, 0);

#[map]
static EXECS_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn exec_notify(_ctx: RawTracePointContext) -> i32 {
    // After exec the caller is the thread-group leader: its PID.
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if EXECS.output::<u32>(tgid, 0).is_err()
        && let Some(n) = EXECS_LOST.get_ptr_mut(0)
    {
        // SAFETY: a per-CPU slot of this CPU, valid for the program's run.
        unsafe { *n += 1 };
    }
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
