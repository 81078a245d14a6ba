//! The live terminal dashboard: the only module that imports ratatui and crossterm.
//!
//! The session sends [`Feed`] messages (cumulative snapshots, the target's
//! exit, notices) over a channel; [`run`] owns the terminal, turns key presses
//! into [`Action`]s through the [`keymap`], applies them and the feed to the
//! [`App`] state, and draws it with [`view::render`] about once per refresh.
//! [`drive`] is that loop over any ratatui backend, so tests run it on a
//! `TestBackend` without a terminal.

mod app;
pub mod feed;
pub mod keymap;
mod synth;
mod terminal;
pub mod view;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::io;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use crossterm::event::Event;
use ratatui::Terminal;
use ratatui::backend::{Backend, TestBackend};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

pub use crate::stats::{PoolRate, SiteRate};
pub use app::{
    App, Column, Detail, ListPos, PoolColumn, Shown, SiteColumn, SiteDetail, Sort, Status, Tab,
    TuiOptions, TypeRow,
};
pub use feed::{Feed, TargetInfo};
pub use keymap::{Action, Context, KEYMAP};

/// Runs the dashboard until the user quits (or SIGTERM/SIGHUP), owning the
/// terminal meanwhile; the terminal is restored on every way out.
///
/// # Errors
/// When stdin/stdout is not a terminal, or reading or drawing it fails.
pub async fn run(
    info: TargetInfo,
    feed: mpsc::Receiver<Feed>,
    opts: TuiOptions,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};

    let mut term = signal(SignalKind::terminate()).context("failed to listen for SIGTERM")?;
    let mut hangup = signal(SignalKind::hangup()).context("failed to listen for SIGHUP")?;
    let mut given_back = false;
    let given_back_ref = &mut given_back;
    let shutdown = async move {
        let mut check = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = term.recv() => return,
                _ = hangup.recv() => return,
                _ = check.tick() => {
                    // A panic elsewhere restored the terminal: stop drawing.
                    if !terminal::owned() {
                        *given_back_ref = true;
                        return;
                    }
                }
            }
        }
    };

    let mut guard = terminal::setup()?;
    let (tx, keys) = mpsc::channel(64);
    let (reader, mut stop) = terminal::spawn_input(tx).context("failed to start the key reader")?;

    let mut app = App::new(info, opts);
    let result = drive(&mut guard.terminal, &mut app, feed, keys, shutdown).await;

    let restored = guard.restore();
    stop.stop();
    // Wait for the reader (woken at once) so it cannot steal keys typed at
    // the shell afterwards — but not forever.
    terminal::join_input(reader, Duration::from_secs(1)).await;
    result?;
    if given_back {
        anyhow::bail!("the dashboard stopped: the terminal was restored after a panic");
    }
    restored.context("failed to restore the terminal")
}

/// Draws `app` once, after telling it the page size of the current layout.
///
/// # Errors
/// When the backend fails.
pub fn draw<B: Backend>(terminal: &mut Terminal<B>, app: &mut App) -> Result<(), B::Error> {
    let size = terminal.size()?;
    app.set_page_rows(view::page_rows(size.into(), app));
    terminal.draw(|f| view::render(f, app))?;
    Ok(())
}

/// The dashboard's event loop over any backend: applies feed messages and
/// keys to `app`, redraws after each key and at every refresh tick when
/// something changed, and returns when the user quits or `shutdown`
/// completes. A closed feed freezes the display; a closed or failing key
/// channel is an error.
///
/// # Errors
/// When drawing fails or the terminal cannot be read.
pub async fn drive<B>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    mut feed: mpsc::Receiver<Feed>,
    mut keys: mpsc::Receiver<io::Result<Event>>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()>
where
    B: Backend,
    B::Error: Send + Sync + 'static,
{
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(app.refresh().max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut feed_open = true;
    let mut dirty = true;
    while !app.should_quit() {
        tokio::select! {
            () = &mut shutdown => break,
            _ = tick.tick() => {
                if dirty {
                    draw(terminal, app).context("failed to draw")?;
                    dirty = false;
                }
            }
            msg = feed.recv(), if feed_open => {
                if let Some(m) = msg {
                    app.on_feed(m);
                } else {
                    feed_open = false;
                    app.on_feed_closed();
                }
                dirty = true;
            }
            ev = keys.recv() => match ev {
                Some(Ok(Event::Key(key))) => {
                    if let Some(action) = keymap::action_for(app.context(), &key) {
                        app.handle(action);
                        if !app.should_quit() {
                            draw(terminal, app).context("failed to draw")?;
                        }
                    }
                }
                Some(Ok(Event::Resize(..))) => draw(terminal, app).context("failed to draw")?,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e).context("failed to read the terminal"),
                None => anyhow::bail!("the terminal's key reader stopped"),
            }
        }
    }
    Ok(())
}

fn bench_app(sites: usize) -> App {
    let mut app = App::new(synth::info(), TuiOptions::default());
    app.on_feed(Feed::Snapshot(Box::new(synth::many(sites, 10))));
    app.on_feed(Feed::Snapshot(Box::new(synth::many(sites, 11))));
    app
}

/// Mean time to render one 120×40 frame of the call sites view with `sites`
/// synthetic sites on a `TestBackend` (for benchmarks).
#[must_use]
pub fn bench_render(sites: usize) -> Duration {
    const FRAMES: u32 = 20;
    let mut app = bench_app(sites);
    let Ok(mut terminal) = Terminal::new(TestBackend::new(120, 40));
    let Ok(()) = draw(&mut terminal, &mut app);
    let start = Instant::now();
    for i in 0..FRAMES {
        // Move the cursor so that every frame differs.
        app.handle(if i % 2 == 0 {
            Action::Down
        } else {
            Action::PageDown
        });
        let Ok(()) = draw(&mut terminal, &mut app);
    }
    start.elapsed() / FRAMES
}

/// Time for the app to ingest one snapshot of `sites` synthetic sites
/// (rates, sorting, filtering: the per-update work).
#[must_use]
pub fn bench_update(sites: usize) -> Duration {
    let mut app = bench_app(sites);
    let next = synth::many(sites, 12);
    let start = Instant::now();
    app.on_feed(Feed::Snapshot(Box::new(next)));
    start.elapsed()
}
