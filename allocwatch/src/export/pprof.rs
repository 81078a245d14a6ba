//! A recording as a pprof profile: gzipped `profile.proto`, what
//! `go tool pprof` reads.
//!
//! The message types follow google/pprof's `proto/profile.proto` (written by
//! hand with prost's derive, field numbers as there). One sample per site:
//! its stack (the site's frame first, as pprof wants `location_id[0]` to be
//! the leaf), the values `[alloc_objects, alloc_space]` and a `type` label.
//! Stacks arrive with inlined calls already expanded into frames of their
//! own, so every frame is one [`Location`] with one [`Line`]: pprof shows the
//! same functions, lines and traces as for a location holding an inline chain.
//! Locations and functions are shared between samples, keyed by
//! (function, file, line) and (function, file).

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::SystemTime;

use crate::stats::{Counters, Frame, SiteStats, Snapshot};

/// `Profile` of profile.proto.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Profile {
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    /// Index 0 is always "".
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    #[prost(int64, tag = "7")]
    pub drop_frames: i64,
    #[prost(int64, tag = "8")]
    pub keep_frames: i64,
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    pub period: i64,
    /// Indices into `string_table`.
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
    #[prost(int64, tag = "15")]
    pub doc_url: i64,
}

/// `ValueType`: a type and a unit, both string-table indices.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueType {
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

/// `Sample`: `location_id[0]` is the leaf.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

/// `Label`: `str` or `num` (string-table indices for key, str, num_unit).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(int64, tag = "1")]
    pub key: i64,
    #[prost(int64, tag = "2")]
    pub str: i64,
    #[prost(int64, tag = "3")]
    pub num: i64,
    #[prost(int64, tag = "4")]
    pub num_unit: i64,
}

/// `Mapping`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Mapping {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    #[prost(int64, tag = "5")]
    pub filename: i64,
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

/// `Location`: `line[0]` is the innermost of an inline chain.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Location {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    #[prost(uint64, tag = "3")]
    pub address: u64,
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
    #[prost(bool, tag = "5")]
    pub is_folded: bool,
}

/// `Line`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Line {
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    #[prost(int64, tag = "2")]
    pub line: i64,
    #[prost(int64, tag = "3")]
    pub column: i64,
}

/// `Function`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Function {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int64, tag = "2")]
    pub name: i64,
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    #[prost(int64, tag = "4")]
    pub filename: i64,
    #[prost(int64, tag = "5")]
    pub start_line: i64,
}

/// The first comment of every profile allocwatch writes in exact mode.
pub const EXACT_COMMENT: &str = "exact counts from allocwatch uprobes (not sampled)";

/// The first comment in sampled mode (`record --mode sampled`).
pub const SAMPLED_COMMENT: &str = "estimated counts: allocwatch read the Go runtime's memory-profile samples and scaled them as pprof does";

/// What the kernel's counters say about the counts, one comment for each
/// counter that is not zero: events lost (counts are low), and what was
/// sent one by one instead of aggregated, or filtered out.
#[must_use]
pub fn counter_comments(c: &Counters) -> Vec<String> {
    let full = allocwatch_common::AGG_ENTRIES;
    let comments: [(u64, &dyn Fn(u64) -> String); 5] = [
        (c.lost, &|n| {
            format!("warning: {n} events did not fit in the ring buffer: counts are low")
        }),
        (c.lost_stacks, &|n| {
            format!(
                "of the lost events, {n} only carried a new site's full stack: those allocations were counted, the sites lack their full stack"
            )
        }),
        (c.agg_full, &|n| {
            format!(
                "note: the kernel's aggregation maps were full ({full} keys): {n} operations were sent one by one instead"
            )
        }),
        (c.key_truncated, &|n| {
            format!(
                "note: {n} allocations lay deeper in the runtime than a kernel key reaches: sent one by one (counted all the same)"
            )
        }),
        (c.other_process, &|n| {
            format!("note: {n} probe hits came from other processes (not counted)")
        }),
    ];
    comments
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, text)| text(*n))
        .collect()
}

/// What a profile says about its recording besides the counts.
#[derive(Clone, Debug)]
pub struct ProfileMeta {
    /// The traced executable (the profile's main mapping).
    pub executable: String,
    /// When the recording started.
    pub start: SystemTime,
    /// Comments, shown by `go tool pprof -comments` (e.g. [`EXACT_COMMENT`]).
    pub comments: Vec<String>,
}

