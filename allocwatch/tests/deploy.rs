//! The deployment files under `deploy/` and the Grafana dashboard, checked
//! against the tools that read them and against the daemon itself.
//!
//! - `systemd-analyze verify` accepts the unit (on a copy whose `ExecStart`
//!   is the allocwatch under test), `systemd-analyze security` rates its
//!   hardening, and the unit keeps the directives docs/deploy.md promises.
//! - The unit's capabilities are enough: the daemon run as another user
//!   than its target (uid 65534), with exactly the unit's capabilities as
//!   ambient ones, traces a Go process of root in the default sampled
//!   mode; without `CAP_DAC_OVERRIDE` it cannot (why the unit has it).
//! - The DaemonSet manifest, parsed as YAML, has what a node agent needs
//!   (hostPID, capabilities and not privileged, read-only root file
//!   system, the metrics port, scrape annotations, resources, probes on
//!   /metrics); its entrypoint finds a Go process by executable name on
//!   this host and the daemon it starts traces it.
//! - The dashboard is JSON and its queries name only series that a real
//!   `/metrics` scrape of the daemon declares.
//!
//! The Dockerfile is not built here: there is no Docker daemon and no
//! network beyond Debian's and crates.io's registries.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use support::http::{get_text, start_daemon_cmd};
use support::proc::Proc;
use support::{
    Variant, allocwatch, fixture, have_tool, skip_unless_root, toolchain, workspace_root,
};

const GO: &str = "1.27.3";

/// The unit's worst accepted `systemd-analyze security` exposure, ×10
/// (`--threshold`; 10 = fully exposed, the unit rates 2.7).
const MAX_EXPOSURE: u32 = 35;

fn deploy_file(rel: &str) -> PathBuf {
    workspace_root().join("deploy").join(rel)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The unit's `Key=value` lines (repeated keys in order), comments skipped.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.trim().split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

/// The one value of `key` in the unit.
fn unit_value(unit: &str, key: &str) -> String {
    let v = unit_values(unit, key);
    assert_eq!(v.len(), 1, "{key}= once in the unit: {v:?}");
    v[0].clone()
}

/// The unit with `ExecStart` running the allocwatch under test, in `dir`.
fn unit_copy(dir: &Path) -> PathBuf {
    let unit = read(&deploy_file("systemd/allocwatch.service"));
    let exec = unit_value(&unit, "ExecStart");
    let args = exec
        .strip_prefix("/usr/local/bin/allocwatch ")
        .unwrap_or_else(|| panic!("ExecStart runs /usr/local/bin/allocwatch: {exec}"));
    let copy = unit.replace(
        &format!("ExecStart={exec}"),
        &format!("ExecStart={} {args}", allocwatch().display()),
    );
    let path = dir.join("allocwatch.service");
    std::fs::write(&path, copy).expect("write the unit's copy");
    path
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn systemd_accepts_the_unit() {
    let unit = read(&deploy_file("systemd/allocwatch.service"));
    assert_eq!(unit_value(&unit, "ProtectSystem"), "strict");
    assert_eq!(unit_value(&unit, "DynamicUser"), "yes", "not root");
    assert_eq!(unit_value(&unit, "NoNewPrivileges"), "yes");
    assert!(unit_values(&unit, "User").is_empty(), "no User=root");
    let ambient = unit_value(&unit, "AmbientCapabilities");
    assert_eq!(
        ambient,
        unit_value(&unit, "CapabilityBoundingSet"),
        "the bounding set is the ambient set"
    );
    for cap in ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN", "CAP_SYS_PTRACE"] {
        assert!(ambient.split(' ').any(|c| c == cap), "{cap} in {ambient}");
    }
    assert!(
        unit_value(&unit, "ExecStart").ends_with(" daemon $ALLOCWATCH_ARGS"),
        "the flags come from the environment file"
    );
    let env = unit_value(&unit, "EnvironmentFile");
    assert!(
        read(&deploy_file("systemd/allocwatch.env")).contains("\nALLOCWATCH_ARGS=--exe "),
        "the example {env} sets ALLOCWATCH_ARGS"
    );
    if !have_tool("systemd-analyze", "--version", "the systemd unit") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let copy = unit_copy(tmp.path());
    // verify warns (unknown keys, bad values) on stderr and still exits 0.
    let (ok, out) = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy));
    assert!(
        ok && out.trim().is_empty(),
        "systemd-analyze verify:\n{out}"
    );
    let (ok, out) = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(format!("--threshold={MAX_EXPOSURE}"))
        .arg(&copy));
    assert!(
        ok,
        "exposure above {}.{}:\n{out}",
        MAX_EXPOSURE / 10,
        MAX_EXPOSURE % 10
    );
}

