//! Which functions to probe, at which instruction, with which cookie.
//!
//! Pure: computed from a [`GoBinary`] alone, so `allocwatch inspect` prints it
//! without root and tests check it without a kernel.
//!
//! - Allocation entries: `runtime.mallocgc` and, where the linker kept them,
//!   the size-specialized entries Go 1.27 (and 1.26 with
//!   `GOEXPERIMENT=sizespecializedmalloc`) calls directly from user code. The
//!   specialized ones are also called by `mallocgc` itself: their probes skip
//!   hits whose return address lies in a `runtime.mallocgc*` function.
//! - Every probe sits on the `PUSHQ BP` after the stack check (decoded, never
//!   assumed): cheaper, fires once per call even after `morestack`, and keeps
//!   the immediate caller in kernel stack walks.
//! - `sync.Pool`: `Get` and `Put` at their frame setup, and the two miss paths
//!   inside `Get` (the indirect call of `p.New()` and the nil return); and
//!   the address that call returns to, which the kernel looks for on the
//!   stack to tell an allocation inside `New` (a miss's cost).

use serde::Serialize;

use allocwatch_common::cookie;

use crate::gobin::{Arch, GoBinary, arm64, prologue};

/// Which eBPF program serves a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Program {
    Alloc,
    Pool,
}

/// One uprobe.
#[derive(Clone, Debug, Serialize)]
pub struct PlannedProbe {
    pub function: String,
    /// The function's entry (file vaddr).
    pub func_vaddr: u64,
    /// Probe offset from the entry.
    pub offset: u64,
    /// `func_vaddr + offset`.
    pub vaddr: u64,
    /// Where `vaddr` is in the executable file (what the kernel attaches to).
    pub file_offset: u64,
    /// Why this instruction.
    pub placement: String,
    pub program: Program,
    /// What the probe does (`allocwatch_common::cookie` kind).
    pub role: &'static str,
    pub cookie: u64,
}

/// Whether `sync.Pool` is traced, and why not.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "status", content = "reason")]
pub enum PoolTracing {
    Enabled,
    Disabled(String),
}

/// Everything `inspect` prints and `attach` needs.
#[derive(Clone, Debug, Serialize)]
pub struct ProbePlan {
    pub go_version: String,
    /// `amd64` or `arm64` (Go's names).
    pub arch: &'static str,
    pub stripped: bool,
    pub pie: bool,
    pub external_link: bool,
    pub pgo: bool,
    pub size_specialized_malloc: bool,
    pub probes: Vec<PlannedProbe>,
    /// `[start, end)` vaddrs of every `runtime.mallocgc*` function.
    pub malloc_ranges: Vec<(u64, u64)>,
    /// `[start, end)` vaddrs of the runtime's own functions, adjacent ones
    /// merged: the frames the kernel walks through to reach a site.
    #[serde(skip)]
    pub runtime_ranges: Vec<(u64, u64)>,
    pub mode: Mode,
    /// Starts in `mode` and may switch between exact and sampled (`record`
    /// and `top` only: not part of `inspect`'s output).
    #[serde(skip)]
    pub switchable: bool,
    /// The vaddr `p.New()` returns to in `sync.(*Pool).Get` (pool tracing).
    #[serde(skip)]
    pub pool_new_return: Option<u64>,
    /// arm64: the register (R0–R25) that holds the pool at the miss sites
    /// inside `sync.(*Pool).Get` (pool tracing); on amd64 it is always RCX.
    #[serde(skip)]
    pub pool_register: Option<u16>,
    /// Sampled mode: the vaddr of `runtime.MemProfileRate`.
    pub mem_profile_rate_addr: Option<u64>,
    /// Sampled mode: whether the linker switched memory profiling off (the
    /// program never references `runtime.MemProfile`), so that the runtime
    /// sets `MemProfileRate` to 0 at start; `None` when not known. Tracing
    /// then sets the rate itself for the session.
    pub memory_profiling_disabled: Option<bool>,
    /// The vaddr of `runtime.disableMemoryProfiling` (sampled mode).
    #[serde(skip)]
    pub disable_flag_addr: Option<u64>,
    pub pools: PoolTracing,
    pub warnings: Vec<String>,
}

