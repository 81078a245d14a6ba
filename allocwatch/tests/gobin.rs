//! Integration tests of `allocwatch::gobin` against real Go executables: the
//! `testdata/fixtures/gobin` program built by every supported toolchain in
//! every portable variant (default, stripped, PIE, PIE + stripped), with
//! external linking when gcc is present and with the size-specialized
//! malloc experiment on Go 1.26.
//!
//! Ground truth comes from outside `gobin`: `go tool nm` and `go tool
//! objdump` of the same toolchain, the fixture's own report of run-time
//! addresses (`gobin addrs`: type descriptors, a function entry, a global),
//! and the `// LINE` markers in the fixture's source. Stripped builds are
//! compared with their unstripped counterparts.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use allocwatch::gobin::{Arch, Func, GoBinError, GoBinary, ProbeSite, TypeName, prologue};
use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};
use support::{GoToolchain, Variant};

const FIXTURE: &str = "gobin";
const FIXTURE_SOURCE: &str = "fixtures/gobin/main.go";

// ---------------------------------------------------------------------------
// The build matrix

fn have_gcc() -> bool {
    static GCC: OnceLock<bool> = OnceLock::new();
    *GCC.get_or_init(support::have_gcc)
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

/// Builds each (toolchain, variant) once per test process, whichever test
/// asks first; other tests wait for that build.
fn fixture(tc: &GoToolchain, variant: Variant) -> PathBuf {
    type Cells = Mutex<HashMap<(String, Variant), Arc<OnceLock<PathBuf>>>>;
    static CELLS: OnceLock<Cells> = OnceLock::new();
    let cell = CELLS
        .get_or_init(Default::default)
        .lock()
        .expect("fixture lock")
        .entry((tc.version.clone(), variant))
        .or_default()
        .clone();
    cell.get_or_init(|| support::fixture(tc, FIXTURE, variant))
        .clone()
}

struct Case {
    tc: GoToolchain,
    variant: Variant,
    path: PathBuf,
    bin: GoBinary,
}

impl Case {
    fn label(&self) -> String {
        format!("go{} {}", self.tc.version, self.variant.name())
    }

    fn func(&self, name: &str) -> Func {
        self.bin
            .func_by_name(name)
            .unwrap_or_else(|| panic!("{}: {name} not found", self.label()))
    }

    fn unstripped(&self) -> Option<Variant> {
        match self.variant {
            Variant::Stripped => Some(Variant::Default),
            Variant::PieStripped => Some(Variant::Pie),
            _ => None,
        }
    }
}

fn open(path: &Path) -> GoBinary {
    GoBinary::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every case of the matrix; toolchains build in parallel.
fn cases() -> Vec<Case> {
    let tcs = support::toolchains();
    std::thread::scope(|s| {
        let handles: Vec<_> = tcs
            .iter()
            .map(|tc| {
                s.spawn(move || {
                    variants(tc)
                        .into_iter()
                        .map(|variant| {
                            let path = fixture(tc, variant);
                            let bin = open(&path);
                            Case {
                                tc: tc.clone(),
                                variant,
                                path,
                                bin,
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("build thread"))
            .collect()
    })
}

// ---------------------------------------------------------------------------
// Ground truth from outside gobin

fn go_tool(tc: &GoToolchain, args: &[&str]) -> String {
    let out = Command::new(tc.go())
        .arg("tool")
        .args(args)
        .env("GOROOT", &tc.goroot)
        .env("GOTOOLCHAIN", "local")
        .output()
        .expect("run go tool");
    assert!(
        out.status.success(),
        "go tool {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `go tool nm`: name → (address, kind), for names that occur once.
fn nm(tc: &GoToolchain, path: &Path) -> HashMap<String, (u64, char)> {
    let text = go_tool(tc, &["nm", path.to_str().expect("utf-8 path")]);
    let mut seen: HashMap<String, Option<(u64, char)>> = HashMap::new();
    for line in text.lines() {
        let mut it = line.trim_start().splitn(3, ' ');
        let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let (Ok(addr), Some(kind)) = (u64::from_str_radix(addr, 16), kind.chars().next()) else {
            continue;
        };
        seen.entry(name.to_string())
            .and_modify(|v| *v = None)
            .or_insert(Some((addr, kind)));
    }
    seen.into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect()
}

/// `go tool objdump -s REGEX`: (address, file base name, line) per instruction.
fn objdump(tc: &GoToolchain, path: &Path, regex: &str) -> Vec<(u64, String, u32)> {
    let text = go_tool(
        tc,
        &["objdump", "-s", regex, path.to_str().expect("utf-8 path")],
    );
    text.lines()
        .filter(|l| l.starts_with("  "))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (file, line) = it.next()?.rsplit_once(':')?;
            let addr = u64::from_str_radix(it.next()?.strip_prefix("0x")?, 16).ok()?;
            Some((addr, file.to_string(), line.parse().ok()?))
        })
        .collect()
}

/// What `gobin addrs` prints: run-time addresses of type descriptors, of
/// `main.allocThing` and of `main.bufPool`.
fn runtime_addrs(path: &Path) -> HashMap<String, u64> {
    let out = Command::new(path)
        .arg("addrs")
        .output()
        .expect("run fixture");
    assert!(out.status.success(), "{} addrs failed", path.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((
                k.to_string(),
                u64::from_str_radix(v.strip_prefix("0x")?, 16).ok()?,
            ))
        })
        .collect()
}

/// `// LINE key` markers of the fixture source: key → line number.
fn markers() -> HashMap<String, u32> {
    let src = std::fs::read_to_string(
        support::workspace_root()
            .join("testdata")
            .join(FIXTURE_SOURCE),
    )
    .expect("fixture source");
    src.lines()
        .zip(1..)
        .filter_map(|(l, n)| Some((l.split("// LINE ").nth(1)?.trim().to_string(), n)))
        .collect()
}

fn decode(bin: &GoBinary, f: &Func) -> Vec<Instruction> {
    let code = bin.code(f).expect("code in file");
    Decoder::with_ip(64, code, f.entry, DecoderOptions::NONE)
        .into_iter()
        .collect()
}

/// Direct calls in `f`: (instruction, callee name).
fn calls(bin: &GoBinary, f: &Func) -> Vec<(Instruction, String)> {
    decode(bin, f)
        .into_iter()
        .filter(|i| i.mnemonic() == Mnemonic::Call && i.op0_kind() == OpKind::NearBranch64)
        .map(|i| {
            let callee = bin
                .func_at(i.near_branch64())
                .map(|f| f.name)
                .unwrap_or_default();
            (i, callee)
        })
        .collect()
}

/// `^runtime\.mallocgc(SmallNoScanSC|SmallScanNoHeaderSC|TinySC|TinySize)\d+$`
fn is_specialized(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("runtime.mallocgc") else {
        return false;
    };
    ["SmallNoScanSC", "SmallScanNoHeaderSC", "TinySC", "TinySize"]
        .iter()
        .filter_map(|p| rest.strip_prefix(p))
        .any(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

fn is_alloc_entry(name: &str) -> bool {
    name == "runtime.newobject" || name == "runtime.mallocgc" || is_specialized(name)
}

/// The `LEAQ type(IP), reg` that loads the type argument of the call at
/// index `call` (the last RIP-relative LEA into `reg` before it).
fn type_arg(ins: &[Instruction], call: &Instruction, reg: Register) -> Option<u64> {
    ins.iter()
        .take_while(|i| i.ip() < call.ip())
        .filter(|i| {
            i.mnemonic() == Mnemonic::Lea && i.op0_register() == reg && i.is_ip_rel_memory_operand()
        })
        .last()
        .map(Instruction::ip_rel_memory_address)
}

// ---------------------------------------------------------------------------
// Tests over the matrix

#[test]
fn build_info_and_binary_kind() {
    for c in cases() {
        let l = c.label();
        let bi = c.bin.build_info();
        assert_eq!(bi.go_version, format!("go{}", c.tc.version), "{l}");
        let nums: Vec<u32> =
            c.tc.version
                .split('.')
                .map(|n| n.parse().expect("num"))
                .collect();
        assert_eq!(bi.version(), Some((nums[0], nums[1], nums[2])), "{l}");
        assert_eq!(bi.path, "allocwatch.test/fixtures/gobin", "{l}");
        assert_eq!(bi.main_module, "allocwatch.test", "{l}");
        assert!(!bi.pgo() && !c.bin.pgo(), "{l}");
        let pie = matches!(c.variant, Variant::Pie | Variant::PieStripped);
        let stripped = matches!(c.variant, Variant::Stripped | Variant::PieStripped);
        let external = c.variant == Variant::External;
        assert_eq!(
            bi.setting("-buildmode"),
            Some(if pie { "pie" } else { "exe" }),
            "{l}"
        );
        assert_eq!(
            bi.setting("CGO_ENABLED"),
            Some(if external { "1" } else { "0" }),
            "{l}"
        );
        assert_eq!(bi.setting("GOARCH"), Some("amd64"), "{l}");
        if stripped {
            assert_eq!(bi.setting("-ldflags"), Some("-s -w"), "{l}");
        }
        assert_eq!(c.bin.is_pie(), pie, "{l}");
        assert_eq!(c.bin.is_stripped(), stripped, "{l}");
        assert_eq!(c.bin.externally_linked(), external, "{l}");
        let sizespec = c.variant == Variant::SizeSpecialized;
        assert_eq!(
            bi.has_experiment("sizespecializedmalloc"),
            sizespec,
            "{l}: {:?}",
            bi.experiments
        );
        if !sizespec {
            assert!(bi.experiments.is_empty(), "{l}: {:?}", bi.experiments);
        }
        assert_eq!(c.bin.first_load_vaddr(), 0x40_0000, "{l}");
    }
}

#[test]
fn functions_and_ranges_match_go_tool_nm() {
    let all = cases();
    for c in &all {
        let l = c.label();
        let funcs: Vec<Func> = c.bin.functions().collect();
        assert_eq!(funcs.len(), c.bin.function_count(), "{l}");
        assert!(funcs.len() > 1000, "{l}: only {} functions", funcs.len());
        assert!(
            funcs.windows(2).all(|w| w[0].end == w[1].entry),
            "{l}: functions not contiguous"
        );
        let (text, etext) = c.bin.text_range();
        assert_eq!(funcs[0].entry, text, "{l}: first function");
        let last_end = funcs[funcs.len() - 1].end;
        assert!(
            last_end <= etext && etext - last_end < 32,
            "{l}: {last_end:#x} {etext:#x}"
        );

        if let Some(base) = c.unstripped() {
            // Same source and toolchain: the code layout is identical.
            let u = all
                .iter()
                .find(|o| o.tc.version == c.tc.version && o.variant == base)
                .expect("unstripped counterpart");
            let ufuncs: Vec<Func> = u.bin.functions().collect();
            assert!(funcs == ufuncs, "{l}: functions differ from {}", u.label());
            assert_eq!(c.bin.text_range(), u.bin.text_range(), "{l}");
            continue;
        }
        let syms = nm(&c.tc, &c.path);
        let sym = |n: &str| {
            syms.get(n)
                .map(|s| s.0)
                .unwrap_or_else(|| panic!("{l}: nm has no {n}"))
        };
        assert_eq!(
            c.bin.text_range(),
            (sym("runtime.text"), sym("runtime.etext")),
            "{l}"
        );
        assert_eq!(
            c.bin.types_range(),
            (sym("runtime.types"), sym("runtime.etypes")),
            "{l}"
        );
        assert_eq!(
            c.bin.moduledata_addr(),
            sym("runtime.firstmoduledata"),
            "{l}"
        );
        assert_eq!(c.bin.pclntab_addr(), sym("runtime.pclntab"), "{l}");
        for name in [
            "runtime.mallocgc",
            "main.allocThing",
            "main.makePoints",
            "main.(*Thing).Grow",
            "sync.(*Pool).Get",
        ] {
            assert_eq!(c.func(name).entry, sym(name), "{l}: {name}");
        }
        // Functions with an ABI wrapper appear twice in the pclntab under one
        // name (nm calls one of them NAME.abi0): compare unique names only.
        let mut count: HashMap<&str, usize> = HashMap::new();
        for f in &funcs {
            *count.entry(f.name.as_str()).or_default() += 1;
        }
        let mut compared = 0;
        for f in &funcs {
            if count[f.name.as_str()] > 1 {
                continue;
            }
            if let Some(&(addr, kind)) = syms.get(&f.name)
                && matches!(kind, 'T' | 't')
            {
                assert_eq!(f.entry, addr, "{l}: entry of {}", f.name);
                compared += 1;
            }
            let mid = f.entry + f.size() / 2;
            assert_eq!(
                c.bin.func_at(mid).as_ref(),
                Some(f),
                "{l}: func_at({mid:#x})"
            );
        }
        assert!(
            compared * 10 > funcs.len() * 9,
            "{l}: only {compared} of {} in nm",
            funcs.len()
        );
        assert_eq!(c.bin.func_at(text.wrapping_sub(1)), None, "{l}");
        assert_eq!(c.bin.func_at(u64::MAX), None, "{l}");
        assert_eq!(c.bin.func_by_name("main.noSuchFunction"), None, "{l}");
    }
}

#[test]
fn code_and_file_offsets() {
    for c in cases() {
        let l = c.label();
        let file = std::fs::read(&c.path).expect("read fixture");
        for name in ["runtime.mallocgc", "main.allocThing", "sync.(*Pool).Get"] {
            let f = c.func(name);
            let code = c.bin.code(&f).expect("code");
            assert_eq!(code.len() as u64, f.size(), "{l}: {name}");
            let off = c.bin.file_offset(f.entry).expect("file offset") as usize;
            assert_eq!(&file[off..off + code.len()], code, "{l}: {name}");
        }
        // The go:buildid note and text are in the first segment at file offset 0.
        let (text, _) = c.bin.text_range();
        assert_eq!(c.bin.file_offset(text), Some(text - 0x40_0000), "{l}");
        assert_eq!(c.bin.file_offset(0), None, "{l}");
        // Relocation-aware reads: moduledata.pcHeader points at the pclntab.
        assert_eq!(
            c.bin.read_ptr(c.bin.moduledata_addr()),
            Some(c.bin.pclntab_addr()),
            "{l}"
        );
    }
}

#[test]
fn pie_words_come_from_relocations() {
    // Zero moduledata.pcHeader and .text in the file: a PIE build still
    // parses, through the R_X86_64_RELATIVE addends.
    for tc in support::toolchains() {
        for variant in [Variant::Pie, Variant::PieStripped] {
            let path = fixture(&tc, variant);
            let bin = open(&path);
            let mut data = std::fs::read(&path).expect("read");
            for field in [0u64, 176] {
                let off = bin
                    .file_offset(bin.moduledata_addr() + field)
                    .expect("offset") as usize;
                data[off..off + 8].fill(0);
            }
            let patched = GoBinary::parse(data)
                .unwrap_or_else(|e| panic!("go{} {}: {e}", tc.version, variant.name()));
            assert_eq!(patched.moduledata_addr(), bin.moduledata_addr());
            assert_eq!(patched.text_range(), bin.text_range());
            assert_eq!(
                patched.read_ptr(bin.moduledata_addr()),
                Some(bin.pclntab_addr())
            );
            assert_eq!(
                patched.func_by_name("main.allocThing"),
                bin.func_by_name("main.allocThing")
            );
        }
    }
}

#[test]
fn probe_offsets() {
    for c in cases() {
        let l = c.label();
        let check = |name: &str, want: u64| {
            let f = c.func(name);
            let po = prologue::probe_offset(c.bin.code(&f).expect("code"), f.entry);
            assert_eq!(po.kind, ProbeSite::PushBp, "{l}: {name}");
            assert_eq!(po.offset, want, "{l}: {name}");
            assert_eq!(
                c.bin.code(&f).expect("code")[want as usize],
                0x55,
                "{l}: {name}"
            );
        };
        check(
            "runtime.mallocgc",
            if c.tc.minor() == 23 { 0xf } else { 0xa },
        );
        check("sync.(*Pool).Get", 0xa);
        check("sync.(*Pool).Put", 0xa);
        check("main.allocThing", 0x6);
        check("main.makePoints", 0xa);
        let specialized: Vec<Func> = c
            .bin
            .functions()
            .filter(|f| is_specialized(&f.name))
            .collect();
        for f in &specialized {
            check(&f.name, 0xa);
        }
        // A leaf method without a frame.
        let grow = c.func("main.(*Thing).Grow");
        let po = prologue::probe_offset(c.bin.code(&grow).expect("code"), grow.entry);
        assert_eq!(po.offset, 0, "{l}");
        assert!(matches!(po.kind, ProbeSite::Entry { .. }), "{l}: {po:?}");
    }
}

#[test]
fn pool_get_miss_sites_everywhere() {
    for c in cases() {
        let l = c.label();
        let get = c.func("sync.(*Pool).Get");
        let code = c.bin.code(&get).expect("code");
        let s =
            prologue::pool_get_miss_sites(code, get.entry).unwrap_or_else(|e| panic!("{l}: {e}"));
        let call = &code[s.new_call as usize..];
        assert!(
            (call[0] == 0xff && (0xd0..=0xd7).contains(&call[1]))
                || (call[0] == 0x41 && call[1] == 0xff && (0xd0..=0xd7).contains(&call[2])),
            "{l}: no CALL reg at +{:#x}",
            s.new_call
        );
        assert!(s.nil_return < s.new_call, "{l}: {s:?}");
        assert_eq!(s.new_fn_reg, prologue::Gpr::Rdx, "{l}");
        assert_eq!(s.pool_reg, Some(prologue::Gpr::Rcx), "{l}");
        // The p.New() call is attributed to the line `return p.New()`.
        let frames = c.bin.symbolize(get.entry + s.new_call);
        assert_eq!(frames[0].function, "sync.(*Pool).Get", "{l}");
        assert!(frames[0].file.ends_with("sync/pool.go"), "{l}: {frames:?}");
    }
}

#[test]
fn symbolize_matches_go_tool_objdump() {
    let all = cases();
    let regex = r"^(main\.|sync\.\(\*Pool\)\.Get$|runtime\.mallocgc$)";
    for c in &all {
        let l = c.label();
        if let Some(base) = c.unstripped() {
            // Stripping keeps .gopclntab: same answers as the unstripped build.
            let u = all
                .iter()
                .find(|o| o.tc.version == c.tc.version && o.variant == base)
                .expect("unstripped counterpart");
            for name in [
                "main.allocThing",
                "main.makePoints",
                "main.usePool",
                "runtime.mallocgc",
            ] {
                let f = c.func(name);
                for pc in f.entry..f.end {
                    assert_eq!(
                        c.bin.symbolize(pc),
                        u.bin.symbolize(pc),
                        "{l}: {name} {pc:#x}"
                    );
                }
            }
            continue;
        }
        let lines = objdump(&c.tc, &c.path, regex);
        assert!(lines.len() > 500, "{l}: objdump gave {} lines", lines.len());
        let mut inlined = 0;
        for (addr, file, line) in &lines {
            let frames = c.bin.symbolize(*addr);
            let inner = frames
                .first()
                .unwrap_or_else(|| panic!("{l}: no frames at {addr:#x}"));
            let base = inner.file.rsplit('/').next().unwrap_or("");
            assert_eq!(
                (base, inner.line),
                (file.as_str(), *line),
                "{l}: {addr:#x} {frames:?}"
            );
            let outer = frames.last().expect("outer");
            assert!(!outer.inlined, "{l}");
            assert!(frames[..frames.len() - 1].iter().all(|f| f.inlined), "{l}");
            assert_eq!(
                c.bin.func_at(*addr).map(|f| f.name),
                Some(outer.function.clone()),
                "{l}"
            );
            inlined += usize::from(frames.len() > 1);
        }
        assert!(inlined > 10, "{l}: only {inlined} inlined pcs");
    }
}

#[test]
fn symbolize_allocation_sites() {
    let m = markers();
    for c in cases() {
        let l = c.label();
        let src_ok = |file: &str| file.ends_with(FIXTURE_SOURCE);

        // allocThing: one allocation, attributed to its own line.
        let f = c.func("main.allocThing");
        let sites: Vec<_> = calls(&c.bin, &f)
            .into_iter()
            .filter(|(_, n)| is_alloc_entry(n))
            .collect();
        assert_eq!(sites.len(), 1, "{l}: {sites:?}");
        let (call, callee) = &sites[0];
        if c.tc.minor() >= 27 {
            assert!(is_specialized(callee), "{l}: {callee}");
        }
        // As a return address would be resolved: ret - 1.
        let frames = c.bin.symbolize(call.next_ip() - 1);
        assert_eq!(frames.len(), 1, "{l}: {frames:?}");
        assert_eq!(frames[0].function, "main.allocThing", "{l}");
        assert_eq!(frames[0].line, m["allocThing"], "{l}");
        assert!(
            src_ok(&frames[0].file) && !frames[0].inlined,
            "{l}: {frames:?}"
        );
        assert_eq!(c.bin.symbolize(call.ip()), frames, "{l}");

        // makePoints: the inlined constructor's allocation and the make.
        let f = c.func("main.makePoints");
        let calls = calls(&c.bin, &f);
        let alloc: Vec<_> = calls.iter().filter(|(_, n)| is_alloc_entry(n)).collect();
        assert_eq!(alloc.len(), 1, "{l}: {alloc:?}");
        let frames = c.bin.symbolize(alloc[0].0.next_ip() - 1);
        assert_eq!(frames.len(), 2, "{l}: {frames:?}");
        assert_eq!(
            (
                frames[0].function.as_str(),
                frames[0].line,
                frames[0].inlined
            ),
            ("main.newPoint", m["newPoint"], true),
            "{l}"
        );
        assert_eq!(
            (
                frames[1].function.as_str(),
                frames[1].line,
                frames[1].inlined
            ),
            ("main.makePoints", m["makePoints.newPoint"], false),
            "{l}"
        );
        assert!(frames.iter().all(|f| src_ok(&f.file)), "{l}: {frames:?}");
        let make = calls
            .iter()
            .find(|(_, n)| n == "runtime.makeslice")
            .expect("makeslice call");
        let frames = c.bin.symbolize(make.0.next_ip() - 1);
        assert_eq!(frames.len(), 1, "{l}");
        assert_eq!(
            (frames[0].function.as_str(), frames[0].line),
            ("main.makePoints", m["makePoints.make"]),
            "{l}"
        );

        // Outside any function.
        assert!(c.bin.symbolize(0).is_empty(), "{l}");
        assert!(
            c.bin.symbolize(c.bin.text_range().1 + 0x1000).is_empty(),
            "{l}"
        );
    }
}

#[test]
fn type_names_and_sizes() {
    for c in cases() {
        let l = c.label();
        let rt = runtime_addrs(&c.path);
        let bias = rt["func main.allocThing"] - c.func("main.allocThing").entry;
        if !c.bin.is_pie() {
            assert_eq!(bias, 0, "{l}");
        }
        let (types, etypes) = c.bin.types_range();
        for (key, name, size) in [
            ("type main.Thing", "main.Thing", 32),
            ("type *main.Thing", "*main.Thing", 8),
            ("type main.Point", "main.Point", 16),
        ] {
            let typ = rt[key] - bias;
            assert!(
                types <= typ && typ < etypes,
                "{l}: {name} at {typ:#x} outside types"
            );
            assert_eq!(c.bin.type_name(typ), TypeName::Named(name.into()), "{l}");
            assert_eq!(c.bin.type_size(typ), Some(size), "{l}: size of {name}");
        }
        // The type argument the compiler passes to the allocator is the same
        // descriptor: AX for newobject, BX for mallocgc and its specializations.
        let f = c.func("main.allocThing");
        let ins = decode(&c.bin, &f);
        let (call, callee) = calls(&c.bin, &f)
            .into_iter()
            .find(|(_, n)| is_alloc_entry(n))
            .expect("allocation call");
        let reg = if callee == "runtime.newobject" {
            Register::RAX
        } else {
            Register::RBX
        };
        assert_eq!(
            type_arg(&ins, &call, reg),
            Some(rt["type main.Thing"] - bias),
            "{l}"
        );
        // makeslice gets the element type.
        let f = c.func("main.makePoints");
        let ins = decode(&c.bin, &f);
        let (call, _) = calls(&c.bin, &f)
            .into_iter()
            .find(|(_, n)| n == "runtime.makeslice")
            .expect("makeslice call");
        let elem = type_arg(&ins, &call, Register::RAX).expect("element type");
        assert_eq!(
            c.bin.type_name(elem),
            TypeName::Named("*main.Point".into()),
            "{l}"
        );

        assert_eq!(c.bin.type_name(0), TypeName::Nil, "{l}");
        assert_eq!(c.bin.type_name(etypes), TypeName::Dynamic, "{l}");
        assert_eq!(
            c.bin.type_name(c.bin.text_range().0),
            TypeName::Dynamic,
            "{l}"
        );
        assert_eq!(c.bin.type_size(etypes + 8), None, "{l}");
        assert_eq!(TypeName::Nil.to_string(), "<untyped>");
    }
}

#[test]
fn data_symbols() {
    for c in cases() {
        let l = c.label();
        let rt = runtime_addrs(&c.path);
        let bias = rt["func main.allocThing"] - c.func("main.allocThing").entry;
        let pool = rt["var main.bufPool"] - bias;
        if c.bin.is_stripped() {
            assert_eq!(c.bin.data_symbol_at(pool), None, "{l}");
        } else {
            let want = Some(("main.bufPool".to_string(), pool));
            assert_eq!(c.bin.data_symbol_at(pool), want, "{l}");
            // Inside the 40-byte sync.Pool (p.New at +0x20).
            assert_eq!(c.bin.data_symbol_at(pool + 0x20), want, "{l}");
            assert_ne!(c.bin.data_symbol_at(pool + 40), want, "{l}");
        }
    }
}

#[test]
fn allocation_entry_points() {
    for c in cases() {
        let l = c.label();
        let entries: Vec<String> = c
            .bin
            .functions()
            .filter(|f| f.name == "runtime.mallocgc" || is_specialized(&f.name))
            .map(|f| f.name)
            .collect();
        assert!(entries.contains(&"runtime.mallocgc".to_string()), "{l}");
        let specialized = c.tc.minor() >= 27 || c.variant == Variant::SizeSpecialized;
        if specialized {
            assert!(entries.len() > 1, "{l}: {entries:?}");
        } else {
            assert_eq!(entries.len(), 1, "{l}: {entries:?}");
        }
        eprintln!("{l}: {} allocation entry points", entries.len());
    }
}

// ---------------------------------------------------------------------------
// Refusals and hostile input

fn temp_file(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    std::io::Write::write_all(&mut f, bytes).expect("write temp file");
    f
}

#[test]
fn refuses_what_is_not_a_go_executable() {
    assert!(matches!(
        GoBinary::parse(Vec::new()),
        Err(GoBinError::NotElf)
    ));
    let f = temp_file(b"#!/bin/sh\necho not elf\n");
    assert!(matches!(GoBinary::open(f.path()), Err(GoBinError::NotElf)));
    let err = GoBinary::open(Path::new("/nonexistent/allocwatch")).expect_err("missing");
    assert!(matches!(err, GoBinError::Io { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("cannot read /nonexistent/allocwatch"),
        "{err}"
    );

    // 32-bit, and neither x86-64 nor AArch64 (RISC-V).
    let mut elf32 = vec![0u8; 64];
    elf32[..7].copy_from_slice(b"\x7fELF\x01\x01\x01");
    assert!(matches!(
        GoBinary::parse(elf32),
        Err(GoBinError::UnsupportedArch { .. })
    ));
    let mut riscv = vec![0u8; 64];
    riscv[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
    riscv[18] = 243;
    assert!(matches!(
        GoBinary::parse(riscv),
        Err(GoBinError::UnsupportedArch { .. })
    ));

    // A C program.
    for p in ["/bin/true", "/usr/bin/true"] {
        let p = Path::new(p);
        if p.exists() {
            let err = GoBinary::open(p).expect_err("not Go");
            assert!(matches!(err, GoBinError::NotGo), "{}: {err}", p.display());
            return;
        }
    }
    support::skip("no /bin/true: the C executable case is not checked");
}

/// File offset of the build info blob (`\xff Go buildinf:`).
fn buildinfo_offset(data: &[u8]) -> usize {
    data.windows(14)
        .enumerate()
        .step_by(16)
        .find(|(_, w)| *w == b"\xff Go buildinf:")
        .map(|(i, _)| i)
        .expect("build info magic")
}

#[test]
fn refuses_go_older_than_1_17() {
    for tc in support::toolchains() {
        for variant in [Variant::Default, Variant::PieStripped] {
            let mut data = std::fs::read(fixture(&tc, variant)).expect("read");
            let bi = buildinfo_offset(&data);
            // Inline version string: uvarint length, "go1.NN...".
            let len = data[bi + 32] as usize;
            let version = &mut data[bi + 33..bi + 33 + len];
            assert_eq!(&version[..4], b"go1.");
            version[4..6].copy_from_slice(b"16");
            match GoBinary::parse(data) {
                Err(GoBinError::GoTooOld { version }) => {
                    assert!(version.starts_with("go1.16"), "{version}");
                }
                other => panic!("go{} {}: {other:?}", tc.version, variant.name()),
            }
        }
    }
    let err = GoBinError::GoTooOld {
        version: "go1.16.15".into(),
    };
    assert!(err.to_string().contains("Go 1.17 or newer"), "{err}");
}

#[test]
fn refuses_unknown_pclntab_magic() {
    for tc in support::toolchains() {
        for variant in [Variant::Default, Variant::Stripped] {
            let path = fixture(&tc, variant);
            let bin = open(&path);
            let off = bin.file_offset(bin.pclntab_addr()).expect("offset") as usize;
            for magic in [0xffff_fff0u32, 0xffff_fffa, 0xffff_fffb, 0x1234_5678] {
                let mut data = std::fs::read(&path).expect("read");
                data[off..off + 4].copy_from_slice(&magic.to_le_bytes());
                match GoBinary::parse(data) {
                    Err(GoBinError::UnsupportedPclntab { magic: m }) => assert_eq!(m, magic),
                    other => panic!(
                        "go{} {} magic {magic:#x}: {other:?}",
                        tc.version,
                        variant.name()
                    ),
                }
            }
        }
    }
}

/// Runs every query on a parsed (possibly corrupt) binary: none may panic,
/// and what they answer about functions holds together however corrupt the
/// tables are: a function found by address contains it, one found by name
/// has that name, its code is its whole size, a probe offset and the
/// `sync.Pool` miss sites fall inside that code.
fn exercise(bin: &GoBinary, rng: &mut u64) {
    let _ = bin.build_info().pgo();
    let _ = bin.functions().take(100_000).count();
    if let Some(f) = bin.func_by_name("runtime.mallocgc") {
        assert_eq!(f.name, "runtime.mallocgc");
    }
    let (text, etext) = bin.text_range();
    let (types, etypes) = bin.types_range();
    for _ in 0..64 {
        let pc = text.wrapping_add(next(rng) % etext.saturating_sub(text).saturating_add(64));
        let _ = bin.symbolize(pc);
        if let Some(f) = bin.func_at(pc) {
            assert!(f.entry <= pc && pc < f.end, "func_at({pc:#x}) = {f:?}");
            if let Some(code) = bin.code(&f) {
                assert_eq!(code.len() as u64, f.size(), "{f:?}");
                let probe = prologue::probe_offset(code, f.entry);
                assert!(
                    probe.offset == 0 || probe.offset < f.size(),
                    "{f:?}: probe offset {probe:?}"
                );
                if let Ok(s) = prologue::pool_get_miss_sites(code, f.entry) {
                    assert!(
                        s.new_call < f.size() && s.nil_return < f.size(),
                        "{f:?}: {s:?}"
                    );
                }
            }
        }
        let typ = types.wrapping_add(next(rng) % etypes.saturating_sub(types).saturating_add(64));
        let _ = (
            bin.type_name(typ),
            bin.type_size(typ),
            bin.data_symbol_at(typ),
            bin.read_ptr(typ),
        );
        let _ = bin.file_offset(pc);
    }
}

fn next(state: &mut u64) -> u64 {
    // xorshift64*
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[test]
fn truncated_files_are_errors() {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for (version, variant) in [
        ("1.21.13", Variant::Default),
        ("1.25.5", Variant::PieStripped),
        ("1.27.3", Variant::Stripped),
    ] {
        let data = std::fs::read(fixture(&support::toolchain(version), variant)).expect("read");
        for len in 0..4 {
            assert!(matches!(
                GoBinary::parse(data[..len].to_vec()),
                Err(GoBinError::NotElf)
            ));
        }
        for len in 4..64 {
            assert!(
                matches!(
                    GoBinary::parse(data[..len].to_vec()),
                    Err(GoBinError::Truncated { .. })
                ),
                "{len}"
            );
        }
        let mut lengths: Vec<usize> = (0..256).collect();
        lengths.extend((0..400).map(|i| data.len() * i / 400));
        lengths.extend((1..64).map(|i| data.len() - i));
        for len in lengths {
            match GoBinary::parse(data[..len].to_vec()) {
                Err(_) => {}
                Ok(bin) => {
                    // Only possible when everything needed survived; it must still be usable.
                    exercise(&bin, &mut rng);
                    panic!(
                        "go{version} {} truncated to {len} of {} bytes parsed",
                        variant.name(),
                        data.len()
                    );
                }
            }
        }
    }
}

/// Copies with a few random bytes changed (in the ELF headers, the pclntab,
/// the module data, the build info, the types, anywhere) are either refused
/// with an error or parsed into a binary whose answers hold together (see
/// [`exercise`]); and both happen, so the test reaches the parser's checks
/// as well as the queries after them.
#[test]
fn corrupted_files_never_panic() {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for (version, variant) in [
        ("1.21.13", Variant::PieStripped),
        ("1.27.3", Variant::Stripped),
        ("1.24.11", Variant::Default),
    ] {
        let path = fixture(&support::toolchain(version), variant);
        let clean = std::fs::read(&path).expect("read");
        let bin = open(&path);
        // Target the structures the parsers read, and anywhere.
        let at = |va: u64| bin.file_offset(va).expect("offset") as usize;
        let regions = [
            (0usize, 0x1000usize),
            (at(bin.pclntab_addr()), 0x1_0000),
            (at(bin.moduledata_addr()), 0x200),
            (buildinfo_offset(&clean), 0x200),
            (at(bin.types_range().0), 0x1_0000),
            (0, clean.len()),
        ];
        let (mut ok, mut err) = (0, 0);
        for round in 0..120 {
            let mut data = clean.clone();
            let (start, size) = regions[round % regions.len()];
            for _ in 0..1 + next(&mut rng) % 8 {
                let i = start + (next(&mut rng) as usize) % size;
                if let Some(b) = data.get_mut(i) {
                    *b = next(&mut rng) as u8;
                }
            }
            match GoBinary::parse(data) {
                Ok(b) => {
                    exercise(&b, &mut rng);
                    ok += 1;
                }
                Err(_) => err += 1,
            }
        }
        eprintln!(
            "go{version} {}: {ok} corrupted copies parsed, {err} refused",
            variant.name()
        );
        assert!(
            ok > 0 && err > 0,
            "go{version} {}: {ok} corrupted copies parsed, {err} refused: one outcome never happened",
            variant.name()
        );
    }
}

/// The plan of an arm64 executable (exact mode that may switch to sampled,
/// pools), checked: no warning; every probe at its `MOVD.W R30` after the
/// stack check but the two miss sites inside `Get`; pools traced with `p`
/// in R2; `MemProfileRate` and the linker's flag where `sym` (`go tool
/// nm`) has them.
fn arm64_plan(bin: &GoBinary, l: &str, sym: &dyn Fn(&str) -> u64) -> allocwatch::plan::ProbePlan {
    let plan = allocwatch::plan::plan(
        bin,
        allocwatch::plan::PlanOptions {
            pools: true,
            mode: allocwatch::plan::Mode::Exact,
            switchable: true,
        },
    )
    .unwrap_or_else(|e| panic!("{l}: {e}"));
    assert_eq!(plan.arch, "arm64", "{l}");
    assert!(plan.warnings.is_empty(), "{l}: {:?}", plan.warnings);
    assert!(plan.pools_enabled(), "{l}: {:?}", plan.pools);
    assert_eq!(plan.pool_register, Some(2), "{l}");
    for p in &plan.probes {
        assert!(
            p.role.starts_with("pool miss") || p.placement == "MOVD.W R30 after the stack check",
            "{l}: {p:?}"
        );
    }
    assert_eq!(
        plan.mem_profile_rate_addr,
        Some(sym("runtime.MemProfileRate")),
        "{l}"
    );
    assert_eq!(
        plan.disable_flag_addr,
        Some(sym("runtime.disableMemoryProfiling")),
        "{l}"
    );
    plan
}

/// The arm64 plan on every Go version 1.21–1.27 (the VM traces builds of
/// the first and last; tests/arm64.rs): every probe on the `MOVD.W R30`
/// after the stack check, pools traced with `p` in R2 at `Get`'s miss
/// sites and `p.New()` returning right after its `CALL (R0)`,
/// `runtime.MemProfileRate` and `runtime.disableMemoryProfiling` where
/// `go tool nm` has them, no warning.
#[test]
fn arm64_plans_on_every_go_version() {
    for tc in support::toolchains() {
        let path = fixture(&tc, Variant::Arm64);
        let bin = open(&path);
        let l = format!("go{} arm64", tc.version);
        let syms = nm(&tc, &path);
        let sym = |n: &str| {
            syms.get(n)
                .map(|s| s.0)
                .unwrap_or_else(|| panic!("{l}: nm has no {n}"))
        };
        let plan = arm64_plan(&bin, &l, &sym);
        let get = sym("sync.(*Pool).Get");
        let get_fn = bin.func_by_name("sync.(*Pool).Get").expect("Get");
        let ret = plan.pool_new_return.expect("pools");
        assert!((get..get_fn.end).contains(&ret), "{l}: {ret:#x}");
        let call = bin.code(&get_fn).expect("code");
        let at = usize::try_from(ret - 4 - get).expect("offset");
        // BLR Rn: 1101011 0 0 01 11111 000000 n 00000.
        let word = u32::from_le_bytes(call[at..at + 4].try_into().expect("4 bytes"));
        assert_eq!(
            word & 0xffff_fc1f,
            0xd63f_0000,
            "{l}: {word:#010x} is no BLR"
        );
        assert!(
            plan.probes
                .iter()
                .any(|p| p.function == "runtime.profilealloc"),
            "{l}"
        );
        assert_eq!(
            plan.size_specialized_malloc,
            tc.minor() >= 27,
            "{l}: the size-specialized entries"
        );
    }
}

/// arm64 executables (`GOARCH=arm64`; Go 1.21 and 1.27; as built, and PIE
/// and stripped) are read as amd64 ones are: functions, ranges and module
/// data as `go tool nm` has them, machine code from the file, every
/// instruction's line as `go tool objdump` prints it (pc-value tables in
/// 4-byte units), pointers through `R_AARCH64_RELATIVE` relocations; and
/// planned (the VM traces them: tests/arm64.rs).
#[test]
fn arm64_executables_are_read_and_planned() {
    let tcs = support::toolchains();
    for tc in [
        tcs.first().expect("a toolchain"),
        tcs.last().expect("a toolchain"),
    ] {
        let path = fixture(tc, Variant::Arm64);
        let bin = open(&path);
        let l = format!("go{} arm64", tc.version);
        assert_eq!(bin.arch(), Arch::Arm64, "{l}");
        assert!(!bin.is_pie() && !bin.is_stripped(), "{l}");
        let funcs: Vec<Func> = bin.functions().collect();
        assert!(funcs.len() > 1000, "{l}: only {} functions", funcs.len());
        assert!(funcs.windows(2).all(|w| w[0].end == w[1].entry), "{l}");
        let syms = nm(tc, &path);
        let sym = |n: &str| {
            syms.get(n)
                .map(|s| s.0)
                .unwrap_or_else(|| panic!("{l}: nm has no {n}"))
        };
        assert_eq!(
            bin.text_range(),
            (sym("runtime.text"), sym("runtime.etext")),
            "{l}"
        );
        assert_eq!(bin.moduledata_addr(), sym("runtime.firstmoduledata"), "{l}");
        assert_eq!(bin.pclntab_addr(), sym("runtime.pclntab"), "{l}");
        let file = std::fs::read(&path).expect("read");
        for name in ["runtime.mallocgc", "main.allocThing", "sync.(*Pool).Get"] {
            let f = bin
                .func_by_name(name)
                .unwrap_or_else(|| panic!("{l}: no {name}"));
            assert_eq!(f.entry, sym(name), "{l}: {name}");
            let code = bin.code(&f).expect("code");
            let off = bin.file_offset(f.entry).expect("file offset") as usize;
            assert_eq!(&file[off..off + code.len()], code, "{l}: {name}");
        }
        let lines = objdump(tc, &path, "^main\\.");
        assert!(lines.len() > 100, "{l}: objdump gave {} lines", lines.len());
        for (addr, file, line) in &lines {
            let frames = bin.symbolize(*addr);
            let inner = frames
                .first()
                .unwrap_or_else(|| panic!("{l}: no frames at {addr:#x}"));
            let base = inner.file.rsplit('/').next().unwrap_or("");
            assert_eq!((base, inner.line), (file.as_str(), *line), "{l}: {addr:#x}");
        }
        // Where probes would go: the MOVD.W R30 after the stack check.
        let mut names = vec![
            "runtime.mallocgc",
            "runtime.profilealloc",
            "sync.(*Pool).Get",
            "sync.(*Pool).Put",
            "main.allocThing",
        ];
        let specialized: Vec<String> = funcs
            .iter()
            .filter(|f| {
                f.name.starts_with("runtime.mallocgcSmall")
                    || f.name.starts_with("runtime.mallocgcTiny")
            })
            .map(|f| f.name.clone())
            .collect();
        names.extend(specialized.iter().map(String::as_str));
        for name in names {
            let f = bin
                .func_by_name(name)
                .unwrap_or_else(|| panic!("{l}: no {name}"));
            let po = prologue::probe_offset_arm64(bin.code(&f).expect("code"));
            assert_eq!(po.kind, ProbeSite::SaveLr, "{l}: {name}: {po:?}");
            let text = go_tool(
                tc,
                &[
                    "objdump",
                    "-s",
                    &format!("^{}$", regex::escape(name)),
                    path.to_str().expect("utf-8"),
                ],
            );
            let at = format!("{:#x}", f.entry + po.offset);
            let line = text
                .lines()
                .find(|l| l.split_whitespace().nth(1) == Some(at.as_str()))
                .unwrap_or_else(|| panic!("{l}: {name}: no instruction at {at}"));
            assert!(line.contains("MOVD.W R30, -"), "{l}: {name}: {line}");
            // After the three instructions of the stack check, or first.
            assert!(
                matches!(po.offset, 0 | 12 | 16),
                "{l}: {name}: +{}",
                po.offset
            );
        }
        let plan = arm64_plan(&bin, &l, &sym);
        let get = sym("sync.(*Pool).Get");
        let get_text = go_tool(
            tc,
            &[
                "objdump",
                "-s",
                "^sync\\.\\(\\*Pool\\)\\.Get$",
                path.to_str().expect("utf-8"),
            ],
        );
        let at = |a: u64| {
            let a = format!("{a:#x}");
            get_text
                .lines()
                .find(|x| x.split_whitespace().nth(1) == Some(a.as_str()))
                .unwrap_or_else(|| panic!("{l}: Get has no instruction at {a}"))
                .to_string()
        };
        let new_return = plan.pool_new_return.expect("pools");
        assert!(
            at(new_return - 4).contains("CALL (R"),
            "{l}: {}",
            at(new_return - 4)
        );
        assert!(new_return > get, "{l}");

        let stripped = open(&fixture(tc, Variant::Arm64PieStripped));
        let l = format!("go{} arm64 pie-stripped", tc.version);
        assert_eq!(stripped.arch(), Arch::Arm64, "{l}");
        assert!(stripped.is_pie() && stripped.is_stripped(), "{l}");
        assert!(stripped.func_by_name("runtime.mallocgc").is_some(), "{l}");
        // moduledata.pcHeader, a pointer the dynamic linker relocates.
        assert_eq!(
            stripped.read_ptr(stripped.moduledata_addr()),
            Some(stripped.pclntab_addr()),
            "{l}"
        );
    }
}
