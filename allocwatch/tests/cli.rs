//! Every way of calling allocwatch wrongly, or on the wrong thing, ends the
//! same way: the documented exit code (README, "Exit codes"), exactly one
//! `error:` line on stderr (plus a `hint:` where there is something to do),
//! no panic, no half-written output file, and nothing attached to or started.

mod support;

use support::allocwatch;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use allocwatch::cli::COMMANDS;
use support::{Variant, fixture, is_root, toolchain};

/// What one run printed and returned.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn from(out: &Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn lines_starting(&self, prefix: &str) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with(prefix))
            .collect()
    }

    /// The one `error:` line.
    fn error_line(&self) -> &str {
        let errors = self.lines_starting("error:");
        assert_eq!(
            errors.len(),
            1,
            "expected exactly one `error:` line, stderr:\n{}",
            self.stderr
        );
        errors[0]
    }
}

fn run_cmd(cmd: &mut Command) -> Run {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    Run::from(&out)
}

fn run(args: &[&str]) -> Run {
    run_cmd(Command::new(allocwatch()).args(args))
}

/// Checks a failed run: exit `code`, one `error:` line containing every
/// string of `needles` (case-insensitive), a `hint:` line when `hint`, no
/// panic, nothing attached (no `tracing PID` line) and nothing traced run
/// (no fixture `result` line on stdout).
fn expect_error(what: &str, r: &Run, code: i32, needles: &[&str], hint: bool) {
    assert_eq!(
        r.code, code,
        "{what}: exit code {} instead of {code}; stderr:\n{}",
        r.code, r.stderr
    );
    assert!(
        !r.stderr.contains("panicked") && !r.stderr.contains("RUST_BACKTRACE"),
        "{what}: panic:\n{}",
        r.stderr
    );
    let err = r.error_line().to_lowercase();
    for n in needles {
        assert!(
            err.contains(&n.to_lowercase()),
            "{what}: the error line does not mention {n:?}:\n{}",
            r.stderr
        );
    }
    let hints = r.lines_starting("hint:");
    if hint {
        assert_eq!(hints.len(), 1, "{what}: expected one hint:\n{}", r.stderr);
    } else {
        assert!(hints.len() <= 1, "{what}: several hints:\n{}", r.stderr);
    }
    assert!(
        !r.stderr.contains("tracing PID"),
        "{what}: allocwatch attached before failing:\n{}",
        r.stderr
    );
    assert!(
        !r.stdout.contains("result ") && !r.stdout.contains("ready "),
        "{what}: the target ran:\n{}",
        r.stdout
    );
}

fn skip_unless_root(why: &str) -> bool {
    if is_root() {
        return false;
    }
    support::skip(&format!("needs root ({why})"));
    true
}

/// A PID no process has right now.
fn unused_pid() -> u32 {
    let max: u32 = fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    (2..max)
        .rev()
        .find(|p| !Path::new(&format!("/proc/{p}")).exists())
        .expect("a free PID")
}

/// Files left in `dir` (an output directory must stay empty after a failure).
fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn allocs_fixture() -> PathBuf {
    fixture(&toolchain("1.27.3"), "allocs", Variant::Default)
}

/// `record -- BIN` with a small workload, so that a run that should not have
/// happened is cheap and visible (the fixture prints `result` on stdout).
fn record_launch(extra: &[&str], bin: &Path) -> Run {
    run_cmd(
        Command::new(allocwatch())
            .arg("record")
            .args(extra)
            .arg("--")
            .arg(bin)
            .env("ALLOCWATCH_N", "10")
            .env("GOMAXPROCS", "1")
            .env("GOGC", "off"),
    )
}

/// Kills and reaps a child at the end of a test, even when it panics.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn help_and_version_exit_0() {
    for args in [
        &["--help"][..],
        &["record", "--help"],
        &["top", "--help"],
        &["inspect", "--help"],
        &["--version"],
    ] {
        let r = run(args);
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        assert!(!r.stdout.is_empty(), "{args:?} printed nothing");
        assert!(
            r.lines_starting("error:").is_empty(),
            "{args:?}: {}",
            r.stderr
        );
    }
    let r = run(&["--help"]);
    assert!(r.stdout.contains("Exit codes"), "{}", r.stdout);
}

