//! Which functions only forward to `sync.Pool`: decided statically by
//! decoding their machine code (iced-x86; on arm64 yaxpeax-arm).
//!
//! A *forwarding wrapper* is a function (or an inlined call of one) whose
//! direct calls all go to
//!
//! - `sync.(*Pool).Get` or `sync.(*Pool).Put`,
//! - another forwarding wrapper, or
//! - the runtime (`runtime.*`, `internal/runtime/*`: stack growth, write
//!   barriers, type-assertion panics, …),
//!
//! that makes no indirect call, and that forwards *one* kind of operation:
//! only `Get`s or only `Put`s. Generic instantiations
//! (`main.(*Pool[go.shape.*uint8]).Get`) are functions like any other. A
//! function that both gets and puts uses the object itself: it is the user,
//! not a wrapper. So is any function that calls anything else.
//!
//! An inlined call is judged by the calls whose inline stack passes through
//! it (the inline tree of its physical function says which those are).

use std::collections::HashMap;

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind};

use super::{Frame, GoBinary};

const POOL_GET: &str = "sync.(*Pool).Get";
const POOL_PUT: &str = "sync.(*Pool).Put";
const GETS: u8 = 1;
const PUTS: u8 = 2;

/// True for the runtime's own functions (helpers any wrapper may call).
fn is_runtime(name: &str) -> bool {
    name.starts_with("runtime.") || name.starts_with("internal/runtime/")
}

/// One call in a function's code: where, and the direct target if any.
struct Call {
    ip: u64,
    target: Option<u64>,
}

/// Decides and remembers which functions are forwarding wrappers.
#[derive(Default)]
pub struct Wrappers {
    /// Function entry → the operations it forwards (`None`: not a wrapper).
    funcs: HashMap<u64, Option<u8>>,
    /// (return address, inline depth from the physical function) → wrapper?
    inlined: HashMap<(u64, usize), bool>,
}

impl Wrappers {
    /// Whether the frame `frames[i]` at return address `ret_va` (file
    /// vaddr; `frames` are its inline frames, innermost first, the physical
    /// function last) is a forwarding wrapper.
    pub fn is_wrapper_frame(
        &mut self,
        bin: &GoBinary,
        ret_va: u64,
        frames: &[Frame],
        i: usize,
    ) -> bool {
        let Some(f) = bin.func_at(ret_va.wrapping_sub(1)) else {
            return false;
        };
        let Some(depth) = frames.len().checked_sub(i + 1) else {
            return false;
        };
        if depth == 0 {
            return self.func_ops(bin, f.entry).is_some();
        }
        if let Some(&w) = self.inlined.get(&(ret_va, depth)) {
            return w;
        }
        // The calls whose inline stack, seen from the physical function,
        // passes through the same functions down to frames[i].
        let outer: Vec<&str> = frames[i..].iter().rev().map(|x| &*x.function).collect();
        let calls = calls_of(bin, f.entry).unwrap_or_default();
        let inside: Vec<Option<u64>> = calls
            .iter()
            .filter(|c| {
                let s = bin.symbolize(c.ip);
                s.len() > depth && s.iter().rev().zip(&outer).all(|(a, b)| a.function == *b)
            })
            .map(|c| c.target)
            .collect();
        let w = self.ops_of_calls(bin, &inside).is_some();
        self.inlined.insert((ret_va, depth), w);
        w
    }

    /// The operations the function at `entry` forwards, `None` when it is
    /// not a forwarding wrapper.
    fn func_ops(&mut self, bin: &GoBinary, entry: u64) -> Option<u8> {
        if let Some(&w) = self.funcs.get(&entry) {
            return w;
        }
        // Recursion (directly or through other functions) is no forwarding.
        self.funcs.insert(entry, None);
        let targets: Vec<Option<u64>> = calls_of(bin, entry)?.iter().map(|c| c.target).collect();
        let w = self.ops_of_calls(bin, &targets);
        self.funcs.insert(entry, w);
        w
    }

    /// The operations a set of calls forwards (see the module documentation).
    fn ops_of_calls(&mut self, bin: &GoBinary, targets: &[Option<u64>]) -> Option<u8> {
        let mut ops = 0;
        for t in targets {
            let f = bin.func_at((*t)?)?;
            ops |= match f.name.as_str() {
                POOL_GET => GETS,
                POOL_PUT => PUTS,
                n if is_runtime(n) => 0,
                _ => self.func_ops(bin, f.entry)?,
            };
        }
        (ops == GETS || ops == PUTS).then_some(ops)
    }
}

/// Every call instruction of the function at `entry`.
fn calls_of(bin: &GoBinary, entry: u64) -> Option<Vec<Call>> {
    let f = bin.func_at(entry)?;
    let code = bin.code(&f)?;
    if bin.arch() == super::Arch::Arm64 {
        let code = super::arm64::Code::decode(code, f.entry);
        return Some(
            code.calls()
                .map(|(ip, target)| Call { ip, target })
                .collect(),
        );
    }
    let mut dec = Decoder::with_ip(64, code, f.entry, DecoderOptions::NONE);
    let mut ins = Instruction::default();
    let mut calls = Vec::new();
    while dec.can_decode() {
        dec.decode_out(&mut ins);
        if ins.mnemonic() != Mnemonic::Call {
            continue;
        }
        let target = match ins.op0_kind() {
            OpKind::NearBranch64 | OpKind::NearBranch32 => Some(ins.near_branch_target()),
            _ => None,
        };
        calls.push(Call {
            ip: ins.ip(),
            target,
        });
    }
    Some(calls)
}
