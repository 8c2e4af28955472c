//! The hypervisor's own page tables across the boot phases: one page table,
//! one allocator, and the table-access path the current state allows.
//!
//! The path changes only together with the state, in the methods that
//! establish it: [`Mm::enter_boot_directmap`] takes the [`DirectMap`] value
//! that only the direct-map set-up creates, [`Mm::enter_boot_domain_page`]
//! the [`DomainPage`] slots, [`Mm::enter_boot_mapcache`] (the arm64
//! secret-free mode) CPU 0's [`MapCache`]. Before that, every update goes
//! through [`EarlyAccess`] (image tables + PMAP).
//!
//! In the secret-free mode each CPU runs on its own root: a copy of CPU 0's
//! root except for the mapcache's level-0 entry
//! ([`hvmm_xen::layout::MAPCACHE_L0_SLOT`]), which links that CPU's own slot
//! tables. The engine updates CPU 0's root; an update that made or freed
//! tables may have changed a level-0 entry, which [`Mm::update`] then
//! copies into the other roots (so every CPU sees the same shared tables).

use core::fmt;
use hvmm::access::{AccessError, AccessPath, TableAccess};
use hvmm::format::{table_index, Arm64, Pte};
use hvmm::phase::{AccessStats, DirectMap, DirectMapAccess, ImageRange};
use hvmm::{
    Arch, Attrs, CpuOps, Env, Error, Leaf, LinearRange, MapFlags, Mfn, Op, Paddr, PageTable,
    SystemState, UpdateReport, Vaddr, PAGE_SIZE,
};
use hvmm_xen::boot_alloc::FrameRanges;
use hvmm_xen::layout::{fixmap_va, HasLayout, FIXMAP_MISC, MAPCACHE_L0_SLOT, SHARED_L0_SLOTS};
use hvmm_xen::phase::{DomainPage, DomainPageAccess, EarlyAccess, MapCache, MapCacheAccess, Pmap};

/// Most CPUs the boot sequence brings up.
pub const MAX_CPUS: usize = 8;

/// Which table-access behaviour to use. Anything but `Correct` reproduces a
/// historical bug, for tests that must show the bug is caught.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum AccessPolicy {
    /// hvmm's providers.
    #[default]
    Correct,
    /// Xen 4.13-rc after commit 022387ee1a: `set_fixmap` goes through the
    /// update engine, whose table access always uses `map_domain_page` — on
    /// arm64 a direct-map address, whether or not the direct map exists yet.
    Xen2019Fixmap,
}

/// The 2019 table access: every table through `map_domain_page`, which on
/// arm64 is the direct-map address of the frame.
struct Xen2019DomainPage {
    directmap: Vaddr,
    stats_directmap: u64,
}

impl AccessPath for Xen2019DomainPage {
    fn name(&self) -> &'static str {
        "domain-page (2019)"
    }
}

impl<A: CpuOps> TableAccess<A> for Xen2019DomainPage {
    fn map_table(&mut self, _arch: &mut A, mfn: Mfn) -> Result<Vaddr, AccessError> {
        self.stats_directmap += 1;
        Ok(Vaddr(self.directmap.0 + mfn.paddr().0))
    }
    fn unmap_table(&mut self, _arch: &mut A, _mfn: Mfn, _va: Vaddr) {}
}

/// Passes allocation through, remembering the highest frame handed out.
/// With a table pool, table frames come from (and go back to) the pool;
/// the main allocator still counts each reservation as a fault-injection
/// point.
struct Tracking<'a> {
    inner: &'a mut FrameRanges,
    pool: Option<&'a mut FrameRanges>,
    highest: &'a mut Paddr,
}

impl hvmm::FrameAlloc for Tracking<'_> {
    fn reserve(&mut self, n: usize) -> Result<(), hvmm::OutOfFrames> {
        match &mut self.pool {
            Some(pool) => {
                self.inner.reserve(0)?;
                pool.reserve(n)
            }
            None => self.inner.reserve(n),
        }
    }
    fn take(&mut self) -> Option<Mfn> {
        let m = match &mut self.pool {
            Some(pool) => pool.take()?,
            None => self.inner.take()?,
        };
        if m.paddr() > *self.highest {
            *self.highest = m.paddr();
        }
        Some(m)
    }
    fn unreserve(&mut self) {
        match &mut self.pool {
            Some(pool) => pool.unreserve(),
            None => self.inner.unreserve(),
        }
    }
    fn free(&mut self, mfn: Mfn) {
        match &mut self.pool {
            Some(pool) => pool.free(mfn),
            None => self.inner.free(mfn),
        }
    }
    fn can_free(&self, mfn: Mfn) -> bool {
        self.inner.can_free(mfn)
    }
}

/// The arm64 direct-map mode's table pool: 2 MiB chunks of RAM that the
/// direct map does not map, every hypervisor table frame taken from them.
#[derive(Debug)]
pub struct TablePool {
    /// Free frames of the chunks.
    pub free: FrameRanges,
    /// Chunks taken so far (the first at set-up, then one per growth).
    pub chunks: u32,
}

/// Frames per table-pool chunk (2 MiB).
pub const POOL_CHUNK_PAGES: u64 = 512;
/// The pool grows (by a chunk carved out of the direct map) before an
/// update when fewer frames than this are free in it: more than any single
/// update of the boot needs, and enough for the carving's own splits.
pub const POOL_LOW: u64 = 16;

#[derive(Copy, Clone, Debug)]
enum Path {
    Early,
    DirectMap(DirectMap),
    DomainPage(DomainPaths),
    /// Also the arm64 direct-map mode's path: [`PerCpu::directmap`] then
    /// records the direct map, which maps no table frame.
    MapCache(PerCpu),
}

/// arm32's per-CPU parts.
#[derive(Copy, Clone, Debug)]
struct DomainPaths {
    /// Each CPU's domain-page slots.
    slots: [Option<DomainPage>; MAX_CPUS],
    /// Whether the image's own tables are still reached at their link
    /// address (until [`Mm::seal_image_tables`]).
    image_writable: bool,
}

/// The secret-free mode's per-CPU parts.
#[derive(Copy, Clone, Debug)]
struct PerCpu {
    /// Each CPU's slots.
    slots: [Option<MapCache>; MAX_CPUS],
    /// Whether the image's own tables are still reached at their link
    /// address (until [`Mm::seal_image_tables`]).
    image_writable: bool,
    /// CPU 0's shared level-0 entries as every other root holds them.
    shared_l0: [u64; SHARED_L0_SLOTS],
    /// The direct map, in the direct-map mode (tables from the pool).
    directmap: Option<DirectMap>,
}

