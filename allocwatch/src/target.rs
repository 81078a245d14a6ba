//! The traced process: finding it by PID or launching it stopped at its first
//! instruction, its executable, its load bias, and noticing when it is gone,
//! replaced by `exec`, or its PID reused.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::error::{AppError, Result};
use crate::gobin::{Arch, GoBinary};

/// Identity of a process at one moment: start time and executable inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Identity {
    start_time: u64,
    exe_dev: u64,
    exe_ino: u64,
}

/// The address space the target had when allocwatch found it, through
/// `/proc/PID/mem` opened then: the kernel ties that file to the address
/// space, so reading it fails once the process has exec'd, even when the new
/// program is the same executable (same start time, same inode).
struct AddressSpace {
    mem: std::fs::File,
    /// The start of a readable mapping (the executable's first).
    addr: u64,
}

impl AddressSpace {
    fn open(pid: u32) -> Option<AddressSpace> {
        let mem = std::fs::File::open(proc_path(pid, "mem")).ok()?;
        let maps = std::fs::read_to_string(proc_path(pid, "maps")).ok()?;
        let addr = maps.lines().find_map(|line| {
            let mut it = line.split_whitespace();
            let (range, perms) = (it.next()?, it.next()?);
            // [vvar] and [vsyscall] cannot be read through /proc/PID/mem.
            let special = it.nth(3).is_some_and(|p| p.starts_with('['));
            (perms.starts_with('r') && !special)
                .then(|| u64::from_str_radix(range.split('-').next()?, 16).ok())
                .flatten()
        })?;
        let space = AddressSpace { mem, addr };
        space.readable().then_some(space)
    }

    fn readable(&self) -> bool {
        use std::os::unix::fs::FileExt;
        let mut b = [0u8; 1];
        matches!(self.mem.read_at(&mut b, self.addr), Ok(1))
    }
}

/// A process being traced.
pub struct Target {
    pub pid: u32,
    /// A path through which this process's executable can be opened and
    /// probed from allocwatch's mount namespace (`/proc/PID/exe`).
    pub exe: PathBuf,
    /// The executable's path as the target sees it (for display).
    pub exe_display: String,
    /// The command line, for display.
    pub command: String,
    identity: Identity,
    /// `None` when `/proc/PID/mem` cannot be opened (then an exec of the
    /// same executable goes unnoticed).
    space: Option<AddressSpace>,
    /// Set when allocwatch launched the process.
    child: Option<Child>,
    /// When a launched process was first seen exiting, but not yet reapable.
    exiting_since: Option<Instant>,
    /// A launched process runs once [`Target::resume`] let it go.
    running: bool,
}

/// How long to wait for a launched process that is exiting to become
/// reapable, to report its exit status rather than just "exited".
const EXIT_STATUS_WAIT: Duration = Duration::from_secs(2);

/// How long [`Target::terminate`] waits after SIGTERM before SIGKILL.
pub const TERMINATE_GRACE: Duration = Duration::from_secs(2);

/// Why tracing ended from the target's side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gone {
    Exited(String),
    Replaced(String),
    /// allocwatch gave the target up (why): a long-running run (the
    /// daemon) that goes on with its other targets.
    Dropped(String),
}

/// Reads a little-endian word of a process's memory through `/proc/PID/mem`.
#[must_use]
pub fn read_u64(pid: u32, addr: u64) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(proc_path(pid, "mem")).ok()?;
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, addr).ok()?;
    Some(u64::from_le_bytes(b))
}

/// Writes a little-endian word into the address space behind `mem` (a
/// `/proc/PID/mem` opened for writing) and reads it back.
pub fn write_u64(mem: &std::fs::File, addr: u64, value: u64) -> std::io::Result<()> {
    write_verified(mem, addr, &value.to_le_bytes())
}

/// Writes `bytes` at `addr` through `mem` and checks that they read back.
fn write_verified(mem: &std::fs::File, addr: u64, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    mem.write_all_at(bytes, addr)?;
    let mut back = vec![0u8; bytes.len()];
    mem.read_exact_at(&mut back, addr)?;
    if back != bytes {
        return Err(std::io::Error::other(format!(
            "wrote {bytes:02x?} at {addr:#x} but read back {back:02x?}"
        )));
    }
    Ok(())
}

