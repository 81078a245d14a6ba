//! Suggestions, derived from a site's counts and its escape reasons, and
//! from pool counters. They are hints, and always say so (`suggestion:`).

use super::index::{Cause, SiteEscape};
use crate::stats::PoolSnapshot;

/// A site's average allocation size from which it is worth pooling.
pub const POOL_MIN_AVG_BYTES: u64 = 512;
/// …and the allocation rate (per second) from which it is "frequent".
pub const POOL_MIN_RATE: f64 = 100.0;
/// Without a rate (a whole `record` run of unknown length): allocations.
pub const POOL_MIN_ALLOCS: u64 = 1000;

/// What a suggestion needs to know about a site.
#[derive(Clone, Copy, Debug)]
pub struct SiteFacts<'a> {
    pub type_name: &'a str,
    pub allocs: u64,
    pub bytes: u64,
    /// Allocations per second, when known.
    pub allocs_per_s: Option<f64>,
    /// Allocated by a `sync.Pool`'s `New` (a miss of an existing pool).
    pub from_pool: bool,
}

/// Whether a site is a `sync.Pool` candidate: frequent, large on average,
/// one concrete reusable type, not already from a pool.
#[must_use]
pub fn pool_candidate(f: &SiteFacts<'_>) -> bool {
    let Some(avg) = f.bytes.checked_div(f.allocs) else {
        return false;
    };
    let frequent = match f.allocs_per_s {
        Some(r) => r >= POOL_MIN_RATE,
        None => f.allocs >= POOL_MIN_ALLOCS,
    };
    let reusable = !(f.type_name.is_empty()
        || f.type_name == "string"
        || f.type_name == "<untyped>"
        || super::index::is_closure_type(f.type_name));
    frequent && avg >= POOL_MIN_AVG_BYTES && reusable && !f.from_pool
}

/// The suggestions for one site, most useful first.
#[must_use]
pub fn site_suggestions(esc: Option<&SiteEscape>, f: &SiteFacts<'_>) -> Vec<String> {
    let mut out = Vec::new();
    if pool_candidate(f) {
        let avg = f.bytes / f.allocs.max(1);
        let freq = match f.allocs_per_s {
            Some(r) => format!("{r:.0}/s"),
            None => format!("{} allocations", f.allocs),
        };
        out.push(format!(
            "suggestion: pool candidate ({freq} of {}, avg {}, no pool): reuse them with a sync.Pool (Get, reset, Put back when done)",
            f.type_name,
            crate::format::bytes_spaced(avg, crate::format::LargestUnit::MiB)
        ));
    }
    if let Some(e) = esc {
        match e.causes().as_slice() {
            [Cause::Interface] => out.push(
                "suggestion: the only reason is an interface conversion: keep the concrete type on this path (a typed field, parameter or slice instead of any/interface{}), or convert once outside the loop".to_string(),
            ),
            [Cause::ClosureCapture] => out.push(
                "suggestion: the only reason is a closure capture: pass the values as arguments (or use a method on a struct that already lives) instead of capturing them in a function literal that outlives the call".to_string(),
            ),
            [Cause::GoroutineCapture] => out.push(
                "suggestion: the only reason is a goroutine capture: pass the values as arguments to the goroutine's function, and do not share locals the goroutine modifies".to_string(),
            ),
            _ => {}
        }
    }
    out
}

