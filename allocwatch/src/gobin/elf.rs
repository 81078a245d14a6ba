//! The ELF side of a Go executable: load segments, section headers, the
//! static symbol table and relative relocations, read once with
//! the `object` crate into owned tables so that the rest of `gobin` can map
//! virtual addresses to file bytes without re-parsing.

use object::Endianness;
use object::elf::{self, FileHeader64};
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader, Sym};

use super::read;
use super::{Arch, GoBinError};

/// `e_machine` of x86-64.
const EM_X86_64: u16 = 62;
/// `e_machine` of AArch64.
const EM_AARCH64: u16 = 183;
/// `R_X86_64_RELATIVE`.
const R_X86_64_RELATIVE: u32 = 8;
/// `R_AARCH64_RELATIVE`.
const R_AARCH64_RELATIVE: u32 = 1027;
/// Size of one `Elf64_Rela` entry.
const RELA_SIZE: u64 = 24;

/// One `PT_LOAD` program header.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Segment {
    /// Where it is mapped (before any load bias).
    pub(crate) vaddr: u64,
    /// Where it starts in the file.
    pub(crate) offset: u64,
    /// Bytes from the file.
    pub(crate) filesz: u64,
    /// Size in memory: past `filesz`, zero-filled (`.bss`).
    pub(crate) memsz: u64,
    pub(crate) flags: u32,
}

/// One section header with its name.
#[derive(Clone, Debug)]
pub(crate) struct Section {
    pub(crate) name: String,
    pub(crate) addr: u64,
    pub(crate) size: u64,
}

/// A data object from `.symtab` (a global variable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DataSymbol {
    /// Symbol name, e.g. `main.bufPool`.
    pub(crate) name: String,
    /// Virtual address of its first byte.
    pub(crate) addr: u64,
    /// Size in bytes (`st_size`).
    pub(crate) size: u64,
}

/// Everything `gobin` needs from the ELF headers, owned.
#[derive(Debug, Default)]
pub(crate) struct ElfInfo {
    /// `e_type == ET_DYN`.
    pub(crate) is_dyn: bool,
    /// `e_machine`.
    pub(crate) arch: Arch,
    pub(crate) segments: Vec<Segment>,
    pub(crate) sections: Vec<Section>,
    /// `.symtab` is present and has symbols.
    pub(crate) has_symtab: bool,
    /// `STT_OBJECT` symbols with a non-zero size, sorted by address.
    pub(crate) data_symbols: Vec<DataSymbol>,
    /// A few runtime symbols looked up by name (value).
    pub(crate) firstmoduledata: Option<u64>,
    pub(crate) pclntab_sym: Option<u64>,
    pub(crate) epclntab_sym: Option<u64>,
    /// `(r_offset, r_addend)` of every relative relocation
    /// (`R_X86_64_RELATIVE`, `R_AARCH64_RELATIVE`), sorted.
    pub(crate) relative_relocs: Vec<(u64, u64)>,
    /// Structural signs of an external (C toolchain) link.
    pub(crate) c_linker_traces: bool,
}

fn corrupt(what: &str, err: object::read::Error) -> GoBinError {
    GoBinError::Corrupt {
        what: format!("{what}: {err}"),
    }
}

/// The section table of an ELF64 file.
type SectionTable<'data> = object::read::elf::SectionTable<'data, FileHeader64<Endianness>>;

/// The first bytes of the header: an ELF64 little-endian x86-64 or
/// AArch64 file, long enough for its header.
pub(super) fn check_ident(data: &[u8]) -> Result<Arch, GoBinError> {
    const SHORT: GoBinError = GoBinError::Truncated { what: "elf header" };
    if data.get(..4) != Some(&elf::ELFMAG[..]) {
        return Err(GoBinError::NotElf);
    }
    let class = read::u8_at(data, 4).ok_or(SHORT)?;
    let encoding = read::u8_at(data, 5).ok_or(SHORT)?;
    if class != elf::ELFCLASS64 || encoding != elf::ELFDATA2LSB {
        return Err(GoBinError::UnsupportedArch {
            what: format!(
                "ELF class {class}, data encoding {encoding} (need 64-bit little-endian)"
            ),
        });
    }
    let machine = read::u16_at(data, 18).ok_or(SHORT)?;
    let arch = match machine {
        EM_X86_64 => Arch::Amd64,
        EM_AARCH64 => Arch::Arm64,
        _ => {
            return Err(GoBinError::UnsupportedArch {
                what: format!("e_machine {machine} (need x86-64 or AArch64)"),
            });
        }
    };
    if data.len() < size_of::<FileHeader64<Endianness>>() {
        return Err(SHORT);
    }
    Ok(arch)
}

