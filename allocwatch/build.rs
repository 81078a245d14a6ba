//! Builds the eBPF programs (`allocwatch-ebpf`) for `bpfel-unknown-none` with
//! Debian's `rustc-web` (which ships a precompiled BPF `core`) and
//! `bpf-linker`, and hands the object to `include_bytes_aligned!` through
//! `OUT_DIR`. `cargo xtask setup` installs that toolchain.

use std::path::{Path, PathBuf};
use std::process::Command;

const BPF_RUSTC: &str = "/usr/bin/rustc";
const BPF_TARGET: &str = "bpfel-unknown-none";

fn fail(msg: &str) -> ! {
    println!("cargo::error={msg}");
    std::process::exit(1);
}

fn find_in_path(name: &str, extra: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().cloned())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The root of cargo's target directory (it holds `CACHEDIR.TAG`).
fn target_root(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|a| a.join("CACHEDIR.TAG").is_file())
        .map_or_else(|| out_dir.join("ebpf-target"), Path::to_path_buf)
}

fn main() {
    let manifest =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().expect("workspace root").to_path_buf();
    let ebpf = root.join("allocwatch-ebpf");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    for p in [
        "allocwatch-ebpf/src",
        "allocwatch-ebpf/Cargo.toml",
        "allocwatch-ebpf/Cargo.lock",
        "allocwatch-common/src",
    ] {
        println!("cargo::rerun-if-changed={}", root.join(p).display());
    }

    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".cargo"))
        .join("bin");
    let sysroot_bpf = Path::new("/usr/lib/rustlib").join(BPF_TARGET);
    if !Path::new(BPF_RUSTC).is_file() || !sysroot_bpf.is_dir() {
        fail(
            "the BPF toolchain (Debian's rustc-web and libstd-rust-web-dev-bpf) is missing: run `cargo xtask setup`",
        );
    }
    let Some(linker) = find_in_path("bpf-linker", std::slice::from_ref(&cargo_bin)) else {
        fail("bpf-linker is missing: run `cargo xtask setup`");
    };

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // ALLOCWATCH_BPF_TARGET_DIR: where another build (`cargo xtask test`'s
    // clippy, in a target directory of its own) finds the eBPF build of the
    // main one, instead of building it again.
    println!("cargo::rerun-if-env-changed=ALLOCWATCH_BPF_TARGET_DIR");
    // The programs read the registers of the architecture allocwatch is
    // built for: one eBPF build (and target directory) per architecture.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if !matches!(arch.as_str(), "x86_64" | "aarch64") {
        fail(&format!(
            "allocwatch traces Go programs on x86_64 and aarch64, not {arch}"
        ));
    }
    let target_dir = std::env::var_os("ALLOCWATCH_BPF_TARGET_DIR")
        .map_or_else(|| target_root(&out_dir).join("bpf"), PathBuf::from);
    let target_dir = if arch == "x86_64" {
        target_dir
    } else {
        target_dir.join(&arch)
    };
    let mut path = vec![
        linker.parent().expect("linker dir").to_path_buf(),
        PathBuf::from("/usr/lib/llvm-22/bin"),
    ];
    path.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));

    let mut cmd = Command::new(cargo);
    cmd.current_dir(&ebpf)
        .args(["build", "--release", "--target", BPF_TARGET])
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer cargo's settings (wrappers such as clippy-driver, flags, the
    // host rustc) must not leak into the BPF build.
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if (k.starts_with("CARGO_") && k != "CARGO_HOME")
            || k.starts_with("RUSTC")
            || k.starts_with("RUSTFLAGS")
            || k == "RUSTDOCFLAGS"
        {
            cmd.env_remove(&key);
        }
    }
    cmd.env("RUSTC", BPF_RUSTC)
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{arch}\""),
        )
        .env("RUSTC_BOOTSTRAP", "1")
        .env("PATH", std::env::join_paths(path).expect("PATH"));
    let status = match cmd.status() {
        Ok(s) => s,
        Err(e) => fail(&format!("could not run cargo for the eBPF programs: {e}")),
    };
    if !status.success() {
        fail(
            "building the eBPF programs (allocwatch-ebpf) failed; the compiler's messages are above",
        );
    }
    // The tracing programs, and the daemon's exec notification.
    for bin in ["allocwatch", "execwatch"] {
        let obj = target_dir.join(BPF_TARGET).join("release").join(bin);
        if let Err(e) = std::fs::copy(&obj, out_dir.join(format!("{bin}.bpf.o"))) {
            fail(&format!("eBPF object {} not found: {e}", obj.display()));
        }
    }
}
