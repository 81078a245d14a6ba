//! `record --json FILE`: a machine-readable summary of one recording — the
//! same facts as the summary `record` prints on stderr, in the documented
//! schema of docs/json-summary.md (bump [`SCHEMA_VERSION`] on any change
//! that is not a new field).
//!
//! A pure function of a [`Snapshot`] and a [`Run`] (what the command knows
//! about the recording), so the numbers agree with the other outputs.

use std::io::{self, Write};
use std::path::PathBuf;

use serde::Serialize;

use crate::budget::Switch;
use crate::plan::Mode;
use crate::stats::{COST_PER_HIT_NS, PoolSnapshot, SiteStats, Snapshot, cost_ns, cost_pct};

/// The version of the schema written in `schema_version`.
pub const SCHEMA_VERSION: u32 = 1;

/// Why a recording stopped.
#[derive(Clone, Debug)]
pub enum Stopped {
    /// `--duration` was reached.
    Duration,
    /// SIGINT or SIGTERM (its name).
    Signal(&'static str),
    /// The target exited (how, in words: "exited with status 0").
    TargetExited(String),
    /// The target's PID now runs another program (in words).
    TargetReplaced(String),
}

/// What the command knows about a recording besides its counts.
#[derive(Clone, Debug)]
pub struct Run<'a> {
    pub pid: u32,
    pub exe: &'a str,
    pub go_version: &'a str,
    pub launched: bool,
    /// The mode tracing started in.
    pub mode: Mode,
    /// `--max-overhead`, when given, and the switches it made.
    pub max_overhead: Option<(f64, &'a [Switch])>,
    pub stopped: Stopped,
    /// Nanoseconds spent in the eBPF programs and their runs (both 0 unless
    /// the kernel's BPF statistics are on).
    pub program_run_time: (u64, u64),
    /// The files written before the summary.
    pub files: &'a [PathBuf],
    /// How many sites to list.
    pub top: usize,
}

#[derive(Debug, Serialize)]
pub struct RunSummary {
    pub schema_version: u32,
    pub target: Target,
    pub mode: ModeInfo,
    pub duration_s: f64,
    pub stop: Stop,
    pub totals: Totals,
    pub events: Events,
    pub probes: Probes,
    pub top_sites: Vec<Site>,
    pub pools: Vec<Pool>,
    pub files: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Target {
    pub pid: u32,
    pub exe: String,
    pub go_version: String,
    pub launched: bool,
}

#[derive(Debug, Serialize)]
pub struct ModeInfo {
    /// "exact" or "sampled": the mode tracing started in.
    pub initial: &'static str,
    pub max_overhead_pct: Option<f64>,
    pub switches: Vec<ModeSwitch>,
}

#[derive(Debug, Serialize)]
pub struct ModeSwitch {
    pub at_s: f64,
    pub to: &'static str,
    pub cost_pct: f64,
    pub sustained_s: f64,
}

#[derive(Debug, Serialize)]
pub struct Stop {
    /// "duration", "signal", "target_exited" or "target_replaced".
    pub reason: &'static str,
    /// The signal's name, or how the target went; `null` for "duration".
    pub detail: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Totals {
    pub allocs: u64,
    pub bytes: u64,
    pub sampled_allocs: u64,
}

#[derive(Debug, Serialize)]
pub struct Events {
    pub lost: u64,
    pub lost_stacks: u64,
    pub uncounted: u64,
    pub agg_full: u64,
    pub key_truncated: u64,
    pub other_process: u64,
    pub nested_skipped: u64,
    pub stack_errors: u64,
}

#[derive(Debug, Serialize)]
pub struct Probes {
    pub hits: u64,
    pub cost_per_hit_ns: f64,
    pub estimated_cost_ms: f64,
    pub estimated_cost_pct_of_core: f64,
    pub program_runs: Option<u64>,
    pub program_ns_per_hit: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Site {
    pub function: String,
    pub file: String,
    pub line: u32,
    #[serde(rename = "type")]
    pub type_name: String,
    pub allocs: u64,
    pub bytes: u64,
    pub sampled_allocs: u64,
}

#[derive(Debug, Serialize)]
pub struct Pool {
    pub name: String,
    pub new_func: Option<String>,
    pub gets: u64,
    pub hits: u64,
    pub misses: u64,
    pub nil_returns: u64,
    pub puts: u64,
    pub hit_ratio: Option<f64>,
    pub miss_cost: Option<MissCost>,
    pub callers: Vec<PoolCaller>,
}

#[derive(Debug, Serialize)]
pub struct MissCost {
    pub allocs: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct PoolCaller {
    pub function: String,
    pub file: String,
    pub line: u32,
    pub gets: u64,
    pub misses: u64,
    pub nil_returns: u64,
    pub puts: u64,
}

fn secs(d: std::time::Duration) -> f64 {
    d.as_secs_f64()
}

impl Stop {
    fn of(s: &Stopped) -> Stop {
        let (reason, detail) = match s {
            Stopped::Duration => ("duration", None),
            Stopped::Signal(sig) => ("signal", Some((*sig).to_string())),
            Stopped::TargetExited(m) => ("target_exited", Some(m.clone())),
            Stopped::TargetReplaced(m) => ("target_replaced", Some(m.clone())),
        };
        Stop { reason, detail }
    }
}

impl Events {
    fn of(snap: &Snapshot) -> Events {
        let c = &snap.counters;
        // A lost key stack loses no count: the kernel counted the allocation.
        let lost_stacks = c.lost_stacks.min(c.lost);
        Events {
            lost: c.lost,
            lost_stacks,
            uncounted: c.lost - lost_stacks,
            agg_full: c.agg_full,
            key_truncated: c.key_truncated,
            other_process: c.other_process,
            nested_skipped: c.nested,
            stack_errors: c.stack_errors,
        }
    }
}

impl Probes {
    fn of(snap: &Snapshot, (run_ns, runs): (u64, u64)) -> Probes {
        let hits = snap.counters.hits;
        let estimated_cost_ms = cost_ns(hits) / 1e6;
        #[expect(clippy::cast_precision_loss, reason = "an average")]
        let program_ns_per_hit = (runs > 0).then(|| run_ns as f64 / runs as f64);
        Probes {
            hits,
            cost_per_hit_ns: COST_PER_HIT_NS,
            estimated_cost_ms,
            estimated_cost_pct_of_core: cost_pct(hits, snap.elapsed),
            program_runs: (runs > 0).then_some(runs),
            program_ns_per_hit,
        }
    }
}

impl Site {
    fn of(s: &SiteStats) -> Site {
        Site {
            function: s.key.function.to_string(),
            file: s.key.file.to_string(),
            line: s.key.line,
            type_name: s.key.type_name.to_string(),
            allocs: s.allocs,
            bytes: s.bytes,
            sampled_allocs: s.sampled_allocs,
        }
    }
}

impl Pool {
    fn of(p: &PoolSnapshot) -> Pool {
        let st = &p.stats;
        Pool {
            name: p.name.to_string(),
            new_func: p.new_func.as_deref().map(str::to_string),
            gets: st.gets,
            hits: st.hits(),
            misses: st.misses,
            nil_returns: st.nil_returns,
            puts: st.puts,
            hit_ratio: st.hit_ratio(),
            miss_cost: st
                .miss_cost()
                .map(|(allocs, bytes)| MissCost { allocs, bytes }),
            callers: p
                .callers
                .iter()
                .map(|c| PoolCaller {
                    function: c.caller.function.to_string(),
                    file: c.caller.file.to_string(),
                    line: c.caller.line,
                    gets: c.stats.gets,
                    misses: c.stats.misses,
                    nil_returns: c.stats.nil_returns,
                    puts: c.stats.puts,
                })
                .collect(),
        }
    }
}

impl RunSummary {
    #[must_use]
    pub fn new(run: &Run<'_>, snap: &Snapshot) -> RunSummary {
        let (max_overhead_pct, switches) = match run.max_overhead {
            Some((pct, sw)) => (Some(pct), sw),
            None => (None, &[][..]),
        };
        RunSummary {
            schema_version: SCHEMA_VERSION,
            target: Target {
                pid: run.pid,
                exe: run.exe.to_string(),
                go_version: run.go_version.to_string(),
                launched: run.launched,
            },
            mode: ModeInfo {
                initial: run.mode.name(),
                max_overhead_pct,
                switches: switches
                    .iter()
                    .map(|s| ModeSwitch {
                        at_s: secs(s.at),
                        to: s.to.name(),
                        cost_pct: s.cost_pct,
                        sustained_s: secs(s.sustained),
                    })
                    .collect(),
            },
            duration_s: secs(snap.elapsed),
            stop: Stop::of(&run.stopped),
            totals: Totals {
                allocs: snap.total_allocs,
                bytes: snap.total_bytes,
                sampled_allocs: snap.sites.iter().map(|s| s.sampled_allocs).sum(),
            },
            events: Events::of(snap),
            probes: Probes::of(snap, run.program_run_time),
            top_sites: snap
                .sites_by_bytes()
                .into_iter()
                .take(run.top)
                .map(Site::of)
                .collect(),
            pools: snap.pools.iter().map(Pool::of).collect(),
            files: run.files.iter().map(|p| p.display().to_string()).collect(),
        }
    }

