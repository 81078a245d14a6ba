//! The CSV schemas of `record` (and of the dashboard's `e` export).
//!
//! Sites: `window_start_s,window_end_s,function,file,line,type,allocs,bytes,allocs_per_s,bytes_per_s`,
//! one row per (function, file, line, type) and window, sorted by bytes descending;
//! with `--source`, a column `escape`: the compiler's reason chain (empty when unknown);
//! with `--mode sampled` or `--max-overhead`, a last column `mode`: `exact`, `sampled` (the
//! counts are estimates scaled from the runtime's samples) or `mixed` (both: the mode switched
//! within the window).
//! Pools: `window_start_s,window_end_s,pool,new_func,gets,hits,misses,nil_returns,puts,hit_ratio,miss_allocs,miss_bytes`;
//! `miss_allocs`/`miss_bytes`: the allocations made inside this pool's own `New` calls (requested
//! sizes), empty for a window (partly) traced in sampled mode, where they are not known.

use std::io::Write;
use std::time::Duration;

use crate::stats::{SiteKey, Snapshot};

pub const SITES_HEADER: [&str; 10] = [
    "window_start_s",
    "window_end_s",
    "function",
    "file",
    "line",
    "type",
    "allocs",
    "bytes",
    "allocs_per_s",
    "bytes_per_s",
];

pub const POOLS_HEADER: [&str; 12] = [
    "window_start_s",
    "window_end_s",
    "pool",
    "new_func",
    "gets",
    "hits",
    "misses",
    "nil_returns",
    "puts",
    "hit_ratio",
    "miss_allocs",
    "miss_bytes",
];

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

/// The `window_start_s` and `window_end_s` columns of a window starting at `start`.
fn bounds(start: Duration, window: &Snapshot) -> (String, String) {
    (secs(start), secs(start + window.elapsed))
}

/// A rate column: one decimal, empty for a window without time.
fn rate(r: Option<f64>) -> String {
    r.map_or_else(String::new, |r| format!("{r:.1}"))
}

/// The text of the `escape` column for a site.
pub type EscapeColumn = Box<dyn Fn(&SiteKey) -> String + Send>;

/// A CSV writer for site rows; `header` writes the header once.
pub struct SitesCsv<W: Write> {
    w: csv::Writer<W>,
    escape: Option<EscapeColumn>,
    mode: bool,
}

impl<W: Write> SitesCsv<W> {
    pub fn new(out: W) -> csv::Result<Self> {
        Self::with_columns(out, None, false)
    }

    /// The columns, then `escape` (filled by `escape`) if given, then
    /// `mode` if asked for.
    pub fn with_columns(out: W, escape: Option<EscapeColumn>, mode: bool) -> csv::Result<Self> {
        let mut w = csv::Writer::from_writer(out);
        let extra = escape
            .is_some()
            .then_some("escape")
            .into_iter()
            .chain(mode.then_some("mode"));
        w.write_record(SITES_HEADER.into_iter().chain(extra))?;
        Ok(SitesCsv { w, escape, mode })
    }

    /// Writes one row per site of `window` (a difference of two snapshots,
    /// or a whole run), `start` being the window's start since recording began.
    pub fn write_window(&mut self, start: Duration, window: &Snapshot) -> csv::Result<()> {
        let (s, e) = bounds(start, window);
        for site in window.sites_by_bytes() {
            let k = &site.key;
            let row = [
                s.as_str(),
                e.as_str(),
                &k.function,
                &k.file,
                &k.line.to_string(),
                &k.type_name,
                &site.allocs.to_string(),
                &site.bytes.to_string(),
                &rate(window.per_s(site.allocs)),
                &rate(window.per_s(site.bytes)),
            ];
            let escape = self.escape.as_ref().map(|f| f(k));
            let extra = escape
                .as_deref()
                .into_iter()
                .chain(self.mode.then(|| site.mode().name()));
            self.w.write_record(row.into_iter().chain(extra))?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }

    /// Flushes and returns the underlying writer.
    pub fn into_inner(self) -> std::io::Result<W> {
        self.w.into_inner().map_err(|e| e.into_error())
    }
}

/// A CSV writer for pool rows.
pub struct PoolsCsv<W: Write> {
    w: csv::Writer<W>,
}

impl<W: Write> PoolsCsv<W> {
    pub fn new(out: W) -> csv::Result<Self> {
        let mut w = csv::Writer::from_writer(out);
        w.write_record(POOLS_HEADER)?;
        Ok(PoolsCsv { w })
    }

