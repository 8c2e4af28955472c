//! The page-table update engine: Xen's `xen_pt_update`, rebuilt.
//!
//! One entry point, [`PageTable::update`], performs an [`Op`] over a range of
//! pages. It works in two passes, Hafnium-style:
//!
//! 1. **prepare** walks the range read-only, checks every entry against the
//!    operation's rules (no silent replacement, no orphaned subtree, no change
//!    of a contiguous entry...) and counts the tables the update must create;
//!    then it reserves that many frames. Any refusal or shortage ends the
//!    update here, before a single descriptor is written.
//! 2. **commit** walks the range again and writes. It takes reserved frames
//!    and holds reserved table-access slots ([`TableAccess::reserve`]), so it
//!    cannot run out of either. (Only a provider that breaks its reservation,
//!    or a memory fault on the machine model, can fail it; the engine then
//!    still invalidates the TLB and reports the error.)
//!
//! Each walk visits every table of the range once: a table is mapped through
//! the [`TableAccess`] provider when the walk enters it, stays mapped while
//! its children are visited (so a child entry is always read before its
//! parent is released) and is given back when the walk leaves it.
//!
//! TLB rules: a pure insert needs no invalidation (invalid entries are never
//! cached), only an `isb`. Modify and Remove invalidate every leaf they
//! change — by VA for small updates, one global invalidation for large ones —
//! and a table emptied by Remove is unlinked, invalidated and only then freed.
//!
//! Runs of leaves: inside one table, the entries an update targets at the
//! leaf level form a run. Both passes handle a run as a whole through the
//! [`Arch`] run methods: prepare scans it for the first entry that breaks a
//! rule ([`Arch::find_pte`]; that entry gets the same error an entry-by-entry
//! check gives), commit writes it without reading it back for an insert
//! ([`Arch::write_pte_run`]: prepare proved every entry invalid, and a new
//! table is zeroed) and rewrites it in one pass for a large modify or remove
//! ([`Arch::update_pte_run`]; small ones go leaf by leaf, each followed by
//! its own invalidation by VA). The default run methods write descriptor by
//! descriptor with [`Arch::write_pte`] (`dsb; str; dsb` each; the machine
//! model checks every write). The hardware back ends relax that to one `dsb`
//! before the run and one after it: an insert run only turns invalid entries
//! valid (nothing can have cached them, nothing uses them before the update
//! returns, after the trailing `dsb` and the `isb`), and the modify / remove
//! runs take effect through the invalidation that follows them, ordered
//! after the trailing `dsb`.

use crate::access::{AccessError, TableAccess};
use crate::addr::{Mfn, Paddr, Vaddr, PAGE_SIZE};
use crate::alloc::FrameAlloc;
use crate::arch::Arch;
use crate::attr::{Attrs, MapFlags};
use crate::error::Error;
use crate::format::{block_allowed, level_size, table_index, Format, Pte, CONTIG_ENTRIES, ENTRIES};
use core::cell::Cell;
use core::fmt;
use core::marker::PhantomData;

/// Above this many changed leaves, Modify and Remove invalidate the whole TLB
/// once instead of entry by entry.
pub const TLB_FLUSH_ALL_THRESHOLD: u64 = 64;

/// What an update does.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Map the range to `pa..` with `attrs`. Refused if any entry is valid.
    Insert {
        /// Physical address of the first page.
        pa: Paddr,
        /// Memory type and permission.
        attrs: Attrs,
    },
    /// Change the permission of existing mappings. The memory type must stay.
    Modify {
        /// The new attributes; their memory type must equal the current one.
        attrs: Attrs,
    },
    /// Unmap the range. Absent mappings are fine.
    Remove,
    /// Create the intermediate tables down to level 3, map nothing.
    Populate,
}

impl Op {
    /// The operation's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Insert { .. } => "insert",
            Op::Modify { .. } => "modify",
            Op::Remove => "remove",
            Op::Populate => "populate",
        }
    }
}

/// What an update did.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct UpdateReport {
    /// Leaf descriptors written (inserted, modified or cleared).
    pub leaves: u64,
    /// Table pages created.
    pub tables_created: u64,
    /// Table pages freed.
    pub tables_freed: u64,
    /// Table pages mapped through the provider (both passes).
    pub table_maps: u64,
    /// TLB invalidations issued (by VA or global).
    pub tlb_invalidations: u64,
}

impl core::ops::AddAssign for UpdateReport {
    fn add_assign(&mut self, o: Self) {
        self.leaves += o.leaves;
        self.tables_created += o.tables_created;
        self.tables_freed += o.tables_freed;
        self.table_maps += o.table_maps;
        self.tlb_invalidations += o.tlb_invalidations;
    }
}

/// A leaf mapping found by [`PageTable::lookup`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// Level of the entry (3 for a page, 2 or 1 for a block).
    pub level: u8,
    /// Physical address the looked-up VA translates to (page offset included).
    pub pa: Paddr,
    /// The raw descriptor.
    pub pte: Pte,
    /// Attributes, if the descriptor holds ones hvmm can express.
    pub attrs: Option<Attrs>,
}

/// The three things the engine works with: the processor, the way to reach
/// table pages, and the source of new table pages.
pub struct Env<'a, A: Arch, T: TableAccess<A>, M: FrameAlloc> {
    /// Processor operations.
    pub arch: &'a mut A,
    /// Table-access provider for the current boot phase.
    pub access: &'a mut T,
    /// Frame allocator for new tables.
    pub alloc: &'a mut M,
}

impl<'a, A: Arch, T: TableAccess<A>, M: FrameAlloc> Env<'a, A, T, M> {
    /// Bundles the three.
    pub fn new(arch: &'a mut A, access: &'a mut T, alloc: &'a mut M) -> Self {
        Env {
            arch,
            access,
            alloc,
        }
    }
}

/// A hypervisor page table: a root frame and the format of its descriptors.
/// Updates take `&mut self`: holding the table is holding its lock.
///
/// It remembers the last level-3 table a walk reached (see [`WalkCache`]),
/// so there must be one `PageTable` per tree: two handles over the same
/// tables would not see each other's changes to the links.
#[derive(Debug)]
pub struct PageTable<F: Format> {
    root: Mfn,
    walk: Cell<Option<WalkCache>>,
    _format: PhantomData<F>,
}

/// The last level-3 table a walk of this [`PageTable`] reached through table
/// descriptors from the root, and the 2 MiB of VA it covers. The next
/// one-page update or lookup in that 2 MiB starts there instead of at the
/// root (Xen maps large ranges one page per call).
///
/// Why it stays right: the links from the root down to a level-3 table
/// change only when a table is unlinked — a Remove that frees an emptied
/// table, or a failed update (whose commit may have linked new tables it
/// then leaves or frees). Every update goes through `&mut self`; a Remove or
/// a failure forgets the cache before returning, and nothing else in the
/// engine replaces a valid table descriptor (an Insert refuses valid
/// entries, Modify changes leaves only, Populate only fills invalid
/// entries). Code that rewrites links behind the engine's back must call
/// [`PageTable::forget_walk`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct WalkCache {
    /// `va >> 21` of the 2 MiB the table maps.
    region: u64,
    /// The level-3 table.
    l3: Mfn,
}

/// The descriptor bits [`Pte::attrs`] depends on: AttrIndx, AP\[2\], XN.
const ATTR_BITS: u64 = (7 << Pte::ATTR_SHIFT) | Pte::RO | Pte::XN;

/// Shift of the VA span of one level-3 table.
const L3_SPAN_SHIFT: u32 = 21;

