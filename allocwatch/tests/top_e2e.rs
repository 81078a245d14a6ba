//! `allocwatch top` end to end: the real dashboard in a real terminal (tmux),
//! on real Go programs, driven with real key presses.
//!
//! Each test starts its own tmux server on a dedicated socket
//! (`tmux -L allocwatch-test-<pid>-<n>`, no user configuration) with one
//! 120×40 session running `sh -c 'allocwatch top …; echo "EXIT=$?"; …'`, reads
//! the screen with `capture-pane -p` and types with `send-keys`. Every wait
//! polls the screen up to a timeout; the server is killed when the test ends,
//! also on failure.

mod support;

use support::allocwatch;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use support::{
    Variant, build_go, fixture, is_root, probe_sites, read_probed, read_word, toolchain,
};

/// How long after `q` the shell may take to be back. Generous on purpose,
/// as the machine may be busy: it takes ~0.1–0.2 s, where it took 2–4 s
/// when the kernel released one perf-event link per probe (19 here) one
/// after another (docs/benchmarks.md). Speed itself is measured by
/// `cargo xtask bench`.
const SHELL_BACK_AFTER_Q: Duration = Duration::from_secs(1);

const TIMEOUT: Duration = Duration::from_secs(20);
const SITES_HEADER: &str =
    "window_start_s,window_end_s,function,file,line,type,allocs,bytes,allocs_per_s,bytes_per_s";

/// Why the test cannot run here, if it cannot.
fn skip_reason() -> Option<&'static str> {
    if !is_root() {
        return Some("needs root to load eBPF programs");
    }
    let tmux = Command::new("tmux").arg("-V").output();
    if !tmux.is_ok_and(|o| o.status.success()) {
        return Some("tmux is not installed (cargo xtask setup installs it)");
    }
    None
}

macro_rules! skip_unless_ready {
    () => {
        if let Some(why) = skip_reason() {
            support::skip(why);
            return;
        }
    };
}

/// A shell word: `'…'`, with embedded quotes escaped.
fn sq(s: impl AsRef<std::ffi::OsStr>) -> String {
    let s = s.as_ref().to_string_lossy();
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A tmux server of our own with one session; killed on drop.
struct Tmux {
    socket: String,
    /// The socket file, removed with the server.
    socket_path: Option<PathBuf>,
}

const SESSION: &str = "aw";

impl Tmux {
    /// Starts `script` (POSIX sh) in a detached 120×40 session.
    fn start(script: &str) -> Tmux {
        static N: AtomicU32 = AtomicU32::new(0);
        let socket = format!(
            "allocwatch-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut t = Tmux {
            socket,
            socket_path: None,
        };
        let out = t
            .cmd()
            .args(["new-session", "-d", "-x", "120", "-y", "40", "-s", SESSION])
            .args(["--", "sh", "-c", script])
            .output()
            .expect("run tmux");
        assert!(
            out.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t.socket_path = Some(PathBuf::from(t.display("#{socket_path}")));
        t
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket, "-f", "/dev/null"])
            .env("TERM", "xterm-256color")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().expect("run tmux");
        assert!(
            out.status.success(),
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The visible screen.
    fn capture(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", SESSION])
    }

    /// A tmux format of the pane, e.g. `#{alternate_on}`.
    fn display(&self, format: &str) -> String {
        self.run(&["display-message", "-p", "-t", SESSION, format])
            .trim()
            .to_owned()
    }

    /// Named keys (`Tab`, `Enter`, …).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", SESSION];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Literal text, one key per character.
    fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", SESSION, "-l", text]);
    }

    /// The screen once a whole frame is on it: two captures in a row, a
    /// moment apart, are the same (a capture can catch a frame half drawn).
    fn capture_stable(&self) -> String {
        let start = Instant::now();
        let mut last = self.capture();
        loop {
            std::thread::sleep(Duration::from_millis(150));
            let now = self.capture();
            if now == last || start.elapsed() > TIMEOUT {
                return now;
            }
            last = now;
        }
    }

    /// Polls the screen until `ok` holds; panics with the last screen after
    /// [`TIMEOUT`].
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.capture();
            if ok(&screen) {
                return screen;
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "timed out after {TIMEOUT:?} waiting for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Tmux {
    /// The processes running in the pane: the shell and its descendants.
    fn pane_processes(&self) -> Vec<u32> {
        // Not `display`: this runs in `drop`, also after the server is gone.
        let out = self
            .cmd()
            .args(["display-message", "-p", "-t", SESSION, "#{pane_pid}"])
            .output();
        let Some(shell) = out.ok().and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<u32>()
                .ok()
        }) else {
            return Vec::new();
        };
        let mut found = vec![shell];
        let mut i = 0;
        while i < found.len() {
            found.extend(children(found[i]));
            i += 1;
        }
        found
    }
}

