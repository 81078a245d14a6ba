//! Checks, before anything is loaded, that this machine and this user can
//! trace: privileges and the kernel features allocwatch relies on. Each
//! failure says exactly what is missing.

use std::path::{Path, PathBuf};

use crate::error::{AppError, Result};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capability set of this process.
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Names of the capabilities needed and missing (empty when all are there).
#[must_use]
pub fn missing_capabilities() -> Vec<&'static str> {
    let caps = effective_caps();
    [
        (CAP_BPF, "CAP_BPF"),
        (CAP_PERFMON, "CAP_PERFMON"),
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
        (CAP_SYS_PTRACE, "CAP_SYS_PTRACE"),
    ]
    .into_iter()
    .filter(|(bit, _)| caps & (1u64 << bit) == 0)
    .map(|(_, n)| n)
    .collect()
}

/// True when allocwatch may signal other users' processes (`CAP_KILL`):
/// the daemon's holds need it, to send `SIGCONT` to a process it stopped.
#[must_use]
pub fn can_signal_any_process() -> bool {
    const CAP_KILL: u32 = 5;
    effective_caps() & (1u64 << CAP_KILL) != 0
}

/// A kernel feature allocwatch needs.
struct Feature {
    name: &'static str,
    present: fn() -> bool,
    hint: &'static str,
}

/// BPF ring buffers, probed by creating one (a kernel version says little:
/// distributions backport features, and trim them).
fn ringbuf_supported() -> bool {
    aya::sys::is_map_supported(aya::maps::MapType::RingBuf).unwrap_or(false)
}

/// Attach cookies, probed by loading a kprobe-type program (what uprobe
/// programs are) that calls `bpf_get_attach_cookie`.
fn cookies_supported() -> bool {
    aya::sys::is_helper_supported(
        aya::programs::ProgramType::KProbe,
        aya_obj::generated::bpf_func_id::BPF_FUNC_get_attach_cookie,
    )
    .unwrap_or(false)
}

const FEATURES: [Feature; 4] = [
    Feature {
        name: "uprobes",
        present: || Path::new("/sys/bus/event_source/devices/uprobe/type").exists(),
        hint: "the kernel needs CONFIG_UPROBES and CONFIG_UPROBE_EVENTS",
    },
    Feature {
        name: "btf",
        present: || Path::new("/sys/kernel/btf/vmlinux").exists(),
        hint: "the kernel needs CONFIG_DEBUG_INFO_BTF",
    },
    Feature {
        name: "ringbuf",
        present: ringbuf_supported,
        hint: "BPF ring buffers (Linux ≥ 5.8, or a kernel with them backported)",
    },
    Feature {
        name: "cookies",
        present: cookies_supported,
        hint: "BPF attach cookies for uprobes (Linux ≥ 5.15, or a kernel with them backported)",
    },
];

/// `ALLOCWATCH_FAIL_FEATURE=NAME` makes the check of feature NAME fail, so the
/// error path can be tested on a kernel that has everything.
fn forced_missing(name: &str) -> bool {
    std::env::var("ALLOCWATCH_FAIL_FEATURE").is_ok_and(|v| v.split(',').any(|f| f == name))
}

/// The kernel features that are missing, with what to do.
#[must_use]
pub fn missing_features() -> Vec<(&'static str, &'static str)> {
    FEATURES
        .iter()
        .filter(|f| forced_missing(f.name) || !(f.present)())
        .map(|f| (f.name, f.hint))
        .collect()
}

/// Fails with an environment error (exit code 4) naming the missing
/// capabilities when this process lacks any that tracing needs.
pub fn check_privileges() -> Result<()> {
    let missing = missing_capabilities();
    if !missing.is_empty() {
        return Err(AppError::env(format!("insufficient privileges: missing {}", missing.join(", "))).hint(
            "run as root (sudo allocwatch …), or grant the binary CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN and CAP_SYS_PTRACE: \
             sudo setcap cap_bpf,cap_perfmon,cap_sys_admin,cap_sys_ptrace+ep $(which allocwatch)",
        ));
    }
    Ok(())
}

/// Fails with an environment error (exit code 4) when tracing cannot work here.
pub fn check() -> Result<()> {
    check_privileges()?;
    let missing = missing_features();
    if let Some((name, hint)) = missing.first() {
        let names: Vec<_> = missing.iter().map(|(n, _)| *n).collect();
        return Err(AppError::env(format!(
            "this kernel lacks what allocwatch needs: {}",
            names.join(", ")
        ))
        .hint(format!("{name}: {hint}")));
    }
    Ok(())
}

/// True for a file anyone may execute.
#[must_use]
pub fn executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first executable file named `name` in a directory of `PATH`, as
/// exec looks for a program.
#[must_use]
pub fn on_path(name: impl AsRef<Path>) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name.as_ref()))
        .find(|p| executable(p))
}

#[cfg(test)]
mod probe_tests {
    /// Ring buffers and attach cookies are probed in the kernel (this one,
    /// 6.x, has both); as root, as the suite runs.
    #[test]
    fn ring_buffers_and_cookies_are_probed_present() {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "run the tests as root");
        assert!(super::ringbuf_supported());
        assert!(super::cookies_supported());
    }
}
