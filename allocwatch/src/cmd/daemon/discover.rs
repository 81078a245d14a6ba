//! Which processes the daemon traces, and when it looks.
//!
//! - `--exe REGEX`: every process whose executable (`/proc/PID/exe`)
//!   matches, by its full path or its base name: those running at the start
//!   (a scan of `/proc`), and every process that execs later (the exec
//!   notification, [`ExecWatch`]), looked at as soon as it has exec'd.
//! - `--pid PID`: that process; and again after each of its execs (a
//!   target that could not be traced, a wrapper that execs the Go program,
//!   a Go program that re-execs itself), while it is the same process (the
//!   same start time).
//!
//! A PID still traced when its exec is seen waits until its session has
//! noticed the exec and given the old program back.

use std::time::{Duration, Instant};

use regex::Regex;

use crate::probe::execs::ExecWatch;
use crate::target::start_time;

/// How long an exec of a PID still traced waits for its session to notice
/// (the loop looks at each target every 250 ms).
const PENDING_FOR: Duration = Duration::from_secs(5);

/// The `--exe` patterns.
#[derive(Debug, Default)]
pub struct Patterns(Vec<Regex>);

impl Patterns {
    #[must_use]
    pub fn new(patterns: Vec<Regex>) -> Patterns {
        Patterns(patterns)
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when any pattern matches `exe` (a path, as `/proc/PID/exe`
    /// reads) or its base name. The kernel's " (deleted)" suffix of an
    /// executable replaced on disk is not part of the name.
    #[must_use]
    pub fn matches(&self, exe: &str) -> bool {
        let exe = exe.strip_suffix(" (deleted)").unwrap_or(exe);
        let base = exe.rsplit('/').next().unwrap_or(exe);
        self.0.iter().any(|r| r.is_match(exe) || r.is_match(base))
    }
}

/// The executable of `pid` as it sees it (`None` for kernel threads and
/// processes that went).
#[must_use]
pub fn exe_of(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// The processes running now whose executable matches, by PID (not
/// allocwatch itself).
#[must_use]
pub fn scan(patterns: &Patterns) -> Vec<u32> {
    if patterns.is_empty() {
        return Vec::new();
    }
    let me = std::process::id();
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&pid| pid != me && exe_of(pid).is_some_and(|exe| patterns.matches(&exe)))
        .collect();
    pids.sort_unstable();
    pids
}

/// Where new processes come from after the start.
pub struct Discovery {
    patterns: Patterns,
    /// `--pid` targets and their start times.
    pids: Vec<(u32, Option<u64>)>,
    watch: Option<ExecWatch>,
    /// Execs seen and not yet acted on: PID, when seen.
    pending: Vec<(u32, Instant)>,
    /// Execs the notification lost, as last logged.
    lost: u64,
}

impl Discovery {
    #[must_use]
    pub fn new(patterns: Patterns, pids: &[u32], watch: Option<ExecWatch>) -> Discovery {
        Discovery {
            patterns,
            pids: pids.iter().map(|&p| (p, start_time(p))).collect(),
            watch,
            pending: Vec::new(),
            lost: 0,
        }
    }

    #[must_use]
    pub fn patterns(&self) -> &Patterns {
        &self.patterns
    }

    /// Waits for execs and notes them (never returns without a watch).
    /// Cancel-safe.
    pub async fn wait_execs(&mut self) {
        let Some(w) = &mut self.watch else {
            return std::future::pending().await;
        };
        let pids = w.next().await;
        let now = Instant::now();
        self.pending.extend(pids.into_iter().map(|p| (p, now)));
        let lost = w.lost();
        if lost > self.lost {
            log::warn!(
                "{} execs not seen (the exec notification's ring buffer was full): processes started then are not traced",
                lost - self.lost
            );
            self.lost = lost;
        }
    }

    /// True when allocwatch should trace `pid` (after an exec).
    fn wanted(&self, pid: u32) -> bool {
        if pid == std::process::id() {
            return false;
        }
        if let Some((_, started)) = self.pids.iter().find(|(p, _)| *p == pid) {
            return started.is_some() && *started == start_time(pid);
        }
        exe_of(pid).is_some_and(|exe| self.patterns.matches(&exe))
    }

    /// The PIDs to attach now, with when their exec was seen: the wanted
    /// execs whose PID is not traced (`traced`); those still traced wait,
    /// for at most [`PENDING_FOR`].
    pub fn take_ready(&mut self, traced: impl Fn(u32) -> bool) -> Vec<(u32, Instant)> {
        let mut ready: Vec<(u32, Instant)> = Vec::new();
        let pending = std::mem::take(&mut self.pending);
        for (pid, seen) in pending {
            if traced(pid) {
                if seen.elapsed() < PENDING_FOR {
                    self.pending.push((pid, seen));
                }
            } else if !ready.iter().any(|r| r.0 == pid) && self.wanted(pid) {
                ready.push((pid, seen));
            }
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(p: &[&str]) -> Patterns {
        Patterns::new(p.iter().map(|s| Regex::new(s).expect("regex")).collect())
    }

    #[test]
    fn full_path_or_base_name() {
        let p = patterns(&["^api$", "^/srv/"]);
        assert!(p.matches("/usr/local/bin/api"), "base name");
        assert!(p.matches("/srv/worker"), "full path");
        assert!(
            p.matches("/usr/local/bin/api (deleted)"),
            "replaced on disk"
        );
        assert!(!p.matches("/usr/local/bin/api-gateway"));
        assert!(!p.matches("/usr/bin/apt"));
        // Unanchored, as grep: anywhere in the path or the name.
        let p = patterns(&["server"]);
        assert!(p.matches("/opt/myserver/bin/run"));
        assert!(p.matches("/bin/fileserver"));
        assert!(!patterns(&[]).matches("/bin/anything"));
    }

    #[test]
    fn scan_finds_this_test_by_name_but_never_allocwatch_itself() {
        let me = exe_of(std::process::id()).expect("own exe");
        let name = me.rsplit('/').next().expect("name");
        let found = scan(&patterns(&[&format!("^{}$", regex::escape(name))]));
        // The test binary is not allocwatch, but scan skips its own PID.
        assert!(!found.contains(&std::process::id()), "{found:?}");
        assert!(scan(&patterns(&[])).is_empty());
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep");
        let found = scan(&patterns(&["^sleep$"]));
        let _ = child.kill();
        let _ = child.wait();
        assert!(found.contains(&child.id()), "{found:?}");
    }

    #[test]
    fn a_pid_target_is_wanted_again_only_as_the_same_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep");
        let pid = child.id();
        let mut d = Discovery::new(Patterns::default(), &[pid], None);
        d.pending.push((pid, Instant::now()));
        // Still traced: it waits.
        assert!(d.take_ready(|_| true).is_empty());
        assert_eq!(d.pending.len(), 1);
        let ready = d.take_ready(|_| false);
        assert_eq!(ready.iter().map(|r| r.0).collect::<Vec<_>>(), vec![pid]);
        // Another process that took the PID would have another start time.
        d.pids[0].1 = d.pids[0].1.map(|t| t + 1);
        d.pending.push((pid, Instant::now()));
        assert!(d.take_ready(|_| false).is_empty());
        let _ = child.kill();
        let _ = child.wait();
    }
}
