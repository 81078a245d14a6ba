//! Reading a Go amd64 ELF executable, without running it: build info,
//! functions and their addresses (`.gopclntab`), inline-aware pc → file:line
//! symbolization, type names from type descriptors, file offsets for
//! uprobes, and prologue decoding to place probes ([`prologue`]).
//!
//! Works on stripped (`-s -w`), PIE, and externally linked binaries of Go
//! 1.20–1.27 (tested with 1.21–1.27); refuses Go < 1.17 and reports older
//! pclntab formats as unsupported. All addresses are link-time virtual
//! addresses: for a PIE process, subtract the load bias before asking
//! and add it to the answers.
//!
//! Every parser treats the file as hostile: reads are checked, lengths are
//! bounded by the file size, and malformed input yields an error or an
//! empty answer, never a panic.

pub mod arm64;
mod buildinfo;
mod elf;
mod moduledata;
mod pclntab;
pub mod prologue;
mod read;
mod types;
pub mod wrappers;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use buildinfo::{BuildInfo, GoVersion, parse_go_version};
pub use prologue::{Gpr, PoolGetSites, ProbeOffset, ProbeSite};
pub use types::TypeName;

use elf::ElfInfo;
use moduledata::ModuleData;
use pclntab::{Header, MAGIC_GO120, Pcln, RawFunc, Tables};

/// The instruction set of an executable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum Arch {
    /// x86-64 (`GOARCH=amd64`): what allocwatch traces.
    #[default]
    Amd64,
    /// AArch64 (`GOARCH=arm64`): read (functions, lines, types), not yet
    /// traced.
    Arm64,
}

impl Arch {
    /// The architecture this allocwatch is built for: its eBPF programs
    /// read that one's registers.
    pub const HOST: Arch = if cfg!(target_arch = "aarch64") {
        Arch::Arm64
    } else {
        Arch::Amd64
    };

    /// Go's name, `amd64` or `arm64`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// Go's `PCQuantum` (and the pclntab header's minimum instruction
    /// size): pc deltas in the pc-value tables count in these units.
    #[must_use]
    pub fn pc_quantum(self) -> u8 {
        match self {
            Arch::Amd64 => 1,
            Arch::Arm64 => 4,
        }
    }
}

/// Why a file cannot be read as a supported Go executable.
#[derive(Debug, thiserror::Error)]
pub enum GoBinError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not an ELF file")]
    NotElf,
    #[error("unsupported executable format: {what}")]
    UnsupportedArch { what: String },
    #[error("not a Go executable (no Go build info or pclntab)")]
    NotGo,
    #[error(
        "built with {version}: Go 1.17 or newer is required (older releases use the stack-based calling convention)"
    )]
    GoTooOld { version: String },
    #[error("{}", pclntab_magic_message(*magic))]
    UnsupportedPclntab { magic: u32 },
    #[error(
        "{go_version} executable without {}: allocwatch finds the program's functions through the .gopclntab section or the runtime.pclntab symbol",
        if *no_sections { "section headers (removed after linking?)" } else { "a .gopclntab section or runtime.pclntab symbol" }
    )]
    NoPclntab {
        go_version: String,
        no_sections: bool,
    },
    #[error("truncated {what}")]
    Truncated { what: &'static str },
    #[error("corrupt {what}")]
    Corrupt { what: String },
}

/// Older Go releases' magics mean "too old"; any other value means the
/// table is damaged (a Go ≥ 1.20 file whose header was overwritten).
fn pclntab_magic_message(magic: u32) -> String {
    match magic {
        // Go 1.18–1.19, 1.16–1.17, 1.2–1.15.
        0xffff_fff0 | 0xffff_fffa | 0xffff_fffb => format!(
            "unsupported pclntab format (magic {magic:#010x}): Go 1.20 or newer is required"
        ),
        _ => format!(
            "unknown pclntab magic {magic:#010x} (Go 1.20 and newer write {MAGIC_GO120:#010x}): the pclntab is damaged"
        ),
    }
}

