//! How numbers, sizes, durations, paths and Go names are written for people:
//! the dashboard, the summaries and the reports call these, nothing else
//! formats them.
//!
//! Counts use decimal prefixes (`12.3k`), sizes binary ones (`12.3KiB`); the
//! dashboard's formatters keep their output short enough for a narrow table
//! column, the summaries' and reports' ([`bytes_spaced`]) put a space before
//! the unit.

use std::borrow::Cow;
use std::time::Duration;

const COUNT_UNITS: [&str; 5] = ["", "k", "M", "G", "T"];
const BYTE_UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

#[expect(clippy::cast_precision_loss, reason = "display only")]
fn scaled(n: u64, base: f64, bump_at: f64, units: &[&str]) -> String {
    let mut v = n as f64;
    let mut unit = 0;
    while v >= bump_at && unit + 1 < units.len() {
        v /= base;
        unit += 1;
    }
    // Whole numbers in the first unit (`v` is `n` exactly there).
    let decimals = usize::from(unit > 0 && v < 99.95);
    format!("{v:.decimals$}{}", units[unit])
}

/// A count: `999`, `1.0k`, `12.3k`, `123k`, `1.2M`.
#[must_use]
pub fn count(n: u64) -> String {
    scaled(n, 1000.0, 999.5, &COUNT_UNITS)
}

/// A size: `512B`, `1.0KiB`, `1023KiB`, `1.5MiB`.
#[must_use]
pub fn bytes(n: u64) -> String {
    scaled(n, 1024.0, 1023.5, &BYTE_UNITS)
}

/// The largest unit [`bytes_spaced`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LargestUnit {
    /// Up to `MiB` (one decimal), for sizes of single allocations.
    MiB,
    /// Up to `GiB` (two decimals), for totals.
    GiB,
}

/// A size with a space before the unit and one decimal: `512 B`, `1.5 KiB`,
/// `3.0 MiB`; from 1 GiB, `1.25 GiB` or, with [`LargestUnit::MiB`], `1024.0 MiB`.
#[must_use]
pub fn bytes_spaced(b: u64, largest: LargestUnit) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    const GIB: u64 = 1024 * MIB;
    #[expect(clippy::cast_precision_loss, reason = "display only")]
    let v = b as f64;
    match b {
        0..KIB => format!("{b} B"),
        KIB..MIB => format!("{:.1} KiB", v / 1024.0),
        _ if b < GIB || largest == LargestUnit::MiB => format!("{:.1} MiB", v / 1_048_576.0),
        _ => format!("{:.2} GiB", v / 1_073_741_824.0),
    }
}

#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "non-negative, rounded"
)]
fn round(r: f64) -> u64 {
    if r.is_finite() && r > 0.0 {
        r.round() as u64
    } else {
        0
    }
}

/// A per-second count: one decimal below 10 (`0.5`), then like [`count`].
#[must_use]
pub fn rate(r: f64) -> String {
    if !r.is_finite() || r <= 0.0 {
        "0".to_owned()
    } else if r < 9.95 {
        format!("{r:.1}")
    } else {
        count(round(r))
    }
}

/// A per-second size, like [`bytes`].
#[must_use]
pub fn bytes_rate(r: f64) -> String {
    bytes(round(r))
}

/// `H:MM:SS`.
#[must_use]
pub fn elapsed(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// A ratio in `0..=1` as `0.93`; `-` when unknown.
#[must_use]
pub fn ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"))
}

/// A ratio in `0..=1` as a percentage with one decimal: `93.0%`; `-` when unknown.
#[must_use]
pub fn ratio_percent(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

/// A fraction as a percentage: `12.3%`.
#[must_use]
pub fn percent(frac: f64) -> String {
    let p = if frac.is_finite() { frac * 100.0 } else { 0.0 };
    let decimals = match p {
        _ if p >= 99.95 => 0,
        _ if p < 0.995 => 2,
        _ => 1,
    };
    format!("{p:.decimals$}%")
}

/// The last `components` components of a path: `net/http/server.go` → `http/server.go` for 2.
#[must_use]
pub fn short_file(file: &str, components: usize) -> &str {
    let mut cut = file.len();
    for _ in 0..components.max(1) {
        match file[..cut].rfind('/') {
            Some(i) => cut = i,
            None => return file,
        }
    }
    &file[cut + 1..]
}

/// A Go function or type name without import paths:
/// `github.com/x/y/pkg.(*T).M` → `pkg.(*T).M`, `map[string]*example.com/a.T` → `map[string]*a.T`.
#[must_use]
pub fn short_name(name: &str) -> Cow<'_, str> {
    if !name.contains('/') {
        return Cow::Borrowed(name);
    }
    let is_path = |c: char| c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | '/' | '~' | '%');
    let mut out = String::with_capacity(name.len());
    let mut token_start = 0;
    for (i, c) in name.char_indices() {
        if !is_path(c) {
            push_token(&mut out, &name[token_start..i]);
            out.push(c);
            token_start = i + c.len_utf8();
        }
    }
    push_token(&mut out, &name[token_start..]);
    Cow::Owned(out)
}

fn push_token(out: &mut String, token: &str) {
    match token.rfind('/') {
        Some(i) => out.push_str(&token[i + 1..]),
        None => out.push_str(token),
    }
}

