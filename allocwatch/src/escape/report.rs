//! The text report of `allocwatch explain`: the module's hottest sites with
//! the compiler's reasons, the suggestions, and the pools.

use std::io::{self, Write};

use super::index::SiteLookup;
use super::runner::Analysis;
use super::suggest::{SiteFacts, pool_advice, site_suggestions};
use crate::format::{self, LargestUnit};
use crate::stats::{SiteStats, Snapshot};

/// The facts suggestions need about a site of `snap`.
#[must_use]
pub fn facts<'a>(s: &'a SiteStats, snap: &Snapshot) -> SiteFacts<'a> {
    SiteFacts {
        type_name: &s.key.type_name,
        allocs: s.allocs,
        bytes: s.bytes,
        allocs_per_s: snap.per_s(s.allocs),
        from_pool: s.pool_new_func.is_some(),
    }
}

/// Source mismatches among the sites of `snap`: (count, first example).
#[must_use]
pub fn mismatches(a: &Analysis, snap: &Snapshot) -> (usize, Option<String>) {
    let mut n = 0;
    let mut first = None;
    for s in snap.sites_by_bytes() {
        if let SiteLookup::Mismatch(why) = a.index.lookup(&s.key) {
            n += 1;
            if first.is_none() {
                first = Some(format!(
                    "{} at {}:{}: {why}",
                    s.key.function, s.key.file, s.key.line
                ));
            }
        }
    }
    (n, first)
}

/// The warning about sites that do not line up with the source, if any.
#[must_use]
pub fn mismatch_warning(a: &Analysis, snap: &Snapshot) -> Option<String> {
    let (n, first) = mismatches(a, snap);
    let first = first?;
    Some(format!(
        "the target does not match the source in {}: {n} site{} do not line up (e.g. {first}); was the source edited, or the binary built from another revision? Those sites get no reason",
        a.index.root().display(),
        if n == 1 { "" } else { "s" }
    ))
}

