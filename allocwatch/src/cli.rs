//! The command line (clap definitions only).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{EnumValueParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::plan::Mode;
use crate::probe::BenchPrograms;

#[derive(Debug, Parser)]
#[command(
    name = "allocwatch",
    version,
    about = "Live heap-allocation and sync.Pool tracing for running Go programs",
    long_about = "allocwatch attaches eBPF uprobes to a running Go program (no code change, no restart) and \
                  shows where it allocates heap memory — per call site and Go type — and how well its \
                  sync.Pools work.\n\nExit codes: 0 success, 1 other error, 2 usage error, 3 target problem \
                  (no such process, not a Go program, unsupported Go), 4 environment problem (privileges, kernel).",
    after_help = EXAMPLES,
    max_term_width = 100
)]
pub struct Cli {
    /// More log output (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Live dashboard of a running Go program.
    #[command(after_help = TOP_EXAMPLES)]
    Top(TopArgs),
    /// Trace headless and write CSV files.
    #[command(after_help = RECORD_EXAMPLES)]
    Record(RecordArgs),
    /// Print what allocwatch would probe in a Go executable (no root needed).
    #[command(after_help = INSPECT_EXAMPLES)]
    Inspect(InspectArgs),
    /// Trace for a while, then say why the hot sites are on the heap (the compiler's escape analysis).
    #[command(after_help = EXPLAIN_EXAMPLES)]
    Explain(ExplainArgs),
    /// Trace Go processes unattended and serve Prometheus metrics and pprof profiles over HTTP.
    #[command(after_help = DAEMON_EXAMPLES)]
    Daemon(DaemonArgs),
    /// Print a shell completion script on stdout (no root needed).
    #[command(after_help = COMPLETIONS_EXAMPLES)]
    Completions(CompletionsArgs),
    /// Print allocwatch's man page (roff) on stdout, or a command's (no root needed).
    #[command(after_help = MAN_EXAMPLES)]
    Man(ManArgs),
}

/// The examples at the end of `allocwatch --help` (and in the man page).
pub const EXAMPLES: &str = "\
Examples:
  allocwatch top --pid 1234
  allocwatch record --pid 1234 --duration 10s --csv sites.csv
  allocwatch inspect ./myservice
  allocwatch explain --pid 1234 --source ~/src/myservice
  allocwatch daemon --exe '^api$'
  allocwatch completions bash > /etc/bash_completion.d/allocwatch";

const TOP_EXAMPLES: &str = "\
Examples:
  allocwatch top --pid 1234                     # live dashboard
  allocwatch top -- ./myservice -flag           # launch, watch from the start
  allocwatch top --pid 1234 --mode sampled      # near-zero cost, estimates
  allocwatch top --pid 1234 --source ~/src/myservice";

const RECORD_EXAMPLES: &str = "\
Examples:
  allocwatch record --pid 1234 --duration 10s --csv sites.csv --pools-csv p.csv
  allocwatch record --csv sites.csv -- ./mybench      # trace a whole run
  allocwatch record --pid 1234 --duration 30s --interval 1s --csv rates.csv
  allocwatch record --pid 1234 --pprof allocs.pb.gz --svg allocs.svg
  allocwatch record --pid 1234 --duration 10s --json run.json
  allocwatch record --pid 1234 --mode sampled --csv sites.csv  # near-zero cost";

const INSPECT_EXAMPLES: &str = "\
Examples:
  allocwatch inspect ./myservice
  allocwatch inspect --pid 1234 --json
  allocwatch inspect --mode sampled ./myservice";

const EXPLAIN_EXAMPLES: &str = "\
Examples:
  allocwatch explain --pid 1234 --source ~/src/myservice
  allocwatch explain --duration 30s --source ~/src/myservice -- ./myservice
  allocwatch explain --pid 1234 --source . --go ~/sdk/go1.24.2/bin/go";

const DAEMON_EXAMPLES: &str = "\
Examples:
  allocwatch daemon --exe '^api$' --exe '^/srv/'  # serves 127.0.0.1:9464
  allocwatch daemon --pid 1234 --pid 5678
  allocwatch daemon --pid 1234 --mode exact --listen 0.0.0.0:9464";

const COMPLETIONS_EXAMPLES: &str = "\
Examples:
  allocwatch completions bash > /etc/bash_completion.d/allocwatch
  allocwatch completions zsh > /usr/local/share/zsh/site-functions/_allocwatch
  allocwatch completions fish > ~/.config/fish/completions/allocwatch.fish";