/// The label of a `size_hist` bucket: the largest size it holds (`≤64B`);
/// the last bucket also holds everything larger (`>64TiB`).
#[must_use]
pub fn bucket_label(i: usize) -> String {
    // 2^shift exactly: `64KiB`, not `64.0KiB`.
    let pow2 = |shift: usize| {
        format!(
            "{}{}",
            1u64 << (shift % 10),
            BYTE_UNITS[(shift / 10).min(BYTE_UNITS.len() - 1)]
        )
    };
    let last = crate::stats::SIZE_BUCKETS - 1;
    if i >= last {
        format!(">{}", pow2(last - 1))
    } else {
        format!("≤{}", pow2(i))
    }
}

/// Cuts `s` to at most `width` characters, ending with `…` when cut.
#[must_use]
pub fn fit(s: &str, width: usize) -> Cow<'_, str> {
    if s.chars().count() <= width {
        return Cow::Borrowed(s);
    }
    if width == 0 {
        return Cow::Borrowed("");
    }
    let mut out: String = s.chars().take(width - 1).collect();
    out.push('…');
    Cow::Owned(out)
}

/// A command line in at most `width` characters: whole when it fits, else
/// with the program's directory dropped (`/srv/bin/api -x` → `api -x`), then
/// cut at the end — the program's name is what identifies it.
#[must_use]
pub fn command(cmd: &str, width: usize) -> Cow<'_, str> {
    if cmd.chars().count() <= width {
        return Cow::Borrowed(cmd);
    }
    let (program, args) = cmd.split_once(' ').unwrap_or((cmd, ""));
    let name = program.rsplit('/').next().unwrap_or(program);
    let short = if args.is_empty() {
        name.to_owned()
    } else {
        format!("{name} {args}")
    };
    Cow::Owned(fit(&short, width).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1.0k");
        assert_eq!(count(12_345), "12.3k");
        assert_eq!(count(123_456), "123k");
        assert_eq!(count(999_950), "1.0M");
        assert_eq!(count(u64::MAX), "18446744T");
    }

    #[test]
    fn sizes() {
        assert_eq!(bytes(0), "0B");
        assert_eq!(bytes(1023), "1023B");
        assert_eq!(bytes(1024), "1.0KiB");
        assert_eq!(bytes(1000 * 1024), "1000KiB");
        assert_eq!(bytes(1024 * 1024), "1.0MiB");
        assert_eq!(bytes(3 * 1024 * 1024 / 2), "1.5MiB");
        for largest in [LargestUnit::MiB, LargestUnit::GiB] {
            assert_eq!(bytes_spaced(0, largest), "0 B");
            assert_eq!(bytes_spaced(1023, largest), "1023 B");
            assert_eq!(bytes_spaced(1024, largest), "1.0 KiB");
            assert_eq!(bytes_spaced(1_048_575, largest), "1024.0 KiB");
            assert_eq!(bytes_spaced(3 << 19, largest), "1.5 MiB");
        }
        assert_eq!(bytes_spaced(5 << 29, LargestUnit::GiB), "2.50 GiB");
        assert_eq!(bytes_spaced(5 << 29, LargestUnit::MiB), "2560.0 MiB");
    }

    #[test]
    fn rates() {
        assert_eq!(rate(0.0), "0");
        assert_eq!(rate(f64::NAN), "0");
        assert_eq!(rate(0.46), "0.5");
        assert_eq!(rate(9.96), "10");
        assert_eq!(rate(1234.0), "1.2k");
        assert_eq!(bytes_rate(2048.4), "2.0KiB");
    }

    #[test]
    fn names() {
        assert_eq!(short_name("main.main"), "main.main");
        assert_eq!(short_name("github.com/x/y/pkg.(*T).M"), "pkg.(*T).M");
        assert_eq!(short_name("map[string]*example.com/a.T"), "map[string]*a.T");
        assert_eq!(short_name("[]*net/http.Request"), "[]*http.Request");
        assert_eq!(
            short_file("/usr/lib/go/src/net/http/server.go", 2),
            "http/server.go"
        );
        assert_eq!(
            short_file("/usr/lib/go/src/net/http/server.go", 1),
            "server.go"
        );
        assert_eq!(short_file("server.go", 2), "server.go");
        assert_eq!(short_file("/server.go", 2), "/server.go");
    }

    #[test]
    fn misc() {
        assert_eq!(elapsed(Duration::from_secs(3725)), "1:02:05");
        assert_eq!(percent(0.1234), "12.3%");
        assert_eq!(percent(1.0), "100%");
        assert_eq!(percent(0.0015), "0.15%");
        assert_eq!(percent(0.0), "0.00%");
        assert_eq!(ratio(None), "-");
        assert_eq!(ratio_percent(None), "-");
        assert_eq!(ratio_percent(Some(0.93)), "93.0%");
        assert_eq!(bucket_label(0), "≤1B");
        assert_eq!(bucket_label(6), "≤64B");
        assert_eq!(bucket_label(10), "≤1KiB");
        assert_eq!(bucket_label(46), "≤64TiB");
        assert_eq!(bucket_label(47), ">64TiB");
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("abc", 4), "abc");
        assert_eq!(fit("abc", 0), "");
    }

    #[test]
    fn commands() {
        let cmd = "/srv/shop/bin/shop-api -listen :8080";
        assert_eq!(command(cmd, 40), cmd);
        assert_eq!(command(cmd, 30), "shop-api -listen :8080");
        assert_eq!(command(cmd, 12), "shop-api -l…");
        assert_eq!(command("/a/very/long/path/prog", 10), "prog");
        assert_eq!(command("/a/very/long/path/program-name", 5), "prog…");
        assert_eq!(command("x", 0), "");
    }
}
