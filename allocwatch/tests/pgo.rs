//! Programs built with profile-guided optimization, against the real kernel.
//!
//! With a CPU profile (`testdata/fixtures/pgo/default.pgo`, picked up by
//! `go build` automatically), the compiler inlines `sync.(*Pool).Get` and
//! `Put` into the fixture's hot caller, where uprobes on those functions
//! never fire. allocwatch then counts exactly the calls that were not
//! inlined (the cold caller's) and says plainly — in `record`'s stderr and in
//! `inspect` — that pool counts are incomplete for this binary. The same program built with
//! `-pgo=off` must be counted exactly, without that warning.
//!
//! Each test prints what allocwatch missed in the PGO build (`--nocapture`).

mod support;

use support::allocwatch;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use support::{
    GoToolchain, PoolCount, RunSummary, Variant, fixture, parse_result, record_sites_and_pools,
    target_dir, toolchain, workspace_root,
};

const N: u32 = 10_000;
const WARNING: &str = "built with PGO: sync.Pool Get/Put may be inlined into hot callers; pool counts are incomplete for this binary";

#[derive(Debug, Deserialize)]
struct Site {
    func: String,
    count: u64,
    line: u32,
}

#[derive(Debug, Deserialize)]
struct FixtureResult {
    go: String,
    pgo: String,
    pools: Vec<PoolCount>,
    callsites: Vec<PoolCount>,
    sites: Vec<Site>,
}

#[derive(Debug, Deserialize)]
struct PoolRow {
    pool: String,
    new_func: String,
    gets: u64,
    misses: u64,
    nil_returns: u64,
    puts: u64,
}

#[derive(Debug, Deserialize)]
struct SiteRow {
    function: String,
    line: u32,
    allocs: u64,
}

fn go_env(cmd: &mut Command, tc: &GoToolchain) {
    cmd.current_dir(workspace_root().join("testdata"))
        .env("GOROOT", &tc.goroot)
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GOCACHE", target_dir().join("gocache").join(&tc.version))
        .env("GOPATH", target_dir().join("gopath"))
        .env("GOAMD64", "v1")
        .env("CGO_ENABLED", "0")
        .env_remove("GOEXPERIMENT");
}

/// The fixture built with its profile: `support::fixture` builds with
/// `-pgo=auto`, which uses `default.pgo` in the main package's directory.
fn build_pgo(tc: &GoToolchain) -> PathBuf {
    fixture(tc, "pgo", Variant::Default)
}

/// The same fixture with `-pgo=off`, cached like `support::build_go` does.
fn build_no_pgo(tc: &GoToolchain) -> PathBuf {
    let mut h = DefaultHasher::new();
    support::hash_sources("fixtures/pgo", &mut h);
    tc.version.hash(&mut h);
    let dir = target_dir()
        .join("fixtures")
        .join(format!("go{}", tc.version))
        .join("pgo-off");
    let out = dir.join(format!("fixtures-pgo-{:016x}", h.finish()));
    if out.exists() {
        return out;
    }
    std::fs::create_dir_all(&dir).expect("create fixture dir");
    let tmp = dir.join(format!(".fixtures-pgo.{}.tmp", std::process::id()));
    let mut cmd = Command::new(tc.go());
    go_env(&mut cmd, tc);
    let o = cmd
        .args(["build", "-pgo=off", "-o"])
        .arg(&tmp)
        .arg("./fixtures/pgo")
        .output()
        .expect("run go build");
    assert!(
        o.status.success(),
        "go {} build -pgo=off failed:\n{}",
        tc.version,
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::rename(&tmp, &out).expect("rename fixture into place");
    out
}

/// What the compiler inlined where: `go build -gcflags=-m` lines
/// `fixtures/pgo/main.go:LINE:COL: inlining call to FUNC`, as (LINE, FUNC).
fn inlined_calls(tc: &GoToolchain, pgo: bool) -> Vec<(u32, String)> {
    let mut cmd = Command::new(tc.go());
    go_env(&mut cmd, tc);
    cmd.args(["build", "-gcflags=-m", "-o", "/dev/null"]);
    if !pgo {
        cmd.arg("-pgo=off");
    }
    let o = cmd.arg("./fixtures/pgo").output().expect("run go build -m");
    let text = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "go build -gcflags=-m failed:\n{text}");
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("fixtures/pgo/main.go:")?;
            let (line, rest) = rest.split_once(':')?;
            let callee = rest.split_once(": inlining call to ")?.1;
            Some((line.parse().ok()?, callee.trim().to_owned()))
        })
        .collect()
}