/// PIDs whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|stat| {
                // pid (comm) state ppid …; comm may hold spaces.
                stat.rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().nth(1))
                    .and_then(|pp| pp.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}

/// Whether `pid` is gone (or a zombie nobody reaped yet).
fn gone(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|s| s.split_whitespace().next());
    matches!(state, None | Some("Z" | "X"))
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let left = self.pane_processes();
        let _ = self.cmd().arg("kill-server").output();
        if let Some(p) = &self.socket_path {
            let _ = std::fs::remove_file(p);
        }
        // Closing the terminal ends everything in it (see
        // `closing_the_terminal_ends_top`); whatever a failed test left
        // behind is killed.
        let start = Instant::now();
        while !left.iter().all(|&p| gone(p)) && start.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(50));
        }
        for &p in &left {
            if !gone(p) {
                // SAFETY: kill(2) on a process this test started in its pane.
                unsafe { kill(p.cast_signed(), 9) };
            }
        }
    }
}

/// A child process killed (SIGTERM, then SIGKILL) and reaped on drop.
struct Proc(Child);

impl Proc {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { kill(self.0.id().cast_signed(), 15) };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(3) {
                if !matches!(self.0.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// The lines of the table on screen: those after the header line starting
/// with `header`, up to the first empty line.
fn table_rows<'a>(screen: &'a str, header: &str) -> Vec<&'a str> {
    screen
        .lines()
        .skip_while(|l| !l.starts_with(header))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect()
}

/// Whether the header shows rates (two snapshots arrived).
fn rates_known(screen: &str) -> bool {
    screen
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(1))
        .is_some_and(|r| r != "-")
}

fn first_word(row: &str) -> &str {
    row.split_whitespace().next().unwrap_or("")
}

/// The `allocwatch top …` part of the tmux script, run in `dir`.
fn top_script(dir: &Path, args: &str) -> String {
    format!(
        "cd {dir} && {aw} top --refresh 250ms --export-dir {dir} --log-file {log} {args}; \
         echo \"EXIT=$?\"; \
         echo \"TTY: $(stty -a | tr ' ;' '\\n\\n' | grep -x -E -e '-?(icanon|echo)' | tr '\\n' ' ')\"; \
         exec sleep 600",
        dir = sq(dir),
        aw = sq(allocwatch()),
        log = sq(dir.join("log")),
    )
}

/// Presses `q` and checks the dashboard exits with status 0 and gives the
/// terminal back: main screen, canonical mode with echo, cursor shown.
fn quit_and_check_restored(tmux: &Tmux) -> String {
    tmux.type_text("q");
    check_restored(tmux)
}

