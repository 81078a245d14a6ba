//! `allocwatch inspect`: what would be probed, and where, without root.
//!
//! For Go 1.21, 1.23, 1.26 (also with `GOEXPERIMENT=sizespecializedmalloc`)
//! and 1.27, in every build variant: the text and `--json` outputs state the
//! same facts, and the facts are right — Go version, stripped / PIE /
//! external linking, size-specialized malloc, `runtime.mallocgc` probed at
//! its `PUSHQ BP` (+0xa; +0xf on Go 1.23), and the four `sync.Pool` probes.
//! Each probe's file offset is checked independently against the ELF
//! program headers and the instruction bytes found there. `inspect --pid`
//! on a running process gives the same plan as on its file.

mod support;

use support::allocwatch;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use serde_json::Value;
use support::{GoToolchain, Variant, fixture, have_gcc, toolchain};

fn inspect(args: &[&str]) -> String {
    let out = Command::new(allocwatch())
        .arg("inspect")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run allocwatch inspect");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "inspect {args:?} failed ({}):\n{stderr}",
        out.status
    );
    assert!(
        stderr.is_empty(),
        "inspect {args:?} printed on stderr:\n{stderr}"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn inspect_json(args: &[&str]) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let text = inspect(&a);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("inspect --json: {e}:\n{text}"))
}

fn le(b: &[u8], off: usize, n: usize) -> u64 {
    b[off..off + n]
        .iter()
        .rev()
        .fold(0, |acc, &x| (acc << 8) | u64::from(x))
}

/// The file offset of `vaddr` through the ELF `PT_LOAD` program headers.
fn file_offset(elf: &[u8], vaddr: u64) -> Option<u64> {
    let phoff = usize::try_from(le(elf, 0x20, 8)).ok()?;
    let phentsize = usize::try_from(le(elf, 0x36, 2)).ok()?;
    let phnum = usize::try_from(le(elf, 0x38, 2)).ok()?;
    (0..phnum).find_map(|i| {
        let ph = phoff + i * phentsize;
        let (p_type, offset, p_vaddr, filesz) = (
            le(elf, ph, 4),
            le(elf, ph + 8, 8),
            le(elf, ph + 16, 8),
            le(elf, ph + 32, 8),
        );
        (p_type == 1 && p_vaddr <= vaddr && vaddr < p_vaddr + filesz)
            .then(|| vaddr - p_vaddr + offset)
    })
}

