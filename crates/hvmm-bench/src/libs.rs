//! The libraries under test, behind one interface, each configured for the
//! same work: 4 KiB granule, 48-bit VA from level 0, EL2 stage-1 attributes
//! (normal write-back memory, read-write, execute-never, AF set), tables in
//! prefaulted host memory, no TLB instructions. The stage-2 rows use each
//! library's stage-2 regime instead (guest RAM: normal write-back,
//! read-write, executable, AF set; a three-level walk from level 1).

use crate::pool::{FramePool, FRAME};
use crate::xen::{XenOp, XenPt};
use hvmm::host::HostMemory;
use hvmm::{
    Arm64, Arm64Stage2, Attrs, Format, InputAddr, MapFlags, Op, PageTable, Pte, S2Attrs, Vaddr,
    Vmid,
};
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
    /// Make a 2 MiB range of pages uniform again and a block.
    Merge,
    /// Translate every page of the 1 GiB (each library's fastest way).
    Translate,
    /// Translate every page with one point lookup per page.
    TranslatePoint,
    /// Unmap the 1 GiB.
    Unmap,
    /// Random single-page map/unmap over 512 GiB.
    Sparse,
    /// `map-4k` on a guest's stage-2 table.
    S2Map4k,
    /// `modify-ro` on a guest's stage-2 table.
    S2ModifyRo,
    /// `unmap` on a guest's stage-2 table.
    S2Unmap,
    /// `translate` on a guest's stage-2 table.
    S2Translate,
}

impl Row {
    /// Whether the row works on a guest's stage-2 table.
    pub const fn stage2(self) -> bool {
        matches!(
            self,
            Row::S2Map4k | Row::S2ModifyRo | Row::S2Unmap | Row::S2Translate
        )
    }
    /// The work the row does (a stage-2 row does its stage-1 twin's work).
    pub const fn work(self) -> Row {
        match self {
            Row::S2Map4k => Row::Map4k,
            Row::S2ModifyRo => Row::ModifyRo,
            Row::S2Unmap => Row::Unmap,
            Row::S2Translate => Row::Translate,
            r => r,
        }
    }
}

