//! Multi-uprobe links (`BPF_TRACE_UPROBE_MULTI`, Linux ≥ 6.6): one link
//! holds every probe of one program, and releasing it unregisters them all
//! behind a single wait for the kernel's grace periods.
//!
//! Why: a uprobe attached the classic way (one perf event per probe, as
//! aya's `UProbe::attach` does) is released under the kernel's global
//! `event_mutex`, held across the grace periods that follow each
//! unregistration: ~0.1 s per probe, one after another, whichever threads
//! close them (docs/benchmarks.md). aya 0.14 cannot create multi-uprobe
//! links (the program must be loaded with the expected attach type
//! `BPF_TRACE_UPROBE_MULTI`), so this module loads the programs itself from
//! the same object — relocated by aya-obj against the maps aya created —
//! and creates the links with `BPF_LINK_CREATE`.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use aya::Ebpf;
use aya::maps::Map;
use aya_obj::generated::{
    bpf_attach_type, bpf_attr, bpf_cmd, bpf_insn, bpf_prog_info, bpf_prog_type,
};

/// Runs one `bpf(2)` command that returns a new file descriptor.
fn sys_bpf_fd(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<OwnedFd> {
    let r = sys_bpf(cmd, attr)?;
    let fd = RawFd::try_from(r).map_err(io::Error::other)?;
    // SAFETY: the command returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a zero-initialised bpf_attr filled in for `cmd`;
    // every pointer in it outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            std::ptr::from_mut(attr),
            size_of::<bpf_attr>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn zeroed_attr() -> bpf_attr {
    // SAFETY: bpf_attr is a C union of integers, valid when zeroed (the
    // kernel requires unused fields to be zero).
    unsafe { std::mem::zeroed() }
}

/// The file descriptor of one of aya's maps.
fn map_fd(m: &Map) -> RawFd {
    let data = match m {
        Map::Array(d)
        | Map::ArrayOfMaps(d)
        | Map::BloomFilter(d)
        | Map::CgroupArray(d)
        | Map::CgroupStorage(d)
        | Map::CgrpStorage(d)
        | Map::CpuMap(d)
        | Map::DevMap(d)
        | Map::DevMapHash(d)
        | Map::HashMap(d)
        | Map::HashOfMaps(d)
        | Map::InodeStorage(d)
        | Map::LpmTrie(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuCgroupStorage(d)
        | Map::PerCpuHashMap(d)
        | Map::PerCpuLruHashMap(d)
        | Map::PerfEventArray(d)
        | Map::ProgramArray(d)
        | Map::Queue(d)
        | Map::ReusePortSockArray(d)
        | Map::RingBuf(d)
        | Map::SockHash(d)
        | Map::SockMap(d)
        | Map::SkStorage(d)
        | Map::Stack(d)
        | Map::StackTraceMap(d)
        | Map::Unsupported(d)
        | Map::XskMap(d) => d,
    };
    data.fd().as_fd().as_raw_fd()
}

/// Programs loaded for multi-uprobe links, by name.
pub(super) struct Programs(HashMap<&'static str, OwnedFd>);

impl Programs {
    /// Loads the programs `names` of `object` for multi-uprobe links, with
    /// their map references pointing at the maps of `ebpf` (which aya
    /// created from the same object, globals set). Call it before any map
    /// is taken out of `ebpf`.
    pub(super) fn load(ebpf: &Ebpf, object: &[u8], names: &[&'static str]) -> Result<Self, String> {
        let mut obj = aya_obj::Object::parse(object).map_err(|e| e.to_string())?;
        if obj.has_btf_relocations() {
            return Err("the object needs BTF relocations".into());
        }
        let fds: HashMap<&str, RawFd> = ebpf.maps().map(|(n, m)| (n, map_fd(m))).collect();
        let maps: Vec<(String, RawFd, aya_obj::Map)> = obj
            .maps
            .iter()
            .filter_map(|(n, m)| Some((n.clone(), *fds.get(n.as_str())?, m.clone())))
            .collect();
        let text: HashSet<usize> = obj.functions.keys().map(|(s, _)| *s).collect();
        obj.relocate_maps(maps.iter().map(|(n, fd, m)| (n.as_str(), *fd, m)), &text)
            .map_err(|e| e.to_string())?;
        obj.relocate_calls(&text).map_err(|e| e.to_string())?;
        let mut progs = HashMap::new();
        for &name in names {
            if progs.contains_key(name) {
                continue;
            }
            let p = obj
                .programs
                .get(name)
                .ok_or_else(|| format!("program {name} missing from the object"))?;
            let f = obj
                .functions
                .get(&p.function_key())
                .ok_or_else(|| format!("code of {name} missing from the object"))?;
            let fd = load_program(name, &f.instructions, &p.license)
                .map_err(|e| format!("loading {name}: {e}"))?;
            progs.insert(name, fd);
        }
        Ok(Programs(progs))
    }

    /// Attaches program `name` at `offsets` (file offsets in `exe`, one
    /// cookie each) for process `pid` only: one link.
    pub(super) fn attach(
        &self,
        name: &str,
        exe: &Path,
        pid: u32,
        offsets: &[u64],
        cookies: &[u64],
    ) -> io::Result<OwnedFd> {
        let prog = self
            .0
            .get(name)
            .ok_or_else(|| io::Error::other(format!("program {name} not loaded")))?;
        attach(prog.as_fd(), exe, pid, offsets, cookies)
    }

    /// Total run time (ns) and runs of the programs, as the kernel's
    /// statistics count them.
    pub(super) fn run_time(&self) -> (u64, u64) {
        let mut total = (0, 0);
        for fd in self.0.values() {
            if let Ok(info) = prog_info(fd.as_fd()) {
                total.0 += info.run_time_ns;
                total.1 += info.run_cnt;
            }
        }
        total
    }
}

/// `BPF_PROG_LOAD` of a kprobe-type program for multi-uprobe links; on
/// failure, the error carries the end of the verifier's log.
fn load_program(name: &str, insns: &[bpf_insn], license: &CString) -> io::Result<OwnedFd> {
    let load = |log: &mut [u8]| {
        let mut attr = zeroed_attr();
        // SAFETY: the union's BPF_PROG_LOAD member; the attr is zeroed.
        let u = unsafe { &mut attr.__bindgen_anon_3 };
        u.prog_type = bpf_prog_type::BPF_PROG_TYPE_KPROBE as u32;
        u.expected_attach_type = bpf_attach_type::BPF_TRACE_UPROBE_MULTI as u32;
        u.insns = insns.as_ptr() as u64;
        u.insn_cnt = u32::try_from(insns.len()).unwrap_or(u32::MAX);
        u.license = license.as_ptr() as u64;
        for (d, s) in u.prog_name.iter_mut().zip(name.bytes().take(15)) {
            *d = s as libc::c_char;
        }
        if !log.is_empty() {
            u.log_level = 1;
            u.log_buf = log.as_mut_ptr() as u64;
            u.log_size = u32::try_from(log.len()).unwrap_or(u32::MAX);
        }
        sys_bpf_fd(bpf_cmd::BPF_PROG_LOAD, &mut attr)
    };
    load(&mut []).or_else(|e| {
        let mut log = vec![0u8; 1 << 20];
        load(&mut log).map_err(|_| {
            let text = String::from_utf8_lossy(&log);
            let text = text.trim_end_matches('\0');
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            io::Error::new(
                e.kind(),
                format!(
                    "{e}; verifier: {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
                ),
            )
        })
    })
}

/// `BPF_LINK_CREATE` of one multi-uprobe link.
fn attach(
    prog: BorrowedFd<'_>,
    exe: &Path,
    pid: u32,
    offsets: &[u64],
    cookies: &[u64],
) -> io::Result<OwnedFd> {
    assert_eq!(offsets.len(), cookies.len(), "one cookie per offset");
    let path = CString::new(exe.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut attr = zeroed_attr();
    // SAFETY: the union's BPF_LINK_CREATE member; the attr is zeroed.
    let l = unsafe { &mut attr.link_create };
    l.__bindgen_anon_1.prog_fd = prog.as_raw_fd().cast_unsigned();
    l.attach_type = bpf_attach_type::BPF_TRACE_UPROBE_MULTI as u32;
    // SAFETY: as above, its uprobe_multi member.
    let m = unsafe { &mut l.__bindgen_anon_3.uprobe_multi };
    m.path = path.as_ptr() as u64;
    m.offsets = offsets.as_ptr() as u64;
    m.cookies = cookies.as_ptr() as u64;
    m.cnt = u32::try_from(offsets.len()).map_err(io::Error::other)?;
    m.pid = pid;
    sys_bpf_fd(bpf_cmd::BPF_LINK_CREATE, &mut attr)
}

/// `BPF_OBJ_GET_INFO_BY_FD` of a program.
fn prog_info(prog: BorrowedFd<'_>) -> io::Result<bpf_prog_info> {
    // SAFETY: bpf_prog_info is plain integers, valid when zeroed.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = zeroed_attr();
    // SAFETY: the union's BPF_OBJ_GET_INFO_BY_FD member; the attr is zeroed.
    let u = unsafe { &mut attr.info };
    u.bpf_fd = prog.as_raw_fd().cast_unsigned();
    u.info_len = u32::try_from(size_of::<bpf_prog_info>()).unwrap_or(u32::MAX);
    u.info = std::ptr::from_mut(&mut info) as u64;
    sys_bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(info)
}
