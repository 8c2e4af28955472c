//! System states and the reusable pieces of phase-aware table access.
//!
//! A hypervisor reaches its table pages differently as it boots: before any
//! map of RAM exists, only the image's own tables are at a known address;
//! later a direct map (or per-CPU slots) reaches any frame. This module holds
//! the pieces that do not depend on a particular virtual layout:
//!
//! | item | what it is |
//! |---|---|
//! | [`SystemState`] | the boot phase |
//! | [`ImageRange`] | the image's mapping (link VA ↔ load PA), found with the AT instruction |
//! | [`DirectMap`] / [`DirectMapAccess`] | a linear map of the RAM banks and the provider over it |
//! | [`AccessStats`] | table maps served, by path |
//!
//! Providers bound to one hypervisor's layout (Xen's PMAP fixmap slots and
//! arm32 domain-page slots) live with that layout, in the `hvmm-xen` crate.
//! A provider for a later state can only be built from the value that the
//! step creating its mapping returns ([`DirectMap`]), so the 2019 mistake —
//! reaching for the direct map before it exists — cannot be written.

use crate::access::{AccessError, AccessPath, TableAccess};
use crate::addr::{LinearRange, Mfn, Paddr, Vaddr};
use crate::arch::{Arch, CpuOps};
use core::fmt;

/// The system's boot phase.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SystemState {
    /// MMU on at the link address; no direct map, no domain-page area.
    EarlyBoot,
    /// Memory set up; runtime tables reachable through the direct map (arm64)
    /// or domain-page slots (arm32).
    Boot,
    /// Secondary CPUs are being brought up.
    SmpBoot,
    /// Boot finished, init memory freed.
    Active,
}

impl SystemState {
    /// The name used in logs.
    pub const fn name(self) -> &'static str {
        match self {
            SystemState::EarlyBoot => "EarlyBoot",
            SystemState::Boot => "Boot",
            SystemState::SmpBoot => "SmpBoot",
            SystemState::Active => "Active",
        }
    }
}

impl fmt::Display for SystemState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How many table maps each access path served.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessStats {
    /// Tables inside the image, reached at their link address.
    pub image: u64,
    /// Tables reached through a PMAP slot.
    pub pmap: u64,
    /// Tables reached through the arm64 direct map.
    pub directmap: u64,
    /// Tables reached through a per-CPU domain-page slot: arm32's 2 MiB
    /// slots, or the arm64 secret-free mode's 4 KiB mapcache slots.
    pub domain_page: u64,
    /// Local TLB invalidations the providers made for their slots (a PMAP
    /// or mapcache slot given back, a lazily kept domain-page slot reused):
    /// not counted in [`AccessStats::total`], which counts maps.
    pub slot_tlbi: u64,
}

impl AccessStats {
    /// Total table maps.
    pub const fn total(&self) -> u64 {
        self.image + self.pmap + self.directmap + self.domain_page
    }

    /// What happened between `before` and `self` (both from one counter).
    pub const fn since(&self, before: &AccessStats) -> AccessStats {
        AccessStats {
            image: self.image - before.image,
            pmap: self.pmap - before.pmap,
            directmap: self.directmap - before.directmap,
            domain_page: self.domain_page - before.domain_page,
            slot_tlbi: self.slot_tlbi - before.slot_tlbi,
        }
    }
}

/// The hypervisor image's mapping: link address and load address, as found
/// by hardware translation of its first and last byte.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ImageRange(pub LinearRange);

/// Why the image range could not be established.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImageRangeError {
    /// Translating the image's first or last byte faulted.
    NotMapped(crate::arch::MemFault),
    /// The image is not mapped linearly (last byte's PA does not follow the first's).
    NotLinear {
        /// PA of the first byte.
        first: Paddr,
        /// PA of the last byte.
        last: Paddr,
    },
}

impl fmt::Display for ImageRangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRangeError::NotMapped(fault) => write!(f, "image not mapped: {fault}"),
            ImageRangeError::NotLinear { first, last } => {
                write!(
                    f,
                    "image not mapped linearly: first byte at {first}, last at {last}"
                )
            }
        }
    }
}

impl core::error::Error for ImageRangeError {}

impl ImageRange {
    /// Finds the image's physical range by translating `start` and `end - 1`
    /// with the AT instruction (`end` itself may be unmapped). No stored
    /// `PA - VA` offset is involved.
    pub fn discover<A: CpuOps>(
        arch: &mut A,
        start: Vaddr,
        end: Vaddr,
    ) -> Result<Self, ImageRangeError> {
        let first = arch
            .hw_translate(start, false)
            .map_err(ImageRangeError::NotMapped)?
            .pa;
        let last = arch
            .hw_translate(Vaddr(end.0 - 1), false)
            .map_err(ImageRangeError::NotMapped)?
            .pa;
        let size = end.0 - start.0;
        if last.0.checked_sub(first.0) != Some(size - 1) {
            return Err(ImageRangeError::NotLinear { first, last });
        }
        LinearRange::new(start, first, size)
            .map(ImageRange)
            .ok_or(ImageRangeError::NotLinear { first, last })
    }
    /// The image VA of a frame inside the image.
    pub fn va_of(&self, mfn: Mfn) -> Option<Vaddr> {
        self.0.va_of(mfn.paddr())
    }
    /// Whether the frame is part of the image.
    pub fn contains(&self, mfn: Mfn) -> bool {
        self.0.contains_pa(mfn.paddr())
    }
}

/// The arm64 direct map, as set up by the memory set-up step. Only that step
/// creates one.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DirectMap {
    /// Mapped ranges (VA ↔ PA), one per RAM bank.
    banks: [Option<LinearRange>; 8],
}

impl DirectMap {
    /// Records the direct map of `banks`; called by the step that mapped them.
    pub fn new(banks: &[LinearRange]) -> Option<Self> {
        if banks.len() > 8 {
            return None;
        }
        let mut b = [None; 8];
        for (slot, r) in b.iter_mut().zip(banks) {
            *slot = Some(*r);
        }
        Some(DirectMap { banks: b })
    }
    /// The direct-map VA of `pa`, if it is RAM.
    pub fn va_of(&self, pa: Paddr) -> Option<Vaddr> {
        self.banks.iter().flatten().find_map(|r| r.va_of(pa))
    }
    /// The mapped ranges.
    pub fn ranges(&self) -> impl Iterator<Item = &LinearRange> {
        self.banks.iter().flatten()
    }
}

/// The arm64 provider once the direct map exists.
pub struct DirectMapAccess<'a> {
    map: DirectMap,
    /// Maps served, by path.
    pub stats: &'a mut AccessStats,
}

impl<'a> DirectMapAccess<'a> {
    /// The provider over an established direct map.
    pub fn new(map: DirectMap, stats: &'a mut AccessStats) -> Self {
        DirectMapAccess { map, stats }
    }
}

impl AccessPath for DirectMapAccess<'_> {
    fn name(&self) -> &'static str {
        "directmap"
    }
    fn can_reach(&self, mfn: Mfn) -> bool {
        self.map.va_of(mfn.paddr()).is_some()
    }
}

impl<A: Arch> TableAccess<A> for DirectMapAccess<'_> {
    fn map_table(&mut self, _arch: &mut A, mfn: Mfn) -> Result<Vaddr, AccessError> {
        let va = self
            .map
            .va_of(mfn.paddr())
            .ok_or(AccessError::Unreachable {
                provider: "directmap",
            })?;
        self.stats.directmap += 1;
        Ok(va)
    }
    fn unmap_table(&mut self, _arch: &mut A, _mfn: Mfn, _va: Vaddr) {}
}