const PLAN_FIELDS: [&str; 14] = [
    "go_version",
    "arch",
    "stripped",
    "pie",
    "external_link",
    "pgo",
    "size_specialized_malloc",
    "probes",
    "malloc_ranges",
    "mode",
    "mem_profile_rate_addr",
    "memory_profiling_disabled",
    "pools",
    "warnings",
];
const PROBE_FIELDS: [&str; 9] = [
    "function",
    "func_vaddr",
    "offset",
    "vaddr",
    "file_offset",
    "placement",
    "program",
    "role",
    "cookie",
];
const PUSH_BP: &str = "PUSHQ BP after the stack check";
const SPECIALIZED: &str = "alloc (skip if called by mallocgc)";

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Checks the plan of one binary, in JSON and in text.
fn check_binary(tc: &GoToolchain, variant: Variant) {
    let what = format!("go{} {}", tc.version, variant.name());
    let bin = fixture(tc, "pools", variant);
    let path = bin.to_str().unwrap();
    let elf = std::fs::read(&bin).expect("read fixture");
    let plan = inspect_json(&[path]);

    // Exactly ProbePlan's fields.
    let obj = plan.as_object().expect("a JSON object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut want = PLAN_FIELDS.to_vec();
    want.sort_unstable();
    assert_eq!(keys, want, "{what}: JSON fields");
    assert_eq!(plan["arch"], "amd64", "{what}: arch");

    // The binary's facts.
    let minor = tc.minor();
    let stripped = matches!(variant, Variant::Stripped | Variant::PieStripped);
    let pie = matches!(variant, Variant::Pie | Variant::PieStripped);
    let external = variant == Variant::External;
    let specialized = minor >= 27 || (minor == 26 && variant == Variant::SizeSpecialized);
    assert_eq!(plan["go_version"], format!("go{}", tc.version), "{what}");
    assert_eq!(plan["stripped"], stripped, "{what}: stripped");
    assert_eq!(plan["pie"], pie, "{what}: pie");
    assert_eq!(plan["external_link"], external, "{what}: external_link");
    assert_eq!(plan["pgo"], false, "{what}: pgo");
    assert_eq!(
        plan["size_specialized_malloc"], specialized,
        "{what}: size-specialized"
    );
    assert_eq!(
        plan["pools"]["status"], "enabled",
        "{what}: {}",
        plan["pools"]
    );
    assert_eq!(plan["mode"], "exact", "{what}: the default mode");
    assert!(
        plan["mem_profile_rate_addr"].is_null() && plan["memory_profiling_disabled"].is_null(),
        "{what}: exact mode"
    );
    check_sampled_plan(&what, &bin, &elf);

    let probes = plan["probes"].as_array().expect("probes");
    for p in probes {
        let mut k: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
        k.sort_unstable();
        let mut w = PROBE_FIELDS.to_vec();
        w.sort_unstable();
        assert_eq!(k, w, "{what}: probe fields");
        // Addresses agree with each other and with the ELF program headers,
        // and the bytes there are the instruction the placement names.
        let vaddr = u(&p["vaddr"]);
        assert_eq!(vaddr, u(&p["func_vaddr"]) + u(&p["offset"]), "{what}: {p}");
        let off = u(&p["file_offset"]);
        assert_eq!(file_offset(&elf, vaddr), Some(off), "{what}: {p}");
        let code = &elf[usize::try_from(off).unwrap()..][..3];
        let placement = p["placement"].as_str().unwrap();
        if placement == PUSH_BP {
            assert_eq!(code[0], 0x55, "{what}: no PUSHQ BP at {p}");
        } else if placement.starts_with("indirect CALL") {
            let c = if (0x40..0x50).contains(&code[0]) {
                &code[1..]
            } else {
                code
            };
            assert!(
                c[0] == 0xff && (c[1] >> 3) & 7 == 2,
                "{what}: no indirect CALL at {p}: {code:02x?}"
            );
        }
    }
    let cookies: std::collections::HashSet<u64> = probes.iter().map(|p| u(&p["cookie"])).collect();
    assert_eq!(cookies.len(), probes.len(), "{what}: cookies are unique");

    let by_role =
        |role: &str| -> Vec<&Value> { probes.iter().filter(|p| p["role"] == role).collect() };
    // runtime.mallocgc at its PUSHQ BP.
    let malloc = by_role("alloc");
    assert_eq!(malloc.len(), 1, "{what}: {malloc:?}");
    let m = malloc[0];
    assert_eq!(m["function"], "runtime.mallocgc", "{what}");
    assert_eq!(
        u(&m["offset"]),
        if minor == 23 { 0xf } else { 0xa },
        "{what}: {m}"
    );
    assert_eq!(m["placement"], PUSH_BP, "{what}");
    assert_eq!(m["program"], "alloc", "{what}");
    let ranges = plan["malloc_ranges"].as_array().expect("malloc_ranges");
    assert!(
        ranges
            .iter()
            .any(|r| u(&r[0]) <= u(&m["vaddr"]) && u(&m["vaddr"]) < u(&r[1])),
        "{what}: mallocgc outside malloc_ranges {ranges:?}"
    );
    // The size-specialized entries, when the runtime has them.
    let spec = by_role(SPECIALIZED);
    assert_eq!(
        !spec.is_empty(),
        specialized,
        "{what}: {} specialized probes",
        spec.len()
    );
    for p in &spec {
        let f = p["function"].as_str().unwrap();
        assert!(f.starts_with("runtime.mallocgc"), "{what}: {f}");
        assert_eq!(p["placement"], PUSH_BP, "{what}: {p}");
    }
    // The four sync.Pool probes.
    for (role, function, placement) in [
        ("pool get", "sync.(*Pool).Get", Some(PUSH_BP)),
        (
            "pool miss (New called)",
            "sync.(*Pool).Get",
            Some("indirect CALL of p.New()"),
        ),
        ("pool miss (nil returned)", "sync.(*Pool).Get", None),
        ("pool put", "sync.(*Pool).Put", Some(PUSH_BP)),
    ] {
        let ps = by_role(role);
        assert_eq!(ps.len(), 1, "{what}: {role}: {ps:?}");
        assert_eq!(ps[0]["function"], function, "{what}: {role}");
        assert_eq!(ps[0]["program"], "pool", "{what}: {role}");
        if let Some(pl) = placement {
            assert_eq!(ps[0]["placement"], pl, "{what}: {role}");
        }
    }
    assert_eq!(
        probes.len(),
        1 + spec.len() + 4,
        "{what}: unexpected probes"
    );

    // The text output states the same facts.
    let text = inspect(&[path]);
    let has = |line: &str| text.lines().any(|l| l == line);
    assert!(has(&format!("target:        {path}")), "{what}:\n{text}");
    assert!(
        has(&format!("go version:    go{}", tc.version)),
        "{what}:\n{text}"
    );
    assert!(has("mode:          exact"), "{what}:\n{text}");
    assert!(
        has(&format!(
            "stripped: {}   PIE: {}   external linking: {}   PGO: no",
            yes(stripped),
            yes(pie),
            yes(external)
        )),
        "{what}:\n{text}"
    );
    let spec_line = if specialized {
        format!("size-specialized malloc: yes ({} entries)", spec.len())
    } else {
        "size-specialized malloc: no".to_string()
    };
    assert!(has(&spec_line), "{what}: no {spec_line:?} in\n{text}");
    assert!(has("sync.Pool tracing: enabled"), "{what}:\n{text}");
    assert!(
        has(&format!("probes ({}):", probes.len())),
        "{what}:\n{text}"
    );
    for p in probes {
        let fields = [
            p["function"].as_str().unwrap().to_string(),
            format!("+{:#x}", u(&p["offset"])),
            format!("{:#x}", u(&p["file_offset"])),
            p["placement"].as_str().unwrap().to_string(),
            p["role"].as_str().unwrap().to_string(),
        ];
        let found = text.lines().any(|l| {
            let mut rest = l;
            fields.iter().all(|f| match rest.find(f.as_str()) {
                Some(i) => {
                    rest = &rest[i + f.len()..];
                    true
                }
                None => false,
            })
        });
        assert!(found, "{what}: no line with {fields:?} in\n{text}");
    }
    for w in plan["warnings"].as_array().unwrap() {
        assert!(
            has(&format!("warning: {}", w.as_str().unwrap())),
            "{what}: {w}"
        );
    }
}

/// `inspect --mode sampled`: where `runtime.MemProfileRate` is, and that the
/// linker switched memory profiling off (the `pools` fixture never
/// references `runtime.MemProfile`): against `.symtab` where there is one,
/// and the rate's initial 512 KiB in the file everywhere.
fn check_sampled_plan(what: &str, bin: &std::path::Path, elf: &[u8]) {
    use object::{Object, ObjectSymbol};
    let plan = inspect_json(&["--mode", "sampled", bin.to_str().unwrap()]);
    assert_eq!(plan["mode"], "sampled", "{what}");
    assert_eq!(
        plan["memory_profiling_disabled"], true,
        "{what}: memory profiling is off"
    );
    let addr = u(&plan["mem_profile_rate_addr"]);
    let off = usize::try_from(file_offset(elf, addr).expect("rate in the file")).unwrap();
    assert_eq!(
        le(elf, off, 8),
        512 * 1024,
        "{what}: the rate's initial value"
    );
    let obj = object::File::parse(elf).expect("parse ELF");
    let sym = |name: &str| {
        obj.symbols()
            .find(|s| s.name() == Ok(name))
            .map(|s| s.address())
    };
    if let Some(a) = sym("runtime.MemProfileRate") {
        assert_eq!(addr, a, "{what}: runtime.MemProfileRate vs .symtab");
        let flag = sym("runtime.disableMemoryProfiling").expect("the flag's symbol");
        let off = usize::try_from(file_offset(elf, flag).expect("flag in the file")).unwrap();
        assert_eq!(elf[off], 1, "{what}: the linker set disableMemoryProfiling");
    }
    let text = inspect(&["--mode", "sampled", bin.to_str().unwrap()]);
    assert!(
        text.lines().any(|l| l.starts_with("memory profiling: off")),
        "{what}:
{text}"
    );
}

fn variants(tc: &GoToolchain) -> Vec<Variant> {
    let mut v = Variant::ALL_PORTABLE.to_vec();
    if have_gcc() {
        v.push(Variant::External);
    }
    if tc.minor() == 26 {
        v.push(Variant::SizeSpecialized);
    }
    v
}

fn check_version(version: &str) {
    let tc = toolchain(version);
    for v in variants(&tc) {
        check_binary(&tc, v);
    }
}

#[test]
fn plan_go1_21() {
    check_version("1.21.13");
}

#[test]
fn plan_go1_23() {
    check_version("1.23.9");
}

#[test]
fn plan_go1_26() {
    check_version("1.26.6");
}

#[test]
fn plan_go1_27() {
    check_version("1.27.3");
}

#[test]
fn no_pools_leaves_pool_probes_out() {
    let bin = fixture(&toolchain("1.27.3"), "pools", Variant::Default);
    let plan = inspect_json(&["--no-pools", bin.to_str().unwrap()]);
    assert_eq!(plan["pools"]["status"], "disabled", "{}", plan["pools"]);
    let probes = plan["probes"].as_array().unwrap();
    assert!(probes.iter().all(|p| p["program"] == "alloc"), "{probes:?}");
    let text = inspect(&["--no-pools", bin.to_str().unwrap()]);
    assert!(
        text.contains("sync.Pool tracing: disabled (turned off (--no-pools))"),
        "{text}"
    );
}

/// Kills and reaps a child when a test ends early.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `inspect --pid` reads the running process's executable: the same plan as
/// the file's, and the text names the PID.
#[test]
fn inspect_running_process() {
    for (version, variant) in [
        ("1.27.3", Variant::Default),
        ("1.21.13", Variant::PieStripped),
    ] {
        let what = format!("go{version} {}", variant.name());
        let bin = fixture(&toolchain(version), "pools", variant);
        let mut child = KillOnDrop(
            Command::new(&bin)
                .env("ALLOCWATCH_WAIT", "1")
                .env("ALLOCWATCH_N", "10")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("start fixture"),
        );
        let mut stdin = child.0.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.0.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(line.starts_with("ready "), "{what}: {line}");
        let pid = child.0.id().to_string();
        let from_pid = inspect_json(&["--pid", &pid]);
        let from_file = inspect_json(&[bin.to_str().unwrap()]);
        assert_eq!(from_pid, from_file, "{what}: --pid and file plans differ");
        let text = inspect(&["--pid", &pid]);
        let real = bin.canonicalize().expect("fixture path");
        let target = format!("target:        PID {pid} ({})", real.display());
        assert!(
            text.lines().any(|l| l == target),
            "{what}: no {target:?} in\n{text}"
        );
        // The inspected process is unaffected.
        writeln!(stdin, "go").unwrap();
        drop(stdin);
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
        let status = child.0.wait().unwrap();
        assert!(
            status.success(),
            "{what}: fixture failed after inspect: {status}"
        );
        assert!(rest.contains("result "), "{what}: {rest}");
    }
}
