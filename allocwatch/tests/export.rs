//! Offline analysis outputs of `record`, against the real kernel and real Go
//! programs (Go 1.21 and 1.27):
//!
//! - `--pprof`: the real `go tool pprof` of the project's toolchain reads the
//!   profile of the `allocs` fixture; `-top -sample_index=alloc_objects`
//!   lists every allocating function with exactly the fixture's counts,
//!   `-sample_index=alloc_space` with exactly its bytes, and both agree with
//!   the CSV for every function; `-list` and `-traces` work.
//! - The kernel's counters reach the profile's comments: a flood of new keys
//!   through a one-page ring buffer loses events, and `go tool pprof
//!   -comments` shows how many and how many only carried a stack.
//! - `--folded` (bytes, and `--folded-weight allocs`) adds up to the CSV's
//!   totals, per function too; `--svg` is well-formed XML, names the
//!   fixture's functions and shows the same total.
//! - `--speedscope`: valid JSON with speedscope's `$schema`; its two
//!   profiles (`alloc_space` in bytes, `alloc_objects`) add up to the run's
//!   totals, every stack is valid frame indices ending in the type, and
//!   each fixture function weighs exactly what it allocated.
//! - `--interval`: the `phases` fixture allocates nothing for 1 s, then
//!   main.PhaseA at 2000/s for 2 s, then main.PhaseB for 2 s; the windows
//!   show each change in the right windows, and add up to the exact counts.
//! - SIGKILL mid-run (`--interval`, `--pid` on `spin`): the CSV files stay
//!   readable and hold every window completed before the kill.

mod support;

use support::{allocwatch, parse_result, skip_unless_root};

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use support::{GoToolchain, Variant, fixture, target_dir, toolchain};

#[derive(Debug, Deserialize)]
struct Site {
    func: String,
    count: i64,
    bytes: i64,
}

#[derive(Debug, Deserialize)]
struct Phase {
    name: String,
    #[serde(default)]
    func: String,
    #[serde(default, rename = "type")]
    type_name: String,
    start_s: f64,
    end_s: f64,
    count: u64,
}

