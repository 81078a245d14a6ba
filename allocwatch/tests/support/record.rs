//! Running `allocwatch record` on a fixture and reading what it wrote.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::proc::Proc;
use super::summary::{RunSummary, read_summary};

/// Every row of a CSV file, as `T`.
pub fn read_csv<T: serde::de::DeserializeOwned>(path: &Path) -> Vec<T> {
    let mut r =
        csv::Reader::from_path(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    r.deserialize()
        .map(|x| x.unwrap_or_else(|e| panic!("row of {}: {e}", path.display())))
        .collect()
}

/// Runs `allocwatch record ARGS` (stdin closed), which must be refused as
/// a usage error (exit 2) that names `want`, before anything is attached.
pub fn record_refused<A: AsRef<OsStr> + std::fmt::Debug>(args: &[A], want: &str) {
    let out = Command::new(super::allocwatch())
        .arg("record")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run allocwatch");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains(want), "{args:?}: {stderr}");
    assert!(
        !stderr.contains("tracing PID"),
        "{args:?}: attached: {stderr}"
    );
}

/// Runs `allocwatch record ARGS -- bin` (stdin closed) with the fixtures'
/// usual `GOMAXPROCS=1` and `GOGC=off`, then `env` (which may override
/// them); asserts it exits 0 and returns its stdout (the fixture's) and
/// stderr (the summary).
pub fn record<A: AsRef<OsStr>>(args: &[A], bin: &Path, env: &[(&str, &str)]) -> (String, String) {
    let out = Command::new(super::allocwatch())
        .arg("record")
        .args(args)
        .arg("--")
        .arg(bin)
        .env("GOMAXPROCS", "1")
        .env("GOGC", "off")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run allocwatch");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "allocwatch record {:?} failed ({}):\n{stderr}\n{stdout}",
        args.iter().map(AsRef::as_ref).collect::<Vec<_>>(),
        out.status
    );
    (stdout, stderr)
}

/// What [`record_json`] returns.
#[derive(Debug)]
pub struct Recorded {
    /// The fixture's output.
    pub stdout: String,
    /// allocwatch's messages (not to be parsed for numbers: see `summary`).
    pub stderr: String,
    /// The `--json` summary of the run.
    pub summary: RunSummary,
}

/// [`record`] with `--json F` added: stdout, stderr and the parsed summary.
pub fn record_json<A: AsRef<OsStr>>(args: &[A], bin: &Path, env: &[(&str, &str)]) -> Recorded {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("summary.json");
    let mut all: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
    all.extend(["--json".as_ref(), json.as_os_str()]);
    let (stdout, stderr) = record(&all, bin, env);
    Recorded {
        stdout,
        stderr,
        summary: read_summary(&json),
    }
}

/// [`record_json`] with `--pools-csv F`: the pools CSV's rows, and the run.
pub fn record_pools_csv<R: serde::de::DeserializeOwned>(
    bin: &Path,
    env: &[(&str, &str)],
) -> (Vec<R>, Recorded) {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv_path = dir.path().join("pools.csv");
    let run = record_json(&["--pools-csv".as_ref(), csv_path.as_os_str()], bin, env);
    (read_csv(&csv_path), run)
}

/// [`record_json`] with `--csv S --pools-csv P`: the rows of both, and the run.
pub fn record_sites_and_pools<S, P>(bin: &Path, env: &[(&str, &str)]) -> (Vec<S>, Vec<P>, Recorded)
where
    S: serde::de::DeserializeOwned,
    P: serde::de::DeserializeOwned,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let (sites, pools) = (dir.path().join("sites.csv"), dir.path().join("pools.csv"));
    let run = record_json(
        &[
            "--csv".as_ref(),
            sites.as_os_str(),
            "--pools-csv".as_ref(),
            pools.as_os_str(),
        ],
        bin,
        env,
    );
    (read_csv(&sites), read_csv(&pools), run)
}

/// `allocwatch record ARGS` (stdout and stderr not yet set up).
pub fn record_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(super::allocwatch());
    c.arg("record").args(args);
    c
}

/// Starts `record` (as `cmd`, which has its arguments) and waits until it
/// has attached (its `tracing PID` line); its stderr is read line by line.
pub fn start_record(cmd: Command) -> Proc {
    let mut aw = Proc::spawn(cmd, "allocwatch", true);
    let attached = aw
        .out
        .wait_for(Duration::from_secs(30), |l| l.contains("tracing PID"));
    assert!(
        attached.is_some(),
        "allocwatch never said it was tracing; stderr:\n{}",
        aw.out.text()
    );
    aw
}