/// A function from the pclntab function table.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Func {
    /// Go symbol name, e.g. `runtime.mallocgc`, `sync.(*Pool).Get`.
    pub name: String,
    /// Entry address (link-time virtual address).
    pub entry: u64,
    /// End address (exclusive): the next function's entry, or `etext`.
    pub end: u64,
}

impl Func {
    /// Size in bytes, padding included.
    pub fn size(&self) -> u64 {
        self.end.saturating_sub(self.entry)
    }

    pub fn contains(&self, vaddr: u64) -> bool {
        self.entry <= vaddr && vaddr < self.end
    }
}

/// One source-level frame at a pc.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Frame {
    /// Function name; for inlined frames the inlined function's name.
    pub function: String,
    /// Source file path as recorded by the compiler (`?` when unknown).
    pub file: String,
    /// Line number (0 when unknown).
    pub line: u32,
    /// True when this frame was inlined into the next one.
    pub inlined: bool,
}

/// The executable's bytes, at an address aligned for `object`'s ELF
/// structures (a misaligned buffer is copied once into `u64` words).
enum Storage {
    Bytes(Vec<u8>),
    Words { words: Vec<u64>, len: usize },
}

impl Storage {
    fn new(data: Vec<u8>) -> Self {
        if data.as_ptr().align_offset(8) == 0 {
            Storage::Bytes(data)
        } else {
            Storage::copied(&data)
        }
    }

    fn copied(data: &[u8]) -> Self {
        let mut words = vec![0u64; data.len().div_ceil(8)];
        let dst = object::pod::bytes_of_slice_mut(&mut words);
        if let Some(dst) = dst.get_mut(..data.len()) {
            dst.copy_from_slice(data);
        }
        Storage::Words {
            words,
            len: data.len(),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Bytes(b) => b,
            Storage::Words { words, len } => object::pod::bytes_of_slice(words)
                .get(..*len)
                .unwrap_or_default(),
        }
    }
}

/// A parsed Go executable. Owns the file bytes; all queries are pure.
pub struct GoBinary {
    storage: Storage,
    elf: ElfInfo,
    build_info: BuildInfo,
    /// Link-time address of the pclntab header.
    pclntab_addr: u64,
    /// File offset and size of the pclntab.
    pclntab_file: (u64, u64),
    tables: Tables,
    md: ModuleData,
}

impl fmt::Debug for GoBinary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoBinary")
            .field("size", &self.data().len())
            .field("go_version", &self.build_info.raw_version)
            .field("pie", &self.is_pie())
            .field("stripped", &self.is_stripped())
            .field("pclntab", &format_args!("{:#x}", self.pclntab_addr))
            .field("firstmoduledata", &format_args!("{:#x}", self.md.addr))
            .field("functions", &self.tables.nfunc)
            .finish()
    }
}

impl GoBinary {
    /// The architecture an ELF file at `path` is built for, from its header
    /// alone (as [`GoBinary::open`] checks it); `None` for another file.
    #[must_use]
    pub fn arch_of_file(path: &Path) -> Option<Arch> {
        use std::io::Read;
        let mut head = Vec::with_capacity(64);
        std::fs::File::open(path)
            .ok()?
            .take(64)
            .read_to_end(&mut head)
            .ok()?;
        elf::check_ident(&head).ok()
    }