const MAN_EXAMPLES: &str = "\
Examples:
  allocwatch man > /usr/local/share/man/man1/allocwatch.1
  allocwatch man record > /usr/local/share/man/man1/allocwatch-record.1
  allocwatch man | man -l -";

/// `allocwatch completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete allocwatch's commands and flags in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `allocwatch man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// A command's own page (allocwatch-COMMAND(1)) instead of allocwatch(1).
    #[arg(value_name = "COMMAND", value_parser = clap::builder::PossibleValuesParser::new(COMMANDS))]
    pub command: Option<String>,
}

/// The names of allocwatch's commands.
pub const COMMANDS: [&str; 7] = [
    "top",
    "record",
    "inspect",
    "explain",
    "daemon",
    "completions",
    "man",
];

/// `--source DIR` / `--go PATH`: the compiler's escape analysis beside the sites.
#[derive(Debug, Args)]
pub struct EscapeArgs {
    /// The target's Go module (or a directory in it): show why each site escapes, from
    /// `go build -gcflags=-m=2` (nothing is written into it).
    #[arg(long, value_name = "DIR")]
    pub source: Option<PathBuf>,
    /// The go command for --source (default: one of the target's version on PATH or in ~/sdk, else `go`).
    #[arg(long = "go", value_name = "PATH", requires = "source")]
    pub go: Option<PathBuf>,
    /// Run --source's `go build` as root on a tree root does not own (refused by default; under
    /// sudo the build runs as the invoking user instead).
    #[arg(long, requires = "source")]
    pub allow_root_build: bool,
}

/// The traced program: a PID, or a command after `--`.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// PID of the Go process to trace.
    #[arg(short, long, conflicts_with = "command")]
    pub pid: Option<u32>,
    /// Do not trace sync.Pool (Get, Put and misses).
    #[arg(long, conflicts_with = "pools")]
    pub no_pools: bool,
    /// Trace sync.Pool in sampled mode too (each Get is a uprobe trap, so it is off there by default).
    #[arg(long)]
    pub pools: bool,
    /// exact: every allocation (a uprobe trap each, ~1 µs); sampled: the runtime's own
    /// memory-profile samples (about one per MemProfileRate bytes), scaled like pprof — near-zero cost.
    #[arg(long, value_parser = mode_parser(), default_value = "exact")]
    pub mode: Mode,
    /// record and top: start exact; when tracing costs the target more than PCT % of one CPU core
    /// for 3 s, switch to sampled mode, and back to exact when exact would cost under 0.75 × PCT
    /// again. Each switch is announced and every output row says which mode counted it.
    #[arg(long, value_name = "PCT", value_parser = parse_percent, conflicts_with = "mode")]
    pub max_overhead: Option<f64>,
    /// Sampled mode and --max-overhead: set the target's runtime.MemProfileRate to BYTES (about one
    /// sample per BYTES allocated) for the session; the old rate is set back when allocwatch exits.
    /// Without it, a program that has memory profiling off (rate 0) gets 524288, the Go default.
    #[arg(long, value_name = "BYTES", value_parser = parse_sample_rate, allow_negative_numbers = true)]
    pub sample_rate: Option<u64>,
    /// Benchmarks only: attach empty eBPF programs at the same points.
    #[arg(long, hide = true)]
    pub noop_programs: bool,
    /// Benchmarks only: attach these floor programs at the same points.
    #[arg(long, hide = true, value_enum, conflicts_with = "noop_programs")]
    pub bench_programs: Option<BenchArg>,
    /// Tests only: the ring buffer's size in bytes (a power of two, at least 4096) instead of 32 MiB.
    #[arg(long, hide = true, value_name = "BYTES", value_parser = parse_ringbuf_bytes)]
    pub ringbuf_bytes: Option<u32>,
    /// A program to launch and trace from its first instruction.
    #[arg(last = true, value_name = "PROGRAM ARGS")]
    pub command: Vec<OsString>,
}

impl TargetArgs {
    /// The floor programs a benchmark asked for, if any.
    #[must_use]
    pub fn bench(&self) -> Option<BenchPrograms> {
        if self.noop_programs {
            Some(BenchPrograms::Noop)
        } else {
            self.bench_programs.map(BenchPrograms::from)
        }
    }

    /// Whether the sites CSV says per row which mode counted it: when some
    /// counts can be sampled estimates.
    #[must_use]
    pub fn mode_column(&self) -> bool {
        self.mode == Mode::Sampled || self.max_overhead.is_some()
    }