/// One page-table library driven through the same operations.
pub trait Library: Sized {
    /// Name in the table.
    const NAME: &'static str;
    /// Whether this is a stage-2 (guest) table: it does the stage-2 rows
    /// ([`Row::stage2`]) and only those.
    const STAGE2: bool = false;
    /// A fresh, empty page table whose allocator holds `frames` table pages.
    fn new(frames: usize) -> Self;
    /// Why this library cannot do `row` (`None` if it can).
    fn cannot(row: Row) -> Option<&'static str> {
        let _ = row;
        None
    }
    /// What this library does for `row`, where that needs saying (shown
    /// in the table next to its figure).
    fn how(row: Row) -> Option<&'static str> {
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
    /// Makes the 2 MiB at `block_va` (mapped by pages to `block_pa..`, all
    /// read-write but the one at `ro_page`) read-write again and one 2 MiB
    /// block.
    fn merge(&mut self, block_va: u64, ro_page: u64, block_pa: u64) -> Result<(), String> {
        let _ = (block_va, ro_page, block_pa);
        Err(format!("{}: no merge", Self::NAME))
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

/// A regime hvmm's engine is measured in: the hypervisor's stage 1
/// ([`Arm64`]) or a guest's stage 2 ([`Arm64Stage2`]`<40>`).
pub trait HvmmRegime: Format {
    /// Name in error messages.
    const LIB_NAME: &'static str;
    /// Whether this is a stage-2 format.
    const STAGE2: bool;
    /// Read-write (the mapping every row makes).
    const RW: Self::Attrs;
    /// Read-only, same memory type.
    const RO: Self::Attrs;
    /// A fresh, empty table.
    fn create(mem: &mut HostMemory) -> PageTable<Self>;
    /// Whether the leaf descriptor `pte` allows writes.
    fn writable(pte: u64) -> bool;
}

impl HvmmRegime for Arm64 {
    const LIB_NAME: &'static str = "hvmm";
    const STAGE2: bool = false;
    const RW: Attrs = Attrs::RW;
    const RO: Attrs = Attrs::RO;
    fn create(mem: &mut HostMemory) -> PageTable<Self> {
        PageTable::create(&mut mem.env()).expect("root")
    }
    #[inline(always)]
    fn writable(pte: u64) -> bool {
        pte & Pte::AP_RO == 0
    }
}

/// IPA size of the guest table the stage-2 rows use (a three-level walk
/// from two concatenated level-1 root tables).
pub const S2_IPA_BITS: u32 = 40;

/// The guest's stage-2 format of the stage-2 rows.
pub type GuestS2 = Arm64Stage2<S2_IPA_BITS>;

impl HvmmRegime for GuestS2 {
    const LIB_NAME: &'static str = "hvmm (stage 2)";
    const STAGE2: bool = true;
    const RW: S2Attrs = S2Attrs::RAM;
    const RO: S2Attrs = S2Attrs::RAM_RO;
    fn create(mem: &mut HostMemory) -> PageTable<Self> {
        PageTable::create_stage2(&mut mem.env(), Vmid(1)).expect("root")
    }
    #[inline(always)]
    fn writable(pte: u64) -> bool {
        // S2AP[1] (bit 7) is the write permission.
        pte & (1 << 7) != 0
    }
}

/// hvmm's engine on the host back end, in the regime `F`.
pub struct HvmmOn<F: HvmmRegime> {
    mem: HostMemory,
    pt: PageTable<F>,
}

/// hvmm's engine on the hypervisor's stage-1 table.
pub type Hvmm = HvmmOn<Arm64>;
/// hvmm's engine on a guest's stage-2 table ([`GuestS2`], VMID 1).
pub type HvmmS2 = HvmmOn<GuestS2>;

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

impl<F: HvmmRegime> HvmmOn<F> {
    #[inline(always)]
    fn update(
        &mut self,
        va: u64,
        pages: u64,
        op: Op<F::Attrs>,
        flags: MapFlags,
    ) -> Result<hvmm::UpdateReport, String> {
        self.pt
            .update(
                &mut self.mem.env(),
                F::Input::from_raw(va),
                pages,
                op,
                flags,
            )
            .map_err(err_string)
    }

    /// The raw update report of one page made read-only (for the tests).
    pub fn make_ro_report(&mut self, va: u64) -> Result<hvmm::UpdateReport, String> {
        self.update(va, 1, Op::Modify { attrs: F::RO }, MapFlags::PAGES)
    }

    /// The raw update report of the merge of [`Library::merge`] (for the tests).
    pub fn merge_report(&mut self, ro_page: u64) -> Result<hvmm::UpdateReport, String> {
        self.update(
            ro_page,
            1,
            Op::Modify { attrs: F::RW },
            MapFlags::BLOCKS_MERGE,
        )
    }

    /// The level of the leaf that maps `va`.
    pub fn leaf_level(&mut self, va: u64) -> Option<u8> {
        let leaf = self
            .pt
            .lookup(
                &mut self.mem.arch,
                &mut self.mem.access,
                F::Input::from_raw(va),
            )
            .ok()??;
        Some(leaf.level)
    }
}

impl<F: HvmmRegime> Library for HvmmOn<F> {
    const NAME: &'static str = F::LIB_NAME;
    const STAGE2: bool = F::STAGE2;
    const TRANSLATE_HOW: &'static str = "range walk (`for_each_leaf_with`)";
    fn new(frames: usize) -> Self {
        let mut mem = prefaulted_host_memory(frames + F::ROOT_TABLES);
        let pt = F::create(&mut mem);
        HvmmOn { mem, pt }
    }
    fn how(row: Row) -> Option<&'static str> {
        match row {
            Row::Split => Some("`Modify`: live split, break-before-make"),
            Row::Merge => Some("`Modify` with `BLOCKS_MERGE`"),
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
            attrs: F::RW,
        };
        self.update(va, pages, op, flags).map(|_| ())
    }
    #[inline(always)]
    fn make_ro(&mut self, va: u64, pages: u64) -> Result<(), String> {
        self.update(va, pages, Op::Modify { attrs: F::RO }, MapFlags::PAGES)
            .map(|_| ())
    }
    #[inline(always)]
    fn merge(&mut self, _block_va: u64, ro_page: u64, _block_pa: u64) -> Result<(), String> {
        let op = Op::Modify { attrs: F::RW };
        self.update(ro_page, 1, op, MapFlags::BLOCKS_MERGE)
            .map(|_| ())
    }
    #[inline(always)]
    fn translate_range(&mut self, va: u64, pages: u64) -> u64 {
        let mut sum = 0u64;
        self.pt
            .for_each_leaf_with(
                &mut self.mem.arch,
                &mut self.mem.access,
                F::Input::from_raw(va),
                pages,
                |_, pages, leaf| {
                    sum = sum.wrapping_add(page_sum(leaf.pa.0, pages * FRAME as u64));
                },
            )
            .expect("for_each_leaf_with");
        sum
    }
    #[inline(always)]
    fn lookup(&mut self, va: u64) -> Option<(u64, bool)> {
        let leaf = self
            .pt
            .lookup(
                &mut self.mem.arch,
                &mut self.mem.access,
                F::Input::from_raw(va),
            )
            .ok()??;
        Some((leaf.pa.0, F::writable(leaf.pte.0)))
    }
    #[inline(always)]
    fn unmap(&mut self, va: u64, pages: u64) -> Result<u64, String> {
        self.update(va, pages, Op::Remove, MapFlags::PAGES)
            .map(|r| r.tables_freed)
    }
    #[inline(always)]
    fn tables_in_use(&self) -> usize {
        self.mem.frames.in_use()
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
            Row::Merge => Some("4 KiB pages only (no blocks to merge into)"),
            r if r.stage2() => Some(
                "models Xen's stage-1 `xen_pt_update` only (Xen's stage 2, the p2m code, is \
                 another algorithm)",
            ),
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
        self.mem.frames.in_use()
    }
}

