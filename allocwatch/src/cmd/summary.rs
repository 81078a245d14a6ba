//! The human summary `record` prints on stderr at the end.

use std::io::Write;
use std::path::PathBuf;

use super::COST_PER_HIT_NS;
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
    let _ = losses(&mut e, s, snap);
    for (i, site) in snap.sites_by_bytes().iter().take(top).enumerate() {
        let _ = writeln!(
            e,
            "  {:>2}. {:>10} allocs {:>12}  {} {}:{}  {}",
            i + 1,
            site.allocs,
            human_bytes(site.bytes),
            site.key.function,
            short_file(&site.key.file),
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
        human_bytes(snap.total_bytes),
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
    let secs = snap.elapsed.as_secs_f64();
    #[expect(clippy::cast_precision_loss, reason = "display")]
    let cost_ms = snap.counters.hits as f64 * COST_PER_HIT_NS / 1e6;
    writeln!(
        e,
        "allocwatch: {} probe hits: about {cost_ms:.0} ms of the target's CPU time at ~{COST_PER_HIT_NS:.0} ns per hit ({:.1}% of one core)",
        snap.counters.hits,
        if secs > 0.0 {
            cost_ms / 10.0 / secs
        } else {
            0.0
        }
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

fn losses(e: &mut impl Write, s: &Session, snap: &Snapshot) -> std::io::Result<()> {
    let fb = s.fallbacks();
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
        st.hit_ratio()
            .map_or_else(|| "-".into(), |r| format!("{:.1}%", r * 100.0)),
    )?;
    // What this pool's own misses allocated inside New (exact mode).
    match st.miss_cost() {
        Some((0, _)) => {}
        Some((n, b)) => writeln!(
            e,
            "    misses cost {n} allocations, {} ({b} bytes)",
            human_bytes(b)
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
            short_file(&c.caller.file),
            c.caller.line,
            cs.gets,
            cs.misses,
            cs.nil_returns,
            cs.puts
        )?;
    }
    Ok(())
}

fn human_bytes(b: u64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "display")]
    let v = b as f64;
    match b {
        0..1024 => format!("{b} B"),
        1024..1_048_576 => format!("{:.1} KiB", v / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", v / 1_048_576.0),
        _ => format!("{:.2} GiB", v / 1_073_741_824.0),
    }
}

fn short_file(f: &str) -> &str {
    f.rsplit('/').next().unwrap_or(f)
}