/// The unit's ambient capabilities as `setpriv` names them (`+bpf,…`).
fn unit_caps() -> Vec<String> {
    let unit = read(&deploy_file("systemd/allocwatch.service"));
    unit_value(&unit, "AmbientCapabilities")
        .split(' ')
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_ascii_lowercase()))
        .collect()
}

/// A spin fixture of root that allocates `main.spinAlloc` without pause.
fn spin(bin: &Path) -> (Proc, u32) {
    let mut c = Command::new(bin);
    c.env("ALLOCWATCH_WAIT", "1")
        .env("ALLOCWATCH_SECONDS", "120")
        .env("GOMAXPROCS", "1");
    let (mut fx, pid) = Proc::ready(c, "spin");
    fx.go();
    (fx, pid)
}

/// One entry of `/targets`.
#[derive(Debug, Deserialize)]
struct TargetJson {
    pid: u32,
    state: String,
    mode: Option<String>,
    reason: Option<String>,
}

fn target(addr: std::net::SocketAddr, pid: u32) -> TargetJson {
    let list: Vec<TargetJson> =
        serde_json::from_str(&get_text(addr, "/targets")).expect("/targets JSON");
    list.into_iter()
        .find(|t| t.pid == pid)
        .unwrap_or_else(|| panic!("PID {pid} not listed at /targets"))
}

/// `allocwatch daemon --listen 127.0.0.1:0 ARGS` as uid and gid 65534
/// with `caps` only (inheritable, ambient, bounding).
fn as_nobody(caps: &[String], args: &[&str]) -> Command {
    let caps = caps.join(",");
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(format!("--inh-caps=-all,{caps}"))
        .arg(format!("--ambient-caps={caps}"))
        .arg(format!("--bounding-set=-all,{caps}"))
        .arg(allocwatch())
        .args(["daemon", "--listen", "127.0.0.1:0"])
        .args(args);
    c
}

/// `allocwatch daemon --pid PID` (default: sampled mode) as uid and gid
/// 65534 with `caps` only (inheritable, ambient, bounding): what
/// `DynamicUser=yes` with the unit's capabilities gives it. Its `/targets`
/// entry for `pid`, after SIGTERM and exit 0.
fn daemon_as_nobody(caps: &[String], pid: u32) -> TargetJson {
    let (mut d, addr) = start_daemon_cmd(as_nobody(caps, &["--pid", &pid.to_string()]));
    let t = target(addr, pid);
    d.signal(libc::SIGTERM);
    let (status, err) = d.finish(Duration::from_secs(10));
    assert!(status.success(), "daemon with {caps:?}: {status}\n{err}");
    t
}

#[test]
fn the_unit_s_capabilities_trace_another_user_s_process() {
    if skip_unless_root() || !have_tool("setpriv", "--version", "the unit's capabilities") {
        return;
    }
    let caps = unit_caps();
    let (mut fx, pid) = spin(&fixture(&toolchain(GO), "spin", Variant::Default));
    let t = daemon_as_nobody(&caps, pid);
    assert_eq!(
        (t.state.as_str(), t.mode.as_deref()),
        ("tracing", Some("sampled")),
        "as uid 65534 with {caps:?}: {t:?}"
    );
    // Without CAP_DAC_OVERRIDE, /proc/PID/mem of root's process (mode
    // 0600) cannot be opened to set runtime.MemProfileRate.
    let fewer: Vec<String> = caps
        .iter()
        .filter(|c| *c != "+dac_override")
        .cloned()
        .collect();
    assert!(fewer.len() < caps.len(), "the unit grants CAP_DAC_OVERRIDE");
    let t = daemon_as_nobody(&fewer, pid);
    assert_eq!(t.state, "skipped", "without CAP_DAC_OVERRIDE: {t:?}");
    assert!(
        t.reason
            .as_deref()
            .is_some_and(|r| r.contains("/proc/PID/mem")),
        "{t:?}"
    );
    assert!(fx.running(), "the target runs on");
    fx.signal(libc::SIGINT);
    let (status, out) = fx.finish(Duration::from_secs(30));
    assert!(status.success(), "spin: {status}\n{out}");
}