#[test]
fn no_such_pid_is_a_target_error() {
    let pid = unused_pid().to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("sites.csv");
    let r = run(&["record", "--pid", &pid, "--csv", csv.to_str().unwrap()]);
    expect_error("record --pid (none)", &r, 3, &[&pid, "no process"], true);
    assert!(
        leftovers(dir.path()).is_empty(),
        "files left behind: {:?}",
        leftovers(dir.path())
    );
    let r = run(&["inspect", "--pid", &pid]);
    expect_error("inspect --pid (none)", &r, 3, &[&pid, "no process"], true);
    let r = run(&["record", "--pid", "0"]);
    expect_error("record --pid 0", &r, 3, &["PID 0"], true);
}

#[test]
fn non_go_process_is_a_target_error() {
    let sleep = KillOnDrop(
        Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep"),
    );
    let pid = sleep.0.id().to_string();
    // inspect needs no privileges for one's own process.
    let r = run(&["inspect", "--pid", &pid]);
    expect_error("inspect --pid sleep", &r, 3, &[&pid, "not a Go"], true);
    if skip_unless_root("record checks privileges before the target's format") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("sites.csv");
    let r = run(&["record", "--pid", &pid, "--csv", csv.to_str().unwrap()]);
    expect_error("record --pid sleep", &r, 3, &[&pid, "not a Go"], true);
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );
    // The non-Go program allocwatch launched is not left behind, stopped.
    let r = record_launch(&[], Path::new("/bin/true"));
    expect_error("record -- /bin/true", &r, 3, &["not a Go"], true);
}

/// A Go program of the other architecture (an arm64 build here): `inspect`
/// plans it (it reads either), `record -- PROGRAM` names its architecture
/// when the machine cannot run it (exit 3), and leaves no file.
#[test]
fn a_program_of_another_architecture_is_named_so() {
    let foreign = if cfg!(target_arch = "aarch64") {
        return support::skip("this check builds an arm64 program and needs an amd64 machine");
    } else {
        fixture(
            &toolchain(support::GO_VERSIONS[support::GO_VERSIONS.len() - 1]),
            "allocs",
            Variant::Arm64,
        )
    };
    let r = run(&["inspect", "--json", foreign.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains(r#""arch": "arm64""#), "{}", r.stdout);
    if skip_unless_root("record checks privileges before starting the program") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("sites.csv");
    let r = record_launch(&["--csv", csv.to_str().unwrap()], &foreign);
    expect_error(
        "record -- arm64 program",
        &r,
        3,
        &["it is a linux/arm64 program and this machine runs linux/amd64 ones"],
        true,
    );
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );
}

#[test]
fn files_that_are_not_go_executables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = dir.path().join("notes.txt");
    fs::write(&text, "not an executable\n").unwrap();
    let empty = dir.path().join("empty");
    fs::write(&empty, b"").unwrap();
    let tiny = dir.path().join("tiny-elf");
    fs::write(&tiny, b"\x7fELF\x02\x01\x01").unwrap();
    let cases: [(&Path, &[&str]); 6] = [
        (&text, &["not an ELF"]),
        (&empty, &["not an ELF"]),
        (&tiny, &["truncated"]),
        (Path::new("/bin/true"), &["not a Go"]),
        (dir.path(), &["cannot read"]),
        (&dir.path().join("missing"), &["cannot read"]),
    ];
    for (path, needles) in cases {
        let r = run(&["inspect", path.to_str().unwrap()]);
        expect_error(
            &format!("inspect {}", path.display()),
            &r,
            3,
            needles,
            false,
        );
        assert!(r.stdout.is_empty(), "{}", r.stdout);
    }
}

// --- Patched Go executables -------------------------------------------------

fn u16_at(b: &[u8], off: usize) -> usize {
    usize::from(u16::from_le_bytes(b[off..off + 2].try_into().unwrap()))
}
fn u32_at(b: &[u8], off: usize) -> usize {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap()) as usize
}
fn u64_at(b: &[u8], off: usize) -> usize {
    usize::try_from(u64::from_le_bytes(b[off..off + 8].try_into().unwrap())).unwrap()
}

