//! Filesystem type detection from on-disk magic numbers.
//!
//! Detection only reads: it never mounts, so nothing (no journal replay, no
//! log recovery) can write to the image while we guess. The probes run in
//! this order, and the first match wins:
//!
//! | order | type | where |
//! |---|---|---|
//! | 1 | btrfs | `_BHRfS_M` at 64 KiB + 0x40 |
//! | 2 | xfs | `XFSB` at 0 |
//! | 3 | ext2 / ext3 / ext4 | 0xEF53 at 1080; journal and ext4-only features pick the name |
//! | 4 | f2fs | 0xF2F52010 at 1024 |
//! | 5 | erofs | 0xE0F5E1E2 at 1024 |
//! | 6 | hfsplus | `H+` or `HX` at 1024 |
//! | 7 | squashfs | `hsqs` at 0 |
//! | 8 | exfat | `EXFAT   ` at 3 |
//! | 9 | ntfs3 | `NTFS    ` at 3 |
//! | 10 | udf | `NSR02`/`NSR03` in the volume recognition area (32 KiB on) |
//! | 11 | iso9660 | `CD001` at 32 KiB + 1 |
//! | 12 | vfat | a FAT boot sector: 0x55AA at 510 and `FAT` at 54 or 82 |
//!
//! UDF comes before ISO 9660 because hybrid discs carry both descriptors and
//! the UDF view is the complete one; FAT comes last because its signature is
//! the weakest (any MBR has 0x55AA).

/// How many bytes of the device [`detect`] needs to see.
pub const PROBE_LEN: usize = 0x11000;

/// The `N` bytes at `offset`, if the device is that long; read with `u32::from_le_bytes` and
/// the like.
fn bytes_at<const N: usize>(dev: &[u8], offset: usize) -> Option<[u8; N]> {
    dev.get(offset..offset + N)?.try_into().ok()
}

/// The kernel filesystem name for the superblocks at the start of `dev`
/// (the first [`PROBE_LEN`] bytes, or fewer for a small device).
pub fn detect(dev: &[u8]) -> Option<&'static str> {
    let at = |offset: usize, magic: &[u8]| dev.get(offset..offset + magic.len()) == Some(magic);
    let le16 = |offset: usize| bytes_at(dev, offset).map(u16::from_le_bytes);
    let le32 = |offset: usize| bytes_at(dev, offset).map(u32::from_le_bytes);

    if at(0x10040, b"_BHRfS_M") {
        return Some("btrfs");
    }
    if at(0, b"XFSB") {
        return Some("xfs");
    }
    if le16(1080) == Some(0xEF53) {
        return Some(ext_flavour(dev));
    }
    if le32(1024) == Some(0xF2F5_2010) {
        return Some("f2fs");
    }
    if le32(1024) == Some(0xE0F5_E1E2) {
        return Some("erofs");
    }
    if at(1024, b"H+") || at(1024, b"HX") {
        return Some("hfsplus");
    }
    if at(0, b"hsqs") {
        return Some("squashfs");
    }
    if at(3, b"EXFAT   ") {
        return Some("exfat");
    }
    if at(3, b"NTFS    ") {
        return Some("ntfs3");
    }
    // Volume recognition sequence: 2 KiB descriptors from 32 KiB on.
    let udf = (0..16).any(|i| {
        let offset = 0x8000 + i * 2048 + 1;
        at(offset, b"NSR02") || at(offset, b"NSR03")
    });
    if udf {
        return Some("udf");
    }
    if at(0x8001, b"CD001") {
        return Some("iso9660");
    }
    if at(510, &[0x55, 0xAA]) && (at(54, b"FAT") || at(82, b"FAT32")) {
        return Some("vfat");
    }
    None
}

