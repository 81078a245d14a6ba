//! The code address sets the allocation programs test return addresses
//! against (`allocwatch_common::AddrSet`): which frames belong to the Go
//! runtime, and which to `runtime.mallocgc*`. Built from the plan's
//! `[start, end)` ranges as a bitmap with one bit per slot of `1 << shift`
//! bytes.

use allocwatch_common::{ADDR_SET_MAX_SHIFT, AddrSet};

/// Most `u64` words of one bitmap (16 MiB of kernel memory: 4 GiB of code
/// at 32-byte slots).
const MAX_WORDS: u64 = 1 << 21;

/// An [`AddrSet`] and its bits.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Bitmap {
    pub set: AddrSet,
    /// Bit `i % 64` of word `i / 64` is slot `i`; at least one word (an
    /// array map has at least one entry).
    pub words: Vec<u64>,
}

/// The set of `ranges` (vaddrs, sorted, not overlapping) at runtime
/// addresses (`bias` added). The slot is the largest power of two up to
/// 32 bytes that divides every boundary, so that no slot straddles one.
pub(super) fn build(ranges: &[(u64, u64)], bias: u64) -> Result<Bitmap, String> {
    let ranges: Vec<(u64, u64)> = ranges
        .iter()
        .filter(|(s, e)| e > s)
        .map(|&(s, e)| (s + bias, e + bias))
        .collect();
    let (Some(&(base, _)), Some(end)) = (ranges.first(), ranges.iter().map(|r| r.1).max()) else {
        return Ok(Bitmap {
            set: AddrSet::EMPTY,
            words: vec![0],
        });
    };
    let shift = ranges
        .iter()
        .flat_map(|&(s, e)| [s, e])
        .map(u64::trailing_zeros)
        .min()
        .unwrap_or(0)
        .min(ADDR_SET_MAX_SHIFT);
    let slots = (end - base) >> shift;
    let words = slots.div_ceil(64);
    if words > MAX_WORDS {
        return Err(format!(
            "the runtime's code spans {} bytes in slots of {} bytes: too large a bitmap",
            end - base,
            1u64 << shift
        ));
    }
    let mut bits = vec![0u64; usize::try_from(words.max(1)).map_err(|e| e.to_string())?];
    for (s, e) in ranges {
        for slot in (s - base) >> shift..(e - base) >> shift {
            bits[(slot / 64) as usize] |= 1 << (slot % 64);
        }
    }
    Ok(Bitmap {
        set: AddrSet {
            base,
            slots,
            shift: u64::from(shift),
        },
        words: bits,
    })
}

impl Bitmap {
    /// Whether `addr` is in the set, as the eBPF programs decide it.
    #[cfg(test)]
    fn contains(&self, addr: u64) -> bool {
        let slot = addr.wrapping_sub(self.set.base) >> self.set.shift;
        slot < self.set.slots && (self.words[(slot / 64) as usize] >> (slot % 64)) & 1 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_address_is_classified_as_the_ranges_say() {
        let ranges = [
            (0x40_1000, 0x40_1040),
            (0x40_10a0, 0x40_2000),
            (0x40_5000, 0x40_5020),
        ];
        let b = build(&ranges, 0).unwrap();
        assert_eq!(b.set.shift, 5);
        for addr in 0x40_0f00..0x40_5100 {
            let want = ranges.iter().any(|&(s, e)| (s..e).contains(&addr));
            assert_eq!(b.contains(addr), want, "{addr:#x}");
        }
        assert!(!b.contains(0) && !b.contains(u64::MAX));
    }

    #[test]
    fn an_unaligned_boundary_makes_the_slots_smaller() {
        let ranges = [(0x1000, 0x1008), (0x1040, 0x1050)];
        let b = build(&ranges, 0x7f00_0000_0000).unwrap();
        assert_eq!(b.set.shift, 3);
        assert_eq!(b.set.base, 0x7f00_0000_1000);
        for off in 0xf00..0x1100 {
            let want = ranges.iter().any(|&(s, e)| (s..e).contains(&off));
            assert_eq!(b.contains(0x7f00_0000_0000 + off), want, "{off:#x}");
        }
    }

    #[test]
    fn no_ranges_is_an_empty_set_with_one_word() {
        let b = build(&[], 0).unwrap();
        assert_eq!(b.set, AddrSet::EMPTY);
        assert_eq!(b.words, vec![0]);
        assert!(!b.contains(0));
    }

    #[test]
    fn a_bitmap_too_large_is_refused() {
        assert!(build(&[(0, 1 << 40)], 0).is_err());
    }
}
