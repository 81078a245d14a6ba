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
//!
//! Held from the first instruction: once a process that `--exe` matches
//! is traced, its executable file is armed ([`Discovery::arm`],
//! [`ExecWatch::hold`]); so is, at the start, a Go executable that an
//! `--exe` pattern names literally by its absolute path
//! ([`Patterns::literal_paths`]), and every file of a base name that a
//! pattern spells out, whole (`^api$`) or its start (`^api-`)
//! ([`Patterns::literal_names`]). A process that execs an armed file is
//! stopped by the exec notification before its first instruction; the
//! loop attaches it, then lets it go ([`Discovery::resume_held`]), so it
//! is counted from its first allocation. A held process is never kept
//! waiting past the loop's turn: also one that is not wanted, or that
//! cannot be traced, or whose PID is still traced under its old program,
//! goes on at once.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use regex::Regex;

use crate::gobin::GoBinary;
use crate::probe::execs::{self, ExeKey, ExecWatch};
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

    /// The absolute paths that a pattern names literally (`^/srv/api$`,
    /// `/srv/api`: no regular expression operator but `.`, and `\`
    /// escapes), that it matches, and that are files now.
    #[must_use]
    pub fn literal_paths(&self) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = self
            .0
            .iter()
            .filter_map(|r| {
                let p = literal(r.as_str())?.text;
                (p.starts_with('/') && r.is_match(&p) && Path::new(&p).is_file())
                    .then(|| PathBuf::from(p))
            })
            .collect();
        paths.dedup();
        paths
    }

    /// The base names, and base-name prefixes, that a pattern spells out:
    /// `^api$` (whole: true), `^api-` (whole: false); anchored at the
    /// start, no `/`, no operator but `.`.
    #[must_use]
    pub fn literal_names(&self) -> Vec<(String, bool)> {
        let mut names: Vec<(String, bool)> = self
            .0
            .iter()
            .filter_map(|r| {
                let l = literal(r.as_str())
                    .filter(|l| l.start && !l.text.is_empty() && !l.text.contains('/'))?;
                r.is_match(&l.text).then_some((l.text, l.end))
            })
            .collect();
        names.sort();
        names.dedup();
        names
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

/// A pattern with no operator but `.` (which matches itself too), anchors
/// at its ends, and escaped characters.
#[derive(Debug, PartialEq, Eq)]
struct Literal {
    /// The text it matches.
    text: String,
    /// Anchored at the start (`^`), at the end (`$`).
    start: bool,
    end: bool,
}

fn literal(pattern: &str) -> Option<Literal> {
    let start = pattern.strip_prefix('^');
    let p = start.unwrap_or(pattern);
    let end = p.strip_suffix('$').filter(|q| !q.ends_with('\\'));
    let p = end.unwrap_or(p);
    let mut out = String::with_capacity(p.len());
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let e = chars.next()?;
                if e.is_ascii_alphanumeric() {
                    // \d, \w, \b…: classes and assertions.
                    return None;
                }
                out.push(e);
            }
            '*' | '+' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '|' | '^' | '$' => {
                return None;
            }
            c => out.push(c),
        }
    }
    Some(Literal {
        text: out,
        start: start.is_some(),
        end: end.is_some(),
    })
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

/// A process to attach now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ready {
    pub pid: u32,
    /// When its exec was seen.
    pub seen: Instant,
    /// Stopped before its first instruction: traced from there.
    pub held: bool,
    /// The file it exec'd, as the kernel knows it.
    pub file: Option<ExeKey>,
}

/// An exec seen and not yet acted on.
#[derive(Clone, Copy, Debug)]
struct Pending {
    pid: u32,
    seen: Instant,
    file: Option<ExeKey>,
}

/// Where new processes come from after the start.
pub struct Discovery {
    patterns: Patterns,
    /// `--pid` targets and their start times.
    pids: Vec<(u32, Option<u64>)>,
    watch: Option<ExecWatch>,
    pending: Vec<Pending>,
    /// Processes stopped at their exec, not yet let go.
    held: Vec<u32>,
    /// Hold new processes: by name (`--exe` spelling one out), and by
    /// executable where the exec notification sees files (`--no-hold`
    /// turns both off).
    hold: bool,
    /// The executables armed.
    armed: HashSet<ExeKey>,
    /// Notes the notification lost, as last logged.
    lost: u64,
}