/// True when `size` bytes at `off` do not fit in a file of `len` bytes.
fn past_end(len: usize, off: u64, size: u64) -> bool {
    off.checked_add(size).is_none_or(|end| end > len as u64)
}

impl ElfInfo {
    /// Reads the headers of an x86-64 or AArch64 little-endian ELF64 file.
    pub(crate) fn parse(data: &[u8]) -> Result<Self, GoBinError> {
        let arch = check_ident(data)?;
        let header =
            FileHeader64::<Endianness>::parse(data).map_err(|e| corrupt("elf header", e))?;
        let endian = header.endian().map_err(|e| corrupt("elf header", e))?;
        let mut info = ElfInfo {
            is_dyn: header.e_type(endian) == elf::ET_DYN,
            arch,
            ..ElfInfo::default()
        };
        let dynamic = info.read_segments(header, endian, data)?;
        let shoff = header.e_shoff(endian);
        let shsize = u64::from(header.e_shnum(endian)) * u64::from(header.e_shentsize(endian));
        if shoff != 0 && past_end(data.len(), shoff, shsize) {
            return Err(GoBinError::Truncated {
                what: "file (the section header table extends past its end)",
            });
        }
        // Section headers are optional (they can be removed without breaking
        // the program): an unreadable table is treated as absent.
        let mut rela_ranges = Vec::new();
        if let Ok(table) = header.sections(endian, data) {
            rela_ranges = info.read_sections(&table, endian, data)?;
            info.read_symbols(&table, endian, data);
        }
        if rela_ranges.is_empty()
            && let Some((off, size)) = dynamic
        {
            rela_ranges.extend(dynamic_rela(&info, data, off, size));
        }
        for (off, size) in rela_ranges {
            info.read_relative_relocs(data, off, size);
        }
        info.relative_relocs.sort_unstable();
        info.relative_relocs.dedup_by_key(|r| r.0);
        Ok(info)
    }

    /// The `PT_LOAD` segments (and the signs of a C link); returns where
    /// `PT_DYNAMIC` is, if anywhere.
    fn read_segments(
        &mut self,
        header: &FileHeader64<Endianness>,
        endian: Endianness,
        data: &[u8],
    ) -> Result<Option<(u64, u64)>, GoBinError> {
        let phsize = u64::from(header.e_phnum(endian)) * u64::from(header.e_phentsize(endian));
        if past_end(data.len(), header.e_phoff(endian), phsize) {
            return Err(GoBinError::Truncated {
                what: "file (the program header table extends past its end)",
            });
        }
        let phdrs = header
            .program_headers(endian, data)
            .map_err(|e| corrupt("program headers", e))?;
        let mut dynamic = None;
        for ph in phdrs {
            match ph.p_type(endian) {
                elf::PT_LOAD => self.segments.push(Segment {
                    vaddr: ph.p_vaddr(endian),
                    offset: ph.p_offset(endian),
                    filesz: ph.p_filesz(endian),
                    memsz: ph.p_memsz(endian),
                    flags: ph.p_flags(endian),
                }),
                elf::PT_DYNAMIC => dynamic = Some((ph.p_offset(endian), ph.p_filesz(endian))),
                elf::PT_GNU_EH_FRAME => self.c_linker_traces = true,
                _ => {}
            }
        }
        if self
            .segments
            .iter()
            .any(|s| past_end(data.len(), s.offset, s.filesz))
        {
            return Err(GoBinError::Truncated {
                what: "file (a loadable segment extends past its end)",
            });
        }
        Ok(dynamic)
    }

