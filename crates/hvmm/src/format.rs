//! The two translation formats: VMSAv8-64 at EL2 (arm64) and the LPAE long
//! descriptor format in HYP mode (arm32). Both use 4 KiB granules and 64-bit
//! descriptors, 512 to a table; they differ in the root level, the VA size and
//! the output-address size.

use crate::addr::{Mfn, Paddr, PAGE_SHIFT};
use crate::attr::{Attrs, MemType, Perm};

/// Entries in one translation table.
pub const ENTRIES: usize = 512;

/// A translation table format.
pub trait Format: Copy + Default + Send + Sync + 'static {
    /// Name used in logs ("arm64" / "arm32").
    const NAME: &'static str;
    /// Level of the root table (0 on arm64, 1 on arm32).
    const ROOT_LEVEL: u8;
    /// Virtual-address size in bits.
    const VA_BITS: u32;
    /// Output (physical) address size in bits.
    const PA_BITS: u32;
    /// Entries in the root table (512, or 4 for arm32's L1 with T0SZ = 0).
    const ROOT_ENTRIES: usize;

    /// Whether `va` (a whole range end, exclusive) fits the VA size.
    fn va_end_fits(end: u64) -> bool {
        end <= 1u64 << Self::VA_BITS
    }
    /// Whether `end` (exclusive) fits the PA size.
    fn pa_end_fits(end: u64) -> bool {
        end <= 1u64 << Self::PA_BITS
    }
    /// Mask of the output-address field of a descriptor.
    fn oa_mask() -> u64 {
        ((1u64 << Self::PA_BITS) - 1) & !((1u64 << PAGE_SHIFT) - 1)
    }
}

/// VMSAv8-64, 4 KiB granule, 48-bit VA (T0SZ = 16) from L0, 48-bit PA.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Arm64;
/// LPAE long descriptors, 32-bit VA (T0SZ = 0) from L1, 40-bit PA.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Arm32;

impl Format for Arm64 {
    const NAME: &'static str = "arm64";
    const ROOT_LEVEL: u8 = 0;
    const VA_BITS: u32 = 48;
    const PA_BITS: u32 = 48;
    const ROOT_ENTRIES: usize = 512;
}

impl Format for Arm32 {
    const NAME: &'static str = "arm32";
    const ROOT_LEVEL: u8 = 1;
    const VA_BITS: u32 = 32;
    const PA_BITS: u32 = 40;
    const ROOT_ENTRIES: usize = 4;
}

/// Bit position of the VA index for a level (L3: 12, L2: 21, L1: 30, L0: 39).
pub const fn level_shift(level: u8) -> u32 {
    PAGE_SHIFT + 9 * (3 - level as u32)
}

/// Bytes covered by one entry at `level`.
pub const fn level_size(level: u8) -> u64 {
    1u64 << level_shift(level)
}

/// Index of `va` in a table of `level`.
pub const fn table_index(va: u64, level: u8) -> usize {
    ((va >> level_shift(level)) & (ENTRIES as u64 - 1)) as usize
}

/// Levels at which a leaf entry may be a block (1 GiB and 2 MiB).
pub const fn block_allowed(level: u8) -> bool {
    level == 1 || level == 2
}

/// Number of entries in a contiguous run.
pub const CONTIG_ENTRIES: u64 = 16;

/// A 64-bit translation table descriptor, shared by both formats.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Default)]
pub struct Pte(pub u64);

impl core::fmt::Debug for Pte {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Pte({:#018x})", self.0)
    }
}

impl Pte {
    /// Valid bit.
    pub const VALID: u64 = 1 << 0;
    /// Table (levels 0–2) / page (level 3) bit.
    pub const TABLE: u64 = 1 << 1;
    /// Shift of AttrIndx\[2:0\].
    pub const ATTR_SHIFT: u32 = 2;
    /// Non-secure bit.
    pub const NS: u64 = 1 << 5;
    /// AP\[1\]: RES1 at EL2 / HYP.
    pub const AP1: u64 = 1 << 6;
    /// AP\[2\]: read-only.
    pub const RO: u64 = 1 << 7;
    /// Shareability field SH\[1:0\].
    pub const SH_MASK: u64 = 3 << 8;
    /// Inner shareable.
    pub const SH_INNER: u64 = 3 << 8;
    /// Outer shareable.
    pub const SH_OUTER: u64 = 2 << 8;
    /// Access flag.
    pub const AF: u64 = 1 << 10;
    /// Not-global.
    pub const NG: u64 = 1 << 11;
    /// Contiguous hint.
    pub const CONTIG: u64 = 1 << 52;
    /// Privileged execute-never (RES0 for EL2; never set by hvmm).
    pub const PXN: u64 = 1 << 53;
    /// Execute-never.
    pub const XN: u64 = 1 << 54;
    /// Shift of the four software bits \[58:55\].
    pub const SW_SHIFT: u32 = 55;
    /// Mask of the software bits.
    pub const SW_MASK: u64 = 0xf << 55;

    /// The invalid descriptor.
    pub const INVALID: Pte = Pte(0);

    /// A table descriptor pointing at `mfn`.
    pub fn table<F: Format>(mfn: Mfn) -> Pte {
        Pte((mfn.paddr().0 & F::oa_mask()) | Self::VALID | Self::TABLE)
    }

