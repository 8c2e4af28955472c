//! Translation regimes as types: the hypervisor's own stage 1 (VMSAv8-64 at
//! EL2 on arm64, LPAE long descriptors in HYP mode on arm32) and a guest's
//! stage 2 on both architectures. All use 4 KiB granules and 64-bit
//! descriptors, 512 to a table; they differ in the root level, the number of
//! root entries (stage 2 may concatenate up to 16 root tables), the input and
//! output address sizes and the attribute bits ([`Format::Attrs`]).
//!
//! A format's sizes must agree with each other: the input address size is
//! what the root level and the root entries resolve, nothing more and nothing
//! less, so that no input address can alias another. [`check_format`] states
//! the rules; a table of a format that breaks them does not compile
//! ([`PageTable`](crate::PageTable) evaluates the check for its format).
//!
//! | format | stage | input | root level | root entries (pages) | output |
//! |---|---|---|---|---|---|
//! | [`Arm64`] | 1, EL2 | 48-bit VA | 0 | 512 (1) | 48 bits |
//! | [`Arm32`] | 1, HYP | 32-bit VA | 1 | 4 (1) | 40 bits |
//! | [`Arm64Stage2<32>`](Arm64Stage2) | 2 | 32-bit IPA | 1 | 4 (1) | 48 bits |
//! | [`Arm64Stage2<36>`](Arm64Stage2) | 2 | 36-bit IPA | 1 | 64 (1) | 48 bits |
//! | [`Arm64Stage2<40>`](Arm64Stage2) | 2 | 40-bit IPA | 1 | 1024 (2) | 48 bits |
//! | [`Arm64Stage2<42>`](Arm64Stage2) | 2 | 42-bit IPA | 1 | 4096 (8) | 48 bits |
//! | [`Arm64Stage2<44>`](Arm64Stage2) | 2 | 44-bit IPA | 0 | 32 (1) | 48 bits |
//! | [`Arm64Stage2<48>`](Arm64Stage2) | 2 | 48-bit IPA | 0 | 512 (1) | 48 bits |
//! | [`Arm32Stage2`] | 2 | 40-bit IPA | 1 | 1024 (2) | 40 bits |
//!
//! A table of a format whose sizes disagree does not compile. Here a 40-bit
//! space starting at level 1 with one root page, where IPA 0xff_ffff_f000
//! would alias IPA 0x7f_ffff_f000:
//!
//! ```compile_fail
//! use hvmm::host::HostMemory;
//! use hvmm::{Format, Ipa, PageTable, S2Attrs, Stage, Stage2Format, Vmid};
//!
//! #[derive(Copy, Clone, Default)]
//! struct Aliasing;
//! impl Format for Aliasing {
//!     const NAME: &'static str = "aliasing";
//!     const STAGE: Stage = Stage::Two;
//!     const ROOT_LEVEL: u8 = 1;
//!     const VA_BITS: u32 = 40;
//!     const PA_BITS: u32 = 48;
//!     const ROOT_ENTRIES: usize = 512;
//!     type Attrs = S2Attrs;
//!     type Input = Ipa;
//! }
//! impl Stage2Format for Aliasing {
//!     const VMID_BITS: u32 = 8;
//!     fn vtcr() -> u64 { 0 }
//! }
//! let mut mem = HostMemory::new(8);
//! let pt = PageTable::<Aliasing>::create_stage2(&mut mem.env(), Vmid(1));
//! ```
//!
//! Every IPA size from 32 to 48 bits is an [`Arm64Stage2`]: level 1 up to 42
//! bits (with 2, 4 or 8 concatenated root pages above 39 bits), level 0 from
//! 43 bits on — the start levels Xen's p2m uses, each one the Arm
//! architecture allows for its T0SZ (VTCR_EL2.SL0 = 1 or 2).

use crate::addr::{InputAddr, Ipa, Mfn, Paddr, Vaddr, PAGE_SHIFT};
use crate::attr::{Attrs, LeafAttrs, MairMap, MemType, Perm, S2Attrs};

