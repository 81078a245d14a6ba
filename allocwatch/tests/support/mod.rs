//! Test support shared by the integration tests: the Go toolchains that
//! `cargo xtask setup` installs under `target/toolchains/`, and Go fixture
//! programs from `testdata/` built once per toolchain and variant and cached
//! under `target/fixtures/`.
#![allow(dead_code)]

pub mod http;
pub mod noprofile;
pub mod pools;
pub mod poolwrap;
pub mod proc;
pub mod profile;
pub mod record;
pub mod sites;
pub mod skip;
pub mod summary;

// Each test crate uses some of these.
#[allow(unused_imports)]
pub use pools::PoolCount;
#[allow(unused_imports)]
pub use record::{
    Recorded, read_csv, record, record_cmd, record_json, record_pools_csv, record_refused,
    record_sites_and_pools, start_record,
};
#[allow(unused_imports)]
pub use sites::{
    FixtureResult, Site, SiteRow, check_exact, check_metrics, check_sites, check_sites_where,
    read_site_rows,
};
#[allow(unused_imports)]
pub use skip::{have_tool, skip, skip_unless_root};
#[allow(unused_imports)]
pub use summary::{RunSummary, read_summary};

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Go versions the project supports and tests, oldest first.
pub const GO_VERSIONS: &[&str] = &[
    "1.21.13", "1.22.10", "1.23.9", "1.24.11", "1.25.5", "1.26.6", "1.27.3",
];

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crate has a parent directory")
        .to_path_buf()
}

/// The project's `target/`, where `cargo xtask setup` puts Go toolchains and
/// where fixtures are cached (independent of `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    workspace_root().join("target")
}

#[derive(Clone, Debug)]
pub struct GoToolchain {
    /// e.g. "1.27.3"
    pub version: String,
    /// GOROOT
    pub goroot: PathBuf,
}

impl GoToolchain {
    pub fn go(&self) -> PathBuf {
        self.goroot.join("bin/go")
    }
    /// (major, minor) e.g. (1, 27)
    pub fn minor(&self) -> u32 {
        self.version
            .split('.')
            .nth(1)
            .and_then(|m| m.parse().ok())
            .unwrap_or(0)
    }
}

/// The toolchain for `version` ("1.27.3"), panicking with the fix when missing.
pub fn toolchain(version: &str) -> GoToolchain {
    let goroot = target_dir()
        .join("toolchains")
        .join(format!("go{version}"))
        .join("go");
    assert!(
        goroot.join("bin/go").exists(),
        "Go {version} is not installed under {}: run `cargo xtask setup`",
        goroot.display()
    );
    GoToolchain {
        version: version.to_string(),
        goroot,
    }
}

/// Every supported toolchain.
pub fn toolchains() -> Vec<GoToolchain> {
    GO_VERSIONS.iter().map(|v| toolchain(v)).collect()
}

/// How a fixture is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// `go build`
    Default,
    /// `-ldflags=-s -w`: no `.symtab`, no DWARF
    Stripped,
    /// `-buildmode=pie`
    Pie,
    /// `-buildmode=pie -ldflags=-s -w`
    PieStripped,
    /// cgo with `-ldflags=-linkmode=external` (needs gcc)
    External,
    /// `GOEXPERIMENT=sizespecializedmalloc` (meaningful on Go 1.26)
    SizeSpecialized,
    /// `GOARCH=arm64 go build`
    Arm64,
    /// `GOARCH=arm64 go build -buildmode=pie -ldflags=-s -w`
    Arm64PieStripped,
}