#[derive(Debug, Deserialize)]
struct FixtureResult {
    go: String,
    sites: Vec<Site>,
    #[serde(default)]
    phases: Vec<Phase>,
    #[serde(default)]
    rate: u64,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
struct Row {
    window_start_s: String,
    window_end_s: String,
    function: String,
    line: u32,
    #[serde(rename = "type")]
    type_name: String,
    allocs: u64,
    bytes: u64,
}

fn read_rows(path: &Path) -> Vec<Row> {
    support::read_csv(path)
}

/// [`support::record_json`], and no event lost.
fn record(args: &[&std::ffi::OsStr], bin: &Path, env: &[(&str, &str)]) -> (String, String) {
    let run = support::record_json(args, bin, env);
    assert_eq!(
        run.summary.events.lost, 0,
        "events were lost:\n{:#?}",
        run.summary
    );
    (run.stdout, run.stderr)
}

/// `go tool pprof ARGS profile` with `tc`, returning stdout.
fn pprof(tc: &GoToolchain, args: &[&str], profile: &Path) -> String {
    let out = Command::new(tc.go())
        .arg("tool")
        .arg("pprof")
        .args(args)
        .arg(profile)
        .env("GOROOT", &tc.goroot)
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOCACHE", target_dir().join("gocache").join(&tc.version))
        .env("GOPATH", target_dir().join("gopath"))
        .env("PPROF_TMPDIR", std::env::temp_dir())
        .stdin(Stdio::null())
        .output()
        .expect("run go tool pprof");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "go {} tool pprof {args:?} failed ({}):\n{}\n{stdout}",
        tc.version,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `pprof -top` parsed: total, and flat value per function.
fn pprof_top(text: &str, suffix: &str) -> (u64, HashMap<String, u64>) {
    let num = |s: &str| -> u64 {
        s.strip_suffix(suffix)
            .unwrap_or(s)
            .parse()
            .unwrap_or_else(|_| panic!("not an exact number: {s:?} in\n{text}"))
    };
    let total = text
        .lines()
        .find_map(|l| l.split("Total samples = ").nth(1))
        .map(|t| num(t.trim()))
        .unwrap_or_else(|| panic!("no total in\n{text}"));
    let mut flat = HashMap::new();
    let mut in_table = false;
    for l in text.lines() {
        if l.trim_start().starts_with("flat  flat%") {
            in_table = true;
            continue;
        }
        if !in_table {
            continue;
        }
        let cols: Vec<&str> = l.split_whitespace().collect();
        assert!(cols.len() >= 6, "bad -top line {l:?}");
        flat.insert(cols[5..].join(" "), num(cols[0]));
    }
    (total, flat)
}

/// Sums of allocations and bytes per function.
fn by_function(rows: &[Row]) -> HashMap<String, (u64, u64)> {
    let mut m: HashMap<String, (u64, u64)> = HashMap::new();
    for r in rows {
        let e = m.entry(r.function.clone()).or_default();
        e.0 += r.allocs;
        e.1 += r.bytes;
    }
    m
}

/// The fixture's expected (allocs, bytes) per function, where known.
fn expected(res: &FixtureResult) -> BTreeMap<&str, (Option<u64>, Option<u64>)> {
    let mut m: BTreeMap<&str, (Option<u64>, Option<u64>)> = BTreeMap::new();
    for s in &res.sites {
        let e = m.entry(&s.func).or_insert((Some(0), Some(0)));
        e.0 = e.0.zip(u64::try_from(s.count).ok()).map(|(a, b)| a + b);
        e.1 = e.1.zip(u64::try_from(s.bytes).ok()).map(|(a, b)| a + b);
    }
    m
}

/// `12345678` as inferno writes it: `12,345,678`.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A small well-formedness check of an XML document: one root element,
/// every element closed in order, quoted attributes, valid references.
fn check_xml(doc: &str) -> Result<(), String> {
    fn check_refs(text: &str) -> Result<(), String> {
        let mut rest = text;
        while let Some(i) = rest.find('&') {
            let r = &rest[i + 1..];
            let end = r
                .find(';')
                .ok_or_else(|| format!("bad reference at {r:.20?}"))?;
            let name = &r[..end];
            let ok = matches!(name, "amp" | "lt" | "gt" | "quot" | "apos")
                || name
                    .strip_prefix("#x")
                    .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
                || name
                    .strip_prefix('#')
                    .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
            if !ok {
                return Err(format!("bad reference &{name};"));
            }
            rest = &r[end + 1..];
        }
        Ok(())
    }
    let mut stack: Vec<String> = Vec::new();
    let mut roots = 0;
    let mut rest = doc;
    while let Some(i) = rest.find('<') {
        check_refs(&rest[..i])?;
        if stack.is_empty() && !rest[..i].trim().is_empty() {
            return Err(format!("text outside the root: {:.40?}", &rest[..i]));
        }
        rest = &rest[i..];
        let skip = |open: &str, close: &str, rest: &mut &str| -> Result<bool, String> {
            if !rest.starts_with(open) {
                return Ok(false);
            }
            let end = rest.find(close).ok_or_else(|| format!("unclosed {open}"))?;
            *rest = &rest[end + close.len()..];
            Ok(true)
        };
        if skip("<!--", "-->", &mut rest)? || skip("<?", "?>", &mut rest)? {
            continue;
        }
        if rest.starts_with("<![CDATA[") {
            if stack.is_empty() {
                return Err("CDATA outside the root".into());
            }
            skip("<![CDATA[", "]]>", &mut rest)?;
            continue;
        }
        if skip("<!DOCTYPE", ">", &mut rest)? {
            continue;
        }
        // A tag: find its end outside quoted attribute values.
        let mut quote = None;
        let end = rest
            .char_indices()
            .find(|&(_, c)| match quote {
                Some(q) => {
                    if c == q {
                        quote = None;
                    }
                    false
                }
                None if c == '"' || c == '\'' => {
                    quote = Some(c);
                    false
                }
                None => c == '>',
            })
            .map(|(i, _)| i)
            .ok_or("unclosed tag")?;
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack
                .pop()
                .ok_or_else(|| format!("</{name}> without <{name}>"))?;
            if open != name.trim() {
                return Err(format!("<{open}> closed by </{name}>"));
            }
            continue;
        }
        let (body, empty) = match tag.strip_suffix('/') {
            Some(b) => (b, true),
            None => (tag, false),
        };
        let name_end = body.find(|c: char| c.is_whitespace()).unwrap_or(body.len());
        let name = &body[..name_end];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_alphanumeric() || ":-_.".contains(c))
        {
            return Err(format!("bad element name {name:?}"));
        }
        // Attributes: name="value" (or 'value'), separated by whitespace.
        let mut attrs = body[name_end..].trim_start();
        while !attrs.is_empty() {
            let eq = attrs
                .find('=')
                .ok_or_else(|| format!("bad attribute {attrs:.30?}"))?;
            let q = attrs[eq + 1..]
                .chars()
                .next()
                .filter(|c| *c == '"' || *c == '\'')
                .ok_or_else(|| format!("unquoted attribute {attrs:.30?}"))?;
            let val_end = attrs[eq + 2..].find(q).ok_or("unterminated attribute")?;
            let val = &attrs[eq + 2..eq + 2 + val_end];
            if val.contains('<') {
                return Err(format!("'<' in attribute {val:.30?}"));
            }
            check_refs(val)?;
            attrs = attrs[eq + 3 + val_end..].trim_start();
        }
        if stack.is_empty() {
            roots += 1;
        }
        if !empty {
            stack.push(name.to_string());
        }
    }
    if !rest.trim().is_empty() {
        return Err(format!("trailing text {rest:.40?}"));
    }
    match (stack.last(), roots) {
        (Some(open), _) => Err(format!("<{open}> never closed")),
        (None, 1) => Ok(()),
        (None, n) => Err(format!("{n} root elements")),
    }
}

