//! Decoding Go amd64 machine code with iced-x86 to choose uprobe sites.
//!
//! * [`probe_offset`]: the `PUSHQ BP` that follows a Go function's
//!   stack-bound check. A probe there is reached once per call (the
//!   morestack path re-enters at offset 0), costs one emulated instruction
//!   instead of a single-step, and lets the kernel's user stack walk see
//!   the immediate caller. Frameless functions fall back to offset 0.
//! * [`pool_get_miss_sites`]: in `sync.(*Pool).Get`, the indirect call to
//!   `p.New()` and the first instruction of the path that returns nil when
//!   `p.New` is nil — the two ways a `Get` misses.
//!
//! Both are found by decoding, never by fixed offsets: they move with the
//! Go version, `GOAMD64`, PGO and `-race`.

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};
use serde::Serialize;

/// Instructions examined before giving up on finding the frame setup.
const MAX_PROLOGUE_INSTRUCTIONS: usize = 8;
/// Offset of `Pool.New` in `sync.Pool` (`local`, `localSize`, `victim`,
/// `victimSize`, `New`), identical in Go 1.21–1.27.
const POOL_NEW_OFFSET: u64 = 0x20;
/// Instructions searched backwards from the `CALL reg` for the load of the
/// code pointer, and from the `TEST` for the load of `p.New`.
const BACKWARD_WINDOW: usize = 6;

/// Where a probe on a function goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ProbeOffset {
    /// Byte offset from the function entry.
    pub offset: u64,
    pub kind: ProbeSite,
}

/// What kind of instruction the probe offset points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ProbeSite {
    /// The `PUSHQ BP` (`55`) of the frame setup.
    PushBp,
    /// The function entry (offset 0), because no frame setup was found.
    Entry { reason: &'static str },
}

/// A 64-bit general-purpose register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Gpr {
    Rax,
    Rbx,
    Rcx,
    Rdx,
    Rsi,
    Rdi,
    Rbp,
    Rsp,
    R8,
    R9,
    R10,
    R11,
    R12,
    R13,
    R14,
    R15,
}

