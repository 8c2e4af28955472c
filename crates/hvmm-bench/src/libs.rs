//! The libraries under test, behind one interface, each configured for the
//! same work: 4 KiB granule, 48-bit VA from level 0, EL2 stage-1 attributes
//! (normal write-back memory, read-write, execute-never, AF set), tables in
//! prefaulted host memory, no TLB instructions.

use crate::pool::{FramePool, FRAME};
use crate::xen::{XenOp, XenPt};
use hvmm::host::HostMemory;
use hvmm::{Arm64, Attrs, MapFlags, Op, PageTable, Pte, Vaddr};
use std::cell::{Cell, RefCell};
use std::ptr::NonNull;

/// A row of the table (used for "cannot do this" answers).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Row {
    /// Map 1 GiB as 4 KiB pages into an empty table.
    Map4k,
    /// Map 1 GiB, 2 MiB aligned, blocks allowed.
    MapBlocks,
    /// 262 144 one-page map calls.
    MapSingle,
    /// Make the 1 GiB read-only.
    ModifyRo,
    /// Change one 4 KiB page inside a 2 MiB block.
    Split,
    /// Translate every page of the 1 GiB (each library's fastest way).
    Translate,
    /// Translate every page with one point lookup per page.
    TranslatePoint,
    /// Unmap the 1 GiB.
    Unmap,
    /// Random single-page map/unmap over 512 GiB.
    Sparse,
}

/// One page-table library driven through the same operations.
pub trait Library: Sized {
    /// Name in the table.
    const NAME: &'static str;
    /// A fresh, empty page table whose allocator holds `frames` table pages.
    fn new(frames: usize) -> Self;
    /// Why this library cannot do `row` (`None` if it can).
    fn cannot(row: Row) -> Option<&'static str> {
        let _ = row;
        None
    }
    /// How this library translates a range (shown in the notes).
    const TRANSLATE_HOW: &'static str;
    /// Maps `pages` pages at `va` to `pa` in one call, read-write.
    fn map(&mut self, va: u64, pa: u64, pages: u64, blocks: bool) -> Result<(), String>;
    /// Maps one page (one call).
    #[inline(always)]
    fn map_page(&mut self, va: u64, pa: u64) -> Result<(), String> {
        self.map(va, pa, 1, false)
    }
    /// Makes `pages` pages at `va` read-only.
    fn make_ro(&mut self, va: u64, pages: u64) -> Result<(), String>;
    /// Makes the one page at `va`, inside a block, read-only.
    #[inline(always)]
    fn split(&mut self, va: u64) -> Result<(), String> {
        self.make_ro(va, 1)
    }
    /// Translates every page of the range; returns the sum over pages of `pa >> 12`.
    fn translate_range(&mut self, va: u64, pages: u64) -> u64;
    /// PA and writability of `va`, by a point lookup.
    fn lookup(&mut self, va: u64) -> Option<(u64, bool)>;
    /// Unmaps `pages` pages at `va`; returns the table pages freed.
    fn unmap(&mut self, va: u64, pages: u64) -> Result<u64, String>;
    /// Unmaps one page (one call).
    #[inline(always)]
    fn unmap_page(&mut self, va: u64) -> Result<(), String> {
        self.unmap(va, 1).map(|_| ())
    }
    /// Table pages currently allocated (root included).
    fn tables_in_use(&self) -> usize;
}

/// Error formatting for the glue below, kept out of line (and out of the
/// timed loops) for every library alike.
#[cold]
#[inline(never)]
fn err_string<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

#[cold]
#[inline(never)]
fn err_debug<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

#[cold]
#[inline(never)]
fn err_xen(e: crate::xen::XenError) -> String {
    e.0
}

/// Sum of `pa >> 12` over the `bytes / 4096` pages starting at `pa`.
#[inline]
pub fn page_sum(pa: u64, bytes: u64) -> u64 {
    let n = bytes / FRAME as u64;
    let first = pa >> 12;
    n.wrapping_mul(first)
        .wrapping_add(n.wrapping_mul(n.wrapping_sub(1)) / 2)
}

// ---------------------------------------------------------------- hvmm

/// hvmm's engine on the host back end.
pub struct Hvmm {
    mem: HostMemory,
    pt: PageTable<Arm64>,
}

/// First PA of the host back end's frame pool.
const HOST_POOL_PA: u64 = 0x4000_0000;

