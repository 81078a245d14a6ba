//! The escape index on captured compiler output (`testdata/*.txt`, from
//! `go build -o /dev/null -gcflags=<module>/...=-m=2` with Go 1.21.13 and
//! 1.27.3 on `testdata/escape` and `testdata/demo`; the demo's files are
//! reduced to `demo/main.go` without `inlining call` lines), against the
//! real sources in the repository's `testdata/`.
//!
//! If a fixture source changes, recapture: in `testdata/escape`,
//! `go build -o /dev/null -buildvcs=false -pgo=off -gcflags='allocwatch.test/escape/...=-m=2' . 2> …`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::index::{DirSources, EscapeIndex, ModuleInfo, Package, SiteLookup};
use super::parse::parse;
use super::{Cause, SiteEscape};
use crate::stats::SiteKey;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("testdata")
}

fn fixture_index(output: &str) -> EscapeIndex {
    let root = testdata().join("escape");
    EscapeIndex::build(
        ModuleInfo {
            root: root.clone(),
            path: "allocwatch.test/escape".into(),
            main_package: Some("allocwatch.test/escape".into()),
        },
        vec![
            Package {
                import_path: "allocwatch.test/escape".into(),
                name: "main".into(),
                dir: String::new(),
                files: vec!["main.go".into()],
            },
            Package {
                import_path: "allocwatch.test/escape/internal/shape".into(),
                name: "shape".into(),
                dir: "internal/shape".into(),
                files: vec!["shape.go".into()],
            },
        ],
        parse(output),
        &DirSources(root),
    )
}

fn demo_index(output: &str) -> EscapeIndex {
    let root = testdata();
    EscapeIndex::build(
        ModuleInfo {
            root: root.clone(),
            path: "allocwatch.test".into(),
            main_package: Some("allocwatch.test/demo".into()),
        },
        vec![
            Package {
                import_path: "allocwatch.test/demo".into(),
                name: "main".into(),
                dir: "demo".into(),
                files: vec!["load.go".into(), "main.go".into()],
            },
            Package {
                import_path: "allocwatch.test/fixtures/allocs".into(),
                name: "main".into(),
                dir: "fixtures/allocs".into(),
                files: vec!["main.go".into()],
            },
        ],
        parse(output),
        &DirSources(root),
    )
}

fn key(function: &str, file: &str, line: u32, type_name: &str) -> SiteKey {
    SiteKey {
        function: Arc::from(function),
        file: Arc::from(file),
        line,
        type_name: Arc::from(type_name),
    }
}

/// The line of `// escape-site: <marker>` in `file`.
fn marker_line(file: &Path, marker: &str) -> u32 {
    let text = std::fs::read_to_string(file).unwrap();
    let want = format!("// escape-site: {marker}");
    let i = text
        .lines()
        .position(|l| l.trim_end().ends_with(&want))
        .unwrap_or_else(|| panic!("no marker {marker} in {}", file.display()));
    u32::try_from(i + 1).unwrap()
}

fn found(l: SiteLookup) -> Arc<SiteEscape> {
    match l {
        SiteLookup::Found(e) => e,
        other => panic!("expected a reason, got {other:?}"),
    }
}

/// (marker, function, file in the module, type, cause, headline start)
const SITES: &[(&str, &str, &str, &str, Cause, &str)] = &[
    (
        "return",
        "main.newPoint",
        "main.go",
        "main.Point",
        Cause::ReturnedPointer,
        "moved to heap: p",
    ),
    (
        "interface",
        "main.boxValue",
        "main.go",
        "main.Boxed",
        Cause::Interface,
        "b escapes to heap",
    ),
    (
        "goroutine",
        "main.spawn",
        "main.go",
        "int64",
        Cause::GoroutineCapture,
        "moved to heap: total",
    ),
    (
        "goroutine-closure",
        "main.spawn",
        "main.go",
        "struct { F uintptr; X0 *sync.WaitGroup; X1 *int64 }",
        Cause::GoroutineCapture,
        "func literal escapes to heap",
    ),
    (
        "captured",
        "main.counter",
        "main.go",
        "int64",
        Cause::ClosureCapture,
        "moved to heap: n",
    ),
    (
        "closure",
        "main.counter",
        "main.go",
        "struct { F uintptr; X0 *int64 }",
        Cause::ClosureCapture,
        "func literal escapes to heap",
    ),
    (
        "make",
        "main.makeBuf",
        "main.go",
        "uint8",
        Cause::UnknownSizeMake,
        "make([]byte, n)",
    ),
    (
        "too-large",
        "main.bigLocal",
        "main.go",
        "[98304]uint8",
        Cause::TooLarge,
        "new([98304]byte) escapes to heap",
    ),
    (
        "returned",
        "allocwatch.test/escape/internal/shape.NewRect",
        "internal/shape/shape.go",
        "shape.Rect",
        Cause::ReturnedPointer,
        "&Rect{...} escapes to heap",
    ),
];