    /// Writes the summary as pretty-printed JSON and a newline.
    ///
    /// # Errors
    /// Those of `w`.
    pub fn write(&self, w: &mut impl Write) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut *w, self)?;
        writeln!(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::test_support::{frame, site, snapshot};

    fn run(files: &[PathBuf]) -> Run<'_> {
        Run {
            pid: 42,
            exe: "/srv/app",
            go_version: "go1.27.3",
            launched: false,
            mode: Mode::Exact,
            max_overhead: None,
            stopped: Stopped::Duration,
            program_run_time: (0, 0),
            files,
            top: 1,
        }
    }

    #[test]
    fn schema_fields_and_top_sites() {
        let mut snap = snapshot(
            2,
            vec![
                site("main.a", 10, "main.T", 5, 120, vec![frame("main.a", 10)]),
                site("main.b", 20, "[]uint8", 1, 4096, vec![frame("main.b", 20)]),
            ],
        );
        snap.counters.hits = 2_000_000;
        snap.counters.lost = 4;
        snap.counters.agg_full = 3;
        snap.counters.key_truncated = 1;
        snap.counters.lost_stacks = 9;
        let files = [PathBuf::from("sites.csv")];
        let v = serde_json::to_value(RunSummary::new(&run(&files), &snap)).unwrap();
        assert_eq!(v["schema_version"], 1);
        assert_eq!(v["target"]["pid"], 42);
        assert_eq!(v["mode"]["initial"], "exact");
        assert_eq!(v["mode"]["max_overhead_pct"], serde_json::Value::Null);
        assert_eq!(v["stop"]["reason"], "duration");
        assert_eq!(v["totals"]["allocs"], 6);
        assert_eq!(v["totals"]["bytes"], 4216);
        // Lost stacks never exceed lost events.
        assert_eq!(v["events"]["lost_stacks"], 4);
        assert_eq!(v["events"]["uncounted"], 0);
        assert_eq!(v["events"]["agg_full"], 3);
        // 2e6 hits × 1050 ns = 2100 ms over 2 s = 105 % of one core.
        assert_eq!(v["probes"]["estimated_cost_ms"], 2100.0);
        assert_eq!(v["probes"]["estimated_cost_pct_of_core"], 105.0);
        assert_eq!(v["top_sites"].as_array().unwrap().len(), 1);
        assert_eq!(v["top_sites"][0]["function"], "main.b");
        assert_eq!(v["top_sites"][0]["type"], "[]uint8");
        assert_eq!(v["files"][0], "sites.csv");
    }
}
