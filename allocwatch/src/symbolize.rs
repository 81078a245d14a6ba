//! From raw addresses to what a Go engineer reads: call sites (the first frame
//! outside the runtime, inline-aware), Go type names, pool names.
//!
//! [`GoResolver`] implements [`stats::Resolver`](crate::stats::Resolver) over
//! a parsed [`GoBinary`]; every distinct stack is resolved once and cached by
//! the aggregator, every address here once and cached by the resolver.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

use crate::gobin::{Arch, GoBinary, TypeName, wrappers::Wrappers};
use crate::stats::{Callers, Frame, Resolved, Resolver, SiteKey};
use crate::weak_cache::WeakCache;

/// True for frames that belong to the Go runtime's allocation machinery: the
/// site is the first frame after them.
///
/// The kernel's aggregation key walks through exactly these frames too (the
/// plan hands it their address ranges), so the two always agree on the site.
#[must_use]
pub fn is_runtime_frame(function: &str) -> bool {
    function.starts_with("runtime.")
        || function.starts_with("internal/runtime/")
        || function.starts_with("reflect.unsafe_New")
        || function.starts_with("internal/reflectlite.unsafe_New")
        // Implemented in the runtime under another package's name.
        || matches!(function, "internal/bytealg.MakeNoZero" | "reflect.growslice")
}

/// Runtime functions whose `typ` argument is the element type of a slice.
const SLICE_MAKERS: [&str; 4] = [
    "runtime.makeslice",
    "runtime.makeslicecopy",
    "runtime.growslice",
    "runtime.newarray",
];
/// Runtime functions that allocate string bytes with a nil type.
const STRING_MAKERS: [&str; 7] = [
    "runtime.rawstring",
    "runtime.rawstringtmp",
    "runtime.concatstrings",
    "runtime.slicebytetostring",
    "runtime.intstring",
    "runtime.slicerunetostring",
    "runtime.concatstring2",
];
const BYTES_MAKERS: [&str; 3] = [
    "runtime.rawbyteslice",
    "runtime.stringtoslicebyte",
    "runtime.gobytes",
];
const RUNES_MAKERS: [&str; 2] = ["runtime.rawruneslice", "runtime.stringtoslicerune"];

const POOL_GET: &str = "sync.(*Pool).Get";

/// Runtime functions that allocate pointer-free slices with a nil type, and
/// the register in which their caller passes the element type (amd64,
/// arm64: `growslice`'s fifth argument, `makeslicecopy`'s first).
const NIL_TYPED_SLICE_MAKERS: [(&str, Register, u16); 2] = [
    ("runtime.growslice", Register::RSI, 4),
    ("runtime.makeslicecopy", Register::RAX, 0),
];

/// True when `r` is `full` or one of its lower parts (RSI, ESI, SI, SIL).
fn same_gpr(r: Register, full: Register) -> bool {
    let parts: &[Register] = match full {
        Register::RSI => &[Register::RSI, Register::ESI, Register::SI, Register::SIL],
        Register::RAX => &[Register::RAX, Register::EAX, Register::AX, Register::AL],
        _ => &[],
    };
    parts.contains(&r)
}

/// The element type a caller loaded into `reg` for the call that returns to
/// `ret_va`: the last `LEAQ type:T(SB), reg` before that call in the caller's
/// code (the Go compiler materializes the type right before the call).
fn elem_type_at_call(bin: &GoBinary, ret_va: u64, reg: Register) -> Option<u64> {
    let f = bin.func_at(ret_va.checked_sub(1)?)?;
    debug_assert_eq!(bin.arch(), Arch::Amd64);
    let code = bin.code(&f)?;
    let mut dec = Decoder::with_ip(64, code, f.entry, DecoderOptions::NONE);
    let mut candidate = None;
    let mut ins = Instruction::default();
    while dec.can_decode() {
        dec.decode_out(&mut ins);
        if ins.next_ip() > ret_va {
            return None;
        }
        if ins.op_count() > 0
            && ins.op0_kind() == OpKind::Register
            && same_gpr(ins.op0_register(), reg)
        {
            candidate = (ins.mnemonic() == Mnemonic::Lea && ins.is_ip_rel_memory_operand())
                .then(|| ins.ip_rel_memory_address());
        }
        if ins.next_ip() == ret_va {
            return if ins.mnemonic() == Mnemonic::Call {
                candidate
            } else {
                None
            };
        }
    }
    None
}

