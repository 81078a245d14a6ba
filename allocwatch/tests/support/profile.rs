//! The Go runtime's own allocation profile (`allocs`, written by the
//! fixtures `profcmp` and `iters` before and after their workload) against
//! allocwatch's sites CSV: shared by tests/runtime_profile.rs and, on what
//! the arm64 VM recorded, tests/arm64.rs.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use allocwatch::export::pprof::Profile;
use prost::Message;

use super::SiteRow;

/// Frames of the runtime's allocation machinery: a sample's site is the
/// first frame after them (README, "Which function is the site, and how this compares with pprof").
fn is_runtime(function: &str) -> bool {
    function.starts_with("runtime.")
        || function.starts_with("internal/runtime/")
        || function.starts_with("reflect.unsafe_New")
        || function.starts_with("internal/reflectlite.unsafe_New")
        || function == "internal/bytealg.MakeNoZero"
        || function == "reflect.growslice"
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Totals {
    pub objects: i64,
    pub bytes: i64,
}

/// Per site function (or `function:line`): the objects and bytes of a
/// gzipped `allocs` profile.
pub fn profile_by_site(path: &Path, by_line: bool) -> HashMap<String, Totals> {
    let gz = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut raw)
        .expect("gunzip profile");
    let p = Profile::decode(&raw[..]).expect("decode profile.proto");
    let s = |i: i64| p.string_table[usize::try_from(i).expect("string index")].as_str();
    let index = |ty: &str| {
        p.sample_type
            .iter()
            .position(|t| s(t.r#type) == ty)
            .unwrap_or_else(|| panic!("profile has no {ty}"))
    };
    let (obj_i, bytes_i) = (index("alloc_objects"), index("alloc_space"));
    let funcs: HashMap<u64, &str> = p.function.iter().map(|f| (f.id, s(f.name))).collect();
    let locs: HashMap<u64, Vec<(&str, i64)>> = p
        .location
        .iter()
        .map(|l| {
            let lines = l.line.iter().map(|ln| (funcs[&ln.function_id], ln.line));
            (l.id, lines.collect())
        })
        .collect();
    let mut by = HashMap::<String, Totals>::new();
    for sample in &p.sample {
        // Innermost first: each location's lines are innermost first too.
        let site = sample
            .location_id
            .iter()
            .flat_map(|id| locs[id].iter())
            .find(|(f, _)| !is_runtime(f));
        let Some((function, line)) = site else {
            continue;
        };
        let key = if by_line {
            format!("{function}:{line}")
        } else {
            (*function).to_string()
        };
        let t = by.entry(key).or_default();
        t.objects += sample.value[obj_i];
        t.bytes += sample.value[bytes_i];
    }
    by
}

/// What the runtime allocates for a thread it starts (`newm` → `allocm`,
/// on the system stack): its `m` (`runtime.m`, `runtime.mPadded` from Go
/// 1.24), the two profiling stack buffers (`[]uintptr`, `mProfStackInit`,
/// Go ≥ 1.23) and its `g0` and signal goroutine (`runtime.g`). When the
/// workload wakes a thread, allocwatch walks the frame pointers from there
/// to the user's line and counts them there; the runtime's profile does not
/// (its stack of these ends in the runtime). Left out of allocwatch's side
/// of the comparison. Seen once in CI and reproduced under load: Go 1.23,
/// `main.all-range1:103`, 5 objects more than the runtime's profile, 4,768
/// bytes: 2 `[]uintptr` (2,144 B), 1 `runtime.m` (1,760 B), 2 `runtime.g`
/// (864 B).
pub fn thread_start_type(t: &str) -> bool {
    matches!(
        t,
        "runtime.mPadded" | "runtime.m" | "runtime.g" | "[]uintptr"
    )
}

/// The runtime's account of the window between the two profiles.
pub fn profile_diff(dir: &Path, by_line: bool) -> HashMap<String, Totals> {
    profile_diff_of(&dir.join("before.pb.gz"), &dir.join("after.pb.gz"), by_line)
}

/// [`profile_diff`] of two profiles by their paths.
pub fn profile_diff_of(before: &Path, after: &Path, by_line: bool) -> HashMap<String, Totals> {
    let before = profile_by_site(before, by_line);
    let mut after = profile_by_site(after, by_line);
    for (f, b) in before {
        let a = after.entry(f).or_default();
        a.objects -= b.objects;
        a.bytes -= b.bytes;
    }
    after
}

/// allocwatch's totals per function (or `function:line`), from its sites
/// CSV, without what a thread start allocates ([`thread_start_type`]).
pub fn by_site(rows: &[SiteRow], by_line: bool) -> HashMap<String, Totals> {
    let mut mine = HashMap::<String, Totals>::new();
    for r in rows.iter().filter(|r| !thread_start_type(&r.type_name)) {
        let key = if by_line {
            format!("{}:{}", r.function, r.line)
        } else {
            r.function.clone()
        };
        let t = mine.entry(key).or_default();
        t.objects += i64::try_from(r.allocs).expect("count");
        t.bytes += i64::try_from(r.bytes).expect("bytes");
    }
    mine
}

pub const MIB: i64 = 1 << 20;

/// Sampled mode against the runtime's profile of the same window: every
/// function with ≥ 8 MiB there is within 25 % in bytes, and no row is
/// `<untyped>` (tests/runtime_profile.rs says why).
pub fn check_sampled(
    what: &str,
    mine: &HashMap<String, Totals>,
    runtime: &HashMap<String, Totals>,
    rows: &[SiteRow],
) {
    let big: Vec<_> = runtime.iter().filter(|(_, t)| t.bytes >= 8 * MIB).collect();
    assert!(
        big.len() >= 8,
        "{what}: the workload's big functions are in the runtime's profile: {runtime:?}"
    );
    for want in [
        "text/template.addValueFuncs",
        "text/template.addFuncs",
        "main.(*Store).Set",
        "main.growLargeMap",
    ] {
        assert!(
            big.iter().any(|(f, _)| *f == want),
            "{what}: {want} allocates ≥ 8 MiB in the runtime's profile: {runtime:?}"
        );
    }
    let mut report = String::new();
    let mut bad = 0;
    for (f, t) in &big {
        let got = mine.get(*f).map_or(0, |m| m.bytes);
        #[expect(clippy::cast_precision_loss, reason = "ratios of byte counts")]
        let ratio = got as f64 / t.bytes as f64;
        let ok = (0.75..=1.25).contains(&ratio);
        bad += usize::from(!ok);
        report += &format!(
            "{} {f}: runtime {:.1} MiB, allocwatch {:.1} MiB ({ratio:.2})\n",
            if ok { " " } else { "!" },
            t.bytes as f64 / MIB as f64,
            got as f64 / MIB as f64
        );
    }
    eprintln!("{what}:\n{report}");
    assert_eq!(bad, 0, "{what}: sampled estimates off by > 25 %:\n{report}");
    let untyped: Vec<_> = rows.iter().filter(|r| r.type_name == "<untyped>").collect();
    assert!(
        untyped.is_empty(),
        "{what}: a sample knows no type; these rows duplicate a site: {untyped:?}"
    );
}

/// Exact mode against the runtime's rate-1 profile of the `iters`
/// fixture: every site (function and line) of the workload counts the same
/// objects, tiny allocations at least as many (tests/runtime_profile.rs
/// says why).
pub fn check_exact_rate_1(
    what: &str,
    mine: &HashMap<String, Totals>,
    runtime: &HashMap<String, Totals>,
    rows: &[SiteRow],
) {
    let mut report = String::new();
    let mut bad = 0;
    let mut compared = 0;
    // The workload's own functions (main and snapshot also run outside
    // the profiles' window).
    let in_window = |key: &str| {
        let f = key.rsplit_once(':').map_or(key, |(f, _)| f);
        f.starts_with("main.") && f != "main.main" && f != "main.snapshot"
    };
    let mut names: Vec<&String> = runtime
        .keys()
        .chain(mine.keys())
        .filter(|f| in_window(f))
        .collect();
    names.sort();
    names.dedup();
    for f in names {
        let r = runtime.get(f).copied().unwrap_or_default();
        let m = mine.get(f).copied().unwrap_or_default();
        // allocwatch counts requested sizes; the runtime tiny blocks.
        let tiny = m.objects > 0 && m.bytes / m.objects < 16;
        let ok = if tiny {
            m.objects >= r.objects
        } else {
            m.objects == r.objects
        };
        compared += 1;
        bad += usize::from(!ok);
        report += &format!(
            "{} {f}: runtime {} objects {} B, allocwatch {} objects {} B{}\n",
            if ok { " " } else { "!" },
            r.objects,
            r.bytes,
            m.objects,
            m.bytes,
            if tiny { " (tiny)" } else { "" }
        );
        if !ok {
            // allocwatch's rows there, by type (runtime types too).
            for row in rows
                .iter()
                .filter(|row| format!("{}:{}", row.function, row.line) == *f)
            {
                report += &format!(
                    "    {}: {} objects {} B\n",
                    row.type_name, row.allocs, row.bytes
                );
            }
        }
    }
    eprintln!("{what}:\n{report}");
    assert!(compared >= 9, "{what}: the loop bodies are seen:\n{report}");
    for body in [
        "main.backward-range1:",
        "main.all-range1:",
        "main.keys-range1:",
    ] {
        let n: i64 = runtime
            .iter()
            .filter(|(k, _)| k.starts_with(body))
            .map(|(_, t)| t.objects)
            .sum();
        assert_eq!(
            n, 8000,
            "{what}: the runtime counts 8000 objects in {body}:\n{report}"
        );
    }
    assert_eq!(
        bad, 0,
        "{what}: exact counts differ from the runtime's:\n{report}"
    );
}