    /// The section headers (and the signs of a C link); returns where the
    /// `SHT_RELA` sections are.
    fn read_sections(
        &mut self,
        table: &SectionTable<'_>,
        endian: Endianness,
        data: &[u8],
    ) -> Result<Vec<(u64, u64)>, GoBinError> {
        let mut rela_ranges = Vec::new();
        for sh in table.iter() {
            let name = table.section_name(endian, sh).unwrap_or(b"");
            let name = String::from_utf8_lossy(name).into_owned();
            if matches!(
                name.as_str(),
                ".init" | ".fini" | ".comment" | ".eh_frame_hdr"
            ) {
                self.c_linker_traces = true;
            }
            let sh_type = sh.sh_type(endian);
            if sh_type != elf::SHT_NOBITS
                && sh_type != elf::SHT_NULL
                && past_end(data.len(), sh.sh_offset(endian), sh.sh_size(endian))
            {
                return Err(GoBinError::Truncated {
                    what: "file (a section extends past its end)",
                });
            }
            if sh_type == elf::SHT_RELA {
                rela_ranges.push((sh.sh_offset(endian), sh.sh_size(endian)));
            }
            self.sections.push(Section {
                name,
                addr: sh.sh_addr(endian),
                size: if sh_type == elf::SHT_NOBITS {
                    0
                } else {
                    sh.sh_size(endian)
                },
            });
        }
        Ok(rela_ranges)
    }

    /// The runtime symbols looked up by name, and the data objects.
    fn read_symbols(&mut self, table: &SectionTable<'_>, endian: Endianness, data: &[u8]) {
        let Ok(symtab) = table.symbols(endian, data, elf::SHT_SYMTAB) else {
            return;
        };
        self.has_symtab = !symtab.is_empty();
        for sym in symtab.iter() {
            let Ok(name) = symtab.symbol_name(endian, sym) else {
                continue;
            };
            let value = sym.st_value(endian);
            match name {
                b"runtime.firstmoduledata" => self.firstmoduledata = Some(value),
                b"runtime.pclntab" => self.pclntab_sym = Some(value),
                b"runtime.epclntab" => self.epclntab_sym = Some(value),
                _ => {}
            }
            let size = sym.st_size(endian);
            if sym.st_type() == elf::STT_OBJECT && size > 0 && sym.st_shndx(endian) != 0 {
                self.data_symbols.push(DataSymbol {
                    name: String::from_utf8_lossy(name).into_owned(),
                    addr: value,
                    size,
                });
            }
        }
        self.data_symbols.sort_by_key(|s| s.addr);
    }

    fn read_relative_relocs(&mut self, data: &[u8], off: u64, size: u64) {
        let Some(table) = read::bytes(data, off, size) else {
            return;
        };
        for entry in table.chunks_exact(RELA_SIZE as usize) {
            let (Some(r_offset), Some(r_info), Some(r_addend)) = (
                read::u64_at(entry, 0),
                read::u64_at(entry, 8),
                read::u64_at(entry, 16),
            ) else {
                continue;
            };
            // ELF64_R_TYPE is the low 32 bits of r_info.
            let relative = match self.arch {
                Arch::Amd64 => R_X86_64_RELATIVE,
                Arch::Arm64 => R_AARCH64_RELATIVE,
            };
            if r_info & 0xffff_ffff == u64::from(relative) {
                self.relative_relocs.push((r_offset, r_addend));
            }
        }
    }

    /// The byte a freshly loaded image has at `vaddr`: from the file, or 0
    /// in the zero-filled part of a segment (`.bss`).
    pub(crate) fn initial_byte(&self, data: &[u8], vaddr: u64) -> Option<u8> {
        if let Some(b) = self.read(data, vaddr, 1) {
            return b.first().copied();
        }
        self.segments
            .iter()
            .any(|s| vaddr.checked_sub(s.vaddr).is_some_and(|rel| rel < s.memsz))
            .then_some(0)
    }