/// File range of the ELF section `name` (a minimal ELF64 section-header walk).
fn section(elf: &[u8], name: &str) -> (usize, usize) {
    let shoff = u64_at(elf, 0x28);
    let shentsize = u16_at(elf, 0x3a);
    let shnum = u16_at(elf, 0x3c);
    let shstrndx = u16_at(elf, 0x3e);
    let sh = |i: usize| shoff + i * shentsize;
    let strtab = u64_at(elf, sh(shstrndx) + 24);
    for i in 0..shnum {
        let name_off = strtab + u32_at(elf, sh(i));
        let end = elf[name_off..].iter().position(|&c| c == 0).unwrap();
        if &elf[name_off..name_off + end] == name.as_bytes() {
            return (u64_at(elf, sh(i) + 24), u64_at(elf, sh(i) + 32));
        }
    }
    panic!("no section {name}");
}

/// Writes a patched copy of `src` into `dir`, executable.
fn patched(src: &Path, dir: &Path, name: &str, patch: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut data = fs::read(src).expect("read fixture");
    patch(&mut data);
    let out = dir.join(name);
    fs::write(&out, &data).unwrap();
    fs::set_permissions(&out, fs::Permissions::from_mode(0o755)).unwrap();
    out
}

/// Replaces the Go version inside `.go.buildinfo` (`go1.27.3` → `go1.16.3`):
/// same length, so the varint-prefixed layout stays valid.
fn patch_go_version(data: &mut [u8], from: &str, to: &str) {
    assert_eq!(from.len(), to.len());
    let (off, size) = section(data, ".go.buildinfo");
    let blob = &mut data[off..off + size];
    let at = blob
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap_or_else(|| panic!("{from} not in .go.buildinfo"));
    blob[at..at + to.len()].copy_from_slice(to.as_bytes());
}

#[test]
fn go_older_than_1_17_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (version, from, to) in [
        ("1.21.13", "go1.21.13", "go1.16.13"),
        ("1.27.3", "go1.27.3", "go1.16.3"),
    ] {
        let src = fixture(&toolchain(version), "allocs", Variant::Default);
        let bin = patched(&src, dir.path(), &format!("go116-{version}"), |d| {
            patch_go_version(d, from, to);
        });
        let r = run(&["inspect", bin.to_str().unwrap()]);
        expect_error(
            &format!("inspect go1.16 ({version})"),
            &r,
            3,
            &[to, "1.17"],
            true,
        );
        assert!(r.stdout.is_empty(), "{}", r.stdout);
        if !skip_unless_root("record of a launched program") {
            // Launched, refused, and killed before its first instruction.
            let r = record_launch(&[], &bin);
            expect_error(
                &format!("record go1.16 ({version})"),
                &r,
                3,
                &[to, "1.17"],
                true,
            );
        }
    }
}

#[test]
fn corrupt_pclntab_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    for v in [Variant::Default, Variant::PieStripped] {
        let src = fixture(&toolchain("1.27.3"), "allocs", v);
        let bin = patched(&src, dir.path(), &format!("badmagic-{}", v.name()), |d| {
            let (off, _) = section(d, ".gopclntab");
            d[off..off + 4].copy_from_slice(&0xdead_beef_u32.to_le_bytes());
        });
        let r = run(&["inspect", bin.to_str().unwrap()]);
        expect_error(
            &format!("inspect bad magic ({})", v.name()),
            &r,
            3,
            &["pclntab"],
            false,
        );
        assert!(
            !r.error_line().contains("1.20 or newer"),
            "a go1.27.3 binary with a damaged pclntab is not an old Go:\n{}",
            r.stderr
        );
        if !skip_unless_root("record of a launched program") {
            let r = record_launch(&[], &bin);
            expect_error(
                &format!("record bad magic ({})", v.name()),
                &r,
                3,
                &["pclntab"],
                false,
            );
        }
    }
}

