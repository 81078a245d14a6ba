//! Hostile files: a deterministic mutation fuzzer for the Go-binary parser
//! (`allocwatch::gobin::GoBinary::parse`) and every query allocwatch makes
//! of a parsed binary (functions, `func_by_name`, `func_at`, `symbolize`,
//! `type_name`, `type_size`, `code` + prologue decoding, `data_symbol_at`,
//! `read_ptr`, the symbolizer, and `plan::plan` in both modes).
//!
//! Real fixture executables (several Go versions and build variants) are
//! mutated the way a damaged or malicious file would be: ELF, program and
//! section header fields, the pclntab header and function table, the
//! module data, the build info, set to boundary values (0, 1, −1, the file
//! size ± 1, huge, another field's value…); bit flips; byte runs
//! overwritten; bytes inserted or deleted; chunks copied elsewhere;
//! truncation. Each case must end (no hang), without a panic
//! (`catch_unwind`), within a memory limit.
//!
//! The cases run in a child process (this test binary again, running
//! `fuzz_child` only) under `RLIMIT_AS` = 2 GiB, so that an unbounded
//! allocation kills the child instead of the machine; the parent checks its
//! exit, its report (no panic, peak RSS `VmHWM` < 1 GiB), and a hard time
//! limit, and names the last case started if the child dies or hangs.
//!
//! The xorshift generator is seeded per run (the seed is printed; set
//! `ALLOCWATCH_FUZZ_SEED` to replay one) and every case is derived from it.
//! By default 2000 cases within about 20 s; longer runs by hand:
//!
//! ```sh
//! ALLOCWATCH_FUZZ_ITERS=200000 ALLOCWATCH_FUZZ_SECS=3600 cargo test -p allocwatch --test fuzz -- --nocapture
//! ```

mod support;

use std::io::{BufRead, BufReader, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use allocwatch::gobin::{GoBinary, prologue};
use allocwatch::plan::{self, Mode, PlanOptions};
use allocwatch::stats::Resolver;
use allocwatch::symbolize::GoResolver;
use support::{Variant, fixture, toolchain};

const CHILD_ENV: &str = "ALLOCWATCH_FUZZ_CHILD";
const ITERS_ENV: &str = "ALLOCWATCH_FUZZ_ITERS";
const SECS_ENV: &str = "ALLOCWATCH_FUZZ_SECS";
const SEED_ENV: &str = "ALLOCWATCH_FUZZ_SEED";

/// Address space of the child: an allocation beyond it aborts the child.
const ADDRESS_SPACE_LIMIT: u64 = 2 << 30;
/// Peak resident memory the child may reach.
const PEAK_RSS_LIMIT_KIB: u64 = 1 << 20;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

// ---------------------------------------------------------------------------
// The parent: builds the corpus, runs the child, judges its report.

/// The executables to mutate: small fixtures from the oldest to the newest
/// Go, in the variants whose parsing differs (symbols or not, PIE
/// relocations, external linking, size-specialized malloc).
fn corpus() -> Vec<PathBuf> {
    let mut v = vec![
        fixture(&toolchain("1.21.13"), "gobin", Variant::Default),
        fixture(&toolchain("1.21.13"), "gobin", Variant::PieStripped),
        fixture(&toolchain("1.24.11"), "gobin", Variant::Stripped),
        fixture(&toolchain("1.26.6"), "gobin", Variant::SizeSpecialized),
        fixture(&toolchain("1.27.3"), "gobin", Variant::Pie),
        fixture(&toolchain("1.27.3"), "gobin", Variant::Default),
    ];
    if support::have_gcc() {
        v.push(fixture(&toolchain("1.27.3"), "gobin", Variant::External));
    }
    v
}

#[test]
fn mutated_go_binaries_never_panic() {
    let iters = env_u64(ITERS_ENV).unwrap_or(2000);
    let secs = env_u64(SECS_ENV).unwrap_or(20);
    let seed = env_u64(SEED_ENV).unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        (t.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)) | 1
    });
    eprintln!(
        "fuzz: seed {seed:#x} ({SEED_ENV}={seed:#x} replays it), {iters} cases, {secs} s at most"
    );
    let paths: Vec<String> = corpus()
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "fuzz_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, paths.join("\n"))
        .env(ITERS_ENV, iters.to_string())
        .env(SECS_ENV, secs.to_string())
        .env(SEED_ENV, seed.to_string())
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the fuzz child");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Every case is bounded; the whole run gets its budget plus set-up time.
    let deadline = Instant::now() + Duration::from_secs(secs + 120);
    let mut last_case = String::new();
    let mut report = None;
    let mut failures = Vec::new();
    let status = loop {
        while let Ok(line) = rx.try_recv() {
            if line.starts_with("case ") {
                last_case = line;
            } else if let Some(r) = line.strip_prefix("fuzz done ") {
                report = Some(r.to_string());
            } else if line.starts_with("PANIC ") || line.starts_with("SLOW ") {
                failures.push(line);
            } else if !line.is_empty() && !line.starts_with("running ") {
                eprintln!("child: {line}");
            }
        }
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the fuzz child hangs; last case started: {last_case}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(100));
    while let Ok(line) = rx.try_recv() {
        if let Some(r) = line.strip_prefix("fuzz done ") {
            report = Some(r.to_string());
        } else if line.starts_with("PANIC ") || line.starts_with("SLOW ") {
            failures.push(line);
        } else if line.starts_with("case ") {
            last_case = line;
        }
    }
    assert!(
        failures.is_empty(),
        "seed {seed:#x}: {} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        status.success(),
        "seed {seed:#x}: the fuzz child died ({status}) — an allocation beyond {} GiB aborts it; last case started: {last_case}",
        ADDRESS_SPACE_LIMIT >> 30
    );
    let report = report.unwrap_or_else(|| panic!("seed {seed:#x}: the child gave no report"));
    eprintln!("fuzz: {report}");
    let field = |k: &str| -> u64 {
        report
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {report:?}"))
    };
    assert_eq!(field("panics"), 0);
    let cases = field("cases");
    assert!(
        cases >= iters.min(200),
        "only {cases} cases ran in {secs} s: {report}"
    );
    assert!(
        field("parsed") > 0 && field("refused") > 0,
        "the mutations should both break and spare files: {report}"
    );
    assert!(
        field("peak_rss_kib") < PEAK_RSS_LIMIT_KIB,
        "peak RSS too high: {report}"
    );
}

