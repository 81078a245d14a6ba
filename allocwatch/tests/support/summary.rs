//! `record --json FILE`: the run's summary (docs/json-summary.md), read
//! into types that refuse unknown fields, so a field the schema does not
//! document fails the tests that read it.

use std::path::Path;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub pid: u32,
    pub exe: String,
    pub go_version: String,
    pub launched: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModeInfo {
    pub initial: String,
    pub max_overhead_pct: Option<f64>,
    pub switches: Vec<ModeSwitch>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModeSwitch {
    pub at_s: f64,
    pub to: String,
    pub cost_pct: f64,
    pub sustained_s: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stop {
    pub reason: String,
    pub detail: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    pub allocs: u64,
    pub bytes: u64,
    pub sampled_allocs: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probes {
    pub hits: u64,
    pub cost_per_hit_ns: f64,
    pub estimated_cost_ms: f64,
    pub estimated_cost_pct_of_core: f64,
    pub program_runs: Option<u64>,
    pub program_ns_per_hit: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MissCost {
    pub allocs: u64,
    pub bytes: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolCaller {
    pub function: String,
    pub file: String,
    pub line: u32,
    pub gets: u64,
    pub misses: u64,
    pub nil_returns: u64,
    pub puts: u64,
}

/// Reads and parses a `record --json` file.
pub fn read_summary(path: &Path) -> RunSummary {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}\n{text}", path.display()))
}

impl RunSummary {
    /// A caller's `[gets, misses, nil_returns, puts]` under the first pool
    /// for which `pool` holds.
    pub fn caller_counts(&self, pool: impl Fn(&Pool) -> bool, func: &str) -> Option<[u64; 4]> {
        let p = self.pools.iter().find(|p| pool(p))?;
        let c = p.callers.iter().find(|c| c.function == func)?;
        Some([c.gets, c.misses, c.nil_returns, c.puts])
    }
}
