//! A recording in speedscope's own file format
//! (<https://www.speedscope.app/file-format-schema.json>), which
//! speedscope opens as it is: two sampled profiles over the same stacks,
//! `alloc_space` weighted by bytes and `alloc_objects` by allocations.
//!
//! The stacks are [`folded`](super::folded)'s: root first, the allocated type
//! as the leaf frame (`[main.T]`), one frame per function (sites of one
//! function at different lines fold together), merged and sorted as there,
//! and stacks of weight 0 are left out of a profile, so each profile's
//! weights add up to the recording's total. A function's frame carries its
//! file when known, and a line when the recording saw that function at one
//! line only (for a site, the allocation's line; for a caller, its call's).
//! Type frames have no file.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Write};

use serde::Serialize;

use super::folded::{self, StackFrame};
use crate::stats::Snapshot;

/// The `$schema` of every speedscope file.
pub const SCHEMA: &str = "https://www.speedscope.app/file-format-schema.json";

/// A speedscope file (`SpeedscopeFile` of the schema).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct File {
    #[serde(rename = "$schema")]
    pub schema: &'static str,
    pub shared: Shared,
    pub profiles: Vec<Profile>,
    pub name: String,
    pub active_profile_index: usize,
    pub exporter: String,
}

/// What the profiles share: their frames.
#[derive(Clone, Debug, Serialize)]
pub struct Shared {
    pub frames: Vec<Frame>,
}

/// A frame (`FrameInfo` of the schema).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Frame {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

/// A sampled profile (`SampledProfile` of the schema): `samples[i]` is a
/// stack of indices into [`Shared::frames`], root first, of weight
/// `weights[i]`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// Always `sampled`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub name: &'static str,
    /// `bytes` or `none`.
    pub unit: &'static str,
    pub start_value: u64,
    /// The sum of the weights.
    pub end_value: u64,
    pub samples: Vec<Vec<usize>>,
    pub weights: Vec<u64>,
}

impl Profile {
    fn sampled(
        name: &'static str,
        unit: &'static str,
        stacks: &BTreeMap<(String, Vec<usize>), (u64, u64)>,
        weight: impl Fn(&(u64, u64)) -> u64,
    ) -> Profile {
        let (samples, weights): (Vec<Vec<usize>>, Vec<u64>) = stacks
            .iter()
            .map(|((_, stack), w)| (stack.clone(), weight(w)))
            .filter(|&(_, w)| w > 0)
            .unzip();
        Profile {
            kind: "sampled",
            name,
            unit,
            start_value: 0,
            end_value: weights.iter().sum(),
            samples,
            weights,
        }
    }
}

/// The places (file, line) a frame was seen at.
#[derive(Default)]
struct Places<'a>(BTreeSet<(&'a str, u32)>);

impl Places<'_> {
    /// The file, when one is known and no other; the line, when the frame
    /// was seen at that one place only.
    fn resolve(&self) -> (Option<String>, Option<u32>) {
        let files: BTreeSet<&str> = self.0.iter().map(|p| p.0).collect();
        match (files.len(), self.0.first()) {
            (1, Some(&(file, line))) if !file.is_empty() => (
                Some(file.to_string()),
                (self.0.len() == 1 && line > 0).then_some(line),
            ),
            _ => (None, None),
        }
    }
}

