//! Progress lines for long work, on stderr when it is a terminal, and
//! nothing otherwise (scripts and logs get only allocwatch's own lines):
//! reading and planning a large executable, the escape analysis' `go
//! build`, the wait for `record --duration`.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress line; cleared when dropped.
pub struct Progress(ProgressBar);

fn draw_target() -> ProgressDrawTarget {
    if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

impl Progress {
    /// A spinner saying `msg`, redrawn every 100 ms.
    #[must_use]
    pub fn spinner(msg: impl Into<String>) -> Progress {
        let pb = ProgressBar::with_draw_target(None, draw_target());
        pb.set_style(
            ProgressStyle::with_template("allocwatch: {spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        pb.set_message(msg.into());
        pb.enable_steady_tick(Duration::from_millis(100));
        pb.tick();
        Progress(pb)
    }

    /// A bar over `total` (a duration) from now, saying `msg`; it moves by
    /// itself.
    #[must_use]
    pub fn timed(msg: impl Into<String>, total: Duration) -> Progress {
        let ms = u64::try_from(total.as_millis()).unwrap_or(u64::MAX).max(1);
        let pb = ProgressBar::with_draw_target(Some(ms), draw_target());
        pb.set_style(
            ProgressStyle::with_template("allocwatch: {msg} [{bar:30}] {elapsed} of {len_s}")
                .map(|s| {
                    s.progress_chars("=> ").with_key(
                        "len_s",
                        |st: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                            let _ = write!(w, "{}s", st.len().unwrap_or(0).div_ceil(1000));
                        },
                    )
                })
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb.set_message(msg.into());
        pb.tick();
        if !pb.is_hidden() {
            let bar = pb.clone();
            let start = std::time::Instant::now();
            let _ = std::thread::Builder::new()
                .name("allocwatch-progress".into())
                .spawn(move || {
                    while !bar.is_finished() {
                        bar.set_position(
                            u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
                        );
                        std::thread::sleep(Duration::from_millis(250));
                    }
                });
        }
        Progress(pb)
    }

    /// Changes the message.
    pub fn say(&self, msg: impl Into<String>) {
        self.0.set_message(msg.into());
    }

    /// Prints `line` on stderr above the progress line.
    pub fn println(&self, line: &str) {
        if self.0.is_hidden() {
            eprintln!("{line}");
        } else {
            self.0.suspend(|| eprintln!("{line}"));
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