fn prefaulted_host_memory(frames: usize) -> HostMemory {
    let mut mem = HostMemory::new(frames);
    for i in 0..frames as u64 {
        hvmm::Arch::zero_page(&mut mem.arch, Vaddr(HOST_POOL_PA + i * FRAME as u64))
            .expect("prefault");
    }
    mem
}

impl Library for Hvmm {
    const NAME: &'static str = "hvmm";
    const TRANSLATE_HOW: &'static str = "range walk (`for_each_leaf_with`)";
    fn new(frames: usize) -> Self {
        let mut mem = prefaulted_host_memory(frames + 1);
        let pt = PageTable::create(&mut mem.env()).expect("root");
        Hvmm { mem, pt }
    }
    fn cannot(row: Row) -> Option<&'static str> {
        match row {
            Row::Split => Some("refuses (block in the way, as Xen: no live split)"),
            _ => None,
        }
    }
    #[inline(always)]
    fn map(&mut self, va: u64, pa: u64, pages: u64, blocks: bool) -> Result<(), String> {
        let flags = if blocks {
            MapFlags::BLOCKS
        } else {
            MapFlags::PAGES
        };
        let op = Op::Insert {
            pa: hvmm::Paddr(pa),
            attrs: Attrs::RW,
        };
        self.pt
            .update(&mut self.mem.env(), Vaddr(va), pages, op, flags)
            .map(|_| ())
            .map_err(err_string)
    }
    #[inline(always)]
    fn make_ro(&mut self, va: u64, pages: u64) -> Result<(), String> {
        let op = Op::Modify { attrs: Attrs::RO };
        self.pt
            .update(&mut self.mem.env(), Vaddr(va), pages, op, MapFlags::PAGES)
            .map(|_| ())
            .map_err(err_string)
    }
    #[inline(always)]
    fn translate_range(&mut self, va: u64, pages: u64) -> u64 {
        let mut sum = 0u64;
        self.pt
            .for_each_leaf_with(
                &mut self.mem.arch,
                &mut self.mem.access,
                Vaddr(va),
                pages,
                |_, len, leaf| {
                    sum = sum.wrapping_add(page_sum(leaf.pa.0, len));
                },
            )
            .expect("for_each_leaf_with");
        sum
    }
    #[inline(always)]
    fn lookup(&mut self, va: u64) -> Option<(u64, bool)> {
        let leaf = self
            .pt
            .lookup(&mut self.mem.arch, &mut self.mem.access, Vaddr(va))
            .ok()??;
        Some((leaf.pa.0, leaf.pte.0 & Pte::RO == 0))
    }
    #[inline(always)]
    fn unmap(&mut self, va: u64, pages: u64) -> Result<u64, String> {
        self.pt
            .update(
                &mut self.mem.env(),
                Vaddr(va),
                pages,
                Op::Remove,
                MapFlags::PAGES,
            )
            .map(|r| r.tables_freed)
            .map_err(err_string)
    }
    #[inline(always)]
    fn tables_in_use(&self) -> usize {
        self.mem.frames.in_use
    }
}

// ------------------------------------------------------ Xen 2019 style

/// The 2019 Xen algorithm ([`crate::xen`]) on the same host back end as hvmm
/// (identity table access that counts maps).
pub struct Xen2019 {
    mem: HostMemory,
    pt: XenPt<Arm64>,
}

impl Xen2019 {
    /// Table maps made so far.
    pub fn table_maps(&self) -> u64 {
        self.pt.stats.table_maps
    }
}