/// The speedscope file of `snap`, named `name`.
#[must_use]
pub fn file(snap: &Snapshot, name: &str) -> File {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut frames: Vec<(String, Places<'_>)> = Vec::new();
    // (folded stack, frame indices) -> (allocations, bytes)
    let mut stacks: BTreeMap<(String, Vec<usize>), (u64, u64)> = BTreeMap::new();
    for site in snap.sites.iter().filter(|s| s.allocs > 0 || s.bytes > 0) {
        let stack: Vec<usize> = folded::frames_of(site)
            .into_iter()
            .map(|f| {
                let i = *index.entry(f.name().to_string()).or_insert_with(|| {
                    frames.push((f.name().to_string(), Places::default()));
                    frames.len() - 1
                });
                if let StackFrame::Function { file, line, .. } = f {
                    frames[i].1.0.insert((file, line));
                }
                i
            })
            .collect();
        let w = stacks.entry((folded::stack_of(site), stack)).or_default();
        w.0 += site.allocs;
        w.1 += site.bytes;
    }
    let frames = frames
        .into_iter()
        .map(|(name, places)| {
            let (file, line) = places.resolve();
            Frame { name, file, line }
        })
        .collect();
    File {
        schema: SCHEMA,
        shared: Shared { frames },
        profiles: vec![
            Profile::sampled("alloc_space", "bytes", &stacks, |w| w.1),
            Profile::sampled("alloc_objects", "none", &stacks, |w| w.0),
        ],
        name: name.to_string(),
        active_profile_index: 0,
        exporter: format!("allocwatch@{}", env!("CARGO_PKG_VERSION")),
    }
}

/// Writes the speedscope file of `snap`, named `name`.
///
/// # Errors
/// Those of `out`.
pub fn write(snap: &Snapshot, name: &str, mut out: impl Write) -> io::Result<()> {
    serde_json::to_writer(&mut out, &file(snap, name))?;
    out.write_all(b"\n")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::folded::Weight;
    use crate::export::test_support::{frame, main_f, site, snapshot};

    fn names(f: &File, stack: &[usize]) -> Vec<String> {
        stack
            .iter()
            .map(|&i| f.shared.frames[i].name.clone())
            .collect()
    }

    fn snap() -> Snapshot {
        snapshot(
            2,
            vec![
                main_f(),
                // Same function and type at another line: folds together.
                site(
                    "main.f",
                    12,
                    "main.T",
                    1,
                    24,
                    vec![frame("main.f", 12), frame("main.main", 30)],
                ),
                site(
                    "main.g",
                    7,
                    "struct { F uintptr; X0 int }",
                    2,
                    32,
                    vec![frame("main.g", 7), frame("main.main", 30)],
                ),
                // Allocations of size 0: in alloc_objects only.
                site(
                    "main.zero",
                    5,
                    "struct {}",
                    4,
                    0,
                    vec![frame("main.zero", 5)],
                ),
                site("main.nostack", 3, "", 1, 8, vec![]),
            ],
        )
    }

    #[test]
    fn totals_stacks_and_frames() {
        let s = snap();
        let f = file(&s, "test");
        let [space, objects] = &f.profiles[..] else {
            panic!("two profiles");
        };
        assert_eq!((space.name, space.unit), ("alloc_space", "bytes"));
        assert_eq!((objects.name, objects.unit), ("alloc_objects", "none"));
        for (p, total) in [(space, s.total_bytes), (objects, s.total_allocs)] {
            assert_eq!(p.kind, "sampled");
            assert_eq!(p.weights.iter().sum::<u64>(), total, "{}", p.name);
            assert_eq!((p.start_value, p.end_value), (0, total), "{}", p.name);
            assert_eq!(p.samples.len(), p.weights.len());
            assert!(p.weights.iter().all(|&w| w > 0));
            assert!(
                p.samples
                    .iter()
                    .flatten()
                    .all(|&i| i < f.shared.frames.len())
            );
        }
        // The same stacks, in the same order, as the folded lines.
        for (p, weight) in [(space, Weight::Bytes), (objects, Weight::Allocs)] {
            let got: Vec<(String, u64)> = p
                .samples
                .iter()
                .zip(&p.weights)
                .map(|(st, &w)| {
                    let folded: Vec<String> =
                        names(&f, st).iter().map(|n| n.replace(';', ",")).collect();
                    (folded.join(";"), w)
                })
                .collect();
            assert_eq!(got, folded::lines(&s, weight), "{}", p.name);
        }
        assert_eq!(
            names(&f, &space.samples[0]),
            ["main.main", "main.f", "[main.T]"],
            "root first, the type as the leaf"
        );
        assert_eq!(space.weights[0], 144);
        let frame = |name: &str| {
            f.shared
                .frames
                .iter()
                .find(|fr| fr.name == name)
                .unwrap_or_else(|| panic!("no frame {name}"))
        };
        // One frame per function; the line only when there is one.
        assert_eq!(
            f.shared
                .frames
                .iter()
                .filter(|fr| fr.name == "main.f")
                .count(),
            1
        );
        assert_eq!(
            *frame("main.f"),
            Frame {
                name: "main.f".into(),
                file: Some("main.f.go".into()),
                line: None
            }
        );
        assert_eq!(frame("main.main").line, Some(30));
        assert_eq!(frame("main.nostack").line, Some(3));
        assert_eq!(
            *frame("[struct { F uintptr; X0 int }]"),
            Frame {
                name: "[struct { F uintptr; X0 int }]".into(),
                file: None,
                line: None
            }
        );
        assert!(f.shared.frames.iter().any(|fr| fr.name == "[?]"));
    }

    #[test]
    fn valid_json_with_the_schema() {
        let mut out = Vec::new();
        write(&snap(), "Heap allocations", &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["$schema"], SCHEMA);
        assert_eq!(v["name"], "Heap allocations");
        assert_eq!(v["activeProfileIndex"], 0);
        assert!(v["exporter"].as_str().unwrap().starts_with("allocwatch@"));
        let profiles = v["profiles"].as_array().unwrap();
        assert_eq!(profiles.len(), 2);
        for p in profiles {
            assert_eq!(p["type"], "sampled");
            for key in [
                "name",
                "unit",
                "startValue",
                "endValue",
                "samples",
                "weights",
            ] {
                assert!(p.get(key).is_some(), "{key} missing in {p}");
            }
        }
        assert_eq!(profiles[0]["endValue"], 184);
        assert_eq!(profiles[1]["endValue"], 13);
        let main_f = v["shared"]["frames"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "main.main")
            .unwrap();
        assert_eq!(main_f["file"], "main.main.go");
        assert_eq!(main_f["line"], 30);
        let ty = v["shared"]["frames"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "[main.T]")
            .unwrap();
        assert!(ty.get("file").is_none() && ty.get("line").is_none(), "{ty}");
    }

    #[test]
    fn no_allocations() {
        let f = file(&snapshot(1, vec![]), "empty");
        assert!(f.shared.frames.is_empty());
        for p in &f.profiles {
            assert!(p.samples.is_empty() && p.weights.is_empty());
            assert_eq!(p.end_value, 0);
        }
    }
}
