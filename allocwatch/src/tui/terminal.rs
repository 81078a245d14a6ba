//! Owning the real terminal: raw mode and the alternate screen on the way
//! in, and restoring both on every way out — quit, error, panic or signal.
//!
//! [`setup`] returns a [`TerminalGuard`] that restores the terminal when
//! dropped; a panic hook (installed once, chaining the previous hook) restores
//! it before the panic message is printed. Restoring is idempotent. Keys are
//! read on a dedicated thread ([`spawn_input`]) and forwarded over a channel,
//! since crossterm's async `EventStream` is not enabled in this build.

use std::io::{self, IsTerminal, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use crossterm::event::{self, Event};
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use crossterm::{cursor, execute};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use tokio::sync::mpsc;

/// Whether the dashboard currently owns the terminal.
static ACTIVE: AtomicBool = AtomicBool::new(false);
static HOOK: Once = Once::new();

/// Standard output while the dashboard owns the terminal: once the terminal
/// is restored (by a panic on another thread, say), whatever is still drawn
/// is dropped instead of landing on the user's screen.
pub struct TtyOut;

impl Write for TtyOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Holding the lock while checking orders this write before or after
        // `restore`'s, which takes the same lock.
        let mut out = io::stdout().lock();
        if ACTIVE.load(Ordering::SeqCst) {
            out.write(buf)
        } else {
            Ok(buf.len())
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut out = io::stdout().lock();
        if ACTIVE.load(Ordering::SeqCst) {
            out.flush()
        } else {
            Ok(())
        }
    }
}

/// The terminal while the dashboard owns it; restores it when dropped.
pub struct TerminalGuard {
    pub terminal: Terminal<CrosstermBackend<TtyOut>>,
}

/// Whether the dashboard still owns the terminal (a panic hook may have
/// given it back).
pub fn owned() -> bool {
    ACTIVE.load(Ordering::SeqCst)
}

/// Takes over the terminal: raw mode, alternate screen, hidden cursor.
///
/// # Errors
/// When stdin or stdout is not a terminal, or setting it up fails (the
/// terminal is then restored).
pub fn setup() -> anyhow::Result<TerminalGuard> {
    if !io::stdout().is_terminal() || !io::stdin().is_terminal() {
        anyhow::bail!("the dashboard needs a terminal (use `record` to write files instead)");
    }
    install_panic_hook();
    enable_raw_mode().context("failed to enable raw mode")?;
    ACTIVE.store(true, Ordering::SeqCst);
    match enter() {
        Ok(terminal) => Ok(TerminalGuard { terminal }),
        Err(e) => {
            let _ = restore();
            Err(e)
        }
    }
}

fn enter() -> anyhow::Result<Terminal<CrosstermBackend<TtyOut>>> {
    execute!(io::stdout(), EnterAlternateScreen, cursor::Hide)
        .context("failed to enter the alternate screen")?;
    let mut terminal =
        Terminal::new(CrosstermBackend::new(TtyOut)).context("failed to set up the terminal")?;
    terminal.clear().context("failed to clear the terminal")?;
    Ok(terminal)
}

/// Gives the terminal back: leaves raw mode and the alternate screen, shows
/// the cursor. Does nothing when the dashboard does not own the terminal.
///
/// # Errors
/// When the terminal cannot be written to.
pub fn restore() -> io::Result<()> {
    if !ACTIVE.swap(false, Ordering::SeqCst) {
        return Ok(());
    }
    let raw = disable_raw_mode();
    let screen = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
    raw.and(screen)
}

impl TerminalGuard {
    /// Restores the terminal, reporting failure.
    ///
    /// # Errors
    /// When the terminal cannot be written to.
    pub fn restore(self) -> io::Result<()> {
        // Drop would do it too, but silently.
        let restored = restore();
        drop(self);
        restored
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = restore();
    }
}

/// Restores the terminal before any panic message is printed, then runs the
/// hook that was installed before (the default one prints the message).
fn install_panic_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = restore();
            previous(info);
        }));
    });
}

/// What waiting for the terminal found.
#[derive(Debug, PartialEq, Eq)]
enum TtyWait {
    /// Input to read, or nothing yet.
    Open,
    /// The terminal hung up (window closed, SSH connection or tmux server gone).
    Gone,
}

/// Waits up to `timeout` for input on standard input, the terminal
/// crossterm reads keys from, or for `wake` to become readable.
fn wait_tty(timeout: Duration, wake: &io::PipeReader) -> io::Result<TtyWait> {
    let mut fds = [
        libc::pollfd {
            fd: libc::STDIN_FILENO,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: two valid pollfds that outlive the call.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(TtyWait::Open)
        } else {
            Err(e)
        };
    }
    if r > 0 && fds[0].revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
        return Ok(TtyWait::Gone);
    }
    Ok(TtyWait::Open)
}

/// Stops the key reader at once: sets its flag and wakes it from its wait.
pub struct InputStop {
    flag: Arc<AtomicBool>,
    wake: io::PipeWriter,
}

impl InputStop {
    pub fn stop(&mut self) {
        self.flag.store(true, Ordering::SeqCst);
        let _ = self.wake.write_all(&[1]);
    }
}

/// Reads terminal events on a thread until it is stopped (the returned
/// [`InputStop`]) or the receiver is gone; a read error, or the terminal
/// hanging up, is forwarded and ends the thread.
///
/// crossterm is only asked for events that are already parsed or whose bytes
/// are waiting: it reads a hung-up terminal in an endless loop (`read`
/// returns 0 forever), so the thread checks for a hangup itself first. A
/// key typed after the stop is left for the shell.
///
/// # Errors
/// When the thread cannot be started.
pub fn spawn_input(tx: mpsc::Sender<io::Result<Event>>) -> io::Result<(JoinHandle<()>, InputStop)> {
    let (wake_rx, wake) = io::pipe()?;
    let flag = Arc::new(AtomicBool::new(false));
    let stop = flag.clone();
    let reader = std::thread::Builder::new()
        .name("allocwatch-keys".to_owned())
        .spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let ev = match event::poll(Duration::ZERO) {
                    Ok(true) => event::read(),
                    Ok(false) => match wait_tty(Duration::from_millis(100), &wake_rx) {
                        Ok(TtyWait::Open) => continue,
                        Ok(TtyWait::Gone) => Err(io::Error::new(
                            io::ErrorKind::BrokenPipe,
                            "the terminal was closed",
                        )),
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                };
                let failed = ev.is_err();
                if tx.blocking_send(ev).is_err() || failed {
                    break;
                }
            }
        })?;
    Ok((reader, InputStop { flag, wake }))
}

/// Waits up to `limit` for the key reader to end. A reader that does not
/// end is left behind rather than holding the process: the process exits
/// next anyway.
pub async fn join_input(reader: JoinHandle<()>, limit: Duration) {
    let start = std::time::Instant::now();
    while !reader.is_finished() {
        if start.elapsed() >= limit {
            log::warn!("the key reader did not stop within {limit:?}; leaving it behind");
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let _ = reader.join();
}