#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        let mut s = Strings::default();
        s.get("");
        s
    }

    fn get(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = i64::try_from(self.table.len()).unwrap_or(i64::MAX);
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

fn sat_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn sat_i64_u128(v: u128) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The profile of a snapshot (a whole run or a window).
#[must_use]
pub fn build(snap: &Snapshot, meta: &ProfileMeta) -> Profile {
    let mut strings = Strings::new();
    let mut p = header(snap, meta, &mut strings);
    p.comment = meta.comments.iter().map(|c| strings.get(c)).collect();
    let mut b = Builder {
        type_key: strings.get("type"),
        p,
        strings,
        functions: HashMap::new(),
        locations: HashMap::new(),
    };
    for site in snap.sites_by_bytes() {
        let site_frame;
        let frames: &[Frame] = if site.stack.is_empty() {
            // No stack known: the site alone.
            site_frame = [Frame {
                function: site.key.function.clone(),
                file: site.key.file.clone(),
                line: site.key.line,
            }];
            &site_frame
        } else {
            &site.stack
        };
        let location_id = frames.iter().map(|f| b.location(f)).collect();
        let sample = b.sample(site, location_id);
        b.p.sample.push(sample);
    }
    b.p.string_table = b.strings.table;
    b.p
}

/// A profile without samples: value types, mapping, time.
fn header(snap: &Snapshot, meta: &ProfileMeta, strings: &mut Strings) -> Profile {
    Profile {
        sample_type: vec![
            ValueType {
                r#type: strings.get("alloc_objects"),
                unit: strings.get("count"),
            },
            ValueType {
                r#type: strings.get("alloc_space"),
                unit: strings.get("bytes"),
            },
        ],
        period_type: Some(ValueType {
            r#type: strings.get("space"),
            unit: strings.get("bytes"),
        }),
        period: 1,
        default_sample_type: strings.get("alloc_space"),
        mapping: vec![Mapping {
            id: 1,
            filename: strings.get(&meta.executable),
            // Symbolized already: pprof must not look for the binary.
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: true,
            ..Mapping::default()
        }],
        time_nanos: meta
            .start
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| sat_i64_u128(d.as_nanos())),
        duration_nanos: sat_i64_u128(snap.elapsed.as_nanos()),
        ..Profile::default()
    }
}

/// A profile being filled: locations and functions shared between samples.
struct Builder {
    p: Profile,
    strings: Strings,
    type_key: i64,
    functions: HashMap<(Arc<str>, Arc<str>), u64>,
    locations: HashMap<Frame, u64>,
}

impl Builder {
    /// The id of the function of `f`, added when new.
    fn function(&mut self, f: &Frame) -> u64 {
        let fkey = (f.function.clone(), f.file.clone());
        if let Some(&id) = self.functions.get(&fkey) {
            return id;
        }
        let id = self.p.function.len() as u64 + 1;
        let name = self.strings.get(&f.function);
        self.p.function.push(Function {
            id,
            name,
            system_name: name,
            filename: self.strings.get(&f.file),
            start_line: 0,
        });
        self.functions.insert(fkey, id);
        id
    }

    /// The id of the location of `f`, added when new.
    fn location(&mut self, f: &Frame) -> u64 {
        if let Some(&id) = self.locations.get(f) {
            return id;
        }
        let function_id = self.function(f);
        let id = self.p.location.len() as u64 + 1;
        self.p.location.push(Location {
            id,
            mapping_id: 1,
            address: 0,
            line: vec![Line {
                function_id,
                line: i64::from(f.line),
                column: 0,
            }],
            is_folded: false,
        });
        self.locations.insert(f.clone(), id);
        id
    }

    /// A site's sample: its values and labels (`type`, and `mode` when
    /// estimated).
    fn sample(&mut self, site: &SiteStats, location_id: Vec<u64>) -> Sample {
        let type_label = Label {
            key: self.type_key,
            str: self.strings.get(&site.key.type_name),
            num: 0,
            num_unit: 0,
        };
        // Estimated (sampled mode, or a --max-overhead switch).
        let mode_label = (site.sampled_allocs > 0).then(|| Label {
            key: self.strings.get("mode"),
            str: self.strings.get(site.mode().name()),
            num: 0,
            num_unit: 0,
        });
        Sample {
            location_id,
            value: vec![sat_i64(site.allocs), sat_i64(site.bytes)],
            label: std::iter::once(type_label).chain(mode_label).collect(),
        }
    }
}