impl Gpr {
    /// Lower-case name, e.g. `"rcx"`.
    pub fn name(self) -> &'static str {
        match self {
            Gpr::Rax => "rax",
            Gpr::Rbx => "rbx",
            Gpr::Rcx => "rcx",
            Gpr::Rdx => "rdx",
            Gpr::Rsi => "rsi",
            Gpr::Rdi => "rdi",
            Gpr::Rbp => "rbp",
            Gpr::Rsp => "rsp",
            Gpr::R8 => "r8",
            Gpr::R9 => "r9",
            Gpr::R10 => "r10",
            Gpr::R11 => "r11",
            Gpr::R12 => "r12",
            Gpr::R13 => "r13",
            Gpr::R14 => "r14",
            Gpr::R15 => "r15",
        }
    }

    /// The 64-bit register that `reg` (any width) is part of.
    pub fn of(reg: Register) -> Option<Gpr> {
        use Register as R;
        Some(match reg {
            R::RAX | R::EAX | R::AX | R::AL | R::AH => Gpr::Rax,
            R::RBX | R::EBX | R::BX | R::BL | R::BH => Gpr::Rbx,
            R::RCX | R::ECX | R::CX | R::CL | R::CH => Gpr::Rcx,
            R::RDX | R::EDX | R::DX | R::DL | R::DH => Gpr::Rdx,
            R::RSI | R::ESI | R::SI | R::SIL => Gpr::Rsi,
            R::RDI | R::EDI | R::DI | R::DIL => Gpr::Rdi,
            R::RBP | R::EBP | R::BP | R::BPL => Gpr::Rbp,
            R::RSP | R::ESP | R::SP | R::SPL => Gpr::Rsp,
            R::R8 | R::R8D | R::R8W | R::R8L => Gpr::R8,
            R::R9 | R::R9D | R::R9W | R::R9L => Gpr::R9,
            R::R10 | R::R10D | R::R10W | R::R10L => Gpr::R10,
            R::R11 | R::R11D | R::R11W | R::R11L => Gpr::R11,
            R::R12 | R::R12D | R::R12W | R::R12L => Gpr::R12,
            R::R13 | R::R13D | R::R13W | R::R13L => Gpr::R13,
            R::R14 | R::R14D | R::R14W | R::R14L => Gpr::R14,
            R::R15 | R::R15D | R::R15W | R::R15L => Gpr::R15,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Gpr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn decoder(code: &[u8], ip: u64) -> Decoder<'_> {
    Decoder::with_ip(64, code, ip, DecoderOptions::NONE)
}

fn reg_op(ins: &Instruction, op: u32) -> Option<Gpr> {
    (ins.op_kind(op) == OpKind::Register)
        .then(|| Gpr::of(ins.op_register(op)))
        .flatten()
}

/// `[base + disp]` without index: `(base, disp)`.
fn mem_base_disp(ins: &Instruction, op: u32) -> Option<(Gpr, u64)> {
    if ins.op_kind(op) != OpKind::Memory || ins.memory_index() != Register::None {
        return None;
    }
    Some((Gpr::of(ins.memory_base())?, ins.memory_displacement64()))
}

/// True for the instructions of Go's stack-bound check:
/// `LEAQ -n(SP), R12`, `MOVQ SP, R12`, `SUBQ $n, R12`, `CMPQ SP|R12,
/// 0x10(R14)` and the conditional jumps to `morestack`.
fn is_stack_check(ins: &Instruction) -> bool {
    match ins.mnemonic() {
        Mnemonic::Lea => {
            reg_op(ins, 0) == Some(Gpr::R12)
                && mem_base_disp(ins, 1).is_some_and(|(b, _)| b == Gpr::Rsp)
        }
        Mnemonic::Mov => reg_op(ins, 0) == Some(Gpr::R12) && reg_op(ins, 1) == Some(Gpr::Rsp),
        Mnemonic::Sub => reg_op(ins, 0) == Some(Gpr::R12) && ins.op_kind(1) != OpKind::Register,
        Mnemonic::Cmp => {
            matches!(reg_op(ins, 0), Some(Gpr::Rsp | Gpr::R12))
                && mem_base_disp(ins, 1).is_some_and(|(b, _)| b == Gpr::R14)
        }
        Mnemonic::Jbe | Mnemonic::Jb => true,
        _ => false,
    }
}

/// Finds the `PUSHQ BP` that sets up the frame of the Go function whose
/// machine code starts `code` (entry at `entry_vaddr`).
///
/// Accepts the stack checks the Go compiler emits (small frames
/// `CMPQ SP, 0x10(R14); JBE`, medium frames with `LEAQ -n(SP), R12`, huge
/// frames with `MOVQ SP, R12; SUBQ $n, R12; JB`), or a `PUSHQ BP` as the
/// very first instruction (NOSPLIT functions with a frame). Anything else
/// falls back to offset 0 with the reason.
pub fn probe_offset(code: &[u8], entry_vaddr: u64) -> ProbeOffset {
    let entry = |reason| ProbeOffset {
        offset: 0,
        kind: ProbeSite::Entry { reason },
    };
    if code.is_empty() {
        return entry("no machine code");
    }
    let mut dec = decoder(code, entry_vaddr);
    let mut ins = Instruction::default();
    let mut seen_check = false;
    for _ in 0..MAX_PROLOGUE_INSTRUCTIONS {
        if !dec.can_decode() {
            return entry("function ends before any PUSHQ BP");
        }
        dec.decode_out(&mut ins);
        if ins.is_invalid() {
            return entry("undecodable instruction in the prologue");
        }
        if ins.mnemonic() == Mnemonic::Push && reg_op(&ins, 0) == Some(Gpr::Rbp) {
            return ProbeOffset {
                offset: ins.ip().wrapping_sub(entry_vaddr),
                kind: ProbeSite::PushBp,
            };
        }
        if !is_stack_check(&ins) {
            return entry(if seen_check {
                "no PUSHQ BP after the stack check (frameless function)"
            } else {
                "no stack check or PUSHQ BP at entry (frameless or assembly function)"
            });
        }
        seen_check = true;
    }
    entry("prologue longer than expected")
}

/// The miss sites of `sync.(*Pool).Get`, as byte offsets from its entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PoolGetSites {
    /// The `CALL reg` that calls `p.New()`: a probe here counts a miss that
    /// allocates.
    pub new_call: u64,
    /// The instruction right after `new_call`, where `p.New()` returns to.
    pub new_return: u64,
    /// The register holding the code pointer at `new_call` (e.g. `rax`).
    pub new_call_reg: Gpr,
    /// The register holding the `p.New` funcval (the closure context
    /// register, `rdx`), tested against nil before the call.
    pub new_fn_reg: Gpr,
    /// First instruction of the path taken when `p.New == nil`: a probe
    /// here counts a miss that returns nil.
    pub nil_return: u64,
    /// The register holding the pool pointer `p` at both sites (the base
    /// of the `p.New` load, e.g. `rcx`), when it provably survives.
    pub pool_reg: Option<Gpr>,
}

/// True when `ins` may write `reg` (conservative, without iced's
/// instruction-info tables: any register destination counts).
fn may_write(ins: &Instruction, reg: Gpr) -> bool {
    match ins.mnemonic() {
        Mnemonic::Cmp | Mnemonic::Test | Mnemonic::Push | Mnemonic::Nop => false,
        Mnemonic::Call => true,
        Mnemonic::Xchg | Mnemonic::Xadd | Mnemonic::Cmpxchg => {
            reg_op(ins, 0) == Some(reg) || reg_op(ins, 1) == Some(reg) || reg == Gpr::Rax
        }
        _ => reg_op(ins, 0) == Some(reg),
    }
}

fn is_cond_jump(m: Mnemonic) -> Option<bool> {
    match m {
        Mnemonic::Jne => Some(true),
        Mnemonic::Je => Some(false),
        _ => None,
    }
}

/// Finds the two miss sites of `sync.(*Pool).Get` (code at `entry_vaddr`):
///
/// ```text
/// MOVQ 0x20(CX), DX     ; DX = p.New        (CX = p)
/// TESTQ DX, DX
/// JNE  call             ; (or JE nil)
/// nil:  ...             ; <- nil_return: p.New == nil, returns nil
/// call: MOVQ 0(DX), AX
///       CALL AX         ; <- new_call: p.New()
/// ```
///
/// Errors describe which part of the expected shape is missing.
pub fn pool_get_miss_sites(code: &[u8], entry_vaddr: u64) -> Result<PoolGetSites, String> {
    let mut dec = decoder(code, entry_vaddr);
    let mut all = Vec::new();
    while dec.can_decode() {
        let ins = dec.decode();
        if ins.is_invalid() {
            return Err(format!(
                "undecodable instruction at +{:#x}",
                ins.ip().wrapping_sub(entry_vaddr)
            ));
        }
        all.push(ins);
    }
    let indirect: Vec<usize> = all
        .iter()
        .enumerate()
        .filter(|(_, i)| {
            i.mnemonic() == Mnemonic::Call
                && matches!(i.op_kind(0), OpKind::Register | OpKind::Memory)
        })
        .map(|(n, _)| n)
        .collect();
    let [call_idx] = indirect[..] else {
        return Err(format!(
            "expected exactly one indirect call (p.New()) in sync.(*Pool).Get, found {}",
            indirect.len()
        ));
    };
    let call = &all[call_idx];
    let off = |i: &Instruction| i.ip().wrapping_sub(entry_vaddr);
    let call_reg = reg_op(call, 0)
        .ok_or_else(|| format!("the indirect call at +{:#x} is not CALL reg", off(call)))?;

    // MOVQ 0(fn), call_reg shortly before the call.
    let (load_idx, fn_reg) = (call_idx.saturating_sub(BACKWARD_WINDOW)..call_idx)
        .rev()
        .find_map(|n| {
            let i = &all[n];
            (i.mnemonic() == Mnemonic::Mov && reg_op(i, 0) == Some(call_reg))
                .then(|| mem_base_disp(i, 1).filter(|&(_, d)| d == 0).map(|(b, _)| (n, b)))
                .flatten()
        })
        .ok_or_else(|| {
            format!(
                "no MOVQ 0(reg), {call_reg} loading the code pointer before CALL {call_reg} at +{:#x}",
                off(call)
            )
        })?;

    // TESTQ fn, fn; JNE/JE: the last such pair before the load.
    let (test_idx, nil_return, call_path_start) = (1..load_idx)
        .rev()
        .find_map(|n| {
            let (test, jcc) = (&all[n - 1], &all[n]);
            let is_test = test.mnemonic() == Mnemonic::Test
                && reg_op(test, 0) == Some(fn_reg)
                && reg_op(test, 1) == Some(fn_reg);
            let jne = is_cond_jump(jcc.mnemonic())?;
            if !is_test || jcc.op_kind(0) != OpKind::NearBranch64 {
                return None;
            }
            // Compare offsets from the entry (addresses may wrap).
            let target = jcc.near_branch64().wrapping_sub(entry_vaddr);
            let fallthrough = jcc.next_ip().wrapping_sub(entry_vaddr);
            let (nil, call_path) = if jne {
                (fallthrough, target)
            } else {
                (target, fallthrough)
            };
            // The call path must lead to the load without passing the nil path.
            (call_path <= off(&all[load_idx]) && call_path > off(jcc) && nil != call_path)
                .then_some((n - 1, nil, call_path))
        })
        .ok_or_else(|| {
            format!(
                "no TESTQ {fn_reg}, {fn_reg} with JNE/JE guarding the p.New() call at +{:#x}",
                off(call)
            )
        })?;
    let nil_idx = all
        .iter()
        .position(|i| off(i) == nil_return)
        .ok_or_else(|| {
            format!("nil path target +{nil_return:#x} is not an instruction boundary")
        })?;

    // MOVQ 0x20(p), fn before the TEST: p is the pool.
    let pool_load = (test_idx.saturating_sub(BACKWARD_WINDOW)..test_idx)
        .rev()
        .find(|&n| may_write(&all[n], fn_reg));
    let pool_reg = pool_load.and_then(|n| {
        let i = &all[n];
        let (base, disp) = mem_base_disp(i, 1)?;
        if i.mnemonic() != Mnemonic::Mov || disp != POOL_NEW_OFFSET {
            return None;
        }
        // p must survive from the load to the JCC, and along the call path.
        let jcc_idx = test_idx + 1;
        let call_path_idx = all.iter().position(|x| off(x) == call_path_start)?;
        let clobbered = all
            .get(n + 1..=jcc_idx)?
            .iter()
            .chain(all.get(call_path_idx..call_idx)?)
            .any(|x| may_write(x, base));
        (!clobbered).then_some(base)
    });

    Ok(PoolGetSites {
        new_call: off(call),
        new_return: call.next_ip().wrapping_sub(entry_vaddr),
        new_call_reg: call_reg,
        new_fn_reg: fn_reg,
        nil_return: off(&all[nil_idx]),
        pool_reg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go 1.27 `sync.(*Pool).Get` at default GOAMD64=v1.
    const POOL_GET_127: &str = concat!(
        "493b66100f86ad000000554889e54883ec284889442438e844020000488b0848",
        "8b500848c70000000000833dcf11110000740c488b7008e824b1ffff49893348",
        "c74008000000004885c9752848895c24184883c010e8060a00004885c0750f48",
        "8b442438488b5c2418e8720000004889c14889da488954242048894c24106690",
        "e89b63ffff488b4424104885c07407488b5c2420eb1b488b4c2438488b512090",
        "4885d27507488b5c2420eb05488b02ffd04883c4285dc348894424080f1f4000",
        "e81b98ffff488b442408e931ffffff",
    );

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn pushbp_after_small_check() {
        // CMPQ SP, 0x10(R14); JBE rel8; PUSHQ BP; MOVQ SP, BP
        let code = hex("493b6610 766c 55 4889e5");
        assert_eq!(
            probe_offset(&code, 0x1000),
            ProbeOffset {
                offset: 6,
                kind: ProbeSite::PushBp
            }
        );
        // JBE rel32
        let code = hex("493b6610 0f86fb000000 55 4889e5");
        assert_eq!(probe_offset(&code, 0x1000).offset, 0xa);
    }

    #[test]
    fn pushbp_after_lea_check() {
        // LEAQ -0x20(SP), R12; CMPQ R12, 0x10(R14); JBE rel32; PUSHQ BP
        let code = hex("4c8d6424e0 4d3b6610 0f8600010000 55");
        assert_eq!(probe_offset(&code, 0).offset, 0xf);
        assert_eq!(probe_offset(&code, 0).kind, ProbeSite::PushBp);
    }

    #[test]
    fn pushbp_after_huge_frame_check() {
        // MOVQ SP, R12; SUBQ $0x10000, R12; JB; CMPQ R12, 0x10(R14); JBE; PUSHQ BP
        let code = hex("4989e4 4981ec00000100 0f8210000000 4d3b6610 0f8608000000 55");
        assert_eq!(probe_offset(&code, 0).kind, ProbeSite::PushBp);
        assert_eq!(probe_offset(&code, 0).offset, 0x1a);
    }

    #[test]
    fn nosplit_with_frame_and_frameless() {
        assert_eq!(probe_offset(&hex("55 4889e5"), 0).kind, ProbeSite::PushBp);
        assert_eq!(probe_offset(&hex("55 4889e5"), 0).offset, 0);
        // MOVQ AX, BX; RET
        let p = probe_offset(&hex("4889c3 c3"), 0);
        assert_eq!(p.offset, 0);
        assert!(matches!(p.kind, ProbeSite::Entry { .. }));
        // stack check followed by something else
        let p = probe_offset(&hex("493b6610 766c 4889c3"), 0);
        assert_eq!(
            p.kind,
            ProbeSite::Entry {
                reason: "no PUSHQ BP after the stack check (frameless function)"
            }
        );
        assert!(matches!(probe_offset(&[], 0).kind, ProbeSite::Entry { .. }));
        assert!(matches!(
            probe_offset(&hex("493b66"), 0).kind,
            ProbeSite::Entry { .. }
        ));
        assert!(matches!(
            probe_offset(&hex("0f0b"), 0).kind,
            ProbeSite::Entry { .. }
        ));
    }

    #[test]
    fn pool_get_127() {
        let code = hex(POOL_GET_127);
        let s = pool_get_miss_sites(&code, 0x4832c0).expect("sites");
        assert_eq!(
            s,
            PoolGetSites {
                new_call: 0xaf,
                new_return: 0xb1,
                new_call_reg: Gpr::Rax,
                new_fn_reg: Gpr::Rdx,
                nil_return: 0xa5,
                pool_reg: Some(Gpr::Rcx),
            }
        );
        assert_eq!(probe_offset(&code, 0x4832c0).offset, 0xa);
    }

    #[test]
    fn pool_get_mismatches_are_explained() {
        let code = hex(POOL_GET_127);
        // Replace CALL AX (ff d0) by two NOPs: no indirect call left.
        let mut no_call = code.clone();
        no_call[0xaf] = 0x90;
        no_call[0xb0] = 0x90;
        let err = pool_get_miss_sites(&no_call, 0).expect_err("no call");
        assert!(err.contains("found 0"), "{err}");
        // Break the TESTQ DX, DX (48 85 d2 → 48 85 c9, TESTQ CX, CX).
        let mut no_test = code.clone();
        no_test[0xa2] = 0xc9;
        let err = pool_get_miss_sites(&no_test, 0).expect_err("no test");
        assert!(err.contains("TESTQ rdx, rdx"), "{err}");
        // Truncated and garbage input never panic.
        for n in 0..code.len() {
            let _ = pool_get_miss_sites(&code[..n], 0);
            let _ = probe_offset(&code[n..], 0);
        }
        let _ = pool_get_miss_sites(&[0xff; 64], 0);
        // Addresses that wrap around the top of the address space.
        let top = u64::MAX - 0x10;
        let s = pool_get_miss_sites(&code, top).expect("sites near the top");
        assert_eq!((s.new_call, s.nil_return), (0xaf, 0xa5));
        assert_eq!(probe_offset(&code, top).offset, 0xa);
    }
}
