//! The exec notification the daemon finds new processes with:
//! `execwatch.bpf.o`'s `exec_notify`, at the raw tracepoint
//! `sched_process_exec` (no tracefs needed), sends the PID of every process
//! that execs, and the file it exec'd, through a ring buffer of its own;
//! [`ExecWatch::next`] hands them over. A note the ring buffer cannot hold
//! is counted ([`ExecWatch::lost`]).
//!
//! [`ExecWatch::hold`] adds an executable file to the program's `HOLD`
//! map: a process that execs it later is stopped (`SIGSTOP`) before its
//! first instruction, and its [`Exec`] says `held`; [`resume`] lets it go.
//! The program finds the file's device and inode through kernel structures
//! whose layout comes from the kernel's BTF ([`super::btf`]).

pub use allocwatch_common::ExeKey;
use allocwatch_common::{Comm, EXEC_NOTE_EXEC, EXEC_NOTE_HELD, EXEC_NOTE_HOLD_FAILED, ExecNote};
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::RawTracePoint;
use aya::{Ebpf, EbpfLoader};
use tokio::io::unix::AsyncFd;

use super::btf;
use super::{load_error, take_map};
use crate::error::{AppError, Result};

/// The compiled exec notification (see allocwatch-ebpf/src/bin/execwatch.rs).
static EXECWATCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/execwatch.bpf.o"));

/// Watches every `execve` on the machine until dropped.
pub struct ExecWatch {
    ring: AsyncFd<RingBuf<MapData>>,
    lost: PerCpuArray<MapData, u64>,
    hold: HashMap<MapData, ExeKey, u8>,
    hold_comms: LpmTrie<MapData, Comm, u8>,
    /// The program reads the exec'd file (the kernel has BTF with the
    /// fields it reads through).
    files: bool,
    /// Owns the program and its attachment.
    _ebpf: Ebpf,
}

impl ExecWatch {
    /// Loads and attaches the exec notification.
    ///
    /// # Errors
    /// The kernel refuses the program or the tracepoint (privileges, no
    /// BPF ring buffer).
    pub fn start() -> Result<ExecWatch> {
        // ALLOCWATCH_EXEC_FILES=off: as on a kernel whose BTF lacks them
        // (for the tests of that case).
        let offsets = btf::exec_file_offsets_of_this_kernel()
            .filter(|_| std::env::var_os("ALLOCWATCH_EXEC_FILES").is_none_or(|v| v != "off"));
        if offsets.is_none() {
            log::warn!(
                "the kernel's BTF does not say where an exec'd file is (linux_binprm.file, file.f_inode, inode.i_ino, inode.i_sb, super_block.s_dev): new processes are held by the names --exe spells out only, not by executable"
            );
        }
        // Unread (`valid` 0) without them.
        let globals = offsets.unwrap_or_default();
        let mut ebpf = EbpfLoader::new()
            .override_global("EXEC_FILE_OFFSETS", &globals, true)
            .load(EXECWATCH_OBJECT)
            .map_err(|e| load_error(&e))?;
        let prog: &mut RawTracePoint = ebpf
            .program_mut("exec_notify")
            .ok_or_else(|| AppError::other("exec_notify missing from the eBPF object"))?
            .try_into()
            .map_err(|e| load_error(&e))?;
        prog.load().map_err(|e| load_error(&e))?;
        prog.attach("sched_process_exec").map_err(|e| {
            AppError::env(format!(
                "cannot watch for new processes (raw tracepoint sched_process_exec): {e}"
            ))
        })?;
        let ring: RingBuf<MapData> = take_map(&mut ebpf, "EXECS", "exec ring buffer")?;
        // SAFETY: RingBuf owns its map fd until it is dropped with the AsyncFd.
        let ring = unsafe { AsyncFd::register(ring) }
            .map_err(|e| AppError::other(format!("cannot poll the exec ring buffer: {e}")))?;
        let lost = take_map(&mut ebpf, "EXECS_LOST", "exec counter")?;
        let hold = take_map(&mut ebpf, "HOLD", "held executables")?;
        let hold_comms = take_map(&mut ebpf, "HOLD_COMMS", "held process names")?;
        Ok(ExecWatch {
            ring,
            lost,
            hold,
            hold_comms,
            files: offsets.is_some(),
            _ebpf: ebpf,
        })
    }