// ------------------------------------------------------ aarch64-paging

use aarch64_paging::descriptor::{
    El23Attributes, PagingAttributes, PhysicalAddress, Stage2Attributes, UpdatableDescriptor,
};
use aarch64_paging::paging::{
    Constraints, El2, MemoryRegion, PageTable as ApTable, Stage2, Translation, TranslationRegime,
};
use aarch64_paging::{MapError, Mapping};

/// aarch64-paging's `Translation` over a [`FramePool`]: PA = host address.
pub struct ApTranslation {
    pool: FramePool,
}

impl<A: PagingAttributes> Translation<A> for ApTranslation {
    fn allocate_table(&mut self) -> (NonNull<ApTable<A>>, PhysicalAddress) {
        let a = self
            .pool
            .alloc_zeroed()
            .expect("aarch64-paging pool exhausted");
        let p = NonNull::new(a as *mut ApTable<A>).expect("non-null frame");
        (p, PhysicalAddress(a))
    }
    unsafe fn deallocate_table(&mut self, page_table: NonNull<ApTable<A>>) {
        self.pool.free(page_table.as_ptr() as usize);
    }
    #[inline]
    fn physical_to_virtual(&self, pa: PhysicalAddress) -> NonNull<ApTable<A>> {
        NonNull::new(pa.0 as *mut ApTable<A>).expect("non-null table")
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

/// Guest RAM at stage 2: valid, MemAttr normal inner and outer write-back,
/// S2AP read-write, inner shareable, AF, executable — hvmm's `S2Attrs::RAM`
/// bit for bit.
const AP_S2_RAM: Stage2Attributes = Stage2Attributes::VALID
    .union(Stage2Attributes::MEMATTR_NORMAL_INNER_WB)
    .union(Stage2Attributes::MEMATTR_NORMAL_OUTER_WB)
    .union(Stage2Attributes::S2AP_ACCESS_RW)
    .union(Stage2Attributes::SH_INNER)
    .union(Stage2Attributes::ACCESS_FLAG);

/// A translation regime of aarch64-paging the bench drives, with the
/// attributes of the rows.
pub trait ApRegime: TranslationRegime<Asid = (), VaRange = ()> {
    /// Its value (the regimes are unit structs).
    const REGIME: Self;
    /// Whether this is the stage-2 regime.
    const STAGE2: bool;
    /// Root level: 0 for the 48-bit stage 1; 1 for stage 2 (a 39-bit IPA
    /// space, the same three-level walk as hvmm's 40-bit one, which
    /// concatenates two level-1 root tables — aarch64-paging has no
    /// concatenated roots).
    const ROOT_LEVEL: usize;
    /// Read-write.
    const RW: Self::Attributes;
    /// Bits set to make a mapping read-only.
    const RO_SET: Self::Attributes;
    /// Bits cleared to make a mapping read-only.
    const RO_CLEAR: Self::Attributes;
    /// Whether `flags` allow writes.
    fn writable(flags: Self::Attributes) -> bool;
}

impl ApRegime for El2 {
    const REGIME: Self = El2;
    const STAGE2: bool = false;
    const ROOT_LEVEL: usize = 0;
    const RW: El23Attributes = AP_RW;
    const RO_SET: El23Attributes = El23Attributes::READ_ONLY;
    const RO_CLEAR: El23Attributes = El23Attributes::empty();
    #[inline(always)]
    fn writable(flags: El23Attributes) -> bool {
        !flags.contains(El23Attributes::READ_ONLY)
    }
}

impl ApRegime for Stage2 {
    const REGIME: Self = Stage2;
    const STAGE2: bool = true;
    const ROOT_LEVEL: usize = 1;
    const RW: Stage2Attributes = AP_S2_RAM;
    // S2AP 0b11 (RW) becomes 0b01 (RO).
    const RO_SET: Stage2Attributes = Stage2Attributes::S2AP_ACCESS_RO;
    const RO_CLEAR: Stage2Attributes = Stage2Attributes::S2AP_ACCESS_WO;
    #[inline(always)]
    fn writable(flags: Stage2Attributes) -> bool {
        flags.contains(Stage2Attributes::S2AP_ACCESS_WO)
    }
}

/// aarch64-paging 0.12: a `Mapping` in the regime `R`. Not `LIVE`: never
/// activated, so it performs no TLB maintenance and no break-before-make
/// checks (on x86 its barriers and TLBIs are compiled out anyway). `LIVE`:
/// marked active (`Mapping::mark_active`, as after activating it by hand),
/// so it checks every change against break-before-make, refuses the ones
/// that need a break, and walks what it changed to invalidate it (the
/// `tlbi` itself is compiled out on x86, as hvmm's host back end counts
/// its invalidations without performing them).
pub struct Ap<R: ApRegime, const LIVE: bool> {
    map: Mapping<ApTranslation, R>,
}

/// aarch64-paging at EL2, inactive (the configuration of every stage-1 row).
pub type AarchPaging = Ap<El2, false>;
/// aarch64-paging's stage-2 regime, inactive.
pub type AarchPagingS2 = Ap<Stage2, false>;
/// aarch64-paging at EL2, live.
pub type AarchPagingLive = Ap<El2, true>;
/// aarch64-paging's stage-2 regime, live.
pub type AarchPagingS2Live = Ap<Stage2, true>;

impl<R: ApRegime, const LIVE: bool> Drop for Ap<R, LIVE> {
    fn drop(&mut self) {
        // A `Mapping` refuses to be dropped while marked active.
        if LIVE {
            self.map.mark_inactive();
        }
    }
}

/// 2 MiB.
const BLOCK: u64 = 2 << 20;

fn ap_ro<R: ApRegime>(
    _: &MemoryRegion,
    d: &mut UpdatableDescriptor<R::Attributes>,
) -> Result<(), ()> {
    let valid = <R::Attributes as PagingAttributes>::VALID;
    if d.is_table() || d.flags() & valid != valid {
        return Ok(());
    }
    d.modify_flags(R::RO_SET, R::RO_CLEAR)
}

impl<R: ApRegime, const LIVE: bool> Ap<R, LIVE> {
    #[inline(always)]
    fn region(va: u64, pages: u64) -> MemoryRegion {
        MemoryRegion::new(va as usize, (va + pages * FRAME as u64) as usize)
    }

    /// Unmaps `r` (an invalid `map_range`, aarch64-paging's unmap).
    #[inline(always)]
    fn unmap_region(&mut self, r: &MemoryRegion) -> Result<(), String> {
        self.map
            .map_range(
                r,
                PhysicalAddress(0),
                R::Attributes::default(),
                Constraints::empty(),
            )
            .map_err(err_string)
    }

    /// Makes the one page at `va` read-only with `modify_range` (which
    /// splits the block around it on an inactive table), returning the
    /// library's own error.
    pub fn modify_one_ro(&mut self, va: u64) -> Result<(), MapError> {
        self.map.modify_range(&Self::region(va, 1), &ap_ro::<R>)
    }
}

impl<R: ApRegime, const LIVE: bool> Library for Ap<R, LIVE> {
    const NAME: &'static str = if LIVE {
        "aarch64-paging (live)"
    } else {
        "aarch64-paging"
    };
    const STAGE2: bool = R::STAGE2;
    const TRANSLATE_HOW: &'static str = "range walk (`walk_range`)";
    fn new(frames: usize) -> Self {
        let t = ApTranslation {
            pool: FramePool::new(frames + 1),
        };
        let map = Mapping::new(t, R::ROOT_LEVEL, R::REGIME);
        if LIVE {
            map.mark_active();
        }
        Ap { map }
    }
    fn cannot(row: Row) -> Option<&'static str> {
        match (LIVE, row) {
            (true, Row::Split | Row::Merge | Row::S2Map4k | Row::S2ModifyRo | Row::S2Unmap) => None,
            (true, Row::S2Translate) => Some("a walk is the same live or not"),
            (true, _) => Some("not measured live"),
            (false, _) => None,
        }
    }
    fn how(row: Row) -> Option<&'static str> {
        match (LIVE, row) {
            (false, Row::Split) => Some("`modify_range`, inactive table: no break"),
            (true, Row::Split) => Some("refuses; by hand: unmap 2 MiB, map pages, modify page"),
            (_, Row::Merge) => Some("no merge; by hand: unmap 2 MiB, map block"),
            _ => None,
        }
    }
    #[inline(always)]
    fn map(&mut self, va: u64, pa: u64, pages: u64, blocks: bool) -> Result<(), String> {
        let c = if blocks {
            Constraints::NO_CONTIGUOUS_HINT
        } else {
            Constraints::NO_BLOCK_MAPPINGS | Constraints::NO_CONTIGUOUS_HINT
        };
        self.map
            .map_range(
                &Self::region(va, pages),
                PhysicalAddress(pa as usize),
                R::RW,
                c,
            )
            .map_err(err_string)
    }
    #[inline(always)]
    fn make_ro(&mut self, va: u64, pages: u64) -> Result<(), String> {
        self.map
            .modify_range(&Self::region(va, pages), &ap_ro::<R>)
            .map_err(err_string)
    }
    #[inline(always)]
    fn split(&mut self, va: u64) -> Result<(), String> {
        if !LIVE {
            return self.make_ro(va, 1);
        }
        // Live, `modify_range` refuses to split the block (its
        // break-before-make check): the caller breaks and makes by hand.
        let base = va & !(BLOCK - 1);
        let Some((pa, _)) = self.lookup(base) else {
            return Err(format!("{}: nothing mapped at {base:#x}", Self::NAME));
        };
        let block = Self::region(base, BLOCK / FRAME as u64);
        self.unmap_region(&block)?;
        self.map(base, pa, BLOCK / FRAME as u64, false)?;
        self.make_ro(va, 1)
    }
    #[inline(always)]
    fn merge(&mut self, block_va: u64, _ro_page: u64, block_pa: u64) -> Result<(), String> {
        // No merge: unmapping the block-aligned 2 MiB frees its level-3
        // table, then the block is mapped into the now invalid entry.
        let block = Self::region(block_va, BLOCK / FRAME as u64);
        self.unmap_region(&block)?;
        self.map(block_va, block_pa, BLOCK / FRAME as u64, true)
    }
    #[inline(always)]
    fn translate_range(&mut self, va: u64, pages: u64) -> u64 {
        let mut sum = 0u64;
        self.map
            .walk_range(&Self::region(va, pages), &mut |mr, d, level| {
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
                    out = Some((pa as u64, R::writable(d.flags())));
                }
                Ok(())
            })
            .ok()?;
        out
    }
    #[inline(always)]
    fn unmap(&mut self, va: u64, pages: u64) -> Result<u64, String> {
        let before = self.map.translation().pool.freed;
        self.unmap_region(&Self::region(va, pages))?;
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
            Row::Merge => Some(
                "no merge, nor a way back to a block: `unmap` never frees the level-3 table, and \
                 a 2 MiB `map` over its table entry is `AlreadyMapped`",
            ),
            r if r.stage2() => Some(
                "no stage-2 format: page_table_entry 0.6 has stage-1 descriptors only (a \
                 hypervisor brings its own `GenericPTE`)",
            ),
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
