//! An allocation flame graph (SVG), drawn by inferno from the same folded
//! stacks as [`folded`](super::folded): the type is the leaf frame, and the
//! graph's total is the recording's total.

use std::io::{self, Write};

use inferno::flamegraph::{self, Options};

use super::folded::{self, Weight};
use crate::stats::Snapshot;

/// Title and subtitle of the graph.
#[derive(Clone, Debug, Default)]
pub struct FlameMeta {
    pub title: String,
    /// e.g. the target, the duration and the totals.
    pub subtitle: Option<String>,
}

fn escape_xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// Writes the flame graph of `snap`. A recording without allocations gives
/// a small SVG that says so (inferno has nothing to draw).
///
/// # Errors
/// Those of `out`, and inferno's.
pub fn write(
    snap: &Snapshot,
    weight: Weight,
    meta: &FlameMeta,
    mut out: impl Write,
) -> io::Result<()> {
    let lines: Vec<String> = folded::lines(snap, weight)
        .into_iter()
        .map(|(stack, w)| format!("{stack} {w}"))
        .collect();
    if lines.is_empty() {
        write!(
            out,
            "<?xml version=\"1.0\" standalone=\"no\"?>\n\
             <svg version=\"1.1\" width=\"1200\" height=\"60\" xmlns=\"http://www.w3.org/2000/svg\">\
             <text x=\"600\" y=\"34\" text-anchor=\"middle\" font-family=\"Verdana\" font-size=\"14\">\
             {}: no allocations recorded</text></svg>\n",
            escape_xml(&meta.title)
        )?;
        return out.flush();
    }
    let mut opt = Options::default();
    opt.title.clone_from(&meta.title);
    opt.subtitle.clone_from(&meta.subtitle);
    opt.count_name = weight.unit().to_string();
    opt.colors = flamegraph::color::Palette::Basic(flamegraph::color::BasicPalette::Mem);
    // Colors from the names: the same graph for the same recording.
    opt.hash = true;
    // Every allocating function is in the file (searchable), however narrow.
    opt.min_width = 0.0;
    // `folded::lines` is sorted already.
    opt.no_sort = true;
    flamegraph::from_lines(&mut opt, lines.iter().map(String::as_str), &mut out)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::test_support::{frame, main_f, site, snapshot};

    fn meta() -> FlameMeta {
        FlameMeta {
            title: "allocations <test>".into(),
            subtitle: Some("PID 1".into()),
        }
    }

    #[test]
    fn names_functions_and_types() {
        let snap = snapshot(
            1,
            vec![
                main_f(),
                site("main.g", 2, "[]uint8", 1, 4000, vec![frame("main.g", 2)]),
            ],
        );
        let mut out = Vec::new();
        write(&snap, Weight::Bytes, &meta(), &mut out).unwrap();
        let svg = String::from_utf8(out).unwrap();
        assert!(svg.starts_with("<?xml"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        for name in ["main.f", "main.main", "main.g", "[main.T]", "[[]uint8]"] {
            assert!(svg.contains(name), "{name} missing");
        }
        // Total in the root frame's tooltip.
        assert!(svg.contains("all (4,120 bytes, 100%)"), "{svg}");
        assert!(svg.contains("allocations &lt;test&gt;"));
    }

    #[test]
    fn empty_recording() {
        let mut out = Vec::new();
        write(&snapshot(1, vec![]), Weight::Allocs, &meta(), &mut out).unwrap();
        let svg = String::from_utf8(out).unwrap();
        assert!(svg.contains("no allocations recorded") && svg.trim_end().ends_with("</svg>"));
    }
}
