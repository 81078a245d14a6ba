//! `--source`: the compiler's escape analysis beside real allocation sites,
//! against the real kernel (root) and real Go toolchains.
//!
//! `testdata/escape` is a module with one allocation site per classic
//! reason (`// escape-site: <marker>` on the allocating line); `record
//! --source` must put the right cause at the right site for Go 1.21 (a
//! default build: absolute paths) and 1.27 (`-trimpath`: module paths), no
//! reason at standard-library and runtime-internal sites, and `explain` on
//! the demo service must name its deliberate escapes and its badly used pool.

mod support;

use support::{allocwatch, skip_unless_root};

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde::Deserialize;
use support::{GoToolchain, Variant, build_go, target_dir, toolchain, workspace_root};

fn escape_module() -> PathBuf {
    workspace_root().join("testdata/escape")
}

fn hash_dir(dir: &Path, h: &mut DefaultHasher) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            hash_dir(&p, h);
        } else {
            p.file_name().hash(h);
            std::fs::read(&p).unwrap().hash(h);
        }
    }
}

/// Builds `testdata/escape` (its own module) with `tc`, once per source
/// hash, toolchain and flags, under `target/fixtures/`.
fn build_fixture(tc: &GoToolchain, trimpath: bool) -> PathBuf {
    let src = escape_module();
    let mut h = DefaultHasher::new();
    hash_dir(&src, &mut h);
    trimpath.hash(&mut h);
    let dir = target_dir()
        .join("fixtures")
        .join(format!("go{}", tc.version))
        .join("escape");
    let out = dir.join(format!("escape-{:016x}", h.finish()));
    if out.exists() {
        return out;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let tmp = dir.join(format!(".escape.{}.tmp", std::process::id()));
    let mut cmd = Command::new(tc.go());
    cmd.current_dir(&src).arg("build").arg("-o").arg(&tmp);
    if trimpath {
        cmd.arg("-trimpath");
    }
    let o = cmd
        .arg(".")
        .env("GOROOT", &tc.goroot)
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GOCACHE", target_dir().join("gocache").join(&tc.version))
        .env("CGO_ENABLED", "0")
        .env_remove("GOEXPERIMENT")
        .output()
        .expect("run go build");
    assert!(
        o.status.success(),
        "go {} build testdata/escape failed:\n{}",
        tc.version,
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::rename(&tmp, &out).unwrap();
    out
}

/// An allocwatch command with the environment the tests give go commands.
fn aw(tc: &GoToolchain) -> Command {
    let mut c = Command::new(allocwatch());
    c.env("GOCACHE", target_dir().join("gocache").join(&tc.version))
        .env("GOPROXY", "off")
        .stdin(Stdio::null());
    c
}

#[derive(Debug, Deserialize)]
struct Row {
    function: String,
    file: String,
    line: u32,
    #[serde(rename = "type")]
    type_name: String,
    allocs: u64,
    escape: String,
}

/// The line of `// escape-site: <marker>` in `file` of the module.
fn marker_line(file: &str, marker: &str) -> u32 {
    let text = std::fs::read_to_string(escape_module().join(file)).unwrap();
    let want = format!("// escape-site: {marker}");
    let i = text
        .lines()
        .position(|l| l.trim_end().ends_with(&want))
        .unwrap_or_else(|| panic!("no marker {marker} in {file}"));
    u32::try_from(i + 1).unwrap()
}

/// Types only the runtime allocates (a goroutine, a thread, profiling
/// buffers): they show up at user lines without being an escape.
fn runtime_type(t: &str) -> bool {
    let base = t.trim_start_matches("[]").trim_start_matches('*');
    t == "[]uintptr"
        || base
            .strip_prefix("runtime.")
            .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_lowercase()))
}

