//! Go type descriptors (`internal/abi.Type`, 48 bytes on amd64 in Go
//! 1.21–1.27): the name and size of the type an allocation's `typ`
//! argument points at, read from the executable's type section.
//!
//! `Size_` is at +0, `TFlag` at +20, `Str` (a `nameOff` from
//! `moduledata.types`) at +40. A name is a flags byte, a uvarint length and
//! the bytes; `TFlagExtraStar` means the stored string has a leading `*`
//! that is not part of the name.

use serde::Serialize;

use super::elf::ElfInfo;
use super::moduledata::ModuleData;
use super::read;

const TYPE_SIZE: u64 = 48;
const OFF_TFLAG: u64 = 20;
const OFF_STR: u64 = 40;
/// `abi.TFlagExtraStar`.
const TFLAG_EXTRA_STAR: u8 = 0x2;
/// Longest type name returned (longer names are cut, never over-read).
const MAX_NAME_LEN: u64 = 64 * 1024;

/// The name of the type a `*abi.Type` points at.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum TypeName {
    /// A type descriptor in the executable, e.g. `main.Thing`, `*main.Thing`, `[]uint8`.
    Named(String),
    /// Outside `[types, etypes)`: created at run time (`reflect.StructOf`…).
    Dynamic,
    /// `typ == 0`: an untyped allocation (merged locals, pointer-free
    /// slice growth, strings…).
    Nil,
}

impl std::fmt::Display for TypeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TypeName::Named(n) => f.write_str(n),
            TypeName::Dynamic => f.write_str("<dynamic type>"),
            TypeName::Nil => f.write_str("<untyped>"),
        }
    }
}

fn in_types(md: &ModuleData, typ: u64) -> bool {
    md.types <= typ && typ < md.etypes
}

/// The name of the type descriptor at `typ` (a link-time address). A
/// descriptor inside `[types, etypes)` whose name cannot be read (corrupt
/// file, or `typ` not at the start of a descriptor) is named
/// `<unreadable type 0x…>`.
pub(crate) fn type_name(data: &[u8], elf: &ElfInfo, md: &ModuleData, typ: u64) -> TypeName {
    if typ == 0 {
        return TypeName::Nil;
    }
    if !in_types(md, typ) {
        return TypeName::Dynamic;
    }
    TypeName::Named(
        read_name(data, elf, md, typ).unwrap_or_else(|| format!("<unreadable type {typ:#x}>")),
    )
}

fn read_name(data: &[u8], elf: &ElfInfo, md: &ModuleData, typ: u64) -> Option<String> {
    let desc = elf.read(data, typ, TYPE_SIZE)?;
    let tflag = read::u8_at(desc, OFF_TFLAG)?;
    let off = read::i32_at(desc, OFF_STR)?;
    let name_addr = md
        .types
        .checked_add(u64::try_from(off).ok().filter(|&o| o > 0)?)?;
    if name_addr >= md.etypes {
        return None;
    }
    // flags byte, uvarint length (at most 10 bytes), then the bytes.
    let avail = (md.etypes - name_addr).min(1 + 10 + MAX_NAME_LEN);
    let raw = elf
        .read(data, name_addr, avail)
        .or_else(|| elf.read_to_segment_end(data, name_addr))?;
    let (len, n) = read::uvarint(read::tail(raw, 1)?)?;
    let bytes = read::bytes(raw, 1 + n as u64, len.min(MAX_NAME_LEN))?;
    let mut name = String::from_utf8_lossy(bytes).into_owned();
    if tflag & TFLAG_EXTRA_STAR != 0 && name.starts_with('*') {
        name.remove(0);
    }
    Some(name)
}

/// `Size_` of the type descriptor at `typ`, when it is in the executable.
pub(crate) fn type_size(data: &[u8], elf: &ElfInfo, md: &ModuleData, typ: u64) -> Option<u64> {
    if !in_types(md, typ) {
        return None;
    }
    read::u64_at(elf.read(data, typ, TYPE_SIZE)?, 0)
}