    /// Reads and parses the executable at `path`.
    pub fn open(path: &Path) -> Result<Self, GoBinError> {
        let data = std::fs::read(path).map_err(|source| GoBinError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(data)
    }

    /// Parses an executable image (the whole file).
    pub fn parse(data: Vec<u8>) -> Result<Self, GoBinError> {
        let storage = Storage::new(data);
        let bytes = storage.bytes();
        let elf = ElfInfo::parse(bytes)?;
        let build_info = buildinfo::parse(bytes, &elf)?;

        let (pclntab_addr, pclntab_size) = match elf.section_by_suffix(".gopclntab") {
            Some(s) => (s.addr, s.size),
            None => match (elf.pclntab_sym, elf.epclntab_sym) {
                (Some(a), Some(e)) if e > a => (a, e - a),
                _ => {
                    return Err(GoBinError::NoPclntab {
                        go_version: build_info.go_version.clone(),
                        no_sections: elf.sections.is_empty(),
                    });
                }
            },
        };
        let pclntab_off = elf.file_offset(pclntab_addr).ok_or(GoBinError::Truncated {
            what: "pclntab (not in the file image)",
        })?;
        let tab = elf
            .read(bytes, pclntab_addr, pclntab_size)
            .ok_or(GoBinError::Truncated { what: "pclntab" })?;
        let hdr = Header::parse(tab)?;
        if hdr.quantum != elf.arch.pc_quantum() {
            return Err(GoBinError::Corrupt {
                what: format!(
                    "pclntab header (min instruction size {} in an {} executable)",
                    hdr.quantum,
                    elf.arch.name()
                ),
            });
        }
        let md = moduledata::locate(bytes, &elf, pclntab_addr, &hdr, build_info.version())?;
        let tables = tables(&md, &hdr, pclntab_addr, tab.len())?;
        let bin = GoBinary {
            storage,
            elf,
            build_info,
            pclntab_addr,
            pclntab_file: (pclntab_off, pclntab_size),
            tables,
            md,
        };
        let end = bin.pcln().and_then(|p| p.end_of_text());
        if end.is_none_or(|e| e < bin.md.text || e > bin.md.etext) {
            return Err(GoBinError::Corrupt {
                what: "function table (functions outside moduledata text..etext)".to_string(),
            });
        }
        Ok(bin)
    }

    fn data(&self) -> &[u8] {
        self.storage.bytes()
    }

    fn pcln(&self) -> Option<Pcln<'_>> {
        let (off, size) = self.pclntab_file;
        let tab = read::bytes(self.data(), off, size)?;
        Pcln::new(tab, &self.tables, self.md.text)
    }

    fn to_func(p: &Pcln<'_>, f: &RawFunc) -> Func {
        Func {
            name: String::from_utf8_lossy(p.func_name(f).unwrap_or(b"?")).into_owned(),
            entry: f.entry,
            end: f.end,
        }
    }

    /// What the linker recorded about the build.
    pub fn build_info(&self) -> &BuildInfo {
        &self.build_info
    }

    /// Shorthand for `build_info().pgo()`: Pool methods and allocators may
    /// be inlined into hot callers.
    pub fn pgo(&self) -> bool {
        self.build_info.pgo()
    }

    /// The instruction set.
    pub fn arch(&self) -> Arch {
        self.elf.arch
    }

    /// Position-independent (`ET_DYN`): runtime address = load bias + vaddr.
    pub fn is_pie(&self) -> bool {
        self.elf.is_dyn
    }

    /// No `.symtab` (built with `-ldflags=-s` or stripped afterwards).
    pub fn is_stripped(&self) -> bool {
        !self.elf.has_symtab
    }

    /// Linked by the C toolchain (`-linkmode=external`, usual with cgo).
    /// Detected from the build settings and from traces the Go linker never
    /// leaves (`.init`/`.fini`/`.comment`/`.eh_frame_hdr` sections, a
    /// `PT_GNU_EH_FRAME` header).
    pub fn externally_linked(&self) -> bool {
        let ldflags = self.build_info.setting("-ldflags").unwrap_or("");
        self.elf.c_linker_traces
            || ldflags.contains("-linkmode=external")
            || ldflags.contains("-linkmode external")
    }

    /// `[moduledata.text, moduledata.etext)`. (The pclntab header's
    /// `textStart` is 0 from Go 1.26 and is not used.)
    pub fn text_range(&self) -> (u64, u64) {
        (self.md.text, self.md.etext)
    }

    /// `[moduledata.types, moduledata.etypes)`: where type descriptors
    /// compiled into the executable live.
    pub fn types_range(&self) -> (u64, u64) {
        (self.md.types, self.md.etypes)
    }

