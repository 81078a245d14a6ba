//! Writing recordings to files: CSV tables of sites and pools (whole run, or
//! one row per window with `record --interval`), pprof profiles, folded
//! stacks, flame graphs, speedscope files, and the JSON summary of a
//! recording (`summary`).
//!
//! Every writer is a pure function of a [`Snapshot`](crate::stats::Snapshot),
//! so all outputs of one run show the same totals.
//!
//! Files are written to a temporary file created with `O_EXCL` in the
//! destination directory and renamed into place, so a reader never sees a
//! half-written file and a pre-planted symlink is never followed. The
//! exception is `--interval`'s CSV files: they are renamed into place with
//! their header when tracing starts and grow window by window (see
//! `series`).

pub mod csv;
mod file;
pub mod flame;
pub mod folded;
pub mod pprof;
pub mod series;
pub mod speedscope;
pub mod summary;

pub use file::{AtomicFile, check_writable};

/// Snapshots for the writers' tests.
#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::stats::{Counters, Frame, SiteKey, SiteStats, SizeHist, Snapshot};

    /// A frame of `function` in `<function>.go`.
    pub fn frame(function: &str, line: u32) -> Frame {
        Frame {
            function: Arc::from(function),
            file: Arc::from(format!("{function}.go")),
            line,
        }
    }

    /// A site of `function` in `<function>.go`.
    pub fn site(
        function: &str,
        line: u32,
        type_name: &str,
        allocs: u64,
        bytes: u64,
        stack: Vec<Frame>,
    ) -> SiteStats {
        SiteStats {
            key: SiteKey {
                function: Arc::from(function),
                file: Arc::from(format!("{function}.go")),
                line,
                type_name: Arc::from(type_name),
            },
            allocs,
            bytes,
            size_hist: SizeHist::default(),
            stack: Arc::from(stack),
            pool_new_func: None,
            sampled_allocs: 0,
        }
    }

    /// `main.f` at line 10, called by `main.main` at line 30: 5 `main.T`, 120 bytes.
    pub fn main_f() -> SiteStats {
        let stack = vec![frame("main.f", 10), frame("main.main", 30)];
        site("main.f", 10, "main.T", 5, 120, stack)
    }

    /// A snapshot `secs` seconds into a recording.
    pub fn snapshot(secs: u64, sites: Vec<SiteStats>) -> Snapshot {
        Snapshot {
            elapsed: Duration::from_secs(secs),
            total_allocs: sites.iter().map(|s| s.allocs).sum(),
            total_bytes: sites.iter().map(|s| s.bytes).sum(),
            sites,
            pools: vec![],
            counters: Counters::default(),
        }
    }
}