struct Recorded {
    res: FixtureResult,
    pools: Vec<PoolRow>,
    sites: Vec<SiteRow>,
    stderr: String,
    summary: RunSummary,
}

fn record(bin: &Path) -> Recorded {
    let n = N.to_string();
    let (sites, pools, run) = record_sites_and_pools(bin, &[("ALLOCWATCH_N", &n)]);
    Recorded {
        res: parse_result(&run.stdout),
        pools,
        sites,
        stderr: run.stderr,
        summary: run.summary,
    }
}

fn inspect(bin: &Path) -> String {
    let out = Command::new(allocwatch())
        .arg("inspect")
        .arg(bin)
        .output()
        .expect("run allocwatch inspect");
    assert!(
        out.status.success(),
        "inspect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// allocwatch's (gets, misses, nil returns, puts) of the fixture's pool.
fn pool_counts(r: &Recorded) -> Option<(u64, u64, u64, u64)> {
    let want = &r.res.pools[0];
    r.pools
        .iter()
        .find(|p| p.pool == want.pool || p.new_func == want.new_func)
        .map(|p| (p.gets, p.misses, p.nil_returns, p.puts))
}

fn want_counts(p: &PoolCount) -> (u64, u64, u64, u64) {
    (p.gets, p.misses, p.nil_returns, p.puts)
}

/// The allocations of New are counted through the allocator, inlined Get or
/// not: they must match the misses the fixture counted.
fn check_new_allocations(what: &str, r: &Recorded) {
    for s in &r.res.sites {
        let got: u64 = r
            .sites
            .iter()
            .filter(|x| x.function == s.func && x.line == s.line)
            .map(|x| x.allocs)
            .sum();
        assert_eq!(got, s.count, "{what}: allocations of {}", s.func);
    }
}

fn pgo_for(version: &str) {
    if support::skip_unless_root() {
        return;
    }
    let tc = toolchain(version);
    let warning_line = format!("allocwatch: warning: {WARNING}");

    // The PGO build: Get and Put are inlined into main.hotStep (and only there).
    let what = format!("go{version} PGO");
    let bin = build_pgo(&tc);
    let r = record(&bin);
    assert!(
        r.res.pgo.ends_with("default.pgo"),
        "{what}: not built with the profile (-pgo={:?})",
        r.res.pgo
    );
    let hot = &r.res.callsites[0];
    let cold = &r.res.callsites[1];
    assert_eq!(
        (hot.func.as_str(), cold.func.as_str()),
        ("main.hotStep", "main.coldStep")
    );
    let inlined = inlined_calls(&tc, true);
    let hot_lines = hot.line..hot.line + 4;
    for callee in ["sync.(*Pool).Get", "sync.(*Pool).Put"] {
        assert!(
            inlined
                .iter()
                .any(|(l, c)| c == callee && hot_lines.contains(l)),
            "{what}: {callee} is not inlined into main.hotStep (lines {hot_lines:?}): {inlined:?}"
        );
        assert!(
            !inlined
                .iter()
                .any(|(l, c)| c == callee && (cold.line..cold.line + 4).contains(l)),
            "{what}: {callee} is inlined into the cold caller too: {inlined:?}"
        );
    }
    assert_eq!(
        hot.get_inlined,
        Some(true),
        "{what}: the fixture saw New called from an out-of-line Get"
    );

    // Uprobes on Get and Put never fire for the calls inlined into
    // main.hotStep: allocwatch counts exactly the out-of-line ones (the
    // fixture's total less hotStep's), and says so.
    let want = &r.res.pools[0];
    let got = pool_counts(&r);
    let (g, m, _, p) = got.unwrap_or_default();
    eprintln!(
        "{what} ({}): fixture gets={} misses={} puts={} (main.hotStep: gets={} misses={} puts={}); \
         allocwatch gets={g} misses={m} puts={p}: {} Gets, {} misses, {} Puts not counted",
        r.res.go,
        want.gets,
        want.misses,
        want.puts,
        hot.gets,
        hot.misses,
        hot.puts,
        want.gets.saturating_sub(g),
        want.misses.saturating_sub(m),
        want.puts.saturating_sub(p),
    );
    let (w, h) = (want_counts(want), want_counts(hot));
    assert_eq!(
        got,
        Some((w.0 - h.0, w.1 - h.1, w.2 - h.2, w.3 - h.3)),
        "{what}: allocwatch must count the out-of-line calls exactly (fixture {w:?}, inlined {h:?})"
    );
    assert!(
        r.stderr.lines().any(|l| l.trim() == warning_line),
        "{what}: pool counts are incomplete and record does not warn `{warning_line}`; stderr:\n{}",
        r.stderr
    );
    let text = inspect(&bin);
    assert!(
        text.lines()
            .any(|l| l.trim() == format!("warning: {WARNING}")),
        "{what}: pool counts are incomplete and inspect does not warn:\n{text}"
    );
    assert!(
        text.contains("PGO: yes"),
        "{what}: inspect does not say PGO:\n{text}"
    );
    // The out-of-line calls (the cold caller) are counted either way.
    if let Some(c) = r.summary.caller_counts(|p| p.name == want.pool, &cold.func) {
        assert_eq!(
            c,
            [cold.gets, cold.misses, cold.nil_returns, cold.puts],
            "{what}: {}",
            cold.func
        );
    } else {
        panic!(
            "{what}: no caller {} in the summary:\n{:#?}",
            cold.func, r.summary
        );
    }
    check_new_allocations(&what, &r);

    // The same program without PGO: exact, and no warning.
    let what = format!("go{version} -pgo=off");
    let bin = build_no_pgo(&tc);
    let r = record(&bin);
    assert_eq!(r.res.pgo, "", "{what}: built with a profile");
    let inlined = inlined_calls(&tc, false);
    assert!(
        !inlined.iter().any(|(_, c)| c.starts_with("sync.(*Pool).")),
        "{what}: Pool methods inlined without a profile: {inlined:?}"
    );
    assert_eq!(r.res.callsites[0].get_inlined, Some(false), "{what}");
    assert!(
        !r.stderr.contains(WARNING),
        "{what}: record warns about PGO:\n{}",
        r.stderr
    );
    let text = inspect(&bin);
    assert!(
        !text.contains(WARNING) && text.contains("PGO: no"),
        "{what}: inspect:\n{text}"
    );
    let want = &r.res.pools[0];
    assert_eq!(
        pool_counts(&r),
        Some(want_counts(want)),
        "{what} ({}): (gets, misses, nil returns, puts) of {}\n{}",
        r.res.go,
        want.pool,
        r.stderr
    );
    for c in &r.res.callsites {
        assert_eq!(
            r.summary.caller_counts(|p| p.name == want.pool, &c.func),
            Some([c.gets, c.misses, c.nil_returns, c.puts]),
            "{what}: caller {}\n{:#?}",
            c.func,
            r.summary
        );
    }
    check_new_allocations(&what, &r);
}

#[test]
fn pgo_go1_21() {
    pgo_for("1.21.13");
}

#[test]
fn pgo_go1_27() {
    pgo_for("1.27.3");
}