/// Why no plan can be made (the program's code is not what allocwatch
/// expects). The caller says which program.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{0} not found")]
    FunctionMissing(String),
    #[error("code of {0} not in the file")]
    CodeMissing(String),
    #[error("{function}+{offset:#x} is not in a loadable segment of the file")]
    NotLoadable { function: String, offset: u64 },
    #[error("cannot find runtime.MemProfileRate in runtime.profilealloc")]
    NoMemProfileRate,
}

/// Why `sync.Pool` is not traced (allocation tracing carries on).
#[derive(Debug, thiserror::Error)]
enum PoolPlanError {
    #[error("the program does not use sync.Pool")]
    NotUsed,
    #[error("{GET} does not have the expected shape ({0})")]
    UnexpectedShape(prologue::ShapeError),
    #[error("{GET}: the register that holds the pool at its miss sites is not known")]
    PoolRegister,
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// Options that change the plan.
#[derive(Clone, Copy, Debug)]
pub struct PlanOptions {
    pub pools: bool,
    pub mode: Mode,
    /// Exact mode that may switch to sampled and back (`--max-overhead`):
    /// `runtime.profilealloc` is probed too (its program stays idle until
    /// the switch).
    pub switchable: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            pools: true,
            mode: Mode::Exact,
            switchable: false,
        }
    }
}

/// How allocations are counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Every allocation, at the allocation entry points (a uprobe trap each).
    #[default]
    Exact,
    /// The runtime's own memory-profile samples (`runtime.profilealloc`, about
    /// one per `runtime.MemProfileRate` bytes), scaled as pprof scales them.
    Sampled,
}

impl Mode {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Mode::Exact => "exact",
            Mode::Sampled => "sampled",
        }
    }
}

/// `runtime.disableMemoryProfiling` (set by the linker when the program
/// never references `runtime.MemProfile`; then the runtime sets
/// `MemProfileRate = 0` at start): its vaddr and whether it is set. Found in
/// `runtime.schedinit` as the flag compared right before the store of 0 to
/// `MemProfileRate`; `None` when that code is not recognised. Works without
/// symbols.
#[must_use]
pub fn memory_profiling_flag(bin: &GoBinary, rate_addr: u64) -> Option<(u64, bool)> {
    use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind};
    if bin.arch() == Arch::Arm64 {
        return arm64::memory_profiling_flag(bin, rate_addr);
    }
    let f = bin.func_by_name("runtime.schedinit")?;
    let code = bin.code(&f)?;
    let mut dec = Decoder::with_ip(64, code, f.entry, DecoderOptions::NONE);
    let mut ins = Instruction::default();
    let mut flag = None;
    while dec.can_decode() {
        dec.decode_out(&mut ins);
        if ins.mnemonic() == Mnemonic::Cmp && ins.is_ip_rel_memory_operand() {
            flag = Some(ins.ip_rel_memory_address());
        }
        if ins.mnemonic() == Mnemonic::Mov
            && ins.op0_kind() == OpKind::Memory
            && ins.is_ip_rel_memory_operand()
            && ins.ip_rel_memory_address() == rate_addr
        {
            let a = flag?;
            return bin.initial_byte(a).map(|b| (a, b != 0));
        }
    }
    None
}

/// The address of `runtime.MemProfileRate`: the RIP-relative load in
/// `runtime.profilealloc` (`c.memProfRate = MemProfileRate`) whose word in
/// the file holds the default rate (512 KiB). Works without symbols.
#[must_use]
pub fn find_mem_profile_rate(bin: &GoBinary) -> Option<u64> {
    use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind};
    if bin.arch() == Arch::Arm64 {
        return arm64::find_mem_profile_rate(bin);
    }
    let f = bin.func_by_name("runtime.profilealloc")?;
    let code = bin.code(&f)?;
    let mut dec = Decoder::with_ip(64, code, f.entry, DecoderOptions::NONE);
    let mut ins = Instruction::default();
    while dec.can_decode() {
        dec.decode_out(&mut ins);
        if ins.mnemonic() == Mnemonic::Mov
            && ins.op_count() == 2
            && ins.op0_kind() == OpKind::Register
            && ins.is_ip_rel_memory_operand()
        {
            let addr = ins.ip_rel_memory_address();
            if bin.read_ptr(addr) == Some(512 * 1024) {
                return Some(addr);
            }
        }
    }
    None
}