/// Section headers are optional for running a program: `e_shoff = 0`,
/// `e_shnum = 0` still runs. allocwatch finds the function table through
/// the `.gopclntab` section or the `runtime.pclntab` symbol, so it refuses
/// such a file (every variant): exit 3, naming the Go version and the
/// missing section headers, never "not a Go executable"; `record -- prog`
/// does not let the program run.
#[test]
fn section_headers_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    for v in [Variant::Default, Variant::Stripped, Variant::PieStripped] {
        let src = fixture(&toolchain("1.27.3"), "allocs", v);
        let bin = patched(&src, dir.path(), &format!("nosections-{}", v.name()), |d| {
            d[0x28..0x30].fill(0); // e_shoff
            d[0x3c..0x40].fill(0); // e_shnum, e_shstrndx
        });
        // The program itself still runs.
        let ok = Command::new(&bin)
            .env("ALLOCWATCH_N", "10")
            .stdin(Stdio::null())
            .output()
            .expect("run patched fixture");
        assert!(ok.status.success(), "the patched program does not run");
        let needles = ["go1.27.3", "without section headers", ".gopclntab"];
        let what = format!("inspect without sections ({})", v.name());
        let r = run(&["inspect", bin.to_str().unwrap()]);
        expect_error(&what, &r, 3, &needles, false);
        assert!(r.stdout.is_empty(), "{what}: stdout:\n{}", r.stdout);
        if skip_unless_root("record checks privileges before the target's format") {
            continue;
        }
        let what = format!("record without sections ({})", v.name());
        let r = record_launch(&[], &bin);
        expect_error(&what, &r, 3, &needles, false);
    }
}

// --- Usage errors ------------------------------------------------------------

#[test]
fn bad_duration_is_a_usage_error() {
    for d in ["garbage", "10x", "-1s", "0"] {
        let r = run(&["record", &format!("--duration={d}"), "--pid", "1"]);
        expect_error(&format!("--duration {d}"), &r, 2, &[d], false);
    }
}

#[test]
fn pid_and_program_together_is_a_usage_error() {
    let r = run(&["record", "--pid", "1", "--", "/bin/true"]);
    expect_error("record --pid 1 -- /bin/true", &r, 2, &["--pid"], false);
    let r = run(&["top", "--pid", "1", "--", "/bin/true"]);
    expect_error("top --pid 1 -- /bin/true", &r, 2, &["--pid"], false);
    let r = run(&["inspect", "--pid", "1", "/bin/true"]);
    expect_error("inspect --pid 1 /bin/true", &r, 2, &["--pid"], false);
}

#[test]
fn nothing_to_trace_is_a_usage_error() {
    let r = run(&["record"]);
    expect_error("record", &r, 2, &["--pid"], true);
    let r = run(&["record", "--duration", "1s", "--csv", "/tmp/x.csv"]);
    expect_error("record --duration 1s", &r, 2, &["--pid"], true);
    let r = run(&["inspect"]);
    expect_error("inspect", &r, 2, &[], false);
}

/// An output path that cannot be written is a usage error found before
/// anything is started or attached: the launched program never runs (it
/// would print `result`), and no `tracing PID` line appears.
fn expect_unwritable(what: &str, path: &Path, needle: &str) {
    let bin = allocs_fixture();
    let p = path.to_str().unwrap();
    for flag in ["--csv", "--pools-csv"] {
        let r = record_launch(&[flag, p], &bin);
        expect_error(&format!("{what} ({flag})"), &r, 2, &[flag, p, needle], true);
    }
}

#[test]
fn output_in_missing_directory_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("no-such-dir").join("sites.csv");
    expect_unwritable("missing directory", &p, "does not exist");
    expect_unwritable("directory as output", dir.path(), "is a directory");
    assert!(leftovers(dir.path()).is_empty());
}

/// Restores a directory made read-only for the test.
struct Immutable(PathBuf);

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[test]
fn output_in_read_only_directory_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ro = dir.path().join("ro");
    fs::create_dir(&ro).unwrap();
    if is_root() {
        // Root ignores a directory's mode bits; the immutable flag binds root too.
        let ok = Command::new("chattr")
            .arg("+i")
            .arg(&ro)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            let _guard = Immutable(ro.clone());
            expect_unwritable(
                "immutable directory",
                &ro.join("sites.csv"),
                "not permitted",
            );
            assert!(leftovers(&ro).is_empty());
        } else {
            support::skip(
                "chattr +i is unavailable here: the immutable-directory case is not checked",
            );
        }
        // sysfs refuses new files, even to root.
        expect_unwritable("sysfs", Path::new("/sys/allocwatch-test.csv"), "denied");
    } else {
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
        expect_unwritable("mode 0555 directory", &ro.join("sites.csv"), "denied");
    }
}

