//! The glue between `--source` and the commands (`record`, `top`,
//! `explain`): checking the flags, waiting for the analysis, printing its
//! warnings, and the CSV column.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use super::index::SiteLookup;
use super::report::mismatch_warning;
use super::{Analysis, Job, Request};
use crate::error::AppError;
use crate::export::csv::EscapeColumn;
use crate::stats::{SiteKey, Snapshot};

/// Checks `--source DIR` and `--go PATH` before anything is attached.
///
/// # Errors
/// A usage error saying what is wrong with them.
pub fn request(
    source: &Path,
    go: Option<&Path>,
    allow_root_build: bool,
) -> Result<Request, AppError> {
    Request::new(source, go, allow_root_build).map_err(|e| {
        let err = AppError::usage(format!("--source: {e}"));
        if matches!(e, super::EscapeError::RootOnForeignTree { .. }) {
            err.hint(
                "run allocwatch through sudo as the tree's owner (the build then runs as them), \
                 or pass --allow-root-build to build as root anyway",
            )
        } else if e.is_toolchain() {
            err.hint("pass --go /path/to/go (a toolchain of the target's Go version)")
        } else {
            err.hint("--source takes the directory of the target's Go module (where its go.mod is)")
        }
    })
}

fn say(line: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "allocwatch: {line}");
}

/// Waits for the analysis; on failure says so on stderr (the trace is
/// still worth its files) and returns `None`.
#[must_use]
pub fn finish(job: Job) -> Option<Analysis> {
    let progress =
        crate::progress::Progress::spinner("escape analysis: go build -gcflags=-m=2 of the module");
    let done = job.wait();
    drop(progress);
    match done {
        Ok(a) => {
            say(&format!(
                "escape analysis: {} ({}) on {} in {:.1}s: {} heap decisions",
                a.toolchain.version,
                a.toolchain.go.display(),
                a.package,
                a.took.as_secs_f64(),
                a.index.heap_decisions()
            ));
            Some(a)
        }
        Err(e) => {
            say(&format!("warning: escape analysis failed: {e}"));
            None
        }
    }
}

/// The analysis' warnings, and the source mismatches among `snap`'s sites.
#[must_use]
pub fn warnings(a: &Analysis, snap: &Snapshot) -> Vec<String> {
    let mut w = a.warnings.clone();
    w.extend(mismatch_warning(a, snap));
    w
}

/// Prints the warnings and the reasons of the `top` hottest sites of the
/// module on stderr (the end of `record`).
pub fn print_summary(a: &Analysis, snap: &Snapshot, top: usize) {
    for w in warnings(a, snap) {
        say(&format!("warning: {w}"));
    }
    let mut n = 0;
    for s in snap.sites_by_bytes() {
        if n >= top {
            break;
        }
        match a.index.lookup(&s.key) {
            SiteLookup::Outside => continue,
            SiteLookup::Found(e) => {
                let r = &e.reasons[0];
                say(&format!(
                    "  why {} {}:{}: {}: {}",
                    s.key.function,
                    crate::format::short_file(&s.key.file, 1),
                    s.key.line,
                    e.cause().label(),
                    r.headline
                ));
            }
            SiteLookup::Unknown | SiteLookup::Runtime | SiteLookup::Mismatch(_) => {}
        }
        n += 1;
    }
}

/// The `escape` CSV column: the reason chain, empty when unknown (or when
/// the analysis failed).
#[must_use]
pub fn column(a: Option<Arc<Analysis>>) -> EscapeColumn {
    Box::new(move |k: &SiteKey| a.as_ref().map(|a| a.column(k)).unwrap_or_default())
}
