//! The kernel <-> userspace ABI of allocwatch.
//!
//! Everything here is shared by the eBPF programs (`allocwatch-ebpf`) and the
//! userspace loader (`allocwatch::probe`). Only fixed-width integers, explicit
//! padding, alignment ≤ 8 (ring buffer records), and compile-time size checks.
#![no_std]

/// Most user-stack frames carried by one event.
///
/// 32 frames reach past the runtime's own frames into several levels of user
/// code, which is what call-site attribution and short exported stacks need.
pub const MAX_FRAMES: usize = 32;

/// Ring buffer size in bytes (a power of two multiple of the page size).
pub const RINGBUF_BYTES: u32 = 32 << 20;

/// The exec notification's ring buffer (`execwatch`'s `EXECS`): one
/// [`ExecNote`] per exec (32 bytes with its header), room for 4,096
/// between reads.
pub const EXEC_RINGBUF_BYTES: u32 = 128 << 10;

/// One record of `execwatch`'s ring buffer: a process exec'd.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecNote {
    /// The process (thread-group ID).
    pub pid: u32,
    /// [`EXEC_NOTE_EXEC`], [`EXEC_NOTE_HELD`] or [`EXEC_NOTE_HOLD_FAILED`].
    pub kind: u32,
    /// The file it exec'd, as [`ExeKey`] (0, 0 when unread).
    pub file: ExeKey,
}
const _: () = assert!(core::mem::size_of::<ExecNote>() == 24);

/// An executable file as the kernel knows it: `super_block.s_dev` (the
/// kernel's encoding, `MKDEV`) and `inode.i_ino`. The key of `HOLD`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExeKey {
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}
const _: () = assert!(core::mem::size_of::<ExeKey>() == 16);

/// Executables whose new processes are held: room in `HOLD`.
pub const HOLD_MAX: u32 = 4096;

/// A process name as the kernel keeps it (`task_struct.comm`: the exec'd
/// file's base name, at most 15 bytes, NUL-padded). The data of
/// `HOLD_COMMS`'s keys, a longest-prefix-match trie: a whole name is its
/// bytes and the NUL after them, a prefix its bytes alone.
pub type Comm = [u8; 16];

/// Process names and name prefixes whose new processes are held: room in
/// `HOLD_COMMS`.
pub const HOLD_COMMS_MAX: u32 = 256;

/// Where `exec_notify` reads the exec'd file's identity, in bytes (from
/// the kernel's BTF, set by the loader; `valid` 0 leaves it unread):
/// `linux_binprm.file`, `file.f_inode`, `inode.i_ino`, `inode.i_sb`,
/// `super_block.s_dev`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecFileOffsets {
    pub valid: u32,
    pub bprm_file: u32,
    pub file_inode: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub sb_dev: u32,
}
const _: () = assert!(core::mem::size_of::<ExecFileOffsets>() == 24);

/// `exec_notify`: the process exec'd.
pub const EXEC_NOTE_EXEC: u32 = 0;
/// The process exec'd a file in `HOLD` and was sent `SIGSTOP` before its
/// first instruction; the daemon sends `SIGCONT` once it has attached.
pub const EXEC_NOTE_HELD: u32 = 1;
/// The process exec'd a file in `HOLD`, and the kernel refused the
/// signal (it runs on).
pub const EXEC_NOTE_HOLD_FAILED: u32 = 2;

/// Return addresses in an aggregation key: up to and including the first
/// frame outside the Go runtime (the allocation site).
pub const KEY_FRAMES: usize = 8;

/// Distinct (stack prefix, type, size bucket) keys aggregated in the kernel.
pub const AGG_ENTRIES: u32 = 1 << 16;

/// Slots per CPU in the kernel's direct-mapped cache of short keys
/// ([`Slot`]): a power of two.
pub const SLOTS: u32 = 1 << SLOT_BITS;
pub const SLOT_BITS: u32 = 11;