// ---------------------------------------------------------------------------
// The child.

fn next(state: &mut u64) -> u64 {
    // xorshift64*
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn below(rng: &mut u64, n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (next(rng) % n as u64) as usize
    }
}

/// A place in the file worth damaging: `width` bytes at `off`.
#[derive(Clone, Copy, Debug)]
struct Field {
    off: usize,
    width: usize,
    what: &'static str,
}

/// A region of the file for flips and overwrites.
#[derive(Clone, Copy, Debug)]
struct Region {
    off: usize,
    len: usize,
    what: &'static str,
}

struct Base {
    name: String,
    data: Vec<u8>,
    fields: Vec<Field>,
    regions: Vec<Region>,
}

fn rd(data: &[u8], off: usize, width: usize) -> u64 {
    let mut v = 0u64;
    for i in 0..width.min(8) {
        v |= u64::from(*data.get(off + i).unwrap_or(&0)) << (8 * i);
    }
    v
}

fn wr(data: &mut [u8], off: usize, width: usize, v: u64) {
    for i in 0..width.min(8) {
        if let Some(b) = data.get_mut(off + i) {
            *b = (v >> (8 * i)) as u8;
        }
    }
}

/// Finds the structures of a clean executable: ELF header, program and
/// section headers, and (through the parser itself, on the clean file) the
/// pclntab, its function table, the module data, the build info, types.
fn base(path: &str) -> Base {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let mut fields = Vec::new();
    let mut regions = vec![
        Region {
            off: 0,
            len: 64,
            what: "ELF header",
        },
        Region {
            off: 0,
            len: data.len(),
            what: "anywhere",
        },
    ];
    for (off, width, what) in [
        (4, 1, "EI_CLASS"),
        (5, 1, "EI_DATA"),
        (16, 2, "e_type"),
        (18, 2, "e_machine"),
        (24, 8, "e_entry"),
        (32, 8, "e_phoff"),
        (40, 8, "e_shoff"),
        (52, 2, "e_ehsize"),
        (54, 2, "e_phentsize"),
        (56, 2, "e_phnum"),
        (58, 2, "e_shentsize"),
        (60, 2, "e_shnum"),
        (62, 2, "e_shstrndx"),
    ] {
        fields.push(Field { off, width, what });
    }
    let phoff = rd(&data, 32, 8) as usize;
    let phnum = rd(&data, 56, 2) as usize;
    regions.push(Region {
        off: phoff,
        len: phnum * 56,
        what: "program headers",
    });
    for i in 0..phnum {
        let b = phoff + i * 56;
        for (o, width, what) in [
            (0, 4, "p_type"),
            (4, 4, "p_flags"),
            (8, 8, "p_offset"),
            (16, 8, "p_vaddr"),
            (32, 8, "p_filesz"),
            (40, 8, "p_memsz"),
            (48, 8, "p_align"),
        ] {
            fields.push(Field {
                off: b + o,
                width,
                what,
            });
        }
    }
    let shoff = rd(&data, 40, 8) as usize;
    let shnum = rd(&data, 60, 2) as usize;
    let shstrndx = rd(&data, 62, 2) as usize;
    regions.push(Region {
        off: shoff,
        len: shnum * 64,
        what: "section headers",
    });
    let strtab = shoff + shstrndx * 64;
    let names_off = rd(&data, strtab + 24, 8) as usize;
    for i in 0..shnum {
        let b = shoff + i * 64;
        for (o, width, what) in [
            (0, 4, "sh_name"),
            (4, 4, "sh_type"),
            (16, 8, "sh_addr"),
            (24, 8, "sh_offset"),
            (32, 8, "sh_size"),
            (40, 4, "sh_link"),
            (56, 8, "sh_entsize"),
        ] {
            fields.push(Field {
                off: b + o,
                width,
                what,
            });
        }
        let name_at = names_off + rd(&data, b, 4) as usize;
        let name: Vec<u8> = data
            .get(name_at..)
            .unwrap_or_default()
            .iter()
            .take_while(|&&c| c != 0)
            .copied()
            .collect();
        let (off, len) = (rd(&data, b + 24, 8) as usize, rd(&data, b + 32, 8) as usize);
        let what = match &name[..] {
            b".go.buildinfo" => "build info",
            b".gopclntab" | b".data.rel.ro.gopclntab" => "pclntab",
            b".symtab" => "symbol table",
            b".strtab" => "string table",
            b".noptrdata" => "noptrdata",
            b".dynamic" => "dynamic",
            b".rela" | b".rela.dyn" => "relocations",
            _ => continue,
        };
        // The pclntab whole (pc-value tables, inline trees, names); the
        // first 64 KiB of the others.
        let len = if what == "pclntab" {
            len
        } else {
            len.min(1 << 16)
        };
        regions.push(Region { off, len, what });
        if what == "build info" {
            for (o, width, what) in [
                (14, 1, "buildinfo ptrsize"),
                (15, 1, "buildinfo flags"),
                (16, 8, "buildinfo word"),
                (24, 8, "buildinfo word"),
                (32, 1, "buildinfo varint"),
                (33, 1, "buildinfo varint"),
            ] {
                fields.push(Field {
                    off: off + o,
                    width,
                    what,
                });
            }
        }
        if what == "symbol table" {
            for k in 0..64usize {
                let e = off + (k * 7919 % (len / 24).max(1)) * 24;
                fields.push(Field {
                    off: e,
                    width: 4,
                    what: "st_name",
                });
                fields.push(Field {
                    off: e + 8,
                    width: 8,
                    what: "st_value",
                });
                fields.push(Field {
                    off: e + 16,
                    width: 8,
                    what: "st_size",
                });
            }
        }
    }
    // The rest comes from the parser on the clean file.
    let bin = GoBinary::parse(data.clone()).unwrap_or_else(|e| panic!("{path}: {e}"));
    if let Some(p) = bin.file_offset(bin.pclntab_addr()) {
        let p = p as usize;
        for (o, width, what) in [
            (0, 4, "pclntab magic"),
            (6, 1, "pclntab minLC"),
            (7, 1, "pclntab ptrsize"),
            (8, 8, "pclntab nfunc"),
            (16, 8, "pclntab nfiles"),
            (24, 8, "pclntab textStart"),
            (32, 8, "pclntab funcnameOffset"),
            (40, 8, "pclntab cuOffset"),
            (48, 8, "pclntab filetabOffset"),
            (56, 8, "pclntab pctabOffset"),
            (64, 8, "pclntab pclnOffset"),
        ] {
            fields.push(Field {
                off: p + o,
                width,
                what,
            });
        }
        // The function table (entry, _func offset pairs) and some _func records.
        let nfunc = rd(&data, p + 8, 8) as usize;
        let ftab = p + rd(&data, p + 64, 8) as usize;
        regions.push(Region {
            off: ftab,
            len: (nfunc + 1) * 8,
            what: "function table",
        });
        for k in 0..128usize {
            let i = k * 7919 % nfunc.max(1);
            fields.push(Field {
                off: ftab + i * 8,
                width: 4,
                what: "ftab entryoff",
            });
            fields.push(Field {
                off: ftab + i * 8 + 4,
                width: 4,
                what: "ftab funcoff",
            });
            // _func records are at pclntable + funcoff; ftab starts pclntable.
            let func = ftab + rd(&data, ftab + i * 8 + 4, 4) as usize;
            for (o, width, what) in [
                (0, 4, "_func entryOff"),
                (4, 4, "_func nameOff"),
                (16, 4, "_func pcsp"),
                (20, 4, "_func pcfile"),
                (24, 4, "_func pcln"),
                (28, 4, "_func npcdata"),
                (32, 4, "_func cuOffset"),
                (36, 4, "_func startLine"),
                (43, 1, "_func nfuncdata"),
            ] {
                fields.push(Field {
                    off: func + o,
                    width,
                    what,
                });
            }
        }
    }
    if let Some(md) = bin.file_offset(bin.moduledata_addr()) {
        let md = md as usize;
        regions.push(Region {
            off: md,
            len: 0x300,
            what: "moduledata",
        });
        for w in 0..96 {
            fields.push(Field {
                off: md + 8 * w,
                width: 8,
                what: "moduledata word",
            });
        }
    }
    let (types, etypes) = bin.types_range();
    if let Some(t) = bin.file_offset(types) {
        let len = (etypes.saturating_sub(types) as usize).min(1 << 20);
        regions.push(Region {
            off: t as usize,
            len,
            what: "types",
        });
    }
    for f in ["runtime.mallocgc", "sync.(*Pool).Get"] {
        if let Some(f) = bin.func_by_name(f)
            && let Some(off) = bin.file_offset(f.entry)
        {
            regions.push(Region {
                off: off as usize,
                len: 64,
                what: "prologue",
            });
        }
    }
    let name = path.rsplit('/').take(3).collect::<Vec<_>>().join(" ");
    fields.retain(|f| f.off + f.width <= data.len());
    regions.retain(|r| r.off < data.len() && r.len > 0);
    Base {
        name,
        data,
        fields,
        regions,
    }
}