/// `runtime.MemProfileRate` as allocwatch set it in the target for one
/// session: set back to its old value by [`RateOverride::restore`] (at the
/// end of the session) or on drop (every other way out but `SIGKILL`).
///
/// All reads and writes go through the `/proc/PID/mem` opened when the
/// rate was set: the kernel ties it to that address space, so a process
/// that has exec'd or exited (and a process that reuses its PID) is never
/// written to.
pub struct RateOverride {
    mem: std::fs::File,
    pid: u32,
    /// Runtime address of `runtime.MemProfileRate`.
    addr: u64,
    /// The rate the program had (what is set back).
    pub old: u64,
    /// The rate allocwatch set.
    pub set: u64,
    /// Whether the linker had switched memory profiling off.
    pub linker_disabled: bool,
    restored: bool,
}

/// Opens `/proc/PID/mem` for reading and writing.
pub fn open_mem(pid: u32) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(proc_path(pid, "mem"))
}

impl RateOverride {
    /// Sets the rate at `addr` (a runtime address) to `set` through `mem`,
    /// remembering `old` as the value to set back. The write is checked by
    /// reading the word back.
    pub fn apply(
        mem: std::fs::File,
        pid: u32,
        addr: u64,
        old: u64,
        set: u64,
        linker_disabled: bool,
    ) -> std::io::Result<RateOverride> {
        write_u64(&mem, addr, set)?;
        Ok(RateOverride {
            mem,
            pid,
            addr,
            old,
            set,
            linker_disabled,
            restored: false,
        })
    }

    /// What allocwatch did, in one line (stderr, the dashboard).
    #[must_use]
    pub fn announcement(&self) -> String {
        if self.old == 0 {
            let why = if self.linker_disabled {
                ": the program never references runtime.MemProfile, so the linker switched memory profiling off"
            } else {
                ""
            };
            format!(
                "memory profiling is off in PID {} (runtime.MemProfileRate = 0{why}); allocwatch set runtime.MemProfileRate to {} for this session and sets it back to 0 when it exits",
                self.pid, self.set
            )
        } else {
            format!(
                "allocwatch set runtime.MemProfileRate of PID {} to {} (--sample-rate) for this session; it was {} and is set back when allocwatch exits",
                self.pid, self.set, self.old
            )
        }
    }

    /// Sets the old rate back, once: `None` when already done or when the
    /// process is gone (nothing to set back), else what happened. A rate
    /// the program changed itself meanwhile is left as it is.
    pub fn restore(&mut self) -> Option<String> {
        use std::os::unix::fs::FileExt;
        if std::mem::replace(&mut self.restored, true) {
            return None;
        }
        let mut b = [0u8; 8];
        // A process that has exited or exec'd reads nothing (or fails).
        self.mem.read_exact_at(&mut b, self.addr).ok()?;
        let now = u64::from_le_bytes(b);
        if now != self.set {
            return Some(format!(
                "runtime.MemProfileRate of PID {} is {now}, no longer the {} allocwatch set: left as it is",
                self.pid, self.set
            ));
        }
        Some(match write_u64(&self.mem, self.addr, self.old) {
            Ok(()) => format!(
                "runtime.MemProfileRate of PID {} set back to {}",
                self.pid, self.old
            ),
            Err(e) => format!(
                "cannot set runtime.MemProfileRate of PID {} back to {}: {e}",
                self.pid, self.old
            ),
        })
    }
}

impl Drop for RateOverride {
    fn drop(&mut self) {
        if let Some(m) = self.restore() {
            log::info!("{m}");
        }
    }
}

/// Clears the byte at `addr` (`runtime.disableMemoryProfiling`) in a
/// launched process that has not run yet, so that the runtime keeps
/// `runtime.MemProfileRate` instead of setting it to 0 at start.
pub fn clear_byte(mem: &std::fs::File, addr: u64) -> std::io::Result<()> {
    write_verified(mem, addr, &[0])
}

fn proc_path(pid: u32, what: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{what}"))
}

/// When `pid` started (field 22 of `/proc/PID/stat`, in clock ticks since
/// boot): an exec keeps it, another process that takes the PID has another.
#[must_use]
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(proc_path(pid, "stat")).ok()?;
    // The command (field 2) may contain spaces and ')'.
    stat[stat.rfind(')')? + 2..]
        .split(' ')
        .nth(19)?
        .parse()
        .ok()
}

fn read_identity(pid: u32) -> Option<Identity> {
    let start_time = start_time(pid)?;
    let meta = std::fs::metadata(proc_path(pid, "exe")).ok()?;
    Some(Identity {
        start_time,
        exe_dev: meta.dev(),
        exe_ino: meta.ino(),
    })
}