/// After quitting: top exited with status 0 and gave the terminal back.
fn check_restored(tmux: &Tmux) -> String {
    let screen = tmux.wait_for("the shell's output after quitting", |s| {
        s.contains("EXIT=") && s.contains("TTY: ")
    });
    assert!(
        screen.lines().any(|l| l.trim() == "EXIT=0"),
        "top did not exit with status 0:\n{screen}"
    );
    assert_eq!(
        tmux.display("#{alternate_on}"),
        "0",
        "still on the alternate screen:\n{screen}"
    );
    let tty = screen
        .lines()
        .find_map(|l| l.strip_prefix("TTY: "))
        .unwrap_or_default();
    assert_eq!(
        tty.split_whitespace().collect::<Vec<_>>(),
        ["icanon", "echo"],
        "the terminal is still in raw mode after quitting:\n{screen}"
    );
    assert_eq!(
        tmux.display("#{cursor_flag}"),
        "1",
        "the cursor is still hidden"
    );
    assert!(
        !screen.contains("allocwatch pid"),
        "the dashboard is still on screen after quitting:\n{screen}"
    );
    screen
}

/// The sites CSVs `e` wrote into `dir`, waiting for the first.
fn wait_for_export(dir: &Path, what: &str) -> Vec<PathBuf> {
    let start = Instant::now();
    loop {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("read export dir")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.starts_with(&format!("allocwatch-{what}-")) && n.ends_with(".csv")
                })
            })
            .collect();
        if !found.is_empty() {
            found.sort();
            return found;
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "no allocwatch-{what}-*.csv appeared in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[derive(Debug, serde::Deserialize)]
struct SiteRow {
    window_start_s: f64,
    window_end_s: f64,
    function: String,
    file: String,
    line: u32,
    #[serde(rename = "type")]
    type_name: String,
    allocs: u64,
    bytes: u64,
    allocs_per_s: f64,
    bytes_per_s: f64,
}

/// Reads an exported sites CSV, checking its header.
fn read_sites_csv(path: &Path) -> Vec<SiteRow> {
    let mut r =
        csv::Reader::from_path(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let header: Vec<String> = r
        .headers()
        .expect("csv header")
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        header.join(","),
        SITES_HEADER,
        "header of {}",
        path.display()
    );
    r.deserialize()
        .map(|row| row.unwrap_or_else(|e| panic!("bad row in {}: {e}", path.display())))
        .collect()
}

/// Reads lines of a fixture's stdout until one starts with `prefix`.
fn read_line_starting(out: &mut BufReader<ChildStdout>, prefix: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        let n = out.read_line(&mut line).expect("read fixture stdout");
        assert!(n > 0, "the fixture ended without printing `{prefix}…`");
        if let Some(rest) = line.trim_end().strip_prefix(prefix) {
            return rest.to_owned();
        }
    }
}