/// An `allocs` fixture of root run from `exe` in a session of its own (so
/// that only `CAP_KILL` lets another user send it `SIGCONT`), straight
/// away: `n` iterations, then its exit status and output.
fn allocs_in_own_session(exe: &Path, n: u32) -> (std::process::ExitStatus, String) {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(exe);
    c.env("ALLOCWATCH_N", n.to_string()).env("GOMAXPROCS", "1");
    // SAFETY: setsid is async-signal-safe and touches no memory.
    unsafe {
        c.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut fx = Proc::spawn(c, "allocs in its own session", false);
    fx.finish(Duration::from_secs(30))
}

#[test]
fn the_unit_s_capabilities_let_a_held_process_go() {
    if skip_unless_root() || !have_tool("setpriv", "--version", "the unit's capabilities") {
        return;
    }
    let caps = unit_caps();
    assert!(
        caps.iter().any(|c| c == "+kill"),
        "the unit grants CAP_KILL"
    );
    let dir = tempfile::tempdir_in(support::target_dir()).expect("tempdir");
    let exe = dir.path().join(format!("aw-held-{}", std::process::id()));
    std::fs::copy(fixture(&toolchain(GO), "allocs", Variant::Default), &exe).expect("copy");
    let pattern = format!("^{}$", exe.display());
    let fewer: Vec<String> = caps.iter().filter(|c| *c != "+kill").cloned().collect();
    for (caps, held) in [(&caps, true), (&fewer, false)] {
        let mut c = as_nobody(caps, &["--exe", &pattern, "--mode", "exact", "-v"]);
        c.env_remove("RUST_LOG");
        let (mut d, _addr) = start_daemon_cmd(c);
        // Root's process, another session: stopped at its first
        // instruction (with CAP_KILL), let go, and it runs to its end.
        let (status, out) = allocs_in_own_session(&exe, 100);
        assert!(status.success(), "{caps:?}: {status}\n{out}");
        assert!(out.contains("result "), "{out}");
        d.signal(libc::SIGTERM);
        let (status, err) = d.finish(Duration::from_secs(10));
        assert!(status.success(), "daemon with {caps:?}: {status}\n{err}");
        let traced = err.contains("traced from its first instruction");
        assert_eq!(traced, held, "with {caps:?}:\n{err}");
        if !held {
            assert!(err.contains("no CAP_KILL"), "{err}");
        }
    }
}

/// The documents of a YAML file, as JSON values.
fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = read(path);
    serde_norway::Deserializer::from_str(&text)
        .map(|d| {
            Value::deserialize(d).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
        })
        .collect()
}

/// `v` at the JSON pointer `at`, which must be there.
fn at<'a>(v: &'a Value, at: &str) -> &'a Value {
    v.pointer(at)
        .unwrap_or_else(|| panic!("no {at} in the DaemonSet"))
}

/// The manifest's DaemonSet and its one container.
fn daemonset() -> (Value, Value) {
    let docs = yaml_docs(&deploy_file("kubernetes/daemonset.yaml"));
    let ds = docs
        .into_iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet in the manifest");
    assert_eq!(ds["apiVersion"], "apps/v1");
    let containers = at(&ds, "/spec/template/spec/containers")
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1, "one container");
    let c = containers[0].clone();
    (ds, c)
}

