//! Go build information: the `.go.buildinfo` blob the linker writes into
//! every Go executable (toolchain version, main module, build settings such
//! as `-buildmode`, `-pgo`, `CGO_ENABLED`, `GOEXPERIMENT`), decoded the way
//! `debug/buildinfo` and `runtime/debug.ParseBuildInfo` do.

use serde::Serialize;

use super::GoBinError;
use super::elf::ElfInfo;
use super::read;

/// `"\xff Go buildinf:"`, at a 16-byte aligned address.
const MAGIC: &[u8; 14] = b"\xff Go buildinf:";
const HEADER_SIZE: u64 = 32;
/// Flag bit: version and module strings are stored inline (Go 1.18+).
const FLAG_INLINE: u8 = 0x2;
/// Flag bit: big-endian pointers (pre-1.18 format).
const FLAG_BIG_ENDIAN: u8 = 0x1;
/// Module info is framed by 16 sentinel bytes on each side.
const MODINFO_FRAME: usize = 16;

/// A Go release number `(major, minor, patch)`, e.g. `go1.27.3` → `(1, 27, 3)`.
pub type GoVersion = (u32, u32, u32);

/// Parses `go1.27.3`, `go1.21` (→ patch 0), `go1.22rc1` (→ `(1, 22, 0)`) and
/// `devel go1.28-abcdef …` (→ `(1, 28, 0)`).
pub fn parse_go_version(s: &str) -> Option<GoVersion> {
    let s = s.strip_prefix("devel ").unwrap_or(s);
    let s = s.strip_prefix("go")?;
    let mut nums = [0u32; 3];
    let mut parts = 0;
    for (i, part) in s.split('.').take(3).enumerate() {
        let end = part
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(part.len());
        let digits = &part[..end];
        if digits.is_empty() {
            break;
        }
        nums[i] = digits.parse().ok()?;
        parts = i + 1;
        if digits.len() != part.len() {
            break; // "22rc1", "28-abcdef": stop at the suffix
        }
    }
    (parts >= 2).then_some((nums[0], nums[1], nums[2]))
}

/// What the Go linker recorded about how the executable was built.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BuildInfo {
    /// The toolchain version without experiment suffix, e.g. `go1.27.3`.
    pub go_version: String,
    /// The version string exactly as recorded, e.g.
    /// `go1.27.3-X:nosizespecializedmalloc`.
    pub raw_version: String,
    /// `go_version` parsed (see [`BuildInfo::version`]).
    #[serde(rename = "version")]
    parsed_version: Option<GoVersion>,
    /// Non-default experiments, from the version's `X:` suffix and the
    /// `GOEXPERIMENT` build setting (deduplicated, in that order), e.g.
    /// `sizespecializedmalloc` or `nosizespecializedmalloc`.
    pub experiments: Vec<String>,
    /// The main package path (`path` line), e.g. `example.com/cmd/server`.
    pub path: String,
    /// The main module path (`mod` line), e.g. `example.com`.
    pub main_module: String,
    /// `build` settings in recorded order, e.g. `("-buildmode", "exe")`,
    /// `("-ldflags", "-s -w")`, `("CGO_ENABLED", "0")`, `("-pgo", "/p/default.pgo")`.
    pub settings: Vec<(String, String)>,
}

impl BuildInfo {
    /// The toolchain release `(major, minor, patch)`; `None` when the
    /// version string is not recognised (some devel builds).
    pub fn version(&self) -> Option<GoVersion> {
        self.parsed_version
    }

    /// The value of build setting `key`.
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Built with profile-guided optimisation (`-pgo=<file>`): hot call
    /// sites may have `sync.Pool` methods and allocators inlined.
    pub fn pgo(&self) -> bool {
        self.setting("-pgo")
            .is_some_and(|v| !v.is_empty() && v != "off")
    }

    /// True when `experiment` (e.g. `sizespecializedmalloc`) was recorded.
    pub fn has_experiment(&self, experiment: &str) -> bool {
        self.experiments.iter().any(|e| e == experiment)
    }

