//! The uprobes attached to the target, and detaching them all at once.
//!
//! Two ways to attach, chosen once per tracer:
//! - multi-uprobe links ([`multi`], Linux ≥ 6.6, the default where the
//!   kernel has them): one link per program and role, so ~5 links hold all
//!   ~20 probes, and releasing one unregisters its probes behind a single
//!   grace-period wait;
//! - one perf-event link per probe through aya (older kernels, or
//!   `ALLOCWATCH_UPROBE_LINKS=perf`): the kernel releases those one after
//!   another (~0.1 s each, under its global `event_mutex`), whatever thread
//!   closes them.
//!
//! Either way links are closed each on a thread of its own, so that waits
//! that can overlap do, and [`Links::detach_all`] returns only when the
//! kernel has removed every probe from the target.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::thread::JoinHandle;

use allocwatch_common::cookie;
use aya::Ebpf;
use aya::programs::UProbe;
use aya::programs::uprobe::{
    UProbeAttachLocation, UProbeAttachPoint, UProbeLink, UProbeLinkId, UProbeScope,
};

use super::{BenchPrograms, load_error, multi, program_for};
use crate::error::{AppError, Result};
use crate::plan::{PlannedProbe, Program};

/// How probes are attached.
pub(super) enum Attacher {
    /// One aya perf-event link per probe.
    PerProbe,
    /// One multi-uprobe link per program and role.
    Multi(multi::Programs),
}

/// One link and what it holds.
enum Handle {
    /// A link aya keeps in its program.
    Aya {
        program: &'static str,
        id: UProbeLinkId,
    },
    Multi(OwnedFd),
}

struct Attached {
    handle: Handle,
    /// Probes the link holds.
    probes: usize,
    /// Exact-mode allocation entries (a switchable session detaches them
    /// in sampled mode).
    exact: bool,
}

/// A link taken out of its owner, detached when dropped.
enum Detachable {
    // Held only to be dropped.
    Aya(#[expect(dead_code, reason = "dropped to detach")] UProbeLink),
    Multi(#[expect(dead_code, reason = "dropped to detach")] OwnedFd),
}

/// An exact-mode allocation entry (not a sample, not a pool probe).
pub(super) fn is_exact_entry(p: &PlannedProbe) -> bool {
    p.program == Program::Alloc && cookie::kind(p.cookie) != cookie::ALLOC_SAMPLE
}

/// The attached probes of one tracer.
pub(super) struct Links {
    attacher: Attacher,
    links: Vec<Attached>,
    /// Exact-mode probes being detached in the background (after a switch
    /// to sampled mode): waited for by [`Links::detach_all`].
    detaching: Vec<JoinHandle<()>>,
}

impl Links {
    pub(super) fn new(attacher: Attacher) -> Links {
        Links {
            attacher,
            links: Vec::new(),
            detaching: Vec::new(),
        }
    }

    /// Whether probes go through multi-uprobe links.
    pub(super) fn multi(&self) -> Option<&multi::Programs> {
        match &self.attacher {
            Attacher::Multi(p) => Some(p),
            Attacher::PerProbe => None,
        }
    }

    /// Probes attached now.
    pub(super) fn count(&self) -> usize {
        self.links.iter().map(|a| a.probes).sum()
    }

    /// Attaches `probes`, in their order (a later group of a multi link
    /// comes after every earlier one: pool Gets go last).
    pub(super) fn attach(
        &mut self,
        ebpf: &mut Ebpf,
        probes: &[&PlannedProbe],
        exe: &Path,
        pid: u32,
        bench: Option<BenchPrograms>,
    ) -> Result<()> {
        match &self.attacher {
            Attacher::PerProbe => {
                for p in probes {
                    let a = attach_one(ebpf, p, exe, pid, bench)?;
                    self.links.push(a);
                }
            }
            Attacher::Multi(progs) => {
                for group in groups(probes, bench) {
                    let offsets: Vec<u64> = group.probes.iter().map(|p| p.file_offset).collect();
                    let cookies: Vec<u64> = group.probes.iter().map(|p| p.cookie).collect();
                    let fd = match progs.attach(group.program, exe, pid, &offsets, &cookies) {
                        Ok(fd) => fd,
                        Err(e) if self.links.is_empty() => {
                            // A kernel before 6.6 loads the programs but
                            // has no multi-uprobe links.
                            log::info!("multi-uprobe links unavailable ({e}): one link per probe");
                            self.attacher = Attacher::PerProbe;
                            return self.attach(ebpf, probes, exe, pid, bench);
                        }
                        Err(e) => return Err(attach_error(group.probes[0], &e)),
                    };
                    self.links.push(Attached {
                        handle: Handle::Multi(fd),
                        probes: group.probes.len(),
                        exact: group.exact,
                    });
                }
            }
        }
        Ok(())
    }

    /// Detaches the exact-mode allocation probes on a thread of their own;
    /// [`Links::detach_all`] waits for it.
    pub(super) fn detach_exact_background(&mut self, ebpf: &mut Ebpf) -> usize {
        let taken = self.take(ebpf, |a| a.exact);
        let n = taken.len();
        self.detaching.retain(|t| !t.is_finished());
        match std::thread::Builder::new()
            .name("allocwatch-detach".into())
            .spawn(move || detach_concurrently(taken))
        {
            Ok(t) => self.detaching.push(t),
            Err(e) => log::debug!("detached on this thread ({e})"),
        }
        n
    }

    /// Detaches every probe, all at once, and returns when all are gone
    /// (also those a background detach was still working on). Returns how
    /// many links were released.
    pub(super) fn detach_all(&mut self, ebpf: &mut Ebpf) -> usize {
        let taken = self.take(ebpf, |_| true);
        let n = taken.len();
        detach_concurrently(taken);
        for t in self.detaching.drain(..) {
            let _ = t.join();
        }
        n
    }

    /// Takes the links `which` selects out of their owners.
    fn take(&mut self, ebpf: &mut Ebpf, which: impl Fn(&Attached) -> bool) -> Vec<Detachable> {
        let (chosen, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.links)
            .into_iter()
            .partition(|a| which(a));
        self.links = kept;
        let mut taken = Vec::new();
        for a in chosen {
            match a.handle {
                Handle::Multi(fd) => taken.push(Detachable::Multi(fd)),
                Handle::Aya { program, id } => {
                    let prog = ebpf
                        .program_mut(program)
                        .and_then(|p| <&mut UProbe>::try_from(p).ok());
                    match prog.map(|p| p.take_link(id)) {
                        Some(Ok(l)) => taken.push(Detachable::Aya(l)),
                        Some(Err(e)) => log::debug!("taking a link of {program}: {e}"),
                        None => log::debug!("program {program} is gone"),
                    }
                }
            }
        }
        taken
    }
}

/// Probes of one multi-uprobe link.
struct Group<'a> {
    program: &'static str,
    exact: bool,
    get: bool,
    probes: Vec<&'a PlannedProbe>,
}

/// `probes` grouped by program, exact-mode role and pool Get, in the order
/// of each group's first probe.
fn groups<'a>(probes: &[&'a PlannedProbe], bench: Option<BenchPrograms>) -> Vec<Group<'a>> {
    let mut out: Vec<Group<'a>> = Vec::new();
    for p in probes {
        let program = program_for(p.program, cookie::kind(p.cookie), bench);
        let exact = is_exact_entry(p);
        let get = cookie::kind(p.cookie) == cookie::POOL_GET;
        match out
            .iter_mut()
            .find(|g| g.program == program && g.exact == exact && g.get == get)
        {
            Some(g) => g.probes.push(p),
            None => out.push(Group {
                program,
                exact,
                get,
                probes: vec![p],
            }),
        }
    }
    out
}