fn check_fixture(output: &str, file_prefix: &str) {
    let idx = fixture_index(output);
    let root = testdata().join("escape");
    for &(marker, function, file, type_name, cause, headline) in SITES {
        let line = marker_line(&root.join(file), marker);
        let k = key(function, &format!("{file_prefix}{file}"), line, type_name);
        let e = found(idx.lookup(&k));
        assert_eq!(e.cause(), cause, "{marker}: {e:#?}");
        assert_eq!(e.reasons.len(), 1, "{marker}: {e:#?}");
        assert!(
            e.reasons[0].headline.starts_with(headline),
            "{marker}: {e:#?}"
        );
        assert!(e.csv().starts_with(cause.label()), "{marker}: {}", e.csv());
    }
    // The standard library and dependencies: no reason, even where a module
    // file has the same path suffix.
    for k in [
        key(
            "strconv.formatBits",
            "/usr/lib/go/src/strconv/itoa.go",
            191,
            "string",
        ),
        key(
            "example.com/dep/internal/shape.NewRect",
            "/root/go/pkg/mod/example.com/dep@v1.0.0/internal/shape/shape.go",
            12,
            "shape.Rect",
        ),
        key(
            "runtime.malg",
            "/usr/lib/go/src/runtime/proc.go",
            43,
            "runtime.g",
        ),
    ] {
        assert_eq!(idx.lookup(&k), SiteLookup::Outside, "{k:?}");
    }
}

#[test]
fn fixture_go121_absolute_paths() {
    let root = testdata().join("escape");
    check_fixture(
        include_str!("testdata/fixture-go1.21.txt"),
        &format!("{}/", root.display()),
    );
}

#[test]
fn fixture_go127_trimpath() {
    check_fixture(
        include_str!("testdata/fixture-go1.27.txt"),
        "allocwatch.test/escape/",
    );
}

#[test]
fn fixture_go127_other_build_machine() {
    check_fixture(
        include_str!("testdata/fixture-go1.27.txt"),
        "/home/ci/build/escape/",
    );
}

#[test]
fn flows_are_explained() {
    let idx = fixture_index(include_str!("testdata/fixture-go1.27.txt"));
    let root = testdata().join("escape");
    let line = marker_line(&root.join("main.go"), "return");
    let e = found(idx.lookup(&key(
        "main.newPoint",
        "allocwatch.test/escape/main.go",
        line,
        "main.Point",
    )));
    assert_eq!(
        e.csv(),
        format!(
            "returned pointer: moved to heap: p; flow: ~r0 ← &p; from &p (address-of) at main.go:{}:9; from return &p (return) at main.go:{}:2",
            line + 1,
            line + 1
        )
    );
    let lines = e.lines();
    assert_eq!(
        lines[0],
        format!("moved to heap: p [returned pointer] at main.go:{line}:2")
    );
    assert_eq!(lines[1], "  flow: ~r0 ← &p");

    let line = marker_line(&root.join("main.go"), "goroutine");
    let e = found(idx.lookup(&key(
        "main.spawn",
        "allocwatch.test/escape/main.go",
        line,
        "int64",
    )));
    let note = e.reasons[0].note.as_deref().unwrap();
    assert!(
        note.starts_with("captured by the goroutine started at main.go:"),
        "{note}"
    );
}

#[test]
fn go125_make_does_not_escape_but_is_large() {
    let idx = fixture_index(include_str!("testdata/fixture-go1.27.txt"));
    let line = marker_line(&testdata().join("escape/main.go"), "make");
    let e = found(idx.lookup(&key(
        "main.makeBuf",
        "allocwatch.test/escape/main.go",
        line,
        "uint8",
    )));
    assert_eq!(e.reasons[0].headline, "make([]byte, n) does not escape");
    assert!(e.reasons[0].note.as_deref().unwrap().contains("32 bytes"));
}

