//! The `poolwrap` fixture (pools as real services build them: one `New`
//! shared by buckets, a generic wrapper pool, a forwarding helper, pools
//! without a data symbol) and the checks of what allocwatch made of it.

use serde::Deserialize;

use super::RunSummary;

#[derive(Debug, Deserialize)]
pub struct PoolwrapCount {
    #[serde(default)]
    pub func: String,
    pub pool: String,
    pub new_func: String,
    pub gets: u64,
    pub misses: u64,
    pub puts: u64,
    pub miss_allocs: u64,
    pub miss_bytes: u64,
    pub metric_objects: u64,
}

#[derive(Debug, Deserialize)]
pub struct PoolwrapResult {
    pub go: String,
    pub pools: Vec<PoolwrapCount>,
    pub callsites: Vec<PoolwrapCount>,
}

#[derive(Debug, Deserialize)]
pub struct PoolwrapRow {
    pub pool: String,
    pub new_func: String,
    pub gets: u64,
    pub misses: u64,
    pub puts: u64,
    pub miss_allocs: u64,
    pub miss_bytes: u64,
}

/// The user function that names each of the fixture's pools, and the
/// functions that use it.
fn users(role: &str) -> (&'static str, &'static [&'static str]) {
    match role {
        "small" => ("main.useSmall", &["main.useSmall"]),
        "large" => ("main.useLarge", &["main.useLarge"]),
        "generic" => ("main.useGeneric", &["main.useGeneric", "main.useHelper"]),
        other => panic!("unknown pool {other}"),
    }
}

/// The callers the `--json` summary lists under the pool named `name`:
/// `(function, [gets, misses, puts])`.
fn summary_callers(summary: &RunSummary, name: &str) -> Vec<(String, [u64; 3])> {
    summary
        .pools
        .iter()
        .filter(|p| p.name == name)
        .flat_map(|p| &p.callers)
        .map(|c| (c.function.clone(), [c.gets, c.misses, c.puts]))
        .collect()
}

/// `0x… (user)`: an address, then the user function in parentheses.
fn named_after(name: &str, user: &str) -> bool {
    name.strip_suffix(&format!(" ({user})"))
        .and_then(|a| a.strip_prefix("0x"))
        .is_some_and(|hex| !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A function name with its type arguments elided, as the runtime prints
/// it (`main.NewPool[...].func1`; the symbol table spells the shape out).
fn elide_type_args(name: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in name.chars() {
        match c {
            '[' => {
                if depth == 0 {
                    out.push_str("[...]");
                }
                depth += 1;
            }
            ']' => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// The `poolwrap` fixture's counts against allocwatch's (`rows` of its
/// `--pools-csv`, and its `--json` summary).
pub fn check_poolwrap(
    what: &str,
    rows: &[PoolwrapRow],
    res: &PoolwrapResult,
    summary: &RunSummary,
) {
    // The fixture's own story: one miss for the small bucket, one per Get
    // for the large one, and the runtime saw at least what the New calls
    // allocate (plus at most the first-use arrays of the pools themselves).
    let want = |role: &str| {
        res.pools
            .iter()
            .find(|p| p.pool == role)
            .unwrap_or_else(|| panic!("{what}: fixture has no {role} pool"))
    };
    let (small, large, generic) = (want("small"), want("large"), want("generic"));
    assert_eq!((small.misses, large.misses), (1, 300), "{what}: fixture");
    assert_eq!(small.new_func, large.new_func, "{what}: buckets share New");
    let phase = small.miss_allocs + large.miss_allocs;
    assert!(
        (phase..=phase + 4).contains(&small.metric_objects),
        "{what}: the runtime counted {} objects in the buckets' phase, New made {phase}",
        small.metric_objects
    );
    assert!(
        (generic.miss_allocs..=generic.miss_allocs + 2).contains(&generic.metric_objects),
        "{what}: the runtime counted {} objects in the generic phase, New made {}",
        generic.metric_objects,
        generic.miss_allocs
    );

    for p in &res.pools {
        let (namer, callers) = users(&p.pool);
        let row = rows
            .iter()
            .find(|r| named_after(&r.pool, namer))
            .unwrap_or_else(|| {
                panic!(
                    "{what} ({}): no pool named `0x… ({namer})` in the CSV: {:?}",
                    res.go,
                    rows.iter().map(|r| &r.pool).collect::<Vec<_>>()
                )
            });
        assert_eq!(
            elide_type_args(&row.new_func),
            elide_type_args(&p.new_func),
            "{what}: New of {}",
            p.pool
        );
        assert_eq!(
            (row.gets, row.misses, row.puts),
            (p.gets, p.misses, p.puts),
            "{what}: {} pool (gets, misses, puts)",
            p.pool
        );
        assert_eq!(
            (row.miss_allocs, row.miss_bytes),
            (p.miss_allocs, p.miss_bytes),
            "{what}: {} pool: allocations and bytes of its own misses",
            p.pool
        );

        // The callers are the functions that asked, past the wrappers.
        let listed = summary_callers(summary, &row.pool);
        let mut want_callers: Vec<(String, [u64; 3])> = res
            .callsites
            .iter()
            .filter(|c| callers.contains(&c.func.as_str()))
            .map(|c| (c.func.clone(), [c.gets, c.misses, c.puts]))
            .collect();
        let mut got = listed.clone();
        want_callers.sort();
        got.sort();
        assert_eq!(
            got, want_callers,
            "{what}: callers of the {} pool\n{summary:#?}",
            p.pool
        );
    }
}