    /// `(version string, module info)` from the raw blob.
    fn from_strings(raw_version: String, modinfo: &str) -> Self {
        let (base, suffix) = split_experiments(&raw_version);
        let mut info = BuildInfo {
            go_version: base.to_string(),
            parsed_version: parse_go_version(base),
            experiments: Vec::new(),
            raw_version: raw_version.clone(),
            ..BuildInfo::default()
        };
        for line in modinfo.lines() {
            if let Some(p) = line.strip_prefix("path\t") {
                info.path = p.to_string();
            } else if let Some(m) = line.strip_prefix("mod\t") {
                info.main_module = m.split('\t').next().unwrap_or("").to_string();
            } else if let Some(kv) = line.strip_prefix("build\t")
                && let Some((k, v)) = parse_setting(kv)
            {
                info.settings.push((k, v));
            }
        }
        let from_setting = info.setting("GOEXPERIMENT").unwrap_or("").to_string();
        for exp in suffix.split(',').chain(from_setting.split(',')) {
            let exp = exp.trim();
            if !exp.is_empty() && !info.experiments.iter().any(|e| e == exp) {
                info.experiments.push(exp.to_string());
            }
        }
        info
    }
}

/// Splits `go1.27.3-X:a,b` / `go1.26.6 X:a` into the version and `a,b`.
fn split_experiments(v: &str) -> (&str, &str) {
    for sep in ["-X:", " X:"] {
        if let Some(i) = v.find(sep) {
            return (&v[..i], &v[i + sep.len()..]);
        }
    }
    (v, "")
}

/// One `build\t` line body: `key=value`, either part possibly quoted.
fn parse_setting(kv: &str) -> Option<(String, String)> {
    let (key, raw_value) = match kv.as_bytes().first()? {
        b'=' => return None,
        b'"' | b'`' => {
            let (key, rest) = unquote_prefix(kv)?;
            (key, rest.strip_prefix('=')?)
        }
        _ => {
            let (k, v) = kv.split_once('=')?;
            (k.to_string(), v)
        }
    };
    let value = match raw_value.as_bytes().first() {
        Some(b'"' | b'`') => match unquote_prefix(raw_value) {
            Some((v, "")) => v,
            _ => raw_value.to_string(),
        },
        _ => raw_value.to_string(),
    };
    Some((key, value))
}

/// Decodes the Go quoted string at the start of `s` (`strconv.QuotedPrefix`
/// + `Unquote`): the value and the rest of `s`.
fn unquote_prefix(s: &str) -> Option<(String, &str)> {
    let mut chars = s.char_indices();
    let (_, quote) = chars.next()?;
    if quote == '`' {
        let end = s[1..].find('`')? + 1;
        return Some((s[1..end].to_string(), &s[end + 1..]));
    }
    if quote != '"' {
        return None;
    }
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => {
                let (_, e) = chars.next()?;
                match e {
                    'a' => out.push('\x07'),
                    'b' => out.push('\x08'),
                    'f' => out.push('\x0c'),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'v' => out.push('\x0b'),
                    '\\' | '"' | '\'' => out.push(e),
                    'x' | 'u' | 'U' => {
                        let n = match e {
                            'x' => 2,
                            'u' => 4,
                            _ => 8,
                        };
                        let mut v = 0u32;
                        for _ in 0..n {
                            v = v * 16 + chars.next()?.1.to_digit(16)?;
                        }
                        out.push(char::from_u32(v).unwrap_or(char::REPLACEMENT_CHARACTER));
                    }
                    '0'..='7' => {
                        let mut v = e.to_digit(8)?;
                        for _ in 0..2 {
                            v = v * 8 + chars.next()?.1.to_digit(8)?;
                        }
                        out.push(char::from_u32(v).unwrap_or(char::REPLACEMENT_CHARACTER));
                    }
                    _ => return None,
                }
            }
            '\n' => return None,
            c => out.push(c),
        }
    }
    None
}