    pub fn write_window(&mut self, start: Duration, window: &Snapshot) -> csv::Result<()> {
        let (s, e) = bounds(start, window);
        for p in &window.pools {
            let st = &p.stats;
            let (miss_allocs, miss_bytes) = st
                .miss_cost()
                .map_or_else(Default::default, |(n, b)| (n.to_string(), b.to_string()));
            self.w.write_record([
                s.as_str(),
                e.as_str(),
                &p.name,
                p.new_func.as_deref().unwrap_or(""),
                &st.gets.to_string(),
                &st.hits().to_string(),
                &st.misses.to_string(),
                &st.nil_returns.to_string(),
                &st.puts.to_string(),
                &st.hit_ratio()
                    .map(|r| format!("{r:.4}"))
                    .unwrap_or_default(),
                &miss_allocs,
                &miss_bytes,
            ])?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }

    /// Flushes and returns the underlying writer.
    pub fn into_inner(self) -> std::io::Result<W> {
        self.w.into_inner().map_err(|e| e.into_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Counters, Frame, SiteKey, SiteStats, SizeHist};
    use std::sync::Arc;

    #[test]
    fn header_and_rows() {
        let key = SiteKey {
            function: Arc::from("main.f"),
            file: Arc::from("/x/main.go"),
            line: 3,
            type_name: Arc::from("main.T"),
        };
        let snap = Snapshot {
            elapsed: Duration::from_secs(2),
            sites: vec![SiteStats {
                key,
                allocs: 10,
                bytes: 240,
                size_hist: SizeHist::default(),
                stack: Arc::from(Vec::<Frame>::new()),
                pool_new_func: None,
                sampled_allocs: 0,
            }],
            pools: vec![],
            counters: Counters::default(),
            total_allocs: 10,
            total_bytes: 240,
        };
        let mut w = SitesCsv::new(Vec::new()).unwrap();
        w.write_window(Duration::ZERO, &snap).unwrap();
        let out = String::from_utf8(w.into_inner().unwrap()).unwrap();
        assert_eq!(
            out,
            "window_start_s,window_end_s,function,file,line,type,allocs,bytes,allocs_per_s,bytes_per_s\n\
             0.000,2.000,main.f,/x/main.go,3,main.T,10,240,5.0,120.0\n"
        );
        let mut w = SitesCsv::with_columns(
            Vec::new(),
            Some(Box::new(|k: &SiteKey| {
                format!("returned pointer: moved to heap: {}", k.line)
            })),
            false,
        )
        .unwrap();
        w.write_window(Duration::ZERO, &snap).unwrap();
        let out = String::from_utf8(w.into_inner().unwrap()).unwrap();
        assert_eq!(
            out,
            "window_start_s,window_end_s,function,file,line,type,allocs,bytes,allocs_per_s,bytes_per_s,escape\n\
             0.000,2.000,main.f,/x/main.go,3,main.T,10,240,5.0,120.0,returned pointer: moved to heap: 3\n"
        );
    }

    #[test]
    fn mode_column_says_how_each_row_was_counted() {
        let site = |f: &str, allocs, sampled_allocs| SiteStats {
            key: SiteKey {
                function: Arc::from(f),
                file: Arc::from("/x/main.go"),
                line: 3,
                type_name: Arc::from(""),
            },
            allocs,
            bytes: allocs,
            size_hist: SizeHist::default(),
            stack: Arc::from(Vec::<Frame>::new()),
            pool_new_func: None,
            sampled_allocs,
        };
        let snap = Snapshot {
            elapsed: Duration::from_secs(1),
            sites: vec![
                site("main.a", 30, 0),
                site("main.b", 20, 20),
                site("main.c", 10, 4),
            ],
            ..Snapshot::default()
        };
        let mut w =
            SitesCsv::with_columns(Vec::new(), Some(Box::new(|_: &SiteKey| "e".into())), true)
                .unwrap();
        w.write_window(Duration::ZERO, &snap).unwrap();
        let out = String::from_utf8(w.into_inner().unwrap()).unwrap();
        assert_eq!(
            out,
            "window_start_s,window_end_s,function,file,line,type,allocs,bytes,allocs_per_s,bytes_per_s,escape,mode\n\
             0.000,1.000,main.a,/x/main.go,3,,30,30,30.0,30.0,e,exact\n\
             0.000,1.000,main.b,/x/main.go,3,,20,20,20.0,20.0,e,sampled\n\
             0.000,1.000,main.c,/x/main.go,3,,10,10,10.0,10.0,e,mixed\n"
        );
    }
}

#[cfg(test)]
mod pool_tests {
    use super::*;
    use crate::stats::{PoolSnapshot, PoolStats};
    use std::sync::Arc;

    #[test]
    fn pool_rows_carry_the_miss_cost_or_leave_it_empty() {
        let pool = |name: &str, sampled_reads| PoolSnapshot {
            pool: 0xc000_1000,
            name: Arc::from(name),
            new_func: Some(Arc::from("main.newBucket.func1")),
            stats: PoolStats {
                gets: 301,
                misses: 300,
                nil_returns: 0,
                puts: 1,
                miss_allocs: 300,
                miss_bytes: 300 * 65536,
                sampled_reads,
            },
            callers: Vec::new(),
        };
        let snap = Snapshot {
            elapsed: Duration::from_secs(2),
            pools: vec![
                pool("0xc0001000 (main.useLarge)", 0),
                pool("main.sampledPool", 1),
            ],
            ..Snapshot::default()
        };
        let mut w = PoolsCsv::new(Vec::new()).unwrap();
        w.write_window(Duration::ZERO, &snap).unwrap();
        let out = String::from_utf8(w.into_inner().unwrap()).unwrap();
        assert_eq!(
            out,
            "window_start_s,window_end_s,pool,new_func,gets,hits,misses,nil_returns,puts,hit_ratio,miss_allocs,miss_bytes\n\
             0.000,2.000,0xc0001000 (main.useLarge),main.newBucket.func1,301,1,300,0,1,0.0033,300,19660800\n\
             0.000,2.000,main.sampledPool,main.newBucket.func1,301,1,300,0,1,0.0033,,\n"
        );
    }
}
