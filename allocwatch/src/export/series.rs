//! `record --interval`: the sites and pools CSV files as time series, written
//! window by window while the recording runs.
//!
//! Each window is the difference of two cumulative snapshots, so the windows
//! of a run add up exactly to its totals. Files are published (renamed from
//! their `O_EXCL` temporary name to the final path, see
//! [`AtomicFile::publish`]) with their header as soon as tracing starts, and
//! each window's rows then reach the file in one `write(2)` when the window
//! ends: a recording killed with SIGKILL leaves a readable CSV holding every
//! window completed before the kill.

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use super::AtomicFile;
use super::csv::{PoolsCsv, SitesCsv};
use crate::stats::Snapshot;

/// An output file that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {source}", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Collects what a CSV writer produces and hands it to the file in one
/// `write_all` per flush, so that a window's rows land together.
pub struct WindowSink {
    file: File,
    buf: Vec<u8>,
}

impl Write for WindowSink {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let r = self.file.write_all(&self.buf);
            self.buf.clear();
            r?;
        }
        Ok(())
    }
}

struct Out<W> {
    w: W,
    path: PathBuf,
}

/// The CSV files of an `--interval` recording.
pub struct IntervalCsv {
    sites: Option<Out<SitesCsv<WindowSink>>>,
    pools: Option<Out<PoolsCsv<WindowSink>>>,
    /// The cumulative snapshot at the end of the last window written.
    last: Snapshot,
}

fn open(f: AtomicFile) -> Result<(WindowSink, PathBuf), WriteError> {
    let path = f.dest().to_path_buf();
    let (file, path) = f.publish().map_err(|source| WriteError { path, source })?;
    Ok((
        WindowSink {
            file,
            buf: Vec::new(),
        },
        path,
    ))
}

fn werr(path: &std::path::Path) -> impl Fn(io::Error) -> WriteError + '_ {
    move |source| WriteError {
        path: path.to_path_buf(),
        source,
    }
}

fn close(sink: io::Result<WindowSink>, path: PathBuf) -> Result<PathBuf, WriteError> {
    let sink = sink.map_err(werr(&path))?;
    sink.file.sync_all().map_err(werr(&path))?;
    Ok(path)
}

impl IntervalCsv {
    /// Writes the headers and publishes the files at their final paths.
    ///
    /// # Errors
    /// When a file cannot be written or renamed into place.
    /// With `mode`, the sites CSV gets the `mode` column.
    pub fn start(
        sites: Option<AtomicFile>,
        pools: Option<AtomicFile>,
        mode: bool,
    ) -> Result<Self, WriteError> {
        let sites = match sites {
            Some(f) => {
                let (sink, path) = open(f)?;
                let mut w =
                    SitesCsv::with_columns(sink, None, mode).map_err(|e| werr(&path)(e.into()))?;
                w.flush().map_err(werr(&path))?;
                Some(Out { w, path })
            }
            None => None,
        };
        let pools = match pools {
            Some(f) => {
                let (sink, path) = open(f)?;
                let mut w = PoolsCsv::new(sink).map_err(|e| werr(&path)(e.into()))?;
                w.flush().map_err(werr(&path))?;
                Some(Out { w, path })
            }
            None => None,
        };
        Ok(IntervalCsv {
            sites,
            pools,
            last: Snapshot::default(),
        })
    }

    /// The start of the next window, since the recording began.
    #[must_use]
    pub fn window_start(&self) -> Duration {
        self.last.elapsed
    }

    /// Ends a window at `now` (a cumulative snapshot): writes and flushes the
    /// rows of everything since the previous window.
    ///
    /// # Errors
    /// When a file cannot be written.
    pub fn window(&mut self, now: &Snapshot) -> Result<(), WriteError> {
        let start = self.last.elapsed;
        let w = now.since(&self.last);
        if let Some(o) = &mut self.sites {
            o.w.write_window(start, &w)
                .map_err(|e| werr(&o.path)(e.into()))?;
            o.w.flush().map_err(werr(&o.path))?;
        }
        if let Some(o) = &mut self.pools {
            o.w.write_window(start, &w)
                .map_err(|e| werr(&o.path)(e.into()))?;
            o.w.flush().map_err(werr(&o.path))?;
        }
        self.last = now.clone();
        Ok(())
    }