/// The runtime boxes 2-, 4- and 8-byte values, strings and slices that it
/// converts to an interface (`convT16`, `convT32`, `convT64`,
/// `convTstring`, `convTslice`) in objects of its own named types
/// (`runtime.uint64InterfacePtr`, ...): a name only the runtime's sources
/// explain. What such an object holds, in words a Go engineer reads.
fn boxed_type_name(name: &str) -> Option<String> {
    let what = match name.strip_prefix("runtime.")? {
        "uint16InterfacePtr" => "uint16",
        "uint32InterfacePtr" => "uint32",
        "uint64InterfacePtr" => "uint64",
        "stringInterfacePtr" => "string",
        "sliceInterfacePtr" => "slice",
        _ => return None,
    };
    Some(format!("{what} (boxed in an interface)"))
}

/// Resolves addresses of one traced process through its executable.
pub struct GoResolver {
    bin: Arc<GoBinary>,
    /// Runtime address − file vaddr.
    bias: u64,
    /// The live process, to read pools' `New` from.
    pid: Option<u32>,
    /// Frames and names of this executable, shared with the resolvers of
    /// its other processes (the daemon traces many of one executable).
    shared: Arc<Mutex<SharedSymbols>>,
    /// Return addresses that symbolize to nothing (named by their runtime
    /// address, so not shared).
    unknown_pcs: HashMap<u64, Arc<[Frame]>>,
    types: HashMap<u64, Arc<str>>,
    /// Which pool callers only forward to `sync.Pool`.
    wrappers: Wrappers,
}

/// The symbolized frames (by file address) and interned names of one
/// executable, shared by the resolvers of all its traced processes: 50
/// processes of one executable need them once, not 50 times.
#[derive(Default)]
struct SharedSymbols {
    pcs: HashMap<u64, Arc<[Frame]>>,
    strings: std::collections::HashSet<Arc<str>>,
}

/// Each executable's [`SharedSymbols`], while a resolver uses them, by the
/// address of its parsed [`GoBinary`]: every resolver holds its binary, so
/// while an entry's symbols are alive that address is still their binary.
static SHARED_SYMBOLS: WeakCache<usize, Mutex<SharedSymbols>> = WeakCache::new();

impl SharedSymbols {
    /// The shared symbols of `bin` (one parsed executable), new if no
    /// resolver of it is alive.
    fn of(bin: &Arc<GoBinary>) -> Arc<Mutex<SharedSymbols>> {
        SHARED_SYMBOLS.get_or_insert_with(Arc::as_ptr(bin) as usize, || {
            Mutex::new(SharedSymbols::default())
        })
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.strings.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.strings.insert(a.clone());
        a
    }
}

impl GoResolver {
    #[must_use]
    pub fn new(bin: Arc<GoBinary>, bias: u64) -> Self {
        GoResolver {
            shared: SharedSymbols::of(&bin),
            bin,
            bias,
            pid: None,
            unknown_pcs: HashMap::new(),
            types: HashMap::new(),
            wrappers: Wrappers::default(),
        }
    }