const SPECIALIZED_PREFIXES: [&str; 4] = [
    "runtime.mallocgcSmallNoScanSC",
    "runtime.mallocgcSmallScanNoHeaderSC",
    "runtime.mallocgcTinySC",
    "runtime.mallocgcTinySize",
];

/// True for the size-specialized allocation entries (`runtime.mallocgcTinySC2`, …).
#[must_use]
pub fn is_specialized_entry(name: &str) -> bool {
    SPECIALIZED_PREFIXES.iter().any(|p| {
        name.strip_prefix(p)
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
    })
}

fn role_name(kind: u32) -> &'static str {
    match kind {
        cookie::ALLOC_ENTRY => "alloc",
        cookie::ALLOC_SPECIALIZED => "alloc (skip if called by mallocgc)",
        cookie::POOL_GET => "pool get",
        cookie::POOL_NEW => "pool miss (New called)",
        cookie::POOL_NIL => "pool miss (nil returned)",
        cookie::POOL_PUT => "pool put",
        cookie::ALLOC_SAMPLE => "alloc sample (runtime memory profile)",
        _ => "?",
    }
}

struct Builder<'a> {
    bin: &'a GoBinary,
    probes: Vec<PlannedProbe>,
    warnings: Vec<String>,
}

impl Builder<'_> {
    fn push(
        &mut self,
        function: &str,
        func_vaddr: u64,
        offset: u64,
        placement: String,
        kind: u32,
    ) -> Result<(), PlanError> {
        let vaddr = func_vaddr + offset;
        let file_offset = self
            .bin
            .file_offset(vaddr)
            .ok_or_else(|| PlanError::NotLoadable {
                function: function.to_string(),
                offset,
            })?;
        let index = u32::try_from(self.probes.len()).unwrap_or(u32::MAX);
        self.probes.push(PlannedProbe {
            function: function.to_string(),
            func_vaddr,
            offset,
            vaddr,
            file_offset,
            placement,
            program: if (cookie::POOL_GET..=cookie::POOL_PUT).contains(&kind) {
                Program::Pool
            } else {
                Program::Alloc
            },
            role: role_name(kind),
            cookie: cookie::make(kind, index),
        });
        Ok(())
    }

    /// A probe at the function's frame setup.
    fn entry(&mut self, name: &str, kind: u32) -> Result<(), PlanError> {
        let f = self
            .bin
            .func_by_name(name)
            .ok_or_else(|| PlanError::FunctionMissing(name.to_string()))?;
        let code = self
            .bin
            .code(&f)
            .ok_or_else(|| PlanError::CodeMissing(name.to_string()))?;
        let po = match self.bin.arch() {
            Arch::Amd64 => prologue::probe_offset(code, f.entry),
            Arch::Arm64 => prologue::probe_offset_arm64(code),
        };
        let placement = match &po.kind {
            prologue::ProbeSite::PushBp => "PUSHQ BP after the stack check".to_string(),
            prologue::ProbeSite::SaveLr => "MOVD.W R30 after the stack check".to_string(),
            prologue::ProbeSite::Entry { reason } => {
                self.warnings.push(format!(
                    "{name}: probing its first instruction ({reason}); a stack growth may count a call twice"
                ));
                format!("entry: {reason}")
            }
        };
        self.push(name, f.entry, po.offset, placement, kind)
    }
}

/// Sampled mode: where `runtime.MemProfileRate` is, and
/// `runtime.disableMemoryProfiling` (its vaddr and whether it is set).
struct Sampling {
    rate_addr: u64,
    flag: Option<(u64, bool)>,
}

