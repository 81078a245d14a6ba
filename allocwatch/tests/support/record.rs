//! Running `allocwatch record` on a fixture and reading what it wrote.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::proc::Proc;

/// Every row of a CSV file, as `T`.
pub fn read_csv<T: serde::de::DeserializeOwned>(path: &Path) -> Vec<T> {
    let mut r =
        csv::Reader::from_path(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    r.deserialize()
        .map(|x| x.unwrap_or_else(|e| panic!("row of {}: {e}", path.display())))
        .collect()
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

/// [`record`] with `--pools-csv F`: the pools CSV's rows, stdout and stderr.
pub fn record_pools_csv<R: serde::de::DeserializeOwned>(
    bin: &Path,
    env: &[(&str, &str)],
) -> (Vec<R>, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv_path = dir.path().join("pools.csv");
    let (stdout, stderr) = record(&["--pools-csv".as_ref(), csv_path.as_os_str()], bin, env);
    (read_csv(&csv_path), stdout, stderr)
}

/// [`record`] with `--csv S --pools-csv P`: the rows of both, stdout and stderr.
pub fn record_sites_and_pools<S, P>(
    bin: &Path,
    env: &[(&str, &str)],
) -> (Vec<S>, Vec<P>, String, String)
where
    S: serde::de::DeserializeOwned,
    P: serde::de::DeserializeOwned,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let (sites, pools) = (dir.path().join("sites.csv"), dir.path().join("pools.csv"));
    let (stdout, stderr) = record(
        &[
            "--csv".as_ref(),
            sites.as_os_str(),
            "--pools-csv".as_ref(),
            pools.as_os_str(),
        ],
        bin,
        env,
    );
    (read_csv(&sites), read_csv(&pools), stdout, stderr)
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

/// A caller's `[gets, misses, nil_returns, puts]` from the summary's line
/// `caller FUNC (FILE:LINE): gets=… misses=… nil_returns=… puts=…`, under
/// the first `pool …` line for which `pool_line` holds.
pub fn caller_counts(
    stderr: &str,
    pool_line: impl Fn(&str) -> bool,
    func: &str,
) -> Option<[u64; 4]> {
    let mut in_pool = false;
    for l in stderr.lines() {
        let t = l.trim_start();
        if t.starts_with("pool ") {
            in_pool = pool_line(t);
            continue;
        }
        if in_pool && t.starts_with(&format!("caller {func} ")) {
            let v = |k: &str| -> u64 {
                t.split_whitespace()
                    .find_map(|w| w.strip_prefix(&format!("{k}=")))
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(u64::MAX)
            };
            return Some([v("gets"), v("misses"), v("nil_returns"), v("puts")]);
        }
    }
    None
}