/// (marker, file, function, cause label in the `escape` column)
const SITES: &[(&str, &str, &str, &str)] = &[
    (
        "return",
        "main.go",
        "main.newPoint",
        "returned pointer: moved to heap: p",
    ),
    (
        "interface",
        "main.go",
        "main.boxValue",
        "assignment to interface: b escapes to heap",
    ),
    (
        "goroutine",
        "main.go",
        "main.spawn",
        "goroutine capture: moved to heap: total",
    ),
    (
        "goroutine-closure",
        "main.go",
        "main.spawn",
        "goroutine capture: func literal escapes to heap",
    ),
    (
        "captured",
        "main.go",
        "main.counter",
        "closure capture: moved to heap: n",
    ),
    (
        "closure",
        "main.go",
        "main.counter",
        "closure capture: func literal escapes to heap",
    ),
    (
        "make",
        "main.go",
        "main.makeBuf",
        "unknown size make: make([]byte, n)",
    ),
    (
        "too-large",
        "main.go",
        "main.bigLocal",
        "too large for stack: new([98304]byte) escapes to heap",
    ),
    (
        "returned",
        "internal/shape/shape.go",
        "allocwatch.test/escape/internal/shape.NewRect",
        "returned pointer: &Rect{...} escapes to heap",
    ),
];