/// Writes the profile of `snap`, gzipped (what `go tool pprof` expects).
///
/// # Errors
/// Those of `out`.
pub fn write(snap: &Snapshot, meta: &ProfileMeta, out: impl Write) -> io::Result<()> {
    use prost::Message as _;
    let bytes = build(snap, meta).encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    gz.write_all(&bytes)?;
    gz.finish()?.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::test_support::{frame, main_f, site, snapshot};
    use prost::Message as _;
    use std::io::Read;
    use std::time::Duration;

    fn meta() -> ProfileMeta {
        ProfileMeta {
            executable: "/bin/fixture".into(),
            start: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            comments: vec![EXACT_COMMENT.into()],
        }
    }

    fn s(p: &Profile, i: i64) -> &str {
        &p.string_table[usize::try_from(i).unwrap()]
    }

    #[test]
    fn samples_stacks_and_tables() {
        let snap = snapshot(
            2,
            vec![
                main_f(),
                site(
                    "main.g",
                    20,
                    "[]uint8",
                    2,
                    400,
                    vec![
                        frame("main.g", 20),
                        frame("main.f", 11),
                        frame("main.main", 30),
                    ],
                ),
            ],
        );
        let p = build(&snap, &meta());
        assert_eq!(p.string_table[0], "");
        let types: Vec<(&str, &str)> = p
            .sample_type
            .iter()
            .map(|t| (s(&p, t.r#type), s(&p, t.unit)))
            .collect();
        assert_eq!(
            types,
            [("alloc_objects", "count"), ("alloc_space", "bytes")]
        );
        assert_eq!(s(&p, p.default_sample_type), "alloc_space");
        assert_eq!(s(&p, p.comment[0]), EXACT_COMMENT);
        assert_eq!(p.duration_nanos, 2_000_000_000);
        assert_eq!(p.time_nanos, 1_700_000_000_000_000_000);
        // Sorted by bytes: main.g first.
        assert_eq!(p.sample.len(), 2);
        assert_eq!(p.sample[0].value, [2, 400]);
        assert_eq!(p.sample[1].value, [5, 120]);
        let label = &p.sample[0].label[0];
        assert_eq!((s(&p, label.key), s(&p, label.str)), ("type", "[]uint8"));
        // Leaf first; main.main:30 shared, main.f at two lines = two locations, one function.
        let names = |smp: &Sample| -> Vec<(String, i64)> {
            smp.location_id
                .iter()
                .map(|id| {
                    let loc = &p.location[usize::try_from(*id - 1).unwrap()];
                    assert_eq!(loc.id, *id);
                    assert_eq!(loc.line.len(), 1);
                    let f = &p.function[usize::try_from(loc.line[0].function_id - 1).unwrap()];
                    (s(&p, f.name).to_string(), loc.line[0].line)
                })
                .collect()
        };
        assert_eq!(
            names(&p.sample[0]),
            [
                ("main.g".to_string(), 20),
                ("main.f".to_string(), 11),
                ("main.main".to_string(), 30)
            ]
        );
        assert_eq!(
            names(&p.sample[1]),
            [("main.f".to_string(), 10), ("main.main".to_string(), 30)]
        );
        assert_eq!(p.location.len(), 4);
        assert_eq!(p.function.len(), 3);
        assert!(p.location.iter().all(|l| l.mapping_id == 1));
        assert!(p.mapping[0].has_functions && p.mapping[0].has_line_numbers);
        assert_eq!(s(&p, p.mapping[0].filename), "/bin/fixture");
    }

    #[test]
    fn gzipped_round_trip_and_totals() {
        let snap = snapshot(
            1,
            vec![site(
                "main.f",
                10,
                "main.T",
                7,
                168,
                vec![frame("main.f", 10)],
            )],
        );
        let mut out = Vec::new();
        write(&snap, &meta(), &mut out).unwrap();
        assert_eq!(&out[..2], &[0x1f, 0x8b], "gzip magic");
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_end(&mut raw)
            .unwrap();
        let p = Profile::decode(&raw[..]).unwrap();
        assert_eq!(p, build(&snap, &meta()));
        let total: i64 = p.sample.iter().map(|x| x.value[1]).sum();
        assert_eq!(total, 168);
    }

    #[test]
    fn kernel_counters_are_commented_when_not_zero() {
        assert!(counter_comments(&Counters::default()).is_empty());
        let c = Counters {
            hits: 100,
            lost: 5,
            lost_stacks: 2,
            agg_full: 3,
            key_truncated: 4,
            other_process: 6,
            ..Counters::default()
        };
        let v = counter_comments(&c);
        assert_eq!(v.len(), 5, "{v:?}");
        assert!(v[0].starts_with("warning: 5 events did not fit"), "{v:?}");
        assert!(v[1].starts_with("of the lost events, 2 "), "{v:?}");
        assert!(
            v[2].contains(": 3 operations were sent one by one"),
            "{v:?}"
        );
        assert!(v[3].starts_with("note: 4 allocations lay deeper"), "{v:?}");
        assert!(v[4].starts_with("note: 6 probe hits"), "{v:?}");
    }

    #[test]
    fn empty_snapshot_is_a_valid_profile() {
        let p = build(&snapshot(0, vec![]), &meta());
        assert!(p.sample.is_empty() && p.location.is_empty());
        assert_eq!(p.sample_type.len(), 2);
    }

    #[test]
    fn site_without_stack_gets_its_own_frame() {
        let p = build(
            &snapshot(1, vec![site("main.f", 3, "main.T", 1, 8, vec![])]),
            &meta(),
        );
        assert_eq!(p.sample[0].location_id, [1]);
        assert_eq!(p.location[0].line[0].line, 3);
    }
}
