//! Xen's table-access providers: PMAP in early boot, and the arm32 per-CPU
//! domain-page slots afterwards.
//!
//! | state | provider | how a table page is reached |
//! |---|---|---|
//! | `EarlyBoot` | [`EarlyAccess`] | image tables at link address + offset; anything else through a PMAP slot |
//! | `Boot` / `SmpBoot` / `Active`, arm64 | [`hvmm::phase::DirectMapAccess`] | the direct map |
//! | `Boot` / `SmpBoot` / `Active`, arm32 | [`DomainPageAccess`] | image tables as above; anything else through a per-CPU domain-page slot |
//!
//! Both are bound to Xen's layout ([`crate::layout`]): PMAP's slots are
//! fixmap slots, the domain-page slots cover the arm32 domheap area. A
//! domain-page provider can only be built from the [`DomainPage`] value the
//! step creating the slots returns. PMAP refuses to work once other CPUs run
//! (it is single-CPU).

use crate::layout::{fixmap_va, DOMHEAP_ENTRIES, FIXMAP_PMAP_BEGIN, NUM_PMAP};
use hvmm::access::{AccessError, AccessPath, TableAccess};
use hvmm::addr::{Mfn, Paddr, Vaddr};
use hvmm::arch::{Arch, CpuOps};
use hvmm::attr::Attrs;
use hvmm::format::{Arm32, Pte};
use hvmm::phase::{AccessStats, ImageRange};

/// The PMAP: a few fixmap slots whose L3 entries are written directly (never
/// through the engine, which would recurse). Usable from the first Rust
/// instruction, single CPU only.
#[derive(Debug)]
pub struct Pmap {
    /// VA of the fixmap's L3 table (inside the image).
    l3: Vaddr,
    in_use: u16,
    reserved: usize,
    /// Set once other CPUs may run: PMAP then refuses to work.
    retired: bool,
    /// Slot acquisitions so far: maps outside a reservation, and reservations.
    acquisitions: u64,
    /// Fault injection: the acquisition with this index (0-based) fails.
    fail_at: Option<u64>,
}

impl Pmap {
    /// A PMAP over the fixmap L3 table at `fixmap_l3` (its image VA).
    pub const fn new(fixmap_l3: Vaddr) -> Self {
        Pmap {
            l3: fixmap_l3,
            in_use: 0,
            reserved: 0,
            retired: false,
            acquisitions: 0,
            fail_at: None,
        }
    }
    /// Slots in use.
    pub const fn in_use(&self) -> u32 {
        self.in_use.count_ones()
    }
    /// Slot acquisitions so far: maps outside a reservation, and
    /// reservations (each one a point where fault injection can fail).
    pub const fn acquisitions(&self) -> u64 {
        self.acquisitions
    }
    /// Fault injection (feature `test-hooks`): the acquisition with this
    /// index (0-based, counted by [`Pmap::acquisitions`]) fails as if every
    /// slot were in use; `None` turns it off.
    #[cfg(feature = "test-hooks")]
    pub fn set_fail_at(&mut self, index: Option<u64>) {
        self.fail_at = index;
    }
    /// Ends PMAP use (secondary CPUs are starting): later maps fail with
    /// [`AccessError::WrongPhase`].
    pub fn retire(&mut self) {
        self.retired = true;
    }

    /// Counts one slot acquisition, failing it if fault injection says so.
    fn acquire(&mut self) -> Result<(), AccessError> {
        let index = self.acquisitions;
        self.acquisitions += 1;
        if self.fail_at == Some(index) {
            return Err(AccessError::SlotsExhausted {
                provider: "pmap",
                slots: NUM_PMAP,
            });
        }
        Ok(())
    }

    fn free_slots(&self) -> usize {
        NUM_PMAP - self.in_use.count_ones() as usize
    }

    /// Maps `mfn` read-write in a free slot and returns its VA.
    pub fn map<A: Arch>(&mut self, arch: &mut A, mfn: Mfn) -> Result<Vaddr, AccessError> {
        if self.retired {
            return Err(AccessError::WrongPhase {
                provider: "pmap",
                state: "SmpBoot",
            });
        }
        if self.reserved == 0 {
            self.acquire()?;
        }
        let slot = (0..NUM_PMAP).find(|&i| self.in_use & (1 << i) == 0).ok_or(
            AccessError::SlotsExhausted {
                provider: "pmap",
                slots: NUM_PMAP,
            },
        )?;
        let idx = FIXMAP_PMAP_BEGIN + slot;
        let pte = Pte::leaf::<hvmm::format::Arm64>(3, mfn.paddr(), Attrs::RW, false);
        // Both formats share the page encoding below 40 bits; check the PA fits
        // the 48-bit field (an arm32 caller never has more than 40 bits).
        arch.write_pte(Vaddr(self.l3.0 + idx as u64 * 8), pte.0)
            .map_err(AccessError::Fault)?;
        arch.isb();
        self.in_use |= 1 << slot;
        Ok(fixmap_va(idx))
    }