fn record_with_source(version: &str, trimpath: bool) {
    if skip_unless_root() {
        return;
    }
    let tc = toolchain(version);
    let bin = build_fixture(&tc, trimpath);
    let dir = tempfile::tempdir().unwrap();
    let csv_path = dir.path().join("sites.csv");
    let out = aw(&tc)
        .arg("record")
        .arg("--source")
        .arg(escape_module())
        .arg("--go")
        .arg(tc.go())
        .arg("--csv")
        .arg(&csv_path)
        .arg("--")
        .arg(&bin)
        .env("ALLOCWATCH_N", "1000")
        .output()
        .expect("run allocwatch");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "allocwatch failed:\n{stderr}");
    assert!(
        stderr.contains(&format!("escape analysis: go{version}")),
        "{stderr}"
    );
    assert!(!stderr.contains("warning: the target"), "{stderr}");
    let mut r = csv::Reader::from_path(&csv_path).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(str::to_string).collect();
    assert_eq!(
        header.last().map(String::as_str),
        Some("escape"),
        "{header:?}"
    );
    let rows: Vec<Row> = r.deserialize().map(|x| x.expect("csv row")).collect();

    let mut failures = Vec::new();
    for &(marker, file, function, want) in SITES {
        let line = marker_line(file, marker);
        let at: Vec<&Row> = rows
            .iter()
            .filter(|r| r.function == function && r.line == line && r.file.ends_with(file))
            .collect();
        let user: Vec<&&Row> = at.iter().filter(|r| !runtime_type(&r.type_name)).collect();
        if user.is_empty() || user.iter().map(|r| r.allocs).sum::<u64>() < 1000 {
            failures.push(format!(
                "{marker}: no (or too few) allocations at {function} {file}:{line}: {at:?}"
            ));
        }
        for r in user {
            if !r.escape.starts_with(want) {
                failures.push(format!(
                    "{marker}: {function} {file}:{line} {}: escape {:?}, want {want:?}",
                    r.type_name, r.escape
                ));
            }
        }
        for r in at.iter().filter(|r| runtime_type(&r.type_name)) {
            if !r.escape.is_empty() {
                failures.push(format!(
                    "{marker}: runtime object {} got a reason: {:?}",
                    r.type_name, r.escape
                ));
            }
        }
    }
    // Outside the module (standard library, runtime): no reason.
    let outside: Vec<&Row> = rows
        .iter()
        .filter(|r| !r.function.starts_with("main.") && !r.function.starts_with("allocwatch.test/"))
        .collect();
    assert!(
        outside.iter().any(|r| r.function.contains("strconv.")),
        "no strconv site: {rows:?}"
    );
    for r in outside {
        if !r.escape.is_empty() {
            failures.push(format!(
                "{} {}:{} got a reason: {:?}",
                r.function, r.file, r.line, r.escape
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "Go {version}:\n  {}\nstderr:\n{stderr}",
        failures.join("\n  ")
    );
}

#[test]
fn record_source_go121() {
    record_with_source("1.21.13", false);
}

#[test]
fn record_source_go127_trimpath() {
    record_with_source("1.27.3", true);
}

/// A binary built from an edited copy of the module (nine lines inserted
/// at the top) against the original source: allocwatch says that they do
/// not match and gives the shifted sites no reason rather than wrong ones.
#[test]
fn mismatched_source_is_reported() {
    if skip_unless_root() {
        return;
    }
    let tc = toolchain("1.27.3");
    let copy = tempfile::tempdir().unwrap();
    let src = copy.path().join("escape");
    std::fs::create_dir_all(src.join("internal/shape")).unwrap();
    for f in ["go.mod", "internal/shape/shape.go"] {
        std::fs::copy(escape_module().join(f), src.join(f)).unwrap();
    }
    let main_go = std::fs::read_to_string(escape_module().join("main.go")).unwrap();
    std::fs::write(
        src.join("main.go"),
        format!("{}{main_go}", "// edited\n".repeat(9)),
    )
    .unwrap();
    let bin = copy.path().join("escape-edited");
    let o = Command::new(tc.go())
        .current_dir(&src)
        .args(["build", "-trimpath", "-o"])
        .arg(&bin)
        .arg(".")
        .env("GOROOT", &tc.goroot)
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOCACHE", target_dir().join("gocache").join(&tc.version))
        .env("CGO_ENABLED", "0")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv_path = copy.path().join("sites.csv");
    let out = aw(&tc)
        .arg("record")
        .arg("--source")
        .arg(escape_module())
        .arg("--go")
        .arg(tc.go())
        .arg("--csv")
        .arg(&csv_path)
        .arg("--")
        .arg(&bin)
        .env("ALLOCWATCH_N", "100")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: the target does not match the source"),
        "{stderr}"
    );
    let rows: Vec<Row> = csv::Reader::from_path(&csv_path)
        .unwrap()
        .deserialize()
        .map(|x| x.unwrap())
        .collect();
    let wrong: Vec<&Row> = rows
        .iter()
        .filter(|r| r.file.ends_with("/main.go") && !r.escape.is_empty())
        .collect();
    assert!(wrong.is_empty(), "reasons for shifted lines: {wrong:#?}");
    // The other package did not change: its site keeps its reason.
    assert!(
        rows.iter()
            .any(|r| r.function.ends_with("shape.NewRect")
                && r.escape.starts_with("returned pointer")),
        "{rows:#?}"
    );
}

/// The CSV keeps its exact header without `--source`.
#[test]
fn no_source_no_column() {
    if skip_unless_root() {
        return;
    }
    let tc = toolchain("1.27.3");
    let bin = build_fixture(&tc, false);
    let dir = tempfile::tempdir().unwrap();
    let csv_path = dir.path().join("sites.csv");
    let out = aw(&tc)
        .arg("record")
        .arg("--csv")
        .arg(&csv_path)
        .arg("--")
        .arg(&bin)
        .env("ALLOCWATCH_N", "10")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&csv_path).unwrap();
    assert_eq!(
        text.lines().next(),
        Some(
            "window_start_s,window_end_s,function,file,line,type,allocs,bytes,allocs_per_s,bytes_per_s"
        )
    );
}