impl Variant {
    pub const ALL_PORTABLE: [Variant; 4] = [
        Variant::Default,
        Variant::Stripped,
        Variant::Pie,
        Variant::PieStripped,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Default => "default",
            Variant::Stripped => "stripped",
            Variant::Pie => "pie",
            Variant::PieStripped => "pie-stripped",
            Variant::External => "external",
            Variant::SizeSpecialized => "sizespecialized",
            Variant::Arm64 => "arm64",
            Variant::Arm64PieStripped => "arm64-pie-stripped",
        }
    }

    fn args(self) -> Vec<&'static str> {
        match self {
            Variant::Default | Variant::SizeSpecialized | Variant::Arm64 => vec![],
            Variant::Stripped => vec!["-ldflags=-s -w"],
            Variant::Pie => vec!["-buildmode=pie"],
            Variant::PieStripped | Variant::Arm64PieStripped => {
                vec!["-buildmode=pie", "-ldflags=-s -w"]
            }
            Variant::External => vec!["-ldflags=-linkmode=external"],
        }
    }
}

/// True when gcc is available for the `External` variant; otherwise the
/// skip of that variant is recorded.
pub fn have_gcc() -> bool {
    have_tool("gcc", "--version", "the externally linked (cgo) variant")
}

fn hash_dir(dir: &Path, h: &mut DefaultHasher) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            hash_dir(&p, h);
        } else {
            p.file_name().hash(h);
            std::fs::read(&p).expect("read source").hash(h);
        }
    }
}

/// The import path of the `testdata` module (its `go.mod`).
const TESTDATA_MODULE: &str = "allocwatch.test";

