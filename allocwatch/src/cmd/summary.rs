//! The human summary `record` prints on stderr at the end.

use std::io::Write;
use std::path::PathBuf;

use super::COST_PER_HIT_NS;
use crate::format::{self, LargestUnit};
use crate::runloop::Stop;
use crate::session::Session;
use crate::stats::{PoolSnapshot, Snapshot};
use crate::target::Gone;

/// Prints the summary: the totals, what the tracing cost, what was lost,
/// the `top` hottest sites, the pools, and the files written.
pub fn print(s: &Session, snap: &Snapshot, stop: &Stop, written: &[PathBuf], top: usize) {
    let mut e = std::io::stderr().lock();
    let _ = totals(&mut e, s, snap, stop);
    let _ = cost(&mut e, s, snap);
    let _ = losses(&mut e, snap);
    for (i, site) in snap.sites_by_bytes().iter().take(top).enumerate() {
        let _ = writeln!(
            e,
            "  {:>2}. {:>10} allocs {:>12}  {} {}:{}  {}",
            i + 1,
            site.allocs,
            format::bytes_spaced(site.bytes, LargestUnit::GiB),
            site.key.function,
            format::short_file(&site.key.file, 1),
            site.key.line,
            site.key.type_name
        );
    }
    for p in &snap.pools {
        let _ = pool(&mut e, p);
    }
    for path in written {
        let _ = writeln!(e, "allocwatch: wrote {}", path.display());
    }
}

fn totals(e: &mut impl Write, s: &Session, snap: &Snapshot, stop: &Stop) -> std::io::Result<()> {
    let why = match stop {
        Stop::Duration => "duration reached".to_string(),
        Stop::Signal(sig) => format!("{sig} received"),
        Stop::Target(Gone::Exited(m) | Gone::Replaced(m)) => format!("target {m}"),
    };
    writeln!(
        e,
        "allocwatch: PID {} ({}), {}, {} mode: {:.2}s ({why}): {} allocations, {} ({} bytes); events lost: {}",
        s.target.pid,
        s.target.exe_display,
        s.plan.go_version,
        if s.plan.switchable {
            "exact/sampled (--max-overhead)"
        } else {
            s.plan.mode.name()
        },
        snap.elapsed.as_secs_f64(),
        snap.total_allocs,
        format::bytes_spaced(snap.total_bytes, LargestUnit::GiB),
        snap.total_bytes,
        snap.counters.lost
    )?;
    if s.plan.mode == crate::plan::Mode::Sampled {
        writeln!(
            e,
            "allocwatch: sampled mode: counts and bytes are estimates scaled from the runtime's memory-profile samples (as pprof does); types are not known"
        )?;
    }
    Ok(())
}

fn cost(e: &mut impl Write, s: &Session, snap: &Snapshot) -> std::io::Result<()> {
    let cost_ms = crate::stats::cost_ns(snap.counters.hits) / 1e6;
    writeln!(
        e,
        "allocwatch: {} probe hits: about {cost_ms:.0} ms of the target's CPU time at ~{COST_PER_HIT_NS:.0} ns per hit ({:.1}% of one core)",
        snap.counters.hits,
        crate::stats::cost_pct(snap.counters.hits, snap.elapsed)
    )?;
    let (run_ns, runs) = s.program_run_time();
    if runs > 0 {
        #[expect(clippy::cast_precision_loss, reason = "display")]
        let avg = run_ns as f64 / runs as f64;
        writeln!(
            e,
            "allocwatch: {runs} probe hits, {avg:.0} ns in eBPF programs per hit"
        )?;
    }
    Ok(())
}

fn losses(e: &mut impl Write, snap: &Snapshot) -> std::io::Result<()> {
    let fb = snap.counters;
    if snap.counters.lost > 0 {
        // A lost key stack loses no count: the kernel counted the allocation.
        let stacks = fb.lost_stacks.min(snap.counters.lost);
        let uncounted = snap.counters.lost - stacks;
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
            snap.counters.lost
        )?;
    }
    if fb.agg_full > 0 {
        writeln!(
            e,
            "allocwatch: note: the kernel's aggregation maps were full ({} keys): {} operations were sent one by one instead",
            allocwatch_common::AGG_ENTRIES,
            fb.agg_full
        )?;
    }
    Ok(())
}

fn pool(e: &mut impl Write, p: &PoolSnapshot) -> std::io::Result<()> {
    let st = &p.stats;
    writeln!(
        e,
        "  pool {} (New: {}): gets={} hits={} misses={} nil_returns={} puts={} hit_ratio={}",
        p.name,
        p.new_func
            .as_deref()
            .unwrap_or(if st.nil_returns > 0 { "nil" } else { "?" }),
        st.gets,
        st.hits(),
        st.misses,
        st.nil_returns,
        st.puts,
        format::ratio_percent(st.hit_ratio()),
    )?;
    // What this pool's own misses allocated inside New (exact mode).
    match st.miss_cost() {
        Some((0, _)) => {}
        Some((n, b)) => writeln!(
            e,
            "    misses cost {n} allocations, {} ({b} bytes)",
            format::bytes_spaced(b, LargestUnit::GiB)
        )?,
        None if st.misses > 0 => writeln!(e, "    misses cost: not known (sampled mode)")?,
        None => {}
    }
    for c in &p.callers {
        let cs = &c.stats;
        writeln!(
            e,
            "    caller {} ({}:{}): gets={} misses={} nil_returns={} puts={}",
            c.caller.function,
            format::short_file(&c.caller.file, 1),
            c.caller.line,
            cs.gets,
            cs.misses,
            cs.nil_returns,
            cs.puts
        )?;
    }
    Ok(())
}