    /// Whether sync.Pool is traced: by default in exact mode, on request in sampled mode.
    #[must_use]
    pub fn trace_pools(&self) -> bool {
        trace_pools(self.mode, self.pools, self.no_pools)
    }
}

/// Whether sync.Pool is traced: by default in exact mode (unless
/// `--no-pools`), on request (`--pools`) in sampled mode.
#[must_use]
pub fn trace_pools(mode: Mode, pools: bool, no_pools: bool) -> bool {
    match mode {
        Mode::Exact => !no_pools,
        Mode::Sampled => pools,
    }
}

/// `allocwatch daemon`.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Trace every process whose executable (/proc/PID/exe) matches REGEX by its full path or its
    /// base name, unanchored as in grep (e.g. '^api$' for the name api): those running now and
    /// those started later (repeat for more). A process that starts an executable already traced,
    /// or one REGEX spells out by its absolute path ('^/srv/bin/api$'), base name ('^api$') or the
    /// start of its base name ('^api-'), is traced from its first allocation (see --no-hold); one
    /// that starts another, from a moment after its exec. A match
    /// that allocwatch cannot trace (not a Go program, unsupported Go version) is logged once and
    /// skipped.
    #[arg(long = "exe", value_name = "REGEX", value_parser = parse_regex, required_unless_present = "pids")]
    pub exe: Vec<regex::Regex>,
    /// A Go process to trace (repeat for more). A process that allocwatch cannot trace (not a Go
    /// program, unsupported Go version, gone) is logged and skipped, and tried again when it execs.
    #[arg(short, long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Where to serve /metrics, /debug/pprof/allocs and /targets (port 0: any free port; the
    /// address bound is printed on stderr). Loopback unless another address is asked for.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9464")]
    pub listen: std::net::SocketAddr,
    /// sampled: the runtime's own memory-profile samples, scaled like pprof — near-zero cost (set on
    /// where memory profiling is off); exact: every allocation (a uprobe trap each, ~1 µs).
    #[arg(long, value_parser = mode_parser(), default_value = "sampled")]
    pub mode: Mode,
    /// Start each target in exact mode and switch it to sampled mode while exact tracing costs it
    /// more than PCT % of one CPU core (and back when it would cost under 0.75 × PCT).
    #[arg(long, value_name = "PCT", value_parser = parse_percent, conflicts_with = "mode")]
    pub max_overhead: Option<f64>,
    /// Sampled mode and --max-overhead: set each target's runtime.MemProfileRate to BYTES while it
    /// is traced (set back when allocwatch detaches).
    #[arg(long, value_name = "BYTES", value_parser = parse_sample_rate, allow_negative_numbers = true)]
    pub sample_rate: Option<u64>,
    /// Export each process's N hottest sites (by bytes) as series of their own; the rest add up to
    /// one series with function="(other)".
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_sites: u32,
    /// How long an exited process's last numbers stay exported (and listed in /targets).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub retain: Duration,
    /// Trace sync.Pool in sampled mode too (each Get is a uprobe trap, so it is off there by default).
    #[arg(long, conflicts_with = "no_pools")]
    pub pools: bool,
    /// Do not trace sync.Pool (in exact mode, where it is on by default).
    #[arg(long)]
    pub no_pools: bool,
    /// Do not stop new processes of the executables traced (or named by --exe) at their first
    /// instruction while their probes are attached (SIGSTOP, then SIGCONT: ~0.2 s at start); they
    /// are then traced from a moment after their exec, and what they allocate first is not counted.
    #[arg(long)]
    pub no_hold: bool,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Screen refresh interval (e.g. 1s, 500ms).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub refresh: Duration,
    /// Window over which rates are computed.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub rate_window: Duration,
    /// Where `e` writes CSV files.
    #[arg(long, default_value = ".")]
    pub export_dir: PathBuf,
    /// allocwatch's log file while the dashboard owns the terminal (default: allocwatch.log in
    /// $XDG_STATE_HOME/allocwatch or ~/.local/state/allocwatch; under sudo, the invoking user's).
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    #[command(flatten)]
    pub escape: EscapeArgs,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("csv_out").args(["csv", "pools_csv"]).multiple(true)))]