/// The checked request of one update.
#[derive(Copy, Clone)]
struct Req {
    va: u64,
    end: u64,
    /// PA of `va` (Insert only; 0 otherwise).
    pa: u64,
    op: Op,
    flags: MapFlags,
    /// Invalidate globally once at the end rather than per leaf.
    flush_all: bool,
}

impl Req {
    #[inline]
    fn pa_at(&self, va: u64) -> u64 {
        self.pa + (va - self.va)
    }

    /// Whether the entry at `level` covering `[va, slot_end)` is the target
    /// (leaf) level of this request.
    #[inline]
    fn is_target(&self, level: u8, va: u64, slot_end: u64) -> bool {
        if level == 3 {
            return true;
        }
        if matches!(self.op, Op::Populate)
            || !self.flags.blocks
            || !block_allowed(level)
            || (level == 1 && self.flags.no_gib_blocks)
        {
            return false;
        }
        let size = level_size(level);
        let aligned = va.is_multiple_of(size) && slot_end - va == size;
        match self.op {
            Op::Insert { .. } => aligned && self.pa_at(va).is_multiple_of(size),
            _ => aligned,
        }
    }

    /// Whether a full, aligned slot at `level` inside the range is the
    /// target level: [`Req::is_target`] for every such slot, which does not
    /// depend on where the slot is (the PA offset is the same for all).
    #[inline]
    fn full_slot_target(&self, level: u8) -> bool {
        if level == 3 {
            return true;
        }
        if matches!(self.op, Op::Populate)
            || !self.flags.blocks
            || !block_allowed(level)
            || (level == 1 && self.flags.no_gib_blocks)
        {
            return false;
        }
        match self.op {
            Op::Insert { .. } => self
                .pa
                .wrapping_sub(self.va)
                .is_multiple_of(level_size(level)),
            _ => true,
        }
    }

    /// The run of full target slots of one table that starts at `va`: the
    /// number of entries, or 0 when `va` does not start one. Only Insert,
    /// Modify and Remove have runs (a Populate target needs no work).
    #[inline]
    fn run_len(&self, level: u8, va: u64, end: u64) -> usize {
        if matches!(self.op, Op::Populate) || !self.full_slot_target(level) {
            return 0;
        }
        let size = level_size(level);
        if !va.is_multiple_of(size) {
            return 0;
        }
        let left = (ENTRIES - table_index(va, level)) as u64;
        ((end - va) / size).min(left) as usize
    }

    /// Whether the insert leaf at `va` (level `level`) belongs to a full,
    /// aligned run of 16 entries that gets the contiguous hint.
    #[inline]
    fn contiguous(&self, level: u8, va: u64) -> bool {
        if !self.flags.contiguous {
            return false;
        }
        let run = level_size(level) * CONTIG_ENTRIES;
        let start = va & !(run - 1);
        start >= self.va
            && start.checked_add(run).is_some_and(|e| e <= self.end)
            && (self.pa_at(start)).is_multiple_of(run)
    }
}

/// Per-update bookkeeping during commit.
struct Commit {
    report: UpdateReport,
    /// Leaves changed since the last global invalidation (large updates).
    dirty: bool,
    /// The last level-3 table the commit entered or created, and a VA it
    /// maps (for the [`WalkCache`]).
    last_l3: Option<(u64, Mfn)>,
}

/// Tables unlinked by a Remove and not yet freed: they are freed in
/// batches, after one invalidation per batch.
struct Unlinked {
    frames: [Mfn; 64],
    len: usize,
}

impl Default for Unlinked {
    fn default() -> Self {
        Unlinked {
            frames: [Mfn(0); 64],
            len: 0,
        }
    }
}

#[inline]
fn slot_end(va: u64, level: u8, end: u64) -> u64 {
    let size = level_size(level);
    let next = (va & !(size - 1)).saturating_add(size);
    if next < end {
        next
    } else {
        end
    }
}

#[inline]
fn entry_va(table: Vaddr, idx: usize) -> Vaddr {
    Vaddr(table.0 + (idx as u64) * 8)
}

impl<F: Format> PageTable<F> {
    /// A page table whose root is the (already zeroed) frame `root`.
    pub const fn new(root: Mfn) -> Self {
        PageTable {
            root,
            walk: Cell::new(None),
            _format: PhantomData,
        }
    }

    /// Forgets the remembered walk ([`WalkCache`]). The engine does this
    /// itself whenever it unlinks a table; call it after changing a table
    /// descriptor of this tree outside the engine.
    pub fn forget_walk(&self) {
        self.walk.set(None);
    }

    /// The level-3 table that maps `va`, if the last walk reached it.
    #[inline]
    fn cached_l3(&self, va: u64) -> Option<Mfn> {
        match self.walk.get() {
            Some(w) if w.region == va >> L3_SPAN_SHIFT => Some(w.l3),
            _ => None,
        }
    }

    #[inline]
    fn remember_l3(&self, va: u64, l3: Mfn) {
        self.walk.set(Some(WalkCache {
            region: va >> L3_SPAN_SHIFT,
            l3,
        }));
    }

    /// The root frame.
    pub const fn root(&self) -> Mfn {
        self.root
    }

