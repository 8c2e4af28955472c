//! Xen's table-access providers: PMAP in early boot, the arm32 per-CPU
//! domain-page slots afterwards, and the arm64 secret-free mode's per-CPU
//! mapcache slots.
//!
//! | state | provider | how a table page is reached |
//! |---|---|---|
//! | `EarlyBoot` | [`EarlyAccess`] | image tables at link address + offset; anything else through a PMAP slot |
//! | `Boot` / `SmpBoot` / `Active`, arm32 | [`DomainPageAccess`] | image tables as above until they are sealed, then they too; anything else through a per-CPU domain-page slot (2 MiB, unmapped once its last reference is dropped); the slot tables themselves through the CPU's domheap window |
//! | `Boot` / `SmpBoot` / `Active`, arm64 (both modes) | [`MapCacheAccess`] | image tables as above until they are sealed, then they too; anything else through a per-CPU 4 KiB mapcache slot, unmapped when given back |
//!
//! ([`hvmm::phase::DirectMapAccess`], reaching every table through a direct
//! map, is the simple choice for a hypervisor that keeps one; hvmm's Xen
//! boot does not use it, so that no table page is writable through a
//! permanent mapping.)
//!
//! Both are bound to Xen's layout ([`crate::layout`]): PMAP's slots are
//! fixmap slots, the domain-page slots cover the arm32 domheap area. A
//! domain-page provider can only be built from the [`DomainPage`] value the
//! step creating the slots returns. PMAP refuses to work once other CPUs run
//! (it is single-CPU).

use crate::layout::{
    domheap_window_va, fixmap_va, DOMHEAP_SLOTS, DOMHEAP_WINDOW_PAGES, FIXMAP_PMAP_BEGIN,
    MAPCACHE_SELF, MAPCACHE_SLOTS, NUM_PMAP,
};
use hvmm::access::{AccessError, AccessPath, TableAccess};
use hvmm::addr::{Mfn, Paddr, Vaddr};
use hvmm::arch::{Arch, CpuOps};
use hvmm::attr::Attrs;
use hvmm::format::{Arm32, Arm64, Pte};
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
            self.stats.slot_tlbi += 1;
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

/// One CPU's arm32 domain-page slots: [`DOMHEAP_SLOTS`] 2 MiB block
/// entries of the two level-2 tables covering the domheap area (the last
/// entry, [`crate::layout::DOMHEAP_WINDOW`], links the window table through
/// which the CPU reaches those two tables: see [`DomainPage::window`]).
/// Each entry holds a reference count in its software bits; an entry whose
/// count drops to zero stays valid (lazy unmap) until its slot is reused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DomainPage {
    /// VA of the 1024 entries, as 8 KiB in a row.
    slots: Vaddr,
    /// First VA of the domheap area.
    base: Vaddr,
}

/// Largest reference count an entry can hold (4 software bits).
pub const DOMAIN_PAGE_MAX_REFS: u8 = 15;

impl DomainPage {
    /// The slots of one CPU: `slots` is a VA at which its two domheap
    /// level-2 tables (linked into that CPU's root for `base..base + 2
    /// GiB`) can be read and written, the second 4 KiB after the first.
    pub const fn new(slots: Vaddr, base: Vaddr) -> Self {
        DomainPage { slots, base }
    }

    /// The slots of a CPU whose domheap tables carry the window
    /// ([`DomainPage::window_link`], [`DomainPage::window_entries`]): the
    /// tables are reached at [`domheap_window_va`]`(base)`, the same VA on
    /// every CPU, each CPU's root linking its own tables there. No other
    /// mapping of them is needed: neither the xenheap nor any permanent one.
    pub const fn window(base: Vaddr) -> Self {
        DomainPage {
            slots: domheap_window_va(base),
            base,
        }
    }

    /// The window entry (the second level-2 table's last entry): a table
    /// descriptor of the window table `window`.
    pub fn window_link(window: Mfn) -> u64 {
        Pte::table::<Arm32>(window).0
    }

    /// The window table's first entries: the two level-2 tables `l2` and
    /// the window table itself, each as one 4 KiB page, read-write, never
    /// executable, normal memory.
    pub fn window_entries(l2: [Mfn; 2], window: Mfn) -> [u64; DOMHEAP_WINDOW_PAGES] {
        [l2[0], l2[1], window].map(|m| Pte::leaf::<Arm32>(3, m.paddr(), Attrs::RW, false).0)
    }

