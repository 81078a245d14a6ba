//! Where a few fields of kernel structures are, from the kernel's own type
//! information (BTF, `/sys/kernel/btf/vmlinux`): what the exec
//! notification needs to read the device and inode of the file a process
//! execs (`linux_binprm.file → file.f_inode → inode.i_ino`,
//! `inode.i_sb → super_block.s_dev`).
//!
//! Rust eBPF programs cannot carry CO-RE relocations, so the loader reads
//! the offsets here and hands them to the program as globals. aya-obj
//! parses BTF but keeps struct members to itself, and the BTF crates on
//! crates.io are LGPL; the format needed is small (the header, the type
//! records' sizes, struct members), so it is read here.

use std::collections::HashMap;

use allocwatch_common::ExecFileOffsets;

/// `BTF_KIND_STRUCT` and `BTF_KIND_UNION`.
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;

/// The parts of a BTF blob needed to find members of structs.
pub struct Btf<'a> {
    strings: &'a [u8],
    /// Every type record (id − 1): kind, name offset, its members when a
    /// struct or union.
    types: Vec<Type>,
    /// Named structs, by name offset: the first id with members.
    structs: HashMap<u32, u32>,
}

struct Type {
    kind: u32,
    name: u32,
    /// (name offset, type id, bit offset) of each member.
    members: Vec<(u32, u32, u32)>,
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

impl<'a> Btf<'a> {
    /// Parses a little-endian BTF blob; `None` when it is not one.
    #[must_use]
    pub fn parse(data: &'a [u8]) -> Option<Btf<'a>> {
        if data.get(..2)? != [0x9f, 0xeb] {
            return None;
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let (type_off, type_len) = (u32_at(data, 8)? as usize, u32_at(data, 12)? as usize);
        let (str_off, str_len) = (u32_at(data, 16)? as usize, u32_at(data, 20)? as usize);
        let types = data.get(hdr_len + type_off..hdr_len + type_off + type_len)?;
        let strings = data.get(hdr_len + str_off..hdr_len + str_off + str_len)?;
        let mut btf = Btf {
            strings,
            types: Vec::new(),
            structs: HashMap::new(),
        };
        let mut at = 0;
        while at < types.len() {
            let name = u32_at(types, at)?;
            let info = u32_at(types, at + 4)?;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let bitfields = info >> 31 == 1;
            at += 12;
            let mut members = Vec::new();
            let extra = match kind {
                // INT, VAR, DECL_TAG
                1 | 14 | 17 => 4,
                // ARRAY
                3 => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + 12 * i;
                        let offset = u32_at(types, m + 8)?;
                        let bits = if bitfields {
                            offset & 0xff_ffff
                        } else {
                            offset
                        };
                        members.push((u32_at(types, m)?, u32_at(types, m + 4)?, bits));
                    }
                    12 * vlen
                }
                // ENUM, FUNC_PROTO
                6 | 13 => 8 * vlen,
                // DATASEC, ENUM64
                15 | 19 => 12 * vlen,
                // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
                2 | 7..=12 | 16 | 18 => 0,
                _ => return None,
            };
            at += extra;
            let id = u32::try_from(btf.types.len() + 1).ok()?;
            if kind == KIND_STRUCT && name != 0 && !members.is_empty() {
                btf.structs.entry(name).or_insert(id);
            }
            btf.types.push(Type {
                kind,
                name,
                members,
            });
        }
        Some(btf)
    }

    fn name(&self, off: u32) -> &[u8] {
        let s = self.strings.get(off as usize..).unwrap_or_default();
        &s[..s.iter().position(|&b| b == 0).unwrap_or(s.len())]
    }

    fn by_id(&self, id: u32) -> Option<&Type> {
        self.types.get(usize::try_from(id).ok()?.checked_sub(1)?)
    }

    /// The byte offset of `field` in `struct name`, also inside its
    /// anonymous structs and unions; `None` when there is no such struct
    /// or member, or the member is a bit field.
    #[must_use]
    pub fn offset(&self, name: &str, field: &str) -> Option<u32> {
        let id = self
            .structs
            .iter()
            .find(|(n, _)| self.name(**n) == name.as_bytes())
            .map(|(_, id)| *id)?;
        self.member_bits(id, field.as_bytes(), 0)
            .filter(|bits| bits % 8 == 0)
            .map(|bits| bits / 8)
    }

