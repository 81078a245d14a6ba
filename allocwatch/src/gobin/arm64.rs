//! Decoding Go arm64 machine code (yaxpeax-arm): what the amd64 decoding
//! with iced-x86 finds elsewhere (`plan`, `prologue`, `symbolize`,
//! `wrappers`), for arm64 executables. The prologue is in
//! [`super::prologue::probe_offset_arm64`].
//!
//! Go's arm64 code reaches a global as a pair: `ADRP page, Rn` then an
//! instruction with base `Rn` and the offset in the page (`MOVD off(Rn),
//! Rd`, `MOVD Rs, off(Rn)`, `ADD $off, Rn, Rd`); [`Code::accesses`] puts the
//! two together.

use yaxpeax_arch::{Decoder as _, U8Reader};
use yaxpeax_arm::armv8::a64::{InstDecoder, Instruction, Opcode, Operand, SizeCode};

use super::GoBinary;
use super::prologue::ShapeError;

/// Offset of `Pool.New` in `sync.Pool`, as on amd64.
const POOL_NEW_OFFSET: i32 = 0x20;
/// The closure context register (`p.New` is loaded into it).
const CTXT: u16 = 26;
/// The zero register, or SP, by context.
const ZR: u16 = 31;

/// The decoded instructions of one function (undecodable words are
/// `None`: data in the code, e.g. the padding after the last `RET`).
pub struct Code {
    entry: u64,
    all: Vec<Option<Instruction>>,
}

/// A global reached through `ADRP` (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Access {
    /// Index of the instruction after the `ADRP`.
    pub index: usize,
    pub opcode: Opcode,
    /// The register operand: loaded, stored or (ADD) computed.
    pub reg: u16,
    pub addr: u64,
}

fn reg_of(op: &Operand) -> Option<u16> {
    match *op {
        Operand::Register(_, r) | Operand::RegisterOrSP(_, r) => Some(r),
        _ => None,
    }
}

fn pc_offset(op: &Operand) -> Option<i64> {
    match *op {
        Operand::PCOffset(o) => Some(o),
        _ => None,
    }
}

impl Code {
    #[must_use]
    pub fn decode(code: &[u8], entry: u64) -> Code {
        let decoder = InstDecoder::default();
        let all = code
            .chunks_exact(4)
            .map(|w| decoder.decode(&mut U8Reader::new(w)).ok())
            .collect();
        Code { entry, all }
    }

    /// The function of `bin` named `name`, decoded.
    pub fn of(bin: &GoBinary, name: &str) -> Option<Code> {
        let f = bin.func_by_name(name)?;
        Some(Code::decode(bin.code(&f)?, f.entry))
    }

    /// The address of instruction `i`.
    #[must_use]
    pub fn pc(&self, i: usize) -> u64 {
        self.entry + 4 * i as u64
    }

    fn get(&self, i: usize) -> Option<&Instruction> {
        self.all.get(i)?.as_ref()
    }

    fn index_of(&self, pc: u64) -> Option<usize> {
        let off = pc.checked_sub(self.entry)?;
        (off % 4 == 0).then_some(usize::try_from(off / 4).ok()?)
    }

    /// The target of the branch at `i` (`B`, `BL`, `CBZ`, `TBZ`, `B.cond`, …).
    fn branch_target(&self, i: usize) -> Option<u64> {
        let ins = self.get(i)?;
        let off = ins.operands.iter().find_map(pc_offset)?;
        Some(self.pc(i).wrapping_add_signed(off))
    }

    /// Every global reached through an `ADRP` pair, in code order.
    pub fn accesses(&self) -> impl Iterator<Item = Access> + '_ {
        (1..self.all.len()).filter_map(move |i| {
            let adrp = self.get(i - 1)?;
            if adrp.opcode != Opcode::ADRP {
                return None;
            }
            let base = reg_of(&adrp.operands[0])?;
            let page = (self.pc(i - 1) & !0xfff).wrapping_add_signed(pc_offset(&adrp.operands[1])?);
            let ins = self.get(i)?;
            let reg = reg_of(&ins.operands[0])?;
            let off = match (ins.opcode, ins.operands[1], ins.operands[2]) {
                (Opcode::ADD, Operand::RegisterOrSP(_, b), Operand::Immediate(imm))
                    if b == base =>
                {
                    i64::from(imm)
                }
                (_, Operand::RegPreIndex(b, off, false), _) if b == base => i64::from(off),
                _ => return None,
            };
            Some(Access {
                index: i,
                opcode: ins.opcode,
                reg,
                addr: page.wrapping_add_signed(off),
            })
        })
    }

    /// Every call (`BL`, and `BLR` with no known target): its address and
    /// target.
    pub fn calls(&self) -> impl Iterator<Item = (u64, Option<u64>)> + '_ {
        (0..self.all.len()).filter_map(move |i| match self.get(i)?.opcode {
            Opcode::BL => Some((self.pc(i), self.branch_target(i))),
            Opcode::BLR => Some((self.pc(i), None)),
            _ => None,
        })
    }
}

