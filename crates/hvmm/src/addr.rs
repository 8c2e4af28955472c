//! Physical and virtual addresses, frame numbers and the one place where a
//! physical address may become a virtual one.
//!
//! The arm32 bugs of the original design thread were conversions: a 32-bit
//! `PA - VA` offset stored zero-extended in a 64-bit physical address, and a
//! 40-bit physical address cast to a 32-bit virtual address. Here neither can
//! be written: [`Paddr`] and [`Vaddr`] do not convert into each other at all,
//! [`Vaddr32`] only comes from a [`Vaddr`] by a checked conversion, and the
//! only bridge between the two spaces is [`LinearRange`], which answers
//! `None` for anything outside the range it describes.

use core::fmt;

/// Size of a translation granule (and of a frame): 4 KiB.
pub const PAGE_SIZE: u64 = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

/// A physical address (64-bit on both architectures: LPAE has 40-bit PAs).
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Paddr(pub u64);

/// A machine frame number: a physical address divided by [`PAGE_SIZE`].
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Mfn(pub u64);

/// A hypervisor virtual address. It is 64 bits wide so that one engine serves
/// both architectures; each translation format checks that an address fits its
/// VA size (48 bits on arm64, 32 on arm32) before using it.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Vaddr(pub u64);

/// A guest intermediate physical address: the input of a stage-2 table.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ipa(pub u64);

/// The input address of a translation regime: [`Vaddr`] for the
/// hypervisor's own stage 1, [`Ipa`] for a guest's stage 2. The engine works
/// on the raw value; the type keeps a VA from being handed to a stage-2
/// table and the reverse.
pub trait InputAddr: Copy + Eq + Ord + fmt::Debug + fmt::Display + Send + Sync + 'static {
    /// What logs call it ("VA", "IPA").
    const KIND: &'static str;
    /// The raw address.
    fn raw(self) -> u64;
    /// From a raw address.
    fn from_raw(v: u64) -> Self;
}

impl InputAddr for Vaddr {
    const KIND: &'static str = "VA";
    #[inline(always)]
    fn raw(self) -> u64 {
        self.0
    }
    #[inline(always)]
    fn from_raw(v: u64) -> Self {
        Vaddr(v)
    }
}

impl InputAddr for Ipa {
    const KIND: &'static str = "IPA";
    #[inline(always)]
    fn raw(self) -> u64 {
        self.0
    }
    #[inline(always)]
    fn from_raw(v: u64) -> Self {
        Ipa(v)
    }
}

/// A virtual machine identifier: the tag of a guest's stage-2 TLB entries.
/// arm32 (VTTBR.VMID) has 8 bits; arm64 has 8, or 16 with VTCR_EL2.VS.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Vmid(pub u16);

impl fmt::Display for Vmid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VMID {}", self.0)
    }
}

/// An arm32 (HYP) virtual address: exactly 32 bits.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Vaddr32(pub u32);

impl Paddr {
    /// The frame that contains this address.
    pub const fn mfn(self) -> Mfn {
        Mfn(self.0 >> PAGE_SHIFT)
    }
    /// Offset of this address inside its page.
    pub const fn page_offset(self) -> u64 {
        self.0 & (PAGE_SIZE - 1)
    }
    /// Whether the address is aligned to `align` (a power of two).
    pub const fn is_aligned(self, align: u64) -> bool {
        self.0 & (align - 1) == 0
    }
    /// `self + off`, or `None` when the sum does not fit in 64 bits.
    pub const fn checked_add(self, off: u64) -> Option<Paddr> {
        match self.0.checked_add(off) {
            Some(v) => Some(Paddr(v)),
            None => None,
        }
    }
    /// Rounds down to a page boundary.
    pub const fn page_floor(self) -> Paddr {
        Paddr(self.0 & !(PAGE_SIZE - 1))
    }
}

impl Mfn {
    /// The physical address of the first byte of the frame.
    pub const fn paddr(self) -> Paddr {
        Paddr(self.0 << PAGE_SHIFT)
    }
    /// The frame `n` frames further on.
    pub const fn add(self, n: u64) -> Mfn {
        Mfn(self.0 + n)
    }
}

impl Vaddr {
    /// Whether the address is aligned to `align` (a power of two).
    pub const fn is_aligned(self, align: u64) -> bool {
        self.0 & (align - 1) == 0
    }
    /// `self + off`, or `None` on overflow.
    pub const fn checked_add(self, off: u64) -> Option<Vaddr> {
        match self.0.checked_add(off) {
            Some(v) => Some(Vaddr(v)),
            None => None,
        }
    }
    /// Offset of this address inside its page.
    pub const fn page_offset(self) -> u64 {
        self.0 & (PAGE_SIZE - 1)
    }
    /// Rounds down to a page boundary.
    pub const fn page_floor(self) -> Vaddr {
        Vaddr(self.0 & !(PAGE_SIZE - 1))
    }
}