/// The demo service (Go 1.27) under `top --pid`: its hottest function on the
/// call sites view, its pools and hit ratios on the pools view, filtering,
/// exporting, quitting.
#[test]
fn dashboard_on_the_demo_service() {
    skip_unless_ready!();
    let demo = build_go(&toolchain("1.27.3"), "demo", Variant::Default);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(&demo)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the demo");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let demo_proc = Proc(child);
    read_line_starting(&mut out, "demo listening on ");

    let pid = demo_proc.pid();
    let tmux = Tmux::start(&top_script(dir.path(), &format!("--pid {pid}")));

    // The hottest function (by bytes/s, the default sort): main.newScratch,
    // which allocates a 4 KiB slice on every Get of the badly used scratchPool.
    let screen = tmux.wait_for(
        "main.newScratch on top of the call sites, with rates",
        |s| {
            rates_known(s)
                && table_rows(s, "Function")
                    .first()
                    .is_some_and(|r| first_word(r) == "main.newScratch")
        },
    );
    let header = screen.lines().next().unwrap_or_default();
    assert!(
        header.contains(&format!("allocwatch pid {pid}"))
            && header.contains("go1.27.3")
            && header.contains(&*demo.file_name().unwrap().to_string_lossy()),
        "header: {header}"
    );
    assert!(screen.contains("lost 0"), "events lost:\n{screen}");
    let row = table_rows(&screen, "Function")[0];
    assert!(
        row.contains("demo/main.go:") && row.contains("[]uint8"),
        "row of main.newScratch: {row}"
    );

    // Tab: the pools view, with the demo's two pools and their hit ratios:
    // bufPool (Get, Reset, Put) hits, scratchPool (Get, never Put) misses.
    // Ratios are cumulative: polled, as the first moments can be off by the
    // few Gets in flight while the probes attach.
    tmux.keys(&["Tab"]);
    let hit = |rows: &[&str], pool: &str| -> Option<f64> {
        let row = rows.iter().find(|r| first_word(r) == pool)?;
        let cells: Vec<&str> = row.split_whitespace().collect();
        // Pool, New, Gets/s, Hit, Miss/s, Puts/s, Not put, Miss allocs,
        // Miss bytes, Callers
        assert_eq!(cells.len(), 10, "pool row: {row}");
        // Gets/s is known once two snapshots arrived.
        if cells[2] == "-" {
            return None;
        }
        Some(
            cells[3]
                .parse()
                .unwrap_or_else(|_| panic!("hit ratio of {pool}: {row}")),
        )
    };
    let screen = tmux.wait_for(
        "main.bufPool with hit ratio ≥ 0.95 and main.scratchPool with ≤ 0.01",
        |s| {
            let rows = table_rows(s, "Pool ");
            hit(&rows, "main.bufPool").is_some_and(|r| r >= 0.95)
                && hit(&rows, "main.scratchPool").is_some_and(|r| r <= 0.01)
        },
    );
    let rows = table_rows(&screen, "Pool ");
    // A pool's New is learned from a miss seen since attaching: scratchPool
    // misses all the time (bufPool's few misses happened before).
    let scratch = rows
        .iter()
        .find(|r| first_word(r) == "main.scratchPool")
        .expect("scratchPool row");
    assert_eq!(
        scratch.split_whitespace().nth(1),
        Some("main.newScratch"),
        "New of scratchPool: {scratch}"
    );

    // Back to the sites; `/newScratch` Enter keeps only that function.
    tmux.keys(&["Tab"]);
    let before = tmux.wait_for("the call sites again", |s| {
        table_rows(s, "Function").len() > 5
    });
    let rows = table_rows(&before, "Function");
    let gone = rows
        .iter()
        .map(|r| first_word(r))
        .find(|f| !f.to_lowercase().contains("newscratch"))
        .expect("a row that does not match")
        .to_owned();
    tmux.type_text("/newScratch");
    tmux.keys(&["Enter"]);
    let after = tmux.wait_for("the filter to apply", |s| {
        s.contains("filter \"newScratch\"")
    });
    let rows = table_rows(&after, "Function");
    assert!(
        rows.iter().any(|r| first_word(r) == "main.newScratch"),
        "main.newScratch is gone after filtering:\n{after}"
    );
    assert!(
        rows.iter().all(|r| first_word(r) != gone),
        "{gone} is still there after filtering for newScratch:\n{after}"
    );
    assert!(
        rows.iter().all(|r| first_word(r).contains("newScratch")),
        "rows not matching the filter:\n{after}"
    );

    // `e`: the filtered view to allocwatch-sites-<time>.csv in --export-dir.
    tmux.type_text("e");
    let written = wait_for_export(dir.path(), "sites");
    let screen = tmux.wait_for("the export's status line", |s| s.contains("wrote "));
    assert!(screen.contains("sites to "), "status line:\n{screen}");
    let sites = read_sites_csv(&written[0]);
    assert!(!sites.is_empty(), "no rows in {}", written[0].display());
    for s in &sites {
        // main.newScratch allocates a main.scratch and its 4 KiB buffer.
        assert_eq!(
            s.function, "main.newScratch",
            "the export ignores the filter: {s:?}"
        );
        assert!(s.file.ends_with("demo/main.go") && s.line > 0, "{s:?}");
        assert!(s.allocs > 0 && s.window_end_s > s.window_start_s, "{s:?}");
        assert!(s.allocs_per_s > 0.0 && s.bytes_per_s > 0.0, "{s:?}");
    }
    let buf = sites
        .iter()
        .find(|s| s.type_name == "[]uint8")
        .unwrap_or_else(|| panic!("no []uint8 row of main.newScratch: {sites:?}"));
    assert_eq!(buf.bytes, buf.allocs * 4096, "{buf:?}");

    quit_and_check_restored(&tmux);
    assert!(
        std::fs::metadata(dir.path().join("log")).is_ok(),
        "--log-file was not created"
    );
    // The demo was only watched: it is still running.
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "quitting the dashboard stopped the traced program"
    );
}