    /// The file offset of `vaddr`, through the `PT_LOAD` segment that maps
    /// it from the file (`va - p_vaddr + p_offset`). Addresses in the
    /// zero-filled part of a segment (`.bss`) have none.
    pub(crate) fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.segments.iter().find_map(|s| {
            let rel = vaddr.checked_sub(s.vaddr)?;
            (rel < s.filesz)
                .then(|| s.offset.checked_add(rel))
                .flatten()
        })
    }

    /// `len` file bytes at `vaddr`, all from one segment.
    pub(crate) fn read<'a>(&self, data: &'a [u8], vaddr: u64, len: u64) -> Option<&'a [u8]> {
        self.segments.iter().find_map(|s| {
            let rel = vaddr.checked_sub(s.vaddr)?;
            if rel.checked_add(len)? > s.filesz {
                return None;
            }
            read::bytes(data, s.offset.checked_add(rel)?, len)
        })
    }

    /// The file bytes from `vaddr` to the end of its segment's file image.
    pub(crate) fn read_to_segment_end<'a>(&self, data: &'a [u8], vaddr: u64) -> Option<&'a [u8]> {
        self.segments.iter().find_map(|s| {
            let rel = vaddr.checked_sub(s.vaddr)?;
            if rel >= s.filesz {
                return None;
            }
            read::bytes(data, s.offset.checked_add(rel)?, s.filesz - rel)
        })
    }

    /// The addend of the `R_X86_64_RELATIVE` relocation at `vaddr`.
    pub(crate) fn relative_addend(&self, vaddr: u64) -> Option<u64> {
        let i = self
            .relative_relocs
            .binary_search_by_key(&vaddr, |r| r.0)
            .ok()?;
        self.relative_relocs.get(i).map(|r| r.1)
    }

    /// A pointer-sized word at `vaddr` as the loader would see it with a
    /// zero load bias: the relocation addend when a `R_X86_64_RELATIVE`
    /// applies there (the file word of a RELA relocation is not meaningful,
    /// and often 0), otherwise the file word.
    pub(crate) fn read_ptr(&self, data: &[u8], vaddr: u64) -> Option<u64> {
        let word = read::u64_at(self.read(data, vaddr, 8)?, 0)?;
        Some(self.relative_addend(vaddr).unwrap_or(word))
    }

    /// The first section whose name is `suffix` or ends with it (PIE
    /// builds of Go 1.21–1.25 prefix read-only data with `.data.rel.ro`,
    /// e.g. `.data.rel.ro.gopclntab`).
    pub(crate) fn section_by_suffix(&self, suffix: &str) -> Option<&Section> {
        self.sections
            .iter()
            .find(|s| s.name == suffix)
            .or_else(|| self.sections.iter().find(|s| s.name.ends_with(suffix)))
    }

    /// The data symbol whose `[addr, addr + size)` contains `vaddr`.
    pub(crate) fn data_symbol_at(&self, vaddr: u64) -> Option<&DataSymbol> {
        let upto = self.data_symbols.partition_point(|s| s.addr <= vaddr);
        // Symbols do not normally overlap; look back a little in case a
        // zero-extent marker or an alias sits right before the match.
        self.data_symbols[..upto]
            .iter()
            .rev()
            .take(8)
            .find(|s| vaddr - s.addr < s.size)
    }
}

/// `(offset, size)` of the RELA table named by `DT_RELA`/`DT_RELASZ` in the
/// dynamic segment, for files without section headers.
fn dynamic_rela(info: &ElfInfo, data: &[u8], off: u64, size: u64) -> Option<(u64, u64)> {
    let table = read::bytes(data, off, size)?;
    let (mut rela, mut relasz) = (None, None);
    for entry in table.chunks_exact(16) {
        let tag = read::u64_at(entry, 0)?;
        let val = read::u64_at(entry, 8)?;
        match tag {
            t if t == elf::DT_NULL as u64 => break,
            t if t == elf::DT_RELA as u64 => rela = Some(val),
            t if t == elf::DT_RELASZ as u64 => relasz = Some(val),
            _ => {}
        }
    }
    Some((info.file_offset(rela?)?, relasz?))
}