/// Counts per system state.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct PhaseCounts {
    /// Table maps by access path.
    pub access: AccessStats,
    /// What the engine did.
    pub updates: UpdateReport,
    /// Engine calls.
    pub calls: u64,
}

/// A `copy_from_paddr` that happened, for the boot log.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CopyRecord {
    /// Source physical address.
    pub pa: Paddr,
    /// Bytes copied.
    pub len: u64,
    /// State it ran in.
    pub state: SystemState,
    /// Table maps it needed, by path.
    pub access: AccessStats,
}

/// The hypervisor's page tables, allocator and access path.
pub struct Mm<F: HasLayout> {
    state: SystemState,
    pt: PageTable<F>,
    image: ImageRange,
    pmap: Pmap,
    path: Path,
    policy: AccessPolicy,
    /// Free memory: the boot allocator, then (after
    /// [`Mm::end_boot_allocator`]) the runtime page allocator.
    pub alloc: FrameRanges,
    boot_allocator_ended: bool,
    /// Counts per state, indexed by `SystemState as usize`.
    pub phases: [PhaseCounts; 4],
    /// The highest physical address of a table page the engine allocated.
    pub highest_table: Paddr,
    /// The arm32 xenheap, once mapped.
    xenheap: Option<LinearRange>,
    /// `set_fixmap` calls so far (fault-injection points).
    pub fixmap_sets: u64,
    /// Fault injection: the `set_fixmap` call with this index (0-based) fails.
    fail_fixmap_at: Option<u64>,
    /// The last `copy_from_paddr` call (the boot keeps the list: every
    /// entry here would be moved with the memory manager).
    pub last_copy: Option<CopyRecord>,
    /// Domain 0, once built.
    pub dom0: Option<crate::domain::Dom0<F::Guest>>,
    /// The root table each CPU runs on (CPU 0's is the page table's root).
    roots: [Option<Mfn>; MAX_CPUS],
    /// arm64 direct-map mode: where table frames come from.
    pub pool: Option<TablePool>,
}

impl<F: HasLayout> fmt::Debug for Mm<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mm")
            .field("state", &self.state)
            .field("root", &self.pt.root())
            .finish()
    }
}

fn idx(s: SystemState) -> usize {
    s as usize
}