/// The packages of the `testdata` module that the Go files directly in
/// `dir` name in quotes (imports; a mention in a comment only adds a
/// package to hash), as directories relative to `testdata`.
fn local_imports(dir: &Path) -> Vec<String> {
    let prefix = format!("\"{TESTDATA_MODULE}/");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.extension().is_none_or(|e| e != "go") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read Go source");
        for (at, _) in text.match_indices(&prefix) {
            let rest = &text[at + prefix.len()..];
            if let Some(end) = rest.find('"') {
                found.push(rest[..end].to_string());
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// Hashes what `testdata/<package>` is built from: `go.mod`, the package's
/// directory and, transitively, every package of the module it imports
/// (`testdata/internal/fixture`), so that a change to a shared package
/// rebuilds the fixtures that import it.
pub fn hash_sources(package: &str, h: &mut DefaultHasher) {
    let testdata = workspace_root().join("testdata");
    std::fs::read(testdata.join("go.mod"))
        .expect("testdata/go.mod")
        .hash(h);
    let mut seen = std::collections::BTreeSet::new();
    let mut todo = vec![package.to_string()];
    while let Some(pkg) = todo.pop() {
        if !seen.insert(pkg.clone()) {
            continue;
        }
        let dir = testdata.join(&pkg);
        pkg.hash(h);
        hash_dir(&dir, h);
        todo.extend(local_imports(&dir).into_iter().rev());
    }
}

/// Builds `testdata/<package>` (e.g. "fixtures/allocs" or "demo") with `tc`
/// in `variant`, once: the result is cached under `target/fixtures/` keyed by
/// the sources (with the module's packages it imports), the toolchain and the
/// variant. Returns the executable's path.
pub fn build_go(tc: &GoToolchain, package: &str, variant: Variant) -> PathBuf {
    let testdata = workspace_root().join("testdata");
    let mut h = DefaultHasher::new();
    hash_sources(package, &mut h);
    variant.hash(&mut h);
    tc.version.hash(&mut h);
    let name = package.replace('/', "-");
    let out_dir = target_dir()
        .join("fixtures")
        .join(format!("go{}", tc.version))
        .join(variant.name());
    let out = out_dir.join(format!("{name}-{:016x}", h.finish()));
    if out.exists() {
        return out;
    }
    std::fs::create_dir_all(&out_dir).expect("create fixture dir");
    let tmp = out_dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let cache = target_dir().join("gocache").join(&tc.version);
    let mut cmd = Command::new(tc.go());
    cmd.current_dir(&testdata)
        .arg("build")
        .arg("-o")
        .arg(&tmp)
        .args(variant.args())
        .arg(format!("./{package}"))
        .env("GOROOT", &tc.goroot)
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GOCACHE", &cache)
        .env("GOPATH", target_dir().join("gopath"))
        .env("GOAMD64", "v1")
        .env(
            "CGO_ENABLED",
            if variant == Variant::External {
                "1"
            } else {
                "0"
            },
        );
    if variant == Variant::SizeSpecialized {
        cmd.env("GOEXPERIMENT", "sizespecializedmalloc");
    } else {
        cmd.env_remove("GOEXPERIMENT");
    }
    if matches!(variant, Variant::Arm64 | Variant::Arm64PieStripped) {
        cmd.env("GOARCH", "arm64");
    } else {
        cmd.env_remove("GOARCH");
    }
    let output = cmd.output().expect("run go build");
    assert!(
        output.status.success(),
        "go {} build {package} ({}) failed:\n{}",
        tc.version,
        variant.name(),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::rename(&tmp, &out).expect("rename fixture into place");
    out
}

/// Builds `testdata/fixtures/<name>`.
pub fn fixture(tc: &GoToolchain, name: &str, variant: Variant) -> PathBuf {
    build_go(tc, &format!("fixtures/{name}"), variant)
}

/// True when running as root (privileged kernel tests need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// The allocwatch binary under test.
pub fn allocwatch() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_allocwatch"))
}

/// The fixture's `result <json>` line on its stdout, parsed.
pub fn parse_result<T: serde::de::DeserializeOwned>(stdout: &str) -> T {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("result "))
        .unwrap_or_else(|| panic!("fixture printed no result line:\n{stdout}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad result JSON ({e}): {line}"))
}

/// Where allocwatch probes `bin` (exact mode, pools traced): function,
/// run-time address and the file's first byte of the instruction there.
/// For non-PIE executables (the plan's addresses are the run-time ones).
pub fn probe_sites(bin: &Path) -> Vec<(String, u64, u8)> {
    let gb = allocwatch::gobin::GoBinary::open(bin).expect("parse");
    assert!(!gb.is_pie(), "probe_sites reads non-PIE executables only");
    let plan = allocwatch::plan::plan(
        &gb,
        allocwatch::plan::PlanOptions {
            pools: true,
            mode: allocwatch::plan::Mode::Exact,
            switchable: false,
        },
    )
    .expect("plan");
    let file = std::fs::read(bin).expect("read");
    plan.probes
        .iter()
        .map(|p| (p.function.clone(), p.vaddr, file[p.file_offset as usize]))
        .collect()
}

/// The first byte of every probed instruction of `sites` as process `pid`
/// sees it — `0xcc` where the kernel installed a uprobe — and as the file
/// has it, by function.
pub fn read_probed(pid: u32, sites: &[(String, u64, u8)]) -> Vec<(String, u8, u8)> {
    use std::os::unix::fs::FileExt;
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).expect("open mem");
    sites
        .iter()
        .map(|(f, vaddr, file)| {
            let mut b = [0u8; 1];
            mem.read_exact_at(&mut b, *vaddr).expect("read mem");
            (f.clone(), b[0], *file)
        })
        .collect()
}

/// [`read_probed`] at every [`probe_sites`] of `bin`.
pub fn probed_bytes(pid: u32, bin: &Path) -> Vec<(String, u8, u8)> {
    read_probed(pid, &probe_sites(bin))
}

/// The 8-byte word at `addr` of process `pid`, read through `/proc/PID/mem`.
pub fn read_word(pid: u32, addr: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(format!("/proc/{pid}/mem")).expect("open /proc/PID/mem");
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, addr)
        .unwrap_or_else(|e| panic!("read {addr:#x} of PID {pid}: {e}"));
    u64::from_le_bytes(b)
}

/// Runs shell command line `cmdline` on a pseudo-terminal (util-linux's
/// `script`, with `cmd`'s environment), asserts it succeeded, and returns
/// everything it wrote to the terminal.
pub fn on_terminal(cmdline: &str, mut cmd: Command) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let typescript = dir.path().join("typescript");
    let status = cmd
        .args(["-q", "-f", "-e", "-c", cmdline])
        .arg(&typescript)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run script (util-linux)");
    assert!(status.success(), "{cmdline} on a terminal: {status}");
    String::from_utf8_lossy(&std::fs::read(&typescript).expect("typescript")).into_owned()
}