    /// Unmaps a slot returned by [`Pmap::map`] and invalidates it on this CPU.
    pub fn unmap<A: CpuOps>(&mut self, arch: &mut A, va: Vaddr) {
        let idx = ((va.0 - fixmap_va(0).0) / 4096) as usize;
        let Some(slot) = idx.checked_sub(FIXMAP_PMAP_BEGIN).filter(|&s| s < NUM_PMAP) else {
            return;
        };
        // A fault here would mean the fixmap L3 is gone; nothing to undo.
        let _ = arch.write_pte(Vaddr(self.l3.0 + idx as u64 * 8), 0);
        arch.tlb_flush_va_local(va);
        self.in_use &= !(1 << slot);
    }
}

/// The early-boot provider: image tables at their link address, other frames
/// through PMAP.
pub struct EarlyAccess<'a> {
    image: ImageRange,
    pmap: &'a mut Pmap,
    /// Maps served, by path.
    pub stats: &'a mut AccessStats,
}

impl<'a> EarlyAccess<'a> {
    /// The provider over the image and the PMAP.
    pub fn new(image: ImageRange, pmap: &'a mut Pmap, stats: &'a mut AccessStats) -> Self {
        EarlyAccess { image, pmap, stats }
    }
}

impl AccessPath for EarlyAccess<'_> {
    fn name(&self) -> &'static str {
        "image+pmap"
    }
}

impl<A: CpuOps> TableAccess<A> for EarlyAccess<'_> {
    fn map_table(&mut self, arch: &mut A, mfn: Mfn) -> Result<Vaddr, AccessError> {
        if let Some(va) = self.image.va_of(mfn) {
            self.stats.image += 1;
            return Ok(va);
        }
        let va = self.pmap.map(arch, mfn)?;
        self.stats.pmap += 1;
        Ok(va)
    }
    fn unmap_table(&mut self, arch: &mut A, mfn: Mfn, va: Vaddr) {
        if !self.image.contains(mfn) {
            self.pmap.unmap(arch, va);
        }
    }
    fn reserve(&mut self, _arch: &mut A, nested: usize) -> Result<(), AccessError> {
        if self.pmap.retired {
            return Err(AccessError::WrongPhase {
                provider: "pmap",
                state: "SmpBoot",
            });
        }
        self.pmap.acquire()?;
        if self.pmap.free_slots() < nested {
            return Err(AccessError::SlotsExhausted {
                provider: "pmap",
                slots: NUM_PMAP,
            });
        }
        self.pmap.reserved = nested;
        Ok(())
    }
    fn unreserve(&mut self, _arch: &mut A) {
        self.pmap.reserved = 0;
    }
}

/// One CPU's arm32 domain-page slots: 1024 2 MiB block entries (two L2
/// tables, contiguous in the xenheap) covering the domheap area. Each entry
/// holds a reference count in its software bits; an entry whose count drops
/// to zero stays valid (lazy unmap) until its slot is reused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DomainPage {
    /// VA of the 1024 entries (xenheap).
    slots: Vaddr,
    /// First VA of the domheap area.
    base: Vaddr,
}

/// Largest reference count an entry can hold (4 software bits).
pub const DOMAIN_PAGE_MAX_REFS: u8 = 15;

impl DomainPage {
    /// The slots of one CPU: `slots` is the xenheap VA of its two domheap L2
    /// tables, linked into that CPU's root for `base..base + 2 GiB`.
    pub const fn new(slots: Vaddr, base: Vaddr) -> Self {
        DomainPage { slots, base }
    }

    fn entry_va(&self, i: usize) -> Vaddr {
        Vaddr(self.slots.0 + i as u64 * 8)
    }