#[test]
fn the_daemonset_has_what_a_node_agent_needs() {
    let (ds, c) = daemonset();
    let pod = at(&ds, "/spec/template/spec");
    assert_eq!(pod["hostPID"], true, "the node's processes");
    assert_eq!(
        at(&ds, "/spec/selector/matchLabels"),
        at(&ds, "/spec/template/metadata/labels"),
        "the selector matches the pods"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false, "not privileged");
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(at(sc, "/capabilities/drop"), &serde_json::json!(["ALL"]));
    let added: BTreeSet<String> = at(sc, "/capabilities/add")
        .as_array()
        .expect("capabilities.add")
        .iter()
        .map(|c| format!("+{}", c.as_str().expect("a name").to_ascii_lowercase()))
        .collect();
    assert_eq!(
        added,
        unit_caps().into_iter().collect(),
        "the systemd unit's capabilities"
    );
    // The port, the annotations and the probes agree.
    let ports = c["ports"].as_array().expect("ports");
    let metrics = ports
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("a port named metrics");
    let port = metrics["containerPort"].as_u64().expect("containerPort");
    let ann = at(&ds, "/spec/template/metadata/annotations");
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], port.to_string());
    assert_eq!(ann["prometheus.io/path"], "/metrics");
    for probe in ["livenessProbe", "readinessProbe"] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], "/metrics", "{probe}");
        assert!(
            get["port"] == "metrics" || get["port"] == port,
            "{probe} on the metrics port: {get}"
        );
    }
    for kind in ["requests", "limits"] {
        for res in ["cpu", "memory"] {
            assert!(
                c["resources"][kind][res].is_string(),
                "resources.{kind}.{res}"
            );
        }
    }
    let script = entrypoint(&c);
    // Kubernetes replaces $(NAME) of the container's variables and $$ in
    // command: the script must reach sh as it is (as the test runs it).
    let env = c["env"].as_array().expect("env");
    assert!(
        !script.contains("$$")
            && env
                .iter()
                .all(|e| !script.contains(&format!("$({})", e["name"].as_str().unwrap_or("")))),
        "Kubernetes would rewrite the entrypoint:\n{script}"
    );
    assert!(
        script.contains(&format!("--listen 0.0.0.0:{port}")),
        "listens where the probes and Prometheus reach it:\n{script}"
    );
    let mounts = c["volumeMounts"].as_array().expect("volumeMounts");
    assert!(
        mounts
            .iter()
            .all(|m| m["readOnly"] == true && m["mountPath"] == "/sys/kernel/btf"),
        "only /sys/kernel/btf, read-only: {mounts:?}"
    );
}

/// The container's `/bin/sh -c` script.
fn entrypoint(c: &Value) -> String {
    let cmd = c["command"].as_array().expect("command");
    assert_eq!(cmd.len(), 3, "/bin/sh -c SCRIPT: {cmd:?}");
    assert_eq!(
        (&cmd[0], &cmd[1]),
        (&Value::from("/bin/sh"), &Value::from("-c"))
    );
    cmd[2].as_str().expect("script").to_string()
}