    /// Reads pool state from this live process.
    #[must_use]
    pub fn with_pid(mut self, pid: u32) -> Self {
        self.pid = Some(pid);
        self
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        self.shared().intern(s)
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, SharedSymbols> {
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Frames of a return address (innermost first), inline-aware.
    fn frames_of_return(&mut self, ret: u64) -> Arc<[Frame]> {
        if let Some(f) = self.unknown_pcs.get(&ret) {
            return f.clone();
        }
        let pc = ret.wrapping_sub(self.bias).wrapping_sub(1);
        if let Some(f) = self.shared().pcs.get(&pc) {
            return f.clone();
        }
        let raw = self.bin.symbolize(pc);
        if raw.is_empty() {
            let frames: Arc<[Frame]> = Arc::from(vec![Frame {
                function: self.intern(&format!("{ret:#x}")),
                file: self.intern(""),
                line: 0,
            }]);
            self.unknown_pcs.insert(ret, frames.clone());
            return frames;
        }
        let mut shared = self.shared();
        let frames: Arc<[Frame]> = raw
            .iter()
            .map(|f| Frame {
                function: shared.intern(&f.function),
                file: shared.intern(&f.file),
                line: f.line,
            })
            .collect();
        shared.pcs.insert(pc, frames.clone());
        frames
    }

    fn type_name(&mut self, typ: u64) -> Arc<str> {
        self.type_name_va(typ.wrapping_sub(self.bias))
    }

    /// Type name of a type descriptor at a file vaddr.
    fn type_name_va(&mut self, va: u64) -> Arc<str> {
        if let Some(t) = self.types.get(&va) {
            return t.clone();
        }
        let name = match self.bin.type_name(va) {
            TypeName::Named(n) => boxed_type_name(&n).unwrap_or(n),
            TypeName::Dynamic => "<dynamic type>".to_string(),
            TypeName::Nil => "<untyped>".to_string(),
        };
        let a = self.intern(&name);
        self.types.insert(va, a.clone());
        a
    }
}

/// An allocation's stack split at the site: the runtime frames above it
/// (innermost first) and the user frames from the site down.
struct Walk {
    runtime: Vec<Arc<str>>,
    stack: Vec<Frame>,
    /// The `New` function of the `sync.Pool` whose `Get` called it.
    pool_new_func: Option<Arc<str>>,
    /// The outermost runtime frame (the site when no user frame is known).
    last_runtime: Option<Frame>,
    /// The return address into the site's function (from the runtime).
    site_ret: Option<u64>,
}

impl GoResolver {
    /// Walks the return addresses (`frames[0]` is the probed instruction
    /// inside the allocation entry).
    fn walk(&mut self, frames: &[u64]) -> Walk {
        let mut w = Walk {
            runtime: Vec::new(),
            stack: Vec::new(),
            pool_new_func: None,
            last_runtime: None,
            site_ret: None,
        };
        let mut prev_user: Option<Arc<str>> = None;
        for &ret in frames.iter().skip(1) {
            for f in self.frames_of_return(ret).iter() {
                if w.stack.is_empty() && is_runtime_frame(&f.function) {
                    w.runtime.push(f.function.clone());
                    w.last_runtime = Some(f.clone());
                    continue;
                }
                if w.stack.is_empty() {
                    w.site_ret = Some(ret);
                }
                if w.pool_new_func.is_none() && &*f.function == POOL_GET {
                    w.pool_new_func = prev_user.clone();
                }
                prev_user = Some(f.function.clone());
                w.stack.push(f.clone());
            }
        }
        w
    }

    /// The type of an allocation with type descriptor `typ` (0 when the
    /// runtime was not given one), from the runtime frames that made it.
    fn alloc_type(&mut self, typ: u64, w: &Walk) -> Arc<str> {
        let runtime = &w.runtime;
        if typ != 0 {
            let elem = self.type_name(typ);
            // The innermost runtime frames decide: a slice maker passes the element type.
            let slice = runtime.iter().take(2).any(|r| SLICE_MAKERS.contains(&&**r));
            return if slice {
                self.intern(&format!("[]{elem}"))
            } else {
                elem
            };
        }
        let made_by = |set: &[&str]| runtime.iter().any(|r| set.contains(&&**r));
        if made_by(&STRING_MAKERS) {
            return self.intern("string");
        } else if made_by(&BYTES_MAKERS) {
            return self.intern("[]uint8");
        } else if made_by(&RUNES_MAKERS) {
            return self.intern("[]int32");
        }
        // A pointer-free slice grown or copied: the caller passed the element type.
        let maker = runtime
            .last()
            .and_then(|r| NIL_TYPED_SLICE_MAKERS.iter().find(|(n, ..)| **n == **r));
        let elem = maker
            .zip(w.site_ret)
            .and_then(|(&(_, reg, reg_arm64), ret)| {
                let ret = ret.wrapping_sub(self.bias);
                match self.bin.arch() {
                    Arch::Amd64 => elem_type_at_call(&self.bin, ret, reg),
                    Arch::Arm64 => {
                        crate::gobin::arm64::elem_type_at_call(&self.bin, ret, reg_arm64)
                    }
                }
            });
        match elem {
            Some(va) => {
                let e = self.type_name_va(va);
                self.intern(&format!("[]{e}"))
            }
            None => self.intern("<untyped>"),
        }
    }
}

impl Resolver for GoResolver {
    fn resolve_alloc(&mut self, typ: u64, frames: &[u64]) -> Resolved {
        let w = self.walk(frames);
        let type_name = self.alloc_type(typ, &w);
        let Walk {
            mut stack,
            pool_new_func,
            last_runtime,
            ..
        } = w;
        let site_frame = stack.first().cloned().or(last_runtime).unwrap_or_else(|| {
            // No frame at all could be read.
            Frame {
                function: self.intern("<unknown>"),
                file: self.intern(""),
                line: 0,
            }
        });
        if stack.is_empty() {
            stack.push(site_frame.clone());
        }
        Resolved {
            site: SiteKey {
                function: site_frame.function.clone(),
                file: site_frame.file.clone(),
                line: site_frame.line,
                type_name,
            },
            stack: Arc::from(stack),
            pool_new_func,
        }
    }

    fn caller(&mut self, ret_addr: u64) -> Frame {
        self.frames_of_return(ret_addr)
            .first()
            .cloned()
            .unwrap_or_else(|| Frame {
                function: Arc::from("<unknown>"),
                file: Arc::from(""),
                line: 0,
            })
    }

    fn pool_user(&mut self, callers: &Callers) -> Frame {
        let mut last = None;
        for &ret in callers.iter().take_while(|&&r| r != 0) {
            let frames = self.frames_of_return(ret);
            let ret_va = ret.wrapping_sub(self.bias);
            let raw = self.bin.symbolize(ret_va.wrapping_sub(1));
            for (i, f) in frames.iter().enumerate() {
                last = Some(f.clone());
                let wrapper =
                    !raw.is_empty() && self.wrappers.is_wrapper_frame(&self.bin, ret_va, &raw, i);
                if !wrapper {
                    return f.clone();
                }
            }
        }
        // Wrappers all the way up the walk: the outermost seen.
        last.unwrap_or_else(|| self.caller(callers[0]))
    }

    fn pool_symbol(&mut self, pool: u64) -> Option<Arc<str>> {
        let va = pool.wrapping_sub(self.bias);
        let (name, start) = self.bin.data_symbol_at(va)?;
        Some(if start == va {
            self.intern(&name)
        } else {
            self.intern(&format!("{name}+{:#x}", va - start))
        })
    }

    fn function_name(&mut self, code: u64) -> Arc<str> {
        match self.bin.func_at(code.wrapping_sub(self.bias)) {
            Some(f) => self.intern(&f.name),
            None => self.intern(&format!("{code:#x}")),
        }
    }

    fn pool_new_func(&mut self, pool: u64) -> Option<Arc<str>> {
        // sync.Pool: New func() any at +32 (Go 1.21–1.27); a func value points
        // to a funcval whose first word is the code pointer.
        let pid = self.pid?;
        let funcval = crate::target::read_u64(pid, pool.checked_add(32)?)?;
        if funcval == 0 {
            return None;
        }
        let code = crate::target::read_u64(pid, funcval)?;
        let f = self.bin.func_at(code.wrapping_sub(self.bias))?;
        Some(self.intern(&f.name))
    }
}