impl<F: HasLayout> Mm<F> {
    /// The memory manager in [`SystemState::EarlyBoot`], over the runtime root
    /// table `root` (inside the image), with PMAP over the fixmap L3 at
    /// `fixmap_l3` (its image VA).
    ///
    /// # Safety
    ///
    /// The manager adopts `root` as its page table: no other
    /// [`PageTable`] (or `Mm`) over `root` may exist while it does
    /// ([`PageTable::from_root`]).
    pub unsafe fn new(
        root: Mfn,
        image: ImageRange,
        fixmap_l3: Vaddr,
        policy: AccessPolicy,
    ) -> Self {
        Mm {
            state: SystemState::EarlyBoot,
            // SAFETY: the caller promises this is the only handle on `root`.
            pt: unsafe { PageTable::from_root(root) },
            image,
            pmap: Pmap::new(fixmap_l3),
            path: Path::Early,
            policy,
            alloc: FrameRanges::new(),
            boot_allocator_ended: false,
            phases: [PhaseCounts::default(); 4],
            highest_table: Paddr(0),
            xenheap: None,
            fixmap_sets: 0,
            fail_fixmap_at: None,
            last_copy: None,
            dom0: None,
            roots: {
                let mut r = [None; MAX_CPUS];
                r[0] = Some(root);
                r
            },
            pool: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> SystemState {
        self.state
    }
    /// The image's mapping.
    pub fn image(&self) -> ImageRange {
        self.image
    }
    /// The page table.
    pub fn page_table(&self) -> &PageTable<F> {
        &self.pt
    }
    /// Name of the access path in use.
    pub fn path_name(&self) -> &'static str {
        match self.path {
            Path::Early => "image+pmap",
            Path::DirectMap(_) => "directmap",
            Path::DomainPage(d) => match (d.image_writable, self.pool.is_some()) {
                (true, false) => "image+domain-page",
                (true, true) => "image+domain-page (table pool outside the xenheap)",
                (false, _) => "domain-page (table pool outside the xenheap)",
            },
            Path::MapCache(PerCpu {
                image_writable: true,
                directmap: None,
                ..
            }) => "image+mapcache",
            Path::MapCache(PerCpu {
                image_writable: true,
                ..
            }) => "image+mapcache (table pool outside the direct map)",
            Path::MapCache(PerCpu {
                directmap: Some(_), ..
            }) => "mapcache (table pool outside the direct map)",
            Path::MapCache(_) => "mapcache",
        }
    }
    /// Whether the boot allocator has been handed over.
    pub fn boot_allocator_ended(&self) -> bool {
        self.boot_allocator_ended
    }
    /// PMAP slot acquisitions so far, and the fault-injection setting.
    pub fn pmap_mut(&mut self) -> &mut Pmap {
        &mut self.pmap
    }
    /// Fault injection (feature `test-hooks`): the `set_fixmap` call with
    /// this index (0-based, counted by `fixmap_sets`) fails.
    #[cfg(feature = "test-hooks")]
    pub fn set_fail_fixmap_at(&mut self, index: Option<u64>) {
        self.fail_fixmap_at = index;
    }
    /// PMAP slots in use now.
    pub fn pmap_in_use(&self) -> u32 {
        self.pmap.in_use()
    }

    /// Performs one engine update through the current state's access path
    /// (Xen's `map_pages_to_xen` / `modify_xen_mappings` /
    /// `destroy_xen_mappings` / `populate_pt_range`).
    pub fn update<A: CpuOps>(
        &mut self,
        arch: &mut A,
        va: Vaddr,
        pages: u64,
        op: Op,
        flags: MapFlags,
    ) -> Result<UpdateReport, Error> {
        // A failed growth changed nothing; the update may still fit in
        // what the pool holds (else it fails with OutOfMemory).
        let _ = self.grow_pool(arch);
        self.update_in_place(arch, va, pages, op, flags)
    }

    /// [`Mm::update`] without growing the table pool first.
    fn update_in_place<A: CpuOps>(
        &mut self,
        arch: &mut A,
        va: Vaddr,
        pages: u64,
        op: Op,
        flags: MapFlags,
    ) -> Result<UpdateReport, Error> {
        self.phases[idx(self.state)].calls += 1;
        let r = self.with_env(arch, |pt, env| pt.update(env, va, pages, op, flags))?;
        self.phases[idx(self.state)].updates += r;
        // Only a table made or freed can have changed a level-0 entry.
        if r.tables_created + r.tables_freed > 0 {
            self.sync_roots(arch, va, pages)?;
        }
        Ok(r)
    }

    /// From now on every table frame the engine (and the slot set-up)
    /// takes comes from the 2 MiB chunk at `chunk`, which the caller keeps
    /// out of every permanent mapping: arm64's direct map, arm32's
    /// xenheap. `false` if `chunk` is not 2 MiB-aligned or a pool exists
    /// already.
    pub fn set_table_pool(&mut self, chunk: Mfn) -> bool {
        if self.pool.is_some() || !chunk.0.is_multiple_of(POOL_CHUNK_PAGES) {
            return false;
        }
        let mut free = FrameRanges::new();
        let start = chunk.paddr();
        if free
            .add(start, Paddr(start.0 + POOL_CHUNK_PAGES * PAGE_SIZE))
            .is_err()
        {
            return false;
        }
        self.pool = Some(TablePool { free, chunks: 1 });
        true
    }

    /// Grows the table pool when it runs low: a free 2 MiB chunk is
    /// taken from the allocator — on arm32 outside the xenheap, on arm64
    /// removed from the direct map (its new tables, if a block is split,
    /// come from the pool) — then given to the pool. Nothing changes on
    /// failure.
    fn grow_pool<A: CpuOps>(&mut self, arch: &mut A) -> Result<(), Error> {
        let Some(pool) = &self.pool else {
            return Ok(());
        };
        if pool.free.free_pages() >= POOL_LOW {
            return Ok(());
        }
        if let Some(xh) = self.xenheap {
            let chunk = alloc_outside(&mut self.alloc, POOL_CHUNK_PAGES, POOL_CHUNK_PAGES, xh)
                .map_err(|_| Error::OutOfMemory {
                    needed: POOL_CHUNK_PAGES as usize,
                    available: self.alloc.free_pages() as usize,
                })?;
            let start = chunk.paddr();
            let end = Paddr(start.0 + POOL_CHUNK_PAGES * PAGE_SIZE);
            let added = match &mut self.pool {
                Some(p) => p.free.add(start, end).is_ok(),
                None => false,
            };
            return match &mut self.pool {
                Some(p) if added => {
                    p.chunks += 1;
                    Ok(())
                }
                _ => {
                    let _ = self.alloc.free_pages_at(chunk, POOL_CHUNK_PAGES);
                    Err(Error::OutOfMemory {
                        needed: 1,
                        available: 0,
                    })
                }
            };
        }
        let Some(dm) = self.directmap() else {
            return Ok(());
        };
        let chunk = self
            .alloc
            .alloc(POOL_CHUNK_PAGES, POOL_CHUNK_PAGES)
            .map_err(|_| Error::OutOfMemory {
                needed: POOL_CHUNK_PAGES as usize,
                available: self.alloc.free_pages() as usize,
            })?;
        let give_back = |mm: &mut Self| {
            let _ = mm.alloc.free_pages_at(chunk, POOL_CHUNK_PAGES);
        };
        let Some(va) = dm.va_of(chunk.paddr()) else {
            give_back(self);
            return Err(Error::OutOfMemory {
                needed: POOL_CHUNK_PAGES as usize,
                available: 0,
            });
        };
        if let Err(e) =
            self.update_in_place(arch, va, POOL_CHUNK_PAGES, Op::Remove, MapFlags::PAGES)
        {
            give_back(self);
            return Err(e);
        }
        let start = chunk.paddr();
        let end = Paddr(start.0 + POOL_CHUNK_PAGES * PAGE_SIZE);
        let added = match &mut self.pool {
            Some(p) => p.free.add(start, end).is_ok(),
            None => false,
        };
        if !added {
            // Too many ranges in the pool: map the chunk back and return it.
            let back = Op::Insert {
                pa: start,
                attrs: Attrs::RW,
            };
            let r = self.update_in_place(arch, va, POOL_CHUNK_PAGES, back, MapFlags::BLOCKS);
            if r.is_ok() {
                give_back(self);
            }
            return Err(Error::OutOfMemory {
                needed: 1,
                available: 0,
            });
        }
        if let Some(p) = &mut self.pool {
            p.chunks += 1;
        }
        Ok(())
    }

    /// One frame for a table outside the engine (mapcache tables, CPU
    /// roots): from the pool when there is one.
    fn alloc_table_frame(&mut self) -> Result<Mfn, Error> {
        let r = match &mut self.pool {
            Some(p) => p.free.alloc(1, 1),
            None => self.alloc.alloc(1, 1),
        };
        r.map_err(|_| Error::OutOfMemory {
            needed: 1,
            available: 0,
        })
    }

    /// `N` frames for tables outside the engine, the pool grown first if
    /// it runs low: all of them, or none (those taken are given back).
    fn alloc_table_frames<A: CpuOps, const N: usize>(
        &mut self,
        arch: &mut A,
    ) -> Result<[Mfn; N], Error> {
        let _ = self.grow_pool(arch);
        let mut frames = [Mfn(0); N];
        for i in 0..N {
            match self.alloc_table_frame() {
                Ok(m) => frames[i] = m,
                Err(_) => {
                    for f in &frames[..i] {
                        self.free_table_frame(*f);
                    }
                    return Err(Error::OutOfMemory {
                        needed: N - i,
                        available: self.alloc.free_pages() as usize,
                    });
                }
            }
        }
        Ok(frames)
    }

    /// Gives back a frame from [`Mm::alloc_table_frame`].
    fn free_table_frame(&mut self, mfn: Mfn) {
        let _ = match &mut self.pool {
            Some(p) => p.free.free_pages_at(mfn, 1),
            None => self.alloc.free_pages_at(mfn, 1),
        };
    }

    /// `pages` contiguous frames that no permanent mapping reaches, for
    /// page tables other than the hypervisor's own (a guest's stage-2
    /// pool): on arm32 outside the xenheap; in arm64's direct-map mode from
    /// the table pool when it holds them with room to spare, else a 2 MiB-
    /// aligned run taken out of the direct map (what the request leaves of
    /// it joins the table pool); in the secret-free mode anywhere, nothing
    /// mapping RAM. Nothing changes on failure.
    pub fn alloc_unmapped<A: CpuOps>(&mut self, arch: &mut A, pages: u64) -> Result<Mfn, Error> {
        let none = |mm: &Self| Error::OutOfMemory {
            needed: pages as usize,
            available: mm.alloc.free_pages() as usize,
        };
        if let Some(xh) = self.xenheap {
            return alloc_outside(&mut self.alloc, pages, 1, xh).map_err(|_| none(self));
        }
        let Some(dm) = self.directmap() else {
            return self.alloc.alloc(pages, 1).map_err(|_| none(self));
        };
        if let Some(p) = &mut self.pool {
            if p.free.free_pages() >= pages.saturating_add(POOL_LOW) {
                if let Ok(m) = p.free.alloc(pages, 1) {
                    return Ok(m);
                }
            }
        }
        let run = pages.next_multiple_of(POOL_CHUNK_PAGES);
        let start = self
            .alloc
            .alloc(run, POOL_CHUNK_PAGES)
            .map_err(|_| none(self))?;
        let give_back = |mm: &mut Self| {
            let _ = mm.alloc.free_pages_at(start, run);
        };
        let Some(va) = dm.va_of(start.paddr()) else {
            give_back(self);
            return Err(none(self));
        };
        if let Err(e) = self.update(arch, va, run, Op::Remove, MapFlags::PAGES) {
            give_back(self);
            return Err(e);
        }
        if run > pages {
            let rest = Paddr(start.paddr().0 + pages * PAGE_SIZE);
            let end = Paddr(start.paddr().0 + run * PAGE_SIZE);
            if let Some(p) = &mut self.pool {
                // Too many ranges in the pool: the rest stays unused, and
                // unmapped.
                let _ = p.free.add(rest, end);
            }
        }
        Ok(start)
    }

    /// Secret-free mode: copies CPU 0's level-0 entries for `[va, va +
    /// pages)` into the other CPUs' roots where they differ. A new entry
    /// (invalid before) needs nothing more; an entry that was valid and
    /// changed is invalidated on every CPU afterwards (the engine's own
    /// invalidation ran while the other roots still pointed at the old
    /// table).
    fn sync_roots<A: CpuOps>(&mut self, arch: &mut A, va: Vaddr, pages: u64) -> Result<(), Error> {
        let Path::MapCache(pc) = self.path else {
            return Ok(());
        };
        let root0 = self.pt.root();
        let others = self.roots;
        let others = others.iter().flatten().filter(|&&r| r != root0);
        if others.clone().next().is_none() {
            return Ok(());
        }
        let last = va.0.saturating_add(pages.saturating_mul(PAGE_SIZE)) - 1;
        let (first_i, last_i) = (table_index(va.0, 0), table_index(last, 0));
        let mut shared = pc.shared_l0;
        let mut flush = false;
        let r = self.with_access(arch, |arch, acc| {
            for i in (first_i..=last_i).filter(|&i| i != MAPCACHE_L0_SLOT) {
                let want = read_entry(arch, acc, root0, i)?;
                if shared.get(i) == Some(&want) {
                    continue;
                }
                for root in others.clone() {
                    let have = read_entry(arch, acc, *root, i)?;
                    if have != want {
                        write_entry(arch, acc, *root, i, want)?;
                        flush |= Pte(have).is_valid();
                    }
                }
                if let Some(s) = shared.get_mut(i) {
                    *s = want;
                }
            }
            Ok(())
        });
        if flush {
            arch.tlb_flush_all();
            arch.tlb_sync();
        }
        if let Path::MapCache(pc) = &mut self.path {
            pc.shared_l0 = shared;
        }
        r
    }

    /// Looks up one VA through the current access path.
    pub fn lookup<A: CpuOps>(&mut self, arch: &mut A, va: Vaddr) -> Result<Option<Leaf>, Error> {
        self.with_env(arch, |pt, env| pt.lookup(env.arch, env.access, va))
    }

    /// Writes the walk of `va` (Xen's `dump_hyp_walk`), after checking by
    /// hardware translation that the root table's VA translates to the root
    /// register.
    pub fn dump_hyp_walk<A: CpuOps>(
        &mut self,
        arch: &mut A,
        va: Vaddr,
        out: &mut dyn fmt::Write,
    ) -> Result<(), Error> {
        let root = self.pt.root();
        if let Some(root_va) = self.image.va_of(root) {
            let at = arch.hw_translate(root_va, false).map(|r| r.pa);
            let hw = arch.root();
            let _ = match at {
                Ok(pa) if pa == hw => writeln!(
                    out,
                    "root table {root_va} translates to {pa}: the root register"
                ),
                Ok(pa) => writeln!(
                    out,
                    "root table {root_va} translates to {pa}, but the root register is {hw}"
                ),
                Err(f) => writeln!(out, "root table {root_va} does not translate: {f}"),
            };
        }
        self.with_env(arch, |pt, env| pt.dump(env.arch, env.access, va, out))
    }

    /// Runs `f` with the engine environment of the current state: this
    /// state's access path, and the allocator.
    fn with_env<A: CpuOps, R>(
        &mut self,
        arch: &mut A,
        f: impl FnOnce(
            &mut PageTable<F>,
            &mut Env<'_, A, &mut dyn TableAccess<A>, Tracking<'_>>,
        ) -> Result<R, Error>,
    ) -> Result<R, Error> {
        self.with_parts(arch, |arch, mut acc, pt, alloc| {
            f(pt, &mut Env::new(arch, &mut acc, alloc))
        })
    }

    /// Runs `f` with this state's table-access path alone: for tables
    /// other than the hypervisor's own (a guest's stage 2, whose frames
    /// come from the guest's pool), and for reaching other frames the way
    /// table pages are reached (Xen's `map_domain_page`). Table maps count
    /// in this state's access statistics.
    pub fn with_access<A: CpuOps, R>(
        &mut self,
        arch: &mut A,
        f: impl FnOnce(&mut A, &mut dyn TableAccess<A>) -> Result<R, Error>,
    ) -> Result<R, Error> {
        self.with_parts(arch, |arch, acc, _, _| f(arch, acc))
    }

    /// This state's access path, the page table and the allocator.
    fn with_parts<A: CpuOps, R>(
        &mut self,
        arch: &mut A,
        f: impl FnOnce(
            &mut A,
            &mut dyn TableAccess<A>,
            &mut PageTable<F>,
            &mut Tracking<'_>,
        ) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let counts = &mut self.phases[idx(self.state)];
        let mut alloc = Tracking {
            inner: &mut self.alloc,
            pool: self.pool.as_mut().map(|p| &mut p.free),
            highest: &mut self.highest_table,
        };
        let cpu = arch.cpu();
        let mut early;
        let mut direct;
        let mut domain;
        let mut mapcache;
        let acc: &mut dyn TableAccess<A> = match &self.path {
            Path::Early => {
                early = EarlyAccess::new(self.image, &mut self.pmap, &mut counts.access);
                &mut early
            }
            Path::DirectMap(dm) => {
                direct = DirectMapAccess::new(*dm, &mut counts.access);
                &mut direct
            }
            Path::DomainPage(dp) => {
                let image = dp.image_writable.then_some(self.image);
                let dp = dp
                    .slots
                    .get(cpu)
                    .copied()
                    .flatten()
                    .ok_or(Error::TableAccess {
                        mfn: self.pt.root(),
                        err: AccessError::WrongPhase {
                            provider: "domain-page",
                            state: "CPU without slots",
                        },
                    })?;
                domain = DomainPageAccess::new(image, dp, &mut counts.access);
                &mut domain
            }
            Path::MapCache(pc) => {
                let mc = pc
                    .slots
                    .get(cpu)
                    .copied()
                    .flatten()
                    .ok_or(Error::TableAccess {
                        mfn: self.pt.root(),
                        err: AccessError::WrongPhase {
                            provider: "mapcache",
                            state: "CPU without slots",
                        },
                    })?;
                let image = pc.image_writable.then_some(self.image);
                mapcache = MapCacheAccess::new(image, mc, &mut counts.access);
                &mut mapcache
            }
        };
        f(arch, acc, &mut self.pt, &mut alloc)
    }

    /// Maps `mfn` at fixmap slot `slot` (Xen's `set_fixmap`), through the
    /// engine like any other update.
    pub fn set_fixmap<A: CpuOps>(
        &mut self,
        arch: &mut A,
        slot: usize,
        mfn: Mfn,
        attrs: Attrs,
    ) -> Result<(), Error> {
        let index = self.fixmap_sets;
        self.fixmap_sets += 1;
        if self.fail_fixmap_at == Some(index) {
            return Err(Error::TableAccess {
                mfn,
                err: AccessError::SlotsExhausted {
                    provider: "fixmap",
                    slots: 1,
                },
            });
        }
        let op = Op::Insert {
            pa: mfn.paddr(),
            attrs,
        };
        self.fixmap_update(arch, slot, op).map(|_| ())
    }

    /// Unmaps fixmap slot `slot` (Xen's `clear_fixmap`).
    pub fn clear_fixmap<A: CpuOps>(&mut self, arch: &mut A, slot: usize) -> Result<(), Error> {
        self.fixmap_update(arch, slot, Op::Remove).map(|_| ())
    }

    fn fixmap_update<A: CpuOps>(
        &mut self,
        arch: &mut A,
        slot: usize,
        op: Op,
    ) -> Result<UpdateReport, Error> {
        let va = fixmap_va(slot);
        match self.policy {
            AccessPolicy::Correct => self.update(arch, va, 1, op, MapFlags::PAGES),
            AccessPolicy::Xen2019Fixmap => {
                let base = F::LAYOUT.directmap.map(|r| r.start).unwrap_or(Vaddr(0));
                let mut acc = Xen2019DomainPage {
                    directmap: base,
                    stats_directmap: 0,
                };
                let r = self.pt.update(
                    &mut Env::new(arch, &mut acc, &mut self.alloc),
                    va,
                    1,
                    op,
                    MapFlags::PAGES,
                );
                self.phases[idx(self.state)].access.domain_page += acc.stats_directmap;
                r
            }
        }
    }

    /// Copies `dst.len()` bytes from physical address `pa` (any alignment,
    /// across pages) through the misc fixmap slot, write-combine (Xen's
    /// `copy_from_paddr`).
    pub fn copy_from_paddr<A: CpuOps>(
        &mut self,
        arch: &mut A,
        dst: &mut [u8],
        pa: Paddr,
    ) -> Result<(), Error> {
        let before = self.phases[idx(self.state)].access;
        let mut done = 0usize;
        while done < dst.len() {
            let at = Paddr(pa.0 + done as u64);
            let off = at.page_offset();
            let n = ((PAGE_SIZE - off) as usize).min(dst.len() - done);
            self.set_fixmap(arch, FIXMAP_MISC, at.mfn(), Attrs::WC)?;
            let read = arch.read_bytes(
                Vaddr(fixmap_va(FIXMAP_MISC).0 + off),
                &mut dst[done..done + n],
            );
            self.clear_fixmap(arch, FIXMAP_MISC)?;
            read?;
            done += n;
        }
        let after = self.phases[idx(self.state)].access;
        let rec = CopyRecord {
            pa,
            len: dst.len() as u64,
            state: self.state,
            access: after.since(&before),
        };
        self.last_copy = Some(rec);
        Ok(())
    }

    /// The physical address of a mapped hypervisor VA, by hardware
    /// translation (Xen's `virt_to_maddr`).
    pub fn virt_to_maddr<A: CpuOps>(arch: &mut A, va: Vaddr) -> Result<Paddr, Error> {
        Ok(arch.hw_translate(va, false)?.pa)
    }

    /// Enters [`SystemState::Boot`] on arm64: tables are reached through the
    /// direct map from now on.
    pub fn enter_boot_directmap(&mut self, dm: DirectMap) {
        self.path = Path::DirectMap(dm);
        self.state = SystemState::Boot;
    }

    /// Enters [`SystemState::Boot`] on arm32: tables outside the image are
    /// reached through CPU 0's domain-page slots from now on.
    pub fn enter_boot_domain_page(&mut self, cpu0: DomainPage, xenheap: LinearRange) {
        let mut slots = [None; MAX_CPUS];
        slots[0] = Some(cpu0);
        self.path = Path::DomainPage(DomainPaths {
            slots,
            image_writable: true,
        });
        self.xenheap = Some(xenheap);
        self.state = SystemState::Boot;
    }

    /// Records that CPU `cpu` runs on the root table `root` (arm32's
    /// per-CPU roots; the audit walks every root recorded here). `false`
    /// when `cpu` is beyond [`MAX_CPUS`].
    pub fn set_cpu_root(&mut self, cpu: usize, root: Mfn) -> bool {
        match self.roots.get_mut(cpu) {
            Some(slot) => {
                *slot = Some(root);
                true
            }
            None => false,
        }
    }

    /// The root table of each CPU that has one: (CPU, root).
    pub fn cpu_roots(&self) -> impl Iterator<Item = (usize, Mfn)> + '_ {
        self.roots
            .iter()
            .enumerate()
            .filter_map(|(cpu, r)| r.map(|r| (cpu, r)))
    }