/// Applies one random mutation; returns what it did.
fn mutate(rng: &mut u64, b: &Base, data: &mut Vec<u8>) -> String {
    let len = data.len();
    match below(rng, 16) {
        0..=5 => {
            // A header field set to a boundary value.
            let f = b.fields[below(rng, b.fields.len())];
            let old = rd(data, f.off, f.width);
            let other = b.fields[below(rng, b.fields.len())];
            let candidates = [
                0,
                1,
                2,
                0x7f,
                0x80,
                0xff,
                0xffff,
                0x7fff_ffff,
                0x8000_0000,
                0xffff_ffff,
                u64::MAX,
                i64::MAX as u64,
                len as u64,
                (len as u64).wrapping_sub(1),
                len as u64 + 1,
                old.wrapping_add(1),
                old.wrapping_sub(1),
                old.wrapping_mul(2),
                old << 16,
                old >> 1,
                old ^ (1 << below(rng, 64)),
                rd(data, other.off, other.width),
                next(rng),
                next(rng) % (len as u64 + 1),
            ];
            let v = candidates[below(rng, candidates.len())];
            wr(data, f.off, f.width, v);
            format!("{} @{:#x} {old:#x} -> {v:#x}", f.what, f.off)
        }
        6..=8 => {
            // Bit flips in a region.
            let r = b.regions[below(rng, b.regions.len())];
            let n = 1 + below(rng, 8);
            for _ in 0..n {
                let i = r.off + below(rng, r.len);
                if let Some(x) = data.get_mut(i) {
                    *x ^= 1 << below(rng, 8);
                }
            }
            format!("{n} bit flips in {}", r.what)
        }
        9..=10 => {
            // A run of bytes overwritten.
            let r = b.regions[below(rng, b.regions.len())];
            let at = r.off + below(rng, r.len);
            let n = 1 + below(rng, 64);
            let fill = match below(rng, 3) {
                0 => Some(0u8),
                1 => Some(0xff),
                _ => None,
            };
            for b in data.iter_mut().skip(at).take(n) {
                *b = fill.unwrap_or_else(|| next(rng) as u8);
            }
            format!("{n} bytes overwritten ({fill:?}) in {} @{at:#x}", r.what)
        }
        11 => {
            // Bytes inserted: everything after moves.
            let r = b.regions[below(rng, b.regions.len())];
            let at = (r.off + below(rng, r.len)).min(len);
            let n = 1 + below(rng, 64);
            let bytes: Vec<u8> = (0..n).map(|_| next(rng) as u8).collect();
            data.splice(at..at, bytes);
            format!("{n} bytes inserted in {} @{at:#x}", r.what)
        }
        12 => {
            // Bytes deleted.
            let r = b.regions[below(rng, b.regions.len())];
            let at = (r.off + below(rng, r.len)).min(len);
            let n = (1 + below(rng, 64)).min(len - at);
            data.drain(at..at + n);
            format!("{n} bytes deleted in {} @{at:#x}", r.what)
        }
        13 => {
            // A chunk copied over another structure.
            let from = b.regions[below(rng, b.regions.len())];
            let to = b.regions[below(rng, b.regions.len())];
            // Earlier mutations may have shortened the file.
            let src = (from.off + below(rng, from.len)).min(len);
            let dst = (to.off + below(rng, to.len)).min(len);
            let n = (1 + below(rng, 256)).min(len - src).min(len - dst);
            let chunk = data[src..src + n].to_vec();
            data[dst..dst + n].copy_from_slice(&chunk);
            format!(
                "{n} bytes of {} copied over {} @{dst:#x}",
                from.what, to.what
            )
        }
        _ => {
            // Truncated, mostly inside a structure.
            let r = b.regions[below(rng, b.regions.len())];
            let at = (r.off + below(rng, r.len)).min(len);
            data.truncate(at);
            format!("truncated at {at:#x} in {}", r.what)
        }
    }
}

