//! Checked little-endian reads from untrusted bytes.
//!
//! Every parser in `gobin` reads through these helpers: offsets and lengths
//! come from the file and are never trusted, so each read is a checked slice
//! that returns `None` instead of panicking, and nothing here allocates.

/// `len` bytes at `off`, or `None` when the range is not inside `data`.
pub(crate) fn bytes(data: &[u8], off: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(off).ok()?;
    let len = usize::try_from(len).ok()?;
    data.get(start..start.checked_add(len)?)
}

/// The bytes from `off` to the end of `data`.
pub(crate) fn tail(data: &[u8], off: u64) -> Option<&[u8]> {
    data.get(usize::try_from(off).ok()?..)
}

pub(crate) fn u8_at(data: &[u8], off: u64) -> Option<u8> {
    data.get(usize::try_from(off).ok()?).copied()
}

/// The `N` bytes at `off`.
fn array_at<const N: usize>(data: &[u8], off: u64) -> Option<[u8; N]> {
    bytes(data, off, N as u64)?.try_into().ok()
}

pub(crate) fn u16_at(data: &[u8], off: u64) -> Option<u16> {
    array_at(data, off).map(u16::from_le_bytes)
}

pub(crate) fn u32_at(data: &[u8], off: u64) -> Option<u32> {
    array_at(data, off).map(u32::from_le_bytes)
}

pub(crate) fn i32_at(data: &[u8], off: u64) -> Option<i32> {
    array_at(data, off).map(i32::from_le_bytes)
}

pub(crate) fn u64_at(data: &[u8], off: u64) -> Option<u64> {
    array_at(data, off).map(u64::from_le_bytes)
}

/// Decodes an unsigned LEB128 varint (Go's `binary.Uvarint`): the value and
/// the number of bytes it used. `None` when truncated or longer than 10
/// bytes / 64 bits.
pub(crate) fn uvarint(data: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, &b) in data.iter().enumerate().take(10) {
        let low = u64::from(b & 0x7f);
        if i == 9 && b > 1 {
            return None; // overflows 64 bits
        }
        value |= low << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// The NUL-terminated byte string at `off` (without the NUL), or `None`
/// when `off` is out of range or no NUL follows.
pub(crate) fn cstr(data: &[u8], off: u64) -> Option<&[u8]> {
    let rest = tail(data, off)?;
    let end = rest.iter().position(|&b| b == 0)?;
    rest.get(..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_checked() {
        let d = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(u32_at(&d, 0), Some(0x0403_0201));
        assert_eq!(u64_at(&d, 1), Some(0x0908_0706_0504_0302));
        assert_eq!(u64_at(&d, 2), None);
        assert_eq!(u16_at(&d, 8), None);
        assert_eq!(u8_at(&d, 9), None);
        assert_eq!(bytes(&d, u64::MAX, 2), None);
        assert_eq!(bytes(&d, 2, u64::MAX), None);
        assert_eq!(bytes(&d, 9, 0), Some(&[][..]));
        assert_eq!(tail(&d, 10), None);
        assert_eq!(i32_at(&[0xff, 0xff, 0xff, 0xff], 0), Some(-1));
    }

    #[test]
    fn uvarint_matches_go() {
        assert_eq!(uvarint(&[0]), Some((0, 1)));
        assert_eq!(uvarint(&[0x7f]), Some((127, 1)));
        assert_eq!(uvarint(&[0x80, 0x01]), Some((128, 2)));
        assert_eq!(uvarint(&[0xf8, 0x01]), Some((248, 2)));
        assert_eq!(uvarint(&[0x80]), None);
        assert_eq!(uvarint(&[]), None);
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(uvarint(&max), Some((u64::MAX, 10)));
        let over = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert_eq!(uvarint(&over), None);
        assert_eq!(uvarint(&[0x80; 11]), None);
    }

    #[test]
    fn cstr_needs_terminator() {
        assert_eq!(cstr(b"ab\0cd\0", 0), Some(&b"ab"[..]));
        assert_eq!(cstr(b"ab\0cd\0", 3), Some(&b"cd"[..]));
        assert_eq!(cstr(b"ab\0cd", 3), None);
        assert_eq!(cstr(b"ab\0", 7), None);
    }
}
