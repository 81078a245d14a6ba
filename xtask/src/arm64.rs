//! arm64 (issue 17): allocwatch cross-built for `aarch64-unknown-linux-gnu`
//! and run in a `qemu-system-aarch64` VM (TCG: no arm64 machine here) on
//! Debian's arm64 kernel, with an initramfs of `busybox-static:arm64`.
//!
//! In the VM, for Go 1.21 and 1.27 arm64 builds of the fixtures,
//! `allocwatch record` traces:
//! - `allocs` (exact mode), default and PIE + stripped builds;
//! - `pools`, default and PIE + stripped builds;
//! - `poolwrap` (shared `New`, generic and forwarding wrappers), default
//!   and stripped builds;
//! - `noprofile` in sampled mode (stripped; memory profiling off);
//! - `profcmp` in sampled mode and `iters` in exact mode (Go 1.27 only:
//!   range-over-func), against the runtime's own `allocs` profile, which
//!   the fixtures write;
//!
//! and the daemon holds a new process of a name `--exe` spells out, traces
//! it from its first instruction and exits 0 on SIGTERM. The VM prints
//! each run's files (CSV, JSON summary, the fixture's output) to its
//! console between `ARM64 FILE` markers; the host writes them to
//! `target/arm64/results/` and checks them with the same checks as the
//! amd64 tests (`allocwatch/tests/arm64.rs`, run with
//! `ALLOCWATCH_ARM64_RESULTS` set). What the VM checks itself it prints as
//! `ARM64 CHECK <name> ok|FAIL <detail>`; the host asserts on those too.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::setup::{self, deb_installed};
use crate::util::{self, output, root, run, step};

/// Packages of the host (amd64): the VM, the cross linker, the initramfs.
const HOST_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-arm", "qemu-system-aarch64: the arm64 VM (TCG)"),
    (
        "gcc-aarch64-linux-gnu",
        "links allocwatch for aarch64 (and its glibc)",
    ),
    (
        "libc6-dev-arm64-cross",
        "glibc for aarch64: start files to link with, libraries for the VM",
    ),
    ("cpio", "packs the VM's initramfs"),
];

/// arm64 packages installed on the host (multiarch).
const ARM64_PACKAGES: &[(&str, &str)] = &[(
    "libstd-rust-web-dev:arm64",
    "Rust's std for aarch64-unknown-linux-gnu, matching rustc-web",
)];

const TARGET: &str = "aarch64-unknown-linux-gnu";

/// The Go versions whose arm64 builds the VM traces.
const GO_VERSIONS: &[&str] = &["1.21.13", "1.27.3"];

/// The fixtures built for arm64 (name, build variant, `go build` flags,
/// whether by every version of [`GO_VERSIONS`] or the newest only),
/// named `<name>-<variant>-go<version>` in the VM.
const FIXTURES: &[(&str, &str, &[&str], bool)] = &[
    ("allocs", "default", &[], true),
    (
        "allocs",
        "pie-stripped",
        &["-buildmode=pie", "-ldflags=-s -w"],
        true,
    ),
    ("pools", "default", &[], true),
    (
        "pools",
        "pie-stripped",
        &["-buildmode=pie", "-ldflags=-s -w"],
        true,
    ),
    ("poolwrap", "default", &[], true),
    ("poolwrap", "stripped", &["-ldflags=-s -w"], true),
    ("noprofile", "stripped", &["-ldflags=-s -w"], true),
    ("profcmp", "default", &[], true),
    // Range-over-func iterators: Go ≥ 1.23.
    ("iters", "default", &[], false),
    ("iters", "stripped", &["-ldflags=-s -w"], false),
    ("spin", "default", &[], true),
];

/// Allocations of the cost measurement (`spin`, one `main.T` each).
const COST_ALLOCS: u32 = 20_000;

/// How long the VM may run (it takes ~15 s under TCG on 2 cores).
const VM_TIMEOUT: Duration = Duration::from_secs(600);

fn dir() -> PathBuf {
    root().join("target/arm64")
}