/// The value of the container's environment variable `name`.
fn env_value(c: &Value, name: &str) -> String {
    c["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
        .unwrap_or_else(|| panic!("no {name} in env"))
        .to_string()
}

/// The manifest's entrypoint, run on this host as the pod runs it (root
/// with the host's PIDs), with `ALLOCWATCH_EXE` a pattern that only a copy
/// of the spin fixture under a name of its own matches: the daemon it
/// starts finds that process and traces it. Only the binary's path
/// and the address (loopback, any free port) are changed in the script.
#[test]
fn the_daemonset_entrypoint_finds_the_service() {
    if skip_unless_root() {
        return;
    }
    let (_, c) = daemonset();
    let script = entrypoint(&c);
    let args = env_value(&c, "ALLOCWATCH_ARGS");
    let listen = "--listen 0.0.0.0:9464";
    let bin = "/usr/local/bin/allocwatch";
    assert!(script.contains(listen) && script.contains(bin), "{script}");
    let script = script
        .replace(listen, "--listen 127.0.0.1:0")
        .replace(bin, &allocwatch().display().to_string());
    let tmp = tempfile::tempdir().expect("tempdir");
    // A pattern that only this copy matches (no other test names it so).
    let name = format!("allocwatch-deploy-svc-{}", std::process::id());
    let svc = tmp.path().join(&name);
    std::fs::copy(fixture(&toolchain(GO), "spin", Variant::Default), &svc).expect("copy");
    let (mut fx, pid) = spin(&svc);
    let mut sh = Command::new("/bin/sh");
    sh.arg("-c")
        .arg(&script)
        .env("ALLOCWATCH_EXE", format!("^{name}$"))
        .env("ALLOCWATCH_ARGS", &args);
    let (mut d, addr) = start_daemon_cmd(sh);
    let t = target(addr, pid);
    assert_eq!(t.state, "tracing", "{t:?}");
    let list: Vec<Value> =
        serde_json::from_str(&get_text(addr, "/targets")).expect("/targets JSON");
    assert_eq!(list.len(), 1, "only the service: {list:?}");
    d.signal(libc::SIGTERM);
    let (status, err) = d.finish(Duration::from_secs(10));
    assert!(status.success(), "{status}\n{err}");
    fx.signal(libc::SIGINT);
    let (status, out) = fx.finish(Duration::from_secs(30));
    assert!(status.success(), "spin: {status}\n{out}");
}

/// Every PromQL string of the dashboard: panel queries (`expr`) and
/// template variables (`definition`, `query.query`).
fn dashboard_queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "definition" | "query", Value::String(q)) => out.push(q.clone()),
                    _ => dashboard_queries(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| dashboard_queries(x, out)),
        _ => {}
    }
}

/// The `allocwatch_…` series names in `query`.
fn series_names(query: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = query;
    while let Some(i) = rest.find("allocwatch_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The names a `/metrics` exposition declares (`# TYPE`) or has samples of.
fn exposition_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| match l.strip_prefix("# TYPE ") {
            Some(t) => t.split(' ').next(),
            None if l.starts_with('#') => None,
            None => l.split(['{', ' ']).next(),
        })
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_dashboard_queries_series_the_daemon_exports() {
    let path = workspace_root().join("deploy/grafana/allocwatch.json");
    let dash: Value = serde_json::from_str(&read(&path)).expect("the dashboard is JSON");
    let mut queries = Vec::new();
    dashboard_queries(&dash, &mut queries);
    let panel = |needle: &[&str]| queries.iter().any(|q| needle.iter().all(|n| q.contains(n)));
    assert!(
        panel(&["sum by (function)", "rate(allocwatch_alloc_objects_total"]),
        "allocation rate by function: {queries:#?}"
    );
    assert!(
        panel(&["sum by (type)", "rate(allocwatch_alloc_bytes_total"]),
        "bytes by type: {queries:#?}"
    );
    assert!(
        panel(&[
            "allocwatch_pool_misses_total",
            "/ sum by (pool) (rate(allocwatch_pool_gets_total"
        ]),
        "pool hit ratio: {queries:#?}"
    );
    let used: BTreeSet<String> = queries.iter().flat_map(|q| series_names(q)).collect();
    if skip_unless_root() {
        return;
    }
    // A real scrape, with a process traced (the info series has samples
    // only then) and pools traced (exact mode).
    let (mut fx, pid) = spin(&fixture(&toolchain(GO), "spin", Variant::Default));
    let mut c = Command::new(allocwatch());
    c.args(["daemon", "--listen", "127.0.0.1:0", "--mode", "exact"])
        .args(["--pid", &pid.to_string()]);
    let (mut d, addr) = start_daemon_cmd(c);
    let exported = exposition_names(&get_text(addr, "/metrics"));
    d.signal(libc::SIGTERM);
    let (status, err) = d.finish(Duration::from_secs(10));
    assert!(status.success(), "{status}\n{err}");
    fx.signal(libc::SIGINT);
    let _ = fx.finish(Duration::from_secs(30));
    let unknown: Vec<&String> = used.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries series the daemon does not export: {unknown:?}\nexported: {exported:?}"
    );
    assert!(used.len() >= 8, "{used:?}");
}