#[test]
fn lines_without_decisions_and_mismatches() {
    let idx = fixture_index(include_str!("testdata/fixture-go1.21.txt"));
    let f = "allocwatch.test/escape/main.go";
    let root = testdata().join("escape");
    let make = marker_line(&root.join("main.go"), "make");
    // In the module, right function, no decision on that line.
    assert_eq!(
        idx.lookup(&key("main.makeBuf", f, make + 2, "uint8")),
        SiteLookup::Unknown
    );
    // The binary says newPoint, the source has makeBuf there.
    match idx.lookup(&key("main.newPoint", f, make, "uint8")) {
        SiteLookup::Mismatch(why) => assert!(why.contains("is in makeBuf"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Before the declaration, past the end, in a file the package lacks.
    assert!(matches!(
        idx.lookup(&key("main.bigLocal", f, 3, "x")),
        SiteLookup::Mismatch(_)
    ));
    assert!(matches!(
        idx.lookup(&key("main.main", f, 9999, "x")),
        SiteLookup::Mismatch(_)
    ));
    assert_eq!(
        idx.lookup(&key(
            "main.newPoint",
            "allocwatch.test/escape/other.go",
            43,
            "x"
        )),
        SiteLookup::Outside
    );
    // The runtime's own objects made while a line runs are not escapes.
    let g = marker_line(&root.join("main.go"), "goroutine-closure");
    assert_eq!(
        idx.lookup(&key("main.spawn", f, g, "runtime.g")),
        SiteLookup::Runtime
    );
    assert_eq!(
        idx.lookup(&key("main.spawn", f, g, "[]*runtime.g")),
        SiteLookup::Runtime
    );
    let big = marker_line(&root.join("main.go"), "too-large");
    assert_eq!(
        idx.lookup(&key("main.bigLocal", f, big, "[]uintptr")),
        SiteLookup::Runtime
    );
    // A closure of spawn is inside spawn: no mismatch.
    let g = marker_line(&root.join("main.go"), "goroutine");
    assert_ne!(
        std::mem::discriminant(&idx.lookup(&key("main.spawn.func1", f, g + 4, "x"))),
        std::mem::discriminant(&SiteLookup::Mismatch(String::new()))
    );
}

/// The demo's deliberate escapes, on both versions.
#[test]
fn demo() {
    let main_go = testdata().join("demo/main.go");
    let text = std::fs::read_to_string(&main_go).unwrap();
    let line_of = |needle: &str| -> u32 {
        let i = text
            .lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} not in demo/main.go"));
        u32::try_from(i + 1).unwrap()
    };
    let file = main_go.display().to_string();
    let cases = [
        (
            "main.newOrder",
            "o := Order{",
            "main.Order",
            Cause::ReturnedPointer,
            "moved to heap: o",
        ),
        (
            "main.orderSummary",
            "var b strings.Builder",
            "strings.Builder",
            Cause::Interface,
            "moved to heap: b",
        ),
        (
            "main.handleOrders",
            "case auditLog <- func() string",
            "struct { F uintptr; X0 *main.Order }",
            Cause::ClosureCapture,
            "func literal escapes to heap",
        ),
        (
            "main.handleOrders",
            "\tgo func() {",
            "struct { F uintptr; X0 string; X1 int64 }",
            Cause::GoroutineCapture,
            "func literal escapes to heap",
        ),
        (
            "main.handleStats",
            "revenue[c] = cents",
            "int64",
            Cause::Interface,
            "cents escapes to heap",
        ),
    ];
    for output in [
        include_str!("testdata/demo-go1.21.txt"),
        include_str!("testdata/demo-go1.27.txt"),
    ] {
        let idx = demo_index(output);
        for (function, needle, type_name, cause, headline) in cases {
            let e = found(idx.lookup(&key(function, &file, line_of(needle), type_name)));
            assert_eq!(e.cause(), cause, "{function} {needle}: {e:#?}");
            assert!(e.reasons[0].headline.starts_with(headline), "{e:#?}");
        }
        let e = found(idx.lookup(&key(
            "main.handleReport",
            &file,
            line_of("lines := make([]reportLine, len(ids))"),
            "main.reportLine",
        )));
        assert!(
            e.reasons[0]
                .headline
                .starts_with("make([]reportLine, len(ids))"),
            "{e:#?}"
        );
        assert!(
            [Cause::UnknownSizeMake, Cause::Interface].contains(&e.cause()),
            "{e:#?}"
        );
        // Two decisions on one line: the one that makes this type.
        let e = found(idx.lookup(&key(
            "main.newScratch",
            &file,
            line_of("return &scratch{buf: make([]byte, 0, 4096)}"),
            "[]uint8",
        )));
        assert_eq!(e.reasons.len(), 1, "{e:#?}");
        assert_eq!(
            e.reasons[0].headline,
            "make([]byte, 0, 4096) escapes to heap"
        );
        assert_eq!(
            e.reasons[0].note.as_deref(),
            Some("referenced by &scratch{...}, which is on the heap")
        );
        let e = found(idx.lookup(&key(
            "main.newScratch",
            &file,
            line_of("return &scratch{buf: make([]byte, 0, 4096)}"),
            "main.scratch",
        )));
        assert_eq!(e.reasons.len(), 1, "{e:#?}");
        assert_eq!(e.reasons[0].headline, "&scratch{...} escapes to heap");
        // A main package of another command in the same module is not the target's.
        assert_eq!(
            idx.lookup(&key(
                "main.newOrder",
                &testdata()
                    .join("fixtures/allocs/main.go")
                    .display()
                    .to_string(),
                90,
                "x"
            )),
            SiteLookup::Outside
        );
    }
}