    /// Gives CPU `cpu` its own domain-page slots (arm32).
    pub fn add_cpu_domain_page(&mut self, cpu: usize, dp: DomainPage) -> bool {
        match &mut self.path {
            Path::DomainPage(d) if cpu < MAX_CPUS => {
                d.slots[cpu] = Some(dp);
                true
            }
            _ => false,
        }
    }

    /// The domain-page slots of `cpu` (arm32).
    pub fn domain_page(&self, cpu: usize) -> Option<DomainPage> {
        match &self.path {
            Path::DomainPage(d) => d.slots.get(cpu).copied().flatten(),
            _ => None,
        }
    }

    /// Enters [`SystemState::Boot`] in the arm64 secret-free mode: every
    /// table outside the image is reached through the running CPU's
    /// mapcache slots from now on; CPU 0's are `cpu0`
    /// ([`Mm::build_mapcache`] made them).
    ///
    /// In the arm64 direct-map mode `directmap` is the direct map: it
    /// stays for other RAM, and table frames (from the table pool, which
    /// it does not map) are reached through the slots all the same.
    pub fn enter_boot_mapcache(&mut self, cpu0: MapCache, directmap: Option<DirectMap>) {
        let mut slots = [None; MAX_CPUS];
        slots[0] = Some(cpu0);
        self.path = Path::MapCache(PerCpu {
            slots,
            image_writable: true,
            shared_l0: [0; SHARED_L0_SLOTS],
            directmap,
        });
        self.state = SystemState::Boot;
    }

