//! Child processes that tests talk to line by line: a fixture waiting with
//! `ALLOCWATCH_WAIT=1`, or allocwatch itself; and that the benchmarks reap
//! with `wait4` to read their CPU time.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// Lines of a child's output, read by a thread so that waits can time out.
pub struct Lines {
    rx: Receiver<String>,
    /// Every line received so far.
    pub seen: Vec<String>,
}

impl Lines {
    pub fn spawn(r: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// The first line for which `pred` holds, waiting at most `timeout`.
    pub fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return Some(l);
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Lines that never come: for a [`Proc`] whose output is read elsewhere.
    pub fn none() -> Lines {
        Lines {
            rx: channel().1,
            seen: Vec::new(),
        }
    }

    /// Everything received so far.
    pub fn text(&self) -> String {
        self.seen.join("\n")
    }

    /// Consumes the lines already received (they describe the past).
    pub fn drain(&mut self) {
        while let Ok(l) = self.rx.try_recv() {
            self.seen.push(l);
        }
    }

    /// Everything until EOF (the writer has exited) or `timeout`.
    pub fn finish(&mut self, timeout: Duration) -> String {
        self.wait_for(timeout, |_| false);
        self.text()
    }
}

/// A child process that is killed and reaped when the test ends, whatever
/// happens (unless [`Proc::reap`] reaped it: then its PID is no longer ours).
pub struct Proc {
    pub child: Child,
    stdin: Option<ChildStdin>,
    pub out: Lines,
    pub name: String,
    reaped: bool,
}

/// How a process reaped by [`Proc::reap`] ended.
pub struct Ended {
    pub success: bool,
    /// utime + stime of the whole process (all threads), in ns.
    pub cpu_ns: f64,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Spawns `cmd` as it is set up; its output is not read ([`Proc::out`] stays empty).
    pub fn start(cmd: &mut Command, name: &str) -> Proc {
        let child = cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        Proc {
            child,
            stdin: None,
            out: Lines::none(),
            name: name.to_string(),
            reaped: false,
        }
    }

    /// Spawns `cmd` with stdin piped and `stdout` or `stderr` (`read_stderr`) read line by line.
    pub fn spawn(mut cmd: Command, name: &str, read_stderr: bool) -> Proc {
        cmd.stdin(Stdio::piped());
        if read_stderr {
            cmd.stderr(Stdio::piped()).stdout(Stdio::null());
        } else {
            cmd.stdout(Stdio::piped());
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stdin = child.stdin.take();
        let out = if read_stderr {
            Lines::spawn(child.stderr.take().expect("stderr"))
        } else {
            Lines::spawn(child.stdout.take().expect("stdout"))
        };
        Proc {
            child,
            stdin,
            out,
            name: name.to_string(),
            reaped: false,
        }
    }

    /// A fixture started with `ALLOCWATCH_WAIT=1`, after its `ready <pid>` line.
    pub fn ready(cmd: Command, name: &str) -> (Proc, u32) {
        let mut p = Proc::spawn(cmd, name, false);
        let pid = p.wait_ready();
        assert_eq!(pid, p.child.id(), "ready line names another process");
        (p, pid)
    }

    /// Waits for a `ready <pid>` line and returns the PID.
    pub fn wait_ready(&mut self) -> u32 {
        let line = self
            .out
            .wait_for(Duration::from_secs(30), |l| l.starts_with("ready "))
            .unwrap_or_else(|| panic!("{} never printed `ready`: {:?}", self.name, self.out.seen));
        line["ready ".len()..].trim().parse().expect("ready <pid>")
    }

    /// Writes one line to the child's stdin.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write to child");
        stdin.flush().expect("flush");
    }

    /// Closes the child's stdin.
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Lets a waiting fixture start its workload (and closes its stdin).
    pub fn go(&mut self) {
        self.send("go");
        self.close_stdin();
    }

    /// Waits for the exit (killing it after `timeout`) and returns the status and all output.
    pub fn finish(&mut self, timeout: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} did not exit within {timeout:?}; output so far:\n{}",
                    self.name,
                    self.out.seen.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let out = self.out.finish(Duration::from_secs(5));
        (status, out)
    }

    /// True while the process runs (not exited, not a zombie, not stopped).
    pub fn running(&mut self) -> bool {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return false;
        }
        matches!(self.state(), 'R' | 'S')
    }

    /// The state letter of the process's main thread (`?` when unreadable).
    fn state(&self) -> char {
        state_of(&format!("/proc/{}/stat", self.child.id()))
    }

    /// Sends SIGSTOP and returns once every thread has stopped (state `T`):
    /// the signal alone only asks.
    pub fn stop(&self) {
        self.signal(libc::SIGSTOP);
        let deadline = Instant::now() + Duration::from_secs(10);
        let all_stopped = || {
            std::fs::read_dir(format!("/proc/{}/task", self.pid()))
                .into_iter()
                .flatten()
                .flatten()
                .all(|t| state_of(&t.path().join("stat").to_string_lossy()) == 'T')
        };
        while !all_stopped() {
            assert!(Instant::now() < deadline, "PID {} did not stop", self.pid());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits i32")
    }

    /// Sends `sig`; nothing once [`Proc::reap`] has reaped the process.
    pub fn signal(&self, sig: i32) {
        if self.reaped {
            return;
        }
        let pid = self.pid();
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        let r = unsafe { libc::kill(pid, sig) };
        assert_eq!(r, 0, "kill {pid}");
    }

    /// Waits (up to `timeout`, then SIGKILL) and reaps the process with
    /// `wait4`, for its CPU time.
    pub fn reap(&mut self, timeout: Duration) -> Ended {
        let deadline = Instant::now() + timeout;
        let mut status = 0;
        // SAFETY: an all-zero rusage is valid.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: wait4 on our own child with valid out-pointers.
            let r = unsafe { libc::wait4(self.pid(), &raw mut status, libc::WNOHANG, &raw mut ru) };
            if r == self.pid() {
                break;
            }
            assert!(
                r == 0,
                "wait4 {}: {}",
                self.name,
                std::io::Error::last_os_error()
            );
            if Instant::now() > deadline {
                eprintln!("{} did not exit in time: killing it", self.name);
                self.signal(libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.reaped = true;
        let tv = |t: libc::timeval| t.tv_sec as f64 * 1e9 + t.tv_usec as f64 * 1e3;
        Ended {
            success: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            cpu_ns: tv(ru.ru_utime) + tv(ru.ru_stime),
        }
    }

    /// CPU time so far (sum over the threads' scheduler run time), in ns.
    pub fn cpu_now(&self) -> f64 {
        let mut total = 0.0;
        let dir = format!("/proc/{}/task", self.pid());
        for t in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat"))
                && let Some(ns) = s
                    .split_whitespace()
                    .next()
                    .and_then(|x| x.parse::<f64>().ok())
            {
                total += ns;
            }
        }
        total
    }
}

/// The state letter in a `/proc/.../stat` file (`?` when unreadable).
fn state_of(path: &str) -> char {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    stat.rfind(')')
        .and_then(|i| stat[i + 2..].chars().next())
        .unwrap_or('?')
}