/// True when PID has an address space now: a fresh `/proc/PID/mem` of a
/// process that released its memory (exiting) reads nothing (end of file),
/// while any live address space answers with a byte or an error for an
/// unmapped address.
fn has_address_space(pid: u32) -> bool {
    use std::os::unix::fs::FileExt;
    let Ok(mem) = std::fs::File::open(proc_path(pid, "mem")) else {
        return false;
    };
    let maps = std::fs::read_to_string(proc_path(pid, "maps")).unwrap_or_default();
    let addr = maps
        .lines()
        .find_map(|l| u64::from_str_radix(l.split('-').next()?, 16).ok())
        .unwrap_or(0x1000);
    !matches!(mem.read_at(&mut [0u8; 1], addr), Ok(0))
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(proc_path(pid, "stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .unwrap_or(true)
}

impl Target {
    /// A running process.
    pub fn from_pid(pid: u32) -> Result<Target> {
        if pid == 0 || !proc_path(pid, "stat").exists() {
            return Err(AppError::target(format!("no process with PID {pid}"))
                .hint("check the PID with `pgrep -a NAME` or `ps -e`"));
        }
        let exe = proc_path(pid, "exe");
        let exe_display = match std::fs::read_link(&exe) {
            Ok(p) => p.to_string_lossy().into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                // Most often: not root. Say which capabilities are missing.
                crate::envcheck::check_privileges()?;
                return Err(AppError::env(format!("cannot read the executable of PID {pid}: permission denied"))
                    .hint("run allocwatch as root, or with CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN and CAP_SYS_PTRACE"));
            }
            Err(_) => {
                return Err(AppError::target(format!(
                    "PID {pid} has no executable to read (a kernel thread, or it just exited)"
                )));
            }
        };
        let identity = read_identity(pid).ok_or_else(|| {
            AppError::target(format!(
                "PID {pid} exited while allocwatch was looking at it"
            ))
        })?;
        let command = std::fs::read(proc_path(pid, "cmdline"))
            .map(|b| {
                b.split(|&c| c == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        Ok(Target {
            pid,
            exe,
            exe_display,
            command,
            identity,
            space: AddressSpace::open(pid),
            child: None,
            exiting_since: None,
            running: true,
        })
    }

    /// Launches `argv`, stopped right after `execve` (before its first
    /// instruction) so that probes can be attached first. Call
    /// [`Target::resume`] once they are.
    pub fn launch(argv: &[OsString]) -> Result<Target> {
        let Some(program) = argv.first() else {
            return Err(AppError::usage("no program given after `--`"));
        };
        // A program of another architecture: exec would refuse it, and
        // the C library then runs it as a shell script.
        let file = if program.as_encoded_bytes().contains(&b'/') {
            Some(PathBuf::from(program))
        } else {
            crate::envcheck::on_path(program)
        };
        if let Some(arch) = file
            .and_then(|f| GoBinary::arch_of_file(&f))
            .filter(|&a| a != Arch::HOST)
        {
            return Err(AppError::target(format!(
                "cannot start {}: it is a linux/{} program and this machine runs linux/{} ones",
                program.to_string_lossy(),
                arch.name(),
                Arch::HOST.name()
            ))
            .hint(format!(
                "trace it on a linux/{} machine, with allocwatch built for it (README: arm64)",
                arch.name()
            )));
        }
        let mut cmd = Command::new(program);
        cmd.args(&argv[1..]);
        // SAFETY: ptrace(PTRACE_TRACEME) is async-signal-safe; after execve
        // the kernel stops the child with SIGTRAP until the parent detaches.
        unsafe {
            cmd.pre_exec(|| {
                if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| {
            AppError::target(format!("cannot start {}: {e}", program.to_string_lossy()))
        })?;
        let pid = child.id();
        let mut status = 0;
        // SAFETY: waitpid on our own child.
        let r = unsafe { libc::waitpid(pid as i32, &raw mut status, 0) };
        if r != pid as i32 || !libc::WIFSTOPPED(status) {
            return Err(AppError::target(format!(
                "{} did not start (it exited before its first instruction)",
                program.to_string_lossy()
            )));
        }
        let mut t = Target::from_pid(pid)?;
        t.child = Some(child);
        t.running = false;
        Ok(t)
    }

    /// Lets a launched target run (a no-op for targets found by PID).
    pub fn resume(&mut self) -> Result<()> {
        if self.child.is_some() {
            // SAFETY: detaching from our own stopped tracee; it continues with no signal.
            let r = unsafe { libc::ptrace(libc::PTRACE_DETACH, self.pid as i32, 0, 0) };
            if r == -1 {
                return Err(AppError::other(format!(
                    "cannot resume the launched program: {}",
                    std::io::Error::last_os_error()
                )));
            }
            self.running = true;
        }
        Ok(())
    }

    /// Stops a process allocwatch launched and reaps it (no zombie left
    /// behind); a no-op for a target found by PID. One that never ran
    /// (setup failed; it is still stopped before its first instruction) is
    /// killed; one that runs gets SIGTERM, and SIGKILL if it has not exited
    /// after [`TERMINATE_GRACE`].
    pub fn terminate(&mut self) {
        let Some(child) = &mut self.child else {
            return;
        };
        if self.running && matches!(child.try_wait(), Ok(None)) {
            // SAFETY: kill(2) on the PID of our own child, not reaped yet.
            unsafe { libc::kill(self.pid.cast_signed(), libc::SIGTERM) };
            let start = Instant::now();
            while start.elapsed() < TERMINATE_GRACE {
                if !matches!(child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The executable's device and inode, as when the target was found.
    #[must_use]
    pub fn exe_file_id(&self) -> (u64, u64) {
        (self.identity.exe_dev, self.identity.exe_ino)
    }

    /// True when allocwatch launched the target.
    #[must_use]
    pub fn launched(&self) -> bool {
        self.child.is_some()
    }

    /// Checks that the process is still the one being traced.
    pub fn check(&mut self) -> Option<Gone> {
        if let Some(child) = &mut self.child {
            match child.try_wait() {
                Ok(Some(status)) => return Some(Gone::Exited(describe_status(status))),
                Ok(None) => {}
                Err(e) => return Some(Gone::Exited(format!("cannot wait for it: {e}"))),
            }
        }
        match read_identity(self.pid) {
            // Our own child cannot be reaped (nor its PID reused) behind our
            // back: while it is between releasing its memory (no more
            // /proc/PID/exe) and becoming a zombie, wait for its status.
            None if self.child.is_some() => {
                let since = *self.exiting_since.get_or_insert_with(Instant::now);
                (since.elapsed() > EXIT_STATUS_WAIT).then(|| Gone::Exited("exited".into()))
            }
            None => Some(Gone::Exited("exited".into())),
            Some(_) if self.child.is_none() && is_zombie(self.pid) => {
                Some(Gone::Exited("exited".into()))
            }
            Some(id) => match compare(&self.identity, &id) {
                None if self.space.as_ref().is_some_and(|s| !s.readable()) => {
                    // The address space it had is gone: it exec'd (a new one
                    // is in place) or it is exiting (none is: undecided until
                    // a later check sees it exited).
                    match read_identity(self.pid) {
                        Some(_) if !is_zombie(self.pid) && has_address_space(self.pid) => {
                            Some(Gone::Replaced(
                                "replaced itself with a new run of the same executable (exec)"
                                    .into(),
                            ))
                        }
                        Some(_) if !is_zombie(self.pid) => None,
                        _ if self.child.is_some() => None,
                        _ => Some(Gone::Exited("exited".into())),
                    }
                }
                gone => gone,
            },
        }
    }

    /// The load bias of the executable: runtime address − file vaddr, from
    /// `/proc/PID/maps` (0 for non-PIE executables).
    pub fn load_bias(&self, first_load_vaddr: u64) -> Result<u64> {
        let maps = std::fs::read_to_string(proc_path(self.pid, "maps")).map_err(|e| {
            AppError::target(format!(
                "cannot read the memory map of PID {}: {e}",
                self.pid
            ))
        })?;
        let exe_path = std::fs::read_link(proc_path(self.pid, "exe")).ok();
        let start = exe_mapping(
            &maps,
            self.identity.exe_dev,
            self.identity.exe_ino,
            exe_path.as_deref(),
        )
        .ok_or_else(|| {
            AppError::target(format!(
                "the executable of PID {} is not mapped in its memory",
                self.pid
            ))
        })?;
        Ok(start.wrapping_sub(first_load_vaddr & !0xfff))
    }
}

/// The start of the executable's mapping at file offset 0 in `maps`
/// (`/proc/PID/maps`): the one of its device and inode; else (an overlay
/// filesystem shows the underlying file's device there) the one of its
/// inode whose path is the executable's.
fn exe_mapping(maps: &str, dev: u64, ino: u64, path: Option<&Path>) -> Option<u64> {
    let want_dev = format!("{:02x}:{:02x}", libc::major(dev), libc::minor(dev));
    let mut same_ino_and_path = None;
    for line in maps.lines() {
        let mut it = line.split_whitespace();
        let (Some(range), Some(_perms), Some(offset), Some(map_dev), Some(inode)) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            continue;
        };
        if inode.parse::<u64>().ok() != Some(ino) || u64::from_str_radix(offset, 16).ok() != Some(0)
        {
            continue;
        }
        let start = range
            .split('-')
            .next()
            .and_then(|s| u64::from_str_radix(s, 16).ok())?;
        if map_dev == want_dev {
            return Some(start);
        }
        let map_path = it.collect::<Vec<_>>().join(" ");
        if same_ino_and_path.is_none() && path.is_some_and(|p| p.as_os_str() == map_path.as_str()) {
            same_ino_and_path = Some(start);
        }
    }
    same_ino_and_path
}

/// What became of the process allocwatch identified as `was`, now that the
/// PID shows `now`: a different start time is another process (the PID was
/// reused); the same start time with another executable is the same process
/// after an exec.
fn compare(was: &Identity, now: &Identity) -> Option<Gone> {
    if now.start_time != was.start_time {
        Some(Gone::Exited(
            "exited, and its PID now belongs to another process".into(),
        ))
    } else if now != was {
        Some(Gone::Replaced(
            "replaced itself with another program (exec)".into(),
        ))
    } else {
        None
    }
}

fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "exited".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_executable_mapping_is_found_by_device_and_inode() {
        let dev = libc::makedev(0xfd, 0x01);
        let maps = "\
55d0c0000000-55d0c0400000 r--p 00000000 08:02 1234 /mnt/other/lib.so
55d0c1000000-55d0c1400000 r--p 00000000 fd:01 1234 /srv/app
55d0c1400000-55d0c1800000 r-xp 00400000 fd:01 1234 /srv/app
";
        // Same inode on another device first: not it.
        assert_eq!(exe_mapping(maps, dev, 1234, None), Some(0x55d0_c100_0000));
        assert_eq!(exe_mapping(maps, dev, 99, None), None);
        // An overlay filesystem: the device differs, the inode and path match.
        let overlay = libc::makedev(0, 0x2a);
        assert_eq!(
            exe_mapping(maps, overlay, 1234, Some(Path::new("/srv/app"))),
            Some(0x55d0_c100_0000)
        );
        assert_eq!(
            exe_mapping(maps, overlay, 1234, Some(Path::new("/srv/elsewhere"))),
            None
        );
        assert_eq!(exe_mapping(maps, overlay, 1234, None), None);
    }

    const ID: Identity = Identity {
        start_time: 123_456,
        exe_dev: 0x803,
        exe_ino: 42,
    };

    #[test]
    fn a_live_process_has_an_address_space_and_a_zombie_none() {
        assert!(has_address_space(std::process::id()));
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_zombie(child.id()) {
            assert!(Instant::now() < deadline, "`true` did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!has_address_space(child.id()));
        child.wait().expect("reap");
    }

    #[test]
    fn same_process_same_program() {
        assert_eq!(compare(&ID, &ID), None);
    }

    #[test]
    fn reused_pid_is_another_process() {
        // Another process, even of the same executable.
        for now in [
            Identity {
                start_time: 123_457,
                ..ID
            },
            Identity {
                start_time: 99,
                exe_ino: 7,
                ..ID
            },
        ] {
            assert!(
                matches!(compare(&ID, &now), Some(Gone::Exited(m)) if m.contains("another process")),
                "{now:?}"
            );
        }
    }

    #[test]
    fn exec_is_a_replacement() {
        for now in [
            Identity { exe_ino: 43, ..ID },
            Identity {
                exe_dev: 0x804,
                ..ID
            },
        ] {
            assert!(
                matches!(compare(&ID, &now), Some(Gone::Replaced(m)) if m.contains("exec")),
                "{now:?}"
            );
        }
    }

    #[test]
    fn own_process_is_itself() {
        let pid = std::process::id();
        let mut t = Target::from_pid(pid).expect("own process");
        assert!(t.space.as_ref().is_some_and(AddressSpace::readable));
        assert_eq!(t.check(), None);
        assert_eq!(read_identity(pid), Some(t.identity));
    }
}