    /// True when the notes say which file each process exec'd (and
    /// [`ExecWatch::hold`] can work).
    #[must_use]
    pub fn sees_files(&self) -> bool {
        self.files
    }

    /// Stops every process that execs `file` from now on before its first
    /// instruction, until [`resume`].
    ///
    /// # Errors
    /// The map is full (`HOLD_MAX` executables).
    pub fn hold(&mut self, file: ExeKey) -> Result<()> {
        self.hold.insert(file, 1, 0).map_err(|e| {
            AppError::env(format!(
                "cannot hold the new processes of one more executable: {e}"
            ))
        })
    }

    /// Stops every process that execs a file of base name `name` (with
    /// `whole`), or of a base name that starts with `name`, from now on
    /// before its first instruction, until [`resume`]. The kernel keeps 15
    /// bytes of a name: a longer one holds every name it starts.
    ///
    /// # Errors
    /// The map is full (`HOLD_COMMS_MAX` names).
    pub fn hold_name(&mut self, name: &str, whole: bool) -> Result<()> {
        self.hold_comms
            .insert(&comm_key(name, whole), 1, 0)
            .map_err(|e| {
                AppError::env(format!(
                    "cannot hold the new processes of one more name: {e}"
                ))
            })
    }

    /// Waits for notes and returns every one since the last call, in
    /// order (a PID twice if it exec'd twice). Cancel-safe: nothing is
    /// taken from the ring buffer before the wait ends.
    pub async fn next(&mut self) -> Vec<Exec> {
        loop {
            let Ok(mut guard) = self.ring.readable_mut().await else {
                // The ring buffer cannot be polled: never ready again.
                return std::future::pending().await;
            };
            let notes = drain(guard.get_inner_mut());
            guard.clear_ready();
            if !notes.is_empty() {
                return notes;
            }
        }
    }

    /// Stops watching: the program detached first, then what the ring
    /// buffer still holds is returned (so that a process held just before
    /// can be let go; none is held after).
    #[must_use]
    pub fn stop(self) -> Vec<Exec> {
        let ExecWatch {
            ring,
            lost,
            hold,
            hold_comms,
            files: _,
            _ebpf,
        } = self;
        drop(_ebpf);
        drop((lost, hold, hold_comms));
        drain(&mut ring.into_inner())
    }

    /// Notes the ring buffer could not hold, since the start.
    #[must_use]
    pub fn lost(&self) -> u64 {
        self.lost
            .get(&0, 0)
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0)
    }
}

/// Every note the ring buffer holds now, in order.
fn drain(ring: &mut RingBuf<MapData>) -> Vec<Exec> {
    let mut notes = Vec::new();
    while let Some(item) = ring.next() {
        notes.extend(Exec::from_bytes(&item));
    }
    notes
}

/// One exec, as the notification saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exec {
    pub pid: u32,
    /// The file exec'd (`None` when the kernel's layout is unknown).
    pub file: Option<ExeKey>,
    /// Stopped before its first instruction: it runs again on [`resume`].
    pub held: bool,
    /// Its file is held, and the kernel refused the signal: it runs on.
    pub hold_failed: bool,
}

impl Exec {
    fn from_bytes(b: &[u8]) -> Option<Exec> {
        let b = b.get(..size_of::<ExecNote>())?;
        // SAFETY: ExecNote is plain old data (integers only), and `b` has
        // its size; read_unaligned needs no alignment.
        let n: ExecNote = unsafe { std::ptr::read_unaligned(b.as_ptr().cast()) };
        Some(Exec {
            pid: n.pid,
            file: (n.file.ino != 0).then_some(n.file),
            held: n.kind == EXEC_NOTE_HELD,
            hold_failed: n.kind == EXEC_NOTE_HOLD_FAILED,
        })
        .filter(|_| n.kind <= EXEC_NOTE_HOLD_FAILED && (n.kind != EXEC_NOTE_EXEC || n.pid != 0))
    }
}

