//! Why does it escape? The Go compiler's escape analysis beside the live
//! allocation sites.
//!
//! With `--source DIR` (the target's Go module), allocwatch compiles the
//! target's main package again with `-gcflags=<module>/...=-m=2`, using a Go
//! toolchain of the target's version and its build settings
//! ([`runner`]), parses the compiler's heap decisions and their flow
//! explanations ([`parse`]), and indexes them by module-relative file and
//! line ([`index`]). Each site then gets its reason chain (`moved to heap:
//! x`, `… escapes to heap`, the flow) and a cause — returned pointer,
//! assignment to interface, closure capture, goroutine capture, too large
//! for stack, unknown size make — plus [`suggest`]ions. Sites outside the
//! module get none; sites whose line does not fit the source are reported
//! as mismatches instead of getting a wrong reason. [`report`] is the text
//! of `allocwatch explain`.
//!
//! Everything but [`runner`] is pure and tested on captured compiler output.

pub mod cmd;
pub mod index;
pub mod parse;
pub mod report;
pub mod runner;
pub mod suggest;

#[cfg(test)]
mod tests;

pub use index::{Cause, EscapeIndex, Reason, SiteEscape, SiteLookup};
pub use runner::{Analysis, EscapeError, Request};

use std::sync::Arc;

use crate::gobin::BuildInfo;
use crate::stats::SiteKey;

impl Analysis {
    /// The `escape` CSV column of a site: the reason chain on one line, or
    /// empty when unknown.
    #[must_use]
    pub fn column(&self, key: &SiteKey) -> String {
        match self.index.lookup(key) {
            SiteLookup::Found(e) => e.csv(),
            _ => String::new(),
        }
    }
}

/// A running analysis (on its own thread: `go build` takes seconds).
pub struct Job(std::thread::JoinHandle<Result<Analysis, EscapeError>>);

impl Job {
    /// Starts the analysis of `req` for a target with build info `info`.
    #[must_use]
    pub fn start(req: Request, info: BuildInfo) -> Job {
        Job(std::thread::spawn(move || req.run(&info)))
    }

    /// Waits for the result.
    ///
    /// # Errors
    /// Why the analysis failed.
    pub fn wait(self) -> Result<Analysis, EscapeError> {
        self.0.join().unwrap_or(Err(EscapeError::Panicked))
    }
}

/// What the dashboard gets: the analysis, shared.
pub type Shared = Arc<Analysis>;

/// A small analysis for other modules' tests: module `example.com/shop` at
/// `/srv/shop`, with a `make([]byte, n)` of non-constant size at
/// `orders.go:88` in `(*Server).handleOrder`.
#[cfg(test)]
#[must_use]
pub fn sample_analysis() -> Analysis {
    struct Text;
    impl index::Sources for Text {
        fn read(&self, _rel: &str) -> Option<String> {
            Some("\n".repeat(200))
        }
    }
    let out = parse::parse(
        "# example.com/shop
./orders.go:80:6: cannot inline (*Server).handleOrder: function too complex: cost 300 exceeds budget 80
./orders.go:88:13: make([]byte, n) escapes to heap:
./orders.go:88:13:   flow: {heap} = &{storage for make([]byte, n)}:
./orders.go:88:13:     from make([]byte, n) (non-constant size) at ./orders.go:88:13
./orders.go:88:13: make([]byte, n) escapes to heap
",
    );
    let index = EscapeIndex::build(
        index::ModuleInfo {
            root: "/srv/shop".into(),
            path: "example.com/shop".into(),
            main_package: Some("example.com/shop".into()),
        },
        vec![index::Package {
            import_path: "example.com/shop".into(),
            name: "main".into(),
            dir: String::new(),
            files: vec!["orders.go".into()],
        }],
        out,
        &Text,
    );
    Analysis {
        index,
        toolchain: runner::Toolchain {
            go: "/usr/local/go/bin/go".into(),
            version: "go1.24.2".into(),
            origin: "PATH".into(),
        },
        target_version: "go1.24.2".into(),
        package: "example.com/shop".into(),
        warnings: Vec::new(),
        notes: Vec::new(),
        took: std::time::Duration::from_millis(1200),
    }
}