fn attach_error(p: &PlannedProbe, e: &dyn std::fmt::Display) -> AppError {
    AppError::env(format!(
        "cannot attach a uprobe to {}+{:#x}: {e}",
        p.function, p.offset
    ))
    .hint("the kernel needs uprobes (CONFIG_UPROBE_EVENTS) and BPF cookies (≥ 5.15)")
}

/// Loads (once) the aya program that serves `p` and attaches it there.
fn attach_one(
    ebpf: &mut Ebpf,
    p: &PlannedProbe,
    exe: &Path,
    pid: u32,
    bench: Option<BenchPrograms>,
) -> Result<Attached> {
    let name = program_for(p.program, cookie::kind(p.cookie), bench);
    let prog: &mut UProbe = ebpf
        .program_mut(name)
        .ok_or_else(|| AppError::other(format!("program {name} missing from the eBPF object")))?
        .try_into()
        .map_err(|e| load_error(&e))?;
    if prog.fd().is_err() {
        prog.load().map_err(|e| load_error(&e))?;
    }
    let point = UProbeAttachPoint {
        location: UProbeAttachLocation::AbsoluteOffset(p.file_offset),
        cookie: Some(p.cookie),
    };
    let pid = std::num::NonZeroU32::new(pid).ok_or_else(|| AppError::target("PID 0"))?;
    let id = prog
        .attach(point, exe, UProbeScope::OneProcess(pid))
        .map_err(|e| attach_error(p, &e))?;
    Ok(Attached {
        handle: Handle::Aya { program: name, id },
        probes: 1,
        exact: is_exact_entry(p),
    })
}

/// Detaches `links` all at once and returns when every one is gone: each
/// is closed on a thread of its own, as the kernel waits for grace periods
/// in the closing thread (see the module documentation).
fn detach_concurrently(links: Vec<Detachable>) {
    std::thread::scope(|scope| {
        for link in links {
            let spawned = std::thread::Builder::new()
                .name("allocwatch-detach".into())
                .spawn_scoped(scope, move || drop(link));
            if let Err(e) = spawned {
                // The link went with the failed closure: detached here.
                log::debug!("detached on this thread ({e})");
            }
        }
    });
}
