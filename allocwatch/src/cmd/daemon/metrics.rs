//! `GET /metrics`: the targets' counts in the Prometheus text format (or
//! OpenMetrics, when the scraper asks for it), encoded by the
//! `prometheus-client` crate from [`TargetView`]s taken at the scrape.
//!
//! Names follow Prometheus practice: one `allocwatch_` prefix, base units
//! (`_bytes`), counters ending in `_total`. Cardinality is bounded: each
//! process exports its `--max-sites` hottest sites (by bytes) as series
//! of their own, and the rest as one series with `function="(other)"`, so
//! that totals stay right.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::fleet::{State, TargetView};
use crate::stats::{SiteStats, Snapshot};

/// The `function` of the series that adds up the sites beyond `--max-sites`.
pub const OTHER: &str = "(other)";

/// Which text format to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// The format a scraper's `Accept` header asks for.
    #[must_use]
    pub fn from_accept(accept: &str) -> Format {
        if accept.contains("application/openmetrics-text") {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    #[must_use]
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The exposition of `views`, with each process's `max_sites` hottest sites.
///
/// # Errors
/// Only if formatting fails (it writes into a `String`).
pub fn render(
    views: Vec<TargetView>,
    max_sites: usize,
    format: Format,
) -> Result<String, fmt::Error> {
    let mut registry = Registry::with_prefix("allocwatch");
    registry.register_collector(Box::new(Exposition {
        views: one_per_pid(views),
        max_sites,
    }));
    let mut out = String::new();
    match format {
        Format::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
        }
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry)?,
    }
    Ok(out)
}

/// One allocation series: a site, or the sum of the sites beyond the top.
#[derive(Debug, PartialEq, Eq)]
pub struct SiteRow<'a> {
    pub function: &'a str,
    pub file: &'a str,
    /// "" for the (other) series.
    pub line: String,
    pub type_name: &'a str,
    /// `exact`, `sampled` (estimates) or `mixed`.
    pub mode: &'static str,
    pub allocs: u64,
    pub bytes: u64,
}

/// The series of one snapshot: its `max_sites` sites with most bytes, then,
/// if any are left, one `(other)` row with their sum.
#[must_use]
pub fn site_rows(snap: &Snapshot, max_sites: usize) -> Vec<SiteRow<'_>> {
    let sites = snap.sites_by_bytes();
    let (top, rest) = sites.split_at(sites.len().min(max_sites));
    let mut rows: Vec<SiteRow<'_>> = top
        .iter()
        .map(|s| SiteRow {
            function: &s.key.function,
            file: &s.key.file,
            line: s.key.line.to_string(),
            type_name: &s.key.type_name,
            mode: s.mode().name(),
            allocs: s.allocs,
            bytes: s.bytes,
        })
        .collect();
    if !rest.is_empty() {
        let sum = |f: fn(&SiteStats) -> u64| rest.iter().map(|s| f(s)).sum::<u64>();
        let (allocs, sampled) = (sum(|s| s.allocs), sum(|s| s.sampled_allocs));
        let mode = match sampled {
            0 => "exact",
            s if s >= allocs => "sampled",
            _ => "mixed",
        };
        rows.push(SiteRow {
            function: OTHER,
            file: "",
            line: String::new(),
            type_name: "",
            mode,
            allocs,
            bytes: sum(|s| s.bytes),
        });
    }
    rows
}

/// One target per PID, so that no two series have the same labels: the
/// process traced now hides the earlier ones of its PID (it exec'd, or it
/// took the PID of one that exited: its counters start again, which
/// Prometheus reads as a counter reset); else the one with counts that went
/// last; else the one listed last. `views` lists the traced first, then the
/// others in the order they went.
fn one_per_pid(views: Vec<TargetView>) -> Vec<TargetView> {
    let rank = |v: &TargetView| match (&v.state, &v.snap) {
        (State::Tracing, _) => 2,
        (_, Some(_)) => 1,
        (_, None) => 0,
    };
    let mut kept: Vec<TargetView> = Vec::with_capacity(views.len());
    for v in views {
        match kept.iter_mut().find(|k| k.meta.pid == v.meta.pid) {
            Some(k) if rank(&v) >= rank(k) && k.state != State::Tracing => *k = v,
            Some(_) => {}
            None => kept.push(v),
        }
    }
    kept
}

/// The collector asked at the scrape.
#[derive(Debug)]
struct Exposition {
    views: Vec<TargetView>,
    max_sites: usize,
}

/// A target's own labels: pid, exe, container.
type TargetLabels<'a> = [(&'static str, &'a str); 3];

impl Exposition {
    /// Every target that has counts (traced now, or exited), with its labels.
    fn counted(&self) -> impl Iterator<Item = (&TargetView, String, &Snapshot)> {
        self.views
            .iter()
            .filter_map(|v| v.snap.as_deref().map(|s| (v, v.meta.pid.to_string(), s)))
    }

    fn labels<'a>(v: &'a TargetView, pid: &'a str) -> TargetLabels<'a> {
        [
            ("pid", pid),
            ("exe", &v.meta.exe),
            ("container", &v.meta.container),
        ]
    }

