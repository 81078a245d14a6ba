//! Owning the real terminal: raw mode and the alternate screen on the way
//! in, and restoring both on every way out — quit, error, panic or signal.
//!
//! [`setup`] returns a [`TerminalGuard`] that restores the terminal when
//! dropped; a panic hook (installed once, chaining the previous hook) restores
//! it before the panic message is printed. Restoring is idempotent. Keys are
//! read on a dedicated thread ([`spawn_input`]) and forwarded over a channel,
//! since crossterm's async `EventStream` is not enabled in this build.

use std::io::{self, IsTerminal, Write};
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

/// Reads terminal events on a thread until `stop` is set or the receiver is
/// gone; a read error is forwarded and ends the thread.
///
/// # Errors
/// When the thread cannot be started.
pub fn spawn_input(
    tx: mpsc::Sender<io::Result<Event>>,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("allocwatch-keys".to_owned())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let ev = match event::poll(Duration::from_millis(100)) {
                    Ok(false) => continue,
                    Ok(true) => event::read(),
                    Err(e) => Err(e),
                };
                let failed = ev.is_err();
                if tx.blocking_send(ev).is_err() || failed {
                    break;
                }
            }
        })
}
