//! `allocwatch inspect`: what allocwatch would attach to a Go executable,
//! and why.

use std::io::Write;

use super::{init_stderr_log, output};
use crate::cli::InspectArgs;
use crate::error::{AppError, Result};
use crate::plan::{self, PlanOptions, ProbePlan};
use crate::session;

/// `allocwatch inspect`.
///
/// # Errors
/// When the executable cannot be read or planned for, or stdout cannot be
/// written.
pub fn inspect(a: &InspectArgs, verbose: u8) -> Result<()> {
    init_stderr_log(verbose);
    let (path, what) = match (&a.binary, a.pid) {
        (_, Some(pid)) => {
            let t = crate::target::Target::from_pid(pid)?;
            (t.exe.clone(), format!("PID {pid} ({})", t.exe_display))
        }
        (Some(p), None) => (p.clone(), p.display().to_string()),
        (None, None) => return Err(AppError::usage("give a Go executable or --pid PID")),
    };
    let bin = session::open_binary(&path, &what)?;
    let plan = plan::plan(
        &bin,
        PlanOptions {
            pools: !a.no_pools,
            mode: a.mode,
            switchable: false,
        },
    )
    .map_err(|e| AppError::target(format!("{what}: cannot plan probes: {e}")))?;
    output::print(|out| {
        if a.json {
            // An I/O error keeps its kind (a closed pipe is not an error).
            serde_json::to_writer_pretty(&mut *out, &plan).map_err(std::io::Error::from)?;
            writeln!(out)
        } else {
            print_plan(out, &what, &plan)
        }
    })
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn print_plan(out: &mut dyn Write, what: &str, p: &ProbePlan) -> std::io::Result<()> {
    writeln!(out, "target:        {what}")?;
    writeln!(out, "go version:    {}", p.go_version)?;
    match p.mem_profile_rate_addr {
        Some(a) => writeln!(
            out,
            "mode:          {} (runtime.MemProfileRate at {a:#x})",
            p.mode.name()
        )?,
        None => writeln!(out, "mode:          {}", p.mode.name())?,
    }
    if p.memory_profiling_disabled == Some(true) {
        writeln!(
            out,
            "memory profiling: off (the program never references runtime.MemProfile); tracing sets runtime.MemProfileRate for the session"
        )?;
    }
    writeln!(
        out,
        "stripped: {}   PIE: {}   external linking: {}   PGO: {}",
        yes(p.stripped),
        yes(p.pie),
        yes(p.external_link),
        yes(p.pgo)
    )?;
    let n_spec = p
        .probes
        .iter()
        .filter(|x| x.role.starts_with("alloc ("))
        .count();
    writeln!(
        out,
        "size-specialized malloc: {}",
        if p.size_specialized_malloc {
            format!("yes ({n_spec} entries)")
        } else {
            "no".into()
        }
    )?;
    match &p.pools {
        crate::plan::PoolTracing::Enabled => writeln!(out, "sync.Pool tracing: enabled")?,
        crate::plan::PoolTracing::Disabled(r) => {
            writeln!(out, "sync.Pool tracing: disabled ({r})")?
        }
    }
    writeln!(out, "probes ({}):", p.probes.len())?;
    writeln!(
        out,
        "  {:<40} {:>7} {:>12}  {:<36} ROLE",
        "FUNCTION", "OFFSET", "FILE OFFSET", "PLACEMENT"
    )?;
    for pr in &p.probes {
        writeln!(
            out,
            "  {:<40} {:>7} {:>12}  {:<36} {}",
            pr.function,
            format!("+{:#x}", pr.offset),
            format!("{:#x}", pr.file_offset),
            pr.placement,
            pr.role
        )?;
    }
    for w in &p.warnings {
        writeln!(out, "warning: {w}")?;
    }
    Ok(())
}
