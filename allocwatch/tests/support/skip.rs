//! Skips that are seen and counted. A test that cannot run (part of) its
//! check calls [`skip`] with the reason, which is printed on stderr (also
//! when libtest captures the test's output) and, when
//! `cargo xtask test` runs the suite, recorded in the run's skip directory
//! (`ALLOCWATCH_SKIP_DIR`): xtask lists every skip at the end, and under
//! `CI=true` fails the run. Outside xtask, `CI=true` makes a skip fail its
//! test at once, since nothing else would count it.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

/// The variable through which `cargo xtask test` names the run's skip directory.
pub const SKIP_DIR_VAR: &str = "ALLOCWATCH_SKIP_DIR";

/// The name of the running test: libtest names each test's thread after it.
fn test_name() -> String {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("?");
    format!("{}::{name}", env!("CARGO_CRATE_NAME"))
}

/// Records that the running test does not check something, and why. The
/// caller returns (the whole test skipped) or carries on without that part.
pub fn skip(reason: &str) {
    let test = test_name();
    // Written to the handle, not with eprintln!, which libtest captures and
    // shows only for failed tests: a skip must be seen in a passing run too.
    let _ = writeln!(std::io::stderr(), "{test} skipped: {reason}");
    match std::env::var_os(SKIP_DIR_VAR) {
        Some(dir) => record(Path::new(&dir), &test, reason),
        None => assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test} skipped under CI=true, where a skip fails: {reason}"
        ),
    }
}

/// One new file per skip in `dir`, created exclusively (`O_EXCL` neither
/// follows a symlink nor reuses a file), so that test processes never share one.
fn record(dir: &Path, test: &str, reason: &str) {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!(
        "{}-{}-{n}",
        std::process::id(),
        env!("CARGO_CRATE_NAME")
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("record the skip in {}: {e}", path.display()));
    writeln!(f, "{test}: {reason}")
        .unwrap_or_else(|e| panic!("record the skip in {}: {e}", path.display()));
}

/// True (after recording the skip) when the test cannot run because it needs
/// root. `cargo xtask test` refuses to start without root, so this only
/// happens when the tests are run by hand.
pub fn skip_unless_root() -> bool {
    if super::is_root() {
        return false;
    }
    skip("needs root to load eBPF programs");
    true
}

/// True when `tool ARG` runs (ARG: the tool's harmless version flag);
/// otherwise records that `what` is not checked.
pub fn have_tool(tool: &str, arg: &str, what: &str) -> bool {
    let ok = std::process::Command::new(tool)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip(&format!("{tool} is not installed: {what} not checked"));
    }
    ok
}