/// The identity of an executable file as `exec_notify` reads it, from
/// `stat`'s device and inode.
#[must_use]
pub fn exe_key(st_dev: u64, st_ino: u64) -> ExeKey {
    ExeKey {
        dev: btf::kernel_dev(st_dev),
        _pad: 0,
        ino: st_ino,
    }
}

/// `name` as `task_struct.comm` holds it: 15 bytes at most, NUL-padded.
fn comm(name: &str) -> Comm {
    let mut c = [0u8; 16];
    for (d, s) in c.iter_mut().zip(name.bytes().take(15)) {
        *d = s;
    }
    c
}

/// The key of `HOLD_COMMS` that matches the name `name` (`whole`: its
/// bytes and the NUL after them; a name cut at 15 bytes has it at the
/// end) or every name that starts with it (its bytes alone).
fn comm_key(name: &str, whole: bool) -> Key<Comm> {
    let bytes = name.len().min(15) as u32;
    let bits = if whole { (bytes + 1) * 8 } else { bytes * 8 };
    Key::new(bits, comm(name))
}

/// Lets a process [`ExecWatch::hold`] stopped run (`SIGCONT`; a stop still
/// pending is discarded with it, so this may come first).
pub fn resume(pid: u32) {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) has no memory preconditions.
    if unsafe { libc::kill(p, libc::SIGCONT) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            log::error!(
                "PID {pid} was held at its exec and cannot be let go (SIGCONT: {e}): it stays stopped until something sends it SIGCONT"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(pid: u32, kind: u32, dev: u32, ino: u64) -> Vec<u8> {
        [
            pid.to_ne_bytes().as_slice(),
            &kind.to_ne_bytes(),
            &dev.to_ne_bytes(),
            &0u32.to_ne_bytes(),
            &ino.to_ne_bytes(),
        ]
        .concat()
    }

    #[test]
    fn notes_read_as_the_kernel_writes_them() {
        let file = ExeKey {
            dev: (8 << 20) | 1,
            _pad: 0,
            ino: 1234,
        };
        assert_eq!(
            Exec::from_bytes(&bytes(42, EXEC_NOTE_EXEC, file.dev, 1234)),
            Some(Exec {
                pid: 42,
                file: Some(file),
                held: false,
                hold_failed: false,
            })
        );
        let held = Exec::from_bytes(&bytes(7, EXEC_NOTE_HELD, file.dev, 1234)).expect("note");
        assert!(held.held && !held.hold_failed);
        let failed =
            Exec::from_bytes(&bytes(7, EXEC_NOTE_HOLD_FAILED, file.dev, 1234)).expect("note");
        assert!(!failed.held && failed.hold_failed);
        // The file unread (no BTF): no file.
        let unread = Exec::from_bytes(&bytes(9, EXEC_NOTE_EXEC, 0, 0)).expect("note");
        assert_eq!(unread.file, None);
        assert_eq!(Exec::from_bytes(&[1, 2, 3]), None);
        assert_eq!(Exec::from_bytes(&bytes(9, 77, 0, 0)), None, "unknown kind");
    }

    #[test]
    fn name_keys_for_the_longest_prefix_match() {
        assert_eq!(comm_key("api", true).prefix_len(), 32, "api and its NUL");
        assert_eq!(comm_key("api", false).prefix_len(), 24, "api…");
        let long = comm_key("a-very-long-service-name", true);
        assert_eq!(
            long.prefix_len(),
            128,
            "the 15 bytes the kernel keeps, and the NUL"
        );
        assert_eq!(
            comm_key("a-very-long-service-name", false).prefix_len(),
            120
        );
    }

    #[test]
    fn names_as_the_kernel_keeps_them() {
        assert_eq!(&comm("api")[..4], b"api\0");
        assert_eq!(comm("api")[15], 0);
        let long = comm("a-very-long-service-name");
        assert_eq!(&long[..15], b"a-very-long-ser");
        assert_eq!(long[15], 0, "NUL-terminated");
    }

    #[test]
    fn a_file_s_key_from_stat() {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata("/proc/self/exe").expect("stat");
        let k = exe_key(m.dev(), m.ino());
        assert_eq!(k.ino, m.ino());
        assert_eq!(k.dev, btf::kernel_dev(m.dev()));
    }
}