/// True when `ins` may write register `reg` (conservative: a register
/// first operand counts, except in stores, compares and branches).
fn may_write(ins: &Instruction, reg: u16) -> bool {
    let source_first = matches!(
        ins.opcode,
        Opcode::STR
            | Opcode::STRB
            | Opcode::STRH
            | Opcode::STUR
            | Opcode::STURB
            | Opcode::STURH
            | Opcode::STP
            | Opcode::CBZ
            | Opcode::CBNZ
            | Opcode::TBZ
            | Opcode::TBNZ
    );
    let writes_pair = matches!(ins.opcode, Opcode::LDP) && reg_of(&ins.operands[1]) == Some(reg);
    writes_pair
        || matches!(ins.opcode, Opcode::BL | Opcode::BLR)
        || (!source_first && reg_of(&ins.operands[0]) == Some(reg))
}

/// `runtime.MemProfileRate`: the 64-bit load of a global in
/// `runtime.profilealloc` whose word in the file holds the default rate
/// (512 KiB).
#[must_use]
pub fn find_mem_profile_rate(bin: &GoBinary) -> Option<u64> {
    let code = Code::of(bin, "runtime.profilealloc")?;
    code.accesses()
        .filter(|a| {
            a.opcode == Opcode::LDR
                && matches!(
                    code.get(a.index).map(|i| i.operands[0]),
                    Some(Operand::Register(SizeCode::X, _))
                )
        })
        .map(|a| a.addr)
        .find(|&a| bin.read_ptr(a) == Some(512 * 1024))
}

/// `runtime.disableMemoryProfiling` (see `plan::memory_profiling_flag`):
/// in `runtime.schedinit`, the byte loaded last before the store of the
/// zero register to `MemProfileRate` (`MOVBU flag, R0; TBZ; MOVD ZR,
/// MemProfileRate`).
#[must_use]
pub fn memory_profiling_flag(bin: &GoBinary, rate_addr: u64) -> Option<(u64, bool)> {
    let code = Code::of(bin, "runtime.schedinit")?;
    let mut flag = None;
    for a in code.accesses() {
        if a.opcode == Opcode::LDRB {
            flag = Some(a.addr);
        }
        if a.opcode == Opcode::STR && a.reg == ZR && a.addr == rate_addr {
            let f = flag?;
            return bin.initial_byte(f).map(|b| (f, b != 0));
        }
    }
    None
}

/// The miss sites of `sync.(*Pool).Get` on arm64 (offsets from its entry):
///
/// ```text
/// MOVD 32(R2), R26     ; R26 = p.New       (R2 = p)
/// CBNZ R26, call       ; (or CBZ R26, nil)
/// nil:  ...            ; <- nil_return
/// call: MOVD (R26), R0
///       CALL (R0)      ; <- new_call (BLR R0)
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGetSites {
    pub new_call: u64,
    pub new_return: u64,
    pub nil_return: u64,
    /// The register holding `p` at both sites (the base of the `p.New`
    /// load), when it provably survives to both.
    pub pool_reg: Option<u16>,
}