impl Library for Xen2019 {
    const NAME: &'static str = "xen-2019";
    const TRANSLATE_HOW: &'static str = "walk from the root per page";
    fn new(frames: usize) -> Self {
        let mut mem = prefaulted_host_memory(frames + 1);
        let root = mem.alloc_root().expect("root");
        Xen2019 {
            mem,
            pt: XenPt::new(root),
        }
    }
    fn cannot(row: Row) -> Option<&'static str> {
        match row {
            Row::MapBlocks => Some("4 KiB pages only"),
            Row::Split => Some("4 KiB pages only (refuses blocks)"),
            _ => None,
        }
    }
    #[inline(always)]
    fn map(&mut self, va: u64, pa: u64, pages: u64, blocks: bool) -> Result<(), String> {
        if blocks {
            return Err("4 KiB pages only".into());
        }
        let m = &mut self.mem;
        self.pt
            .update(
                &mut m.arch,
                &mut m.access,
                &mut m.frames,
                va,
                pages,
                XenOp::Insert {
                    pa,
                    attrs: Attrs::RW,
                },
            )
            .map_err(err_xen)
    }
    #[inline(always)]
    fn make_ro(&mut self, va: u64, pages: u64) -> Result<(), String> {
        let m = &mut self.mem;
        self.pt
            .update(
                &mut m.arch,
                &mut m.access,
                &mut m.frames,
                va,
                pages,
                XenOp::Modify { attrs: Attrs::RO },
            )
            .map_err(err_xen)
    }
    #[inline(always)]
    fn translate_range(&mut self, va: u64, pages: u64) -> u64 {
        let mut sum = 0u64;
        for i in 0..pages {
            if let Some((pa, _)) = self.lookup(va + i * FRAME as u64) {
                sum = sum.wrapping_add(pa >> 12);
            }
        }
        sum
    }
    #[inline(always)]
    fn lookup(&mut self, va: u64) -> Option<(u64, bool)> {
        let m = &mut self.mem;
        self.pt.lookup(&mut m.arch, &mut m.access, va)
    }
    #[inline(always)]
    fn unmap(&mut self, va: u64, pages: u64) -> Result<u64, String> {
        let m = &mut self.mem;
        self.pt
            .update(
                &mut m.arch,
                &mut m.access,
                &mut m.frames,
                va,
                pages,
                XenOp::Remove,
            )
            .map(|()| 0)
            .map_err(err_xen)
    }
    #[inline(always)]
    fn tables_in_use(&self) -> usize {
        self.mem.frames.in_use
    }
}

// ------------------------------------------------------ aarch64-paging

use aarch64_paging::descriptor::{El23Attributes, PhysicalAddress};
use aarch64_paging::paging::{Constraints, El2, MemoryRegion, PageTable as ApTable, Translation};
use aarch64_paging::Mapping;

/// aarch64-paging's `Translation` over a [`FramePool`]: PA = host address.
pub struct ApTranslation {
    pool: FramePool,
}

impl Translation<El23Attributes> for ApTranslation {
    fn allocate_table(&mut self) -> (NonNull<ApTable<El23Attributes>>, PhysicalAddress) {
        let a = self
            .pool
            .alloc_zeroed()
            .expect("aarch64-paging pool exhausted");
        let p = NonNull::new(a as *mut ApTable<El23Attributes>).expect("non-null frame");
        (p, PhysicalAddress(a))
    }
    unsafe fn deallocate_table(&mut self, page_table: NonNull<ApTable<El23Attributes>>) {
        self.pool.free(page_table.as_ptr() as usize);
    }
    #[inline]
    fn physical_to_virtual(&self, pa: PhysicalAddress) -> NonNull<ApTable<El23Attributes>> {
        NonNull::new(pa.0 as *mut ApTable<El23Attributes>).expect("non-null table")
    }
}

/// Read-write normal memory at EL2: valid, AttrIndx 7, inner shareable, AF,
/// AP[1] (RES1 at EL2), execute-never — hvmm's `Attrs::RW` bit for bit.
const AP_RW: El23Attributes = El23Attributes::VALID
    .union(El23Attributes::ATTRIBUTE_INDEX_7)
    .union(El23Attributes::INNER_SHAREABLE)
    .union(El23Attributes::ACCESSED)
    .union(El23Attributes::USER_RES1)
    .union(El23Attributes::XN);

/// aarch64-paging 0.12: a `Mapping` in the EL2 regime, root level 0, never
/// activated (so it performs no TLB maintenance; on x86 its barriers and
/// TLBIs are compiled out anyway).
pub struct AarchPaging {
    map: Mapping<ApTranslation, El2>,
}

fn ap_ro(
    _: &MemoryRegion,
    d: &mut aarch64_paging::descriptor::UpdatableDescriptor<El23Attributes>,
) -> Result<(), ()> {
    if d.is_table() || !d.flags().contains(El23Attributes::VALID) {
        return Ok(());
    }
    d.modify_flags(El23Attributes::READ_ONLY, El23Attributes::empty())
}