    /// Writes the last (usually shorter) window up to `end`, the run's final
    /// snapshot, syncs the files and returns their paths.
    ///
    /// # Errors
    /// When a file cannot be written.
    pub fn finish(mut self, end: &Snapshot) -> Result<Vec<PathBuf>, WriteError> {
        let activity = end.total_allocs != self.last.total_allocs
            || end.total_bytes != self.last.total_bytes
            || end.pools.len() != self.last.pools.len()
            || end
                .pools
                .iter()
                .zip(&self.last.pools)
                .any(|(a, b)| a.stats != b.stats);
        if end.elapsed > self.last.elapsed || activity {
            self.window(end)?;
        }
        let mut paths = Vec::new();
        if let Some(o) = self.sites {
            paths.push(close(o.w.into_inner(), o.path)?);
        }
        if let Some(o) = self.pools {
            paths.push(close(o.w.into_inner(), o.path)?);
        }
        Ok(paths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::test_support::{frame, site, snapshot};

    fn read(p: &std::path::Path) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    /// A sites series in a new directory, and the path it is published at.
    fn sites_series() -> (tempfile::TempDir, std::path::PathBuf, IntervalCsv) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sites.csv");
        let ic = IntervalCsv::start(Some(AtomicFile::create(&path).unwrap()), None, false).unwrap();
        (dir, path, ic)
    }

    #[test]
    fn windows_are_differences_and_reach_the_file_at_once() {
        let (dir, path, mut ic) = sites_series();
        // Published with its header before the first window.
        assert_eq!(read(&path).lines().count(), 1);
        let st = || vec![frame("main.f", 3)];
        ic.window(&snapshot(
            1,
            vec![site("main.f", 3, "main.T", 10, 240, st())],
        ))
        .unwrap();
        assert_eq!(
            read(&path).lines().nth(1),
            Some("0.000,1.000,main.f,main.f.go,3,main.T,10,240,10.0,240.0")
        );
        // Nothing new in the second window: no row for it.
        ic.window(&snapshot(
            2,
            vec![site("main.f", 3, "main.T", 10, 240, st())],
        ))
        .unwrap();
        assert_eq!(read(&path).lines().count(), 2);
        let mut end = snapshot(
            2,
            vec![
                site("main.f", 3, "main.T", 15, 360, st()),
                site("main.g", 4, "main.U", 1, 8, vec![frame("main.g", 4)]),
            ],
        );
        end.elapsed = Duration::from_millis(2500);
        let paths = ic.finish(&end).unwrap();
        assert_eq!(paths, std::slice::from_ref(&path));
        let text = read(&path);
        let rows: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(
            rows,
            [
                "0.000,1.000,main.f,main.f.go,3,main.T,10,240,10.0,240.0",
                "2.000,2.500,main.f,main.f.go,3,main.T,5,120,10.0,240.0",
                "2.000,2.500,main.g,main.g.go,4,main.U,1,8,2.0,16.0",
            ]
        );
        // No temporary file left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn bytes_read_after_their_count_still_add_up() {
        let (_dir, path, mut ic) = sites_series();
        let st = || vec![frame("main.f", 3)];
        ic.window(&snapshot(1, vec![site("main.f", 3, "main.T", 2, 24, st())]))
            .unwrap();
        ic.finish(&snapshot(2, vec![site("main.f", 3, "main.T", 2, 48, st())]))
            .unwrap();
        let text = read(&path);
        let bytes: u64 = text
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(7).unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(bytes, 48, "{text}");
    }

    #[test]
    fn empty_tail_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pools.csv");
        let mut ic =
            IntervalCsv::start(None, Some(AtomicFile::create(&path).unwrap()), false).unwrap();
        let s = snapshot(1, vec![]);
        ic.window(&s).unwrap();
        ic.finish(&s).unwrap();
        assert_eq!(read(&path).lines().count(), 1);
    }
}