/// Names of the maps and programs, so both sides agree.
pub mod names {
    pub const SLOTS: &str = "SLOTS";
    pub const MODE: &str = "MODE";
    pub const PROG_ALLOC_SPECIALIZED: &str = "alloc_specialized";
    pub const PROG_ALLOC_SAMPLE: &str = "alloc_sample";
    pub const EVENTS: &str = "EVENTS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const MALLOC_SET: &str = "MALLOC_SET";
    pub const RUNTIME_SET: &str = "RUNTIME_SET";
    pub const MALLOC_BITS: &str = "MALLOC_BITS";
    pub const RUNTIME_BITS: &str = "RUNTIME_BITS";
    pub const AGG: &str = "AGG";
    pub const POOL_AGG: &str = "POOL_AGG";
    pub const POOL_MISS_AGG: &str = "POOL_MISS_AGG";
    pub const LOG_ONCE: &str = "LOG_ONCE";
    pub const PROG_ALLOC: &str = "alloc_entry";
    pub const PROG_POOL: &str = "pool_probe";
    pub const PROG_NOOP: &str = "noop";
    pub const PROG_FLOOR_READ1: &str = "floor_read1";
    pub const PROG_FLOOR_READ2: &str = "floor_read2";
    pub const TARGET_TGID: &str = "TARGET_TGID";
    pub const POOL_NEW_RETURN: &str = "POOL_NEW_RETURN";
    /// arm64 only: the register of the pool at `Get`'s miss sites.
    pub const POOL_REG: &str = "POOL_REG";
}

/// What a probe's cookie asks the program to do (upper 32 bits of the cookie;
/// the lower 32 bits are the probe's index in the plan).
pub mod cookie {
    /// An allocation entry point that every allocation passes (`runtime.mallocgc`).
    pub const ALLOC_ENTRY: u32 = 1;
    /// A size-specialized entry that `runtime.mallocgc` itself may call: skip
    /// the hit when the return address lies inside a `runtime.mallocgc*` function.
    pub const ALLOC_SPECIALIZED: u32 = 2;
    /// `sync.(*Pool).Get` at its frame setup: p in RAX.
    pub const POOL_GET: u32 = 3;
    /// The indirect `CALL reg` in `Get` that calls `p.New()`: p in RCX, funcval in RDX.
    pub const POOL_NEW: u32 = 4;
    /// The path in `Get` that returns nil because `p.New` is nil: p in RCX.
    pub const POOL_NIL: u32 = 5;
    /// `sync.(*Pool).Put` at its frame setup: p in RAX, x in (RBX, RCX).
    pub const POOL_PUT: u32 = 6;
    /// `runtime.profilealloc(mp, x, size)` at its frame setup: one of the
    /// runtime's own memory-profile samples, size in RCX (sampled mode).
    pub const ALLOC_SAMPLE: u32 = 7;

    #[must_use]
    pub const fn make(kind: u32, index: u32) -> u64 {
        ((kind as u64) << 32) | index as u64
    }
    #[must_use]
    pub const fn kind(cookie: u64) -> u32 {
        (cookie >> 32) as u32
    }
    #[must_use]
    pub const fn index(cookie: u64) -> u32 {
        cookie as u32
    }
}

/// Which allocation programs count, in the one-entry `MODE` array: the
/// others return right after counting their hit. A switchable session keeps
/// both kinds of probes attached while it changes modes, and flips this.
pub mod mode {
    /// `alloc_entry` and `alloc_specialized` count; `alloc_sample` does not.
    pub const EXACT: u32 = 0;
    /// `alloc_sample` counts; the exact entries do not.
    pub const SAMPLED: u32 = 1;
}

/// Indexes into the per-CPU `COUNTERS` array.
pub mod counter {
    /// Probe hits (every time a program ran for the target).
    pub const HITS: u32 = 0;
    /// Hits skipped as nested (already counted at `runtime.mallocgc`).
    pub const NESTED: u32 = 1;
    /// Events that did not fit in the ring buffer (all kinds).
    pub const LOST: u32 = 2;
    /// `bpf_get_stack` failures (event still sent, without frames).
    pub const STACK_ERRORS: u32 = 3;
    /// Hits from another process (filtered out).
    pub const OTHER_PROCESS: u32 = 4;
    /// Allocations whose key had no room in the aggregation map (sent as
    /// single events instead).
    pub const AGG_FULL: u32 = 5;
    /// Allocations whose runtime frames were too deep for a key (sent as
    /// single events instead).
    pub const KEY_TRUNCATED: u32 = 6;
    /// Of [`LOST`], the events that only carried a new key's full stack
    /// ([`EVENT_STACK_ONLY`](crate::EVENT_STACK_ONLY)): the allocation itself
    /// was counted in the aggregation map, only the stack is missing.
    pub const LOST_STACKS: u32 = 7;
    /// `p.New()` calls nested deeper than [`MISS_NESTING`](crate::MISS_NESTING)
    /// in one goroutine, or with no room left in the miss map (their
    /// allocations are charged to the enclosing miss, or to none), and
    /// allocations during a miss made too deep below `New` to tell
    /// (not charged).
    pub const MISS_UNTRACKED: u32 = 8;
    pub const COUNT: u32 = 9;
}