/// Entries in one translation table.
pub const ENTRIES: usize = 512;

/// Most tables a stage-2 root may concatenate (4 KiB granule).
pub const MAX_CONCATENATED: usize = 16;

/// Which translation stage a format belongs to.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The hypervisor's own translation (EL2 / HYP stage 1).
    One,
    /// A guest's IPA -> PA translation (stage 2).
    Two,
}

/// A translation table format: a translation regime's sizes and attributes.
pub trait Format: Copy + Default + Send + Sync + 'static {
    /// Name used in logs ("arm64", "arm32", "arm64-s2/40"...).
    const NAME: &'static str;
    /// The stage.
    const STAGE: Stage;
    /// Level of the root table.
    const ROOT_LEVEL: u8;
    /// Input address size in bits (VA for stage 1, IPA for stage 2).
    const VA_BITS: u32;
    /// Output (physical) address size in bits.
    const PA_BITS: u32;
    /// Entries at the root level, over all concatenated root tables.
    const ROOT_ENTRIES: usize;
    /// Root tables: [`Format::ROOT_ENTRIES`] / 512, at least one. They are
    /// consecutive frames aligned to their total size.
    const ROOT_TABLES: usize = if Self::ROOT_ENTRIES > ENTRIES {
        Self::ROOT_ENTRIES / ENTRIES
    } else {
        1
    };
    /// The attributes a leaf of this regime takes.
    type Attrs: LeafAttrs;
    /// The input address type ([`Vaddr`] or [`Ipa`]).
    type Input: InputAddr;

    /// Whether `end` (exclusive) fits the input address size.
    #[inline(always)]
    fn va_end_fits(end: u64) -> bool {
        end <= 1u64 << Self::VA_BITS
    }
    /// Whether `end` (exclusive) fits the PA size.
    #[inline(always)]
    fn pa_end_fits(end: u64) -> bool {
        end <= 1u64 << Self::PA_BITS
    }
    /// Mask of the output-address field of a descriptor.
    #[inline(always)]
    fn oa_mask() -> u64 {
        ((1u64 << Self::PA_BITS) - 1) & !((1u64 << PAGE_SHIFT) - 1)
    }
}

/// The rules a format's sizes must follow, with the first one `F` breaks:
///
/// * root level 0, 1 or 2; input size at most 48 bits, output 32 to 48;
/// * root entries a power of two, at least 2; more than 512 (concatenated
///   root tables) only at stage 2, at most 16 tables, and not at level 0;
/// * the input size is exactly what the root level and the root entries
///   resolve: `level_shift(ROOT_LEVEL) + log2(ROOT_ENTRIES)`.
pub const fn check_format<F: Format>() -> Result<(), &'static str> {
    let entries = F::ROOT_ENTRIES;
    if F::ROOT_LEVEL > 2 {
        return Err("the root level must be 0, 1 or 2");
    }
    if F::VA_BITS > 48 {
        return Err("the input address size is at most 48 bits");
    }
    if F::PA_BITS < 32 || F::PA_BITS > 48 {
        return Err("the output address size must be 32 to 48 bits");
    }
    if entries < 2 || !entries.is_power_of_two() {
        return Err("the root entries must be a power of two, at least 2");
    }
    if entries > ENTRIES {
        if !matches!(F::STAGE, Stage::Two) {
            return Err("only stage 2 concatenates root tables");
        }
        if entries > ENTRIES * MAX_CONCATENATED {
            return Err("at most 16 root tables can be concatenated");
        }
        if F::ROOT_LEVEL == 0 {
            return Err("level-0 root tables cannot be concatenated");
        }
    }
    if F::ROOT_TABLES
        != if entries > ENTRIES {
            entries / ENTRIES
        } else {
            1
        }
    {
        return Err("ROOT_TABLES must be ROOT_ENTRIES / 512 (at least 1)");
    }
    if F::VA_BITS != level_shift(F::ROOT_LEVEL) + entries.trailing_zeros() {
        return Err("the input size must be what the root level and root entries resolve");
    }
    Ok(())
}

