//! What the dashboard is fed by the tracing session.

use crate::plan::Mode;
use crate::stats::Snapshot;

/// Facts about the traced process shown in the header.
#[derive(Clone, Debug, Default)]
pub struct TargetInfo {
    pub pid: u32,
    /// The command line (or executable name) of the target.
    pub command: String,
    /// e.g. "go1.27.3"
    pub go_version: String,
    pub stripped: bool,
    pub pie: bool,
    /// The mode counting now (not shown when `None`).
    pub mode: Option<Mode>,
    /// What the header says after the mode, e.g. ` (--max-overhead 5%)`.
    pub mode_note: String,
    /// Counts may be sampled estimates: the CSV export says per row which
    /// mode counted it (`--mode sampled`, `--max-overhead`).
    pub mode_column: bool,
    /// Measured cost of one probe hit to the target, in nanoseconds.
    pub cost_per_hit_ns: f64,
    /// Where allocwatch's log goes while the dashboard owns the terminal.
    pub log_path: String,
    /// Warnings to show once (e.g. "pool counts incomplete: PGO build").
    pub warnings: Vec<String>,
}

/// Messages from the session to the dashboard.
#[derive(Clone, Debug)]
pub enum Feed {
    /// Cumulative totals since tracing started (sent about once per refresh).
    Snapshot(Box<Snapshot>),
    /// The target exited (or was replaced): freeze and say so.
    TargetExited(String),
    /// A message for the status line.
    Notice(String),
    /// `--max-overhead` switched modes: the header's mode, and why (status line).
    ModeSwitch { mode: Mode, notice: String },
    /// The compiler's escape analysis of the target's source (`--source`):
    /// the site detail shows each site's reason chain and suggestions.
    Escape(std::sync::Arc<crate::escape::Analysis>),
}