    fn member_bits(&self, id: u32, field: &[u8], depth: u32) -> Option<u32> {
        let t = self.by_id(id)?;
        for &(name, ty, bits) in &t.members {
            if name != 0 && self.name(name) == field {
                return Some(bits);
            }
            if name == 0 && depth < 8 {
                let inner = self.by_id(ty)?;
                if (inner.kind == KIND_STRUCT || inner.kind == KIND_UNION)
                    && inner.name == 0
                    && let Some(b) = self.member_bits(ty, field, depth + 1)
                {
                    return Some(bits + b);
                }
            }
        }
        None
    }
}

/// Where the exec notification reads the exec'd file's identity, from a
/// BTF blob (the kernel's: `/sys/kernel/btf/vmlinux`), as the program's
/// global takes it (`valid` set).
#[must_use]
pub fn exec_file_offsets(data: &[u8]) -> Option<ExecFileOffsets> {
    let btf = Btf::parse(data)?;
    Some(ExecFileOffsets {
        valid: 1,
        bprm_file: btf.offset("linux_binprm", "file")?,
        file_inode: btf.offset("file", "f_inode")?,
        inode_ino: btf.offset("inode", "i_ino")?,
        inode_sb: btf.offset("inode", "i_sb")?,
        sb_dev: btf.offset("super_block", "s_dev")?,
    })
}

/// [`exec_file_offsets`] of the running kernel; `None` without BTF.
#[must_use]
pub fn exec_file_offsets_of_this_kernel() -> Option<ExecFileOffsets> {
    exec_file_offsets(&std::fs::read("/sys/kernel/btf/vmlinux").ok()?)
}

/// The kernel's encoding of a device number (`MKDEV`: major in the upper
/// 12 bits, minor in the lower 20), as `super_block.s_dev` holds it, from
/// the one `stat` returns.
#[must_use]
pub fn kernel_dev(st_dev: u64) -> u32 {
    let major = libc::major(st_dev);
    let minor = libc::minor(st_dev);
    (major << 20) | (minor & 0xf_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob with the given type records (after the header).
    fn blob(types: &[u32], strings: &[u8]) -> Vec<u8> {
        let tb: Vec<u8> = types.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut b = vec![0x9f, 0xeb, 1, 0];
        for w in [
            24,
            0,
            tb.len() as u32,
            tb.len() as u32,
            strings.len() as u32,
        ] {
            b.extend(w.to_le_bytes());
        }
        b.extend(tb);
        b.extend(strings);
        b
    }

    #[test]
    fn members_also_inside_anonymous_unions() {
        // Strings: 0 "", 1 "s", 3 "a", 5 "b", 7 "int".
        let strings = b"\0s\0a\0b\0int\0";
        let types = [
            // 1: int, 4 bytes.
            7,
            1 << 24,
            4,
            32,
            // 2: union { int b; } (anonymous).
            0,
            (5 << 24) | 1,
            4,
            5,
            1,
            0,
            // 3: struct s { int a; union { int b; }; } with a at 0, the union at 64 bits.
            1,
            (4 << 24) | 2,
            16,
            3,
            1,
            0,
            0,
            2,
            64,
        ];
        let data = blob(&types, strings);
        let btf = Btf::parse(&data).expect("parse");
        assert_eq!(btf.offset("s", "a"), Some(0));
        assert_eq!(btf.offset("s", "b"), Some(8));
        assert_eq!(btf.offset("s", "c"), None);
        assert_eq!(btf.offset("t", "a"), None);
        assert!(Btf::parse(b"not btf at all, not at all").is_none());
    }

    #[test]
    fn this_kernel_has_the_fields() {
        // Every kernel allocwatch runs on has BTF (envcheck requires it).
        let Some(o) = exec_file_offsets_of_this_kernel() else {
            panic!(
                "no BTF offsets for linux_binprm.file, file.f_inode, inode.i_ino/i_sb, super_block.s_dev"
            );
        };
        // Pointers and the ino are 8-byte aligned, s_dev 4.
        for off in [o.bprm_file, o.file_inode, o.inode_ino, o.inode_sb] {
            assert_eq!(off % 8, 0, "{o:?}");
        }
        assert_eq!(o.sb_dev % 4, 0, "{o:?}");
    }

    #[test]
    fn device_numbers_as_the_kernel_encodes_them() {
        // 8:1 (sda1) and 259:3 (nvme0n1p3): MKDEV(major, minor).
        assert_eq!(kernel_dev(libc::makedev(8, 1)), (8 << 20) | 1);
        assert_eq!(kernel_dev(libc::makedev(259, 3)), (259 << 20) | 3);
        assert_eq!(kernel_dev(libc::makedev(0, 300)), 300);
    }
}