    /// A leaf descriptor (block at L1/L2, page at L3) mapping `pa` with `attrs`.
    pub fn leaf<F: Format>(level: u8, pa: Paddr, attrs: Attrs, contig: bool) -> Pte {
        let mut v = (pa.0 & F::oa_mask()) | Self::VALID | Self::AF | Self::AP1;
        if level == 3 {
            v |= Self::TABLE;
        }
        v |= u64::from(attrs.mem().index()) << Self::ATTR_SHIFT;
        v |= if attrs.mem().is_device() {
            Self::SH_OUTER
        } else {
            Self::SH_INNER
        };
        match attrs.perm() {
            Perm::Ro => v |= Self::RO | Self::XN,
            Perm::Rx => v |= Self::RO,
            Perm::Rw => v |= Self::XN,
        }
        if contig {
            v |= Self::CONTIG;
        }
        Pte(v)
    }

    /// Whether the valid bit is set.
    pub const fn is_valid(self) -> bool {
        self.0 & Self::VALID != 0
    }
    /// Whether this is a table descriptor at `level` (levels 0–2 only).
    pub const fn is_table(self, level: u8) -> bool {
        level < 3 && self.0 & (Self::VALID | Self::TABLE) == (Self::VALID | Self::TABLE)
    }
    /// Whether this is a leaf (block or page) at `level`.
    pub const fn is_leaf(self, level: u8) -> bool {
        if level == 3 {
            self.0 & 3 == 3
        } else {
            self.0 & 3 == 1 && block_allowed(level)
        }
    }
    /// Output address (table address or mapped address).
    pub fn oa<F: Format>(self) -> Paddr {
        Paddr(self.0 & F::oa_mask())
    }
    /// The frame a table descriptor points to.
    pub fn table_mfn<F: Format>(self) -> Mfn {
        self.oa::<F>().mfn()
    }
    /// AttrIndx.
    pub const fn attr_index(self) -> u8 {
        ((self.0 >> Self::ATTR_SHIFT) & 7) as u8
    }
    /// Whether the contiguous hint is set.
    pub const fn is_contiguous(self) -> bool {
        self.0 & Self::CONTIG != 0
    }
    /// The four software bits.
    pub const fn sw(self) -> u8 {
        ((self.0 & Self::SW_MASK) >> Self::SW_SHIFT) as u8
    }
    /// The same descriptor with other software bits.
    pub const fn with_sw(self, sw: u8) -> Pte {
        Pte((self.0 & !Self::SW_MASK) | (((sw & 0xf) as u64) << Self::SW_SHIFT))
    }
    /// The permission of a leaf, or `None` if it is writable and executable
    /// (which hvmm never writes).
    pub const fn perm(self) -> Option<Perm> {
        match (self.0 & Self::RO != 0, self.0 & Self::XN != 0) {
            (true, true) => Some(Perm::Ro),
            (true, false) => Some(Perm::Rx),
            (false, true) => Some(Perm::Rw),
            (false, false) => None,
        }
    }
    /// The attributes of a leaf, if they are ones hvmm can express.
    pub fn attrs(self) -> Option<Attrs> {
        let mem = MemType::from_index(self.attr_index())?;
        Attrs::new(mem, self.perm()?).ok()
    }
    /// The same leaf with a new permission (output address, type, contiguous
    /// bit and software bits kept).
    pub const fn with_perm(self, perm: Perm) -> Pte {
        let v = self.0 & !(Self::RO | Self::XN);
        Pte(match perm {
            Perm::Ro => v | Self::RO | Self::XN,
            Perm::Rx => v | Self::RO,
            Perm::Rw => v | Self::XN,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_encodings() {
        let p = Pte::leaf::<Arm64>(3, Paddr(0x4000_1000), Attrs::RW, false);
        assert_eq!(p.0, 0x0040_0000_4000_175f);
        assert!(p.is_leaf(3) && !p.is_table(3));
        assert_eq!(p.perm(), Some(Perm::Rw));
        assert_eq!(p.attr_index(), 7);
        let b = Pte::leaf::<Arm64>(2, Paddr(0x4020_0000), Attrs::RX, true);
        assert!(b.is_leaf(2) && !b.is_table(2) && b.is_contiguous());
        assert_eq!(b.attrs(), Some(Attrs::RX));
    }

    #[test]
    fn arm32_output_address_is_forty_bits() {
        let p = Pte::leaf::<Arm32>(3, Paddr(0xff_ffff_f000), Attrs::RW, false);
        assert_eq!(p.oa::<Arm32>(), Paddr(0xff_ffff_f000));
        assert_eq!(Arm32::oa_mask(), 0xff_ffff_f000);
        assert_eq!(Arm64::oa_mask(), 0xffff_ffff_f000);
    }

    #[test]
    fn indices_and_sizes() {
        assert_eq!(level_size(1), 1 << 30);
        assert_eq!(level_size(2), 2 << 20);
        assert_eq!(table_index(0x0000_8000_0000_0000, 0), 256);
        assert_eq!(table_index(0x4020_1000, 2), 1);
        assert_eq!(table_index(0xc000_0000, 1), 3);
    }
}