    /// Maps the frame `mfn` (Xen's `map_domain_page`).
    pub fn map<A: CpuOps>(&self, arch: &mut A, mfn: Mfn) -> Result<Vaddr, AccessError> {
        let pa = mfn.paddr();
        let block = Paddr(pa.0 & !((2 << 20) - 1));
        let hash = (pa.0 >> 21) as usize % DOMHEAP_ENTRIES;
        let mut candidate = None;
        for probe in 0..DOMHEAP_ENTRIES {
            let i = (hash + probe) % DOMHEAP_ENTRIES;
            let pte = Pte(arch
                .read_pte(self.entry_va(i))
                .map_err(AccessError::Fault)?);
            if pte.is_leaf(2) && pte.oa::<Arm32>() == block && pte.sw() < DOMAIN_PAGE_MAX_REFS {
                arch.write_pte(self.entry_va(i), pte.with_sw(pte.sw() + 1).0)
                    .map_err(AccessError::Fault)?;
                return Ok(self.slot_va(i, pa));
            }
            if candidate.is_none() && pte.sw() == 0 {
                candidate = Some((i, pte));
            }
            if !pte.is_valid() {
                break;
            }
        }
        let (i, old) = candidate.ok_or(AccessError::SlotsExhausted {
            provider: "domain-page",
            slots: DOMHEAP_ENTRIES,
        })?;
        if old.is_valid() {
            // Reusing a lazily unmapped slot: break before make.
            arch.write_pte(self.entry_va(i), 0)
                .map_err(AccessError::Fault)?;
            arch.tlb_flush_va_local(self.slot_va(i, Paddr(0)));
        }
        let new = Pte::leaf::<Arm32>(2, block, Attrs::RW, false).with_sw(1);
        arch.write_pte(self.entry_va(i), new.0)
            .map_err(AccessError::Fault)?;
        arch.isb();
        Ok(self.slot_va(i, pa))
    }

    fn slot_va(&self, i: usize, pa: Paddr) -> Vaddr {
        Vaddr(self.base.0 + ((i as u64) << 21) + (pa.0 & ((2 << 20) - 1)))
    }

    /// Drops one reference (Xen's `unmap_domain_page`); the entry stays.
    pub fn unmap<A: Arch>(&self, arch: &mut A, va: Vaddr) {
        let i = ((va.0 - self.base.0) >> 21) as usize % DOMHEAP_ENTRIES;
        if let Ok(raw) = arch.read_pte(self.entry_va(i)) {
            let pte = Pte(raw);
            if pte.sw() > 0 {
                let _ = arch.write_pte(self.entry_va(i), pte.with_sw(pte.sw() - 1).0);
            }
        }
    }

    /// Slots that could take a new mapping now.
    pub fn free_slots<A: Arch>(&self, arch: &mut A) -> Result<usize, AccessError> {
        let mut n = 0;
        for i in 0..DOMHEAP_ENTRIES {
            if Pte(arch
                .read_pte(self.entry_va(i))
                .map_err(AccessError::Fault)?)
            .sw()
                == 0
            {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Mappings currently held (sum of reference counts).
    pub fn held<A: Arch>(&self, arch: &mut A) -> Result<u64, AccessError> {
        let mut n = 0u64;
        for i in 0..DOMHEAP_ENTRIES {
            n += u64::from(
                Pte(arch
                    .read_pte(self.entry_va(i))
                    .map_err(AccessError::Fault)?)
                .sw(),
            );
        }
        Ok(n)
    }
}

/// The arm32 provider once domain-page slots exist: image tables at their link
/// address, other frames through this CPU's domain-page slots.
pub struct DomainPageAccess<'a> {
    image: ImageRange,
    slots: DomainPage,
    /// Maps served, by path.
    pub stats: &'a mut AccessStats,
}

impl<'a> DomainPageAccess<'a> {
    /// The provider over this CPU's slots.
    pub fn new(image: ImageRange, slots: DomainPage, stats: &'a mut AccessStats) -> Self {
        DomainPageAccess {
            image,
            slots,
            stats,
        }
    }
}

impl AccessPath for DomainPageAccess<'_> {
    fn name(&self) -> &'static str {
        "domain-page"
    }
}

impl<A: CpuOps> TableAccess<A> for DomainPageAccess<'_> {
    fn map_table(&mut self, arch: &mut A, mfn: Mfn) -> Result<Vaddr, AccessError> {
        if let Some(va) = self.image.va_of(mfn) {
            self.stats.image += 1;
            return Ok(va);
        }
        let va = self.slots.map(arch, mfn)?;
        self.stats.domain_page += 1;
        Ok(va)
    }
    fn unmap_table(&mut self, arch: &mut A, mfn: Mfn, va: Vaddr) {
        if !self.image.contains(mfn) {
            self.slots.unmap(arch, va);
        }
    }
    fn reserve(&mut self, arch: &mut A, nested: usize) -> Result<(), AccessError> {
        if self.slots.free_slots(arch)? < nested {
            return Err(AccessError::SlotsExhausted {
                provider: "domain-page",
                slots: DOMHEAP_ENTRIES,
            });
        }
        Ok(())
    }
}