/// Folded lines as (frames, weight).
fn read_folded(path: &Path) -> Vec<(Vec<String>, u64)> {
    std::fs::read_to_string(path)
        .expect("read folded")
        .lines()
        .map(|l| {
            let (stack, w) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            (
                stack.split(';').map(str::to_string).collect(),
                w.parse().unwrap_or_else(|_| panic!("bad weight in {l:?}")),
            )
        })
        .collect()
}

/// The folded stacks' totals, per function of the site (the frame above
/// the type), must be the CSV's.
fn check_folded(what: &str, path: &Path, rows: &[Row], allocs: bool) {
    let lines = read_folded(path);
    let pick = |a: u64, b: u64| if allocs { a } else { b };
    let total: u64 = lines.iter().map(|l| l.1).sum();
    let csv_total: u64 = rows.iter().map(|r| pick(r.allocs, r.bytes)).sum();
    assert_eq!(total, csv_total, "{what}: folded total vs CSV total");
    let mut per_fn: HashMap<String, u64> = HashMap::new();
    for (frames, w) in &lines {
        let leaf = frames.last().expect("frames");
        assert!(
            leaf.starts_with('[') && leaf.ends_with(']'),
            "{what}: the leaf frame is not a type: {frames:?}"
        );
        let site = &frames[frames.len() - 2];
        *per_fn.entry(site.clone()).or_default() += w;
    }
    for (f, (a, b)) in by_function(rows) {
        let want = pick(a, b);
        if want > 0 {
            assert_eq!(
                per_fn.get(&f.replace(';', ",")).copied(),
                Some(want),
                "{what}: folded weight of {f}"
            );
        }
    }
}