/// Every query allocwatch makes of a parsed binary.
fn exercise(bin: GoBinary, rng: &mut u64) {
    let _ = (
        bin.build_info().version(),
        bin.build_info().pgo(),
        bin.is_pie(),
        bin.is_stripped(),
        bin.externally_linked(),
        bin.first_load_vaddr(),
        bin.function_count(),
        format!("{bin:?}"),
    );
    let funcs: Vec<_> = bin.functions().take(1 << 20).collect();
    let _ = bin.func_by_name("runtime.mallocgc");
    let _ = bin.func_by_name("sync.(*Pool).Get");
    let (text, etext) = bin.text_range();
    let (types, etypes) = bin.types_range();
    let span = |lo: u64, hi: u64, r: &mut u64| {
        lo.wrapping_add(next(r) % hi.saturating_sub(lo).saturating_add(64))
    };
    for i in 0..48 {
        let pc = match (i % 3, funcs.is_empty()) {
            (0, false) => {
                let f = &funcs[below(rng, funcs.len())];
                f.entry.wrapping_add(next(rng) % f.size().saturating_add(1))
            }
            (1, _) => next(rng),
            _ => span(text, etext, rng),
        };
        let _ = bin.symbolize(pc);
        let _ = bin.symbolize(pc.wrapping_sub(1));
        if let Some(f) = bin.func_at(pc)
            && let Some(code) = bin.code(&f)
        {
            let _ = prologue::probe_offset(code, f.entry);
            let _ = prologue::pool_get_miss_sites(code, f.entry);
        }
        let _ = bin.file_offset(pc);
        let typ = if i % 4 == 0 {
            next(rng)
        } else {
            span(types, etypes, rng)
        };
        let _ = (
            bin.type_name(typ),
            bin.type_size(typ),
            bin.data_symbol_at(typ),
            bin.read_ptr(typ),
        );
    }
    // Each plan looks its ~20 functions up by name, a linear scan each
    // (slow in a debug build): on every other case, sampled on every 8th.
    match below(rng, 8) {
        0 => {
            let _ = plan::plan(
                &bin,
                PlanOptions {
                    pools: false,
                    mode: Mode::Sampled,
                    switchable: false,
                },
            );
        }
        1..=3 => {
            let _ = plan::plan(
                &bin,
                PlanOptions {
                    pools: true,
                    mode: Mode::Exact,
                    switchable: true,
                },
            );
        }
        _ => {}
    }
    // The symbolizer, on stacks through the binary's own functions.
    let mut r = GoResolver::new(Arc::new(bin), 0);
    for _ in 0..8 {
        let frames: Vec<u64> = (0..1 + below(rng, 12))
            .map(|_| match (funcs.is_empty(), below(rng, 4)) {
                (false, 0..=2) => {
                    let f = &funcs[below(rng, funcs.len())];
                    f.entry
                        .wrapping_add(1 + next(rng) % f.size().saturating_add(1))
                }
                _ => next(rng),
            })
            .collect();
        let typ = if below(rng, 2) == 0 {
            0
        } else {
            span(types, etypes, rng)
        };
        let _ = r.resolve_alloc(typ, &frames);
        let _ = r.caller(frames[0]);
    }
}

