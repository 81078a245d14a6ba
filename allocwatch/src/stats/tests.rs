use super::*;

/// Resolves each stack to a site named after its second frame.
struct Fake;

fn frame(name: &str) -> Frame {
    Frame {
        function: Arc::from(name),
        file: Arc::from("main.go"),
        line: 7,
    }
}

impl Resolver for Fake {
    fn resolve_alloc(&mut self, typ: u64, frames: &[u64]) -> Resolved {
        let f = frame(&format!("main.f{:x}", frames.get(1).copied().unwrap_or(0)));
        Resolved {
            site: SiteKey {
                function: f.function.clone(),
                file: f.file.clone(),
                line: f.line,
                type_name: if typ == 0 {
                    Arc::from("<untyped>")
                } else {
                    Arc::from(format!("T{typ}"))
                },
            },
            stack: Arc::from(vec![f]),
            pool_new_func: None,
        }
    }
    fn caller(&mut self, ret: u64) -> Frame {
        frame(&format!("main.c{ret:x}"))
    }
    fn pool_symbol(&mut self, pool: u64) -> Option<Arc<str>> {
        (pool < 100).then(|| Arc::from(format!("pool{pool}")))
    }
    fn function_name(&mut self, code: u64) -> Arc<str> {
        Arc::from(format!("new{code}"))
    }
}

#[test]
fn same_site_from_different_stacks_is_one_site() {
    let mut a = Aggregator::new(Fake);
    a.add_alloc(1, 24, &[0, 0x10, 0x20]);
    a.add_alloc(1, 24, &[0, 0x10, 0x30]);
    a.add_alloc(1, 24, &[0, 0x10, 0x20]);
    a.add_alloc(2, 100, &[0, 0x10, 0x20]);
    let s = a.snapshot(Duration::from_secs(1), Counters::default());
    assert_eq!(a.distinct_stacks(), 3);
    assert_eq!(s.sites.len(), 2);
    assert_eq!(s.total_allocs, 4);
    assert_eq!(s.total_bytes, 172);
    let top = s.sites_by_bytes();
    assert_eq!(&*top[0].key.type_name, "T2");
    assert_eq!(top[1].allocs, 3);
    assert_eq!(top[1].bytes, 72);
}

#[test]
fn since_gives_the_window() {
    let mut a = Aggregator::new(Fake);
    a.add_alloc(1, 8, &[0, 1]);
    let s1 = a.snapshot(
        Duration::from_secs(1),
        Counters {
            hits: 1,
            ..Counters::default()
        },
    );
    a.add_alloc(1, 8, &[0, 1]);
    a.add_alloc(1, 8, &[0, 2]);
    let s2 = a.snapshot(
        Duration::from_secs(3),
        Counters {
            hits: 3,
            ..Counters::default()
        },
    );
    let d = s2.since(&s1);
    assert_eq!(d.elapsed, Duration::from_secs(2));
    assert_eq!(d.total_allocs, 2);
    assert_eq!(d.counters.hits, 2);
    assert_eq!(d.sites.len(), 2);
    assert!(d.sites.iter().all(|s| s.allocs == 1));
}

#[test]
fn size_buckets() {
    assert_eq!(size_bucket(0), 0);
    assert_eq!(size_bucket(1), 0);
    assert_eq!(size_bucket(2), 1);
    assert_eq!(size_bucket(3), 2);
    assert_eq!(size_bucket(4), 2);
    assert_eq!(size_bucket(5), 3);
    assert_eq!(size_bucket(u64::MAX), SIZE_BUCKETS - 1);
}

/// Callers of a pool operation: one return address.
fn c(ret: u64) -> Callers {
    let mut v = [0; allocwatch_common::POOL_CALLERS];
    v[0] = ret;
    v
}

#[test]
fn pool_miss_cost_per_pool_and_window() {
    let mut a = Aggregator::new(Fake);
    a.add_pool(PoolOp::Get, 7, 0, c(0x100));
    a.add_pool(PoolOp::New, 7, 0x999, c(0x100));
    a.set_pool_miss_total(7, 1, 1024);
    // A pool seen by its miss cost first gets its name from its first caller.
    a.set_pool_miss_total(0x1234, 3, 3 * 65536);
    a.add_pool(PoolOp::Get, 0x1234, 0, c(0x300));
    let s0 = a.snapshot(Duration::from_secs(1), Counters::default());
    let p7 = s0.pools.iter().find(|p| p.pool == 7).expect("pool 7");
    assert_eq!(p7.stats.miss_cost(), Some((1, 1024)));
    let heap = s0
        .pools
        .iter()
        .find(|p| p.pool == 0x1234)
        .expect("heap pool");
    assert_eq!(&*heap.name, "0x1234 (main.c300)");
    assert_eq!(heap.stats.miss_cost(), Some((3, 3 * 65536)));
    // Cumulative kernel totals: only the difference counts.
    a.set_pool_miss_total(0x1234, 5, 5 * 65536);
    let s1 = a.snapshot(Duration::from_secs(2), Counters::default());
    let w = s1.since(&s0);
    let heap = w
        .pools
        .iter()
        .find(|p| p.pool == 0x1234)
        .expect("heap pool");
    assert_eq!(heap.stats.miss_cost(), Some((2, 2 * 65536)));
    // A window during which sampled mode counted has no miss cost.
    a.mark_pools_sampled();
    let s2 = a.snapshot(Duration::from_secs(3), Counters::default());
    assert!(
        s2.since(&s1)
            .pools
            .iter()
            .all(|p| p.stats.miss_cost().is_none())
    );
    let s3 = a.snapshot(Duration::from_secs(4), Counters::default());
    assert!(
        s3.since(&s2)
            .pools
            .iter()
            .all(|p| p.stats.miss_cost().is_some())
    );
}