/// With `--pid`, a bad output path is reported before the target is touched:
/// the target (waiting for its go-ahead) is left as it was and, once
/// released, runs and exits normally.
#[test]
fn bad_output_with_pid_leaves_target_alone() {
    use std::io::{BufRead, BufReader, Write};
    let mut child = Command::new(allocs_fixture())
        .env("ALLOCWATCH_WAIT", "1")
        .env("ALLOCWATCH_N", "10")
        .env("GOMAXPROCS", "1")
        .env("GOGC", "off")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start fixture");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let guard = KillOnDrop(child);
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.starts_with("ready "), "{line}");
    let pid = guard.0.id().to_string();
    let r = run(&[
        "record",
        "--pid",
        &pid,
        "--csv",
        "/nonexistent-allocwatch-dir/x.csv",
    ]);
    expect_error(
        "record --pid with a bad --csv",
        &r,
        2,
        &["--csv", "does not exist"],
        true,
    );
    writeln!(stdin, "go").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let mut child = guard;
    let status = child.0.wait().unwrap();
    assert!(status.success(), "fixture failed: {status}");
    assert!(rest.contains("result "), "{rest}");
}

// --- Environment errors ------------------------------------------------------

#[test]
fn missing_kernel_feature_is_an_environment_error() {
    if skip_unless_root("privileges are checked before kernel features") {
        return;
    }
    let bin = allocs_fixture();
    for feature in ["ringbuf", "uprobes", "btf", "cookies"] {
        let r = run_cmd(
            Command::new(allocwatch())
                .args(["record", "--"])
                .arg(&bin)
                .env("ALLOCWATCH_FAIL_FEATURE", feature)
                .env("ALLOCWATCH_N", "10"),
        );
        expect_error(&format!("without {feature}"), &r, 4, &[feature], true);
    }
    // The same on an already running process.
    let sleep = KillOnDrop(Command::new("sleep").arg("30").spawn().expect("sleep"));
    let r = run_cmd(
        Command::new(allocwatch())
            .args(["record", "--pid", &sleep.0.id().to_string()])
            .env("ALLOCWATCH_FAIL_FEATURE", "ringbuf"),
    );
    expect_error("--pid without ringbuf", &r, 4, &["ringbuf"], true);
}

/// A copy of the allocwatch binary (and `extra` files) in a directory that
/// user nobody can enter and read.
fn world_readable_copy(extra: &[&Path]) -> (tempfile::TempDir, PathBuf, Vec<PathBuf>) {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let aw = dir.path().join("allocwatch");
    fs::copy(allocwatch(), &aw).expect("copy allocwatch");
    fs::set_permissions(&aw, fs::Permissions::from_mode(0o755)).unwrap();
    let copies = extra
        .iter()
        .map(|p| {
            let to = dir.path().join(p.file_name().unwrap());
            fs::copy(p, &to).expect("copy");
            fs::set_permissions(&to, fs::Permissions::from_mode(0o755)).unwrap();
            to
        })
        .collect();
    (dir, aw, copies)
}

/// Runs `cmd args…` as user nobody with no capabilities.
fn as_nobody(cmd: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
    ])
    .arg(cmd)
    .current_dir("/");
    c
}

fn have_setpriv() -> bool {
    support::have_tool("setpriv", "--version", "switching to user nobody")
}