/// Advice about a pool whose Gets mostly miss, naming the callers that
/// never Put.
#[must_use]
pub fn pool_advice(p: &PoolSnapshot) -> Option<String> {
    let st = &p.stats;
    if st.gets < 10 {
        return None;
    }
    if p.new_func.is_none() && st.nil_returns * 2 > st.gets {
        return Some(format!(
            "suggestion: pool {}: {} of {} Gets return nil (the pool has no New): give it a New, or handle the nil",
            p.name, st.nil_returns, st.gets
        ));
    }
    let ratio = st.hit_ratio()?;
    if ratio >= 0.5 {
        return None;
    }
    let leaky: Vec<String> = p
        .callers
        .iter()
        .filter(|c| c.stats.gets > 0 && c.stats.puts == 0)
        .map(|c| c.caller.function.to_string())
        .collect();
    let misses = format!(
        "{:.0}% of {} Gets miss and call New",
        (1.0 - ratio) * 100.0,
        st.gets
    );
    Some(if !leaky.is_empty() {
        format!(
            "suggestion: badly used pool {}: {misses}; {} {} never Put{} back: Put each object back when done with it (e.g. defer {}.Put(x))",
            p.name,
            leaky.join(", "),
            if leaky.len() == 1 {
                "Gets and"
            } else {
                "Get and"
            },
            if leaky.len() == 1 { "s it" } else { " them" },
            p.name.rsplit('.').next().unwrap_or(&p.name)
        )
    } else if st.puts * 2 < st.gets {
        format!(
            "suggestion: badly used pool {}: {misses}; only {} of {} objects are Put back",
            p.name, st.puts, st.gets
        )
    } else {
        format!(
            "suggestion: pool {}: {misses} although objects are Put back: the GC empties pools (two cycles), or Gets run on other Ps than the Puts",
            p.name
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::escape::index::Reason;
    use crate::stats::{Frame, PoolCallerStats, PoolStats};
    use std::sync::Arc;

    fn facts(type_name: &str, allocs: u64, bytes: u64, rate: Option<f64>) -> SiteFacts<'_> {
        SiteFacts {
            type_name,
            allocs,
            bytes,
            allocs_per_s: rate,
            from_pool: false,
        }
    }

    fn esc(causes: &[Cause]) -> SiteEscape {
        SiteEscape {
            reasons: causes
                .iter()
                .map(|&cause| Reason {
                    cause,
                    headline: "x escapes to heap".into(),
                    at: "main.go:1:1".into(),
                    flow: vec![],
                    note: None,
                })
                .collect(),
        }
    }

    #[test]
    fn pool_candidates() {
        assert!(pool_candidate(&facts(
            "[]uint8",
            5000,
            5000 * 4096,
            Some(1000.0)
        )));
        assert!(pool_candidate(&facts("main.Big", 2000, 2000 * 600, None)));
        // Too small, too rare, not reusable, already pooled.
        assert!(!pool_candidate(&facts(
            "[]uint8",
            5000,
            5000 * 64,
            Some(1000.0)
        )));
        assert!(!pool_candidate(&facts("[]uint8", 50, 50 * 4096, Some(5.0))));
        assert!(!pool_candidate(&facts(
            "string",
            5000,
            5000 * 4096,
            Some(1000.0)
        )));
        let mut f = facts("[]uint8", 5000, 5000 * 4096, Some(1000.0));
        f.from_pool = true;
        assert!(!pool_candidate(&f));
        assert!(!pool_candidate(&facts("[]uint8", 0, 0, None)));
        let s = site_suggestions(None, &facts("[]uint8", 5000, 5000 * 4096, Some(1000.0)));
        assert_eq!(s.len(), 1);
        assert!(
            s[0].starts_with(
                "suggestion: pool candidate (1000/s of []uint8, avg 4.0 KiB, no pool)"
            ),
            "{}",
            s[0]
        );
    }

    #[test]
    fn only_reasons_are_named() {
        let small = facts("main.T", 10, 240, Some(1.0));
        let one = |c: &[Cause]| site_suggestions(Some(&esc(c)), &small);
        assert!(one(&[Cause::Interface])[0].contains("only reason is an interface conversion"));
        assert!(
            one(&[Cause::ClosureCapture, Cause::ClosureCapture])[0].contains("closure capture")
        );
        assert!(one(&[Cause::GoroutineCapture])[0].contains("goroutine capture"));
        assert!(one(&[Cause::Interface, Cause::ReturnedPointer]).is_empty());
        assert!(one(&[Cause::ReturnedPointer]).is_empty());
    }

    fn pool(gets: u64, misses: u64, puts: u64, callers: &[(&str, u64, u64)]) -> PoolSnapshot {
        PoolSnapshot {
            pool: 1,
            name: Arc::from("main.scratchPool"),
            new_func: Some(Arc::from("main.newScratch")),
            stats: PoolStats {
                gets,
                misses,
                nil_returns: 0,
                puts,
                ..PoolStats::default()
            },
            callers: callers
                .iter()
                .map(|(f, g, p)| PoolCallerStats {
                    caller: Frame {
                        function: Arc::from(*f),
                        file: Arc::from("/x/main.go"),
                        line: 1,
                    },
                    stats: PoolStats {
                        gets: *g,
                        misses: 0,
                        nil_returns: 0,
                        puts: *p,
                        ..PoolStats::default()
                    },
                })
                .collect(),
        }
    }

    #[test]
    fn pools() {
        let a = pool_advice(&pool(1000, 1000, 0, &[("main.handleReport", 1000, 0)])).unwrap();
        assert!(
            a.contains("badly used pool main.scratchPool: 100% of 1000 Gets miss"),
            "{a}"
        );
        assert!(
            a.contains("main.handleReport Gets and never Puts it back"),
            "{a}"
        );
        assert!(a.contains("defer scratchPool.Put(x)"), "{a}");
        assert_eq!(
            pool_advice(&pool(1000, 3, 1000, &[("main.w", 1000, 1000)])),
            None
        );
        let a = pool_advice(&pool(1000, 900, 1000, &[("main.w", 1000, 1000)])).unwrap();
        assert!(a.contains("although objects are Put back"), "{a}");
        assert_eq!(pool_advice(&pool(5, 5, 0, &[])), None);
    }
}