/// Bad `--source` values are usage errors, before anything is attached.
#[test]
fn bad_source_is_a_usage_error() {
    let tc = toolchain("1.27.3");
    let dir = tempfile::tempdir().unwrap();
    let source_hint = "hint: --source takes the directory of the target's Go module";
    let go_hint = "hint: pass --go /path/to/go";
    for (args, want, hint) in [
        (
            vec!["--source".to_string(), dir.path().display().to_string()],
            "not in a Go module",
            source_hint,
        ),
        (
            vec!["--source".to_string(), "/nonexistent/dir".to_string()],
            "not a directory",
            source_hint,
        ),
        (
            vec![
                "--source".to_string(),
                escape_module().display().to_string(),
                "--go".to_string(),
                "/nonexistent/go".to_string(),
            ],
            "cannot run /nonexistent/go",
            go_hint,
        ),
        // A working --go does not make a bad --source a toolchain problem.
        (
            vec![
                "--source".to_string(),
                "/nonexistent/dir".to_string(),
                "--go".to_string(),
                tc.go().display().to_string(),
            ],
            "not a directory",
            source_hint,
        ),
    ] {
        let out = aw(&tc)
            .arg("record")
            .args(&args)
            .args(["--pid", "1"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert!(stderr.contains(hint), "{args:?}: {stderr}");
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's PID.
        unsafe { libc_kill(self.0.id() as i32, 15) };
        let _ = self.0.wait();
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn explain_demo(version: &str) {
    if skip_unless_root() {
        return;
    }
    let tc = toolchain(version);
    let demo = build_go(&tc, "demo", Variant::Default);
    let mut child = Command::new(&demo)
        .args(["-rps", "2000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the demo");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let pid = child.id();
    let demo_proc = Killed(child);
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("demo listening on "), "{first}");

    let out = aw(&tc)
        .arg("explain")
        .args(["--pid", &pid.to_string(), "--duration", "4s", "--top", "60"])
        .arg("--source")
        .arg(workspace_root().join("testdata"))
        .arg("--go")
        .arg(tc.go())
        .output()
        .expect("run allocwatch explain");
    drop(demo_proc);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "explain failed:\n{stderr}\n{stdout}");
    let report = stdout.as_ref();
    // Each deliberate escape: its site (a block of the report), its reason
    // and its cause.
    let checks = [
        ("main.newOrder", "moved to heap: o [returned pointer]"),
        (
            "main.orderSummary",
            "moved to heap: b [assignment to interface]",
        ),
        (
            "main.handleOrders",
            "func literal escapes to heap [closure capture]",
        ),
        (
            "main.handleOrders",
            "func literal escapes to heap [goroutine capture]",
        ),
        (
            "main.handleReport",
            "make([]reportLine, len(ids)) escapes to heap",
        ),
        (
            "main.handleStats",
            "cents escapes to heap [assignment to interface]",
        ),
    ];
    let mut missing = Vec::new();
    for (function, want) in checks {
        let found = report
            .split("\n\n")
            .filter(|b| b.contains(&format!(". {function}  ")))
            .any(|b| b.contains(want));
        if !found {
            missing.push(format!("{function}: {want}"));
        }
    }
    assert!(missing.is_empty(), "missing {missing:?} in:\n{report}");
    // The badly used pool, and who never puts back.
    assert!(
        report.contains("badly used pool main.scratchPool")
            && report.contains("main.handleReport Gets and never Puts it back"),
        "{report}"
    );
    // Standard-library sites get no reason and are summed up.
    assert!(report.contains("outside the module"), "{report}");
    assert!(!report.contains("warning: the target"), "{report}");
}

#[test]
fn explain_demo_go127() {
    explain_demo("1.27.3");
}

#[test]
fn explain_demo_go121() {
    explain_demo("1.21.13");
}

/// `--source` under sudo (`SUDO_UID`/`SUDO_GID`/`SUDO_USER` = nobody,
/// allocwatch itself root): every go command runs as that user. `--go` is
/// a wrapper that logs the uid it runs as and the go subcommand, then runs
/// the real toolchain; it fails `go build` at once (no cold compile of the
/// standard library in a fresh cache), so the trace goes on without
/// reasons. nobody has no home directory: the build cache is a private
/// directory in `$TMPDIR`, created by and for nobody (mode 0700).
#[test]
fn sudo_source_build_runs_as_the_invoking_user() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if skip_unless_root() {
        return;
    }
    let tc = toolchain("1.27.3");
    let bin = build_fixture(&tc, false);
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let log = dir.path().join("go-runs.log");
    std::fs::write(&log, "").unwrap();
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666)).unwrap();
    let wrapper = dir.path().join("go");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$(id -u) $1\" >> {log}\n[ \"$1\" = build ] && exit 1\nexec {go} \"$@\"\n",
            log = log.display(),
            go = tc.go().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(allocwatch())
        .args(["record", "--csv"])
        .arg(dir.path().join("sites.csv"))
        .arg("--source")
        .arg(escape_module())
        .arg("--go")
        .arg(&wrapper)
        .arg("--")
        .arg(&bin)
        .env("ALLOCWATCH_N", "10")
        .env("SUDO_UID", "65534")
        .env("SUDO_GID", "65534")
        .env("SUDO_USER", "nobody")
        .env("TMPDIR", dir.path())
        .env("GOPROXY", "off")
        .env_remove("GOCACHE")
        .env_remove("XDG_CACHE_HOME")
        .stdin(Stdio::null())
        .output()
        .expect("run allocwatch");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "allocwatch failed:\n{stderr}");
    assert!(stderr.contains("escape analysis failed"), "{stderr}");
    let runs = std::fs::read_to_string(&log).unwrap();
    let runs: Vec<&str> = runs.lines().collect();
    assert!(
        runs.iter().any(|l| l.ends_with(" build")) && runs.iter().any(|l| l.ends_with(" env")),
        "go commands run: {runs:?}"
    );
    for r in &runs {
        assert!(
            r.starts_with("65534 "),
            "a go command ran as another user: {runs:?}"
        );
    }
    let cache = std::fs::symlink_metadata(dir.path().join("allocwatch-gocache-65534")).unwrap();
    assert!(cache.is_dir());
    assert_eq!((cache.uid(), cache.mode() & 0o777), (65534, 0o700));
}