/// Computes the probe plan of a Go executable.
///
/// # Errors
/// What in the program's code is not as expected.
pub fn plan(bin: &GoBinary, opts: PlanOptions) -> Result<ProbePlan, PlanError> {
    let info = bin.build_info();
    let mut b = Builder {
        bin,
        probes: Vec::new(),
        warnings: Vec::new(),
    };
    if let Some((1, minor, _)) = info.version()
        && minor > 27
    {
        b.warnings.push(format!(
            "{} is newer than the newest Go allocwatch was tested with (1.27): counts may be incomplete",
            info.go_version
        ));
    }
    let mut specialized: Vec<_> = bin
        .functions()
        .filter(|f| is_specialized_entry(&f.name))
        .collect();
    specialized.sort_by_key(|f| f.entry);
    if opts.mode == Mode::Exact {
        b.entry("runtime.mallocgc", cookie::ALLOC_ENTRY)?;
        for f in &specialized {
            b.entry(&f.name, cookie::ALLOC_SPECIALIZED)?;
        }
    }
    let sampling = if opts.mode == Mode::Sampled || opts.switchable {
        Some(b.sampling()?)
    } else {
        None
    };
    let mut malloc_ranges: Vec<_> = bin
        .functions()
        .filter(|f| f.name.starts_with("runtime.mallocgc"))
        .map(|f| (f.entry, f.end))
        .collect();
    malloc_ranges.sort_unstable();
    let runtime_ranges = runtime_ranges(bin);
    let (pools, pool_sites) = b.pool_tracing(opts.pools);
    if info.pgo() && pools == PoolTracing::Enabled {
        b.warnings.push(
            "built with PGO: sync.Pool Get/Put may be inlined into hot callers; pool counts are incomplete for this binary"
                .into(),
        );
    }
    let flag = sampling.as_ref().and_then(|s| s.flag);
    Ok(ProbePlan {
        go_version: info.go_version.clone(),
        arch: bin.arch().name(),
        stripped: bin.is_stripped(),
        pie: bin.is_pie(),
        external_link: bin.externally_linked(),
        pgo: info.pgo(),
        size_specialized_malloc: !specialized.is_empty(),
        probes: b.probes,
        malloc_ranges,
        runtime_ranges,
        mode: opts.mode,
        switchable: opts.switchable,
        mem_profile_rate_addr: sampling.map(|s| s.rate_addr),
        memory_profiling_disabled: flag.map(|(_, set)| set),
        disable_flag_addr: flag.map(|(a, _)| a),
        pool_new_return: pool_sites.map(|s| s.new_return),
        pool_register: pool_sites.and_then(|s| s.pool_register),
        pools,
        warnings: b.warnings,
    })
}

/// The `[start, end)` ranges of the runtime's own functions. A runtime
/// function ends where the next function starts, so runs of adjacent
/// runtime functions merge into one range.
fn runtime_ranges(bin: &GoBinary) -> Vec<(u64, u64)> {
    merge_ranges(
        bin.functions()
            .filter(|f| crate::symbolize::is_runtime_frame(&f.name))
            .map(|f| (f.entry, f.end)),
    )
}

impl Builder<'_> {
    /// The sample probe on `runtime.profilealloc`, and where the rate and
    /// the linker's flag are.
    fn sampling(&mut self) -> Result<Sampling, PlanError> {
        self.entry("runtime.profilealloc", cookie::ALLOC_SAMPLE)?;
        let rate_addr = find_mem_profile_rate(self.bin).ok_or(PlanError::NoMemProfileRate)?;
        let flag = memory_profiling_flag(self.bin, rate_addr);
        if flag.is_none() {
            self.warnings.push(
                "cannot tell whether the linker switched memory profiling off (runtime.schedinit not recognised): \
                 a launched program may have no samples"
                    .into(),
            );
        }
        Ok(Sampling { rate_addr, flag })
    }

    /// Whether `sync.Pool` is traced, and where the miss sites are. A pool
    /// that cannot be traced takes its probes away and leaves a warning:
    /// allocation tracing carries on.
    fn pool_tracing(&mut self, wanted: bool) -> (PoolTracing, Option<MissSites>) {
        if !wanted {
            return (
                PoolTracing::Disabled("turned off (--no-pools)".into()),
                None,
            );
        }
        match self.pools() {
            Ok(ret) => (PoolTracing::Enabled, Some(ret)),
            Err(e) => {
                let reason = e.to_string();
                self.probes.retain(|p| p.program != Program::Pool);
                self.warnings.push(format!(
                    "sync.Pool tracing disabled: {reason}; allocation tracing carries on"
                ));
                (PoolTracing::Disabled(reason), None)
            }
        }
    }

    fn pools(&mut self) -> Result<MissSites, PoolPlanError> {
        let get = self.bin.func_by_name(GET).ok_or(PoolPlanError::NotUsed)?;
        self.entry(GET, cookie::POOL_GET)?;
        let code = self
            .bin
            .code(&get)
            .ok_or_else(|| PlanError::CodeMissing(GET.to_string()))?;
        let (sites, pool_register) = match self.bin.arch() {
            Arch::Amd64 => {
                let s = prologue::pool_get_miss_sites(code, get.entry)
                    .map_err(PoolPlanError::UnexpectedShape)?;
                ((s.new_call, s.new_return, s.nil_return), None)
            }
            Arch::Arm64 => {
                let s = arm64::pool_get_miss_sites(code, get.entry)
                    .map_err(PoolPlanError::UnexpectedShape)?;
                let reg = s.pool_reg.ok_or(PoolPlanError::PoolRegister)?;
                ((s.new_call, s.new_return, s.nil_return), Some(reg))
            }
        };
        let (new_call, new_return, nil_return) = sites;
        self.push(
            GET,
            get.entry,
            new_call,
            "indirect CALL of p.New()".into(),
            cookie::POOL_NEW,
        )?;
        self.push(
            GET,
            get.entry,
            nil_return,
            "nil return when p.New is nil".into(),
            cookie::POOL_NIL,
        )?;
        if self.bin.func_by_name(PUT).is_some() {
            self.entry(PUT, cookie::POOL_PUT)?;
        }
        Ok(MissSites {
            new_return: get.entry + new_return,
            pool_register,
        })
    }
}

