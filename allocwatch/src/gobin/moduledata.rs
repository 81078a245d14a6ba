//! `runtime.firstmoduledata`: where it is and the fields `gobin` reads
//! (text/etext, types/etypes, gofunc, and the pclntab slices used to
//! cross-check it).
//!
//! Field offsets (amd64), checked against `runtime/symtab.go` of every
//! supported release and against real binaries:
//!
//! | field | 1.20–1.26 | 1.27 |
//! |---|---|---|
//! | pcHeader, funcnametab, cutab, filetab, pctab, pclntable, ftab | 0, 8, 32, 56, 80, 104, 128 | same |
//! | text, etext | 176, 184 | same |
//! | types | 296 | 296 |
//! | etypes | 304 | 312 (`typedesclen` at 304) |
//! | gofunc | 320 | 344 (`itaboffset`, `itabsize` added before `rodata`) |
//!
//! Location: the `runtime.firstmoduledata` symbol when `.symtab` exists;
//! the `.go.module` section (Go 1.26+); otherwise a scan of the writable
//! segments for a word equal to the pclntab address, validated.

use super::GoBinError;
use super::buildinfo::GoVersion;
use super::elf::ElfInfo;
use super::pclntab::Header;

const PCHEADER: u64 = 0;
const FUNCNAMETAB: u64 = 8;
const CUTAB: u64 = 32;
const FILETAB: u64 = 56;
const PCTAB: u64 = 80;
const PCLNTABLE: u64 = 104;
const FTAB: u64 = 128;
const TEXT: u64 = 176;
const ETEXT: u64 = 184;
const TYPES: u64 = 296;

/// Offsets that moved between releases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) etypes: u64,
    pub(crate) gofunc: u64,
}

impl Layout {
    /// The layout of `version` (newest known when unknown).
    pub(crate) fn for_version(version: Option<GoVersion>) -> Self {
        match version {
            Some(v) if v < (1, 27, 0) => Layout {
                etypes: 304,
                gofunc: 320,
            },
            _ => Layout {
                etypes: 312,
                gofunc: 344,
            },
        }
    }
}

/// A Go slice header: pointer and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SliceHdr {
    pub(crate) ptr: u64,
    pub(crate) len: u64,
}

/// The validated fields of the first module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ModuleData {
    /// Where `runtime.firstmoduledata` itself is.
    pub(crate) addr: u64,
    /// The code, `[text, etext)`.
    pub(crate) text: u64,
    pub(crate) etext: u64,
    /// The type descriptors, `[types, etypes)`: a `*_type` is in there.
    pub(crate) types: u64,
    pub(crate) etypes: u64,
    /// `go:func.*`, the base of the funcdata offsets (inline trees).
    pub(crate) gofunc: u64,
    /// The pclntab's tables as Go slices, checked against its header.
    pub(crate) funcnametab: SliceHdr,
    pub(crate) cutab: SliceHdr,
    pub(crate) filetab: SliceHdr,
    pub(crate) pctab: SliceHdr,
    pub(crate) pclntable: SliceHdr,
    pub(crate) ftab: SliceHdr,
}

/// Reads and validates a moduledata candidate at `addr` against the pclntab
/// at `pclntab` (whose header is `hdr`).
pub(crate) fn read_at(
    data: &[u8],
    elf: &ElfInfo,
    addr: u64,
    pclntab: u64,
    hdr: &Header,
    layout: Layout,
) -> Option<ModuleData> {
    let word = |off: u64| elf.read_ptr(data, addr.checked_add(off)?);
    let slice = |off: u64| {
        Some(SliceHdr {
            ptr: word(off)?,
            len: word(off + 8)?,
        })
    };
    if word(PCHEADER)? != pclntab {
        return None;
    }
    let md = ModuleData {
        addr,
        text: word(TEXT)?,
        etext: word(ETEXT)?,
        types: word(TYPES)?,
        etypes: word(layout.etypes)?,
        gofunc: word(layout.gofunc)?,
        funcnametab: slice(FUNCNAMETAB)?,
        cutab: slice(CUTAB)?,
        filetab: slice(FILETAB)?,
        pctab: slice(PCTAB)?,
        pclntable: slice(PCLNTABLE)?,
        ftab: slice(FTAB)?,
    };
    let at = |off: u64| pclntab.checked_add(off);
    let consistent = Some(md.funcnametab.ptr) == at(hdr.funcname_offset)
        && Some(md.cutab.ptr) == at(hdr.cu_offset)
        && Some(md.filetab.ptr) == at(hdr.filetab_offset)
        && Some(md.pctab.ptr) == at(hdr.pctab_offset)
        && Some(md.pclntable.ptr) == at(hdr.pcln_offset)
        && md.ftab.ptr == md.pclntable.ptr
        && Some(md.ftab.len) == hdr.nfunc.checked_add(1)
        && md.text <= md.etext
        && md.types <= md.etypes;
    consistent.then_some(md)
}

/// Finds `runtime.firstmoduledata` for the pclntab at `pclntab`.
pub(crate) fn locate(
    data: &[u8],
    elf: &ElfInfo,
    pclntab: u64,
    hdr: &Header,
    version: Option<GoVersion>,
) -> Result<ModuleData, GoBinError> {
    let layout = Layout::for_version(version);
    let try_at = |addr: u64| read_at(data, elf, addr, pclntab, hdr, layout);
    if let Some(md) = elf.firstmoduledata.and_then(try_at) {
        return Ok(md);
    }
    if let Some(md) = elf
        .section_by_suffix(".go.module")
        .and_then(|s| try_at(s.addr))
    {
        return Ok(md);
    }
    // Stripped Go <= 1.25: scan writable data (.noptrdata first, then the
    // rest) for the pcHeader pointer. PIE words may be 0 in the file with
    // the value in a RELATIVE relocation: read_ptr applies it.
    const PF_W: u32 = 2;
    let preferred = [".noptrdata", ".data"]
        .iter()
        .filter_map(|n| elf.section_by_suffix(n))
        .map(|s| (s.addr, s.size));
    let segments = elf
        .segments
        .iter()
        .filter(|s| s.flags & PF_W != 0)
        .map(|s| (s.vaddr, s.filesz));
    for (start, size) in preferred.chain(segments) {
        let first = start.checked_add(7).map(|a| a & !7);
        let Some(mut addr) = first else { continue };
        let end = start.saturating_add(size);
        while addr.saturating_add(8) <= end {
            if elf.read_ptr(data, addr) == Some(pclntab)
                && let Some(md) = try_at(addr)
            {
                return Ok(md);
            }
            addr += 8;
        }
    }
    Err(GoBinError::Corrupt {
        what: "module data: no runtime.firstmoduledata matches the pclntab".to_string(),
    })
}