pub struct RecordArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Stop after this long (e.g. 10s, 2m); otherwise at Ctrl-C, SIGTERM or when the target exits.
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Write per-site totals to this CSV file.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Write per-pool totals to this CSV file.
    #[arg(long, value_name = "FILE")]
    pub pools_csv: Option<PathBuf>,
    /// Write the CSV files as time series: one row per site (per pool) and window of this
    /// length (e.g. 1s), `window_start_s`/`window_end_s` counted from the start of recording.
    /// Each window is flushed as it ends, so a killed recording keeps every completed window.
    #[arg(long, value_name = "DURATION", value_parser = parse_interval, requires = "csv_out")]
    pub interval: Option<Duration>,
    /// Write a gzipped pprof profile for `go tool pprof`: sample types alloc_objects and
    /// alloc_space (exact counts), full stacks, the type as label `type`.
    #[arg(long, value_name = "FILE")]
    pub pprof: Option<PathBuf>,
    /// Write folded stacks (flamegraph.pl / inferno / speedscope format), the type as the leaf frame.
    #[arg(long, value_name = "FILE")]
    pub folded: Option<PathBuf>,
    /// What the stacks of --folded and --svg are weighted by.
    #[arg(long, value_enum, value_name = "WEIGHT", default_value_t = FoldedWeight::Bytes)]
    pub folded_weight: FoldedWeight,
    /// Write an allocation flame graph (SVG), the type as the leaf frame.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Write a speedscope file (opens at speedscope.app as it is): the stacks of --folded as two
    /// profiles, alloc_space (bytes) and alloc_objects (allocations).
    #[arg(long, value_name = "FILE")]
    pub speedscope: Option<PathBuf>,
    /// Write a machine-readable summary of the run (JSON, schema in docs/json-summary.md):
    /// target, mode and switches, stop reason, totals, lost events, probe cost, top sites, pools.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Print the N hottest sites on stderr at the end.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    #[command(flatten)]
    pub escape: EscapeArgs,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The target's Go module (or a directory in it).
    #[arg(long, value_name = "DIR")]
    pub source: PathBuf,
    /// The go command (default: one of the target's version on PATH or in ~/sdk, else `go`).
    #[arg(long = "go", value_name = "PATH")]
    pub go: Option<PathBuf>,
    /// Run `go build` as root on a tree root does not own (refused by default; under sudo the
    /// build runs as the invoking user instead).
    #[arg(long)]
    pub allow_root_build: bool,
    /// How long to trace before explaining; less if the target exits or at Ctrl-C.
    #[arg(short, long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// List the N hottest sites of the module (and the N best suggestions).
    #[arg(long, default_value_t = 15)]
    pub top: usize,
}

/// The weight of folded stacks and flame graphs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FoldedWeight {
    /// Bytes allocated.
    #[default]
    Bytes,
    /// Number of allocations.
    Allocs,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A Go executable.
    #[arg(required_unless_present = "pid", conflicts_with = "pid")]
    pub binary: Option<PathBuf>,
    /// Inspect the executable of this running process.
    #[arg(short, long)]
    pub pid: Option<u32>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Plan without sync.Pool probes.
    #[arg(long)]
    pub no_pools: bool,
    /// The plan of this mode.
    #[arg(long, value_parser = mode_parser(), default_value = "exact")]
    pub mode: Mode,
}

/// The values of `--mode`: clap's side of [`Mode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    /// Every allocation, at the allocation entry points (a uprobe trap each).
    Exact,
    /// The runtime's own memory-profile samples (`runtime.profilealloc`, about
    /// one per `runtime.MemProfileRate` bytes), scaled as pprof scales them.
    Sampled,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Exact => Mode::Exact,
            ModeArg::Sampled => Mode::Sampled,
        }
    }
}

/// Parses `--mode` into a [`Mode`] (with [`ModeArg`]'s values and help).
fn mode_parser() -> impl TypedValueParser<Value = Mode> {
    EnumValueParser::<ModeArg>::new().map(Mode::from)
}

/// The values of `--bench-programs`: clap's side of [`BenchPrograms`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchArg {
    /// An empty program: the cost of the uprobe trap alone.
    Noop,
    /// One user read of the return address: the least any attribution needs.
    Read1,
    /// Two user reads (return address and the caller's frame record): the
    /// least attribution through one runtime frame needs.
    Read2,
}

impl From<BenchArg> for BenchPrograms {
    fn from(b: BenchArg) -> BenchPrograms {
        match b {
            BenchArg::Noop => BenchPrograms::Noop,
            BenchArg::Read1 => BenchPrograms::Read1,
            BenchArg::Read2 => BenchPrograms::Read2,
        }
    }
}