/// Event kinds (the first field of every ring buffer record).
pub mod kind {
    pub const ALLOC: u32 = 1;
    pub const POOL: u32 = 2;
}

/// What identifies an allocation in the kernel's aggregation map: its type,
/// its size bucket, and the return addresses from the allocation entry up to
/// and including the first frame outside the runtime.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AggKey {
    /// `*_type` (RBX), 0 when nil.
    pub typ: u64,
    /// `frames[0]` is `[RSP]` at the probe (the return address into the caller).
    pub frames: [u64; KEY_FRAMES],
    pub nframes: u32,
    /// Power-of-two size bucket (see `size_bucket`).
    pub bucket: u32,
}

const _: () = assert!(core::mem::size_of::<AggKey>() == 80);

/// One slot of the per-CPU direct-mapped cache that counts allocations
/// whose key has at most [`SLOT_FRAMES`] frames (almost all of them) without
/// hashing a whole [`AggKey`]. A slot belongs to the first key that lands in
/// it on its CPU for the whole session (`nframes` ≠ 0 once taken); other
/// keys that land there are counted in the aggregation map instead, so every
/// allocation is counted exactly once, in a slot or in the map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slot {
    pub typ: u64,
    pub frames: [u64; SLOT_FRAMES],
    pub bucket: u32,
    /// 0 while the slot is free.
    pub nframes: u32,
    pub count: u64,
    pub bytes: u64,
}

/// Frames a [`Slot`] holds: the return address of the probed entry and,
/// when that one is in the runtime (`newobject`, `makeslice`, …), the next.
pub const SLOT_FRAMES: usize = 2;

const _: () = assert!(core::mem::size_of::<Slot>() == 48);

/// The slot of a short key: a multiplicative hash of its fields.
#[inline(always)]
#[must_use]
pub const fn slot_index(typ: u64, f0: u64, f1: u64, bucket: u32) -> u32 {
    let h = (f0 ^ f1.rotate_left(17) ^ typ.rotate_left(35) ^ bucket as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> (64 - SLOT_BITS)) as u32
}

/// Per-CPU totals of one [`AggKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AggValue {
    pub count: u64,
    pub bytes: u64,
}

const _: () = assert!(core::mem::size_of::<AggValue>() == 16);

/// The power-of-two bucket of an allocation size: 0 for sizes 0 and 1,
/// otherwise `ceil(log2(size))`, at most 47.
#[inline(always)]
#[must_use]
pub const fn size_bucket(size: u64) -> u32 {
    if size <= 1 {
        0
    } else {
        let b = 64 - (size - 1).leading_zeros();
        if b > 47 { 47 } else { b }
    }
}

/// [`AggKey::bucket`] of a sampled allocation: this bit, and the sample's
/// exact size (at most `SAMPLE_SIZE_MASK`) in the low bits, so that userspace
/// can scale each sample exactly as pprof does.
pub const SAMPLED_BIT: u32 = 1 << 31;
pub const SAMPLE_SIZE_MASK: u32 = SAMPLED_BIT - 1;

/// [`AllocEvent::flags`]: the allocation was counted in the aggregation map;
/// the event only brings the full stack of a key seen for the first time.
pub const EVENT_STACK_ONLY: u32 = 1;

/// One allocation seen at an allocation entry point: either a new key's full
/// stack ([`EVENT_STACK_ONLY`]) or an allocation the map could not hold.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AllocEvent {
    /// [`kind::ALLOC`].
    pub kind: u32,
    /// Thread group id (process id) of the allocating process.
    pub tgid: u32,
    /// The attach point's cookie.
    pub cookie: u64,
    /// Requested size in bytes (RAX).
    pub size: u64,
    /// The aggregation key (its `typ` is RBX).
    pub key: AggKey,
    /// Number of valid entries in `frames`.
    pub nframes: u32,
    /// `EVENT_STACK_ONLY` or 0.
    pub flags: u32,
    /// User stack, innermost first: `frames[0]` is the probed instruction,
    /// `frames[1]` the return address into the immediate caller.
    pub frames: [u64; MAX_FRAMES],
}

const _: () = assert!(core::mem::size_of::<AllocEvent>() == 32 + 80 + 8 * MAX_FRAMES);