    /// Address of `runtime.firstmoduledata`.
    pub fn moduledata_addr(&self) -> u64 {
        self.md.addr
    }

    /// Address of the pclntab header.
    pub fn pclntab_addr(&self) -> u64 {
        self.pclntab_addr
    }

    /// Number of entries in the function table.
    pub fn function_count(&self) -> usize {
        self.tables.nfunc
    }

    /// Every function in the function table, in address order.
    pub fn functions(&self) -> impl Iterator<Item = Func> + '_ {
        let p = self.pcln();
        let n = p.map_or(0, |p| p.nfunc());
        (0..n).filter_map(move |i| {
            let p = p?;
            Some(Self::to_func(&p, &p.func(i)?))
        })
    }

    /// The first function (lowest address) named exactly `name`.
    ///
    /// A few runtime functions have an ABI wrapper with the same pclntab
    /// name (an assembly function called from Go, or a Go function called
    /// from assembly; `go tool nm` suffixes one of them `.abi0`); for those
    /// this is whichever comes first. Allocation and `sync.Pool` entry
    /// points have no wrapper.
    pub fn func_by_name(&self, name: &str) -> Option<Func> {
        let p = self.pcln()?;
        (0..p.nfunc()).find_map(|i| {
            let f = p.func(i)?;
            (p.func_name(&f)? == name.as_bytes()).then(|| Self::to_func(&p, &f))
        })
    }

    /// The function whose `[entry, end)` contains `vaddr`.
    pub fn func_at(&self, vaddr: u64) -> Option<Func> {
        let p = self.pcln()?;
        Some(Self::to_func(&p, &p.find(vaddr)?))
    }

    /// Source frames at `pc`, innermost first: inlined calls (by their own
    /// name and line) followed by the physical function. Empty when `pc` is
    /// outside every function.
    ///
    /// For a **return address** (from a stack trace or `[RSP]`) pass
    /// `pc - 1`: the return address points after the call and may belong
    /// to the next line or even the next function.
    pub fn symbolize(&self, pc: u64) -> Vec<Frame> {
        let Some(p) = self.pcln() else {
            return Vec::new();
        };
        let data = self.data();
        let gofunc = self.md.gofunc;
        let read_gofunc = |off: u64, len: u64| self.elf.read(data, gofunc.checked_add(off)?, len);
        p.frames(pc, read_gofunc)
            .into_iter()
            .map(|f| Frame {
                function: String::from_utf8_lossy(f.name).into_owned(),
                file: f.file.map_or_else(
                    || "?".to_string(),
                    |b| String::from_utf8_lossy(b).into_owned(),
                ),
                line: f.line.and_then(|l| u32::try_from(l).ok()).unwrap_or(0),
                inlined: f.inlined,
            })
            .collect()
    }

    /// The name of the type descriptor at `typ` (link-time address).
    pub fn type_name(&self, typ: u64) -> TypeName {
        types::type_name(self.data(), &self.elf, &self.md, typ)
    }

    /// `abi.Type.Size_` of the type descriptor at `typ`, when it is one of
    /// the executable's.
    pub fn type_size(&self, typ: u64) -> Option<u64> {
        types::type_size(self.data(), &self.elf, &self.md, typ)
    }

    /// The machine code of `f`, from the file.
    pub fn code(&self, f: &Func) -> Option<&[u8]> {
        self.elf
            .read(self.data(), f.entry, f.end.checked_sub(f.entry)?)
    }

    /// File offset of `vaddr` through its `PT_LOAD` segment
    /// (`va - p_vaddr + p_offset`): what a uprobe attach by offset needs.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.elf.file_offset(vaddr)
    }

    /// The global variable (from `.symtab`) containing `vaddr`: its name
    /// (e.g. `main.bufPool`) and start address. `None` in stripped binaries.
    pub fn data_symbol_at(&self, vaddr: u64) -> Option<(String, u64)> {
        self.elf
            .data_symbol_at(vaddr)
            .map(|s| (s.name.clone(), s.addr))
    }

    /// The `p_vaddr` of the `PT_LOAD` segment mapped from file offset 0
    /// (else the lowest `PT_LOAD`): with `/proc/PID/maps`, the load bias is
    /// `start of the offset-0 mapping − (first_load_vaddr & !0xfff)`.
    pub fn first_load_vaddr(&self) -> u64 {
        let segs = &self.elf.segments;
        segs.iter()
            .filter(|s| s.offset == 0)
            .map(|s| s.vaddr)
            .min()
            .or_else(|| segs.iter().map(|s| s.vaddr).min())
            .unwrap_or(0)
    }

    /// The pointer-sized word at `vaddr` as the program sees it with a zero
    /// load bias: for PIE, the `R_X86_64_RELATIVE` addend when one applies.
    pub fn read_ptr(&self, vaddr: u64) -> Option<u64> {
        self.elf.read_ptr(self.data(), vaddr)
    }

    /// The byte the loaded program starts with at `vaddr` (0 in `.bss`).
    pub fn initial_byte(&self, vaddr: u64) -> Option<u8> {
        self.elf.initial_byte(self.data(), vaddr)
    }
}