impl Library for AarchPaging {
    const NAME: &'static str = "aarch64-paging";
    const TRANSLATE_HOW: &'static str = "range walk (`walk_range`)";
    fn new(frames: usize) -> Self {
        let t = ApTranslation {
            pool: FramePool::new(frames + 1),
        };
        AarchPaging {
            map: Mapping::new(t, 0, El2),
        }
    }
    #[inline(always)]
    fn map(&mut self, va: u64, pa: u64, pages: u64, blocks: bool) -> Result<(), String> {
        let c = if blocks {
            Constraints::NO_CONTIGUOUS_HINT
        } else {
            Constraints::NO_BLOCK_MAPPINGS | Constraints::NO_CONTIGUOUS_HINT
        };
        let r = MemoryRegion::new(va as usize, (va + pages * FRAME as u64) as usize);
        self.map
            .map_range(&r, PhysicalAddress(pa as usize), AP_RW, c)
            .map_err(err_string)
    }
    #[inline(always)]
    fn make_ro(&mut self, va: u64, pages: u64) -> Result<(), String> {
        let r = MemoryRegion::new(va as usize, (va + pages * FRAME as u64) as usize);
        self.map.modify_range(&r, &ap_ro).map_err(err_string)
    }
    #[inline(always)]
    fn translate_range(&mut self, va: u64, pages: u64) -> u64 {
        let r = MemoryRegion::new(va as usize, (va + pages * FRAME as u64) as usize);
        let mut sum = 0u64;
        self.map
            .walk_range(&r, &mut |mr, d, level| {
                if d.is_valid() {
                    let gran = FRAME << ((3 - level) * 9);
                    let pa = d.output_address().0 + (mr.start().0 & (gran - 1));
                    sum = sum.wrapping_add(page_sum(pa as u64, mr.len() as u64));
                }
                Ok(())
            })
            .expect("walk_range");
        sum
    }
    #[inline(always)]
    fn lookup(&mut self, va: u64) -> Option<(u64, bool)> {
        let r = MemoryRegion::new(va as usize, va as usize + 1);
        let mut out = None;
        self.map
            .walk_range(&r, &mut |_, d, level| {
                if d.is_valid() {
                    let gran = FRAME << ((3 - level) * 9);
                    let pa = d.output_address().0 + (va as usize & (gran - 1));
                    out = Some((pa as u64, !d.flags().contains(El23Attributes::READ_ONLY)));
                }
                Ok(())
            })
            .ok()?;
        out
    }
    #[inline(always)]
    fn unmap(&mut self, va: u64, pages: u64) -> Result<u64, String> {
        let before = self.map.translation().pool.freed;
        let r = MemoryRegion::new(va as usize, (va + pages * FRAME as u64) as usize);
        self.map
            .map_range(
                &r,
                PhysicalAddress(0),
                El23Attributes::empty(),
                Constraints::empty(),
            )
            .map_err(err_string)?;
        Ok(self.map.translation().pool.freed - before)
    }
    #[inline(always)]
    fn tables_in_use(&self) -> usize {
        self.map.translation().pool.in_use()
    }
}

// ------------------------------------------------- page_table_multiarch

use memory_addr::{PhysAddr, VirtAddr};
use page_table_multiarch::{
    GenericPTE, MappingFlags, PageSize, PageTable64, PagingHandler, PagingMetaData,
};

/// AArch64 VMSAv8-64 descriptors for page_table_multiarch.
///
/// `page_table_entry::aarch64::A64PTE` is compiled only when the target is
/// aarch64, so this is a transcription of it with its `arm-el2` feature
/// (EL2: no PXN/USER, UXN is XN), same bits, same operations.
#[derive(Clone, Copy, Debug)]
#[repr(transparent)]
pub struct A64El2Pte(u64);

impl A64El2Pte {
    const VALID: u64 = 1 << 0;
    const NON_BLOCK: u64 = 1 << 1;
    const AP_RO: u64 = 1 << 7;
    const INNER: u64 = 1 << 8;
    const SHAREABLE: u64 = 1 << 9;
    const AF: u64 = 1 << 10;
    const UXN: u64 = 1 << 54;
    const ATTR_MASK: u64 = 0b111 << 2;
    const PHYS_ADDR_MASK: u64 = 0x0000_ffff_ffff_f000;
    /// Every attribute bit the upstream bitflags type knows (for `from_bits_truncate`).
    const KNOWN: u64 = 0b1111_1111_1111 | (0b111 << 52) | (0b11111 << 59);