/// As plain root, `--source` on a module that root does not own is
/// refused before anything is attached (exit 2, with the hint), and
/// `--allow-root-build` lets it through (here to the missing PID: exit 3).
#[test]
fn root_refuses_to_build_a_tree_it_does_not_own() {
    if skip_unless_root() {
        return;
    }
    let tc = toolchain("1.27.3");
    let tree = tempfile::tempdir().unwrap();
    std::fs::copy(escape_module().join("go.mod"), tree.path().join("go.mod")).unwrap();
    std::os::unix::fs::chown(tree.path(), Some(65534), Some(65534)).unwrap();
    let explain = |extra: &[&str]| {
        let out = Command::new(allocwatch())
            .args(["explain", "--pid", "999999999", "--source"])
            .arg(tree.path())
            .arg("--go")
            .arg(tc.go())
            .args(extra)
            .env_remove("SUDO_UID")
            .env_remove("SUDO_GID")
            .stdin(Stdio::null())
            .output()
            .expect("run allocwatch");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = explain(&[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("belongs to uid 65534") && err.contains("--allow-root-build"),
        "{err}"
    );
    let (code, err) = explain(&["--allow-root-build"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(!err.contains("--allow-root-build"), "{err}");
}

/// On a terminal, the wait for `--source`'s `go build` shows a progress
/// line. `--go` is a wrapper whose `build` takes a second and fails (no
/// real compile needed); the terminal is util-linux's `script`.
#[test]
fn escape_build_shows_progress_on_a_terminal() {
    use std::os::unix::fs::PermissionsExt;
    if skip_unless_root() {
        return;
    }
    let tc = toolchain("1.27.3");
    let bin = build_fixture(&tc, false);
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("go");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n[ \"$1\" = build ] && {{ sleep 1; exit 1; }}\nexec {} \"$@\"\n",
            tc.go().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cmdline = format!(
        "ALLOCWATCH_N=10 GOPROXY=off {} record --source {} --go {} -- {}",
        allocwatch().display(),
        escape_module().display(),
        wrapper.display(),
        bin.display()
    );
    let mut script = Command::new("script");
    script.env("GOCACHE", target_dir().join("gocache").join(&tc.version));
    let tty = support::on_terminal(&cmdline, script);
    assert!(
        tty.contains("escape analysis: go build -gcflags=-m=2"),
        "no progress line for the build:\n{tty}"
    );
    assert!(tty.contains("escape analysis failed"), "{tty}");
}
