//! The Go 1.20+ pc/line table (`.gopclntab`, magic `0xfffffff1`): the
//! function table, function names, pc-value tables (`pcfile`, `pcln`,
//! `pcdata`), compilation-unit file tables and the inline tree. The layout
//! follows `runtime/symtab.go`, `runtime/runtime2.go` (`_func`) and
//! `runtime/symtabinl.go` (`inlinedCall`), identical in Go 1.20–1.27
//! except that the header's `textStart` is always 0 from Go 1.26 (entry
//! offsets are relative to `moduledata.text`, which the caller supplies).

use std::ops::Range;

use super::GoBinError;
use super::read;

/// `abi.Go120PCLnTabMagic`: Go 1.20 and newer.
pub(crate) const MAGIC_GO120: u32 = 0xffff_fff1;
/// Size of the fixed part of `runtime._func`.
const FUNC_FIXED_SIZE: u64 = 44;
/// Size of `runtime.inlinedCall`.
const INLINED_CALL_SIZE: u64 = 16;
/// `abi.PCDATA_InlTreeIndex`.
const PCDATA_INL_TREE_INDEX: u32 = 2;
/// `abi.FUNCDATA_InlTree`.
const FUNCDATA_INL_TREE: u32 = 3;
/// Deepest inline chain followed (guards against cycles in corrupt data).
pub(crate) const MAX_INLINE_DEPTH: usize = 64;

/// The pclntab header (`runtime.pcHeader`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Header {
    /// Number of functions in the function table.
    pub(crate) nfunc: u64,
    /// The tables, each as an offset from the start of the pclntab: the
    /// function names,
    pub(crate) funcname_offset: u64,
    /// the compilation units' file indexes,
    pub(crate) cu_offset: u64,
    /// the file names,
    pub(crate) filetab_offset: u64,
    /// the pc-value tables (line, file, inline tree),
    pub(crate) pctab_offset: u64,
    /// and the function table followed by the `_func` records.
    pub(crate) pcln_offset: u64,
    /// The minimum instruction size, Go's `PCQuantum` (1 on amd64, 4 on
    /// arm64).
    pub(crate) quantum: u8,
}

impl Header {
    pub(crate) fn parse(tab: &[u8]) -> Result<Self, GoBinError> {
        let magic = read::u32_at(tab, 0).ok_or(GoBinError::Truncated {
            what: "pclntab header",
        })?;
        if magic != MAGIC_GO120 {
            return Err(GoBinError::UnsupportedPclntab { magic });
        }
        let word = |off| {
            read::u64_at(tab, off).ok_or(GoBinError::Truncated {
                what: "pclntab header",
            })
        };
        let (pad, min_lc, ptr_size) = (
            read::u16_at(tab, 4).unwrap_or(1),
            read::u8_at(tab, 6).unwrap_or(0),
            read::u8_at(tab, 7).unwrap_or(0),
        );
        if pad != 0 || !matches!(min_lc, 1 | 4) || ptr_size != 8 {
            return Err(GoBinError::Corrupt {
                what: format!(
                    "pclntab header (pad {pad:#x}, min instruction size {min_lc}, pointer size {ptr_size}; need amd64 or arm64)"
                ),
            });
        }
        Ok(Header {
            nfunc: word(8)?,
            funcname_offset: word(32)?,
            cu_offset: word(40)?,
            filetab_offset: word(48)?,
            pctab_offset: word(56)?,
            pcln_offset: word(64)?,
            quantum: min_lc,
        })
    }
}

/// Byte ranges of the sub-tables, relative to the start of the pclntab.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tables {
    pub(crate) funcnames: Range<usize>,
    pub(crate) cutab: Range<usize>,
    pub(crate) filetab: Range<usize>,
    pub(crate) pctab: Range<usize>,
    /// `pclntable`: the function table followed by the `_func` records.
    pub(crate) pcln: Range<usize>,
    pub(crate) nfunc: usize,
    /// Go's `PCQuantum`: the unit of pc deltas.
    pub(crate) quantum: u8,
}

/// A borrowed view of a validated pclntab.
#[derive(Clone, Copy)]
pub(crate) struct Pcln<'a> {
    funcnames: &'a [u8],
    cutab: &'a [u8],
    filetab: &'a [u8],
    pctab: &'a [u8],
    pcln: &'a [u8],
    nfunc: usize,
    /// `moduledata.text`: base of the entry offsets.
    text: u64,
    quantum: u64,
}