/// ext2, ext3 or ext4 from the superblock's feature words. The kernel
/// mounts all three with its ext4 driver; the name is what users expect.
fn ext_flavour(dev: &[u8]) -> &'static str {
    const SB: usize = 1024;
    let word = |offset: usize| bytes_at(dev, SB + offset).map_or(0, u32::from_le_bytes);
    const COMPAT_HAS_JOURNAL: u32 = 0x4;
    // Incompatible features ext3 does not know (filetype 0x2 and
    // recover 0x4 and journal_dev 0x8 are ext3's own).
    const INCOMPAT_EXT4_ONLY: u32 = !(0x2 | 0x4 | 0x8);
    const RO_COMPAT_EXT4_ONLY: u32 = !(0x1 | 0x2 | 0x4);
    let compat = word(0x5C);
    let incompat = word(0x60);
    let ro_compat = word(0x64);
    if incompat & INCOMPAT_EXT4_ONLY != 0 || ro_compat & RO_COMPAT_EXT4_ONLY != 0 {
        "ext4"
    } else if compat & COMPAT_HAS_JOURNAL != 0 {
        "ext3"
    } else {
        "ext2"
    }
}

/// Whether an ext3/ext4 superblock says its journal needs replaying.
pub fn ext_needs_recovery(dev: &[u8]) -> bool {
    const INCOMPAT_RECOVER: u32 = 0x4;
    bytes_at(dev, 1024 + 0x60)
        .map(u32::from_le_bytes)
        .is_some_and(|incompat| incompat & INCOMPAT_RECOVER != 0)
}

/// Whether a btrfs superblock points at a log tree (fsync'ed changes since the last commit)
/// that a mount would replay. `log_root` sits 0x60 into the superblock at 64 KiB.
pub fn btrfs_has_log_tree(dev: &[u8]) -> bool {
    bytes_at(dev, 0x10060)
        .map(u64::from_le_bytes)
        .is_some_and(|log_root| log_root != 0)
}

