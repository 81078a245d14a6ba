//! The `noprofile` fixture (memory profiling off: the runtime starts with
//! `MemProfileRate` 0) and the check of sampled mode's estimates on it.

use serde::Deserialize;

use super::SiteRow;

/// One allocating function of the fixture and its true counts.
#[derive(Debug, Deserialize)]
pub struct NoProfileSite {
    pub func: String,
    pub count: u64,
    pub bytes: u64,
}

/// The fixture's `result`: the rate it saw before and after its workload.
#[derive(Debug, Deserialize)]
pub struct NoProfileResult {
    pub go: String,
    pub rate_before: u64,
    pub rate_after: u64,
    pub sites: Vec<NoProfileSite>,
}

/// A program launched in sampled mode runs at 512 KiB from its start, and
/// the estimated allocations of each function (its rows in `rows`) are
/// within 10 % of the fixture's own count.
pub fn check_launched_estimates(what: &str, res: &NoProfileResult, rows: &[SiteRow]) {
    assert_eq!(res.rate_before, 524_288, "{what}: the rate at start");
    for s in &res.sites {
        let allocs: u64 = rows
            .iter()
            .filter(|r| r.function == s.func)
            .map(|r| r.allocs)
            .sum();
        #[allow(clippy::cast_precision_loss)]
        let off = (allocs as f64 - s.count as f64).abs() / s.count as f64;
        assert!(
            off <= 0.10,
            "{what}: {}: estimated {allocs}, true {}",
            s.func,
            s.count
        );
    }
}
