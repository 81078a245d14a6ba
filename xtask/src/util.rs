//! Small helpers: paths, printing steps, running commands.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent")
        .to_path_buf()
}

pub fn step(what: &str) {
    println!("xtask: == {what}");
}

pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

/// Cargo set up for Debian's BPF-capable rustc.
pub fn ebpf_cargo() -> Command {
    let mut c = cargo();
    for (k, _) in std::env::vars_os() {
        let ks = k.to_string_lossy();
        if (ks.starts_with("CARGO_") && ks != "CARGO_HOME")
            || ks.starts_with("RUSTC")
            || ks.starts_with("RUSTFLAGS")
        {
            c.env_remove(&k);
        }
    }
    let path = std::env::var("PATH").unwrap_or_default();
    c.env("RUSTC", "/usr/bin/rustc")
        .env("RUSTC_BOOTSTRAP", "1")
        .env(
            "PATH",
            format!("{}:/usr/lib/llvm-22/bin:{path}", cargo_bin().display()),
        );
    c
}

pub fn cargo_bin() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo")
        })
        .join("bin")
}

pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{:?} failed with {status}", cmd.get_program());
    }
    Ok(())
}

/// `cmd` run under `nice -n LEVEL` (same arguments, environment and
/// directory): it gets the CPU that higher-priority work leaves.
pub fn niced(cmd: &Command, level: u8) -> Command {
    let mut niced = Command::new("nice");
    niced
        .args(["-n", &level.to_string()])
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .current_dir(cmd.get_current_dir().unwrap_or(&root()));
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => niced.env(k, v),
            None => niced.env_remove(k),
        };
    }
    niced
}

/// Runs `cmd` with its output captured, which goes into the error when it fails.
pub fn run_quiet(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{:?} failed with {}:\n{}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Output of a command, or None when it cannot run or fails.
pub fn output(cmd: &mut Command) -> Option<String> {
    let o = cmd.output().ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// GOROOT of an installed Go toolchain.
pub fn go_root(version: &str) -> PathBuf {
    root()
        .join("target/toolchains")
        .join(format!("go{version}"))
        .join("go")
}

/// `go` with the project's settings: local toolchain, no module proxy, caches under target/.
pub fn go_cmd(goroot: &Path) -> Command {
    let mut c = Command::new(goroot.join("bin/go"));
    let version = goroot
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    c.env("GOROOT", goroot)
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .env(
            "GOCACHE",
            root()
                .join("target/gocache")
                .join(version.trim_start_matches("go")),
        )
        .env("GOPATH", root().join("target/gopath"))
        // As allocwatch/tests/support builds the fixtures: one cache for both.
        .env("GOAMD64", "v1")
        .env_remove("GOEXPERIMENT")
        .env("CGO_ENABLED", "0");
    c
}