fn profile_outputs(version: &str) {
    if skip_unless_root() {
        return;
    }
    let tc = toolchain(version);
    let bin = fixture(&tc, "allocs", Variant::Default);
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |n: &str| dir.path().join(n);
    let (stdout, _) = record(
        &[
            "--csv".as_ref(),
            p("sites.csv").as_os_str(),
            "--pprof".as_ref(),
            p("allocs.pb.gz").as_os_str(),
            "--folded".as_ref(),
            p("allocs.folded").as_os_str(),
            "--svg".as_ref(),
            p("allocs.svg").as_os_str(),
        ],
        &bin,
        &[("ALLOCWATCH_N", "1000")],
    );
    let res: FixtureResult = parse_result(&stdout);
    let what = format!("{} allocs", res.go);
    let rows = read_rows(&p("sites.csv"));
    let csv_fns = by_function(&rows);
    let csv_allocs: u64 = rows.iter().map(|r| r.allocs).sum();
    let csv_bytes: u64 = rows.iter().map(|r| r.bytes).sum();
    let want = expected(&res);

    // pprof: counts, then bytes, exactly (no scaling: -unit=B).
    let common = ["-top", "-nodefraction=0", "-nodecount=1000000"];
    let objects = pprof(
        &tc,
        &[&common[..], &["-sample_index=alloc_objects"]].concat(),
        &p("allocs.pb.gz"),
    );
    assert!(
        objects.contains("exact counts from allocwatch uprobes (not sampled)"),
        "{what}: the profile's comment is missing:\n{objects}"
    );
    let space = pprof(
        &tc,
        &[&common[..], &["-sample_index=alloc_space", "-unit=B"]].concat(),
        &p("allocs.pb.gz"),
    );
    let (total_objects, flat_objects) = pprof_top(&objects, "");
    let (total_space, flat_space) = pprof_top(&space, "B");
    assert_eq!(total_objects, csv_allocs, "{what}: pprof total allocations");
    assert_eq!(total_space, csv_bytes, "{what}: pprof total bytes");
    let mut failures = Vec::new();
    for (f, (count, bytes)) in &want {
        let got = (flat_objects.get(*f).copied(), flat_space.get(*f).copied());
        if count.is_some_and(|c| got.0 != Some(c)) || bytes.is_some_and(|b| got.1 != Some(b)) {
            failures.push(format!(
                "{f}: expected {count:?} allocs / {bytes:?} bytes, pprof shows {got:?}"
            ));
        }
        if count.is_none() && got.0.is_none_or(|c| c == 0) {
            failures.push(format!("{f}: allocates, but pprof shows {got:?}"));
        }
    }
    // pprof simplifies names like C++ ones: `interface { Error() string }`
    // shows as `interface { Error string }`.
    let pprof_name = |f: &str| f.replace("()", "");
    for (f, (a, b)) in &csv_fns {
        let got = (
            flat_objects.get(&pprof_name(f)).copied().unwrap_or(0),
            flat_space.get(&pprof_name(f)).copied().unwrap_or(0),
        );
        if got != (*a, *b) {
            failures.push(format!("{f}: CSV {a} allocs / {b} bytes, pprof {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{what}:\n  {}\n-top alloc_objects:\n{objects}",
        failures.join("\n  ")
    );

    // -list shows the allocating line with its count; -traces the stacks with their type.
    let list = pprof(
        &tc,
        &["-list=^main.allocSmall$", "-sample_index=alloc_objects"],
        &p("allocs.pb.gz"),
    );
    assert!(
        list.contains("ROUTINE ======================== main.allocSmall")
            && list
                .lines()
                .any(|l| l.trim_start().starts_with("1000       1000") && l.contains("&Small{")),
        "{what}: -list main.allocSmall:\n{list}"
    );
    let traces = pprof(
        &tc,
        &["-traces", "-sample_index=alloc_objects"],
        &p("allocs.pb.gz"),
    );
    let inlined = traces
        .split("-----------+")
        .find(|t| t.contains("type:  main.Inlined"))
        .unwrap_or_else(|| panic!("{what}: no trace of main.Inlined:\n{traces}"));
    let frames: Vec<&str> = inlined
        .lines()
        .filter(|l| !l.contains("type:"))
        .filter_map(|l| l.split_whitespace().last())
        .filter(|f| f.starts_with("main.") || f.starts_with("runtime."))
        .collect();
    assert_eq!(
        frames.get(..3),
        Some(&["main.newInlined", "main.callInlined", "main.main"][..]),
        "{what}: the inlined constructor's trace:\n{inlined}"
    );
    assert!(inlined.contains("1000 "), "{what}: trace count:\n{inlined}");

    // Folded stacks and the flame graph: the CSV's totals.
    check_folded(&what, &p("allocs.folded"), &rows, false);
    let svg = std::fs::read_to_string(p("allocs.svg")).expect("read svg");
    if let Err(e) = check_xml(&svg) {
        panic!("{what}: the SVG is not well-formed: {e}");
    }
    for f in want.keys() {
        assert!(
            svg.contains(&format!("<title>{f} (")),
            "{what}: {f} not in the SVG"
        );
    }
    assert!(
        svg.contains(&format!("all ({} bytes, 100%)", thousands(csv_bytes))),
        "{what}: the SVG's total is not {csv_bytes} bytes"
    );

    // Weighted by allocations.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let q = |n: &str| dir2.path().join(n);
    record(
        &[
            "--csv".as_ref(),
            q("sites.csv").as_os_str(),
            "--folded".as_ref(),
            q("a.folded").as_os_str(),
            "--folded-weight".as_ref(),
            "allocs".as_ref(),
            "--svg".as_ref(),
            q("a.svg").as_os_str(),
        ],
        &bin,
        &[("ALLOCWATCH_N", "1000")],
    );
    let rows2 = read_rows(&q("sites.csv"));
    check_folded(&what, &q("a.folded"), &rows2, true);
    let svg2 = std::fs::read_to_string(q("a.svg")).expect("read svg");
    check_xml(&svg2).unwrap_or_else(|e| panic!("{what}: allocs SVG: {e}"));
    let total2: u64 = rows2.iter().map(|r| r.allocs).sum();
    assert!(
        svg2.contains(&format!("all ({} allocations, 100%)", thousands(total2))),
        "{what}: the allocs SVG's total is not {total2}"
    );
}

#[test]
fn pprof_folded_svg_go1_21() {
    profile_outputs("1.21.13");
}

#[test]
fn pprof_folded_svg_go1_27() {
    profile_outputs("1.27.3");
}

/// `--speedscope`: both profiles add up to the run's totals, their stacks
/// are valid frame indices ending in a type, and each function of the
/// fixture weighs exactly what the fixture allocated.
fn speedscope_output(version: &str) {
    if skip_unless_root() {
        return;
    }
    let tc = toolchain(version);
    let bin = fixture(&tc, "allocs", Variant::Default);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("allocs.speedscope.json");
    let run = support::record_json(
        &["--speedscope".as_ref(), path.as_os_str()],
        &bin,
        &[("ALLOCWATCH_N", "1000")],
    );
    assert_eq!(run.summary.events.lost, 0, "{:#?}", run.summary);
    let res: FixtureResult = parse_result(&run.stdout);
    let what = format!("{} allocs", res.go);
    let totals = &run.summary.totals;
    assert!(totals.allocs > 0, "{what}: nothing recorded");
    let text = std::fs::read_to_string(&path).expect("read speedscope file");
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON: {e}\n{text}"));
    assert_eq!(
        v["$schema"], "https://www.speedscope.app/file-format-schema.json",
        "{what}"
    );
    let frames = v["shared"]["frames"].as_array().expect("shared.frames");
    let name = |i: usize| frames[i]["name"].as_str().expect("frame name");
    let profiles = v["profiles"].as_array().expect("profiles");
    let want = expected(&res);
    let mut seen = Vec::new();
    for (p, unit, total, objects) in [
        (&profiles[0], "bytes", totals.bytes, false),
        (&profiles[1], "none", totals.allocs, true),
    ] {
        let pname = p["name"].as_str().expect("profile name");
        seen.push(pname);
        assert_eq!(p["type"], "sampled", "{what}: {pname}");
        assert_eq!(p["unit"], unit, "{what}: {pname}");
        let weights: Vec<u64> = serde_json::from_value(p["weights"].clone()).expect("weights");
        let samples: Vec<Vec<usize>> =
            serde_json::from_value(p["samples"].clone()).expect("samples");
        assert_eq!(samples.len(), weights.len(), "{what}: {pname}");
        assert_eq!(weights.iter().sum::<u64>(), total, "{what}: {pname} total");
        assert_eq!(p["startValue"], 0, "{what}: {pname}");
        assert_eq!(p["endValue"], total, "{what}: {pname}");
        let mut per_fn: HashMap<&str, u64> = HashMap::new();
        for (stack, w) in samples.iter().zip(&weights) {
            assert!(
                stack.len() >= 2 && stack.iter().all(|&i| i < frames.len()),
                "{what}: {pname}: bad stack {stack:?} ({} frames)",
                frames.len()
            );
            let leaf = name(stack[stack.len() - 1]);
            assert!(
                leaf.starts_with('[') && leaf.ends_with(']'),
                "{what}: {pname}: the leaf is not a type: {leaf}"
            );
            *per_fn.entry(name(stack[stack.len() - 2])).or_default() += w;
        }
        for (f, (count, bytes)) in &want {
            let w = if objects { count } else { bytes };
            if let Some(w) = w {
                assert_eq!(per_fn.get(f), Some(w), "{what}: {pname}: weight of {f}");
            }
        }
    }
    assert_eq!(seen, ["alloc_space", "alloc_objects"], "{what}");
    let small = frames
        .iter()
        .find(|f| f["name"] == "main.allocSmall")
        .unwrap_or_else(|| panic!("{what}: no frame main.allocSmall"));
    assert!(
        small["file"].as_str().is_some_and(|f| f.ends_with(".go")),
        "{what}: main.allocSmall has no file: {small}"
    );
    assert!(
        run.summary.files.iter().any(|f| Path::new(f) == path),
        "{what}: the summary does not list the file: {:?}",
        run.summary.files
    );
}

#[test]
fn speedscope_go1_21() {
    speedscope_output("1.21.13");
}

#[test]
fn speedscope_go1_27() {
    speedscope_output("1.27.3");
}

/// The number after `prefix` in `text`, if any.
fn number_after(text: &str, prefix: &str) -> Option<u64> {
    let rest = &text[text.find(prefix)? + prefix.len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The kernel's counters reach the profile: a flood of 5000 new keys
/// through a one-page ring buffer loses events, most of which only carried
/// a new key's stack (the kernel counted the allocation), and the real `go
/// tool pprof -comments` shows both numbers; the counts stay exact.
#[test]
fn pprof_comments_carry_the_kernel_counters() {
    if skip_unless_root() {
        return;
    }
    let n = 5000;
    let tc = toolchain("1.27.3");
    let bin = fixture(&tc, "flood", Variant::Default);
    let dir = tempfile::tempdir().expect("tempdir");
    let (csv, profile) = (dir.path().join("sites.csv"), dir.path().join("flood.pb.gz"));
    let args = [
        "--ringbuf-bytes".as_ref(),
        "4096".as_ref(),
        "--csv".as_ref(),
    ];
    let args = [
        &args[..],
        &[csv.as_os_str(), "--pprof".as_ref(), profile.as_os_str()],
    ]
    .concat();
    let (_, stderr) = support::record(&args, &bin, &[("ALLOCWATCH_N", &n.to_string())]);
    let comments = pprof(&tc, &["-comments"], &profile);
    let lost = number_after(&comments, "warning: ")
        .filter(|_| comments.contains("events did not fit in the ring buffer"))
        .unwrap_or_else(|| panic!("no comment on the lost events:\n{comments}"));
    let stacks = number_after(&comments, "of the lost events, ")
        .unwrap_or_else(|| panic!("no comment on the lost stacks:\n{comments}"));
    eprintln!("4 KiB ring buffer: {lost} events lost, {stacks} of them stacks only");
    assert!(0 < stacks && stacks <= lost, "{comments}");
    let counted: u64 = read_rows(&csv)
        .iter()
        .filter(|r| r.function == "reflect.New")
        .map(|r| r.allocs)
        .sum();
    assert_eq!(counted, n, "reflect.New allocations:\n{stderr}");
}

fn secs(s: &str) -> f64 {
    s.parse().unwrap_or_else(|_| panic!("bad time {s:?}"))
}

/// The distinct windows of a time-series CSV, in order; checks that they
/// follow each other without overlapping (a window without allocations has
/// no rows).
fn windows(what: &str, rows: &[Row]) -> Vec<(String, String)> {
    let mut w: Vec<(String, String)> = Vec::new();
    for r in rows {
        let k = (r.window_start_s.clone(), r.window_end_s.clone());
        if w.last() != Some(&k) {
            assert!(
                !w.contains(&k),
                "{what}: rows of window {k:?} are not together"
            );
            w.push(k);
        }
    }
    for pair in w.windows(2) {
        assert!(
            secs(&pair[0].1) <= secs(&pair[1].0),
            "{what}: windows out of order {pair:?}"
        );
    }
    w
}

fn interval_phases(version: &str) {
    if skip_unless_root() {
        return;
    }
    let tc = toolchain(version);
    let bin = fixture(&tc, "phases", Variant::Default);
    let dir = tempfile::tempdir().expect("tempdir");
    let csv_path = dir.path().join("series.csv");
    let (stdout, _) = record(
        &[
            "--interval".as_ref(),
            "500ms".as_ref(),
            "--csv".as_ref(),
            csv_path.as_os_str(),
        ],
        &bin,
        &[],
    );
    let res: FixtureResult = parse_result(&stdout);
    let what = format!("{} phases", res.go);
    let rows = read_rows(&csv_path);
    let ws = windows(&what, &rows);
    // Windows are 500 ms long and aligned on the recording's start.
    for (s, e) in &ws[..ws.len() - 1] {
        let len = secs(e) - secs(s);
        let k = (secs(s) / 0.5).round();
        assert!(
            (0.45..=0.6).contains(&len) && (secs(s) - k * 0.5).abs() < 0.1,
            "{what}: window {s}–{e} is not a 500 ms window"
        );
    }
    let phase = |n: &str| {
        res.phases
            .iter()
            .find(|p| p.name == n)
            .unwrap_or_else(|| panic!("no phase {n}"))
    };
    let (a, b) = (phase("a"), phase("b"));
    // The fixture's clock starts a little after the recording (the runtime
    // starts first): allow for that and for scheduling.
    let tol = 0.2;
    let rate = res.rate as f64;
    let count = |w: &(String, String), p: &Phase| -> u64 {
        rows.iter()
            .filter(|r| {
                (&r.window_start_s, &r.window_end_s) == (&w.0, &w.1)
                    && r.function == p.func
                    && r.type_name == p.type_name
            })
            .map(|r| r.allocs)
            .sum()
    };
    let mut full = [0, 0];
    let mut report = Vec::new();
    for w in &ws {
        let (s, e) = (secs(&w.0), secs(&w.1));
        let (na, nb) = (count(w, a), count(w, b));
        report.push(format!("{s:.3}–{e:.3}: A {na} B {nb}"));
        let expect_rate = |n: u64, ok: &mut bool| {
            let want = rate * (e - s);
            *ok &= (n as f64 - want).abs() <= want * 0.25;
        };
        let mut ok = true;
        if e <= a.start_s - tol {
            // Idle: nothing yet.
            ok &= na == 0 && nb == 0;
        } else if s >= a.start_s + tol && e <= a.end_s - tol {
            expect_rate(na, &mut ok);
            ok &= nb == 0;
            full[0] += 1;
        } else if s >= b.start_s + tol && e <= b.end_s - tol {
            expect_rate(nb, &mut ok);
            ok &= na == 0;
            full[1] += 1;
        } else if s >= b.end_s + tol {
            ok &= na == 0 && nb == 0;
        }
        if e <= a.end_s - tol {
            ok &= nb == 0;
        }
        if s >= a.end_s + tol {
            ok &= na == 0;
        }
        assert!(
            ok,
            "{what}: window {s:.3}–{e:.3} (A {na}, B {nb}) does not fit the phases {:?}:\n{}",
            res.phases,
            report.join("\n")
        );
    }
    assert!(
        full[0] >= 2 && full[1] >= 2,
        "{what}: too few windows inside the phases:\n{}",
        report.join("\n")
    );
    // The windows add up to the exact counts.
    for p in [a, b] {
        let total: u64 = ws.iter().map(|w| count(w, p)).sum();
        assert_eq!(total, p.count, "{what}: {} over all windows", p.func);
        let site = res.sites.iter().find(|s| s.func == p.func).expect("site");
        assert_eq!(total as i64, site.count);
    }
}

#[test]
fn interval_phases_go1_21() {
    interval_phases("1.21.13");
}

#[test]
fn interval_phases_go1_27() {
    interval_phases("1.27.3");
}

/// The rows of a CSV file up to its last complete line.
fn complete_lines(text: &str) -> &str {
    text.rfind('\n').map_or("", |i| &text[..=i])
}

fn sigkill_mid_run(version: &str) {
    if skip_unless_root() {
        return;
    }
    let tc = toolchain(version);
    let bin = fixture(&tc, "spin", Variant::Default);
    let mut spin = Command::new(&bin)
        .env("ALLOCWATCH_SECONDS", "60")
        .env("GOMAXPROCS", "1")
        .env("GOGC", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start spin");
    let dir = tempfile::tempdir().expect("tempdir");
    let sites = dir.path().join("sites.csv");
    let pools = dir.path().join("pools.csv");
    let mut aw = Command::new(allocwatch())
        .arg("record")
        .arg("--pid")
        .arg(spin.id().to_string())
        .args(["--interval", "250ms", "--csv"])
        .arg(&sites)
        .arg("--pools-csv")
        .arg(&pools)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start allocwatch");
    // Wait until a few windows are on disk.
    let t0 = Instant::now();
    let before = loop {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "go{version}: no windows after 30 s"
        );
        assert!(
            aw.try_wait().expect("wait").is_none(),
            "go{version}: allocwatch exited early"
        );
        if let Ok(text) = std::fs::read_to_string(&sites) {
            let done = complete_lines(&text).to_string();
            let rows = csv::Reader::from_reader(done.as_bytes())
                .deserialize::<Row>()
                .filter_map(Result::ok)
                .filter(|r| secs(&r.window_end_s) >= 1.0)
                .count();
            if rows > 0 {
                break done;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    aw.kill().expect("SIGKILL allocwatch");
    let status = aw.wait().expect("wait");
    let _ = spin.kill();
    let _ = spin.wait();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "go{version}: allocwatch was not killed by SIGKILL"
    );
    let what = format!("go{version} SIGKILL");
    let after = std::fs::read_to_string(&sites).expect("the CSV is at its final path");
    assert!(
        after.starts_with(&before),
        "{what}: windows seen before the kill are gone:\nbefore:\n{before}\nafter:\n{after}"
    );
    assert!(after.ends_with('\n'), "{what}: a torn last row:\n{after}");
    let rows = read_rows(&sites);
    let ws = windows(&what, &rows);
    // spin allocates all the time: every window has rows, from 0 on.
    assert_eq!(ws[0].0, "0.000", "{what}");
    for pair in ws.windows(2) {
        assert_eq!(
            pair[0].1, pair[1].0,
            "{what}: a gap between windows {pair:?}"
        );
    }
    assert!(ws.len() >= 4, "{what}: only {} windows: {ws:?}", ws.len());
    for w in &ws {
        assert!(
            rows.iter()
                .any(|r| (&r.window_start_s, &r.window_end_s) == (&w.0, &w.1)
                    && r.function == "main.spinAlloc"
                    && r.type_name == "main.T"
                    && r.allocs > 0
                    && r.bytes == r.allocs * 24),
            "{what}: window {w:?} has no main.spinAlloc row"
        );
    }
    // The pools file is readable too (spin uses no pool: its header at least).
    let header = std::fs::read_to_string(&pools).expect("pools CSV at its final path");
    assert!(
        header.starts_with("window_start_s,window_end_s,pool,"),
        "{what}: {header}"
    );
    let _ = read_rows_pools(&pools);
    // Nothing else in the directory: no temporary file left behind.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["pools.csv", "sites.csv"], "{what}");
}

fn read_rows_pools(path: &Path) -> usize {
    let mut r = csv::Reader::from_path(path).expect("read pools CSV");
    let mut n = 0;
    for rec in r.records() {
        rec.expect("pools row");
        n += 1;
    }
    n
}

#[test]
fn sigkill_keeps_completed_windows_go1_21() {
    sigkill_mid_run("1.21.13");
}

#[test]
fn sigkill_keeps_completed_windows_go1_27() {
    sigkill_mid_run("1.27.3");
}