/// Return addresses a pool probe records, innermost first: the caller of
/// `Get`/`Put` and its callers, so that userspace can see past forwarding
/// wrappers (a generic `(*Pool[T]).Get`, a `getBuffer()` helper).
pub const POOL_CALLERS: usize = 4;

/// One `sync.Pool` operation.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PoolEvent {
    /// [`kind::POOL`].
    pub kind: u32,
    pub tgid: u32,
    pub cookie: u64,
    /// The `*sync.Pool`.
    pub pool: u64,
    /// For `POOL_NEW`: code pointer of `p.New`; for `POOL_PUT`: the data word of `x`.
    pub arg: u64,
    /// Return addresses into the caller of `Get`/`Put` (`[RSP]` at the
    /// probe; for the miss probes inside `Get`, taken from the frame chain)
    /// and its callers, innermost first; 0 where the walk ended.
    pub callers: [u64; POOL_CALLERS],
}

const _: () = assert!(core::mem::size_of::<PoolEvent>() == 32 + 8 * POOL_CALLERS);

/// What identifies a pool operation in the kernel's pool map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub pool: u64,
    /// Return addresses into the function that called `Get`/`Put` and its
    /// callers (see [`PoolEvent::callers`]).
    pub callers: [u64; POOL_CALLERS],
    /// For `POOL_NEW`: the code pointer of `p.New`; otherwise 0.
    pub arg: u64,
    /// The probe's cookie kind (`cookie::POOL_*`).
    pub op: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<PoolKey>() == 24 + 8 * POOL_CALLERS);

/// Nested `p.New()` calls tracked per goroutine (a `New` that itself gets
/// from a pool that misses).
pub const MISS_NESTING: usize = 4;

/// The `p.New()` calls in flight in one goroutine (keyed by its `g`
/// pointer, R14), innermost last: each pool and the goroutine's stack depth
/// at the call (`g.stack.hi − RSP`, unchanged when Go copies the stack).
/// An allocation is inside a miss's `New` when `New`'s frame record (at
/// depth + 16, holding the return address into `Get`) is on its
/// frame-pointer chain; entries for which it is not are over and dropped.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MissStack {
    pub pools: [u64; MISS_NESTING],
    pub depths: [u64; MISS_NESTING],
    pub n: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<MissStack>() == 16 * MISS_NESTING + 8);

/// Goroutines with a `p.New()` call in flight, tracked at most.
pub const MISS_ENTRIES: u32 = 1 << 14;

/// Per-CPU totals of one [`PoolKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolValue {
    pub count: u64,
    /// `bpf_ktime_get_ns()` when the key was created on this CPU (0 on the
    /// other CPUs): userspace takes new keys in the order they were first
    /// seen, so that a pool is named after the function that used it first.
    pub first_ns: u64,
}

const _: () = assert!(core::mem::size_of::<PoolValue>() == 16);

/// Distinct pool keys aggregated in the kernel.
pub const POOL_ENTRIES: u32 = 1 << 14;

/// A set of code addresses as a bitmap, one bit per `1 << shift` bytes
/// from `base` (runtime addresses) for `slots` slots; the bits are in the
/// `u64` array map that goes with it (bit `i % 64` of word `i / 64`). Set as
/// a global before the programs load. Two sets: the `runtime.mallocgc*`
/// functions (a size-specialized entry whose return address falls in one
/// was called by `runtime.mallocgc` and is not counted again), and the
/// runtime's own functions (frames the aggregation key walks through).
///
/// Exact because every function starts at a multiple of the slot size (Go's
/// linker aligns functions to 32 bytes on amd64; the loader picks a smaller
/// slot when a boundary is not aligned): no slot holds code of two
/// functions. A lookup is one array read, and gives the verifier no loop
/// to explore (a bisection of a range table did, and cost it up to a second
/// per program).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddrSet {
    pub base: u64,
    pub slots: u64,
    pub shift: u64,
}

const _: () = assert!(core::mem::size_of::<AddrSet>() == 24);

impl AddrSet {
    pub const EMPTY: AddrSet = AddrSet {
        base: 0,
        slots: 0,
        shift: 0,
    };
}

/// The largest slot of an [`AddrSet`]: Go's function alignment on amd64.
pub const ADDR_SET_MAX_SHIFT: u32 = 5;

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain old data, every bit pattern is valid, no padding left implicit.
    unsafe impl aya::Pod for super::AllocEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PoolEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AddrSet {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AggKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AggValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PoolKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Slot {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::MissStack {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PoolValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ExeKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ExecFileOffsets {}
}