    /// Performs `op` on the `pages` pages starting at `va`.
    ///
    /// Either the whole update happens, or nothing does: on error every table
    /// byte is as it was and every table allocated for the update is freed.
    #[inline]
    pub fn update<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &mut self,
        env: &mut Env<'_, A, T, M>,
        va: Vaddr,
        pages: u64,
        op: Op,
        flags: MapFlags,
    ) -> Result<UpdateReport, Error> {
        // One page in the remembered level-3 table (Xen's usage pattern).
        if pages == 1 {
            if let Some(report) = self.update_cached(env, va, op) {
                return Ok(report);
            }
        }
        self.update_checked(env, va, pages, op, flags)
    }

    /// [`PageTable::update`] of one page in the level-3 table of the
    /// [`WalkCache`]: the same checks as the general path (request, then the
    /// entry), one table mapped, the same TLB rules. Anything else — another
    /// operation, a bad request, a refusal, a provider or memory failure —
    /// returns `None` before anything was written, and the general path
    /// meets and reports it. (A single page never gets the contiguous hint:
    /// a run of 16 does not fit in it.)
    #[inline(always)]
    fn update_cached<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &self,
        env: &mut Env<'_, A, T, M>,
        va: Vaddr,
        op: Op,
    ) -> Option<UpdateReport> {
        let l3 = self.cached_l3(va.0)?;
        if !va.is_aligned(PAGE_SIZE) || !va.0.checked_add(PAGE_SIZE).is_some_and(F::va_end_fits) {
            return None;
        }
        match op {
            Op::Insert { pa, .. } => {
                if !pa.is_aligned(PAGE_SIZE)
                    || !pa.0.checked_add(PAGE_SIZE).is_some_and(F::pa_end_fits)
                {
                    return None;
                }
            }
            Op::Modify { .. } => {}
            Op::Remove | Op::Populate => return None,
        }
        env.access.reserve(env.arch, 1).ok()?;
        let Ok(tva) = env.access.map_table(env.arch, l3) else {
            env.access.unreserve(env.arch);
            return None;
        };
        let eva = entry_va(tva, table_index(va.0, 3));
        let written = match env.arch.read_pte(eva) {
            Ok(raw) => {
                let pte = Pte(raw);
                let new = match op {
                    Op::Insert { pa, attrs } if !(pte.is_table(3) || pte.is_leaf(3)) => {
                        Some(Pte::leaf::<F>(3, pa, attrs, false))
                    }
                    Op::Modify { attrs }
                        if pte.is_leaf(3)
                            && !pte.is_contiguous()
                            && pte.attr_index() == attrs.mem().index() =>
                    {
                        Some(pte.with_perm(attrs.perm()))
                    }
                    _ => None,
                };
                new.is_some_and(|new| env.arch.write_pte(eva, new.0).is_ok())
            }
            Err(_) => false,
        };
        env.access.unmap_table(env.arch, l3, tva);
        env.access.unreserve(env.arch);
        if !written {
            return None;
        }
        let mut report = UpdateReport {
            leaves: 1,
            table_maps: 1,
            ..Default::default()
        };
        if matches!(op, Op::Modify { .. }) {
            env.arch.tlb_flush_va(va);
            report.tlb_invalidations = 1;
            env.arch.tlb_sync();
        } else {
            env.arch.isb();
        }
        Some(report)
    }

    /// [`PageTable::update`] past the remembered-walk fast path.
    #[inline(never)]
    fn update_checked<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &mut self,
        env: &mut Env<'_, A, T, M>,
        va: Vaddr,
        pages: u64,
        op: Op,
        flags: MapFlags,
    ) -> Result<UpdateReport, Error> {
        let req = Self::check(va, pages, op, flags)?;

        // One page into existing tables (Xen's usage pattern): one walk.
        if pages == 1 && matches!(op, Op::Insert { .. } | Op::Modify { .. }) {
            if let Some(report) = self.update_one(env, &req) {
                return Ok(report);
            }
        }

        // Removing may unlink tables: forget the remembered walk first. A
        // failure may leave new links or free new tables: forget it too.
        if matches!(op, Op::Remove) {
            self.forget_walk();
        }
        let res = self.update_two_pass(env, &req);
        if res.is_err() {
            self.forget_walk();
        }
        res
    }

    /// The general update: prepare, reserve, commit.
    fn update_two_pass<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &mut self,
        env: &mut Env<'_, A, T, M>,
        req: &Req,
    ) -> Result<UpdateReport, Error> {
        let req = *req;
        let op = req.op;
        let root_level = F::ROOT_LEVEL;
        // Prepare: validate everything and count the tables to create.
        let mut need = 0usize;
        let mut maps = 0u64;
        self.prepare(
            env, &req, root_level, self.root, req.va, req.end, &mut need, &mut maps,
        )?;
        if need > 0 {
            env.alloc.reserve(need).map_err(|e| Error::OutOfMemory {
                needed: e.needed,
                available: e.available,
            })?;
        }
        // The commit pass holds at most one mapping per level at a time.
        let nested = usize::from(4 - root_level);
        if let Err(err) = env.access.reserve(env.arch, nested) {
            env.alloc.unreserve();
            return Err(Error::TableAccess {
                mfn: self.root,
                err,
            });
        }

        // Commit: write. Cannot run out of frames or slots; a failure here
        // means a provider broke its reservation or the memory faulted.
        // Every frame the commit will take must be reachable by the provider
        // (a frame beyond the direct map is not): check them all now.
        if need > 0 {
            let mut unreachable = None;
            let access = &*env.access;
            env.alloc.reserved_frames(&mut |mfn| {
                if unreachable.is_none() && !access.can_reach(mfn) {
                    unreachable = Some(mfn);
                }
            });
            if let Some(mfn) = unreachable {
                let provider = env.access.name();
                env.access.unreserve(env.arch);
                env.alloc.unreserve();
                return Err(Error::TableAccess {
                    mfn,
                    err: AccessError::Unreachable { provider, mfn },
                });
            }
        }

        let mut c = Commit {
            report: UpdateReport {
                table_maps: maps,
                ..Default::default()
            },
            dirty: false,
            last_l3: None,
        };
        let res = self.commit(env, &req, root_level, self.root, req.va, req.end, &mut c);
        env.access.unreserve(env.arch);
        env.alloc.unreserve();
        match res {
            Ok(_) => {
                if let (Some((va, l3)), false) = (c.last_l3, matches!(op, Op::Remove)) {
                    self.remember_l3(va, l3);
                }
                match op {
                    Op::Insert { .. } | Op::Populate => env.arch.isb(),
                    Op::Modify { .. } | Op::Remove => {
                        if c.dirty {
                            env.arch.tlb_flush_all();
                            c.report.tlb_invalidations += 1;
                        }
                        env.arch.tlb_sync();
                    }
                }
                Ok(c.report)
            }
            Err(e) => {
                // Whatever was written must not stay cached.
                env.arch.tlb_flush_all();
                env.arch.tlb_sync();
                Err(e)
            }
        }
    }

    /// A one-page Insert or Modify whose tables all exist, in a single walk:
    /// each level's table is mapped and held (as the commit pass holds them,
    /// under the same reservation), the leaf is checked against the same
    /// rules as the prepare pass, and only then written. Anything else — a
    /// missing table, a block, a refusal, a provider or memory failure —
    /// gives the mappings back and returns `None` before anything was
    /// written, and the caller runs the general two-pass update, which meets
    /// and reports the same thing. The TLB rules are the general path's: an
    /// insert ends with an `isb`; a modify invalidates its VA and syncs.
    fn update_one<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &self,
        env: &mut Env<'_, A, T, M>,
        req: &Req,
    ) -> Option<UpdateReport> {
        let mut mfn = self.root;
        let mut level = F::ROOT_LEVEL;
        let nested = usize::from(4 - level);
        if env.access.reserve(env.arch, nested).is_err() {
            return None;
        }
        let mut held = [(Mfn(0), Vaddr(0)); 4];
        let mut n = 0;
        let mut report = UpdateReport::default();
        let done = loop {
            let Ok(tva) = env.access.map_table(env.arch, mfn) else {
                break false;
            };
            held[n] = (mfn, tva);
            n += 1;
            let eva = entry_va(tva, table_index(req.va, level));
            let Ok(raw) = env.arch.read_pte(eva) else {
                break false;
            };
            let pte = Pte(raw);
            if level < 3 {
                if !pte.is_table(level) {
                    break false;
                }
                mfn = pte.table_mfn::<F>();
                level += 1;
                if level == 3 {
                    self.remember_l3(req.va, mfn);
                }
                continue;
            }
            let new = match req.op {
                Op::Insert { attrs, .. } => {
                    if pte.is_table(3) || pte.is_leaf(3) {
                        break false;
                    }
                    Pte::leaf::<F>(3, Paddr(req.pa), attrs, req.contiguous(3, req.va))
                }
                Op::Modify { attrs } => {
                    if !pte.is_leaf(3)
                        || pte.is_contiguous()
                        || pte.attr_index() != attrs.mem().index()
                    {
                        break false;
                    }
                    pte.with_perm(attrs.perm())
                }
                Op::Remove | Op::Populate => break false,
            };
            if env.arch.write_pte(eva, new.0).is_err() {
                break false;
            }
            report.leaves = 1;
            if matches!(req.op, Op::Modify { .. }) {
                env.arch.tlb_flush_va(Vaddr(req.va));
                report.tlb_invalidations = 1;
            }
            break true;
        };
        for &(mfn, tva) in held[..n].iter().rev() {
            env.access.unmap_table(env.arch, mfn, tva);
        }
        env.access.unreserve(env.arch);
        if !done {
            return None;
        }
        env.alloc.unreserve();
        report.table_maps = n as u64;
        match req.op {
            Op::Insert { .. } => env.arch.isb(),
            _ => env.arch.tlb_sync(),
        }
        Some(report)
    }

    fn check(va: Vaddr, pages: u64, op: Op, flags: MapFlags) -> Result<Req, Error> {
        if pages == 0 {
            return Err(Error::EmptyRange);
        }
        if !va.is_aligned(PAGE_SIZE) {
            return Err(Error::VaMisaligned(va));
        }
        let len = pages
            .checked_mul(PAGE_SIZE)
            .ok_or(Error::VaRangeOverflow { va, pages })?;
        let end =
            va.0.checked_add(len)
                .ok_or(Error::VaRangeOverflow { va, pages })?;
        if !F::va_end_fits(end) {
            return Err(Error::VaOutOfRange {
                va,
                pages,
                va_bits: F::VA_BITS,
            });
        }
        let pa = match op {
            Op::Insert { pa, .. } => {
                if !pa.is_aligned(PAGE_SIZE) {
                    return Err(Error::PaMisaligned(pa));
                }
                let pa_end = pa.0.checked_add(len);
                if !pa_end.is_some_and(F::pa_end_fits) {
                    return Err(Error::PaOutOfRange {
                        pa,
                        pages,
                        pa_bits: F::PA_BITS,
                    });
                }
                pa.0
            }
            _ => 0,
        };
        Ok(Req {
            va: va.0,
            end,
            pa,
            op,
            flags,
            flush_all: pages > TLB_FLUSH_ALL_THRESHOLD,
        })
    }

    #[inline]
    fn map<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        env: &mut Env<'_, A, T, M>,
        mfn: Mfn,
    ) -> Result<Vaddr, Error> {
        env.access
            .map_table(env.arch, mfn)
            .map_err(|err| Error::TableAccess { mfn, err })
    }

    /// Maps table `mfn`, runs `f` with its address, and gives the mapping
    /// back whatever `f` returned (the engine's table guard).
    fn in_table<A: Arch, T: TableAccess<A>, M: FrameAlloc, R>(
        env: &mut Env<'_, A, T, M>,
        mfn: Mfn,
        f: impl FnOnce(&mut Env<'_, A, T, M>, Vaddr) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let tva = Self::map(env, mfn)?;
        let res = f(env, tva);
        env.access.unmap_table(env.arch, mfn, tva);
        res
    }

    /// Entry `idx` of table `mfn`.
    fn read_entry<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        env: &mut Env<'_, A, T, M>,
        mfn: Mfn,
        idx: usize,
    ) -> Result<Pte, Error> {
        Self::in_table(env, mfn, |env, tva| {
            Ok(Pte(env.arch.read_pte(entry_va(tva, idx))?))
        })
    }

    /// Number of tables an insert (or populate) creates below an invalid
    /// entry: the new table at `level` for `[va, end)` and everything under it.
    fn tables_needed(req: &Req, level: u8, va: u64, end: u64) -> usize {
        if level == 3 {
            return 1;
        }
        let mut n = 1;
        let mut cur = va;
        while cur < end {
            let se = slot_end(cur, level, end);
            if !req.is_target(level, cur, se) {
                n += Self::tables_needed(req, level + 1, cur, se);
            }
            cur = se;
        }
        n
    }

    #[allow(clippy::too_many_arguments)]
    fn prepare<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &self,
        env: &mut Env<'_, A, T, M>,
        req: &Req,
        level: u8,
        mfn: Mfn,
        va: u64,
        end: u64,
        need: &mut usize,
        maps: &mut u64,
    ) -> Result<(), Error> {
        Self::in_table(env, mfn, |env, tva| {
            *maps += 1;
            self.prepare_in(env, req, level, tva, va, end, need, maps)
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn prepare_in<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &self,
        env: &mut Env<'_, A, T, M>,
        req: &Req,
        level: u8,
        tva: Vaddr,
        va: u64,
        end: u64,
        need: &mut usize,
        maps: &mut u64,
    ) -> Result<(), Error> {
        let mut cur = va;
        while cur < end {
            let eva = entry_va(tva, table_index(cur, level));
            let run = req.run_len(level, cur, end);
            if run > 0 {
                // Target entries only: check them all in one scan.
                Self::prepare_run(env, req, level, eva, cur, run)?;
                cur += run as u64 * level_size(level);
                continue;
            }
            let se = slot_end(cur, level, end);
            let pte = Pte(env.arch.read_pte(eva)?);
            let target = req.is_target(level, cur, se);
            let table = pte.is_table(level);
            let leaf = pte.is_leaf(level);
            if target {
                Self::check_target(req, level, cur, pte)?;
                cur = se;
                continue;
            }
            match req.op {
                Op::Populate if table && level + 1 == 3 => {}
                Op::Insert { .. } | Op::Populate => {
                    if table {
                        let child = pte.table_mfn::<F>();
                        self.prepare(env, req, level + 1, child, cur, se, need, maps)?;
                    } else if leaf {
                        return Err(match req.op {
                            Op::Populate => Error::BlockInTheWay {
                                va: Vaddr(cur),
                                level,
                            },
                            _ => Error::AlreadyMapped {
                                va: Vaddr(cur),
                                level,
                            },
                        });
                    } else {
                        *need += Self::tables_needed(req, level + 1, cur, se);
                    }
                }
                Op::Modify { .. } => {
                    if !(table || leaf) {
                        return Err(Error::NotMapped { va: Vaddr(cur) });
                    }
                    if table {
                        let child = pte.table_mfn::<F>();
                        self.prepare(env, req, level + 1, child, cur, se, need, maps)?;
                    } else {
                        return Err(Error::BlockInTheWay {
                            va: Vaddr(cur),
                            level,
                        });
                    }
                }
                Op::Remove => {
                    if table {
                        let child = pte.table_mfn::<F>();
                        self.prepare(env, req, level + 1, child, cur, se, need, maps)?;
                    } else if leaf {
                        return Err(Error::BlockInTheWay {
                            va: Vaddr(cur),
                            level,
                        });
                    }
                }
            }
            cur = se;
        }
        Ok(())
    }

    /// The prepare pass's rules for one target entry.
    #[inline]
    fn check_target(req: &Req, level: u8, va: u64, pte: Pte) -> Result<(), Error> {
        let table = pte.is_table(level);
        let leaf = pte.is_leaf(level);
        match req.op {
            Op::Insert { .. } => {
                if table || leaf {
                    return Err(Error::AlreadyMapped {
                        va: Vaddr(va),
                        level,
                    });
                }
            }
            Op::Populate => {}
            Op::Modify { attrs } => {
                if !(table || leaf) {
                    return Err(Error::NotMapped { va: Vaddr(va) });
                }
                Self::check_target_leaf(pte, level, va, table)?;
                let from = pte.attr_index();
                let to = attrs.mem().index();
                if from != to {
                    return Err(Error::AttrIndexChange {
                        va: Vaddr(va),
                        from,
                        to,
                    });
                }
            }
            Op::Remove => {
                if table || leaf {
                    Self::check_target_leaf(pte, level, va, table)?;
                }
            }
        }
        Ok(())
    }

    /// Checks a run of `n` target entries (at `eva`, the first one mapping
    /// `va`) with one scan for the first entry that breaks a rule; that one
    /// gets [`PageTable::check_target`]'s error, so the result is the one an
    /// entry-by-entry check gives.
    fn prepare_run<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        env: &mut Env<'_, A, T, M>,
        req: &Req,
        level: u8,
        eva: Vaddr,
        va: u64,
        n: usize,
    ) -> Result<(), Error> {
        let mut i = 0;
        while i < n {
            let at = entry_va(eva, i);
            let found = match req.op {
                Op::Insert { .. } => env.arch.find_pte(at, n - i, |e| {
                    let p = Pte(e);
                    p.is_table(level) || p.is_leaf(level)
                })?,
                Op::Modify { attrs } => {
                    let to = attrs.mem().index();
                    env.arch.find_pte(at, n - i, |e| {
                        let p = Pte(e);
                        !(p.is_leaf(level) && !p.is_contiguous() && p.attr_index() == to)
                    })?
                }
                Op::Remove => env.arch.find_pte(at, n - i, |e| {
                    let p = Pte(e);
                    p.is_table(level) || (p.is_leaf(level) && p.is_contiguous())
                })?,
                Op::Populate => None,
            };
            let Some(j) = found else {
                return Ok(());
            };
            let pte = Pte(env.arch.read_pte(entry_va(at, j))?);
            Self::check_target(req, level, va + (i + j) as u64 * level_size(level), pte)?;
            i += j + 1;
        }
        Ok(())
    }

    fn check_target_leaf(pte: Pte, level: u8, va: u64, table: bool) -> Result<(), Error> {
        if table {
            return Err(Error::TableInTheWay {
                va: Vaddr(va),
                level,
            });
        }
        if pte.is_contiguous() {
            return Err(Error::ContiguousEntry {
                va: Vaddr(va),
                level,
            });
        }
        Ok(())
    }

    /// Commits the request in the table `mfn` (mapped here). Returns whether
    /// the table is empty afterwards (meaningful for Remove only).
    #[allow(clippy::too_many_arguments)]
    fn commit<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &self,
        env: &mut Env<'_, A, T, M>,
        req: &Req,
        level: u8,
        mfn: Mfn,
        va: u64,
        end: u64,
        c: &mut Commit,
    ) -> Result<bool, Error> {
        Self::in_table(env, mfn, |env, tva| {
            c.report.table_maps += 1;
            if level == 3 {
                c.last_l3 = Some((va, mfn));
            }
            self.commit_in(env, req, level, tva, va, end, c)
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn commit_in<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &self,
        env: &mut Env<'_, A, T, M>,
        req: &Req,
        level: u8,
        tva: Vaddr,
        va: u64,
        end: u64,
        c: &mut Commit,
    ) -> Result<bool, Error> {
        if matches!(req.op, Op::Populate) && level == 3 {
            return Ok(false);
        }
        let mut cur = va;
        let mut kept = false;
        let mut pending = Unlinked::default();
        while cur < end {
            let eva = entry_va(tva, table_index(cur, level));
            let run = req.run_len(level, cur, end);
            // Runs: every insert, and modify / remove when they invalidate
            // globally (a small one invalidates leaf by leaf, below).
            if run > 0 && (matches!(req.op, Op::Insert { .. }) || req.flush_all) {
                Self::commit_run(env, req, level, eva, cur, run, c)?;
                cur += run as u64 * level_size(level);
                continue;
            }
            let se = slot_end(cur, level, end);
            let pte = Pte(env.arch.read_pte(eva)?);
            let target = req.is_target(level, cur, se);
            let table = pte.is_table(level);
            let leaf = pte.is_leaf(level);
            match req.op {
                Op::Insert { attrs, .. } if target => {
                    let contig = req.contiguous(level, cur);
                    let new = Pte::leaf::<F>(level, Paddr(req.pa_at(cur)), attrs, contig);
                    env.arch.write_pte(eva, new.0)?;
                    c.report.leaves += 1;
                }
                Op::Populate if target || (table && level + 1 == 3) => {}
                Op::Insert { .. } | Op::Populate => {
                    if table {
                        self.commit(env, req, level + 1, pte.table_mfn::<F>(), cur, se, c)?;
                    } else {
                        let new = self.new_table(env, req, level + 1, cur, se, c)?;
                        env.arch.write_pte(eva, Pte::table::<F>(new).0)?;
                    }
                }
                Op::Modify { attrs } => {
                    if target {
                        env.arch.write_pte(eva, pte.with_perm(attrs.perm()).0)?;
                        c.report.leaves += 1;
                        self.flush_leaf(env, req, cur, c);
                    } else {
                        self.commit(env, req, level + 1, pte.table_mfn::<F>(), cur, se, c)?;
                    }
                }
                Op::Remove => {
                    if target {
                        if leaf {
                            env.arch.write_pte(eva, 0)?;
                            c.report.leaves += 1;
                            self.flush_leaf(env, req, cur, c);
                        }
                    } else if table {
                        let child = pte.table_mfn::<F>();
                        let empty = self.commit(env, req, level + 1, child, cur, se, c)?;
                        if empty && env.alloc.can_free(child) {
                            // Unlink now; free only after the walk caches
                            // that may hold the link are invalidated.
                            env.arch.write_pte(eva, 0)?;
                            if !req.flush_all {
                                env.arch.tlb_flush_va(Vaddr(cur));
                                c.report.tlb_invalidations += 1;
                            }
                            if pending.len == pending.frames.len() {
                                Self::free_unlinked(env, req, &mut pending, c);
                            }
                            pending.frames[pending.len] = child;
                            pending.len += 1;
                        } else {
                            kept = true;
                        }
                    }
                }
            }
            cur = se;
        }
        Self::free_unlinked(env, req, &mut pending, c);
        if !matches!(req.op, Op::Remove) || kept {
            return Ok(false);
        }
        // Empty if the request covered the whole table, else look.
        let span = level_size(level) * ENTRIES as u64;
        if va.is_multiple_of(span) && end - va == span {
            return Ok(true);
        }
        // Live entries: a table or a leaf (`is_table || is_leaf`), as one
        // mask test — descriptor type 0b11 at levels 0 and 3 (a 0b01 is
        // neither there), any valid entry at the block levels 1 and 2.
        let (mask, want) = if block_allowed(level) {
            (Pte::VALID, Pte::VALID)
        } else {
            (Pte::VALID | Pte::TABLE, Pte::VALID | Pte::TABLE)
        };
        debug_assert!((0..4u64).all(|t| {
            let p = Pte(t);
            (p.is_table(level) || p.is_leaf(level)) == (t & mask == want)
        }));
        let live = env.arch.find_pte(tva, ENTRIES, |e| e & mask == want)?;
        Ok(live.is_none())
    }

    /// Commits a run of `n` target entries of one table (at `eva`, the
    /// first one mapping `va`), which the prepare pass checked: an insert
    /// writes them without reading them (they are invalid), as runs of
    /// descriptors that differ by the level size (split where the
    /// contiguous hint changes); a modify or remove (large updates only:
    /// one global invalidation at the end) reads and rewrites them in one
    /// pass.
    #[allow(clippy::too_many_arguments)]
    fn commit_run<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        env: &mut Env<'_, A, T, M>,
        req: &Req,
        level: u8,
        eva: Vaddr,
        va: u64,
        n: usize,
        c: &mut Commit,
    ) -> Result<(), Error> {
        let size = level_size(level);
        match req.op {
            Op::Insert { attrs, .. } => {
                if !req.flags.contiguous {
                    let first = Pte::leaf::<F>(level, Paddr(req.pa_at(va)), attrs, false);
                    env.arch.write_pte_run(eva, first.0, size, n)?;
                } else {
                    // The hint is the same for the entries of one aligned
                    // group of 16.
                    let group = size * CONTIG_ENTRIES;
                    let mut i = 0;
                    while i < n {
                        let at = va + i as u64 * size;
                        let k = (((at | (group - 1)) - at) / size + 1).min((n - i) as u64) as usize;
                        let contig = req.contiguous(level, at);
                        let first = Pte::leaf::<F>(level, Paddr(req.pa_at(at)), attrs, contig);
                        env.arch.write_pte_run(entry_va(eva, i), first.0, size, k)?;
                        i += k;
                    }
                }
                c.report.leaves += n as u64;
            }
            Op::Modify { attrs } => {
                let perm = attrs.perm();
                c.dirty = true;
                env.arch
                    .update_pte_run(eva, n, |e| Some(Pte(e).with_perm(perm).0))?;
                c.report.leaves += n as u64;
            }
            Op::Remove => {
                let mut cleared = 0u64;
                let res = env.arch.update_pte_run(eva, n, |e| {
                    if Pte(e).is_leaf(level) {
                        cleared += 1;
                        Some(0)
                    } else {
                        None
                    }
                });
                c.report.leaves += cleared;
                c.dirty |= cleared > 0;
                res?;
            }
            Op::Populate => {}
        }
        Ok(())
    }

    fn flush_leaf<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &self,
        env: &mut Env<'_, A, T, M>,
        req: &Req,
        va: u64,
        c: &mut Commit,
    ) {
        if req.flush_all {
            c.dirty = true;
        } else {
            env.arch.tlb_flush_va(Vaddr(va));
            c.report.tlb_invalidations += 1;
        }
    }

    /// Frees tables that were unlinked: first makes sure no TLB or walk
    /// cache can still reach them (one global invalidation for a large
    /// update; the per-VA ones were issued when unlinking), then frees.
    fn free_unlinked<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        env: &mut Env<'_, A, T, M>,
        req: &Req,
        pending: &mut Unlinked,
        c: &mut Commit,
    ) {
        if pending.len == 0 {
            return;
        }
        if req.flush_all {
            env.arch.tlb_flush_all();
            c.report.tlb_invalidations += 1;
            c.dirty = false;
        }
        env.arch.tlb_sync();
        for &mfn in &pending.frames[..pending.len] {
            env.alloc.free(mfn);
        }
        c.report.tables_freed += pending.len as u64;
        pending.len = 0;
    }

    /// Creates a table at `level` for `[va, end)`: takes a reserved frame,
    /// zeroes it, fills it, and returns it for the caller to link.
    fn new_table<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &self,
        env: &mut Env<'_, A, T, M>,
        req: &Req,
        level: u8,
        va: u64,
        end: u64,
        c: &mut Commit,
    ) -> Result<Mfn, Error> {
        let mfn = env.alloc.take().ok_or(Error::OutOfMemory {
            needed: 1,
            available: 0,
        })?;
        c.report.tables_created += 1;
        if level == 3 {
            c.last_l3 = Some((va, mfn));
        }
        let tva = match Self::map(env, mfn) {
            Ok(v) => v,
            Err(e) => {
                env.alloc.free(mfn);
                return Err(e);
            }
        };
        c.report.table_maps += 1;
        let res = env
            .arch
            .zero_page(tva)
            .map_err(Error::from)
            .and_then(|()| self.commit_in(env, req, level, tva, va, end, c));
        if res.is_err() {
            // Never linked anywhere, so no TLB can hold it: give back the
            // tables already made under it.
            Self::free_new_subtree(env, level, tva, c);
        }
        env.access.unmap_table(env.arch, mfn, tva);
        match res {
            Ok(_) => Ok(mfn),
            Err(e) => {
                env.alloc.free(mfn);
                c.report.tables_created -= 1;
                Err(e)
            }
        }
    }

    /// Frees every table linked below the new (unlinked) table at `tva`.
    fn free_new_subtree<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        env: &mut Env<'_, A, T, M>,
        level: u8,
        tva: Vaddr,
        c: &mut Commit,
    ) {
        if level == 3 {
            return;
        }
        for i in 0..ENTRIES {
            let Ok(raw) = env.arch.read_pte(entry_va(tva, i)) else {
                return;
            };
            let pte = Pte(raw);
            if !pte.is_table(level) {
                continue;
            }
            let child = pte.table_mfn::<F>();
            if let Ok(cva) = Self::map(env, child) {
                Self::free_new_subtree(env, level + 1, cva, c);
                env.access.unmap_table(env.arch, child, cva);
            }
            env.alloc.free(child);
            c.report.tables_created -= 1;
        }
    }

    /// Walks the tables for `va` and returns the leaf that maps it, `None` if
    /// it is unmapped.
    #[inline(always)]
    pub fn lookup<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &self,
        env: &mut Env<'_, A, T, M>,
        va: Vaddr,
    ) -> Result<Option<Leaf>, Error> {
        // In the remembered level-3 table: one table mapped, one read. A
        // provider or memory failure retries the whole walk, which reports it.
        if let Some(l3) = self.cached_l3(va.0) {
            if let Ok(tva) = env.access.map_table(env.arch, l3) {
                let read = env.arch.read_pte(entry_va(tva, table_index(va.0, 3)));
                env.access.unmap_table(env.arch, l3, tva);
                if let Ok(raw) = read {
                    let pte = Pte(raw);
                    return Ok(pte.is_leaf(3).then(|| Leaf {
                        level: 3,
                        pa: Paddr(pte.oa::<F>().0 + (va.0 & (PAGE_SIZE - 1))),
                        pte,
                        attrs: pte.attrs(),
                    }));
                }
            }
        }
        self.lookup_walk(env, va)
    }

    /// Refuses a single VA beyond the format's VA size.
    fn check_one_va(va: Vaddr) -> Result<(), Error> {
        if F::va_end_fits(va.0.saturating_add(1)) {
            Ok(())
        } else {
            Err(Error::VaOutOfRange {
                va,
                pages: 1,
                va_bits: F::VA_BITS,
            })
        }
    }

    /// [`PageTable::lookup`] from the root.
    #[inline(never)]
    fn lookup_walk<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &self,
        env: &mut Env<'_, A, T, M>,
        va: Vaddr,
    ) -> Result<Option<Leaf>, Error> {
        Self::check_one_va(va)?;
        let mut mfn = self.root;
        let mut level = F::ROOT_LEVEL;
        loop {
            let pte = Self::read_entry(env, mfn, table_index(va.0, level))?;
            if pte.is_table(level) {
                mfn = pte.table_mfn::<F>();
                level += 1;
                if level == 3 {
                    self.remember_l3(va.0, mfn);
                }
                continue;
            }
            if pte.is_leaf(level) {
                let off = va.0 & (level_size(level) - 1);
                let pa = Paddr(pte.oa::<F>().0 + off);
                return Ok(Some(Leaf {
                    level,
                    pa,
                    pte,
                    attrs: pte.attrs(),
                }));
            }
            return Ok(None);
        }
    }

    /// Calls `f(va, leaf)` for every leaf mapping in `[va, va + pages * 4 KiB)`,
    /// visiting each table once (a range translation, not a lookup per page).
    /// `leaf.pa` is the address `va` (the start of the visited part) maps to.
    pub fn for_each_leaf<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &self,
        env: &mut Env<'_, A, T, M>,
        va: Vaddr,
        pages: u64,
        f: &mut dyn FnMut(Vaddr, u64, Leaf),
    ) -> Result<(), Error> {
        self.for_each_leaf_with(env, va, pages, f)
    }

    /// [`PageTable::for_each_leaf`] with a statically dispatched callback
    /// (the visitor is monomorphised for `f`, so a small callback inlines).
    pub fn for_each_leaf_with<A: Arch, T: TableAccess<A>, M: FrameAlloc, G>(
        &self,
        env: &mut Env<'_, A, T, M>,
        va: Vaddr,
        pages: u64,
        mut f: G,
    ) -> Result<(), Error>
    where
        G: FnMut(Vaddr, u64, Leaf),
    {
        let req = Self::check(va, pages, Op::Remove, MapFlags::PAGES)?;
        self.visit(env, F::ROOT_LEVEL, self.root, req.va, req.end, &mut f)
    }

    fn visit<A: Arch, T: TableAccess<A>, M: FrameAlloc, G: FnMut(Vaddr, u64, Leaf)>(
        &self,
        env: &mut Env<'_, A, T, M>,
        level: u8,
        mfn: Mfn,
        va: u64,
        end: u64,
        f: &mut G,
    ) -> Result<(), Error> {
        let tva = Self::map(env, mfn)?;
        let size = level_size(level);
        let mut res = Ok(());
        let mut cur = va;
        // The entries of this table in one scan: leaves go to `f` as they
        // are read (the attributes decoded once per distinct set of
        // attribute bits), a table entry stops the scan to be visited.
        let mut memo: (u64, Option<Attrs>) = (u64::MAX, None);
        if level == 3 {
            // Pages only: every slot is one whole page, no table entries.
            let n = ((end - cur) / PAGE_SIZE) as usize;
            let mut at = cur;
            let read = env
                .arch
                .find_pte(entry_va(tva, table_index(cur, 3)), n, |e| {
                    let pte = Pte(e);
                    if pte.is_leaf(3) {
                        let key = e & ATTR_BITS;
                        if key != memo.0 {
                            memo = (key, pte.attrs());
                        }
                        f(
                            Vaddr(at),
                            PAGE_SIZE,
                            Leaf {
                                level: 3,
                                pa: pte.oa::<F>(),
                                pte,
                                attrs: memo.1,
                            },
                        );
                    }
                    at += PAGE_SIZE;
                    false
                });
            env.access.unmap_table(env.arch, mfn, tva);
            return read.map(|_| ()).map_err(Error::from);
        }
        while cur < end {
            let first = table_index(cur, level);
            let n = (((end - 1 - (cur & !(size - 1))) / size) as usize + 1).min(ENTRIES - first);
            let mut at = cur;
            let found = env.arch.find_pte(entry_va(tva, first), n, |e| {
                let pte = Pte(e);
                if pte.is_table(level) {
                    return true;
                }
                let se = slot_end(at, level, end);
                if pte.is_leaf(level) {
                    let key = e & ATTR_BITS;
                    if key != memo.0 {
                        memo = (key, pte.attrs());
                    }
                    f(
                        Vaddr(at),
                        se - at,
                        Leaf {
                            level,
                            pa: Paddr(pte.oa::<F>().0 + (at & (size - 1))),
                            pte,
                            attrs: memo.1,
                        },
                    );
                }
                at = se;
                false
            });
            match found {
                Err(e) => {
                    res = Err(e.into());
                    break;
                }
                Ok(None) => break,
                Ok(Some(_)) => {
                    let se = slot_end(at, level, end);
                    let pte = match env.arch.read_pte(entry_va(tva, table_index(at, level))) {
                        Ok(raw) => Pte(raw),
                        Err(e) => {
                            res = Err(e.into());
                            break;
                        }
                    };
                    if let Err(e) = self.visit(env, level + 1, pte.table_mfn::<F>(), at, se, f) {
                        res = Err(e);
                        break;
                    }
                    cur = se;
                }
            }
        }
        env.access.unmap_table(env.arch, mfn, tva);
        res
    }

    /// Writes the walk for `va` (Xen's `dump_hyp_walk`): each level's table,
    /// index and entry, down to the leaf or the first invalid entry. The root
    /// is checked against the root register.
    pub fn dump<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &self,
        env: &mut Env<'_, A, T, M>,
        va: Vaddr,
        out: &mut dyn fmt::Write,
    ) -> Result<(), Error> {
        let hw_root = env.arch.root();
        let _ = writeln!(
            out,
            "Walking hypervisor VA {va} ({}) root {} (root register {}{})",
            F::NAME,
            self.root.paddr(),
            hw_root,
            if hw_root == self.root.paddr() {
                ""
            } else {
                ", a different table"
            }
        );
        Self::check_one_va(va)?;
        let mut mfn = self.root;
        let mut level = F::ROOT_LEVEL;
        loop {
            let idx = table_index(va.0, level);
            let pte = Self::read_entry(env, mfn, idx)?;
            let kind = if pte.is_table(level) {
                "table"
            } else if pte.is_leaf(level) {
                if level == 3 {
                    "page"
                } else {
                    "block"
                }
            } else {
                "invalid"
            };
            let _ = writeln!(
                out,
                "  L{level}[{idx:#05x}] in {} = {:#018x} {kind}",
                mfn.paddr(),
                pte.0
            );
            if pte.is_table(level) {
                mfn = pte.table_mfn::<F>();
                level += 1;
                continue;
            }
            if pte.is_leaf(level) {
                let off = va.0 & (level_size(level) - 1);
                let attrs = pte.attrs();
                let _ = match attrs {
                    Some(a) => writeln!(out, "  -> PA {} {a}", Paddr(pte.oa::<F>().0 + off)),
                    None => writeln!(
                        out,
                        "  -> PA {} (attributes not hvmm's)",
                        Paddr(pte.oa::<F>().0 + off)
                    ),
                };
            }
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate alloc as rust_alloc;

    use super::*;
    use crate::host::HostMemory;
    use crate::Arm64;

    const VA: Vaddr = Vaddr(0x4000_0000);

    fn mapped(pages: u64) -> (HostMemory, PageTable<Arm64>) {
        let mut mem = HostMemory::new(16);
        let mut pt = PageTable::<Arm64>::new(mem.alloc_root().unwrap());
        let op = Op::Insert {
            pa: Paddr(0x8000_0000),
            attrs: Attrs::RW,
        };
        pt.update(&mut mem.env(), VA, pages, op, MapFlags::PAGES)
            .unwrap();
        (mem, pt)
    }

    /// The one-page walk leaves exactly what the general update leaves.
    #[test]
    fn single_page_updates_match_the_general_path() {
        let (mut a, mut pa) = mapped(1);
        let (mut b, mut pb) = mapped(1);
        for i in 1..40u64 {
            let va = Vaddr(VA.0 + i * PAGE_SIZE);
            let op = Op::Insert {
                pa: Paddr(0x8000_0000 + i * PAGE_SIZE),
                attrs: Attrs::RW,
            };
            let r = pa.update(&mut a.env(), va, 1, op, MapFlags::PAGES).unwrap();
            // The remembered walk: only the level-3 table is mapped.
            assert_eq!((r.leaves, r.table_maps, r.tlb_invalidations), (1, 1, 0));
        }
        let op = Op::Insert {
            pa: Paddr(0x8000_0000 + PAGE_SIZE),
            attrs: Attrs::RW,
        };
        pb.update(
            &mut b.env(),
            Vaddr(VA.0 + PAGE_SIZE),
            39,
            op,
            MapFlags::PAGES,
        )
        .unwrap();
        assert_eq!(a.arch.snapshot(), b.arch.snapshot());
        let tlb = a.arch.tlb_ops;
        let r = pa
            .update(
                &mut a.env(),
                VA,
                1,
                Op::Modify { attrs: Attrs::RO },
                MapFlags::PAGES,
            )
            .unwrap();
        assert_eq!((r.leaves, r.tlb_invalidations), (1, 1));
        assert_eq!(a.arch.tlb_ops, tlb + 1);
        pb.update(
            &mut b.env(),
            VA,
            1,
            Op::Modify { attrs: Attrs::RO },
            MapFlags::PAGES,
        )
        .unwrap();
        assert_eq!(a.arch.snapshot(), b.arch.snapshot());
    }

    /// Refusals found by the one-page walk are the general path's, and
    /// nothing is written.
    #[test]
    fn single_page_refusals_are_unchanged() {
        let (mut a, mut pa) = mapped(2);
        let before = a.arch.snapshot();
        let again = Op::Insert {
            pa: Paddr(0x9000_0000),
            attrs: Attrs::RW,
        };
        assert!(matches!(
            pa.update(&mut a.env(), VA, 1, again, MapFlags::PAGES),
            Err(Error::AlreadyMapped { level: 3, .. })
        ));
        let absent = Vaddr(VA.0 + 8 * PAGE_SIZE);
        assert!(matches!(
            pa.update(
                &mut a.env(),
                absent,
                1,
                Op::Modify { attrs: Attrs::RO },
                MapFlags::PAGES
            ),
            Err(Error::NotMapped { .. })
        ));
        assert!(matches!(
            pa.update(
                &mut a.env(),
                VA,
                1,
                Op::Modify {
                    attrs: Attrs::DEVICE
                },
                MapFlags::PAGES
            ),
            Err(Error::AttrIndexChange { .. })
        ));
        assert_eq!(a.arch.snapshot(), before);
        // A page under a missing table still goes through the general path.
        let far = Vaddr(VA.0 + (1 << 30));
        let r = pa
            .update(&mut a.env(), far, 1, again, MapFlags::PAGES)
            .unwrap();
        assert_eq!(r.tables_created, 2);
    }

    /// Map page by page, remove everything (the tables are freed), map page
    /// by page again: the remembered walk never outlives its table.
    #[test]
    fn remembered_walk_is_forgotten_when_tables_are_freed() {
        let mut mem = HostMemory::new(16);
        let mut pt = PageTable::<Arm64>::new(mem.alloc_root().unwrap());
        let pristine = mem.arch.snapshot();
        let op = |i: u64| Op::Insert {
            pa: Paddr(0x8000_0000 + i * PAGE_SIZE),
            attrs: Attrs::RW,
        };
        for round in 0..3 {
            for i in 0..8u64 {
                let va = Vaddr(VA.0 + i * PAGE_SIZE);
                pt.update(&mut mem.env(), va, 1, op(i + round), MapFlags::PAGES)
                    .unwrap();
            }
            assert_eq!(mem.frames.in_use, 4);
            let r = pt
                .update(&mut mem.env(), VA, 8, Op::Remove, MapFlags::PAGES)
                .unwrap();
            assert_eq!(r.tables_freed, 3);
            assert_eq!(mem.frames.in_use, 1);
            assert_eq!(mem.arch.snapshot()[1..], pristine[1..]);
            assert_eq!(pt.lookup(&mut mem.env(), VA).unwrap(), None);
            // The freed level-3 table is the next frame handed out: a stale
            // walk would write into whatever it became.
            let far = Vaddr(VA.0 + (8 << 30));
            pt.update(&mut mem.env(), far, 2, op(0), MapFlags::PAGES)
                .unwrap();
            pt.update(&mut mem.env(), far, 2, Op::Remove, MapFlags::PAGES)
                .unwrap();
        }
    }

    /// Random one-page inserts, modifies, removes and lookups over a few
    /// 2 MiB regions, with a pool small enough to run out: the table with
    /// the remembered walk and one that forgets it before every call give
    /// the same results and the same table bytes after every step.
    #[test]
    fn remembered_walk_changes_no_result() {
        let mut a = HostMemory::new(8);
        let mut pa = PageTable::<Arm64>::new(a.alloc_root().unwrap());
        let mut b = HostMemory::new(8);
        let mut pb = PageTable::<Arm64>::new(b.alloc_root().unwrap());
        let mut s: u64 = 0x2545_f491_4f6c_dd1d;
        let (mut hits, mut oom, mut region) = (0, 0, 0);
        // Miri interprets every step: a shorter run still covers each path.
        let steps = if cfg!(miri) { 500 } else { 20_000 };
        for _ in 0..steps {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            if (s >> 8).is_multiple_of(8) {
                region = (s >> 11) % 6;
            }
            let va = Vaddr(VA.0 + region * (3 << 21) + ((s >> 16) % 4) * PAGE_SIZE);
            let pages = if (s >> 24).is_multiple_of(16) { 3 } else { 1 };
            let op = match (s >> 32) % 5 {
                0 | 1 => Op::Insert {
                    pa: Paddr(0x8000_0000 + ((s >> 40) % 64) * PAGE_SIZE),
                    attrs: Attrs::RW,
                },
                2 => Op::Modify { attrs: Attrs::RO },
                3 => Op::Remove,
                _ => {
                    pb.forget_walk();
                    let la = pa.lookup(&mut a.env(), va);
                    let lb = pb.lookup(&mut b.env(), va);
                    assert_eq!(la, lb);
                    continue;
                }
            };
            pb.forget_walk();
            let ra = pa.update(&mut a.env(), va, pages, op, MapFlags::PAGES);
            let rb = pb.update(&mut b.env(), va, pages, op, MapFlags::PAGES);
            assert_eq!(ra.is_ok(), rb.is_ok(), "{op:?} at {va}: {ra:?} vs {rb:?}");
            if let (Err(ea), Err(eb)) = (&ra, &rb) {
                assert_eq!(ea, eb);
                oom += u32::from(matches!(ea, Error::OutOfMemory { .. }));
            }
            if let (Ok(x), Ok(y)) = (ra, rb) {
                hits += u32::from(x.table_maps < y.table_maps);
                assert_eq!(
                    (x.leaves, x.tables_created, x.tables_freed),
                    (y.leaves, y.tables_created, y.tables_freed)
                );
                assert_eq!(x.tlb_invalidations, y.tlb_invalidations);
            }
            assert_eq!(a.arch.snapshot(), b.arch.snapshot());
            assert_eq!(a.frames.in_use, b.frames.in_use);
        }
        // The walk was remembered and used, and the pool did run out.
        assert!(hits > steps / 20, "{hits} calls used the remembered walk");
        assert!(oom > 0);
    }

    /// The range walk reports exactly what a lookup per page finds, over
    /// pages, 2 MiB blocks, holes and a range that starts and ends inside
    /// blocks and tables.
    #[test]
    fn range_walk_matches_lookups() {
        let mut mem = HostMemory::new(32);
        let mut pt = PageTable::<Arm64>::new(mem.alloc_root().unwrap());
        let mib2 = 2 << 20;
        let map = |pt: &mut PageTable<Arm64>, mem: &mut HostMemory, va: u64, pages, pa, attrs| {
            let op = Op::Insert {
                pa: Paddr(pa),
                attrs,
            };
            pt.update(&mut mem.env(), Vaddr(va), pages, op, MapFlags::BLOCKS)
                .unwrap();
        };
        map(
            &mut pt,
            &mut mem,
            VA.0 + 3 * PAGE_SIZE,
            700,
            0x9000_3000,
            Attrs::RW,
        );
        map(
            &mut pt,
            &mut mem,
            VA.0 + 2 * mib2,
            1024 + 5,
            0xa000_0000,
            Attrs::RO,
        );
        map(
            &mut pt,
            &mut mem,
            VA.0 + 6 * mib2 + 9 * PAGE_SIZE,
            3,
            0xb000_0000,
            Attrs::RX,
        );
        let start = VA.0 + PAGE_SIZE;
        let pages = 7 * 512 - 3;
        let mut seen = rust_alloc::vec::Vec::new();
        pt.for_each_leaf_with(&mut mem.env(), Vaddr(start), pages, |va, len, leaf| {
            seen.push((va.0, len, leaf));
        })
        .unwrap();
        let mut next = 0;
        for i in 0..pages {
            let va = start + i * PAGE_SIZE;
            let want = pt.lookup(&mut mem.env(), Vaddr(va)).unwrap();
            while next < seen.len() && seen[next].0 + seen[next].1 <= va {
                next += 1;
            }
            let got = seen.get(next).filter(|s| s.0 <= va).map(|s| {
                let mut leaf = s.2;
                leaf.pa = Paddr(leaf.pa.0 + (va - s.0));
                leaf
            });
            assert_eq!(got, want, "{va:#x}");
        }
        assert!(seen.iter().any(|s| s.2.level == 2));
    }
}