#[test]
fn unprivileged_user_is_an_environment_error() {
    if skip_unless_root("switching to user nobody") {
        return;
    }
    if !have_setpriv() {
        return;
    }
    let (_dir, aw, copies) = world_readable_copy(&[&allocs_fixture()]);
    let fix = &copies[0];
    let caps = ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN"];

    // Launching a program.
    let r = run_cmd(
        as_nobody(&aw)
            .args(["record", "--"])
            .arg(fix)
            .env("ALLOCWATCH_N", "10"),
    );
    expect_error("nobody: record -- fixture", &r, 4, &caps, true);
    assert!(r.error_line().contains("privileges"), "{}", r.stderr);

    // A process of another user (root): its executable is unreadable.
    let sleep = KillOnDrop(Command::new("sleep").arg("30").spawn().expect("sleep"));
    let pid = sleep.0.id().to_string();
    let r = run_cmd(as_nobody(&aw).args(["record", "--pid", &pid]));
    expect_error("nobody: record --pid (root's)", &r, 4, &caps, true);

    // The top command says the same before touching the terminal.
    let r = run_cmd(as_nobody(&aw).args(["top", "--log-file", "/dev/null", "--pid", &pid]));
    expect_error("nobody: top --pid (root's)", &r, 4, &caps, true);

    // A process of its own.
    let own = KillOnDrop(
        as_nobody(Path::new("/bin/sleep"))
            .arg("30")
            .spawn()
            .expect("sleep as nobody"),
    );
    std::thread::sleep(std::time::Duration::from_millis(100));
    let r = run_cmd(as_nobody(&aw).args(["record", "--pid", &own.0.id().to_string()]));
    expect_error("nobody: record --pid (own)", &r, 4, &caps, true);

    // inspect needs no privileges.
    let r = run_cmd(as_nobody(&aw).arg("inspect").arg(fix));
    assert_eq!(r.code, 0, "nobody: inspect:\n{}", r.stderr);
    assert!(r.stdout.contains("go1.27.3"), "{}", r.stdout);
}

#[test]
fn program_that_cannot_start_is_a_target_error() {
    if skip_unless_root("privileges are checked before launching") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-program");
    let r = record_launch(&[], &missing);
    expect_error(
        "record -- missing program",
        &r,
        3,
        &["cannot start", "no-such-program"],
        false,
    );
    let text = dir.path().join("not-executable");
    fs::write(&text, "hello\n").unwrap();
    let r = record_launch(&[], &text);
    expect_error(
        "record -- non-executable file",
        &r,
        3,
        &["cannot start", "not-executable"],
        false,
    );
}

// --- Completions, man page, help ---------------------------------------------

/// A successful run that printed something on stdout and no error.
fn expect_output(what: &str, r: &Run) {
    assert_eq!(
        r.code, 0,
        "{what}: exit code {}; stderr:\n{}",
        r.code, r.stderr
    );
    assert!(!r.stdout.trim().is_empty(), "{what} printed nothing");
    assert!(
        r.lines_starting("error:").is_empty(),
        "{what}: {}",
        r.stderr
    );
}