    /// Whether this is the secret-free mode (no direct map, per-CPU
    /// mapcache slots) — from Boot on.
    pub fn secret_free(&self) -> bool {
        matches!(
            self.path,
            Path::MapCache(PerCpu {
                directmap: None,
                ..
            })
        )
    }

    /// Whether tables are reached through per-CPU mapcache slots (each CPU
    /// on its own root): the secret-free mode, and the arm64 direct-map
    /// mode with its table pool — from Boot on.
    pub fn per_cpu_mapcache(&self) -> bool {
        matches!(self.path, Path::MapCache(_))
    }

    /// The mapcache slots of `cpu` (secret-free mode).
    pub fn mapcache(&self, cpu: usize) -> Option<MapCache> {
        match &self.path {
            Path::MapCache(pc) => pc.slots.get(cpu).copied().flatten(),
            _ => None,
        }
    }

    /// Whether the image's own tables are still reached (and writable)
    /// at their link address.
    pub fn image_tables_writable(&self) -> bool {
        match &self.path {
            Path::MapCache(pc) => pc.image_writable,
            Path::DomainPage(d) => d.image_writable,
            _ => true,
        }
    }

    /// Whether every table can be reached through per-CPU slots, so that
    /// the image's own tables can be sealed ([`Mm::seal_image_tables`]):
    /// arm64's mapcache (both modes) and arm32's domain-page slots.
    pub fn tables_in_slots(&self) -> bool {
        matches!(self.path, Path::MapCache(_) | Path::DomainPage(_))
    }