#[derive(Debug, serde::Deserialize)]
struct SpinResult {
    n: u64,
    stopped_by: String,
}

/// The target exits while the dashboard runs: the banner says so, and the
/// numbers stay (exactly what the target did, still on screen and exported).
#[test]
fn target_exit_keeps_the_numbers() {
    skip_unless_ready!();
    const N: u64 = 300_000;
    let spin = fixture(&toolchain("1.27.3"), "spin", Variant::Default);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(&spin)
        .env("ALLOCWATCH_WAIT", "1")
        .env("ALLOCWATCH_N", N.to_string())
        .env("GOMAXPROCS", "1")
        .env("GOGC", "off")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start spin");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut proc_ = Proc(child);
    let pid = proc_.pid();
    assert_eq!(read_line_starting(&mut out, "ready "), pid.to_string());

    let tmux = Tmux::start(&top_script(dir.path(), &format!("--pid {pid}")));
    // The dashboard is up once the probes are attached.
    tmux.wait_for("the dashboard", |s| {
        s.contains(&format!("allocwatch pid {pid}"))
    });
    stdin.write_all(b"\n").expect("start the workload");
    drop(stdin);
    tmux.wait_for("main.spinAlloc while it runs", |s| {
        table_rows(s, "Function")
            .iter()
            .any(|r| first_word(r) == "main.spinAlloc")
    });
    let result: SpinResult =
        serde_json::from_str(&read_line_starting(&mut out, "result ")).expect("result JSON");
    assert_eq!((result.n, result.stopped_by.as_str()), (N, "limit"));

    // Not reaped yet: a zombie counts as exited.
    tmux.wait_for("the target exited banner", |s| s.contains("target exited"));
    let screen = tmux.capture_stable();
    assert!(
        screen.contains(&format!("target exited: pid {pid} exited")),
        "banner:\n{screen}"
    );
    let _ = proc_.0.wait();
    let spin_row = |s: &str| -> String {
        table_rows(s, "Function")
            .into_iter()
            .find(|r| first_word(r) == "main.spinAlloc")
            .unwrap_or_else(|| panic!("main.spinAlloc is gone after the exit:\n{s}"))
            .to_owned()
    };
    let row = spin_row(&screen);
    assert!(
        row.split_whitespace().any(|c| c == "300k"),
        "allocs of main.spinAlloc: {row}"
    );
    // Frozen: the same table a few refreshes later.
    std::thread::sleep(Duration::from_secs(1));
    let later = tmux.capture();
    assert_eq!(
        table_rows(&later, "Function"),
        table_rows(&screen, "Function"),
        "the numbers changed after the target exited"
    );
    assert!(later.contains("target exited"), "banner gone:\n{later}");

    // Exported after the exit: exactly what the target did.
    tmux.type_text("e");
    let written = wait_for_export(dir.path(), "sites");
    let sites = read_sites_csv(&written[0]);
    let allocs: u64 = sites
        .iter()
        .filter(|s| s.function == "main.spinAlloc")
        .map(|s| s.allocs)
        .sum();
    assert_eq!(allocs, N, "main.spinAlloc allocations in the export");

    quit_and_check_restored(&tmux);
}