/// Finds and decodes the build info blob, refusing toolchains older than
/// Go 1.17 (stack-based calling convention).
pub(crate) fn parse(data: &[u8], elf: &ElfInfo) -> Result<BuildInfo, GoBinError> {
    let blob = find_blob(data, elf).ok_or(GoBinError::NotGo)?;
    let header = read::bytes(blob, 0, HEADER_SIZE).ok_or(GoBinError::Truncated {
        what: "build info header",
    })?;
    let ptr_size = header[14];
    let flags = header[15];
    let (version, modinfo) = if flags & FLAG_INLINE != 0 {
        let rest = read::tail(blob, HEADER_SIZE).unwrap_or(&[]);
        let (version, n) = varint_string(rest).ok_or(GoBinError::Truncated {
            what: "build info version",
        })?;
        let modinfo = read::tail(rest, n as u64)
            .and_then(varint_string)
            .map_or(&[][..], |(m, _)| m);
        (version.to_vec(), modinfo.to_vec())
    } else {
        // Go 1.17 and older: two pointers to Go string headers.
        if ptr_size != 8 || flags & FLAG_BIG_ENDIAN != 0 {
            return Err(GoBinError::Corrupt {
                what: format!("build info header (pointer size {ptr_size}, flags {flags:#x})"),
            });
        }
        let version_ptr = read::u64_at(header, 16).unwrap_or(0);
        let mod_ptr = read::u64_at(header, 24).unwrap_or(0);
        let version = go_string(data, elf, version_ptr).ok_or(GoBinError::Truncated {
            what: "build info version",
        })?;
        let modinfo = go_string(data, elf, mod_ptr).unwrap_or_default();
        (version, modinfo)
    };
    if version.is_empty() {
        return Err(GoBinError::NotGo);
    }
    let version = String::from_utf8_lossy(&version).into_owned();
    let modinfo = strip_modinfo_frame(&modinfo);
    let info = BuildInfo::from_strings(version, &String::from_utf8_lossy(modinfo));
    if let Some(v) = info.version()
        && v < (1, 17, 0)
    {
        return Err(GoBinError::GoTooOld {
            version: info.raw_version,
        });
    }
    Ok(info)
}

fn strip_modinfo_frame(m: &[u8]) -> &[u8] {
    let n = m.len();
    if n > 2 * MODINFO_FRAME && m[n - MODINFO_FRAME - 1] == b'\n' {
        &m[MODINFO_FRAME..n - MODINFO_FRAME]
    } else {
        &[]
    }
}

/// A uvarint-length-prefixed byte string and the bytes consumed.
fn varint_string(b: &[u8]) -> Option<(&[u8], usize)> {
    let (len, n) = read::uvarint(b)?;
    let s = read::bytes(b, n as u64, len)?;
    Some((s, n + s.len()))
}

/// Reads a Go `string` header `{data, len}` at `vaddr` and its bytes.
fn go_string(data: &[u8], elf: &ElfInfo, vaddr: u64) -> Option<Vec<u8>> {
    let ptr = elf.read_ptr(data, vaddr)?;
    let len = elf.read_ptr(data, vaddr.checked_add(8)?)?;
    if len > data.len() as u64 {
        return None;
    }
    elf.read(data, ptr, len).map(<[u8]>::to_vec)
}