#[test]
fn bash_completions_are_valid_bash() {
    let r = run(&["completions", "bash"]);
    expect_output("completions bash", &r);
    for name in COMMANDS {
        assert!(r.stdout.contains(name), "no `{name}` in:\n{}", r.stdout);
    }
    assert!(
        r.stdout.contains("--pid") && r.stdout.contains("--csv"),
        "{}",
        r.stdout
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("allocwatch.bash");
    fs::write(&script, &r.stdout).unwrap();
    let check = run_cmd(Command::new("bash").arg("-n").arg(&script));
    assert_eq!(check.code, 0, "bash -n: {}", check.stderr);
    // Sourced, it registers a completion for allocwatch.
    let loaded = run_cmd(
        Command::new("bash")
            .arg("-c")
            .arg("source \"$1\" && complete -p allocwatch")
            .arg("bash")
            .arg(&script),
    );
    assert_eq!(loaded.code, 0, "source: {}", loaded.stderr);
    assert!(loaded.stdout.contains("allocwatch"), "{}", loaded.stdout);
}

#[test]
fn zsh_and_fish_completions_name_the_commands() {
    for shell in ["zsh", "fish"] {
        let r = run(&["completions", shell]);
        expect_output(&format!("completions {shell}"), &r);
        for name in ["record", "top", "daemon"] {
            assert!(
                r.stdout.contains(name),
                "{shell}: no `{name}`:\n{}",
                r.stdout
            );
        }
    }
    let r = run(&["completions", "tcsh"]);
    assert_eq!(r.code, 2, "unknown shell: {}", r.stderr);
}

/// `page` rendered by man (or groff), when one of them is installed.
fn render_man(page: &str) -> Option<String> {
    use std::io::Write;
    let have = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let mut cmd = if have("man") {
        let mut c = Command::new("man");
        c.args(["--warnings", "-l", "-"]).env("MANWIDTH", "80");
        c
    } else if have("groff") {
        let mut c = Command::new("groff");
        c.args(["-k", "-man", "-Tutf8", "-ww"]);
        c
    } else {
        return None;
    };
    let mut child = cmd
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start man");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .expect("write the page");
    let r = Run::from(&child.wait_with_output().expect("man"));
    assert_eq!(r.code, 0, "{cmd:?}: {}", r.stderr);
    assert!(r.stderr.trim().is_empty(), "{cmd:?} warns:\n{}", r.stderr);
    Some(r.stdout)
}

#[test]
fn man_pages_are_roff() {
    let r = run(&["man"]);
    expect_output("man", &r);
    assert!(
        r.stdout.starts_with(".TH") || r.stdout.starts_with(".ie"),
        "not roff:\n{}",
        r.stdout
    );
    assert!(r.stdout.contains("allocwatch"), "{}", r.stdout);
    for name in COMMANDS {
        assert!(
            r.stdout.contains(&format!("allocwatch\\-{name}(1)")),
            "allocwatch(1) does not list {name}:\n{}",
            r.stdout
        );
    }
    // Without man and groff, the roff source is all there is to check.
    if let Some(text) = render_man(&r.stdout) {
        for needle in [
            "SYNOPSIS",
            "SUBCOMMANDS",
            "EXAMPLES",
            "allocwatch top --pid 1234",
        ] {
            assert!(text.contains(needle), "no `{needle}` in:\n{text}");
        }
    }
    // The pages the list names.
    for name in COMMANDS {
        let r = run(&["man", name]);
        expect_output(&format!("man {name}"), &r);
        assert!(
            r.stdout.starts_with(&format!(".TH allocwatch-{name} 1 ")),
            "{}",
            r.stdout
        );
        if let Some(text) = render_man(&r.stdout) {
            assert!(text.contains("EXAMPLES"), "man {name}:\n{text}");
            assert!(
                text.contains(&format!("allocwatch {name} ")),
                "man {name}:\n{text}"
            );
        }
    }
    let r = run(&["man", "nope"]);
    assert_eq!(r.code, 2, "man nope: {}", r.stderr);
}

#[test]
fn help_shows_examples() {
    for name in COMMANDS {
        for flag in ["--help", "-h"] {
            let r = run_cmd(
                Command::new(allocwatch())
                    .args([name, flag])
                    .env("COLUMNS", "100"),
            );
            expect_output(&format!("{name} {flag}"), &r);
            let examples = r
                .stdout
                .split_once("\nExamples:\n")
                .unwrap_or_else(|| panic!("{name} {flag}: no Examples:\n{}", r.stdout))
                .1;
            let lines: Vec<&str> = examples.lines().collect();
            assert!(
                lines.len() >= 2
                    && lines
                        .iter()
                        .all(|l| l.starts_with(&format!("  allocwatch {name} "))),
                "{name} {flag}: examples:\n{examples}"
            );
        }
    }
    let r = run(&["record", "--help"]);
    assert!(
        r.stdout
            .contains("\n  allocwatch record --pid 1234 --duration 10s --json run.json\n"),
        "{}",
        r.stdout
    );
}

#[test]
fn help_wraps_to_the_terminal() {
    for (columns, width) in [("60", 60), ("80", 80), ("250", 100)] {
        for name in ["record", "daemon"] {
            let r = run_cmd(
                Command::new(allocwatch())
                    .args([name, "--help"])
                    .env("COLUMNS", columns),
            );
            expect_output(&format!("COLUMNS={columns} {name} --help"), &r);
            let widest = r.stdout.lines().map(|l| l.chars().count()).max().unwrap();
            assert!(
                widest <= width,
                "COLUMNS={columns}: a line of {widest} characters:\n{}",
                r.stdout
            );
            // Wide enough to be used, not wrapped at some fixed narrower width.
            assert!(
                widest > width - 10,
                "COLUMNS={columns}: {widest}\n{}",
                r.stdout
            );
        }
    }
}

#[test]
fn completions_and_man_need_no_privileges() {
    if skip_unless_root("switching to user nobody") {
        return;
    }
    if !have_setpriv() {
        return;
    }
    let (_dir, aw, _) = world_readable_copy(&[]);
    for args in [
        &["completions", "bash"][..],
        &["completions", "zsh"],
        &["man"],
    ] {
        let r = run_cmd(as_nobody(&aw).args(args));
        expect_output(&format!("nobody: {args:?}"), &r);
    }
}