/// One function-table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RawFunc {
    pub(crate) index: usize,
    pub(crate) entry: u64,
    pub(crate) end: u64,
    /// Offset of the `_func` record in `pclntable`.
    pub(crate) funcoff: u64,
}

/// The fields of a `_func` record that symbolization uses.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FuncRecord {
    /// The name, in the function-name table.
    pub(crate) name_off: u32,
    /// The pc-to-file and pc-to-line tables, in the pc-value table.
    pub(crate) pcfile: u32,
    pub(crate) pcln: u32,
    /// How many `pcdata` and `funcdata` entries follow the record (the
    /// inline tree is among them).
    pub(crate) npcdata: u32,
    /// The function's compilation unit, for its file indexes.
    pub(crate) cu_offset: u32,
    pub(crate) nfuncdata: u8,
    /// Offset of `pcdata[0]` in `pclntable`.
    varlen: u64,
}

/// One frame of the inline unwinding at a pc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RawFrame<'a> {
    pub(crate) name: &'a [u8],
    pub(crate) file: Option<&'a [u8]>,
    pub(crate) line: Option<i32>,
    pub(crate) inlined: bool,
}

impl<'a> Pcln<'a> {
    pub(crate) fn new(tab: &'a [u8], t: &Tables, text: u64) -> Option<Self> {
        Some(Pcln {
            funcnames: tab.get(t.funcnames.clone())?,
            cutab: tab.get(t.cutab.clone())?,
            filetab: tab.get(t.filetab.clone())?,
            pctab: tab.get(t.pctab.clone())?,
            pcln: tab.get(t.pcln.clone())?,
            nfunc: t.nfunc,
            text,
            quantum: u64::from(t.quantum),
        })
    }

    pub(crate) fn nfunc(&self) -> usize {
        self.nfunc
    }

    /// `(entryoff, funcoff)` of function-table slot `i` (`0..=nfunc`; the
    /// last slot holds the end of text).
    fn slot(&self, i: usize) -> Option<(u32, u32)> {
        let off = (i as u64).checked_mul(8)?;
        Some((
            read::u32_at(self.pcln, off)?,
            read::u32_at(self.pcln, off + 4)?,
        ))
    }

    /// The function at table index `i`.
    pub(crate) fn func(&self, i: usize) -> Option<RawFunc> {
        if i >= self.nfunc {
            return None;
        }
        let (entryoff, funcoff) = self.slot(i)?;
        let (next, _) = self.slot(i + 1)?;
        if next < entryoff {
            return None;
        }
        Some(RawFunc {
            index: i,
            entry: self.text.checked_add(u64::from(entryoff))?,
            end: self.text.checked_add(u64::from(next))?,
            funcoff: u64::from(funcoff),
        })
    }

    /// The end of the last function (`text + ftab[nfunc].entryoff`).
    pub(crate) fn end_of_text(&self) -> Option<u64> {
        let (end, _) = self.slot(self.nfunc)?;
        self.text.checked_add(u64::from(end))
    }

    /// The function containing `pc` (binary search on the function table).
    pub(crate) fn find(&self, pc: u64) -> Option<RawFunc> {
        let off = u32::try_from(pc.checked_sub(self.text)?).ok()?;
        if self.nfunc == 0 || off >= self.slot(self.nfunc)?.0 {
            return None;
        }
        // Last slot in 0..nfunc whose entryoff <= off.
        let (mut lo, mut hi) = (0usize, self.nfunc);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.slot(mid)?.0 <= off {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let f = self.func(lo)?;
        (f.entry <= pc && pc < f.end).then_some(f)
    }

    pub(crate) fn record(&self, f: &RawFunc) -> Option<FuncRecord> {
        let b = read::bytes(self.pcln, f.funcoff, FUNC_FIXED_SIZE)?;
        Some(FuncRecord {
            name_off: read::u32_at(b, 4)?,
            pcfile: read::u32_at(b, 20)?,
            pcln: read::u32_at(b, 24)?,
            npcdata: read::u32_at(b, 28)?,
            cu_offset: read::u32_at(b, 32)?,
            nfuncdata: read::u8_at(b, 43)?,
            varlen: f.funcoff + FUNC_FIXED_SIZE,
        })
    }

    /// The NUL-terminated name at `name_off` in the function name table.
    pub(crate) fn name(&self, name_off: u32) -> Option<&'a [u8]> {
        read::cstr(self.funcnames, u64::from(name_off))
    }