/// Evaluates [`check_format`] at compile time for `F`.
pub(crate) struct FormatCheck<F>(core::marker::PhantomData<F>);

impl<F: Format> FormatCheck<F> {
    /// A compile-time error names the rule `F` breaks.
    pub(crate) const OK: () = match check_format::<F>() {
        Ok(()) => (),
        Err(msg) => panic!("{}", msg),
    };
}

/// A stage-1 (hypervisor) format.
pub trait Stage1Format: Format<Attrs = Attrs, Input = Vaddr> {}
/// A stage-2 (guest) format.
pub trait Stage2Format: Format<Attrs = S2Attrs, Input = Ipa> {
    /// VMID bits the format's [`Stage2Format::vtcr`] gives the VTTBR: 8
    /// (arm32; arm64 without FEAT_VMID16, whose VTCR_EL2.VS this VTCR
    /// leaves clear, so that it runs on every ARMv8.0 CPU).
    const VMID_BITS: u32;
    /// The VTCR value fields for this format: T0SZ and SL0 (and on arm64 the
    /// 4 KiB granule, inner shareable write-back walks, PS = `PA_BITS`).
    fn vtcr() -> u64;
}

/// VMSAv8-64, 4 KiB granule, 48-bit VA (T0SZ = 16) from L0, 48-bit PA.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Arm64;
/// LPAE long descriptors, 32-bit VA (T0SZ = 0) from L1, 40-bit PA.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Arm32;

impl Format for Arm64 {
    const NAME: &'static str = "arm64";
    const STAGE: Stage = Stage::One;
    const ROOT_LEVEL: u8 = 0;
    const VA_BITS: u32 = 48;
    const PA_BITS: u32 = 48;
    const ROOT_ENTRIES: usize = 512;
    type Attrs = Attrs;
    type Input = Vaddr;
}

impl Format for Arm32 {
    const NAME: &'static str = "arm32";
    const STAGE: Stage = Stage::One;
    const ROOT_LEVEL: u8 = 1;
    const VA_BITS: u32 = 32;
    const PA_BITS: u32 = 40;
    const ROOT_ENTRIES: usize = 4;
    type Attrs = Attrs;
    type Input = Vaddr;
}

impl Stage1Format for Arm64 {}
impl Stage1Format for Arm32 {}

/// An arm64 guest's stage 2: 4 KiB granule, `IPA_BITS` of IPA (32 to 48),
/// 48-bit output. The start level and the concatenated root tables follow
/// from the IPA size (the module table). An IPA size outside 32..=48 does
/// not compile.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Arm64Stage2<const IPA_BITS: u32>;

/// The start level of an arm64 stage 2 of `ipa_bits`.
const fn s2_root_level(ipa_bits: u32) -> u8 {
    if ipa_bits <= 42 {
        1
    } else {
        0
    }
}

const S2_NAMES: [&str; 17] = [
    "arm64-s2/32",
    "arm64-s2/33",
    "arm64-s2/34",
    "arm64-s2/35",
    "arm64-s2/36",
    "arm64-s2/37",
    "arm64-s2/38",
    "arm64-s2/39",
    "arm64-s2/40",
    "arm64-s2/41",
    "arm64-s2/42",
    "arm64-s2/43",
    "arm64-s2/44",
    "arm64-s2/45",
    "arm64-s2/46",
    "arm64-s2/47",
    "arm64-s2/48",
];

impl<const IPA_BITS: u32> Format for Arm64Stage2<IPA_BITS> {
    const NAME: &'static str = {
        assert!(
            IPA_BITS >= 32 && IPA_BITS <= 48,
            "an arm64 stage-2 IPA size is 32 to 48 bits"
        );
        S2_NAMES[(IPA_BITS - 32) as usize]
    };
    const STAGE: Stage = Stage::Two;
    const ROOT_LEVEL: u8 = s2_root_level(IPA_BITS);
    const VA_BITS: u32 = IPA_BITS;
    const PA_BITS: u32 = 48;
    const ROOT_ENTRIES: usize = 1 << (IPA_BITS - level_shift(s2_root_level(IPA_BITS)));
    type Attrs = S2Attrs;
    type Input = Ipa;
}