    fn entry_va(&self, i: usize) -> Vaddr {
        Vaddr(self.slots.0 + i as u64 * 8)
    }

    /// Maps the frame `mfn` (Xen's `map_domain_page`).
    pub fn map<A: CpuOps>(&self, arch: &mut A, mfn: Mfn) -> Result<Vaddr, AccessError> {
        self.map_counted(arch, mfn, &mut 0)
    }

    /// [`DomainPage::map`], adding to `flushes` the local invalidation a
    /// reused slot needs.
    fn map_counted<A: CpuOps>(
        &self,
        arch: &mut A,
        mfn: Mfn,
        flushes: &mut u64,
    ) -> Result<Vaddr, AccessError> {
        let pa = mfn.paddr();
        let block = Paddr(pa.0 & !((2 << 20) - 1));
        let hash = (pa.0 >> 21) as usize % DOMHEAP_SLOTS;
        let mut candidate = None;
        for probe in 0..DOMHEAP_SLOTS {
            let i = (hash + probe) % DOMHEAP_SLOTS;
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
            slots: DOMHEAP_SLOTS,
        })?;
        if old.is_valid() {
            // Reusing a lazily unmapped slot: break before make.
            arch.write_pte(self.entry_va(i), 0)
                .map_err(AccessError::Fault)?;
            arch.tlb_flush_va_local(self.slot_va(i, Paddr(0)));
            *flushes += 1;
        }
        let new = Pte::leaf::<Arm32>(2, block, Attrs::RW, false).with_sw(1);
        arch.write_pte(self.entry_va(i), new.0)
            .map_err(AccessError::Fault)?;
        arch.isb();
        Ok(self.slot_va(i, pa))
    }

    /// The slot whose 2 MiB holds `va` (never the window's entry).
    fn slot_of(&self, va: Vaddr) -> Option<usize> {
        va.0.checked_sub(self.base.0)
            .map(|off| (off >> 21) as usize)
            .filter(|&i| i < DOMHEAP_SLOTS)
    }

    fn slot_va(&self, i: usize, pa: Paddr) -> Vaddr {
        Vaddr(self.base.0 + ((i as u64) << 21) + (pa.0 & ((2 << 20) - 1)))
    }

    /// Drops one reference (Xen's `unmap_domain_page`); the entry stays.
    pub fn unmap<A: Arch>(&self, arch: &mut A, va: Vaddr) {
        let Some(i) = self.slot_of(va) else {
            return;
        };
        if let Ok(raw) = arch.read_pte(self.entry_va(i)) {
            let pte = Pte(raw);
            if pte.sw() > 0 {
                let _ = arch.write_pte(self.entry_va(i), pte.with_sw(pte.sw() - 1).0);
            }
        }
    }

    /// Drops one reference and, when it was the last, unmaps the slot at
    /// once: the entry cleared, then invalidated on this CPU (no other CPU
    /// walks this CPU's slot tables). What table access uses, so that no
    /// table page stays reachable after the step that needed it. Returns
    /// whether it invalidated.
    pub fn unmap_now<A: CpuOps>(&self, arch: &mut A, va: Vaddr) -> bool {
        let Some(i) = self.slot_of(va) else {
            return false;
        };
        let Ok(raw) = arch.read_pte(self.entry_va(i)) else {
            return false;
        };
        let pte = Pte(raw);
        match pte.sw() {
            0 => false,
            1 => {
                if arch.write_pte(self.entry_va(i), 0).is_err() {
                    return false;
                }
                arch.tlb_flush_va_local(self.slot_va(i, Paddr(0)));
                true
            }
            n => {
                let _ = arch.write_pte(self.entry_va(i), pte.with_sw(n - 1).0);
                false
            }
        }
    }

    /// Slots that could take a new mapping now.
    pub fn free_slots<A: Arch>(&self, arch: &mut A) -> Result<usize, AccessError> {
        let mut n = 0;
        for i in 0..DOMHEAP_SLOTS {
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
        for i in 0..DOMHEAP_SLOTS {
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

/// The arm32 provider once domain-page slots exist: image tables at their
/// link address until the boot seals them, other frames (and then those
/// too) through this CPU's domain-page slots.
pub struct DomainPageAccess<'a> {
    image: Option<ImageRange>,
    slots: DomainPage,
    /// Maps served, by path.
    pub stats: &'a mut AccessStats,
}

impl<'a> DomainPageAccess<'a> {
    /// The provider over this CPU's slots; `image` while the image's own
    /// tables are reached at their link address (`None` once they are
    /// read-only there: every table through a slot).
    pub fn new(image: Option<ImageRange>, slots: DomainPage, stats: &'a mut AccessStats) -> Self {
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
        if let Some(va) = self.image.and_then(|i| i.va_of(mfn)) {
            self.stats.image += 1;
            return Ok(va);
        }
        let va = self
            .slots
            .map_counted(arch, mfn, &mut self.stats.slot_tlbi)?;
        self.stats.domain_page += 1;
        Ok(va)
    }
    fn unmap_table(&mut self, arch: &mut A, mfn: Mfn, va: Vaddr) {
        if !self.image.is_some_and(|i| i.contains(mfn)) && self.slots.unmap_now(arch, va) {
            self.stats.slot_tlbi += 1;
        }
    }
    fn reserve(&mut self, arch: &mut A, nested: usize) -> Result<(), AccessError> {
        if self.slots.free_slots(arch)? < nested {
            return Err(AccessError::SlotsExhausted {
                provider: "domain-page",
                slots: DOMHEAP_SLOTS,
            });
        }
        Ok(())
    }
}

/// One CPU's arm64 mapcache (the secret-free mode's `map_domain_page`):
/// [`MAPCACHE_SLOTS`] slots of 4 KiB in a level-3 table that only this
/// CPU's root links (level-0 slot [`crate::layout::MAPCACHE_L0_SLOT`]),
/// written through its own last entry, which maps the table itself.
///
/// A slot maps one frame read-write, never executable, while it is held,
/// and nothing once it is given back: [`MapCache::unmap`] clears the entry
/// and invalidates the VA on this CPU (`TLBI VAE2; DSB NSH; ISB`) at once,
/// so that no page stays reachable after the step that needed it. A slot
/// is thus only ever written from invalid to valid or back: never changed
/// while valid, which is what break-before-make asks. The invalidation is
/// local because no other CPU can hold the entry: a CPU's TLB caches only
/// walks from its own root, and this table hangs below this CPU's root
/// alone. That stays true as long as no CPU runs on another CPU's root (a
/// CPU given a root flushes its own TLB when it switches).
///
/// No reference counts: a frame mapped twice takes two slots (two
/// read-write aliases of normal memory with the same attributes are
/// harmless). The search starts at a hash of the frame number; with slots
/// given back at once it nearly always finds the first one free.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct MapCache {
    /// VA of slot 0 (the mapcache region's start).
    base: Vaddr,
}

impl MapCache {
    /// The mapcache of a CPU whose slot table is linked at `base` with its
    /// entry [`MAPCACHE_SELF`] mapping the table itself (see
    /// [`MapCache::self_entry`]).
    pub const fn new(base: Vaddr) -> Self {
        MapCache { base }
    }

    /// The first slot's VA.
    pub const fn base(&self) -> Vaddr {
        self.base
    }

    /// The descriptor of entry [`MAPCACHE_SELF`]: the slot table at
    /// `table` mapped read-write, never executable.
    pub fn self_entry(table: Mfn) -> u64 {
        Pte::leaf::<Arm64>(3, table.paddr(), Attrs::RW, false).0
    }

    /// VA of entry `i` of the slot table (through its self-mapping).
    fn entry_va(&self, i: usize) -> Vaddr {
        Vaddr(self.base.0 + (MAPCACHE_SELF as u64) * 4096 + i as u64 * 8)
    }

    fn slot_va(&self, i: usize) -> Vaddr {
        Vaddr(self.base.0 + i as u64 * 4096)
    }

    /// Whether `va` lies in a slot (not the self-mapping).
    pub fn is_slot(&self, va: Vaddr) -> bool {
        va.0 >= self.base.0 && va.0 - self.base.0 < (MAPCACHE_SLOTS as u64) * 4096
    }

    /// Maps `mfn` read-write in a free slot and returns its VA.
    pub fn map<A: Arch>(&self, arch: &mut A, mfn: Mfn) -> Result<Vaddr, AccessError> {
        let start = (mfn.0 as usize).wrapping_mul(0x9e37_79b9) % MAPCACHE_SLOTS;
        for probe in 0..MAPCACHE_SLOTS {
            let i = (start + probe) % MAPCACHE_SLOTS;
            let e = arch
                .read_pte(self.entry_va(i))
                .map_err(AccessError::Fault)?;
            if Pte(e).is_valid() {
                continue;
            }
            // Invalid, and invalidated on this CPU when it was given back:
            // nothing to break, nothing cached.
            let pte = Pte::leaf::<Arm64>(3, mfn.paddr(), Attrs::RW, false);
            arch.write_pte(self.entry_va(i), pte.0)
                .map_err(AccessError::Fault)?;
            arch.isb();
            return Ok(self.slot_va(i));
        }
        Err(AccessError::SlotsExhausted {
            provider: "mapcache",
            slots: MAPCACHE_SLOTS,
        })
    }

    /// Gives back the slot `va` lies in: the entry is cleared and the VA
    /// invalidated on this CPU. Returns whether `va` was a slot.
    pub fn unmap<A: CpuOps>(&self, arch: &mut A, va: Vaddr) -> bool {
        if !self.is_slot(va) {
            return false;
        }
        let i = ((va.0 - self.base.0) / 4096) as usize;
        // A fault here would mean the slot table is gone: nothing to undo.
        let _ = arch.write_pte(self.entry_va(i), 0);
        arch.tlb_flush_va_local(self.slot_va(i));
        true
    }

    /// Whether at least `n` slots are free now (stops at the `n`-th).
    pub fn has_free<A: Arch>(&self, arch: &mut A, n: usize) -> Result<bool, AccessError> {
        let mut free = 0;
        for i in 0..MAPCACHE_SLOTS {
            if free >= n {
                break;
            }
            if !Pte(arch
                .read_pte(self.entry_va(i))
                .map_err(AccessError::Fault)?)
            .is_valid()
            {
                free += 1;
            }
        }
        Ok(free >= n)
    }

    /// Slots held now (valid entries, the self-mapping aside). Zero between
    /// steps: nothing stays mapped.
    pub fn held<A: Arch>(&self, arch: &mut A) -> Result<usize, AccessError> {
        let mut n = 0;
        for i in 0..MAPCACHE_SLOTS {
            if Pte(arch
                .read_pte(self.entry_va(i))
                .map_err(AccessError::Fault)?)
            .is_valid()
            {
                n += 1;
            }
        }
        Ok(n)
    }
}

/// The arm64 secret-free provider: this CPU's mapcache slots for every
/// table frame, except the image's own tables while the image still maps
/// them writable (until the boot seals them, [`MapCacheAccess::new`]'s
/// `image`).
pub struct MapCacheAccess<'a> {
    image: Option<ImageRange>,
    slots: MapCache,
    /// Maps served, by path.
    pub stats: &'a mut AccessStats,
}