    pub(crate) fn func_name(&self, f: &RawFunc) -> Option<&'a [u8]> {
        self.name(self.record(f)?.name_off)
    }

    /// `pcdata[i]` of a function (0 = no table).
    fn pcdata(&self, r: &FuncRecord, i: u32) -> Option<u32> {
        if i >= r.npcdata {
            return None;
        }
        read::u32_at(self.pcln, r.varlen + u64::from(i) * 4)
    }

    /// `funcdata[i]` of a function: an offset from `moduledata.gofunc`
    /// (`u32::MAX` = none).
    pub(crate) fn funcdata(&self, r: &FuncRecord, i: u32) -> Option<u32> {
        if i >= u32::from(r.nfuncdata) {
            return None;
        }
        let off = r.varlen + u64::from(r.npcdata) * 4 + u64::from(i) * 4;
        read::u32_at(self.pcln, off).filter(|&v| v != u32::MAX)
    }

    /// The value of the pc-value table at `table_off` for `target` in a
    /// function starting at `entry` (`runtime.pcvalue`): `None` when there
    /// is no table or `target` is not covered.
    pub(crate) fn pcvalue(&self, table_off: u32, entry: u64, target: u64) -> Option<i32> {
        if table_off == 0 {
            return None;
        }
        let mut p = read::tail(self.pctab, u64::from(table_off))?;
        let mut pc = entry;
        let mut val: i32 = -1;
        let mut first = true;
        // Each step consumes at least two bytes, so this terminates.
        loop {
            let &b = p.first()?;
            if b == 0 && !first {
                return None;
            }
            first = false;
            let (uvdelta, n) = read::uvarint(p)?;
            let uvdelta = u32::try_from(uvdelta).ok()?;
            // Zig-zag: -(v & 1) ^ (v >> 1).
            let delta = ((uvdelta >> 1) as i32) ^ -((uvdelta & 1) as i32);
            val = val.wrapping_add(delta);
            p = p.get(n..)?;
            let (pcdelta, n) = read::uvarint(p)?;
            p = p.get(n..)?;
            pc = pc.checked_add(pcdelta.checked_mul(self.quantum)?)?;
            if target < pc {
                return Some(val);
            }
        }
    }

    /// The file name of file number `fileno` of the compilation unit at
    /// `cu_offset` (`runtime.funcfile`).
    pub(crate) fn file(&self, cu_offset: u32, fileno: i32) -> Option<&'a [u8]> {
        let idx = u64::from(cu_offset).checked_add(u64::try_from(fileno).ok()?)?;
        let fileoff = read::u32_at(self.cutab, idx.checked_mul(4)?)?;
        if fileoff == u32::MAX {
            return None;
        }
        read::cstr(self.filetab, u64::from(fileoff))
    }

    /// File and line of `pc` in function `f`.
    pub(crate) fn file_line(
        &self,
        f: &RawFunc,
        r: &FuncRecord,
        pc: u64,
    ) -> (Option<&'a [u8]>, Option<i32>) {
        let file = self
            .pcvalue(r.pcfile, f.entry, pc)
            .and_then(|fileno| self.file(r.cu_offset, fileno));
        let line = self.pcvalue(r.pcln, f.entry, pc).filter(|&l| l >= 0);
        (file, line)
    }

    /// Inline-aware frames at `pc`, innermost first (`runtime`'s
    /// `inlineUnwinder`). `read_gofunc(off, len)` reads `len` bytes at
    /// `moduledata.gofunc + off`.
    pub(crate) fn frames<'g>(
        &self,
        pc: u64,
        read_gofunc: impl Fn(u64, u64) -> Option<&'g [u8]>,
    ) -> Vec<RawFrame<'a>> {
        let Some(f) = self.find(pc) else {
            return Vec::new();
        };
        let Some(r) = self.record(&f) else {
            return Vec::new();
        };
        let outer_name = self.name(r.name_off).unwrap_or(b"?");
        let inl_index_table = self.pcdata(&r, PCDATA_INL_TREE_INDEX).filter(|&t| t != 0);
        let inl_tree = self.funcdata(&r, FUNCDATA_INL_TREE);
        let mut frames = Vec::new();
        let mut cur = pc;
        loop {
            let (file, line) = self.file_line(&f, &r, cur);
            let index = match (inl_index_table, inl_tree) {
                (Some(t), Some(_)) if frames.len() < MAX_INLINE_DEPTH => {
                    self.pcvalue(t, f.entry, cur).unwrap_or(-1)
                }
                _ => -1,
            };
            let call = (index >= 0)
                .then(|| {
                    let off = u64::from(inl_tree?)
                        .checked_add(u64::try_from(index).ok()? * INLINED_CALL_SIZE)?;
                    read_gofunc(off, INLINED_CALL_SIZE)
                })
                .flatten();
            let Some(call) = call else {
                frames.push(RawFrame {
                    name: outer_name,
                    file,
                    line,
                    inlined: false,
                });
                return frames;
            };
            // inlinedCall{funcID u8, _ [3]u8, nameOff int32, parentPc int32, startLine int32}
            let name = read::u32_at(call, 4)
                .and_then(|o| self.name(o))
                .unwrap_or(b"?");
            frames.push(RawFrame {
                name,
                file,
                line,
                inlined: true,
            });
            let parent = read::i32_at(call, 8).and_then(|p| u64::try_from(p).ok());
            match parent.and_then(|p| f.entry.checked_add(p)) {
                Some(p) if p < f.end => cur = p,
                _ => {
                    // Corrupt parent pc: still report the outer function.
                    frames.push(RawFrame {
                        name: outer_name,
                        file: None,
                        line: None,
                        inlined: false,
                    });
                    return frames;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a tiny synthetic pclntab view: two functions at text+0 and
    /// text+0x10, end at 0x30.
    fn synthetic() -> (Vec<u8>, Tables) {
        let mut tab = Vec::new();
        // funcnames
        let names = b"main.a\0main.b\0main.inl\0";
        let fn_start = 0;
        tab.extend_from_slice(names);
        let fn_range = fn_start..tab.len();
        // cutab: one CU with one file at filetab offset 0
        let cu_start = tab.len();
        tab.extend_from_slice(&0u32.to_le_bytes());
        let cu_range = cu_start..tab.len();
        // filetab
        let ft_start = tab.len();
        tab.extend_from_slice(b"/src/a.go\0");
        let ft_range = ft_start..tab.len();
        // pctab: offset 0 unused; table at 1: value 10 for pc < 0x8, 12 for < 0x10
        let pc_start = tab.len();
        tab.push(0);
        // val -1 -> 10 : delta 11 zigzag 22; pc delta 8
        tab.extend_from_slice(&[22, 8, 4, 8, 0]);
        // file table at 6: value 0 for whole function (delta +1 → zigzag 2)
        tab.extend_from_slice(&[2, 0x10, 0]);
        // inline index table at 9: -1 for [0,8), 0 for [8,0x10)
        tab.extend_from_slice(&[0, 8, 2, 8, 0]);
        let pc_range = pc_start..tab.len();
        // pclntable: functab (3 slots) then _func records
        let pcln_start = tab.len();
        let mut pcln = Vec::new();
        let func_a = 24u32;
        let func_b = func_a + 44 + 4 * 3 + 4 * 4;
        for (e, f) in [(0u32, func_a), (0x10, func_b), (0x30, 0)] {
            pcln.extend_from_slice(&e.to_le_bytes());
            pcln.extend_from_slice(&f.to_le_bytes());
        }
        let record = |entry: u32, name: u32, npcdata: u32, nfuncdata: u8| {
            let mut r = Vec::new();
            for v in [entry, name, 0, 0, 0, 6, 1, npcdata, 0, 1] {
                r.extend_from_slice(&v.to_le_bytes());
            }
            r.extend_from_slice(&[0, 0, 0, nfuncdata]);
            r
        };
        pcln.extend(record(0, 0, 3, 4));
        pcln.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0]); // pcdata[0..3]
        for v in [u32::MAX, u32::MAX, u32::MAX, 0] {
            pcln.extend_from_slice(&v.to_le_bytes()); // funcdata[3] = 0
        }
        pcln.extend(record(0x10, 7, 0, 0));
        tab.extend_from_slice(&pcln);
        let pcln_range = pcln_start..tab.len();
        let tables = Tables {
            funcnames: fn_range,
            cutab: cu_range,
            filetab: ft_range,
            pctab: pc_range,
            pcln: pcln_range,
            nfunc: 2,
            quantum: 1,
        };
        (tab, tables)
    }

    #[test]
    fn functab_and_lines() {
        let (tab, t) = synthetic();
        let p = Pcln::new(&tab, &t, 0x1000).expect("view");
        assert_eq!(p.end_of_text(), Some(0x1030));
        let a = p.find(0x1000).expect("a");
        assert_eq!((a.entry, a.end), (0x1000, 0x1010));
        assert_eq!(p.func_name(&a), Some(&b"main.a"[..]));
        let b = p.find(0x102f).expect("b");
        assert_eq!(p.func_name(&b), Some(&b"main.b"[..]));
        assert_eq!(p.find(0x1030), None);
        assert_eq!(p.find(0xfff), None);
        assert_eq!(p.find(u64::MAX), None);
        let r = p.record(&a).expect("record");
        assert_eq!(
            p.file_line(&a, &r, 0x1003),
            (Some(&b"/src/a.go"[..]), Some(10))
        );
        assert_eq!(
            p.file_line(&a, &r, 0x100c),
            (Some(&b"/src/a.go"[..]), Some(12))
        );
    }

    #[test]
    fn inline_frames() {
        let (tab, t) = synthetic();
        let p = Pcln::new(&tab, &t, 0x1000).expect("view");
        // inlinedCall[0]: name "main.inl" (off 14), parentPc 2
        let mut tree = vec![0u8; 4];
        tree.extend_from_slice(&14i32.to_le_bytes());
        tree.extend_from_slice(&2i32.to_le_bytes());
        tree.extend_from_slice(&5i32.to_le_bytes());
        let gofunc = |off: u64, len: u64| read::bytes(&tree, off, len);
        let frames = p.frames(0x1009, gofunc);
        let names: Vec<_> = frames.iter().map(|f| (f.name, f.line, f.inlined)).collect();
        assert_eq!(
            names,
            [
                (&b"main.inl"[..], Some(12), true),
                (&b"main.a"[..], Some(10), false)
            ]
        );
        let frames = p.frames(0x1001, gofunc);
        assert_eq!(frames.len(), 1);
        // A tree that points at itself must stop.
        let mut cyc = vec![0u8; 4];
        cyc.extend_from_slice(&14i32.to_le_bytes());
        cyc.extend_from_slice(&9i32.to_le_bytes());
        cyc.extend_from_slice(&5i32.to_le_bytes());
        let frames = p.frames(0x1009, |off, len| read::bytes(&cyc, off, len));
        assert_eq!(frames.len(), MAX_INLINE_DEPTH + 1);
        assert!(!frames.last().expect("outer").inlined);
    }

    #[test]
    fn garbage_never_panics() {
        let (mut tab, t) = synthetic();
        for i in 0..tab.len() {
            let saved = tab[i];
            for v in [0u8, 0x7f, 0x80, 0xff] {
                tab[i] = v;
                if let Some(p) = Pcln::new(&tab, &t, 0x1000) {
                    for pc in 0x0ff0..0x1040 {
                        let _ = p.frames(pc, |off, len| read::bytes(&tab, off, len));
                    }
                }
            }
            tab[i] = saved;
        }
    }

    #[test]
    fn header_checks() {
        assert!(matches!(
            Header::parse(&[]),
            Err(GoBinError::Truncated { .. })
        ));
        let mut h = vec![0u8; 72];
        h[..4].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        assert!(matches!(
            Header::parse(&h),
            Err(GoBinError::UnsupportedPclntab { magic: 0xffff_fff0 })
        ));
        h[..4].copy_from_slice(&MAGIC_GO120.to_le_bytes());
        assert!(matches!(Header::parse(&h), Err(GoBinError::Corrupt { .. })));
        h[6] = 1;
        h[7] = 8;
        assert!(Header::parse(&h).is_ok());
        h[6] = 4;
        assert_eq!(Header::parse(&h).map(|h| h.quantum).ok(), Some(4), "arm64");
        h[6] = 2;
        assert!(matches!(Header::parse(&h), Err(GoBinError::Corrupt { .. })));
        h[6] = 1;
        assert!(matches!(
            Header::parse(&h[..40]),
            Err(GoBinError::Truncated { .. })
        ));
    }
}