    fn targets(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let tracing = self
            .views
            .iter()
            .filter(|v| v.state == State::Tracing)
            .count();
        let g = ConstGauge::new(i64::try_from(tracing).unwrap_or(i64::MAX));
        g.encode(enc.encode_descriptor(
            "targets",
            "Processes traced now.",
            None,
            MetricType::Gauge,
        )?)
    }

    fn info(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let mut m = enc.encode_descriptor(
            "target",
            "A process traced now, or exited within --retain; mode is the mode counting now.",
            None,
            MetricType::Info,
        )?;
        for (v, pid, _) in self.counted() {
            let [p, e, c] = Self::labels(v, &pid);
            let mode = v.mode.map_or("", |m| m.name());
            m.encode_info(&[p, e, c, ("go_version", &v.meta.go_version), ("mode", mode)])?;
        }
        Ok(())
    }

    fn allocs(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let help = [
            (
                "alloc_objects",
                "Heap allocations per site and type since tracing started (mode=sampled: estimates).",
            ),
            (
                "alloc_bytes",
                "Bytes requested from the heap allocator per site and type since tracing started (mode=sampled: estimates).",
            ),
        ];
        for (i, (name, help)) in help.into_iter().enumerate() {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (v, pid, snap) in self.counted() {
                let [p, e, c] = Self::labels(v, &pid);
                for r in site_rows(snap, self.max_sites) {
                    let labels = [
                        p,
                        e,
                        c,
                        ("function", r.function),
                        ("file", r.file),
                        ("line", r.line.as_str()),
                        ("type", r.type_name),
                        ("mode", r.mode),
                    ];
                    let value = if i == 0 { r.allocs } else { r.bytes };
                    ConstCounter::new(value).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }

    fn pools(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        type Value = fn(&crate::stats::PoolStats) -> Option<u64>;
        let families: [(&str, &str, Value); 4] = [
            ("pool_gets", "sync.Pool Get calls.", |s| Some(s.gets)),
            ("pool_misses", "sync.Pool Get calls that called New.", |s| {
                Some(s.misses)
            }),
            ("pool_puts", "sync.Pool Put calls.", |s| Some(s.puts)),
            (
                "pool_miss_alloc_bytes",
                "Bytes allocated inside the pool's New calls (exact mode only).",
                |s| s.miss_cost().map(|(_, bytes)| bytes),
            ),
        ];
        for (name, help, value) in families {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (v, pid, snap) in self.counted() {
                let [p, e, c] = Self::labels(v, &pid);
                for pool in &snap.pools {
                    let Some(x) = value(&pool.stats) else {
                        continue;
                    };
                    let new_func = pool.new_func.as_deref().unwrap_or("");
                    let labels = [p, e, c, ("pool", &*pool.name), ("new_func", new_func)];
                    ConstCounter::new(x).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }

    fn per_target(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        type Value = fn(&Snapshot) -> u64;
        let counters: [(&str, &str, Value); 2] = [
            (
                "events_lost",
                "Events that did not fit in the ring buffer (counts are low by what they carried).",
                |s| s.counters.lost,
            ),
            ("probe_hits", "Uprobe hits in the target.", |s| {
                s.counters.hits
            }),
        ];
        for (name, help, value) in counters {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (v, pid, snap) in self.counted() {
                ConstCounter::new(value(snap)).encode(m.encode_family(&Self::labels(v, &pid))?)?;
            }
        }
        let mut m = enc.encode_descriptor(
            "tracing_cost_ratio",
            "Estimated share of one CPU core that tracing costs the target (probe hits per second since the last snapshot at least 10 s old, × the cost of one hit).",
            None,
            MetricType::Gauge,
        )?;
        for (v, pid, _) in self.counted() {
            ConstGauge::new(v.cost_ratio).encode(m.encode_family(&Self::labels(v, &pid))?)?;
        }
        Ok(())
    }
}

impl Collector for Exposition {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        self.targets(&mut enc)?;
        self.info(&mut enc)?;
        self.allocs(&mut enc)?;
        self.pools(&mut enc)?;
        self.per_target(&mut enc)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use super::*;
    use crate::cmd::daemon::fleet::Meta;
    use crate::export::test_support::{frame, site, snapshot};
    use crate::plan::Mode;

    fn view(pid: u32, state: State, snap: Option<Snapshot>) -> TargetView {
        TargetView {
            meta: Arc::new(Meta {
                pid,
                exe: "/srv/api".into(),
                container: String::new(),
                go_version: "go1.27.3".into(),
                plan_mode: Some(Mode::Exact),
                since: SystemTime::now(),
            }),
            state,
            mode: Some(Mode::Exact),
            snap: snap.map(Arc::new),
            cost_ratio: 0.25,
            budget: None,
        }
    }

    fn sites() -> Snapshot {
        let st = vec![frame("main.main", 3)];
        let mut sampled = site("main.c", 30, "", 10, 100, st.clone());
        sampled.sampled_allocs = 10;
        snapshot(
            5,
            vec![
                site("main.a", 10, "main.T", 7, 7000, st.clone()),
                site("main.b", 20, "[]uint8", 3, 3000, st),
                sampled,
            ],
        )
    }

    #[test]
    fn top_sites_and_the_rest() {
        let snap = sites();
        let rows = site_rows(&snap, 1);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].function, rows[0].allocs, rows[0].bytes),
            ("main.a", 7, 7000)
        );
        assert_eq!(rows[0].line, "10");
        let other = &rows[1];
        assert_eq!(
            (other.function, other.allocs, other.bytes),
            (OTHER, 13, 3100)
        );
        assert_eq!(other.mode, "mixed", "one exact and one sampled site");
        assert_eq!(
            site_rows(&snap, 3).len(),
            3,
            "no (other) when every site fits"
        );
        let total: u64 = site_rows(&snap, 2).iter().map(|r| r.bytes).sum();
        assert_eq!(
            total, snap.total_bytes,
            "the (other) series keeps the total"
        );
    }

    #[test]
    fn exposition() {
        let views = vec![
            view(42, State::Tracing, Some(sites())),
            view(
                7,
                State::Skipped {
                    reason: "not Go".into(),
                },
                None,
            ),
        ];
        let text = render(views, 2, Format::Prometheus).expect("render");
        for want in [
            "# TYPE allocwatch_targets gauge\nallocwatch_targets 1\n",
            "allocwatch_target_info{pid=\"42\",exe=\"/srv/api\",container=\"\",go_version=\"go1.27.3\",mode=\"exact\"} 1\n",
            "# TYPE allocwatch_alloc_objects_total counter\n",
            "allocwatch_alloc_objects_total{pid=\"42\",exe=\"/srv/api\",container=\"\",function=\"main.a\",file=\"main.a.go\",line=\"10\",type=\"main.T\",mode=\"exact\"} 7\n",
            "allocwatch_alloc_bytes_total{pid=\"42\",exe=\"/srv/api\",container=\"\",function=\"main.b\",file=\"main.b.go\",line=\"20\",type=\"[]uint8\",mode=\"exact\"} 3000\n",
            "allocwatch_alloc_bytes_total{pid=\"42\",exe=\"/srv/api\",container=\"\",function=\"(other)\",file=\"\",line=\"\",type=\"\",mode=\"sampled\"} 100\n",
            "allocwatch_probe_hits_total{pid=\"42\",exe=\"/srv/api\",container=\"\"} 0\n",
            "allocwatch_events_lost_total{pid=\"42\",exe=\"/srv/api\",container=\"\"} 0\n",
            "allocwatch_tracing_cost_ratio{pid=\"42\",exe=\"/srv/api\",container=\"\"} 0.25\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(
            !text.contains("pid=\"7\""),
            "a skipped process has no series:\n{text}"
        );
        let om = render(
            vec![view(42, State::Tracing, Some(sites()))],
            2,
            Format::OpenMetrics,
        )
        .expect("render");
        assert!(om.ends_with("# EOF\n"), "{om}");
        assert!(
            om.contains("# TYPE allocwatch_alloc_objects counter\n"),
            "{om}"
        );
    }

    #[test]
    fn one_target_per_pid() {
        let exited = |how: &str| State::Exited {
            at: SystemTime::now(),
            how: how.into(),
        };
        let skipped = State::Skipped {
            reason: "not a Go executable".into(),
        };
        // Traced first, then the others in the order they went.
        let views = vec![
            view(7, State::Tracing, Some(sites())),
            view(8, skipped.clone(), None),
            view(7, exited("replaced itself (exec)"), Some(sites())),
            view(8, exited("exited"), Some(sites())),
            view(9, exited("exited"), Some(sites())),
            view(
                9,
                exited("exited, and its PID now belongs to another process"),
                Some(sites()),
            ),
            view(9, skipped, None),
        ];
        let kept = one_per_pid(views);
        let got: Vec<(u32, &str, bool)> = kept
            .iter()
            .map(|v| (v.meta.pid, v.state.name(), v.snap.is_some()))
            .collect();
        assert_eq!(
            got,
            [
                (7, "tracing", true),
                (8, "exited", true),
                (9, "exited", true)
            ]
        );
        // Of two that went with counts, the one that went last.
        assert!(
            matches!(&kept[2].state, State::Exited { how, .. } if how.contains("another process")),
            "{:?}",
            kept[2].state
        );
        let text = render(kept, 10, Format::Prometheus).expect("render");
        let info: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("allocwatch_target_info{"))
            .collect();
        assert_eq!(info.len(), 3, "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        let st = vec![frame("main.main", 3)];
        let snap = snapshot(
            1,
            vec![site("main.f", 1, "struct { S \"json\" }", 1, 8, st)],
        );
        let text = render(
            vec![view(1, State::Tracing, Some(snap))],
            10,
            Format::Prometheus,
        )
        .expect("render");
        assert!(text.contains(r#"type="struct { S \"json\" }""#), "{text}");
    }
}