/// Converts the moduledata slices into ranges of the pclntab bytes.
fn tables(
    md: &ModuleData,
    hdr: &Header,
    pclntab: u64,
    tab_len: usize,
) -> Result<Tables, GoBinError> {
    let range = |s: moduledata::SliceHdr, elem: u64| {
        let start = usize::try_from(s.ptr.checked_sub(pclntab)?).ok()?;
        let len = usize::try_from(s.len.checked_mul(elem)?).ok()?;
        let end = start.checked_add(len)?;
        (end <= tab_len).then_some(start..end)
    };
    let truncated = || GoBinError::Truncated { what: "pclntab" };
    let t = Tables {
        funcnames: range(md.funcnametab, 1).ok_or_else(truncated)?,
        cutab: range(md.cutab, 4).ok_or_else(truncated)?,
        filetab: range(md.filetab, 1).ok_or_else(truncated)?,
        pctab: range(md.pctab, 1).ok_or_else(truncated)?,
        pcln: range(md.pclntable, 1).ok_or_else(truncated)?,
        nfunc: usize::try_from(hdr.nfunc).map_err(|_| truncated())?,
        quantum: hdr.quantum,
    };
    // The function table (nfunc + 1 slots of 8 bytes) must fit.
    let ftab_bytes = (t.nfunc as u64)
        .checked_add(1)
        .and_then(|n| n.checked_mul(8));
    if ftab_bytes.is_none_or(|b| b > t.pcln.len() as u64) {
        return Err(truncated());
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_copies_keep_the_bytes() {
        for len in [0usize, 1, 7, 8, 9, 4097] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let s = Storage::copied(&data[..]);
            assert_eq!(s.bytes(), &data[..]);
            assert_eq!(s.bytes().as_ptr().align_offset(8), 0);
            assert_eq!(Storage::new(data.clone()).bytes(), &data[..]);
        }
    }

    #[test]
    fn shareable_between_threads() {
        fn check<T: Send + Sync>() {}
        check::<GoBinary>();
    }

    #[test]
    fn errors_read_as_fragments() {
        let e = GoBinError::UnsupportedPclntab { magic: 0xffff_fff0 };
        assert_eq!(
            e.to_string(),
            "unsupported pclntab format (magic 0xfffffff0): Go 1.20 or newer is required"
        );
        assert_eq!(
            GoBinError::UnsupportedPclntab { magic: 0xdead_beef }.to_string(),
            "unknown pclntab magic 0xdeadbeef (Go 1.20 and newer write 0xfffffff1): the pclntab is damaged"
        );
        assert_eq!(GoBinError::NotElf.to_string(), "not an ELF file");
        assert_eq!(
            GoBinError::Truncated { what: "pclntab" }.to_string(),
            "truncated pclntab"
        );
    }
}