impl<const IPA_BITS: u32> Stage2Format for Arm64Stage2<IPA_BITS> {
    const VMID_BITS: u32 = 8;
    fn vtcr() -> u64 {
        let t0sz = u64::from(64 - IPA_BITS);
        let sl0: u64 = if Self::ROOT_LEVEL == 1 { 1 } else { 2 };
        // IRGN0/ORGN0 write-back (0b01), SH0 inner (0b11), TG0 4 KiB (0b00),
        // PS 48 bits (0b101), RES1 bit 31.
        t0sz | (sl0 << 6) | (1 << 8) | (1 << 10) | (3 << 12) | (0b101 << 16) | (1 << 31)
    }
}

/// An arm32 guest's stage 2 (LPAE): 40-bit IPA (VTCR.T0SZ = -8, SL0 = 1),
/// level 1 with two concatenated root tables, 40-bit output.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Arm32Stage2;

impl Format for Arm32Stage2 {
    const NAME: &'static str = "arm32-s2";
    const STAGE: Stage = Stage::Two;
    const ROOT_LEVEL: u8 = 1;
    const VA_BITS: u32 = 40;
    const PA_BITS: u32 = 40;
    const ROOT_ENTRIES: usize = 1024;
    type Attrs = S2Attrs;
    type Input = Ipa;
}

impl Stage2Format for Arm32Stage2 {
    const VMID_BITS: u32 = 8;
    fn vtcr() -> u64 {
        // T0SZ = -8 as a signed 4-bit field (0b1000) with S = 1 (bit 4),
        // SL0 = 1, IRGN0/ORGN0 write-back, SH0 inner, RES1 bit 31.
        0b1000 | (1 << 4) | (1 << 6) | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 31)
    }
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
    /// AP\[2\]: read-only. (A descriptor bit; the attribute set of a
    /// read-only mapping is [`Attrs::RO`].)
    pub const AP_RO: u64 = 1 << 7;
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

    /// A stage-1 leaf descriptor (block at L1/L2, page at L3) mapping `pa`
    /// with `attrs` in Xen's MAIR layout ([`MairMap::XEN`]), for code that
    /// writes descriptors outside the engine (the fixmap, PMAP, head set-up).
    pub fn leaf<F: Format>(level: u8, pa: Paddr, attrs: Attrs, contig: bool) -> Pte {
        // Every type has an index in Xen's layout.
        let bits = attrs.leaf_bits(&MairMap::XEN).unwrap_or(0);
        Self::leaf_bits::<F>(level, pa, bits, contig)
    }

    /// A leaf descriptor at `level` for `pa` with attribute bits `bits` (as
    /// [`LeafAttrs::leaf_bits`] gives them).
    #[inline(always)]
    pub fn leaf_bits<F: Format>(level: u8, pa: Paddr, bits: u64, contig: bool) -> Pte {
        let mut v = (pa.0 & F::oa_mask()) | Self::VALID | bits;
        if level == 3 {
            v |= Self::TABLE;
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
        match (self.0 & Self::AP_RO != 0, self.0 & Self::XN != 0) {
            (true, true) => Some(Perm::Ro),
            (true, false) => Some(Perm::Rx),
            (false, true) => Some(Perm::Rw),
            (false, false) => None,
        }
    }
    /// The stage-1 attributes of a leaf in Xen's MAIR layout, if they are
    /// ones hvmm can express.
    pub fn attrs(self) -> Option<Attrs> {
        let mem = MemType::from_index(self.attr_index())?;
        Attrs::new(mem, self.perm()?).ok()
    }
    /// The same leaf with a new permission (output address, type, contiguous
    /// bit and software bits kept).
    pub const fn with_perm(self, perm: Perm) -> Pte {
        let v = self.0 & !(Self::AP_RO | Self::XN);
        Pte(match perm {
            Perm::Ro => v | Self::AP_RO | Self::XN,
            Perm::Rx => v | Self::AP_RO,
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