    /// Builds a CPU's mapcache slot tables through the current access path
    /// (PMAP for CPU 0 in early boot, CPU 0's slots for the others): a
    /// level-1, level-2 and level-3 table from the allocator, zeroed and
    /// linked, the level-3 table's last entry mapping itself. Returns the
    /// level-1 table, for the CPU's root's mapcache entry. On failure
    /// every frame taken is given back.
    pub fn build_mapcache<A: CpuOps>(&mut self, arch: &mut A) -> Result<Mfn, Error> {
        let frames = self.alloc_table_frames::<_, 3>(arch)?;
        let [l1, l2, l3] = frames;
        let r = self.with_access(arch, |arch, acc| {
            zero_tables(arch, acc, &frames)?;
            write_entry(arch, acc, l1, 0, Pte::table::<Arm64>(l2).0)?;
            write_entry(arch, acc, l2, 0, Pte::table::<Arm64>(l3).0)?;
            write_entry(
                arch,
                acc,
                l3,
                hvmm_xen::layout::MAPCACHE_SELF,
                MapCache::self_entry(l3),
            )
        });
        if let Err(e) = r {
            for f in frames {
                self.free_table_frame(f);
            }
            return Err(e);
        }
        Ok(l1)
    }

    /// arm32: builds a CPU's domain-page slot tables through the current
    /// access path (PMAP for CPU 0 in early boot, CPU 0's slots for the
    /// others) and links them into `root`: two level-2 tables for the
    /// domheap area and the window table, three frames from the table pool
    /// (outside the xenheap), zeroed. The window table maps the two level-2
    /// tables and itself; the second level-2 table's last entry links it
    /// ([`hvmm_xen::layout::DOMHEAP_WINDOW`]), so the CPU writes its slots
    /// through its own window and no other mapping of these tables exists.
    /// `root`'s domheap entries must be invalid (a new root, or CPU 0's
    /// before its first slot). On failure every frame taken is given back
    /// and `root` is as it was.
    pub fn build_domain_page<A: CpuOps>(
        &mut self,
        arch: &mut A,
        root: Mfn,
    ) -> Result<DomainPage, Error> {
        use hvmm::format::Arm32;
        use hvmm_xen::layout::{DOMHEAP_WINDOW, DOMHEAP_WINDOW_PAGES};
        let Some(domheap) = F::LAYOUT.domheap else {
            return Err(Error::TableAccess {
                mfn: root,
                err: AccessError::WrongPhase {
                    provider: "domain-page",
                    state: "a layout without a domheap area",
                },
            });
        };
        let frames = self.alloc_table_frames::<_, DOMHEAP_WINDOW_PAGES>(arch)?;
        let [l2a, l2b, window] = frames;
        let first = table_index(domheap.start.0, 1);
        let r = self.with_access(arch, |arch, acc| {
            zero_tables(arch, acc, &frames)?;
            for (i, e) in DomainPage::window_entries([l2a, l2b], window)
                .into_iter()
                .enumerate()
            {
                write_entry(arch, acc, window, i, e)?;
            }
            let last = DOMHEAP_WINDOW % hvmm::format::ENTRIES;
            write_entry(arch, acc, l2b, last, DomainPage::window_link(window))?;
            // Invalid before: linking needs no invalidation.
            write_entry(arch, acc, root, first, Pte::table::<Arm32>(l2a).0)?;
            write_entry(arch, acc, root, first + 1, Pte::table::<Arm32>(l2b).0)
        });
        if let Err(e) = r {
            // Unlink what was linked (the root is the caller's).
            let _ = self.with_access(arch, |arch, acc| {
                write_entry(arch, acc, root, first, 0)?;
                write_entry(arch, acc, root, first + 1, 0)
            });
            arch.tlb_flush_all();
            arch.tlb_sync();
            for f in frames {
                self.free_table_frame(f);
            }
            return Err(e);
        }
        arch.isb();
        Ok(DomainPage::window(domheap.start))
    }