impl From<Vaddr32> for Vaddr {
    fn from(v: Vaddr32) -> Self {
        Vaddr(u64::from(v.0))
    }
}

/// A [`Vaddr`] that does not fit in 32 bits was offered as an arm32 address.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct VaTooWide(pub Vaddr);

impl fmt::Display for VaTooWide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "virtual address {} does not fit in 32 bits", self.0)
    }
}

impl core::error::Error for VaTooWide {}

impl TryFrom<Vaddr> for Vaddr32 {
    type Error = VaTooWide;
    fn try_from(v: Vaddr) -> Result<Self, VaTooWide> {
        u32::try_from(v.0).map(Vaddr32).map_err(|_| VaTooWide(v))
    }
}

macro_rules! hex_fmt {
    ($t:ty, $w:expr) => {
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($t), "({:#0", $w, "x})"), self.0)
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!("{:#0", $w, "x}"), self.0)
            }
        }
    };
}
hex_fmt!(Paddr, 18);
hex_fmt!(Mfn, 0);
hex_fmt!(Vaddr, 18);
hex_fmt!(Vaddr32, 10);
hex_fmt!(Ipa, 18);

/// A range of virtual addresses mapped linearly onto a range of physical
/// addresses (the hypervisor image at its link address, the direct map, the
/// xenheap). Conversions in both directions are checked against the range:
/// an address outside it gives `None` instead of a wrapped or truncated value.
///
/// This replaces Xen's `phys_offset`: there is no signed or unsigned offset to
/// get wrong, only two bases and a size.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LinearRange {
    /// First virtual address of the range.
    pub va: Vaddr,
    /// Physical address that `va` maps to.
    pub pa: Paddr,
    /// Size in bytes.
    pub size: u64,
}

impl LinearRange {
    /// Builds a range; `None` if either end would overflow 64 bits.
    pub const fn new(va: Vaddr, pa: Paddr, size: u64) -> Option<Self> {
        if va.0.checked_add(size).is_none() || pa.0.checked_add(size).is_none() {
            return None;
        }
        Some(LinearRange { va, pa, size })
    }
    /// The virtual address of `pa`, if `pa` lies inside the range.
    pub const fn va_of(&self, pa: Paddr) -> Option<Vaddr> {
        if pa.0 >= self.pa.0 && pa.0 - self.pa.0 < self.size {
            Some(Vaddr(self.va.0 + (pa.0 - self.pa.0)))
        } else {
            None
        }
    }
    /// The physical address of `va`, if `va` lies inside the range.
    pub const fn pa_of(&self, va: Vaddr) -> Option<Paddr> {
        if va.0 >= self.va.0 && va.0 - self.va.0 < self.size {
            Some(Paddr(self.pa.0 + (va.0 - self.va.0)))
        } else {
            None
        }
    }
    /// Whether `pa` lies inside the range.
    pub const fn contains_pa(&self, pa: Paddr) -> bool {
        self.va_of(pa).is_some()
    }
    /// The signed distance `pa - va` of the range, for display only: it is
    /// negative when the range is loaded below its virtual address.
    pub const fn phys_minus_virt(&self) -> i128 {
        self.pa.0 as i128 - self.va.0 as i128
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vaddr32_refuses_wide_addresses() {
        assert_eq!(
            Vaddr32::try_from(Vaddr(0xffff_f000)),
            Ok(Vaddr32(0xffff_f000))
        );
        assert_eq!(
            Vaddr32::try_from(Vaddr(0x1_0000_0000)),
            Err(VaTooWide(Vaddr(0x1_0000_0000)))
        );
    }

    #[test]
    fn image_loaded_below_link_address_has_negative_distance_and_exact_conversions() {
        // The thread's arm32 case: linked at 0x200000, loaded at 0x100000.
        let img = LinearRange::new(Vaddr(0x20_0000), Paddr(0x10_0000), 0x20_0000).unwrap();
        assert_eq!(img.phys_minus_virt(), -0x10_0000);
        assert_eq!(img.pa_of(Vaddr(0x20_0000)), Some(Paddr(0x10_0000)));
        assert_eq!(img.va_of(Paddr(0x10_0000)), Some(Vaddr(0x20_0000)));
        assert_eq!(img.va_of(Paddr(0x1_0010_0000)), None);
    }

    #[test]
    fn forty_bit_table_address_never_aliases_into_the_image() {
        // A page-table page at 4 GiB + the image's PA must not become an image VA.
        let img = LinearRange::new(Vaddr(0x20_0000), Paddr(0x8000_0000), 0x20_0000).unwrap();
        assert_eq!(img.va_of(Paddr(0x1_8000_1000)), None);
        assert_eq!(img.va_of(Paddr(0x8000_1000)), Some(Vaddr(0x20_1000)));
    }

    #[test]
    fn linear_range_refuses_overflow() {
        assert!(LinearRange::new(Vaddr(u64::MAX - 10), Paddr(0), 4096).is_none());
    }
}
