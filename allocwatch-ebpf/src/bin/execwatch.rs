//! The daemon's exec notification: `exec_notify` runs at the raw
//! tracepoint `sched_process_exec` (raw: attached by name with `bpf(2)`
//! alone, no tracefs, which containers and hardened units do not have),
//! once per successful `execve` on the machine, and sends the process's PID
//! (its thread-group ID) and the file it exec'd (device and inode) to
//! userspace through the ring buffer `EXECS`. The daemon (`--exe`) looks
//! at the new executable there. An object of its own, so that watching
//! execs creates none of the tracing programs' maps.
//!
//! Holds: when the file is in `HOLD` (executables the daemon traces), or
//! the process's new name (`comm`, the file's base name) matches
//! `HOLD_COMMS` (names and name prefixes `--exe` patterns spell out), the
//! process is sent
//! `SIGSTOP` here, before it runs its first
//! instruction (the signal is acted on as the exec returns to user mode),
//! and the note says so. The daemon attaches, then sends `SIGCONT`: the
//! process is counted from its first allocation. No instruction of the
//! file is patched for this, so a file rewritten in place cannot be
//! broken by it.
//!
//! Nothing is dropped silently: a note the ring buffer cannot hold is
//! counted in `EXECS_LOST`.
#![no_std]
#![no_main]

use allocwatch_common::{
    Comm, EXEC_NOTE_EXEC, EXEC_NOTE_HELD, EXEC_NOTE_HOLD_FAILED, EXEC_RINGBUF_BYTES, ExeKey,
    ExecFileOffsets, ExecNote, HOLD_COMMS_MAX, HOLD_MAX,
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_kernel,
        generated::bpf_send_signal,
    },
    macros::{map, raw_tracepoint},
    maps::{HashMap, LpmTrie, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::RawTracePointContext,
};

/// `SIGSTOP` on Linux.
const SIGSTOP: u32 = 19;

/// Where the exec'd file's identity is, set by the loader from the
/// kernel's BTF.
#[unsafe(no_mangle)]
static EXEC_FILE_OFFSETS: ExecFileOffsets = ExecFileOffsets {
    valid: 0,
    bprm_file: 0,
    file_inode: 0,
    inode_ino: 0,
    inode_sb: 0,
    sb_dev: 0,
};

#[map]
static EXECS: RingBuf = RingBuf::with_byte_size(EXEC_RINGBUF_BYTES, 0);

#[map]
static EXECS_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The executables whose new processes are held (filled by the daemon).
#[map]
static HOLD: HashMap<ExeKey, u8> = HashMap::with_max_entries(HOLD_MAX, 0);

/// The process names and name prefixes whose new processes are held
/// (filled by the daemon).
#[map]
static HOLD_COMMS: LpmTrie<Comm, u8> = LpmTrie::with_max_entries(HOLD_COMMS_MAX, 0);

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn exec_notify(ctx: RawTracePointContext) -> i32 {
    // After exec the caller is the thread-group leader: its PID.
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // TP_PROTO(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
    let bprm: u64 = ctx.arg(2);
    let file = exec_file(bprm).unwrap_or_default();
    let mut kind = EXEC_NOTE_EXEC;
    if held(&file) {
        // SAFETY: a helper call; it signals the current process (the one
        // exec'ing), never another.
        let sent = unsafe { bpf_send_signal(SIGSTOP) };
        kind = if sent == 0 {
            EXEC_NOTE_HELD
        } else {
            EXEC_NOTE_HOLD_FAILED
        };
    }
    let note = ExecNote { pid, kind, file };
    if EXECS.output::<ExecNote>(note, 0).is_err()
        && let Some(n) = EXECS_LOST.get_ptr_mut(0)
    {
        // SAFETY: a per-CPU slot of this CPU, valid for the program's run.
        unsafe { *n += 1 };
    }
    0
}

/// True when the process's file, or its name, is one to hold.
#[inline(always)]
fn held(file: &ExeKey) -> bool {
    // SAFETY: lookups in maps of this program; no value is kept.
    unsafe {
        if file.ino != 0 && HOLD.get(file).is_some() {
            return true;
        }
        // The name exec set: the file's base name, as comm holds it.
        bpf_get_current_comm().is_ok_and(|comm| HOLD_COMMS.get(Key::new(128, comm)).is_some())
    }
}

/// `bprm->file->f_inode`: its `i_sb->s_dev` and `i_ino`.
#[inline(always)]
fn exec_file(bprm: u64) -> Option<ExeKey> {
    // SAFETY: the loader's global, read once.
    let o = unsafe { core::ptr::read_volatile(&EXEC_FILE_OFFSETS) };
    if o.valid == 0 || bprm == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks every address it reads.
    unsafe {
        let file: u64 =
            bpf_probe_read_kernel((bprm + u64::from(o.bprm_file)) as *const u64).ok()?;
        let inode: u64 =
            bpf_probe_read_kernel((file + u64::from(o.file_inode)) as *const u64).ok()?;
        let ino: u64 =
            bpf_probe_read_kernel((inode + u64::from(o.inode_ino)) as *const u64).ok()?;
        let sb: u64 = bpf_probe_read_kernel((inode + u64::from(o.inode_sb)) as *const u64).ok()?;
        let dev: u32 = bpf_probe_read_kernel((sb + u64::from(o.sb_dev)) as *const u32).ok()?;
        Some(ExeKey { dev, _pad: 0, ino })
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "license")]
pub static LICENSE: [u8; 4] = *b"GPL\0";