    /// arm32: gives CPU `cpu` its own root — CPU 0's entries for the
    /// shared first 2 GiB, and its own domain-page slots
    /// ([`Mm::build_domain_page`]) — built through the running CPU's
    /// slots, and returns it for the CPU to switch to. On failure every
    /// frame taken is given back.
    fn add_cpu_root_domain_page<A: CpuOps>(
        &mut self,
        arch: &mut A,
        cpu: usize,
    ) -> Result<Paddr, Error> {
        let [root] = self.alloc_table_frames::<_, 1>(arch)?;
        let root0 = self.pt.root();
        let r = self.with_access(arch, |arch, acc| {
            zero_tables(arch, acc, &[root])?;
            for i in 0..2 {
                let e = read_entry(arch, acc, root0, i)?;
                write_entry(arch, acc, root, i, e)?;
            }
            Ok(())
        });
        let dp = match r.and_then(|()| self.build_domain_page(arch, root)) {
            Ok(dp) => dp,
            Err(e) => {
                self.free_table_frame(root);
                return Err(e);
            }
        };
        self.add_cpu_domain_page(cpu, dp);
        self.set_cpu_root(cpu, root);
        Ok(root.paddr())
    }

    /// Links the mapcache tables `l1` ([`Mm::build_mapcache`]) into CPU
    /// 0's root (an invalid entry made valid: nothing to invalidate) and
    /// returns CPU 0's slots, for [`Mm::enter_boot_mapcache`].
    pub fn link_cpu0_mapcache<A: CpuOps>(
        &mut self,
        arch: &mut A,
        l1: Mfn,
    ) -> Result<MapCache, Error> {
        let root = self.pt.root();
        self.with_access(arch, |arch, acc| {
            write_entry(arch, acc, root, MAPCACHE_L0_SLOT, Pte::table::<Arm64>(l1).0)
        })?;
        arch.isb();
        Ok(MapCache::new(mapcache_base::<F>()))
    }

    /// Gives CPU `cpu` its own root, built through the running CPU's slots,
    /// and returns it for the CPU to switch to: on arm64 (mapcache slots)
    /// CPU 0's level-0 entries and the CPU's own mapcache
    /// ([`Mm::build_mapcache`]); on arm32 CPU 0's entries for the first 2
    /// GiB and the CPU's own domain-page slots ([`Mm::build_domain_page`]).
    /// On failure every frame taken is given back.
    pub fn add_cpu_root<A: CpuOps>(&mut self, arch: &mut A, cpu: usize) -> Result<Paddr, Error> {
        if matches!(self.path, Path::DomainPage(_)) && cpu > 0 && cpu < MAX_CPUS {
            return self.add_cpu_root_domain_page(arch, cpu);
        }
        if !self.per_cpu_mapcache() {
            return Err(Error::TableAccess {
                mfn: self.pt.root(),
                err: AccessError::WrongPhase {
                    provider: "mapcache",
                    state: "tables not reached through mapcache slots",
                },
            });
        }
        if cpu == 0 || cpu >= MAX_CPUS {
            return Err(Error::TableAccess {
                mfn: self.pt.root(),
                err: AccessError::WrongPhase {
                    provider: "mapcache",
                    state: "no such secondary CPU",
                },
            });
        }
        let l1 = self.build_mapcache(arch)?;
        let root = match self.alloc_table_frame() {
            Ok(m) => m,
            Err(_) => {
                self.free_mapcache(arch, l1);
                return Err(Error::OutOfMemory {
                    needed: 1,
                    available: self.alloc.free_pages() as usize,
                });
            }
        };
        let root0 = self.pt.root();
        let mut shared = [0u64; SHARED_L0_SLOTS];
        let r = self.with_access(arch, |arch, acc| {
            let src = acc
                .map_table(arch, root0)
                .map_err(|err| Error::TableAccess { mfn: root0, err })?;
            let dst = match acc.map_table(arch, root) {
                Ok(v) => v,
                Err(err) => {
                    acc.unmap_table(arch, root0, src);
                    return Err(Error::TableAccess { mfn: root, err });
                }
            };
            let copy = (|| -> Result<(), Error> {
                arch.zero_page(dst)?;
                for i in 0..hvmm::format::ENTRIES {
                    let e = if i == MAPCACHE_L0_SLOT {
                        Pte::table::<Arm64>(l1).0
                    } else {
                        arch.read_pte(Vaddr(src.0 + i as u64 * 8))?
                    };
                    if let Some(s) = shared.get_mut(i) {
                        *s = e;
                    }
                    if e != 0 {
                        arch.write_pte(Vaddr(dst.0 + i as u64 * 8), e)?;
                    }
                }
                Ok(())
            })();
            acc.unmap_table(arch, root, dst);
            acc.unmap_table(arch, root0, src);
            copy
        });
        if let Err(e) = r {
            self.free_table_frame(root);
            self.free_mapcache(arch, l1);
            return Err(e);
        }
        if let Path::MapCache(p) = &mut self.path {
            p.slots[cpu] = Some(MapCache::new(mapcache_base::<F>()));
            // Every root holds CPU 0's entries as of now.
            p.shared_l0 = shared;
        }
        // Kept in step from now on (and walked by the audit), whether or
        // not its CPU comes up.
        self.set_cpu_root(cpu, root);
        Ok(root.paddr())
    }