/// Finds [`PoolGetSites`] in the code of `sync.(*Pool).Get`.
///
/// # Errors
/// Which part of the expected shape is missing.
pub fn pool_get_miss_sites(code: &[u8], entry: u64) -> Result<PoolGetSites, ShapeError> {
    let c = Code::decode(code, entry);
    let blr: Vec<usize> = (0..c.all.len())
        .filter(|&i| c.get(i).is_some_and(|x| x.opcode == Opcode::BLR))
        .collect();
    let [call] = blr[..] else {
        return Err(ShapeError::IndirectCalls(blr.len()));
    };
    let off = |i: usize| c.pc(i) - entry;
    let call_reg = c
        .get(call)
        .and_then(|x| reg_of(&x.operands[0]))
        .unwrap_or(ZR);
    // MOVD (R26), Rcall right before the call.
    let load = (call.saturating_sub(3)..call)
        .rev()
        .find(|&i| {
            c.get(i).is_some_and(|x| {
                x.opcode == Opcode::LDR
                    && reg_of(&x.operands[0]) == Some(call_reg)
                    && x.operands[1] == Operand::RegPreIndex(CTXT, 0, false)
            })
        })
        .ok_or(ShapeError::NoCodePointerLoadArm64 {
            reg: call_reg,
            call: off(call),
        })?;
    // The CBZ/CBNZ R26 before it, and the load of p.New into R26 before that.
    let no_test = ShapeError::NoNilTestArm64 { call: off(call) };
    let test = (load.saturating_sub(8)..load)
        .rev()
        .find(|&i| {
            c.get(i).is_some_and(|x| {
                matches!(x.opcode, Opcode::CBZ | Opcode::CBNZ)
                    && reg_of(&x.operands[0]) == Some(CTXT)
            })
        })
        .ok_or(no_test.clone())?;
    let target = c.branch_target(test).ok_or(no_test.clone())?;
    let next = c.pc(test + 1);
    let cbnz = c.get(test).is_some_and(|x| x.opcode == Opcode::CBNZ);
    let (nil, call_path) = if cbnz { (next, target) } else { (target, next) };
    let call_path_idx = c.index_of(call_path).ok_or(no_test.clone())?;
    if call_path_idx > load || nil == call_path {
        return Err(no_test);
    }
    let nil_idx = c
        .index_of(nil)
        .filter(|&i| c.get(i).is_some())
        .ok_or(ShapeError::NilPathNotInstruction(nil - entry))?;
    let pool_load = (test.saturating_sub(4)..test)
        .rev()
        .find(|&i| c.get(i).is_some_and(|x| may_write(x, CTXT)));
    let pool_reg = pool_load.and_then(|i| {
        let x = c.get(i)?;
        let Operand::RegPreIndex(base, POOL_NEW_OFFSET, false) = x.operands[1] else {
            return None;
        };
        if x.opcode != Opcode::LDR {
            return None;
        }
        // p must survive from the load to both sites.
        let on_the_way = (i + 1..=test).chain(call_path_idx..call);
        let clobbered = on_the_way
            .into_iter()
            .any(|k| c.get(k).is_none_or(|x| may_write(x, base)));
        (!clobbered && base < 26).then_some(base)
    });
    Ok(PoolGetSites {
        new_call: off(call),
        new_return: off(call) + 4,
        nil_return: off(nil_idx),
        pool_reg,
    })
}

/// The element type a caller put in register `reg` for the call that
/// returns to `ret_va` (`ADRP type:T, Rn; ADD $off, Rn, Rreg; CALL`): the
/// address the last write of `reg` before that call made, when it was
/// that `ADD`.
#[must_use]
pub fn elem_type_at_call(bin: &GoBinary, ret_va: u64, reg: u16) -> Option<u64> {
    let f = bin.func_at(ret_va.checked_sub(1)?)?;
    let c = Code::decode(bin.code(&f)?, f.entry);
    let call = c.index_of(ret_va.checked_sub(4)?)?;
    if c.get(call)?.opcode != Opcode::BL {
        return None;
    }
    let last_write = (0..call)
        .rev()
        .find(|&i| c.get(i).is_some_and(|x| may_write(x, reg)))?;
    c.accesses()
        .find(|a| a.index == last_write && a.opcode == Opcode::ADD && a.reg == reg)
        .map(|a| a.addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(ws: &[u32]) -> Vec<u8> {
        ws.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// Go 1.27.3 `sync.(*Pool).Get`, arm64, from its miss path on.
    #[test]
    fn pool_get_miss_sites_of_go_1_27() {
        // 0x95508: MOVD 72(RSP), R2; MOVD 32(R2), R26; CBNZ R26, 3(PC);
        // MOVD 48(RSP), R1; JMP 3(PC); MOVD (R26), R0; CALL (R0); MOVD -8(RSP), R29
        let code = words(&[
            0xf94027e2, 0xf940105a, 0xb500007a, 0xf9401be1, 0x14000003, 0xf9400340, 0xd63f0000,
            0xf85f83fd,
        ]);
        let s = pool_get_miss_sites(&code, 0x95508).unwrap();
        assert_eq!(
            s,
            PoolGetSites {
                new_call: 0x18,
                new_return: 0x1c,
                nil_return: 0xc,
                pool_reg: Some(2),
            }
        );
    }

    #[test]
    fn adrp_pairs_give_the_global() {
        // 0x1c1a4: ADRP 1392640(PC), R27; MOVD 448(R27), R0 (Go 1.21.13
        // profilealloc: runtime.MemProfileRate at 0x1701c0).
        let c = Code::decode(&words(&[0x90000abb, 0xf940e360]), 0x1c1a4);
        let a: Vec<Access> = c.accesses().collect();
        assert_eq!(a.len(), 1);
        assert_eq!(
            (a[0].opcode, a[0].reg, a[0].addr),
            (Opcode::LDR, 0, 0x1701c0)
        );
    }
}