impl Discovery {
    #[must_use]
    pub fn new(patterns: Patterns, pids: &[u32], watch: Option<ExecWatch>) -> Discovery {
        let hold = watch.is_some();
        Discovery {
            patterns,
            pids: pids.iter().map(|&p| (p, start_time(p))).collect(),
            watch,
            pending: Vec::new(),
            held: Vec::new(),
            hold,
            armed: HashSet::new(),
            lost: 0,
        }
    }

    /// Holds no process (`--no-hold`): a process started later is traced
    /// from when it is attached, a moment after its exec.
    #[must_use]
    pub fn without_hold(mut self) -> Discovery {
        self.hold = false;
        self
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
        let notes = w.next().await;
        let seen = Instant::now();
        for n in notes {
            if n.hold_failed {
                log::warn!(
                    "PID {}: the kernel refused to stop it at its exec: what it allocates before it is attached is not counted",
                    n.pid
                );
            }
            if n.held {
                self.held.push(n.pid);
            }
            self.pending.push(Pending {
                pid: n.pid,
                seen,
                file: n.file,
            });
        }
        let lost = w.lost();
        if lost > self.lost {
            log::warn!(
                "{} execs not seen (the exec notification's ring buffer was full): processes started then are not traced",
                lost - self.lost
            );
            self.lost = lost;
        }
    }

    /// Arms the executable of `target` (the file its exec's note named,
    /// else the one `/proc/PID/exe` shows), when `--exe` matches it:
    /// processes that exec it later are held. Once per file; a failure is
    /// logged, not fatal.
    pub fn arm(&mut self, target: &crate::target::Target, file: Option<ExeKey>) {
        if self.patterns.matches(&target.exe_display) {
            let (dev, ino) = target.exe_file_id();
            let file = file.unwrap_or_else(|| execs::exe_key(dev, ino));
            self.arm_file(file, Path::new(&target.exe_display));
        }
    }

    /// Arms the Go executables that `--exe` names by their path, and the
    /// base names it spells out, so that their first process too is held
    /// (see [`Patterns::literal_paths`], [`Patterns::literal_names`]).
    pub fn arm_literals(&mut self) {
        if !self.hold {
            return;
        }
        for (name, whole) in self.patterns.literal_names() {
            let Some(w) = &mut self.watch else {
                return;
            };
            let shown = if whole {
                name.clone()
            } else {
                format!("{name}…")
            };
            match w.hold_name(&name, whole) {
                Ok(()) => {
                    log::info!("new processes named {shown} are held at their exec until traced");
                }
                Err(e) => log::warn!("{shown}: {}", e.message),
            }
        }
        for path in self.patterns.literal_paths() {
            if let Err(e) = GoBinary::open(&path) {
                log::info!(
                    "{}: its processes are not held (not a Go program allocwatch reads: {e})",
                    path.display()
                );
                continue;
            }
            if let Ok(m) = std::fs::metadata(&path) {
                use std::os::unix::fs::MetadataExt;
                self.arm_file(execs::exe_key(m.dev(), m.ino()), &path);
            }
        }
    }