    fn attr_from(flags: MappingFlags) -> u64 {
        if flags.is_empty() {
            return 0;
        }
        let mut attr = if flags.contains(MappingFlags::DEVICE) {
            0
        } else if flags.contains(MappingFlags::UNCACHED) {
            (2 << 2) | Self::INNER | Self::SHAREABLE
        } else {
            (1 << 2) | Self::INNER | Self::SHAREABLE
        };
        if flags.contains(MappingFlags::READ) {
            attr |= Self::VALID;
        }
        if !flags.contains(MappingFlags::WRITE) {
            attr |= Self::AP_RO;
        }
        if !flags.contains(MappingFlags::EXECUTE) {
            attr |= Self::UXN;
        }
        attr
    }
}

impl GenericPTE for A64El2Pte {
    #[inline]
    fn new_page(paddr: PhysAddr, flags: MappingFlags, is_huge: bool) -> Self {
        let mut attr = Self::attr_from(flags) | Self::AF;
        if !is_huge {
            attr |= Self::NON_BLOCK;
        }
        Self(attr | (paddr.as_usize() as u64 & Self::PHYS_ADDR_MASK))
    }
    #[inline]
    fn new_table(paddr: PhysAddr) -> Self {
        Self(Self::NON_BLOCK | Self::VALID | (paddr.as_usize() as u64 & Self::PHYS_ADDR_MASK))
    }
    #[inline]
    fn paddr(&self) -> PhysAddr {
        PhysAddr::from((self.0 & Self::PHYS_ADDR_MASK) as usize)
    }
    fn flags(&self) -> MappingFlags {
        let attr = self.0 & Self::KNOWN;
        if attr & Self::VALID == 0 {
            return MappingFlags::empty();
        }
        let mut flags = MappingFlags::READ;
        if attr & Self::AP_RO == 0 {
            flags |= MappingFlags::WRITE;
        }
        if attr & Self::UXN == 0 {
            flags |= MappingFlags::EXECUTE;
        }
        match (attr & Self::ATTR_MASK) >> 2 {
            0 => flags |= MappingFlags::DEVICE,
            2 => flags |= MappingFlags::UNCACHED,
            _ => {}
        }
        flags
    }
    #[inline]
    fn set_paddr(&mut self, paddr: PhysAddr) {
        self.0 = (self.0 & !Self::PHYS_ADDR_MASK) | (paddr.as_usize() as u64 & Self::PHYS_ADDR_MASK)
    }
    #[inline]
    fn set_flags(&mut self, flags: MappingFlags, is_huge: bool) {
        let mut attr = Self::attr_from(flags) | Self::AF;
        if !is_huge {
            attr |= Self::NON_BLOCK;
        }
        self.0 = (self.0 & Self::PHYS_ADDR_MASK) | attr;
    }
    #[inline]
    fn bits(self) -> usize {
        self.0 as usize
    }
    #[inline]
    fn is_unused(&self) -> bool {
        self.0 == 0
    }
    #[inline]
    fn is_present(&self) -> bool {
        self.0 & Self::VALID != 0
    }
    #[inline]
    fn is_huge(&self) -> bool {
        self.0 & Self::NON_BLOCK == 0
    }
    #[inline]
    fn clear(&mut self) {
        self.0 = 0
    }
}

/// page_table_multiarch's AArch64 metadata with a no-op TLB flush (upstream's
/// `A64PagingMetaData` is aarch64-only and runs `tlbi vaae1is`; its cursors
/// flush only on `target_os = "none"` anyway).
pub struct A64El2Meta;

impl PagingMetaData for A64El2Meta {
    const LEVELS: usize = 4;
    const PA_MAX_BITS: usize = 48;
    const VA_MAX_BITS: usize = 48;
    type VirtAddr = VirtAddr;
    fn vaddr_is_valid(vaddr: usize) -> bool {
        let top = vaddr >> Self::VA_MAX_BITS;
        top == 0 || top == 0xffff
    }
    fn flush_tlb(_vaddr: Option<VirtAddr>) {}
}

thread_local! {
    static PTM_POOL: RefCell<Option<FramePool>> = const { RefCell::new(None) };
}

/// page_table_multiarch's `PagingHandler`: a thread-local [`FramePool`]
/// (its handler has no `self`), PA = host address.
pub struct PtmHandler;

impl PagingHandler for PtmHandler {
    fn alloc_frames(num: usize, _align: usize) -> Option<PhysAddr> {
        assert_eq!(num, 1, "page tables are single frames");
        PTM_POOL.with_borrow_mut(|p| p.as_mut()?.alloc().map(PhysAddr::from))
    }
    fn dealloc_frames(paddr: PhysAddr, _num: usize) {
        PTM_POOL.with_borrow_mut(|p| {
            if let Some(p) = p.as_mut() {
                p.free(paddr.as_usize())
            }
        })
    }
    #[inline]
    fn phys_to_virt(paddr: PhysAddr) -> VirtAddr {
        VirtAddr::from(paddr.as_usize())
    }
}