/// Installs (idempotent, saying what) the host packages, the arm64 Rust
/// std, and downloads Debian's arm64 kernel and busybox into
/// `target/arm64/`.
pub fn setup() -> Result<()> {
    step("setup: arm64 (cross-build, VM)");
    let foreign =
        output(Command::new("dpkg").arg("--print-foreign-architectures")).unwrap_or_default();
    let mut updated = false;
    if !foreign.lines().any(|a| a.trim() == "arm64") {
        println!("xtask: adding the arm64 architecture to dpkg (for arm64 packages)");
        run(Command::new("dpkg").args(["--add-architecture", "arm64"]))?;
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        updated = true;
    }
    let missing: Vec<&str> = HOST_PACKAGES
        .iter()
        .chain(ARM64_PACKAGES)
        .map(|(p, _)| *p)
        .filter(|p| !deb_installed(p))
        .collect();
    if missing.is_empty() {
        println!(
            "xtask: present: {}",
            HOST_PACKAGES
                .iter()
                .chain(ARM64_PACKAGES)
                .map(|(p, _)| *p)
                .collect::<Vec<_>>()
                .join(", ")
        );
    } else {
        setup::apt_install(&missing, !updated)?;
    }
    let kernel_pkg = kernel_package()?;
    unpack(&kernel_pkg, "kernel")?;
    unpack("busybox-static:arm64", "busybox")?;
    Ok(())
}

/// The versioned kernel package `linux-image-arm64:arm64` depends on.
fn kernel_package() -> Result<String> {
    let deps = output(Command::new("apt-cache").args(["depends", "linux-image-arm64:arm64"]))
        .context("apt-cache depends linux-image-arm64:arm64")?;
    deps.lines()
        .find_map(|l| {
            let p = l.trim().strip_prefix("Depends: ")?;
            p.starts_with("linux-image-").then(|| p.to_string())
        })
        .context("no linux-image-*-arm64 package behind linux-image-arm64:arm64")
}

/// Downloads `pkg` (`apt-get download`) and unpacks it into
/// `target/arm64/<into>`, unless it is there.
fn unpack(pkg: &str, into: &str) -> Result<()> {
    let dest = dir().join(into);
    let stamp = dest.join(".package");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == pkg) {
        println!("xtask: present: {pkg} in {}", dest.display());
        return Ok(());
    }
    let debs = dir().join("debs");
    std::fs::create_dir_all(&debs)?;
    println!(
        "xtask: downloading {pkg} (apt-get download) into {}",
        dest.display()
    );
    // As root into a directory of root's: apt's own user could not write it.
    run(Command::new("apt-get")
        .args(["download", "-qq", "-o", "APT::Sandbox::User=root", pkg])
        .current_dir(&debs))?;
    let name = pkg.split(':').next().unwrap_or(pkg);
    let deb = std::fs::read_dir(&debs)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{name}_")) && n.ends_with("_arm64.deb"))
        })
        .with_context(|| format!("{pkg}: no .deb downloaded"))?;
    if dest.exists() {
        std::fs::remove_dir_all(&dest)?;
    }
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dest))?;
    std::fs::write(&stamp, pkg)?;
    Ok(())
}