#[test]
fn pool_counts_and_ratio() {
    let mut a = Aggregator::new(Fake);
    for i in 0..10 {
        a.add_pool(PoolOp::Get, 7, 0, c(0x100));
        if i == 0 {
            a.add_pool(PoolOp::New, 7, 0x999, c(0x100));
        }
        a.add_pool(PoolOp::Put, 7, 0, c(0x200));
    }
    a.add_pool(PoolOp::Get, 8, 0, c(0x300));
    a.add_pool(PoolOp::Nil, 8, 0, c(0x300));
    let s = a.snapshot(Duration::from_secs(1), Counters::default());
    assert_eq!(s.pools.len(), 2);
    let p = &s.pools[0];
    assert_eq!(&*p.name, "pool7");
    assert_eq!(p.new_func.as_deref(), Some("new2457"));
    assert_eq!(
        p.stats,
        PoolStats {
            gets: 10,
            misses: 1,
            nil_returns: 0,
            puts: 10,
            ..PoolStats::default()
        }
    );
    assert_eq!(p.stats.hit_ratio(), Some(0.9));
    assert_eq!(p.callers.len(), 2);
    let q = &s.pools[1];
    assert_eq!(q.stats.hits(), 0);
    assert_eq!(q.stats.gets_without_puts(), 1);
}

/// The expected values are the Go runtime's formula worked out by hand
/// (`scaleHeapSample` in runtime/pprof/protomem.go:
/// `scale = 1 / (1 - math.Exp(-avgSize/rate))`, no scaling when `rate <= 1`):
/// size = rate gives 1 / (1 − e^−1) = 1 / (1 − 0.36787944117) = 1.58197670687;
/// 24 B at 512 KiB gives x = 24 / 524288 = 4.5776e−5 and, with
/// 1 / (1 − e^−x) = 1/x + 1/2 + x/12 − …, 21845.3333 + 0.5 + 0.0000038 =
/// 21845.83334.
#[test]
fn sample_scale_matches_pprof() {
    let r = 512 * 1024;
    assert!((sample_scale(512 * 1024, r) - 1.581_976_706_87).abs() < 1e-9);
    assert!((sample_scale(24, r) - 21_845.833_34).abs() < 1e-4);
    assert_eq!(sample_scale(100, 0), 1.0);
    assert_eq!(sample_scale(100, 1), 1.0);
}

#[test]
fn sampled_keys_are_scaled() {
    let mut a = Aggregator::new(Fake);
    a.set_sample_rate(1024);
    let key = AggKey {
        typ: 0,
        frames: [0x10, 0, 0, 0, 0, 0, 0, 0],
        nframes: 1,
        bucket: allocwatch_common::SAMPLED_BIT | 1024,
    };
    a.set_key_totals(&key, 10, 10 * 1024);
    let s = a.snapshot(Duration::from_secs(1), Counters::default());
    // 10 samples of 1024 B at rate 1024: 10 / (1 − e^−1) = 15.82 allocations
    // (see sample_scale_matches_pprof), rounded to 16, of 1024 B each.
    assert_eq!(s.total_allocs, 16);
    assert_eq!(s.total_bytes, 16 * 1024);
}

/// A sample the kernel could not aggregate (its runtime frames are deeper
/// than a key: maps that grow) is scaled like an aggregated one, and its
/// site is the aggregated samples' row, not a second, `<untyped>` one.
#[test]
fn unaggregated_samples_are_scaled_into_the_same_row() {
    let mut a = Aggregator::new(Fake);
    a.set_sample_rate(4096);
    let key = AggKey {
        typ: 0,
        frames: [0x10, 0, 0, 0, 0, 0, 0, 0],
        nframes: 1,
        bucket: allocwatch_common::SAMPLED_BIT | 1024,
    };
    a.set_key_totals(&key, 2, 2 * 1024);
    // The same site reached through a deep stack, sent alone.
    a.add_sample(1024, &[0, 0x10, 0x99, 0x98]);
    a.add_sample(1024, &[0, 0x10, 0x99, 0x98]);
    let s = a.snapshot(Duration::from_secs(1), Counters::default());
    assert_eq!(s.sites.len(), 1, "{:?}", s.sites);
    let site = &s.sites[0];
    assert_eq!(&*site.key.type_name, "");
    // 1 / (1 - e^(-1024/4096)) = 4.5208 allocations per sample, by hand.
    let per_sample = 4.520_812_f64;
    assert_eq!(site.allocs, 2 * (2.0 * per_sample).round() as u64);
    assert_eq!(site.bytes, site.allocs * 1024);
    assert_eq!(
        site.mode(),
        super::Counted::Only(crate::plan::Mode::Sampled)
    );
    assert_eq!(site.mode().name(), "sampled");
}

#[test]
fn size_hist_is_sparse_sorted_and_subtracts() {
    let mut h = SizeHist::default();
    h.add(5, 3);
    h.add(2, 1);
    h.add(5, 2);
    h.add(SIZE_BUCKETS + 10, 7); // the last bucket takes anything above
    h.add(9, 0);
    assert_eq!(
        h.iter().collect::<Vec<_>>(),
        vec![(2, 1), (5, 5), (SIZE_BUCKETS - 1, 7)]
    );
    assert_eq!(h.get(5), 5);
    assert_eq!(h.get(9), 0);
    let mut earlier = SizeHist::default();
    earlier.add(5, 5);
    earlier.add(2, 4);
    assert_eq!(
        h.since(&earlier).iter().collect::<Vec<_>>(),
        vec![(SIZE_BUCKETS - 1, 7)]
    );
}
