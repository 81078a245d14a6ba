//! The commands: `inspect`, `record`, `top` and `explain`, each a thin layer
//! over [`Session`], the [`run loop`](crate::runloop) and the outputs; and
//! `daemon`, which serves what the run loop counts over HTTP.

mod daemon;
mod explain;
mod inspect;
mod output;
mod record;
mod shell;
mod summary;
mod top;

use std::io::Write;
use std::path::{Path, PathBuf};

pub use daemon::daemon;
pub use explain::explain;
pub use inspect::inspect;
pub use record::record;
pub use shell::{completions, man, man_page};
pub use top::top;

use crate::cli::{EscapeArgs, TargetArgs};
use crate::error::{AppError, Result};
use crate::session::{Options, Session, TargetSpec};

/// Measured cost of one uprobe hit at a `PUSHQ BP` on the reference machine
/// (see docs/benchmarks.md); used for the overhead estimate.
pub use crate::stats::COST_PER_HIT_NS;

impl TargetArgs {
    /// What to trace: the PID, or the command to launch.
    ///
    /// # Errors
    /// A usage error when both or neither are given, or when
    /// `--sample-rate` comes without a mode that samples.
    pub fn spec(&self) -> Result<TargetSpec> {
        if self.sample_rate.is_some()
            && self.mode != crate::plan::Mode::Sampled
            && self.max_overhead.is_none()
        {
            return Err(AppError::usage(
                "--sample-rate sets the rate of the runtime's memory-profile samples, which only sampled mode uses",
            )
            .hint("add --mode sampled (or --max-overhead PCT)"));
        }
        match (self.pid, self.command.is_empty()) {
            (Some(pid), true) => Ok(TargetSpec::Pid(pid)),
            (None, false) => Ok(TargetSpec::Launch(self.command.clone())),
            (Some(_), false) => Err(AppError::usage(
                "give either --pid PID or -- PROGRAM ARGS…, not both",
            )),
            (None, true) => Err(AppError::usage(
                "nothing to trace: give --pid PID or -- PROGRAM ARGS…",
            )
            .hint("example: allocwatch record --pid 1234 --duration 10s --csv sites.csv")),
        }
    }

    /// The session these flags ask for.
    #[must_use]
    pub fn session_options(&self) -> Options {
        Options {
            pools: self.trace_pools(),
            bench: self.bench(),
            mode: self.mode,
            ringbuf_bytes: self.ringbuf_bytes,
            max_overhead: self.max_overhead,
            sample_rate: self.sample_rate,
            progress: true,
        }
    }
}

impl EscapeArgs {
    /// The escape analysis `--source` asks for, its flags checked before
    /// anything is attached.
    ///
    /// # Errors
    /// A usage error saying what is wrong with `--source` or `--go`.
    pub fn request(&self) -> Result<Option<crate::escape::Request>> {
        self.source
            .as_deref()
            .map(|d| crate::escape::cmd::request(d, self.go.as_deref(), self.allow_root_build))
            .transpose()
    }
}

/// allocwatch's own messages on stderr, as `allocwatch: LEVEL: …`.
fn init_stderr_log(verbose: u8) {
    let level = match verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    let _ = env_logger::Builder::new()
        .filter_level(level)
        .format(|buf, r| {
            writeln!(
                buf,
                "allocwatch: {}: {}",
                r.level().as_str().to_lowercase(),
                r.args()
            )
        })
        .parse_env("ALLOCWATCH_LOG")
        .try_init();
}

/// allocwatch's own messages into `path`, while the dashboard owns the
/// terminal.
/// Sends the log to `top`'s log file and returns its path: `--log-file`
/// (`given`), else `allocwatch.log` in the invoking user's state directory
/// (`$XDG_STATE_HOME/allocwatch/`, `~/.local/state/allocwatch/`; under sudo,
/// the user's), created with mode 0700. The file is opened with that
/// user's filesystem identity: mode 0600, never through a symlink.
fn init_file_log(given: Option<&Path>) -> Result<PathBuf> {
    let user = crate::user::invoker();
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => user
            .state_dir()
            .map(|d| d.join("allocwatch.log"))
            .ok_or_else(|| {
                AppError::usage("no place for the log: neither XDG_STATE_HOME nor a home directory")
                    .hint("pass --log-file FILE")
            })?,
    };
    let f = user
        .as_fs_user(|| {
            if given.is_none()
                && let Some(dir) = path.parent()
            {
                crate::user::create_private_dir(dir)?;
            }
            crate::user::open_private_append(&path)
        })
        .map_err(|e| {
            AppError::usage(format!("cannot open the log file {}: {e}", path.display()))
        })?;
    let _ = env_logger::Builder::new()
        .filter_level(log::LevelFilter::Info)
        .parse_env("ALLOCWATCH_LOG")
        .target(env_logger::Target::Pipe(Box::new(f)))
        .try_init();
    Ok(path)
}

/// Tells the user (and scripts waiting for it) that the probes are in place:
/// from this line on, every allocation of the target is counted.
fn announce(s: &Session) {
    let mut e = std::io::stderr().lock();
    for w in &s.plan.warnings {
        let _ = writeln!(e, "allocwatch: warning: {w}");
    }
    if let Some(r) = s.rate_override() {
        let _ = writeln!(e, "allocwatch: {}", r.announcement());
    }
    let _ = writeln!(
        e,
        "allocwatch: tracing PID {} ({}): {} probes attached in {} ms",
        s.target.pid,
        s.target.exe_display,
        s.plan.probes.len(),
        s.attach_time.as_millis()
    );
    let _ = e.flush();
}

/// Gives the target back (its `runtime.MemProfileRate` set back when
/// allocwatch set it, every probe detached) and says what was set back.
/// Dropping the session would too; this is the moment: right after the
/// last counts were read.
fn release_target(s: &mut Session) {
    if let Some(m) = s.release_target() {
        log::info!("{m}");
        eprintln!("allocwatch: {m}");
    }
}