/// page_table_multiarch 0.6: `PageTable64` with AArch64 descriptors.
pub struct Ptm {
    pt: Option<PageTable64<A64El2Meta, A64El2Pte, PtmHandler>>,
}

const PTM_RW: MappingFlags = MappingFlags::READ.union(MappingFlags::WRITE);

impl Ptm {
    fn pt(&mut self) -> &mut PageTable64<A64El2Meta, A64El2Pte, PtmHandler> {
        self.pt.as_mut().expect("table")
    }
}

impl Drop for Ptm {
    fn drop(&mut self) {
        drop(self.pt.take());
        PTM_POOL.with_borrow_mut(|p| *p = None);
    }
}

impl Library for Ptm {
    const NAME: &'static str = "page_table_multiarch";
    const TRANSLATE_HOW: &'static str = "whole-table `walk` (it has no range walk)";
    fn new(frames: usize) -> Self {
        PTM_POOL.with_borrow_mut(|p| *p = Some(FramePool::new(frames + 1)));
        Ptm {
            pt: Some(PageTable64::try_new().expect("root")),
        }
    }
    fn cannot(row: Row) -> Option<&'static str> {
        match row {
            Row::Split => Some("no split: `protect` changes the whole 2 MiB block"),
            _ => None,
        }
    }
    #[inline(always)]
    fn map(&mut self, va: u64, pa: u64, pages: u64, blocks: bool) -> Result<(), String> {
        self.pt()
            .cursor()
            .map_region(
                VirtAddr::from(va as usize),
                |v: VirtAddr| PhysAddr::from(v.as_usize() - va as usize + pa as usize),
                (pages * FRAME as u64) as usize,
                PTM_RW,
                blocks,
            )
            .map_err(err_debug)
    }
    #[inline(always)]
    fn map_page(&mut self, va: u64, pa: u64) -> Result<(), String> {
        self.pt()
            .cursor()
            .map(
                VirtAddr::from(va as usize),
                PhysAddr::from(pa as usize),
                PageSize::Size4K,
                PTM_RW,
            )
            .map_err(err_debug)
    }
    #[inline(always)]
    fn make_ro(&mut self, va: u64, pages: u64) -> Result<(), String> {
        self.pt()
            .cursor()
            .protect_region(
                VirtAddr::from(va as usize),
                (pages * FRAME as u64) as usize,
                MappingFlags::READ,
            )
            .map_err(err_debug)
    }
    #[inline(always)]
    fn translate_range(&mut self, va: u64, pages: u64) -> u64 {
        let end = va + pages * FRAME as u64;
        let sum = Cell::new(0u64);
        let f = |level: usize, _i: usize, v: VirtAddr, e: &A64El2Pte| {
            let v = v.as_usize() as u64;
            if (level == 3 || e.is_huge()) && v >= va && v < end {
                let size = (FRAME as u64) << ((3 - level) * 9);
                sum.set(
                    sum.get()
                        .wrapping_add(page_sum(e.paddr().as_usize() as u64, size.min(end - v))),
                );
            }
        };
        self.pt().walk(usize::MAX, Some(&f), None);
        sum.get()
    }
    #[inline(always)]
    fn lookup(&mut self, va: u64) -> Option<(u64, bool)> {
        let (pa, flags, _) = self.pt().query(VirtAddr::from(va as usize)).ok()?;
        Some((pa.as_usize() as u64, flags.contains(MappingFlags::WRITE)))
    }
    #[inline(always)]
    fn unmap(&mut self, va: u64, pages: u64) -> Result<u64, String> {
        self.pt()
            .cursor()
            .unmap_region(VirtAddr::from(va as usize), (pages * FRAME as u64) as usize)
            .map(|()| 0)
            .map_err(err_debug)
    }
    #[inline(always)]
    fn unmap_page(&mut self, va: u64) -> Result<(), String> {
        self.pt()
            .cursor()
            .unmap(VirtAddr::from(va as usize))
            .map(|_| ())
            .map_err(err_debug)
    }
    #[inline(always)]
    fn tables_in_use(&self) -> usize {
        PTM_POOL.with_borrow(|p| p.as_ref().map_or(0, |p| p.in_use()))
    }
}
