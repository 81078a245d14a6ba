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
    /// arm64: the `MOVD.W R30, -framesize(RSP)` (`str x30, [sp, #-n]!`)
    /// that saves the return address, first of the frame setup.
    SaveLr,
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
        // In the order of the registers' numbers in the instruction encoding.
        const BY_NUMBER: [Gpr; 16] = [
            Gpr::Rax,
            Gpr::Rcx,
            Gpr::Rdx,
            Gpr::Rbx,
            Gpr::Rsp,
            Gpr::Rbp,
            Gpr::Rsi,
            Gpr::Rdi,
            Gpr::R8,
            Gpr::R9,
            Gpr::R10,
            Gpr::R11,
            Gpr::R12,
            Gpr::R13,
            Gpr::R14,
            Gpr::R15,
        ];
        let full = reg.full_register();
        full.is_gpr64().then(|| BY_NUMBER[full.number()])
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

/// arm64: finds the `MOVD.W R30, -framesize(RSP)` that starts the frame
/// setup of the Go function whose machine code starts `code`, after its
/// stack check (`MOVD 16(R28), R16`, for large frames `SUB $n, RSP, R17`,
/// `CMP R16, RSP|R17`, `BLS`/`BLO morestack`), or as the very first
/// instruction (NOSPLIT functions with a frame). Decoded with yaxpeax-arm;
/// anything else falls back to offset 0 with the reason.
pub fn probe_offset_arm64(code: &[u8]) -> ProbeOffset {
    use yaxpeax_arch::{Decoder as _, U8Reader};
    use yaxpeax_arm::armv8::a64::{InstDecoder, Opcode, Operand, SizeCode};
    let entry = |reason| ProbeOffset {
        offset: 0,
        kind: ProbeSite::Entry { reason },
    };
    /// Register 31 in a base or `RegisterOrSP` operand: SP.
    const SP: u16 = 31;
    const G: u16 = 28;
    let x = |op: &Operand, n: u16| matches!(op, Operand::Register(SizeCode::X, r) if *r == n);
    if code.len() < 4 {
        return entry("no machine code");
    }
    let decoder = InstDecoder::default();
    let mut seen_check = false;
    for (i, word) in code
        .chunks_exact(4)
        .take(MAX_PROLOGUE_INSTRUCTIONS)
        .enumerate()
    {
        let mut reader = U8Reader::new(word);
        let Ok(ins) = decoder.decode(&mut reader) else {
            return entry("undecodable instruction in the prologue");
        };
        let ops = &ins.operands;
        let is_save_lr = ins.opcode == Opcode::STR
            && x(&ops[0], 30)
            && matches!(ops[1], Operand::RegPreIndex(SP, off, true) if off < 0);
        if is_save_lr {
            return ProbeOffset {
                offset: 4 * i as u64,
                kind: ProbeSite::SaveLr,
            };
        }
        let is_check = match ins.opcode {
            // MOVD 16(R28), R16: g.stackguard0.
            Opcode::LDR => x(&ops[0], 16) && matches!(ops[1], Operand::RegPreIndex(G, 16, false)),
            // SUB $n, RSP, R17 (large frames; the immediate form names
            // its destination as a register-or-SP operand).
            Opcode::SUB => {
                matches!(ops[0], Operand::RegisterOrSP(SizeCode::X, 17))
                    && matches!(ops[1], Operand::RegisterOrSP(SizeCode::X, SP))
            }
            // CMP R16, RSP|R17 (SUBS to the zero register).
            Opcode::SUBS => x(&ops[0], 31),
            Opcode::Bcc(_) => true,
            _ => false,
        };
        if !is_check {
            return entry(if seen_check {
                "no MOVD.W R30 after the stack check (frameless function)"
            } else {
                "no stack check or MOVD.W R30 at entry (frameless or assembly function)"
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

/// Why `sync.(*Pool).Get` does not have the shape [`pool_get_miss_sites`]
/// expects: which part is missing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("undecodable instruction at +{0:#x}")]
    Undecodable(u64),
    #[error("expected exactly one indirect call (p.New()) in sync.(*Pool).Get, found {0}")]
    IndirectCalls(usize),
    #[error("the indirect call at +{0:#x} is not CALL reg")]
    CallNotRegister(u64),
    #[error("no MOVQ 0(reg), {reg} loading the code pointer before CALL {reg} at +{call:#x}")]
    NoCodePointerLoad { reg: Gpr, call: u64 },
    #[error("no TESTQ {reg}, {reg} with JNE/JE guarding the p.New() call at +{call:#x}")]
    NoNilTest { reg: Gpr, call: u64 },
    #[error("no MOVD (R26), R{reg} loading the code pointer before CALL (R{reg}) at +{call:#x}")]
    NoCodePointerLoadArm64 { reg: u16, call: u64 },
    #[error("no CBZ/CBNZ R26 guarding the p.New() call at +{call:#x}")]
    NoNilTestArm64 { call: u64 },
    #[error("nil path target +{0:#x} is not an instruction boundary")]
    NilPathNotInstruction(u64),
}

/// The decoded instructions of a function, addressed by index.
struct Code {
    all: Vec<Instruction>,
    entry: u64,
}

/// The `TESTQ fn, fn; JNE/JE` guarding the `p.New()` call.
struct NilTest {
    /// Index of the `TEST`.
    test: usize,
    /// Offsets of the nil path and of the call path.
    nil: u64,
    call_path: u64,
}

impl Code {
    fn decode(code: &[u8], entry: u64) -> Result<Code, ShapeError> {
        let mut dec = decoder(code, entry);
        let mut all = Vec::new();
        while dec.can_decode() {
            let ins = dec.decode();
            if ins.is_invalid() {
                return Err(ShapeError::Undecodable(ins.ip().wrapping_sub(entry)));
            }
            all.push(ins);
        }
        Ok(Code { all, entry })
    }

    /// Offset from the entry (addresses may wrap).
    fn off(&self, i: &Instruction) -> u64 {
        i.ip().wrapping_sub(self.entry)
    }

    fn index_at(&self, offset: u64) -> Option<usize> {
        self.all.iter().position(|i| self.off(i) == offset)
    }

    /// The only indirect call (`p.New()`): its index and register.
    fn indirect_call(&self) -> Result<(usize, Gpr), ShapeError> {
        let indirect: Vec<usize> = self
            .all
            .iter()
            .enumerate()
            .filter(|(_, i)| {
                i.mnemonic() == Mnemonic::Call
                    && matches!(i.op_kind(0), OpKind::Register | OpKind::Memory)
            })
            .map(|(n, _)| n)
            .collect();
        let [call] = indirect[..] else {
            return Err(ShapeError::IndirectCalls(indirect.len()));
        };
        let reg = reg_op(&self.all[call], 0)
            .ok_or_else(|| ShapeError::CallNotRegister(self.off(&self.all[call])))?;
        Ok((call, reg))
    }

    /// `MOVQ 0(fn), reg` shortly before the call at `call`: its index and
    /// `fn`.
    fn code_pointer_load(&self, call: usize, reg: Gpr) -> Result<(usize, Gpr), ShapeError> {
        (call.saturating_sub(BACKWARD_WINDOW)..call)
            .rev()
            .find_map(|n| {
                let i = &self.all[n];
                (i.mnemonic() == Mnemonic::Mov && reg_op(i, 0) == Some(reg))
                    .then(|| {
                        mem_base_disp(i, 1)
                            .filter(|&(_, d)| d == 0)
                            .map(|(b, _)| (n, b))
                    })
                    .flatten()
            })
            .ok_or_else(|| ShapeError::NoCodePointerLoad {
                reg,
                call: self.off(&self.all[call]),
            })
    }

    /// The `TESTQ fn, fn` + `JNE`/`JE` at `n - 1`, `n` whose call path
    /// leads to the load at `load` without passing the nil path.
    fn nil_test_at(&self, n: usize, fn_reg: Gpr, load: usize) -> Option<NilTest> {
        let (test, jcc) = (&self.all[n - 1], &self.all[n]);
        let is_test = test.mnemonic() == Mnemonic::Test
            && reg_op(test, 0) == Some(fn_reg)
            && reg_op(test, 1) == Some(fn_reg);
        let jne = is_cond_jump(jcc.mnemonic())?;
        if !is_test || jcc.op_kind(0) != OpKind::NearBranch64 {
            return None;
        }
        let target = jcc.near_branch64().wrapping_sub(self.entry);
        let fallthrough = jcc.next_ip().wrapping_sub(self.entry);
        let (nil, call_path) = if jne {
            (fallthrough, target)
        } else {
            (target, fallthrough)
        };
        (call_path <= self.off(&self.all[load]) && call_path > self.off(jcc) && nil != call_path)
            .then_some(NilTest {
                test: n - 1,
                nil,
                call_path,
            })
    }

    /// The pool register: the base of `MOVQ 0x20(p), fn` before the `TEST`,
    /// when `p` survives from the load to the jump, and along the call path
    /// to the call at `call`.
    fn pool_register(&self, t: &NilTest, fn_reg: Gpr, call: usize) -> Option<Gpr> {
        let n = (t.test.saturating_sub(BACKWARD_WINDOW)..t.test)
            .rev()
            .find(|&n| may_write(&self.all[n], fn_reg))?;
        let i = &self.all[n];
        let (base, disp) = mem_base_disp(i, 1)?;
        if i.mnemonic() != Mnemonic::Mov || disp != POOL_NEW_OFFSET {
            return None;
        }
        let jcc = t.test + 1;
        let call_path = self.index_at(t.call_path)?;
        let clobbered = self
            .all
            .get(n + 1..=jcc)?
            .iter()
            .chain(self.all.get(call_path..call)?)
            .any(|x| may_write(x, base));
        (!clobbered).then_some(base)
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
/// # Errors
/// Which part of the expected shape is missing.
pub fn pool_get_miss_sites(code: &[u8], entry_vaddr: u64) -> Result<PoolGetSites, ShapeError> {
    let code = Code::decode(code, entry_vaddr)?;
    let (call_idx, call_reg) = code.indirect_call()?;
    let call = &code.all[call_idx];
    let (load_idx, fn_reg) = code.code_pointer_load(call_idx, call_reg)?;
    // The last guarding pair before the load.
    let test = (1..load_idx)
        .rev()
        .find_map(|n| code.nil_test_at(n, fn_reg, load_idx))
        .ok_or_else(|| ShapeError::NoNilTest {
            reg: fn_reg,
            call: code.off(call),
        })?;
    let nil_idx = code
        .index_at(test.nil)
        .ok_or(ShapeError::NilPathNotInstruction(test.nil))?;
    Ok(PoolGetSites {
        new_call: code.off(call),
        new_return: call.next_ip().wrapping_sub(entry_vaddr),
        new_call_reg: call_reg,
        new_fn_reg: fn_reg,
        nil_return: code.off(&code.all[nil_idx]),
        pool_reg: code.pool_register(&test, fn_reg, call_idx),
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

    /// arm64 instruction words as `go tool objdump` prints them, in memory
    /// order (little-endian).
    fn words(ws: &[u32]) -> Vec<u8> {
        ws.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn arm64_probe_after_the_stack_check() {
        // runtime.mallocgc, Go 1.27: MOVD 16(R28), R16; CMP R16, RSP;
        // BLS; MOVD.W R30, -48(RSP); MOVD R29, -8(RSP).
        let code = words(&[0xf9400b90, 0xeb3063ff, 0x54000d69, 0xf81d0ffe, 0xf81f83fd]);
        assert_eq!(
            probe_offset_arm64(&code),
            ProbeOffset {
                offset: 12,
                kind: ProbeSite::SaveLr
            }
        );
        // NOSPLIT with a frame: the save first.
        assert_eq!(
            probe_offset_arm64(&words(&[0xf81d0ffe, 0xf81f83fd])),
            ProbeOffset {
                offset: 0,
                kind: ProbeSite::SaveLr
            }
        );
        // Frameless (RET at once), a stack check not followed by a save,
        // no code.
        for code in [
            words(&[0xd65f03c0]),
            words(&[0xf9400b90, 0xeb3063ff, 0x54000d69, 0xd65f03c0]),
            Vec::new(),
        ] {
            assert!(
                matches!(probe_offset_arm64(&code).kind, ProbeSite::Entry { .. }),
                "{code:02x?}"
            );
        }
    }

    /// Go 1.22.10 `runtime.mallocgc` (arm64): the stack check of a frame
    /// larger than the guard (`SUB $16, RSP, R17; CMP R16, R17`).
    #[test]
    fn arm64_probe_after_a_large_frame_check() {
        let code = words(&[
            0xf9400b90, 0xd10043f1, 0xeb10023f, 0x54004669, 0xf8170ffe, 0xf81f83fd, 0xd10023fd,
        ]);
        assert_eq!(
            probe_offset_arm64(&code),
            ProbeOffset {
                offset: 16,
                kind: ProbeSite::SaveLr
            }
        );
    }

    #[test]
    fn any_width_names_its_64_bit_register() {
        use Register as R;
        for (reg, want) in [
            (R::RAX, Some("rax")),
            (R::AH, Some("rax")),
            (R::CL, Some("rcx")),
            (R::DX, Some("rdx")),
            (R::EBX, Some("rbx")),
            (R::SPL, Some("rsp")),
            (R::BP, Some("rbp")),
            (R::SIL, Some("rsi")),
            (R::EDI, Some("rdi")),
            (R::R8L, Some("r8")),
            (R::R9D, Some("r9")),
            (R::R14, Some("r14")),
            (R::R15W, Some("r15")),
            (R::RIP, None),
            (R::XMM0, None),
            (R::FS, None),
        ] {
            assert_eq!(Gpr::of(reg).map(Gpr::name), want, "{reg:?}");
        }
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
        assert_eq!(err, ShapeError::IndirectCalls(0));
        assert!(err.to_string().contains("found 0"), "{err}");
        // Break the TESTQ DX, DX (48 85 d2 → 48 85 c9, TESTQ CX, CX).
        let mut no_test = code.clone();
        no_test[0xa2] = 0xc9;
        let err = pool_get_miss_sites(&no_test, 0).expect_err("no test");
        assert!(
            matches!(err, ShapeError::NoNilTest { reg: Gpr::Rdx, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("TESTQ rdx, rdx"), "{err}");
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