impl<'a> MapCacheAccess<'a> {
    /// The provider over this CPU's slots; `image`: reach the image's
    /// tables at their link address (`None` once they are read-only there).
    pub fn new(image: Option<ImageRange>, slots: MapCache, stats: &'a mut AccessStats) -> Self {
        MapCacheAccess {
            image,
            slots,
            stats,
        }
    }
}

impl AccessPath for MapCacheAccess<'_> {
    fn name(&self) -> &'static str {
        "mapcache"
    }
}

impl<A: CpuOps> TableAccess<A> for MapCacheAccess<'_> {
    fn map_table(&mut self, arch: &mut A, mfn: Mfn) -> Result<Vaddr, AccessError> {
        if let Some(va) = self.image.and_then(|i| i.va_of(mfn)) {
            self.stats.image += 1;
            return Ok(va);
        }
        let va = self.slots.map(arch, mfn)?;
        self.stats.domain_page += 1;
        Ok(va)
    }
    fn unmap_table(&mut self, arch: &mut A, _mfn: Mfn, va: Vaddr) {
        if self.slots.unmap(arch, va) {
            self.stats.slot_tlbi += 1;
        }
    }
    fn reserve(&mut self, arch: &mut A, nested: usize) -> Result<(), AccessError> {
        if !self.slots.has_free(arch, nested)? {
            return Err(AccessError::SlotsExhausted {
                provider: "mapcache",
                slots: MAPCACHE_SLOTS,
            });
        }
        Ok(())
    }
}