/// The blob: the `.go.buildinfo` section, or else the first 16-byte
/// aligned magic in a writable segment (what `debug/buildinfo` does).
fn find_blob<'a>(data: &'a [u8], elf: &ElfInfo) -> Option<&'a [u8]> {
    if let Some(sec) = elf.section_by_suffix(".go.buildinfo")
        && let Some(b) = elf.read_to_segment_end(data, sec.addr)
        && b.starts_with(MAGIC)
    {
        return Some(b);
    }
    const PF_W: u32 = 2;
    for seg in elf.segments.iter().filter(|s| s.flags & PF_W != 0) {
        let Some(image) = read::bytes(data, seg.offset, seg.filesz) else {
            continue;
        };
        let skip = (16 - (seg.vaddr % 16)) % 16;
        let Some(aligned) = read::tail(image, skip) else {
            continue;
        };
        let mut off = 0usize;
        while let Some(chunk) = aligned.get(off..) {
            if chunk.len() < MAGIC.len() {
                break;
            }
            if chunk.starts_with(MAGIC) {
                return Some(chunk);
            }
            off += 16;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_go_version("go1.27.3"), Some((1, 27, 3)));
        assert_eq!(parse_go_version("go1.21"), Some((1, 21, 0)));
        assert_eq!(parse_go_version("go1.22rc1"), Some((1, 22, 0)));
        assert_eq!(
            parse_go_version("devel go1.28-abcdef Tue Jan 1"),
            Some((1, 28, 0))
        );
        assert_eq!(parse_go_version("go1.16.15"), Some((1, 16, 15)));
        assert_eq!(parse_go_version("go1"), None);
        assert_eq!(parse_go_version("gox.y"), None);
        assert_eq!(parse_go_version(""), None);
        assert_eq!(parse_go_version("go99999999999.1"), None);
        assert!((1, 16, 15) < (1, 17, 0));
    }

    #[test]
    fn experiments_from_version_and_setting() {
        let m = "path\tex.com/cmd\nmod\tex.com\t(devel)\t\nbuild\t-buildmode=pie\nbuild\t-ldflags=\"-s -w\"\nbuild\tGOEXPERIMENT=sizespecializedmalloc,arenas\nbuild\t-pgo=/src/default.pgo\n";
        let bi = BuildInfo::from_strings("go1.26.6-X:sizespecializedmalloc".into(), m);
        assert_eq!(bi.go_version, "go1.26.6");
        assert_eq!(bi.version(), Some((1, 26, 6)));
        assert_eq!(bi.experiments, ["sizespecializedmalloc", "arenas"]);
        assert_eq!(bi.path, "ex.com/cmd");
        assert_eq!(bi.main_module, "ex.com");
        assert_eq!(bi.setting("-ldflags"), Some("-s -w"));
        assert_eq!(bi.setting("-buildmode"), Some("pie"));
        assert!(bi.pgo());
        let bi = BuildInfo::from_strings("go1.27.3 X:nosizespecializedmalloc".into(), "");
        assert_eq!(bi.go_version, "go1.27.3");
        assert!(bi.has_experiment("nosizespecializedmalloc"));
        assert!(!bi.pgo());
    }

    #[test]
    fn settings_quoting() {
        assert_eq!(parse_setting("a=b"), Some(("a".into(), "b".into())));
        assert_eq!(parse_setting("a="), Some(("a".into(), String::new())));
        assert_eq!(parse_setting("=b"), None);
        assert_eq!(parse_setting("noequals"), None);
        assert_eq!(
            parse_setting("\"k y\"=\"v\\t\\x41\\u00e9\\101\""),
            Some(("k y".into(), "v\tA\u{e9}A".into()))
        );
        assert_eq!(
            parse_setting("`k`=`a\"b`"),
            Some(("k".into(), "a\"b".into()))
        );
        // An unterminated quote keeps the raw value.
        assert_eq!(parse_setting("k=\"abc"), Some(("k".into(), "\"abc".into())));
        assert_eq!(parse_setting("\"k"), None);
        assert_eq!(unquote_prefix("\"\\q\""), None);
        assert_eq!(unquote_prefix("\"\\x4"), None);
    }

    #[test]
    fn modinfo_frame() {
        let framed = [&[0u8; 16][..], b"path\tx\n", &[1u8; 16][..]].concat();
        assert_eq!(strip_modinfo_frame(&framed), b"path\tx\n");
        assert_eq!(strip_modinfo_frame(b"short"), b"");
    }
}