    fn arm_file(&mut self, file: ExeKey, shown: &Path) {
        if !self.hold || self.armed.contains(&file) {
            return;
        }
        // Without the kernel's BTF offsets the notes name no file: only
        // names are held.
        let Some(w) = self.watch.as_mut().filter(|w| w.sees_files()) else {
            return;
        };
        match w.hold(file) {
            Ok(()) => {
                log::info!(
                    "new processes of {} are held at their exec until traced",
                    shown.display()
                );
                self.armed.insert(file);
            }
            Err(e) => log::warn!("{}: {}", shown.display(), e.message),
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

    /// The processes to attach now: the wanted execs whose PID is not
    /// traced (`traced`); those still traced wait, for at most
    /// [`PENDING_FOR`] (and a held one is let go meanwhile, by
    /// [`Discovery::resume_held`]).
    pub fn take_ready(&mut self, traced: impl Fn(u32) -> bool) -> Vec<Ready> {
        let mut ready: Vec<Ready> = Vec::new();
        let pending = std::mem::take(&mut self.pending);
        for p in pending {
            let held = self.held.contains(&p.pid);
            if ready.iter().any(|r| r.pid == p.pid) {
                continue;
            }
            if traced(p.pid) {
                if p.seen.elapsed() < PENDING_FOR {
                    self.pending.push(p);
                }
            } else if self.wanted(p.pid) {
                ready.push(Ready {
                    pid: p.pid,
                    seen: p.seen,
                    held,
                    file: p.file,
                });
            }
        }
        ready
    }

    /// Lets `pid` go now, if it is held.
    pub fn resume(&mut self, pid: u32) {
        if let Some(i) = self.held.iter().position(|&p| p == pid) {
            self.held.swap_remove(i);
            execs::resume(pid);
        }
    }

    /// Lets every held process go (attached or not).
    pub fn resume_held(&mut self) {
        for pid in self.held.drain(..) {
            execs::resume(pid);
        }
    }
}

impl Drop for Discovery {
    /// Lets go every process held, also one whose hold is still unread.
    fn drop(&mut self) {
        if let Some(w) = self.watch.take() {
            self.held
                .extend(w.stop().into_iter().filter(|n| n.held).map(|n| n.pid));
        }
        self.resume_held();
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

    fn text(pattern: &str) -> Option<String> {
        literal(pattern).map(|l| l.text)
    }

    #[test]
    fn literal_patterns_name_paths() {
        assert_eq!(text("^/srv/bin/api$").as_deref(), Some("/srv/bin/api"));
        assert_eq!(text("/srv/bin/api").as_deref(), Some("/srv/bin/api"));
        let anchors = |p| literal(p).map(|l| (l.start, l.end));
        assert_eq!(anchors("^api$"), Some((true, true)));
        assert_eq!(anchors("api-"), Some((false, false)));
        assert_eq!(anchors("^x\\$"), Some((true, false)), "an escaped $");
        // As regex::escape writes it.
        let escaped = regex::escape("/opt/my-app/api.v2");
        assert_eq!(
            text(&format!("^{escaped}$")).as_deref(),
            Some("/opt/my-app/api.v2")
        );
        // An escaped `$` at the end is part of the name.
        assert_eq!(text("^/x\\$").as_deref(), Some("/x$"));
        for operator in [
            "^/srv/.*$",
            "/srv/(a|b)",
            "api\\d",
            "/bin/ap?i",
            "[a]",
            "a{2}",
        ] {
            assert_eq!(text(operator), None, "{operator}");
        }
        // A file that exists, matched by its pattern; not a base name, not
        // a path that is not there.
        let me = std::env::current_exe().expect("own exe");
        let me = me.to_str().expect("UTF-8 path");
        let found = patterns(&[
            &format!("^{}$", regex::escape(me)),
            "^sleep$",
            "^/no/such/file$",
        ])
        .literal_paths();
        assert_eq!(found, vec![PathBuf::from(me)]);
        // Base names, whole or their start: anchored at the start, no path.
        let names = patterns(&[
            "^api$",
            "^my\\-svc\\.v2$",
            "api",
            "^api-",
            "^/srv/api$",
            "^a.*$",
        ])
        .literal_names();
        let names: Vec<(&str, bool)> = names.iter().map(|(n, w)| (n.as_str(), *w)).collect();
        assert_eq!(names, [("api", true), ("api-", false), ("my-svc.v2", true)]);
    }

    fn pending(pid: u32, seen: Instant) -> Pending {
        Pending {
            pid,
            seen,
            file: None,
        }
    }

    #[test]
    fn a_held_process_is_attached_once_or_let_go() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep");
        let pid = child.id();
        let mut d = Discovery::new(patterns(&["^sleep$"]), &[], None);
        let now = Instant::now();
        // Seen twice (two execs in a row), held: one attach, held.
        d.pending.extend([pending(pid, now), pending(pid, now)]);
        d.held.push(pid);
        let ready = d.take_ready(|_| false);
        assert_eq!(
            ready,
            vec![Ready {
                pid,
                seen: now,
                held: true,
                file: None,
            }]
        );
        // Still traced under its old program: the exec waits, the hold
        // does not outlast the turn.
        d.pending.push(pending(pid, now));
        assert!(d.take_ready(|_| true).is_empty());
        assert_eq!(d.pending.len(), 1);
        d.resume_held();
        assert!(d.held.is_empty());
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn a_pid_target_is_wanted_again_only_as_the_same_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep");
        let pid = child.id();
        let mut d = Discovery::new(Patterns::default(), &[pid], None);
        d.pending.push(pending(pid, Instant::now()));
        // Still traced: it waits.
        assert!(d.take_ready(|_| true).is_empty());
        assert_eq!(d.pending.len(), 1);
        let ready = d.take_ready(|_| false);
        assert_eq!(ready.iter().map(|r| r.pid).collect::<Vec<_>>(), vec![pid]);
        // Another process that took the PID would have another start time.
        d.pids[0].1 = d.pids[0].1.map(|t| t + 1);
        d.pending.push(pending(pid, Instant::now()));
        assert!(d.take_ready(|_| false).is_empty());
        let _ = child.kill();
        let _ = child.wait();
    }
}