/// Whether two spellings of a name can reach the same file on a writable `fstype`: case
/// folding (FAT, exFAT, HFS+, NTFS, UDF; ext4 and f2fs with the casefold feature, XFS with
/// ASCII-CI). For a type not known here the answer is yes, the safe one: it only makes the
/// host cache names for a shorter time.
pub fn names_fold_case(fstype: &str, dev: &[u8]) -> bool {
    match fstype {
        "ext2" | "ext3" | "ext4" => {
            const INCOMPAT_CASEFOLD: u32 = 0x2_0000;
            bytes_at(dev, 1024 + 0x60)
                .map(u32::from_le_bytes)
                .is_none_or(|incompat| incompat & INCOMPAT_CASEFOLD != 0)
        }
        "xfs" => {
            // sb_versionnum (big-endian, 100 bytes in); the "borg" bit is ASCII-CI names.
            const VERSION_BORGBIT: u16 = 0x4000;
            bytes_at(dev, 100)
                .map(u16::from_be_bytes)
                .is_none_or(|version| version & VERSION_BORGBIT != 0)
        }
        "f2fs" => {
            // `feature` (little-endian) sits 2180 bytes into the superblock at 1 KiB.
            const FEATURE_CASEFOLD: u32 = 0x1000;
            bytes_at(dev, 1024 + 2180)
                .map(u32::from_le_bytes)
                .is_none_or(|feature| feature & FEATURE_CASEFOLD != 0)
        }
        "btrfs" => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank() -> Vec<u8> {
        vec![0; PROBE_LEN]
    }

    fn put(dev: &mut [u8], offset: usize, bytes: &[u8]) {
        dev[offset..offset + bytes.len()].copy_from_slice(bytes);
    }

    #[test]
    fn each_magic_is_recognised() {
        let f2fs = 0xF2F5_2010u32.to_le_bytes();
        let erofs = 0xE0F5_E1E2u32.to_le_bytes();
        let cases: Vec<(usize, &[u8], &str)> = vec![
            (0x10040, b"_BHRfS_M", "btrfs"),
            (0, b"XFSB", "xfs"),
            (1024, &f2fs, "f2fs"),
            (1024, &erofs, "erofs"),
            (1024, b"H+", "hfsplus"),
            (1024, b"HX", "hfsplus"),
            (0, b"hsqs", "squashfs"),
            (3, b"EXFAT   ", "exfat"),
            (3, b"NTFS    ", "ntfs3"),
            (0x8001 + 2 * 2048, b"NSR03", "udf"),
            (0x8001, b"CD001", "iso9660"),
        ];
        for (offset, magic, want) in cases {
            let mut dev = blank();
            put(&mut dev, offset, magic);
            assert_eq!(detect(&dev), Some(want), "{want}");
        }
    }

    #[test]
    fn fat_needs_both_signatures() {
        let mut dev = blank();
        put(&mut dev, 510, &[0x55, 0xAA]);
        assert_eq!(detect(&dev), None, "a bare MBR is not FAT");
        put(&mut dev, 82, b"FAT32   ");
        assert_eq!(detect(&dev), Some("vfat"));
        let mut dev = blank();
        put(&mut dev, 510, &[0x55, 0xAA]);
        put(&mut dev, 54, b"FAT16   ");
        assert_eq!(detect(&dev), Some("vfat"));
    }

    #[test]
    fn udf_wins_over_iso9660_on_hybrids() {
        let mut dev = blank();
        put(&mut dev, 0x8001, b"CD001");
        put(&mut dev, 0x8001 + 2048, b"BEA01");
        put(&mut dev, 0x8001 + 4096, b"NSR02");
        assert_eq!(detect(&dev), Some("udf"));
    }

    #[test]
    fn ext_flavours_and_recovery() {
        let mut dev = blank();
        put(&mut dev, 1080, &0xEF53u16.to_le_bytes());
        assert_eq!(detect(&dev), Some("ext2"));
        put(&mut dev, 1024 + 0x5C, &0x4u32.to_le_bytes());
        assert_eq!(detect(&dev), Some("ext3"));
        assert!(!ext_needs_recovery(&dev));
        put(&mut dev, 1024 + 0x60, &(0x2u32 | 0x4).to_le_bytes());
        assert_eq!(detect(&dev), Some("ext3"));
        assert!(ext_needs_recovery(&dev));
        put(&mut dev, 1024 + 0x60, &(0x2u32 | 0x40).to_le_bytes());
        assert_eq!(detect(&dev), Some("ext4"), "extents make it ext4");
    }

    #[test]
    fn case_folding() {
        let mut dev = blank();
        put(&mut dev, 1080, &0xEF53u16.to_le_bytes());
        assert!(!names_fold_case("ext4", &dev));
        put(&mut dev, 1024 + 0x60, &(0x2_0000u32 | 0x40).to_le_bytes());
        assert!(names_fold_case("ext4", &dev), "casefold feature");
        let mut dev = blank();
        put(&mut dev, 0, b"XFSB");
        put(&mut dev, 100, &0xb4a5u16.to_be_bytes());
        assert!(!names_fold_case("xfs", &dev));
        put(&mut dev, 100, &0xf4a5u16.to_be_bytes());
        assert!(names_fold_case("xfs", &dev), "ASCII-CI");
        assert!(!names_fold_case("btrfs", &blank()));
        let mut dev = blank();
        put(&mut dev, 1024, &0xF2F5_2010u32.to_le_bytes());
        put(&mut dev, 1024 + 2180, &0x0008u32.to_le_bytes());
        assert!(!names_fold_case("f2fs", &dev));
        put(&mut dev, 1024 + 2180, &0x1008u32.to_le_bytes());
        assert!(names_fold_case("f2fs", &dev), "casefold feature");
        for fstype in ["vfat", "exfat", "hfsplus", "ntfs3", "udf"] {
            assert!(names_fold_case(fstype, &blank()), "{fstype}");
        }
        assert!(names_fold_case("ext4", &[]), "short device: assume folding");
    }

    #[test]
    fn btrfs_log_tree() {
        let mut dev = blank();
        put(&mut dev, 0x10040, b"_BHRfS_M");
        assert!(!btrfs_has_log_tree(&dev));
        put(&mut dev, 0x10060, &0x1d_4000u64.to_le_bytes());
        assert!(btrfs_has_log_tree(&dev));
        assert!(!btrfs_has_log_tree(&dev[..0x10064]), "short device");
    }

    #[test]
    fn nothing_and_short_devices_are_unknown() {
        assert_eq!(detect(&blank()), None);
        assert_eq!(detect(&[]), None);
        assert_eq!(detect(b"XFS"), None);
    }
}
