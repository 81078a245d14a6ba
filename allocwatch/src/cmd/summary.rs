//! The human summary `record` prints on stderr at the end: the same
//! [`RunSummary`] that `record --json` writes, in words.

use std::io::Write;
use std::path::Path;

use crate::export::summary::{Pool, RunSummary};
use crate::format::{self, LargestUnit};
use crate::plan::Mode;

/// Prints the summary: the totals, what the tracing cost, what was lost,
/// the hottest sites, the pools, and the files written (`json`, the
/// summary's own file, last).
pub fn print(sum: &RunSummary, json: Option<&Path>) {
    let mut e = std::io::stderr().lock();
    let _ = totals(&mut e, sum);
    let _ = cost(&mut e, sum);
    let _ = losses(&mut e, sum);
    for (i, site) in sum.top_sites.iter().enumerate() {
        let _ = writeln!(
            e,
            "  {:>2}. {:>10} allocs {:>12}  {} {}:{}  {}",
            i + 1,
            site.allocs,
            bytes(site.bytes),
            site.function,
            format::short_file(&site.file, 1),
            site.line,
            site.type_name
        );
    }
    for p in &sum.pools {
        let _ = pool(&mut e, p);
    }
    for path in sum.files.iter().map(String::as_str) {
        let _ = writeln!(e, "allocwatch: wrote {path}");
    }
    if let Some(path) = json {
        let _ = writeln!(e, "allocwatch: wrote {}", path.display());
    }
}

fn bytes(b: u64) -> String {
    format::bytes_spaced(b, LargestUnit::GiB)
}

fn totals(e: &mut impl Write, sum: &RunSummary) -> std::io::Result<()> {
    let why = match (sum.stop.reason, sum.stop.detail.as_deref()) {
        ("signal", Some(sig)) => format!("{sig} received"),
        ("target_exited" | "target_replaced", Some(m)) => format!("target {m}"),
        _ => "duration reached".to_string(),
    };
    let sampled = sum.mode.initial == Mode::Sampled.name();
    writeln!(
        e,
        "allocwatch: PID {} ({}), {}, {} mode: {:.2}s ({why}): {} allocations, {} ({} bytes); events lost: {}",
        sum.target.pid,
        sum.target.exe,
        sum.target.go_version,
        if sum.mode.max_overhead_pct.is_some() {
            "exact/sampled (--max-overhead)"
        } else {
            sum.mode.initial
        },
        sum.duration_s,
        sum.totals.allocs,
        bytes(sum.totals.bytes),
        sum.totals.bytes,
        sum.events.lost
    )?;
    if sampled {
        writeln!(
            e,
            "allocwatch: sampled mode: counts and bytes are estimates scaled from the runtime's memory-profile samples (as pprof does); types are not known"
        )?;
    }
    Ok(())
}

fn cost(e: &mut impl Write, sum: &RunSummary) -> std::io::Result<()> {
    let p = &sum.probes;
    writeln!(
        e,
        "allocwatch: {} probe hits: about {:.0} ms of the target's CPU time at ~{:.0} ns per hit ({:.1}% of one core)",
        p.hits, p.estimated_cost_ms, p.cost_per_hit_ns, p.estimated_cost_pct_of_core
    )?;
    if let (Some(runs), Some(avg)) = (p.program_runs, p.program_ns_per_hit) {
        writeln!(
            e,
            "allocwatch: {runs} probe hits, {avg:.0} ns in eBPF programs per hit"
        )?;
    }
    Ok(())
}

fn losses(e: &mut impl Write, sum: &RunSummary) -> std::io::Result<()> {
    let ev = &sum.events;
    if ev.lost > 0 {
        let (uncounted, stacks) = (ev.uncounted, ev.lost_stacks);
        let what = match (uncounted, stacks) {
            (0, _) => format!("counts are exact, but {stacks} new sites lack their full stack"),
            (_, 0) => format!("{uncounted} operations were not counted: counts are low"),
            _ => format!(
                "{uncounted} operations were not counted (counts are low) and {stacks} new sites lack their full stack"
            ),
        };
        writeln!(
            e,
            "allocwatch: warning: {} events did not fit in the ring buffer: {what}",
            ev.lost
        )?;
    }
    if ev.agg_full > 0 {
        writeln!(
            e,
            "allocwatch: note: the kernel's aggregation maps were full ({} keys): {} operations were sent one by one instead",
            allocwatch_common::AGG_ENTRIES,
            ev.agg_full
        )?;
    }
    Ok(())
}

fn pool(e: &mut impl Write, p: &Pool) -> std::io::Result<()> {
    writeln!(
        e,
        "  pool {} (New: {}): gets={} hits={} misses={} nil_returns={} puts={} hit_ratio={}",
        p.name,
        p.new_func
            .as_deref()
            .unwrap_or(if p.nil_returns > 0 { "nil" } else { "?" }),
        p.gets,
        p.hits,
        p.misses,
        p.nil_returns,
        p.puts,
        format::ratio_percent(p.hit_ratio),
    )?;
    // What this pool's own misses allocated inside New (exact mode).
    match &p.miss_cost {
        Some(c) if c.allocs == 0 => {}
        Some(c) => writeln!(
            e,
            "    misses cost {} allocations, {} ({} bytes)",
            c.allocs,
            bytes(c.bytes),
            c.bytes
        )?,
        None if p.misses > 0 => writeln!(e, "    misses cost: not known (sampled mode)")?,
        None => {}
    }
    for c in &p.callers {
        writeln!(
            e,
            "    caller {} ({}:{}): gets={} misses={} nil_returns={} puts={}",
            c.function,
            format::short_file(&c.file, 1),
            c.line,
            c.gets,
            c.misses,
            c.nil_returns,
            c.puts
        )?;
    }
    Ok(())
}
