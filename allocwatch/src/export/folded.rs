//! Folded stacks (Brendan Gregg's format, what `flamegraph.pl`, inferno and
//! speedscope read): one line per distinct stack, root first, frames
//! separated by `;`, then a space and the weight.
//!
//! The allocated type is the leaf frame, in brackets:
//! `main.main;main.handle;main.newOrder;[main.Order] 4096`. Frames are
//! function names (sites of one function at different lines fold together,
//! as in pprof's function view). A `;` inside a name (generic shapes,
//! struct types such as `struct { F uintptr; X0 int }`) would split the frame,
//! so it is written as `,`. Lines are merged, sorted, and lines of weight 0
//! are left out, so the weights add up to the recording's total.

use std::collections::BTreeMap;
use std::io::{self, Write};

use crate::stats::{SiteStats, Snapshot};

/// What a stack's weight counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Weight {
    /// Bytes requested from the allocator.
    #[default]
    Bytes,
    /// Allocations.
    Allocs,
}

impl Weight {
    /// The weight of one site.
    #[must_use]
    pub fn of(self, site: &SiteStats) -> u64 {
        match self {
            Weight::Bytes => site.bytes,
            Weight::Allocs => site.allocs,
        }
    }

    /// The unit, as a flame graph names it.
    #[must_use]
    pub fn unit(self) -> &'static str {
        match self {
            Weight::Bytes => "bytes",
            Weight::Allocs => "allocations",
        }
    }
}

fn push_frame(out: &mut String, name: &str) {
    if !out.is_empty() {
        out.push(';');
    }
    out.extend(name.chars().map(|c| match c {
        ';' => ',',
        '\n' | '\r' => ' ',
        c => c,
    }));
}

/// One frame of a site's stack as the flame graphs show it: a function
/// with where it was (the call's, or for the site the allocation's, file and
/// line), or the allocated type, the leaf, as `[main.T]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StackFrame<'a> {
    Function {
        name: &'a str,
        /// Empty when not known.
        file: &'a str,
        /// 0 when not known.
        line: u32,
    },
    /// The allocated Go type (`?` when not known).
    Type(String),
}

impl StackFrame<'_> {
    /// The frame's name: the function, or the type in brackets.
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            StackFrame::Function { name, .. } => name,
            StackFrame::Type(t) => t,
        }
    }
}

/// The stack of one site, root first, the type as the leaf frame. A site
/// without a stack is its own function's frame.
#[must_use]
pub fn frames_of(site: &SiteStats) -> Vec<StackFrame<'_>> {
    let mut frames: Vec<StackFrame<'_>> = if site.stack.is_empty() {
        vec![StackFrame::Function {
            name: &site.key.function,
            file: &site.key.file,
            line: site.key.line,
        }]
    } else {
        site.stack
            .iter()
            .rev()
            .map(|f| StackFrame::Function {
                name: &f.function,
                file: &f.file,
                line: f.line,
            })
            .collect()
    };
    let t = if site.key.type_name.is_empty() {
        "?"
    } else {
        &site.key.type_name
    };
    frames.push(StackFrame::Type(format!("[{t}]")));
    frames
}

/// The folded stack of one site, without its weight.
#[must_use]
pub fn stack_of(site: &SiteStats) -> String {
    let mut s = String::new();
    for f in frames_of(site) {
        push_frame(&mut s, f.name());
    }
    s
}

/// The folded lines of a snapshot, sorted, as `(stack, weight)`.
#[must_use]
pub fn lines(snap: &Snapshot, weight: Weight) -> Vec<(String, u64)> {
    let mut m: BTreeMap<String, u64> = BTreeMap::new();
    for site in &snap.sites {
        let w = weight.of(site);
        if w > 0 {
            *m.entry(stack_of(site)).or_default() += w;
        }
    }
    m.into_iter().collect()
}

/// Writes the folded stacks of `snap`.
///
/// # Errors
/// Those of `out`.
pub fn write(snap: &Snapshot, weight: Weight, mut out: impl Write) -> io::Result<()> {
    for (stack, w) in lines(snap, weight) {
        writeln!(out, "{stack} {w}")?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::test_support::{frame, main_f, site, snapshot};

    #[test]
    fn root_first_type_last_merged_and_sorted() {
        let snap = snapshot(
            1,
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
                    "main.closure",
                    3,
                    "struct { F uintptr; X0 int }",
                    2,
                    32,
                    vec![frame("main.closure", 3)],
                ),
                site(
                    "main.zero",
                    5,
                    "struct {}",
                    4,
                    0,
                    vec![frame("main.zero", 5)],
                ),
            ],
        );
        let mut out = Vec::new();
        write(&snap, Weight::Bytes, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "main.closure;[struct { F uintptr, X0 int }] 32\n\
             main.main;main.f;[main.T] 144\n"
        );
        let l = lines(&snap, Weight::Allocs);
        assert_eq!(
            l,
            [
                ("main.closure;[struct { F uintptr, X0 int }]".to_string(), 2),
                ("main.main;main.f;[main.T]".to_string(), 6),
                ("main.zero;[struct {}]".to_string(), 4),
            ]
        );
        let total: u64 = l.iter().map(|x| x.1).sum();
        assert_eq!(total, snap.sites.iter().map(|s| s.allocs).sum::<u64>());
    }

    #[test]
    fn site_without_stack() {
        let snap = snapshot(1, vec![site("main.f", 1, "", 1, 8, vec![])]);
        assert_eq!(lines(&snap, Weight::Bytes), [("main.f;[?]".to_string(), 8)]);
    }
}