/// The allocwatch process running in the pane.
fn allocwatch_in_pane(tmux: &Tmux) -> u32 {
    let top: Vec<u32> = tmux
        .pane_processes()
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim() == "allocwatch")
        })
        .collect();
    assert_eq!(top.len(), 1, "allocwatch in the pane: {top:?}");
    top[0]
}

/// Presses `q` and returns how long the shell took to print top's exit
/// status.
fn quit_timed(tmux: &Tmux) -> Duration {
    let pressed = Instant::now();
    tmux.type_text("q");
    while !tmux.capture().contains("EXIT=") {
        assert!(pressed.elapsed() < TIMEOUT, "no EXIT= after q");
        std::thread::sleep(Duration::from_millis(5));
    }
    pressed.elapsed()
}

/// Go 1.27's spin, allocating for up to 2 minutes, untraced (killed on drop).
fn running_spin() -> (PathBuf, Proc) {
    let spin = fixture(&toolchain("1.27.3"), "spin", Variant::Default);
    let target = Proc(
        Command::new(&spin)
            .env("ALLOCWATCH_SECONDS", "120")
            .env("GOMAXPROCS", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start spin"),
    );
    (spin, target)
}

/// Waits for spin's site on the dashboard.
fn wait_for_spin(tmux: &Tmux) {
    tmux.wait_for("main.spinAlloc", |s| {
        table_rows(s, "Function")
            .iter()
            .any(|r| first_word(r) == "main.spinAlloc")
    });
}

/// `q` gives the shell back at once: the terminal is restored, allocwatch
/// has exited, and every probe is gone from the target, which runs on
/// (the probed instructions read back as the file's bytes through
/// /proc/PID/mem, `0xcc` while traced).
#[test]
fn quit_is_instant_and_releases_the_target() {
    skip_unless_ready!();
    let (spin, target) = running_spin();
    let dir = tempfile::tempdir().expect("tempdir");
    let pid = target.pid();
    let sites = probe_sites(&spin);
    std::thread::sleep(Duration::from_millis(200));
    for (f, now, file) in read_probed(pid, &sites) {
        assert_eq!(now, file, "{f} differs before tracing");
    }
    let tmux = Tmux::start(&top_script(dir.path(), &format!("--pid {pid}")));
    wait_for_spin(&tmux);
    let during = read_probed(pid, &sites);
    assert!(
        during.iter().all(|(_, now, _)| *now == 0xcc),
        "probed instructions while traced: {during:x?}"
    );
    let top = allocwatch_in_pane(&tmux);

    let took = quit_timed(&tmux);
    // The shell printed top's status: top has exited and was reaped.
    assert!(gone(top), "allocwatch (PID {top}) still there after EXIT=");
    let after = read_probed(pid, &sites);
    check_restored(&tmux);
    eprintln!("q → shell back: {took:?}");
    for (f, now, file) in &after {
        assert_eq!(now, file, "{f} still probed after top exited: {after:x?}");
    }
    assert!(
        took < SHELL_BACK_AFTER_Q,
        "the shell was back {took:?} after q"
    );
    assert!(!gone(pid), "the traced program died with the dashboard");
}

/// `top -- PROGRAM`: launches the program, shows it, and stops it on quit.
#[test]
fn top_launches_a_program() {
    skip_unless_ready!();
    let spin = fixture(&toolchain("1.27.3"), "spin", Variant::Default);
    let dir = tempfile::tempdir().expect("tempdir");
    let script = format!(
        "export ALLOCWATCH_SECONDS=60 GOMAXPROCS=1 GOGC=off; {}",
        top_script(dir.path(), &format!("-- {}", sq(&spin)))
    );
    let tmux = Tmux::start(&script);
    let screen = tmux.wait_for("main.spinAlloc at the top", |s| {
        table_rows(s, "Function")
            .first()
            .is_some_and(|r| first_word(r) == "main.spinAlloc")
    });
    let header = screen.lines().next().unwrap_or_default();
    assert!(
        header.contains("go1.27.3")
            && header.contains(&*spin.file_name().unwrap().to_string_lossy()),
        "header (the program's name must show): {header}"
    );
    let pid: u32 = header
        .split_whitespace()
        .skip_while(|w| *w != "pid")
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in the header: {header}"));
    let row = table_rows(&screen, "Function")[0].to_owned();
    assert!(row.contains("main.T"), "row of main.spinAlloc: {row}");

    let took = quit_timed(&tmux);
    // The launched program does not outlive the dashboard: stopped and
    // reaped before top exits.
    assert!(
        gone(pid),
        "the launched program {pid} still runs after quitting"
    );
    check_restored(&tmux);
    assert!(
        took < SHELL_BACK_AFTER_Q,
        "the shell was back {took:?} after q"
    );
}

/// Closing the terminal (here: the tmux server goes away, as when an SSH
/// connection drops) ends the dashboard, and with it the tracing; the traced
/// program carries on.
#[test]
fn closing_the_terminal_ends_top() {
    skip_unless_ready!();
    let (_, target) = running_spin();
    let dir = tempfile::tempdir().expect("tempdir");
    let pid = target.pid();
    let tmux = Tmux::start(&top_script(dir.path(), &format!("--pid {pid}")));
    wait_for_spin(&tmux);
    let top = allocwatch_in_pane(&tmux);

    let _ = tmux.cmd().arg("kill-server").output();
    let start = Instant::now();
    while !gone(top) {
        if start.elapsed() > Duration::from_secs(5) {
            // SAFETY: kill(2) on the allocwatch this test started.
            unsafe { kill(top.cast_signed(), 9) };
            panic!("allocwatch top (PID {top}) still ran 5 s after its terminal was closed");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!gone(pid), "the traced program died with the dashboard");
    drop(tmux);
}

/// `top --mode sampled` on a program with memory profiling off: the header
/// says allocwatch set `runtime.MemProfileRate`, the program runs with it,
/// and `q` sets it back to 0 (read through `/proc/PID/mem` at the address
/// the program prints for the variable).
#[test]
fn quitting_top_sets_the_sample_rate_back() {
    skip_unless_ready!();
    let bin = fixture(&toolchain("1.27.3"), "noprofile", Variant::Stripped);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(&bin)
        .env("ALLOCWATCH_WAIT", "1")
        .env("ALLOCWATCH_MIB", "64")
        .env("GOMAXPROCS", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start noprofile");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let proc_ = Proc(child);
    let pid = proc_.pid();
    assert_eq!(read_line_starting(&mut out, "ready "), pid.to_string());
    let mut rate = || {
        stdin.write_all(b"rate\n").expect("ask the rate");
        let line = read_line_starting(&mut out, "rate ");
        let (r, a) = line.split_once(' ').expect("rate <value> <address>");
        (
            r.parse::<u64>().expect("rate"),
            u64::from_str_radix(a.trim(), 16).expect("address"),
        )
    };
    let (before, addr) = rate();
    assert_eq!((before, read_word(pid, addr)), (0, 0), "profiling is off");

    let tmux = Tmux::start(&top_script(
        dir.path(),
        &format!("--mode sampled --pid {pid}"),
    ));
    let screen = tmux.wait_for("the dashboard", |s| {
        s.contains(&format!("allocwatch pid {pid}"))
    });
    assert!(
        screen.contains("MemProfileRate 524288 set by allocwatch"),
        "the header says allocwatch set the rate:\n{screen}"
    );
    assert_eq!(read_word(pid, addr), 524_288, "while the dashboard runs");
    assert_eq!(rate().0, 524_288, "the program's own view");

    let screen = quit_and_check_restored(&tmux);
    assert!(
        screen.contains(&format!(
            "runtime.MemProfileRate of PID {pid} set back to 0"
        )),
        "{screen}"
    );
    assert_eq!(read_word(pid, addr), 0, "after quitting");
    assert_eq!(rate().0, 0, "the program's own view after quitting");
}