    /// Gives back the frames of a mapcache built by [`Mm::build_mapcache`]
    /// and not linked anywhere.
    fn free_mapcache<A: CpuOps>(&mut self, arch: &mut A, l1: Mfn) {
        let chain = self.with_access(arch, |arch, acc| {
            let l2 = Pte(read_entry(arch, acc, l1, 0)?).table_mfn::<Arm64>();
            let l3 = Pte(read_entry(arch, acc, l2, 0)?).table_mfn::<Arm64>();
            Ok([l1, l2, l3])
        });
        if let Ok(frames) = chain {
            for f in frames {
                self.free_table_frame(f);
            }
        }
    }

    /// At the end of the boot: the image's own tables (`pages` pages from
    /// `first`, its tables region) become read-only in the image mapping,
    /// and from now on they too are reached through the per-CPU slots
    /// (arm64's mapcache, arm32's domain-page slots) — so that no table
    /// page is writable through a permanent mapping. Their own entries are
    /// changed through the slots (reaching them through the mapping being
    /// changed would fault half-way). Nothing changes on failure.
    pub fn seal_image_tables<A: CpuOps>(
        &mut self,
        arch: &mut A,
        first: Vaddr,
        pages: u64,
    ) -> Result<UpdateReport, Error> {
        let set = |mm: &mut Self, on: bool| match &mut mm.path {
            Path::MapCache(pc) => pc.image_writable = on,
            Path::DomainPage(d) => d.image_writable = on,
            _ => {}
        };
        if !self.tables_in_slots() {
            return Err(Error::TableAccess {
                mfn: self.pt.root(),
                err: AccessError::WrongPhase {
                    provider: self.path_name(),
                    state: "tables not reached through per-CPU slots",
                },
            });
        }
        set(self, false);
        let r = self.update(
            arch,
            first,
            pages,
            Op::Modify { attrs: Attrs::RO },
            MapFlags::PAGES,
        );
        if r.is_err() {
            set(self, true);
        }
        r
    }

    /// The arm32 xenheap: always mapped, linearly (from Boot on).
    pub fn xenheap(&self) -> Option<LinearRange> {
        self.xenheap
    }

    /// The direct map (arm64, from Boot on).
    pub fn directmap(&self) -> Option<DirectMap> {
        match &self.path {
            Path::DirectMap(dm) => Some(*dm),
            Path::MapCache(pc) => pc.directmap,
            _ => None,
        }
    }

    /// Hands the boot allocator over to the runtime page allocator.
    pub fn end_boot_allocator(&mut self) {
        self.boot_allocator_ended = true;
    }

    /// Enters [`SystemState::SmpBoot`]: other CPUs may run, PMAP retires.
    pub fn enter_smp_boot(&mut self) {
        self.pmap.retire();
        self.state = SystemState::SmpBoot;
    }

    /// Enters [`SystemState::Active`].
    pub fn enter_active(&mut self) {
        self.state = SystemState::Active;
    }

    /// Makes PMAP unusable (fault injection and tests of the SmpBoot rule).
    pub fn retire_pmap(&mut self) {
        self.pmap.retire();
    }
}

/// The mapcache region's start (the same VA in every CPU's root).
fn mapcache_base<F: HasLayout>() -> Vaddr {
    F::LAYOUT.mapcache.map_or(Vaddr(0), |r| r.start)
}

/// Reads entry `i` of the table `table` through `acc`.
fn read_entry<A: CpuOps>(
    arch: &mut A,
    acc: &mut dyn TableAccess<A>,
    table: Mfn,
    i: usize,
) -> Result<u64, Error> {
    let va = acc
        .map_table(arch, table)
        .map_err(|err| Error::TableAccess { mfn: table, err })?;
    let r = arch.read_pte(Vaddr(va.0 + i as u64 * 8));
    acc.unmap_table(arch, table, va);
    Ok(r?)
}

/// Writes entry `i` of the table `table` through `acc`.
fn write_entry<A: CpuOps>(
    arch: &mut A,
    acc: &mut dyn TableAccess<A>,
    table: Mfn,
    i: usize,
    val: u64,
) -> Result<(), Error> {
    let va = acc
        .map_table(arch, table)
        .map_err(|err| Error::TableAccess { mfn: table, err })?;
    let r = arch.write_pte(Vaddr(va.0 + i as u64 * 8), val);
    acc.unmap_table(arch, table, va);
    Ok(r?)
}

/// A run of `pages` free frames aligned to `align` frames outside the
/// xenheap `xh` (and below the allocator's table limit): arm32's
/// table-pool chunks and guest stage-2 pools, which no permanent mapping
/// may reach. The highest such run, as the allocator's own order: above
/// the xenheap first, then below it.
pub fn alloc_outside(
    alloc: &mut FrameRanges,
    pages: u64,
    align: u64,
    xh: LinearRange,
) -> Result<Mfn, hvmm_xen::boot_alloc::BootAllocError> {
    let limit = alloc.table_limit.unwrap_or(Mfn(u64::MAX));
    let (xs, xe) = (xh.pa.mfn(), Paddr(xh.pa.0 + xh.size).mfn());
    alloc
        .alloc_below(pages, align, xe, limit)
        .or_else(|_| alloc.alloc_below(pages, align, Mfn(0), Mfn(xs.0.min(limit.0))))
}

/// Zeroes the table frames `frames` through `acc`.
fn zero_tables<A: CpuOps>(
    arch: &mut A,
    acc: &mut dyn TableAccess<A>,
    frames: &[Mfn],
) -> Result<(), Error> {
    for &f in frames {
        let va = acc
            .map_table(arch, f)
            .map_err(|err| Error::TableAccess { mfn: f, err })?;
        let z = arch.zero_page(va);
        acc.unmap_table(arch, f, va);
        z?;
    }
    Ok(())
}