/// Writes the report. `what` describes the trace (target, duration).
///
/// # Errors
/// When writing fails.
pub fn write_report(
    out: &mut impl Write,
    a: &Analysis,
    snap: &Snapshot,
    what: &str,
    top: usize,
) -> io::Result<()> {
    write_header(out, a, snap, what)?;
    let sites = snap.sites_by_bytes();
    let mut module_sites = Vec::new();
    let (mut outside, mut outside_bytes) = (0usize, 0u64);
    for s in &sites {
        match a.index.lookup(&s.key) {
            SiteLookup::Outside => {
                outside += 1;
                outside_bytes += s.bytes;
            }
            l => module_sites.push((*s, l)),
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "Heap allocation sites in the module, by bytes ({} of {}):",
        module_sites.len().min(top),
        module_sites.len()
    )?;
    let mut suggestions = Suggestions::default();
    for (i, (s, l)) in module_sites.iter().enumerate() {
        let f = facts(s, snap);
        let esc = match l {
            SiteLookup::Found(e) => Some(e.as_ref()),
            _ => None,
        };
        let sug = site_suggestions(esc, &f);
        suggestions.add(s, &sug);
        if i < top {
            write_site(out, i + 1, s, l, snap, &sug)?;
        }
    }
    if outside > 0 {
        writeln!(out)?;
        writeln!(
            out,
            "{outside} site{} outside the module (standard library, dependencies: {} of all bytes) get no reason: the analysis covers {} only.",
            if outside == 1 { "" } else { "s" },
            {
                format!(
                    "{:.0}%",
                    100.0 * outside_bytes as f64 / snap.total_bytes.max(1) as f64
                )
            },
            a.index.root().display()
        )?;
    }
    suggestions.write(out, snap, top)?;
    write_pools(out, snap)
}

/// The trace and the analysis in two lines, then warnings and notes.
fn write_header(out: &mut impl Write, a: &Analysis, snap: &Snapshot, what: &str) -> io::Result<()> {
    writeln!(
        out,
        "{what}: {:.1}s traced, {} allocations, {}",
        snap.elapsed.as_secs_f64(),
        snap.total_allocs,
        format::bytes_spaced(snap.total_bytes, LargestUnit::GiB)
    )?;
    writeln!(
        out,
        "escape analysis: {} ({}: {}) compiled {} in {} with -gcflags=-m=2 in {:.1}s: {} heap decisions in the module",
        a.toolchain.version,
        a.toolchain.origin,
        a.toolchain.go.display(),
        a.package,
        a.index.root().display(),
        a.took.as_secs_f64(),
        a.index.heap_decisions()
    )?;
    let mut warnings = a.warnings.clone();
    warnings.extend(mismatch_warning(a, snap));
    for w in &warnings {
        writeln!(out, "warning: {w}")?;
    }
    for n in &a.notes {
        writeln!(out, "note: {n}")?;
    }
    Ok(())
}

/// One site of the module: where, how much, why, and its suggestions.
fn write_site(
    out: &mut impl Write,
    rank: usize,
    s: &SiteStats,
    l: &SiteLookup,
    snap: &Snapshot,
    sug: &[String],
) -> io::Result<()> {
    let f = facts(s, snap);
    writeln!(out)?;
    writeln!(
        out,
        "{:>3}. {}  {}:{}  {}",
        rank,
        s.key.function,
        format::short_file(&s.key.file, 2),
        s.key.line,
        s.key.type_name
    )?;
    writeln!(
        out,
        "     {} allocations ({}/s), {} ({}/s), avg {}",
        s.allocs,
        f.allocs_per_s
            .map_or_else(|| "-".into(), |r| format!("{r:.0}")),
        format::bytes_spaced(s.bytes, LargestUnit::GiB),
        snap.per_s(s.bytes).map_or_else(
            || "-".into(),
            |r| format::bytes_spaced(r as u64, LargestUnit::GiB),
        ),
        format::bytes_spaced(s.bytes / s.allocs.max(1), LargestUnit::GiB)
    )?;
    if let Some(p) = &s.pool_new_func {
        writeln!(
            out,
            "     allocated by the New function {p} of a sync.Pool (pool misses)"
        )?;
    }
    write_why(out, l)?;
    for x in sug {
        writeln!(out, "     {x}")?;
    }
    Ok(())
}

/// Why a site of the module is on the heap (or why that is not known).
fn write_why(out: &mut impl Write, l: &SiteLookup) -> io::Result<()> {
    match l {
        SiteLookup::Found(e) => {
            writeln!(out, "     why: {}", e.cause().label())?;
            for line in e.lines() {
                writeln!(out, "       {line}")?;
            }
        }
        SiteLookup::Unknown => writeln!(
            out,
            "     why: the compiler reported no heap decision on this line (append growth, map inserts and runtime-internal allocations have none)"
        )?,
        SiteLookup::Runtime => writeln!(
            out,
            "     why: not an escape: the Go runtime allocated one of its own objects (a goroutine, a thread, a stack trace buffer) while this line ran"
        )?,
        SiteLookup::Mismatch(why) => {
            writeln!(
                out,
                "     why: unknown: the binary does not match the source here: {why}"
            )?;
        }
        SiteLookup::Outside => {}
    }
    Ok(())
}

/// Each suggestion's text with the (bytes, site) of the sites it applies
/// to, in the order first seen.
#[derive(Default)]
struct Suggestions(Vec<(String, Vec<(u64, String)>)>);

impl Suggestions {
    fn add(&mut self, s: &SiteStats, sug: &[String]) {
        for x in sug {
            let text = x.trim_start_matches("suggestion: ").to_string();
            let site = format!(
                "{} {}:{} ({})",
                s.key.function,
                format::short_file(&s.key.file, 2),
                s.key.line,
                s.key.type_name
            );
            match self.0.iter_mut().find(|(t, _)| *t == text) {
                Some((_, v)) => v.push((s.bytes, site)),
                None => self.0.push((text, vec![(s.bytes, site)])),
            }
        }
    }

    /// The pools' advice, then the `top` suggestions about the most bytes.
    fn write(mut self, out: &mut impl Write, snap: &Snapshot, top: usize) -> io::Result<()> {
        const SHOWN: usize = 6;
        let pool_lines: Vec<String> = snap
            .pools
            .iter()
            .filter_map(pool_advice)
            .map(|adv| adv.trim_start_matches("suggestion: ").to_string())
            .collect();
        self.0
            .sort_by_key(|(_, v)| std::cmp::Reverse(v.iter().map(|x| x.0).sum::<u64>()));
        writeln!(out)?;
        writeln!(out, "Suggestions (allocwatch's, not the compiler's):")?;
        if self.0.is_empty() && pool_lines.is_empty() {
            writeln!(out, "  none")?;
        }
        for p in &pool_lines {
            writeln!(out, "  - {p}")?;
        }
        for (text, sites) in self.0.iter().take(top) {
            let mut names: Vec<&str> = sites.iter().take(SHOWN).map(|x| x.1.as_str()).collect();
            let more = format!("and {} more", sites.len().saturating_sub(SHOWN));
            if sites.len() > SHOWN {
                names.push(&more);
            }
            writeln!(out, "  - {}: {text}", names.join(", "))?;
        }
        Ok(())
    }
}

/// Every pool's counters, and its callers'.
fn write_pools(out: &mut impl Write, snap: &Snapshot) -> io::Result<()> {
    if snap.pools.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    writeln!(out, "Pools:")?;
    for p in &snap.pools {
        let st = &p.stats;
        writeln!(
            out,
            "  {} (New: {}): gets {}, hits {}, misses {}, nil returns {}, puts {}, hit ratio {}",
            p.name,
            p.new_func.as_deref().unwrap_or("none"),
            st.gets,
            st.hits(),
            st.misses,
            st.nil_returns,
            st.puts,
            format::ratio_percent(st.hit_ratio())
        )?;
        for c in &p.callers {
            writeln!(
                out,
                "    {} ({}:{}): gets {}, misses {}, puts {}",
                c.caller.function,
                format::short_file(&c.caller.file, 2),
                c.caller.line,
                c.stats.gets,
                c.stats.misses,
                c.stats.puts
            )?;
        }
    }
    Ok(())
}