/// Parses a percentage of one core: `5`, `0.5`, `5%`.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    match s.trim().trim_end_matches('%').parse::<f64>() {
        Ok(x) if x > 0.0 && x <= 100.0 => Ok(x),
        _ => Err(format!("`{s}` is not a percentage above 0 and at most 100")),
    }
}

/// Parses a `--sample-rate`: a positive number of bytes (`runtime.MemProfileRate`
/// is a Go `int`).
pub fn parse_sample_rate(s: &str) -> Result<u64, String> {
    match s.trim().parse::<i64>() {
        Ok(n) if n > 0 => Ok(n.unsigned_abs()),
        _ => Err(format!(
            "`{s}` is not a positive number of bytes (e.g. 524288, the Go default; 1 records every allocation)"
        )),
    }
}

/// Parses a ring buffer size: a power of two from 4096 (a page) to 1 GiB.
pub fn parse_ringbuf_bytes(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(n) if n.is_power_of_two() && (4096..=1 << 30).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{s}` is not a power of two from 4096 to 1073741824"
        )),
    }
}

/// Parses `1.5s`, `500ms`, `2m`, `1h`, `10` (seconds).
fn parse_regex(s: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(s).map_err(|e| e.to_string())
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (examples: 10s, 500ms, 2m)"))?;
    let scale = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{s}` (use ms, s, m or h)"
            ));
        }
    };
    let secs = value * scale;
    if !secs.is_finite() || secs <= 0.0 || secs > 1e9 {
        return Err(format!("`{s}` is not a positive duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a `--interval`: a duration of at least 10 ms.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(10) {
        return Err(format!(
            "`{s}` is too short: the interval must be at least 10ms"
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        for bad in ["", "abc", "10x", "-1s", "0", "1e400", "s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ringbuf_sizes() {
        assert_eq!(parse_ringbuf_bytes("4096"), Ok(4096));
        assert_eq!(parse_ringbuf_bytes("1073741824"), Ok(1 << 30));
        for bad in ["", "0", "2048", "5000", "2147483648", "-4096", "4k"] {
            assert!(parse_ringbuf_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sample_rates() {
        assert_eq!(parse_sample_rate("524288"), Ok(524_288));
        assert_eq!(parse_sample_rate("1"), Ok(1));
        for bad in ["", "0", "-1", "-524288", "4k", "1.5", "9223372036854775808"] {
            assert!(parse_sample_rate(bad).is_err(), "{bad}");
        }
        let parse = |args: &[&str]| Cli::try_parse_from(args.iter().copied());
        let err = parse(&[
            "allocwatch",
            "record",
            "--mode",
            "sampled",
            "--sample-rate",
            "-5",
            "--pid",
            "1",
        ])
        .expect_err("negative rate");
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string().contains("not a positive number of bytes"),
            "{err}"
        );
        assert!(
            parse(&[
                "allocwatch",
                "top",
                "--mode",
                "sampled",
                "--sample-rate",
                "4096",
                "--pid",
                "1"
            ])
            .is_ok()
        );
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_interval("10ms"), Ok(Duration::from_millis(10)));
        assert!(parse_interval("5ms").is_err());
        assert!(parse_interval("x").is_err());
    }

    #[test]
    fn interval_needs_a_csv_output() {
        let parse = |args: &[&str]| Cli::try_parse_from(args.iter().copied());
        assert!(parse(&["allocwatch", "record", "--interval", "1s", "--pid", "1"]).is_err());
        assert!(
            parse(&[
                "allocwatch",
                "record",
                "--interval",
                "1s",
                "--pools-csv",
                "p.csv",
                "--pid",
                "1"
            ])
            .is_ok()
        );
        let Command::Record(r) = parse(&[
            "allocwatch",
            "record",
            "--pid",
            "1",
            "--pprof",
            "a.pb.gz",
            "--folded",
            "a.folded",
            "--folded-weight",
            "allocs",
            "--svg",
            "a.svg",
            "--speedscope",
            "a.speedscope.json",
        ])
        .unwrap()
        .command
        else {
            panic!("not record");
        };
        assert_eq!(r.folded_weight, FoldedWeight::Allocs);
        assert!(r.pprof.is_some() && r.folded.is_some() && r.svg.is_some() && r.interval.is_none());
        assert!(r.speedscope.is_some());
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn man_knows_every_command() {
        let cmd = Cli::command();
        let names: Vec<&str> = cmd.get_subcommands().map(clap::Command::get_name).collect();
        assert_eq!(names, COMMANDS);
    }
}