/// The kernel image unpacked by [`setup`].
fn vmlinuz() -> Result<PathBuf> {
    let boot = dir().join("kernel/boot");
    std::fs::read_dir(&boot)
        .with_context(|| format!("{}: run `cargo xtask setup --arm64`", boot.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .context("no vmlinuz-* in the arm64 kernel package")
}

/// allocwatch built for aarch64 (the dev profile, as the tests use: it
/// builds in less time) with Debian's rustc-web and its arm64 std, linked
/// by `aarch64-linux-gnu-gcc`; the eBPF objects of the main build are
/// reused when they are there.
pub fn cross_build(niced: bool) -> Result<PathBuf> {
    let target_dir = root().join("target/arm64-build");
    let mut c = util::cargo();
    let bpf = root().join("target/bpf");
    if bpf.is_dir() {
        c.env("ALLOCWATCH_BPF_TARGET_DIR", &bpf);
    }
    c.args(["build", "-p", "allocwatch", "--bin", "allocwatch"])
        .args(["--target", TARGET])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTC", "/usr/bin/rustc")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTFLAGS")
        .env(
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
            "aarch64-linux-gnu-gcc",
        );
    if niced {
        util::run_quiet(&mut util::niced(&c, 19))?;
    } else {
        run(&mut c)?;
    }
    Ok(target_dir.join(TARGET).join("debug/allocwatch"))
}

/// Fixture `name` built by Go `version` for arm64 with `flags`.
fn go_fixture(version: &str, name: &str, variant: &str, flags: &[&str]) -> Result<PathBuf> {
    let out = dir().join("fixtures");
    std::fs::create_dir_all(&out)?;
    let out = out.join(format!("{name}-{variant}-go{version}"));
    let mut c = util::go_cmd(&util::go_root(version));
    c.current_dir(root().join("testdata"))
        .arg("build")
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(format!("./fixtures/{name}"))
        .env("GOARCH", "arm64");
    util::run_quiet(&mut c)
        .with_context(|| format!("go{version} build {name} {variant} (GOARCH=arm64)"))?;
    Ok(out)
}

/// What the VM's `/init` runs.
fn init_script() -> String {
    let mut s = String::from(
        r#"#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
ip link set lo up
mkdir -p /out
check() { if [ "$2" = ok ]; then echo "ARM64 CHECK $1 ok"; else echo "ARM64 CHECK $1 FAIL $3"; fi; }
[ "$(uname -m)" = aarch64 ] && r=ok || r=no; check machine $r "$(uname -m)"
[ -r /sys/kernel/btf/vmlinux ] && r=ok || r=no; check btf $r "no /sys/kernel/btf/vmlinux"
# record NAME ARGS... -- FIXTURE: runs allocwatch record (GOMAXPROCS=1, as
# the amd64 tests), keeps its files in /out
record() {
    n=$1; shift
    GOMAXPROCS=1 /allocwatch record --json /out/$n.json "$@" > /out/$n.out 2> /out/$n.err
    e=$?
    [ $e = 0 ] && r=ok || r=no
    check record-$n $r "exit $e: $(tail -c 600 /out/$n.err)"
}
# profiled NAME ARGS... -- FIXTURE: record, the fixture writing the
# runtime's allocs profile before and after its workload (base64 in /out)
profiled() {
    n=$1
    mkdir -p /tmp/p-$n
    ALLOCWATCH_PROFILE_DIR=/tmp/p-$n record "$@"
    for f in before after; do base64 /tmp/p-$n/$f.pb.gz > /out/$n.$f.pb.gz.b64; done
}
"#,
    );
    for v in GO_VERSIONS {
        s.push_str(&format!(
            r#"for b in default pie-stripped; do
    GOGC=off ALLOCWATCH_N=1000 record allocs-$b-go{v} --csv /out/allocs-$b-go{v}.csv -- /allocs-$b-go{v}
    GOGC=off ALLOCWATCH_N=500 record pools-$b-go{v} --csv /out/pools-$b-go{v}.sites.csv --pools-csv /out/pools-$b-go{v}.csv -- /pools-$b-go{v}
done
for b in default stripped; do
    GOGC=off record poolwrap-$b-go{v} --pools-csv /out/poolwrap-$b-go{v}.csv -- /poolwrap-$b-go{v}
done
record noprofile-stripped-go{v} --mode sampled --csv /out/noprofile-stripped-go{v}.csv -- /noprofile-stripped-go{v}
ALLOCWATCH_ROUNDS=2 profiled profcmp-default-go{v} --mode sampled --csv /out/profcmp-default-go{v}.csv -- /profcmp-default-go{v}
# The cost per allocation: spin untraced, then traced in exact mode.
export ALLOCWATCH_N={COST_ALLOCS} ALLOCWATCH_BENCH=1
GOMAXPROCS=1 /spin-default-go{v} | grep '^bench ' > /out/cost-untraced-go{v}.txt
record cost-exact-go{v} -- /spin-default-go{v}
unset ALLOCWATCH_N ALLOCWATCH_BENCH
"#
        ));
    }
    let newest = GO_VERSIONS.last().copied().unwrap_or_default();
    s.push_str(&format!(
        r#"for b in default stripped; do
    GODEBUG=memprofilerate=1 profiled iters-$b-go{newest} --csv /out/iters-$b-go{newest}.csv -- /iters-$b-go{newest}
done
/allocwatch daemon --exe '^allocs-default-go{newest}$' --mode exact --listen 127.0.0.1:9464 -v > /tmp/daemon 2>&1 &
d=$!
i=0; while ! grep -q serving /tmp/daemon && [ $i -lt 120 ]; do sleep 1; i=$((i+1)); done
grep -q "new processes named allocs-default-go{newest} are held" /tmp/daemon && r=ok || r=no
check daemon-arms-the-name $r "$(cat /tmp/daemon)"
ALLOCWATCH_N=100 GOMAXPROCS=1 /allocs-default-go{newest} > /tmp/out 2>&1; e=$?
grep -q '^result ' /tmp/out && [ $e = 0 ] && r=ok || r=no
check held-process-runs-to-its-end $r "exit $e: $(tail -c 300 /tmp/out)"
i=0; while ! grep -q "traced from its first instruction" /tmp/daemon && [ $i -lt 60 ]; do sleep 1; i=$((i+1)); done
grep -q "PID .* traced from its first instruction" /tmp/daemon && r=ok || r=no
check daemon-traces-the-new-process $r "$(cat /tmp/daemon)"
kill -TERM $d; wait $d; e=$?
[ $e = 0 ] && r=ok || r=no
check daemon-exits-0-on-sigterm $r "exit $e: $(cat /tmp/daemon)"
for f in /out/*; do echo "ARM64 FILE ${{f#/out/}}"; cat $f; echo; echo "ARM64 FILE END"; done
echo "ARM64 DONE"
poweroff -f
"#
    ));
    s
}

/// `ns_per_alloc=` of a `bench` line of `spin`.
fn ns_per_alloc(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix("bench "))?
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ns_per_alloc="))?
        .parse()
        .ok()
}

/// Prints what an allocation costs in the VM untraced and traced in exact
/// mode, and the ratio (TCG emulates the CPU: only the ratio means
/// anything, and it is no figure for real arm64 hardware).
fn print_cost(results: &Path, version: &str) {
    let read = |f: String| std::fs::read_to_string(results.join(f)).unwrap_or_default();
    let untraced = ns_per_alloc(&read(format!("cost-untraced-go{version}.txt")));
    let exact = ns_per_alloc(&read(format!("cost-exact-go{version}.out")));
    match (untraced, exact) {
        (Some(u), Some(e)) if u > 0.0 => println!(
            "xtask: arm64 (TCG), go{version}: an allocation of spin takes {u:.0} ns untraced, {e:.0} ns traced in exact mode: x{:.1}",
            e / u
        ),
        _ => println!("xtask: arm64 (TCG), go{version}: no cost measurement in the VM's output"),
    }
}

/// Writes the bytes of base64 `text` to `to` (coreutils' `base64 -d`).
fn decode_base64(text: &str, to: &Path) -> Result<()> {
    use std::io::Write;
    let mut child = Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(to)?)
        .spawn()
        .context("base64 -d")?;
    child
        .stdin
        .take()
        .context("base64's stdin")?
        .write_all(text.as_bytes())?;
    let status = child.wait()?;
    if !status.success() {
        bail!("base64 -d of {}: {status}", to.display());
    }
    Ok(())
}

/// How many `ARM64 CHECK` lines the VM prints.
fn expected_checks() -> usize {
    // machine, btf; a record per fixture run; two of iters; four of the
    // daemon.
    2 + GO_VERSIONS.len() * 9 + 2 + 4
}

/// The files the VM printed between `ARM64 FILE` markers, written to
/// `target/arm64/results/` (emptied first).
fn save_files(console: &str) -> Result<PathBuf> {
    let out = dir().join("results");
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    std::fs::create_dir_all(&out)?;
    let mut current: Option<(String, String)> = None;
    for line in console.lines().map(|l| l.trim_end_matches('\r')) {
        match (&mut current, line.strip_prefix("ARM64 FILE ")) {
            (None, Some(name)) if name != "END" => {
                current = Some((name.to_string(), String::new()))
            }
            (Some((name, text)), Some("END")) => {
                if name.contains('/') || name.starts_with('.') {
                    bail!("arm64 VM: odd file name {name:?}");
                }
                match name.strip_suffix(".b64") {
                    // A binary file (a profile): base64 in the console.
                    Some(binary) => decode_base64(text, &out.join(binary))?,
                    None => std::fs::write(out.join(&*name), text.as_bytes())?,
                }
                current = None;
            }
            (Some((_, text)), _) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    Ok(out)
}

/// The shared libraries `bin` needs, from the cross toolchain's glibc.
fn libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let dynamic = output(Command::new("aarch64-linux-gnu-readelf").arg("-d").arg(bin))
        .context("aarch64-linux-gnu-readelf")?;
    let mut libs: Vec<PathBuf> = dynamic
        .lines()
        .filter_map(|l| l.split("Shared library: [").nth(1)?.strip_suffix(']'))
        .map(|n| Path::new("/usr/aarch64-linux-gnu/lib").join(n))
        .collect();
    libs.push(PathBuf::from(
        "/usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1",
    ));
    libs.dedup();
    Ok(libs)
}

/// Packs the initramfs: busybox, allocwatch (stripped) and its libraries,
/// the fixtures, `/init`.
fn initramfs(allocwatch: &Path, fixtures: &[PathBuf]) -> Result<PathBuf> {
    let tree = dir().join("initramfs");
    if tree.exists() {
        std::fs::remove_dir_all(&tree)?;
    }
    for d in ["bin", "lib", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(tree.join(d))?;
    }
    std::fs::copy(dir().join("busybox/bin/busybox"), tree.join("bin/busybox"))
        .context("busybox: run `cargo xtask setup --arm64`")?;
    std::os::unix::fs::symlink("busybox", tree.join("bin/sh"))?;
    run(Command::new("aarch64-linux-gnu-strip")
        .arg("-o")
        .arg(tree.join("allocwatch"))
        .arg(allocwatch))?;
    for lib in libraries(allocwatch)? {
        let name = lib.file_name().context("library name")?;
        std::fs::copy(&lib, tree.join("lib").join(name))
            .with_context(|| format!("{}", lib.display()))?;
    }
    for f in fixtures {
        std::fs::copy(f, tree.join(f.file_name().context("fixture name")?))?;
    }
    let init = tree.join("init");
    std::fs::write(&init, init_script())?;
    run(Command::new("chmod").arg("755").arg(&init))?;
    let out = dir().join("initramfs.cpio.gz");
    run(Command::new("sh")
        .arg("-c")
        .arg("cd \"$1\" && find . | cpio -o -H newc --quiet | gzip -1 > \"$2\"")
        .arg("sh")
        .arg(&tree)
        .arg(&out))?;
    Ok(out)
}

/// Boots the VM and returns what it printed.
fn boot(initramfs: &Path) -> Result<String> {
    let log = dir().join("vm.log");
    let file = std::fs::File::create(&log)?;
    let mut vm = Command::new("qemu-system-aarch64")
        .args(["-M", "virt", "-cpu", "max", "-m", "1024", "-smp", "2"])
        // No network card: nothing needs one, and its boot ROM comes with
        // a package that is only recommended.
        .args(["-nographic", "-no-reboot", "-nic", "none", "-kernel"])
        .arg(vmlinuz()?)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyAMA0 panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .context("qemu-system-aarch64: run `cargo xtask setup --arm64`")?;
    let start = Instant::now();
    loop {
        if let Some(status) = vm.try_wait()? {
            println!(
                "xtask: the VM ran {:.0} s ({status})",
                start.elapsed().as_secs_f64()
            );
            break;
        }
        if start.elapsed() > VM_TIMEOUT {
            let _ = vm.kill();
            let _ = vm.wait();
            bail!(
                "the arm64 VM did not power off within {} s; its console is in {}",
                VM_TIMEOUT.as_secs(),
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(String::from_utf8_lossy(&std::fs::read(&log)?).into_owned())
}

/// Builds, boots and checks (see the module documentation); `allocwatch`
/// is the aarch64 build when already made.
pub fn test(allocwatch: Option<PathBuf>) -> Result<()> {
    let allocwatch = match allocwatch {
        Some(a) => a,
        None => {
            step("arm64: allocwatch for aarch64 (rustc-web)");
            cross_build(false)?
        }
    };
    step("arm64: the fixtures for arm64 (Go 1.21, 1.27), the initramfs, the VM");
    let mut fixtures = Vec::new();
    let newest = GO_VERSIONS.last().copied().unwrap_or_default();
    for v in GO_VERSIONS {
        for (name, variant, flags, every) in FIXTURES {
            if *every || *v == newest {
                fixtures.push(go_fixture(v, name, variant, flags)?);
            }
        }
    }
    let image = initramfs(&allocwatch, &fixtures)?;
    let console = boot(&image)?;
    let checks: Vec<&str> = console
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').split("ARM64 CHECK ").nth(1))
        .collect();
    for c in &checks {
        println!("xtask: arm64: {c}");
    }
    let failed: Vec<&&str> = checks.iter().filter(|c| !c.ends_with(" ok")).collect();
    let done = console.contains("ARM64 DONE");
    let expected = expected_checks();
    if !failed.is_empty() || !done || checks.len() != expected {
        bail!(
            "arm64 VM: {} of {expected} checks passed{}; its console is in {}",
            checks.len() - failed.len(),
            if done { "" } else { ", and it did not finish" },
            dir().join("vm.log").display()
        );
    }
    println!("xtask: arm64: all {expected} checks in the VM passed");
    let results = save_files(&console)?;
    for v in GO_VERSIONS {
        print_cost(&results, v);
    }
    step("arm64: the VM's counts against the fixtures' (allocwatch/tests/arm64.rs)");
    let mut c = util::cargo();
    c.args([
        "test",
        "-p",
        "allocwatch",
        "--test",
        "arm64",
        "--",
        "--ignored",
    ])
    .args(["--test-threads", "1"])
    .env("ALLOCWATCH_ARM64_RESULTS", &results);
    run(&mut c).context("the arm64 results do not agree with the fixtures")?;
    Ok(())
}