/// What the programs need to know of `Get`'s miss sites.
#[derive(Clone, Copy)]
struct MissSites {
    /// The vaddr `p.New()` returns to.
    new_return: u64,
    /// arm64: the register of `p` there.
    pool_register: Option<u16>,
}

const GET: &str = "sync.(*Pool).Get";
const PUT: &str = "sync.(*Pool).Put";

/// Sorts `[start, end)` ranges and merges those that touch or overlap.
fn merge_ranges(ranges: impl Iterator<Item = (u64, u64)>) -> Vec<(u64, u64)> {
    let mut sorted: Vec<(u64, u64)> = ranges.collect();
    sorted.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (s, e) in sorted {
        match out.last_mut() {
            Some(last) if last.1 >= s => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

impl ProbePlan {
    /// Whether this allocwatch can attach the plan: its programs read the
    /// registers of their own architecture only (`inspect` plans either).
    ///
    /// # Errors
    /// The message to show, naming both architectures.
    pub fn check_traceable_here(&self) -> Result<(), String> {
        let host = Arch::HOST.name();
        if self.arch == host {
            return Ok(());
        }
        Err(format!(
            "the program is built for {} and this allocwatch traces {host} programs: use allocwatch built for {}",
            self.arch, self.arch
        ))
    }

    /// The `runtime.mallocgc*` ranges, adjacent ones merged.
    #[must_use]
    pub fn merged_malloc_ranges(&self) -> Vec<(u64, u64)> {
        merge_ranges(self.malloc_ranges.iter().copied())
    }

    /// True when pool probes are part of the plan.
    #[must_use]
    pub fn pools_enabled(&self) -> bool {
        self.pools == PoolTracing::Enabled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_when_they_touch() {
        let r = merge_ranges([(30, 40), (10, 20), (20, 25), (50, 60), (55, 58)].into_iter());
        assert_eq!(r, vec![(10, 25), (30, 40), (50, 60)]);
    }

    #[test]
    fn specialized_names() {
        assert!(is_specialized_entry("runtime.mallocgcSmallNoScanSC2"));
        assert!(is_specialized_entry(
            "runtime.mallocgcSmallScanNoHeaderSC26"
        ));
        assert!(is_specialized_entry("runtime.mallocgcTinySC2"));
        assert!(is_specialized_entry("runtime.mallocgcTinySize15"));
        assert!(!is_specialized_entry("runtime.mallocgc"));
        assert!(!is_specialized_entry("runtime.mallocgcTiny"));
        assert!(!is_specialized_entry("runtime.mallocgcSmallNoscan"));
        assert!(!is_specialized_entry("runtime.mallocgcSmallNoScanSC"));
        assert!(!is_specialized_entry("runtime.mallocgcSmallNoScanSC2x"));
    }
}
