//! The exec notification the daemon finds new processes with:
//! `execwatch.bpf.o`'s `exec_notify`, at the raw tracepoint
//! `sched_process_exec` (no tracefs needed), sends the PID of every process that execs through a ring
//! buffer of its own; [`ExecWatch::next`] hands them over. An exec the
//! ring buffer cannot hold is counted ([`ExecWatch::lost`]).

use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::RawTracePoint;
use aya::{Ebpf, EbpfLoader};
use tokio::io::unix::AsyncFd;

use super::{load_error, take_map};
use crate::error::{AppError, Result};

/// The compiled exec notification (see allocwatch-ebpf/src/bin/execwatch.rs).
static EXECWATCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/execwatch.bpf.o"));

/// Watches every `execve` on the machine until dropped.
pub struct ExecWatch {
    ring: AsyncFd<RingBuf<MapData>>,
    lost: PerCpuArray<MapData, u64>,
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
        let mut ebpf = EbpfLoader::new()
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
        Ok(ExecWatch {
            ring,
            lost,
            _ebpf: ebpf,
        })
    }

    /// Waits for execs and returns the PIDs of every process that exec'd
    /// since the last call, in order (a PID twice if it exec'd twice).
    /// Cancel-safe: nothing is taken from the ring buffer before the wait
    /// ends.
    pub async fn next(&mut self) -> Vec<u32> {
        loop {
            let Ok(mut guard) = self.ring.readable_mut().await else {
                // The ring buffer cannot be polled: never ready again.
                return std::future::pending().await;
            };
            let ring = guard.get_inner_mut();
            let mut pids = Vec::new();
            while let Some(item) = ring.next() {
                if let Some(b) = item.get(..4) {
                    pids.push(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                }
            }
            guard.clear_ready();
            if !pids.is_empty() {
                return pids;
            }
        }
    }

    /// Execs the ring buffer could not hold, since the start.
    #[must_use]
    pub fn lost(&self) -> u64 {
        self.lost
            .get(&0, 0)
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0)
    }
}