thread_local! {
    /// Set while a case runs under `catch_unwind`.
    static IN_CASE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Runs the cases when started by `mutated_go_binaries_never_panic` (not
/// a test of its own: the suite lists it as ignored).
#[test]
#[ignore = "helper of mutated_go_binaries_never_panic, run in a child process"]
fn fuzz_child() {
    let paths = std::env::var(CHILD_ENV).unwrap_or_else(|_| {
        panic!("fuzz_child runs in the child process that mutated_go_binaries_never_panic starts")
    });
    let lim = libc::rlimit {
        rlim_cur: ADDRESS_SPACE_LIMIT,
        rlim_max: ADDRESS_SPACE_LIMIT,
    };
    // SAFETY: setrlimit with a valid struct.
    assert_eq!(
        unsafe { libc::setrlimit(libc::RLIMIT_AS, &raw const lim) },
        0
    );
    let iters = env_u64(ITERS_ENV).unwrap_or(2000);
    let budget = Duration::from_secs(env_u64(SECS_ENV).unwrap_or(20));
    let seed = env_u64(SEED_ENV).unwrap_or(1) | 1;
    let bases: Vec<Base> = paths.lines().map(base).collect();
    // Panics of the parser are reported per case below; the fuzzer's own
    // (outside catch_unwind) keep the default message.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !IN_CASE.get() {
            default_hook(info);
        }
    }));
    let t0 = Instant::now();
    let mut rng = seed;
    let (mut parsed, mut refused, mut panics, mut cases) = (0u64, 0u64, 0u64, 0u64);
    let mut slowest = (Duration::ZERO, String::new());
    let err = std::io::stderr();
    for case in 0..iters {
        if t0.elapsed() > budget {
            break;
        }
        // Each case has its own seed: it can be replayed alone.
        let case_seed = next(&mut rng) | 1;
        let mut r = case_seed;
        let b = &bases[below(&mut r, bases.len())];
        let mut data = b.data.clone();
        let what: Vec<String> = (0..1 + below(&mut r, 4))
            .map(|_| mutate(&mut r, b, &mut data))
            .collect();
        let desc = format!("{case} seed={case_seed:#x} {}: {}", b.name, what.join("; "));
        let _ = writeln!(err.lock(), "case {desc}");
        let start = Instant::now();
        IN_CASE.set(true);
        let outcome = catch_unwind(AssertUnwindSafe(|| match GoBinary::parse(data) {
            Ok(bin) => {
                exercise(bin, &mut r);
                true
            }
            Err(e) => {
                let _ = e.to_string();
                false
            }
        }));
        IN_CASE.set(false);
        let took = start.elapsed();
        match outcome {
            Ok(true) => parsed += 1,
            Ok(false) => refused += 1,
            Err(p) => {
                panics += 1;
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
                    .unwrap_or_default();
                let _ = writeln!(err.lock(), "PANIC {desc}: {msg}");
            }
        }
        if took > Duration::from_secs(5) {
            let _ = writeln!(err.lock(), "SLOW {desc}: {took:?}");
        }
        if took > slowest.0 {
            slowest = (took, desc);
        }
        cases += 1;
    }
    let _ = writeln!(
        err.lock(),
        "fuzz done cases={cases} parsed={parsed} refused={refused} panics={panics} peak_rss_kib={} secs={:.1} slowest_ms={} ({})",
        peak_rss_kib(),
        t0.elapsed().as_secs_f64(),
        slowest.0.as_millis(),
        slowest.1
    );
}
