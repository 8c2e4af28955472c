//! The page-table update engine: Xen's `xen_pt_update`, rebuilt, for every
//! table a hypervisor keeps — its own stage 1 and each guest's stage 2.
//!
//! One entry point, [`PageTable::update`], performs an [`Op`] over a range of
//! input addresses (VAs for stage 1, IPAs for stage 2). It works in two
//! passes, Hafnium-style:
//!
//! 1. **prepare** walks the range read-only, checks every entry against the
//!    operation's rules (no silent replacement, no change of memory type...)
//!    and counts the tables the update must create — new tables for an
//!    insert, and the replacement subtrees of the blocks it must split; then
//!    it reserves that many frames and the table-access slots the commit
//!    holds. Any refusal or shortage ends the update here, before a single
//!    descriptor is written.
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
//! # Any granularity: splits, merges, contiguous runs
//!
//! [`Op::Modify`] and [`Op::Remove`] act on whatever is mapped, at whatever
//! level: a leaf (page or block) the range covers whole is changed in place;
//! a block the range covers in part is **split**. The caller's
//! [`MapFlags`] say what *new* mappings may use (blocks, the contiguous
//! hint), never what old ones must be.
//!
//! * **Split.** The replacement table is built unlinked — the old block's
//!   translation copied into entries one level down (themselves blocks where
//!   they stay uniform), the request applied to the part it covers, deeper
//!   splits where the range ends inside a child — then swapped in with
//!   break-before-make: the block entry is made invalid, the TLB entries for
//!   the whole old block are invalidated in the table's regime (and VMID),
//!   the invalidation completes, and only then is the table entry written.
//!   The frames were reserved by prepare, so a shortage changes nothing.
//!   A Modify that would not change the block does not split it.
//! * **Contiguous runs.** An entry with the contiguous hint belongs to an
//!   aligned group of 16 that the TLB may hold as one entry. Changing any
//!   member breaks the whole group: all 16 are made invalid, invalidated one
//!   by one, and remade — without the hint, unless a Modify covered the
//!   whole group (then the hint stays, with the new permission).
//! * **Merge** (with [`MapFlags::merge`], for the block sizes
//!   [`MapFlags::block_at`] allows): after an update, a table it went through
//!   whose 512 entries now map one aligned, physically contiguous range with
//!   one set of attributes is replaced by a block, again with
//!   break-before-make; the table is freed after the invalidation completed.
//!
//! ## When a live split is safe
//!
//! The break is a window in which the entry is invalid: an access through it
//! by any CPU faults.
//!
//! * **Stage 2** (guest tables): a guest access in the window takes a
//!   stage-2 translation fault to the hypervisor, which finds the mapping
//!   present again once the update (under the table lock) finished, and
//!   retries the access. Splits and merges of a running guest's memory are
//!   safe.
//! * **Stage 1** (the hypervisor's own table): safe only if nothing accesses
//!   the broken range during the window — no other CPU (data, stack or code)
//!   and not the updating CPU's own code, stack or the table pages it writes
//!   through. The engine refuses ([`Error::BreakUnmapsTable`]) a split whose
//!   break would unmap the table page it must write the new entry through
//!   (for instance a direct-map block holding its own parent table); the
//!   rest is the caller's to guarantee. CPUs with FEAT_BBM level 2 may change
//!   a block's size without the break and without a TLB conflict abort; hvmm
//!   does not use that: it always breaks.
//!
//! # TLB rules
//!
//! A pure insert needs no invalidation (invalid entries are never cached),
//! only an `isb`. Modify and Remove invalidate every leaf they change — by
//! address for small updates, one whole-regime invalidation for large ones —
//! and a table emptied by Remove is unlinked, invalidated and only then
//! freed. Stage-1 invalidations are the hypervisor's (`TLBI VAE2IS`,
//! `ALLE2IS`); stage-2 ones are scoped to the table's VMID
//! ([`Arch::tlb_flush_ipa`], then [`Arch::tlb_flush_guest_s1`] for the
//! guest's combined entries, or [`Arch::tlb_flush_vmid`]).
//!
//! # Runs of leaves
//!
//! Inside one table, the entries an update targets at the leaf level form a
//! run. Both passes handle a run as a whole through the [`Arch`] run
//! methods: prepare scans it for the first entry that breaks a rule
//! ([`Arch::find_pte`]; that entry gets the same error an entry-by-entry
//! check gives), commit writes it without reading it back for an insert
//! ([`Arch::write_pte_run`]: prepare proved every entry invalid, and a new
//! table is zeroed) and rewrites it in one pass for a large modify or remove
//! ([`Arch::update_pte_run`]; small ones go leaf by leaf, each followed by
//! its own invalidation). The default run methods write descriptor by
//! descriptor with [`Arch::write_pte`] (`dsb; str; dsb` each; the machine
//! model checks every write). The hardware back ends relax that to one `dsb`
//! before the run and one after it: an insert run only turns invalid entries
//! valid (nothing can have cached them, nothing uses them before the update
//! returns, after the trailing `dsb` and the `isb`), and the modify / remove
//! runs take effect through the invalidation that follows them, ordered
//! after the trailing `dsb`. Break-before-make never uses a relaxed run: its
//! breaks, invalidation and makes are single writes in that order.

use crate::access::{AccessError, TableAccess};
use crate::addr::{InputAddr, Mfn, Paddr, Vaddr, Vmid, PAGE_SIZE};
use crate::arch::Arch;
use crate::attr::{Attrs, LeafAttrs, MairMap, MapFlags};
use crate::error::Error;
use crate::format::{
    block_allowed, level_size, table_index, Format, FormatCheck, Pte, Stage, Stage1Format,
    Stage2Format, CONTIG_ENTRIES, ENTRIES,
};
use crate::frames::{FrameAlloc, NoFrames, TableMeta};
use core::cell::Cell;
use core::fmt;
use core::marker::PhantomData;

/// Above this many changed leaves, Modify and Remove invalidate the whole TLB
/// (of the regime, or of the VMID) once instead of entry by entry.
pub const TLB_FLUSH_ALL_THRESHOLD: u64 = 64;

/// What an update does. `A` is the regime's attribute type: [`Attrs`] for
/// the hypervisor's stage 1, [`crate::S2Attrs`] for a guest's stage 2.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Op<A = Attrs> {
    /// Map the range to `pa..` with `attrs`. Refused if any entry is valid.
    Insert {
        /// Physical address of the first page.
        pa: Paddr,
        /// Memory type and permission.
        attrs: A,
    },
    /// Change the permission of existing mappings, at whatever level they
    /// are (blocks the range covers in part are split). The memory type
    /// must stay.
    Modify {
        /// The new attributes; their memory type must equal the current one.
        attrs: A,
    },
    /// Unmap the range, at whatever level it is mapped (blocks the range
    /// covers in part are split). Absent mappings are fine.
    Remove,
    /// Create the intermediate tables down to level 3, map nothing.
    Populate,
}

impl<A> Op<A> {
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
    /// Leaf descriptors the operation wrote (inserted, modified or cleared).
    pub leaves: u64,
    /// Table pages created (new tables and split replacements).
    pub tables_created: u64,
    /// Table pages freed (emptied by Remove, or replaced by a merge).
    pub tables_freed: u64,
    /// Table pages mapped through the provider (both passes).
    pub table_maps: u64,
    /// TLB invalidations issued (by address or whole regime / VMID).
    pub tlb_invalidations: u64,
    /// Blocks split into tables.
    pub splits: u64,
    /// Tables merged into blocks.
    pub merges: u64,
    /// Contiguous groups broken and remade.
    pub contiguous_breaks: u64,
}

impl core::ops::AddAssign for UpdateReport {
    fn add_assign(&mut self, o: Self) {
        self.leaves += o.leaves;
        self.tables_created += o.tables_created;
        self.tables_freed += o.tables_freed;
        self.table_maps += o.table_maps;
        self.tlb_invalidations += o.tlb_invalidations;
        self.splits += o.splits;
        self.merges += o.merges;
        self.contiguous_breaks += o.contiguous_breaks;
    }
}

/// A leaf mapping found by [`PageTable::lookup`] or a range walk.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Leaf<A = Attrs> {
    /// Level of the entry (3 for a page, 2 or 1 for a block).
    pub level: u8,
    /// Physical address the looked-up address translates to (offset
    /// included).
    pub pa: Paddr,
    /// The raw descriptor.
    pub pte: Pte,
    /// Attributes, if the descriptor holds ones the regime can express.
    pub attrs: Option<A>,
}

/// The three things an update works with: the processor, the way to reach
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

/// Whose TLB entries a table's changes invalidate.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum TlbScope {
    /// The hypervisor's own (EL2 / HYP stage 1).
    Hyp,
    /// A guest's (stage 2 and the guest's combined entries), by VMID.
    Guest(Vmid),
}

/// A page table of format `F`: a root (one frame, or a stage-2 root's
/// concatenated frames), how its attributes are encoded (the MAIR map, for
/// stage 1) and whose TLB entries it invalidates (the hypervisor's, or a
/// guest's VMID). Updates take `&mut self`: holding the table is holding its
/// lock.
///
/// A table owns its root: [`PageTable::create`] / [`PageTable::create_stage2`]
/// allocate a fresh one, [`PageTable::destroy`] frees every table page. Two
/// handles over one root would corrupt each other (each remembers the last
/// level-3 table it reached), so adopting an existing root
/// ([`PageTable::from_root`]) is `unsafe`: safe code cannot make a second.
#[derive(Debug)]
pub struct PageTable<F: Format> {
    root: Mfn,
    mair: MairMap,
    scope: TlbScope,
    walk: Cell<WalkCache>,
    _format: PhantomData<F>,
}

/// The last level-3 table a walk of this [`PageTable`] reached through table
/// descriptors from the root, and the 2 MiB of input addresses it covers.
/// The next one-page update or lookup in that 2 MiB starts there instead of
/// at the root (Xen maps large ranges one page per call).
///
/// Why it stays right: the links from the root down to a level-3 table
/// change only when a table is unlinked — a Remove that frees an emptied
/// table, a merge, or a failed update (whose commit may have linked new
/// tables it then leaves or frees). Every update goes through `&mut self`; a
/// Remove, an update that may merge, or a failure forgets the cache, and
/// nothing else in the engine replaces a valid table descriptor (an Insert
/// refuses valid entries, Modify replaces leaves only — a split turns a block
/// into a table, never a table into anything). Code that rewrites links behind
/// the engine's back must call [`PageTable::forget_walk`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct WalkCache {
    /// `va >> 21` of the 2 MiB the table maps.
    region: u64,
    /// The level-3 table.
    l3: Mfn,
    /// The block mapping the table's [`TableMeta`] tracks — 0 if none, or
    /// if the slot is unknown — or [`PATTERN_UNREAD`]: a one-page update
    /// then needs neither to unpack the slot nor to test it. Both never
    /// change while the cache holds: the mapping is set when the table is
    /// made, a slot becomes unknown only when an update fails or the table
    /// is freed, and either forgets the cache.
    pattern: u64,
}

impl WalkCache {
    /// No walk remembered: a region no address has (`va >> 21` of a 64-bit
    /// address is below 2^43).
    const NONE: WalkCache = WalkCache {
        region: u64::MAX,
        l3: Mfn(0),
        pattern: PATTERN_UNREAD,
    };
}

/// [`WalkCache::pattern`] not read from the slot yet (never a descriptor
/// the engine writes: the top bits are software bits it leaves clear).
const PATTERN_UNREAD: u64 = u64::MAX;

/// The descriptor bits a leaf's attributes are decoded from (every
/// attribute field of both stages): memory type, AP / S2AP, SH, AF, XN.
const ATTR_BITS: u64 = (0xf << 2) | (3 << 6) | (3 << 8) | (1 << 10) | Pte::XN;

/// Shift of the input-address span of one level-3 table.
const L3_SPAN_SHIFT: u32 = 21;

/// The checked request of one update.
#[derive(Copy, Clone)]
struct Req<A> {
    va: u64,
    end: u64,
    /// PA of `va` (Insert only; 0 otherwise).
    pa: u64,
    op: Op<A>,
    flags: MapFlags,
    /// The attributes' descriptor bits (Insert, Modify).
    bits: u64,
    /// The permission bits a Modify writes.
    perm: u64,
    /// The memory-type bits a Modify must find.
    mem: u64,
    /// Invalidate globally once at the end rather than per leaf.
    flush_all: bool,
}

impl<A: LeafAttrs> Req<A> {
    #[inline]
    fn pa_at(&self, va: u64) -> u64 {
        self.pa + (va - self.va)
    }

    /// Whether the Insert / Populate entry at `level` covering
    /// `[va, slot_end)` is the target (leaf) level of this request.
    #[inline]
    fn is_target(&self, level: u8, va: u64, slot_end: u64) -> bool {
        if level == 3 {
            return true;
        }
        if matches!(self.op, Op::Populate) || !self.flags.block_at(level) {
            return false;
        }
        let size = level_size(level);
        va.is_multiple_of(size) && slot_end - va == size && self.pa_at(va).is_multiple_of(size)
    }

    /// Whether a full, aligned insert slot at `level` inside the range is
    /// the target level ([`Req::is_target`] for every such slot: the PA
    /// offset is the same for all).
    #[inline]
    fn full_slot_target(&self, level: u8) -> bool {
        if level == 3 {
            return true;
        }
        if !matches!(self.op, Op::Insert { .. }) || !self.flags.block_at(level) {
            return false;
        }
        self.pa
            .wrapping_sub(self.va)
            .is_multiple_of(level_size(level))
    }

    /// The run of full insert target slots of one table that starts at
    /// `va`: the number of entries, or 0 when `va` does not start one.
    #[inline]
    fn run_len(&self, level: u8, va: u64, end: u64) -> usize {
        if !matches!(self.op, Op::Insert { .. }) || !self.full_slot_target(level) {
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

    /// What Modify / Remove make of the leaf `old` they cover whole.
    #[inline(always)]
    fn applied(&self, old: u64) -> u64 {
        match self.op {
            Op::Remove => 0,
            _ => (old & !A::PERM_MASK) | self.perm,
        }
    }

    /// Whether Modify / Remove change the leaf `old` they cover (a Modify
    /// to the permission it has already changes nothing).
    #[inline(always)]
    fn changes(&self, old: u64) -> bool {
        self.applied(old) != old
    }

    /// The part of `[lo, hi)` the request covers, if any.
    #[inline(always)]
    fn overlap(&self, lo: u64, hi: u64) -> Option<(u64, u64)> {
        let a = lo.max(self.va);
        let b = hi.min(self.end);
        (a < b).then_some((a, b))
    }
}

/// Per-update bookkeeping during commit.
struct Commit {
    report: UpdateReport,
    /// Leaves changed since the last whole-regime invalidation (large
    /// updates).
    dirty: bool,
    /// Stage 2: invalidations by IPA issued and not yet followed by the
    /// invalidation of the guest's combined entries.
    by_ipa: bool,
    /// The last level-3 table the commit entered or created, and an address
    /// it maps (for the [`WalkCache`]).
    last_l3: Option<(u64, Mfn)>,
}

/// What the commit of one table leaves behind, for its parent.
#[derive(Copy, Clone, PartialEq, Eq)]
enum After {
    /// Nothing the parent acts on.
    Kept,
    /// No live entry left (Remove): the parent may unlink and free it.
    Empty,
    /// Every entry is a leaf and together they map one aligned, contiguous
    /// range with these attribute bits from this PA: the parent may merge
    /// it into a block.
    Uniform { pa: u64, bits: u64 },
}

/// Tables unlinked by a Remove and not yet freed: they are freed in
/// batches, after one invalidation per batch. A table unlinked with what
/// is below it (a subtree removed whole, its leaves never read) is freed
/// with every table under it. Each entry packs the frame and the level it
/// is freed as (one word, so that a new batch is a plain zeroing).
struct Unlinked {
    frames: [u64; 16],
    len: usize,
}

impl Unlinked {
    #[inline(always)]
    fn new() -> Self {
        Unlinked {
            frames: [0; 16],
            len: 0,
        }
    }

    #[inline(always)]
    fn is_full(&self) -> bool {
        self.len == self.frames.len()
    }

    /// Records `mfn`, to be freed as a table of `level`.
    #[inline(always)]
    fn push(&mut self, mfn: Mfn, level: u8) {
        self.frames[self.len] = (mfn.0 << 3) | u64::from(level);
        self.len += 1;
    }
}

/// The level an [`Unlinked`] table emptied entry by entry is recorded with
/// (freed as it is; a subtree removed whole is recorded with its level).
const NO_SUBTREE: u8 = 4;

/// What the one-page walk found to do.
#[derive(Copy, Clone, PartialEq, Eq)]
enum One {
    /// Write the level-3 entry.
    Leaf,
    /// Make the missing tables below an invalid entry, then the leaf.
    Create,
    /// Nothing mapped there (Remove).
    Absent,
}

/// A table the one-page walk holds: its frame, its mapping, its counts and
/// its entry for the page.
#[derive(Copy, Clone)]
struct Held {
    mfn: Mfn,
    tva: Vaddr,
    meta: TableMeta,
    pte: u64,
    /// Still mapped (not freed by the update).
    mapped: bool,
}

impl Held {
    const NONE: Held = Held {
        mfn: Mfn(0),
        tva: Vaddr(0),
        meta: TableMeta::UNKNOWN,
        pte: 0,
        mapped: false,
    };
}

/// Whether entry `e` of a level-`level` table is live — a table or a leaf,
/// what must be gone before the table may be freed: any valid entry at the
/// block levels 1 and 2, descriptor type 0b11 at levels 0 and 3 (a 0b01 is
/// neither there).
#[inline(always)]
fn is_live(level: u8, e: u64) -> bool {
    if block_allowed(level) {
        e & Pte::VALID != 0
    } else {
        e & 3 == 3
    }
}

/// The engine's side of [`TableMeta`]: a table's counts kept up to date as
/// its entries change. Every change of a known slot goes through these.
impl TableMeta {
    /// The table now links `child`, a table the engine just made: if the
    /// allocator keeps no counts for it, this table is marked as linking
    /// untracked tables.
    #[inline(always)]
    fn linked<M: FrameAlloc>(&mut self, alloc: &mut M, child: Mfn) {
        if self.is_known() && !load_meta(alloc, child).is_known() {
            self.set_untracked();
        }
    }

    /// Whether entry `idx` (at `level`), holding `e`, equals the tracked
    /// block mapping `pattern`'s ([`TableMeta::pattern`]; never a valid
    /// entry for pattern 0).
    #[inline(always)]
    fn matches(pattern: u64, level: u8, idx: usize, e: u64) -> bool {
        e & !Pte::CONTIG == pattern.wrapping_add(idx as u64 * level_size(level))
    }

    /// Entry `idx` of the level-`level` table changes from `old` to `new`.
    /// (No test of the slot first: an unknown one stays unknown, its other
    /// fields mean nothing.)
    #[inline(always)]
    fn note(&mut self, level: u8, idx: usize, old: u64, new: u64) {
        self.note_with(self.pattern(), level, idx, old, new);
    }

    /// [`TableMeta::note`] with the slot's tracked mapping already at hand.
    #[inline(always)]
    fn note_with(&mut self, pattern: u64, level: u8, idx: usize, old: u64, new: u64) {
        self.add_live(i64::from(is_live(level, new)) - i64::from(is_live(level, old)));
        // An untracked table (pattern 0) counts nothing (an invalid entry
        // would "match" at index 0), nor does an unknown slot.
        if pattern != 0 && self.is_known() {
            self.add_matching(
                i64::from(Self::matches(pattern, level, idx, new))
                    - i64::from(Self::matches(pattern, level, idx, old)),
            );
        }
    }

    /// `n` entries from `idx` on, none of them live, become the leaves
    /// `first`, `first + size`, ... (a run write).
    #[inline(always)]
    fn note_run(&mut self, level: u8, idx: usize, first: u64, n: usize) {
        self.note_run_with(self.pattern(), level, idx, first, n);
    }

    /// [`TableMeta::note_run`] with the slot's tracked mapping at hand.
    #[inline(always)]
    fn note_run_with(&mut self, pattern: u64, level: u8, idx: usize, first: u64, n: usize) {
        self.add_live(n as i64);
        // Every entry of the run matches, or none does: they differ from
        // the pattern's by the same amount.
        if pattern != 0 && self.is_known() && Self::matches(pattern, level, idx, first) {
            self.add_matching(n as i64);
        }
    }
}

/// The slot of table `mfn` (unknown if the allocator keeps none).
#[inline(always)]
fn load_meta<M: FrameAlloc>(alloc: &mut M, mfn: Mfn) -> TableMeta {
    alloc.table_meta(mfn).map_or(TableMeta::UNKNOWN, |m| *m)
}

/// Stores the slot of table `mfn`, if the allocator keeps one.
#[inline(always)]
fn store_meta<M: FrameAlloc>(alloc: &mut M, mfn: Mfn, meta: TableMeta) {
    if let Some(slot) = alloc.table_meta(mfn) {
        *slot = meta;
    }
}

/// Whether the table `mfn` may be freed once empty: a table the engine
/// keeps counts for is one it made (always), any other the allocator says.
#[inline(always)]
fn freeable<M: FrameAlloc>(alloc: &mut M, mfn: Mfn) -> bool {
    load_meta(alloc, mfn).is_known() || alloc.can_free(mfn)
}

/// Frees the table frame `mfn`, its slot set back to unknown first.
#[inline(always)]
fn release<M: FrameAlloc>(alloc: &mut M, mfn: Mfn) {
    store_meta(alloc, mfn, TableMeta::UNKNOWN);
    alloc.free(mfn);
}

/// Frees the table frame `mfn`, emptied and unlinked, its slot set back to
/// unknown first: as all zero ([`FrameAlloc::free_zeroed`]) if its counts
/// say it holds no live entry — the engine writes nothing but zero into an
/// entry that is not live, and a table with counts is one it made from a
/// zeroed frame and only it wrote.
#[inline(always)]
fn release_emptied<M: FrameAlloc>(alloc: &mut M, mfn: Mfn) {
    let zero = alloc
        .table_meta(mfn)
        .is_some_and(|slot| core::mem::replace(slot, TableMeta::UNKNOWN).live_entries() == Some(0));
    if zero {
        alloc.free_zeroed(mfn);
    } else {
        alloc.free(mfn);
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

/// Whether `[lo, hi)` covers the whole level-`level` slot it starts in.
#[inline(always)]
fn covers_slot(lo: u64, hi: u64, level: u8) -> bool {
    let size = level_size(level);
    lo.is_multiple_of(size) && hi - lo == size
}

/// Tables a split of the level-`level` leaf makes when a request covers
/// `[lo, hi)` of it in part: the table one level down, and the splits of
/// the (at most two) children the range ends inside.
fn split_tables(level: u8, lo: u64, hi: u64) -> usize {
    let child = level + 1;
    let mut n = 1;
    if child < 3 {
        let cs = level_size(child);
        let first_end = (lo | (cs - 1)).saturating_add(1).min(hi);
        if !covers_slot(lo, first_end, child) {
            n += split_tables(child, lo, first_end);
        }
        let last_start = (hi - 1) & !(cs - 1);
        if last_start >= first_end && !covers_slot(last_start, hi, child) {
            n += split_tables(child, last_start, hi);
        }
    }
    n
}

impl<F: Format> PageTable<F> {
    /// A handle over an existing root. The format's sizes are checked at
    /// compile time here.
    const fn with_root(root: Mfn, scope: TlbScope) -> Self {
        #[allow(clippy::let_unit_value)]
        let () = FormatCheck::<F>::OK;
        PageTable {
            root,
            mair: MairMap::XEN,
            scope,
            walk: Cell::new(WalkCache::NONE),
            _format: PhantomData,
        }
    }

    /// Allocates and zeroes a root (every concatenated page of it).
    fn alloc_root<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        env: &mut Env<'_, A, T, M>,
    ) -> Result<Mfn, Error> {
        let frames = F::ROOT_TABLES;
        let root = env
            .alloc
            .alloc_contiguous(frames)
            .map_err(|e| Error::OutOfMemory {
                needed: e.needed,
                available: e.available,
            })?;
        for i in 0..frames as u64 {
            let mfn = root.add(i);
            // A root is never freed for being empty nor merged: no counts.
            store_meta(env.alloc, mfn, TableMeta::UNKNOWN);
            let zeroed = Self::in_table(env, mfn, |env, tva| Ok(env.arch.zero_page(tva)?));
            if let Err(e) = zeroed {
                for j in 0..frames as u64 {
                    release(env.alloc, root.add(j));
                }
                return Err(e);
            }
        }
        Ok(root)
    }

    /// The root frame (the first one, for a concatenated stage-2 root).
    pub const fn root(&self) -> Mfn {
        self.root
    }

    /// The MAIR map the table's stage-1 attributes are encoded with.
    pub const fn mair(&self) -> MairMap {
        self.mair
    }

    /// The VMID of a stage-2 table; `None` for a stage-1 table.
    pub const fn vmid(&self) -> Option<Vmid> {
        match self.scope {
            TlbScope::Hyp => None,
            TlbScope::Guest(v) => Some(v),
        }
    }

    /// Forgets the remembered walk. The engine does this itself whenever it
    /// unlinks a table; call it after changing a table descriptor of this
    /// tree outside the engine.
    pub fn forget_walk(&self) {
        self.walk.set(WalkCache::NONE);
    }

    /// The level-3 table that maps `va`, if the last walk reached it.
    #[inline]
    fn cached_l3(&self, va: u64) -> Option<Mfn> {
        self.cached_walk(va).map(|w| w.l3)
    }

    /// The remembered walk, if it maps `va`.
    #[inline(always)]
    fn cached_walk(&self, va: u64) -> Option<WalkCache> {
        let w = self.walk.get();
        (w.region == va >> L3_SPAN_SHIFT).then_some(w)
    }

    #[inline]
    fn remember_l3(&self, va: u64, l3: Mfn) {
        self.walk.set(WalkCache {
            region: va >> L3_SPAN_SHIFT,
            l3,
            pattern: PATTERN_UNREAD,
        });
    }

    /// The root page whose entries map `va`.
    #[inline(always)]
    fn root_for(&self, va: u64) -> Mfn {
        if F::ROOT_TABLES == 1 {
            self.root
        } else {
            let span_shift = crate::format::level_shift(F::ROOT_LEVEL) + 9;
            self.root
                .add((va >> span_shift) & (F::ROOT_TABLES as u64 - 1))
        }
    }

    /// Calls `f(root page, lo, hi)` for each root page `[va, end)` touches.
    #[inline(always)]
    fn for_root_pages(
        &self,
        va: u64,
        end: u64,
        mut f: impl FnMut(Mfn, u64, u64) -> Result<(), Error>,
    ) -> Result<(), Error> {
        if F::ROOT_TABLES == 1 {
            return f(self.root, va, end);
        }
        let span = level_size(F::ROOT_LEVEL) * ENTRIES as u64;
        let mut cur = va;
        while cur < end {
            let next = ((cur / span) + 1).saturating_mul(span).min(end);
            f(self.root_for(cur), cur, next)?;
            cur = next;
        }
        Ok(())
    }

    // ----------------------------------------------------------------------
    // TLB maintenance in the table's regime
    // ----------------------------------------------------------------------

    /// Invalidates the translations of one input address (issued, not
    /// completed).
    #[inline(always)]
    fn inv_one<A: Arch>(&self, arch: &mut A, va: u64, c: &mut Commit) {
        match self.scope {
            TlbScope::Hyp => arch.tlb_flush_va(Vaddr(va)),
            TlbScope::Guest(vmid) => {
                arch.tlb_flush_ipa(vmid, va);
                c.by_ipa = true;
            }
        }
        c.report.tlb_invalidations += 1;
    }

    /// Invalidates every translation of the regime (the hypervisor's, or
    /// the VMID's), issued, not completed.
    #[inline]
    fn inv_all<A: Arch>(&self, arch: &mut A, c: &mut Commit) {
        match self.scope {
            TlbScope::Hyp => arch.tlb_flush_all(),
            TlbScope::Guest(vmid) => {
                arch.tlb_flush_vmid(vmid);
                c.by_ipa = false;
            }
        }
        c.dirty = false;
        c.report.tlb_invalidations += 1;
    }

    /// Completes the invalidations issued so far; for stage 2 after
    /// invalidations by IPA, also removes the guest's combined entries
    /// (which invalidation by IPA leaves) and completes that.
    #[inline]
    fn inv_sync<A: Arch>(&self, arch: &mut A, c: &mut Commit) {
        arch.tlb_sync();
        if let (TlbScope::Guest(vmid), true) = (self.scope, c.by_ipa) {
            arch.tlb_flush_guest_s1(vmid);
            arch.tlb_sync();
            c.by_ipa = false;
            c.report.tlb_invalidations += 1;
        }
    }

    /// Invalidates `n` broken entries of `size` from `va` on and waits for
    /// it: the middle of break-before-make.
    fn inv_broken<A: Arch>(&self, arch: &mut A, va: u64, size: u64, n: usize, c: &mut Commit) {
        if n as u64 > TLB_FLUSH_ALL_THRESHOLD {
            self.inv_all(arch, c);
        } else {
            for k in 0..n as u64 {
                self.inv_one(arch, va + k * size, c);
            }
        }
        self.inv_sync(arch, c);
    }

    // ----------------------------------------------------------------------
    // Updates
    // ----------------------------------------------------------------------

    /// Performs `op` on the `pages` pages starting at `va` (a VA for stage
    /// 1, an IPA for stage 2).
    ///
    /// Either the whole update happens, or nothing does: on error every table
    /// byte is as it was and every table allocated for the update is freed.
    #[inline(always)]
    pub fn update<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &mut self,
        env: &mut Env<'_, A, T, M>,
        va: F::Input,
        pages: u64,
        op: Op<F::Attrs>,
        flags: MapFlags,
    ) -> Result<UpdateReport, Error> {
        // One page in the remembered level-3 table (Xen's usage pattern).
        if pages == 1 && !flags.merge {
            if let Some(report) = self.update_cached(env, va.raw(), op) {
                return Ok(report);
            }
        }
        // The parts of `env`, not `env`: the fast path above then needs no
        // `Env` in memory.
        self.update_checked(
            env.arch,
            env.access,
            env.alloc,
            va.raw(),
            pages,
            &(op, flags),
        )
    }

    /// [`PageTable::update`] of one page in the level-3 table of the
    /// [`WalkCache`]: the same checks as the general path (request, then the
    /// entry), one table mapped, the same TLB rules, the table's
    /// [`TableMeta`] kept. Anything else — a bad request, a refusal, a
    /// contiguous entry, a Remove that could empty the table (or whose table
    /// has no known count), a provider or memory failure — returns `None`
    /// before anything was written, and the next path meets and reports it.
    #[inline(always)]
    fn update_cached<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &self,
        env: &mut Env<'_, A, T, M>,
        va: u64,
        op: Op<F::Attrs>,
    ) -> Option<UpdateReport> {
        let walk = self.cached_walk(va)?;
        let l3 = walk.l3;
        // In the remembered 2 MiB (reached by a walk of a valid address), a
        // page fits the input size: only the alignment is left to check.
        if !va.is_multiple_of(PAGE_SIZE) {
            return None;
        }
        let bits = match op {
            Op::Insert { pa, attrs } => {
                if !pa.is_aligned(PAGE_SIZE)
                    || !pa.0.checked_add(PAGE_SIZE).is_some_and(F::pa_end_fits)
                {
                    return None;
                }
                attrs.leaf_bits(&self.mair).ok()?
            }
            Op::Modify { attrs } => attrs.leaf_bits(&self.mair).ok()?,
            Op::Remove => 0,
            Op::Populate => return None,
        };
        env.access.reserve(env.arch, 1).ok()?;
        let Ok(tva) = env.access.map_table(env.arch, l3) else {
            env.access.unreserve(env.arch);
            return None;
        };
        let idx = table_index(va, 3);
        let eva = entry_va(tva, idx);
        // A Remove only while the table keeps a live entry: nothing to unlink.
        let removable = matches!(op, Op::Remove)
            && env
                .alloc
                .table_meta(l3)
                .is_some_and(|m| m.live_entries().is_some_and(|live| live > 1));
        // One access (read, decide, write): the entry read and what it
        // becomes, or None: not for this path.
        let mut change = None;
        let res = env.arch.update_pte_run(eva, 1, |raw| {
            let pte = Pte(raw);
            let new = match op {
                Op::Insert { pa, .. } if !(pte.is_table(3) || pte.is_leaf(3)) => {
                    Pte::leaf_bits::<F>(3, pa, bits, false).0
                }
                Op::Modify { .. }
                    if pte.is_leaf(3)
                        && !pte.is_contiguous()
                        && raw & F::Attrs::MEM_MASK == bits & F::Attrs::MEM_MASK =>
                {
                    (raw & !F::Attrs::PERM_MASK) | (bits & F::Attrs::PERM_MASK)
                }
                Op::Remove if removable && pte.is_leaf(3) && !pte.is_contiguous() => 0,
                _ => return None,
            };
            change = Some((raw, new));
            // A Modify to the permission the page has writes nothing (an
            // Insert always changes the entry).
            (matches!(op, Op::Insert { .. }) || new != raw).then_some(new)
        });
        let done = match (res, change) {
            (Ok(()), Some((raw, new))) if matches!(op, Op::Insert { .. }) || new != raw => {
                if let Some(meta) = env.alloc.table_meta(l3) {
                    let pattern = if walk.pattern == PATTERN_UNREAD {
                        let p = if meta.is_known() { meta.pattern() } else { 0 };
                        self.walk.set(WalkCache { pattern: p, ..walk });
                        p
                    } else {
                        walk.pattern
                    };
                    if matches!(op, Op::Insert { .. }) {
                        // The entry was not live (checked above); a valid
                        // leaf never matches pattern 0. One change of the
                        // slot.
                        meta.add_inserted(TableMeta::matches(pattern, 3, idx, new));
                    } else {
                        meta.note_with(pattern, 3, idx, raw, new);
                    }
                }
                Some(1)
            }
            (Ok(()), Some(_)) => Some(0),
            _ => None,
        };
        env.access.unmap_table(env.arch, l3, tva);
        env.access.unreserve(env.arch);
        let leaves = done?;
        let mut invalidations = 0;
        if matches!(op, Op::Insert { .. }) {
            env.arch.isb();
        } else {
            let mut c = Commit::new(1);
            if leaves > 0 {
                self.inv_one(env.arch, va, &mut c);
            }
            self.inv_sync(env.arch, &mut c);
            invalidations = c.report.tlb_invalidations;
        }
        // Every field spelled out: no zero-fill of the whole report.
        Some(UpdateReport {
            leaves,
            tables_created: 0,
            tables_freed: 0,
            table_maps: 1,
            tlb_invalidations: invalidations,
            splits: 0,
            merges: 0,
            contiguous_breaks: 0,
        })
    }

    /// [`PageTable::update`] past the remembered-walk fast path.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn update_checked<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &mut self,
        arch: &mut A,
        access: &mut T,
        alloc: &mut M,
        va: u64,
        pages: u64,
        request: &(Op<F::Attrs>, MapFlags),
    ) -> Result<UpdateReport, Error> {
        let (op, flags) = *request;
        let env = &mut Env::new(arch, access, alloc);
        let req = self.check(va, pages, op, flags)?;

        // One page (Xen's usage pattern): one walk.
        if pages == 1 && !matches!(op, Op::Populate) {
            if let Some(res) = self.update_one(env, &req) {
                return res;
            }
        }

        // Removing or merging may unlink tables: forget the remembered walk
        // first. A failure may leave new links or free new tables: forget
        // it too.
        if matches!(op, Op::Remove) || flags.merge {
            self.forget_walk();
        }
        // A Remove on 2 MiB boundaries (guest RAM, a module, a heap
        // region): its own two compact walks.
        let block = level_size(2);
        if matches!(op, Op::Remove) && req.va.is_multiple_of(block) && req.end.is_multiple_of(block)
        {
            if let Some(res) = self.remove_blocks(env, &req) {
                if res.is_err() {
                    self.forget_walk();
                }
                return res;
            }
        }
        let res = self.update_two_pass(env, &req);
        if res.is_err() {
            self.forget_walk();
        }
        res
    }
    /// A Remove whose range starts and ends on 2 MiB boundaries: no level-3
    /// table is covered in part, so nothing at level 3 is read, and the
    /// update needs none of the general path's machinery for splits, breaks
    /// of contiguous groups, merges or new tables. One compact walk of the
    /// tables above level 3 runs twice: read-only first, to make sure the
    /// update needs none of that (no contiguous entry, no block covered in
    /// part, every table covered whole known to be freeable with all it
    /// links); then writing: every leaf cleared, every table the range
    /// covers whole unlinked and freed with its subtree without reading its
    /// leaves (as the general path does), every table it empties unlinked
    /// and freed — with the general path's TLB rules and order (2 MiB is
    /// above [`TLB_FLUSH_ALL_THRESHOLD`]: whole-regime invalidations before
    /// the frees and at the end).
    ///
    /// `None` (nothing written) when the first walk finds something it does
    /// not handle, or on a provider or memory failure before the first
    /// write: the general path then runs, and meets and reports it.
    #[inline(never)]
    fn remove_blocks<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &mut self,
        env: &mut Env<'_, A, T, M>,
        req: &Req<F::Attrs>,
    ) -> Option<Result<UpdateReport, Error>> {
        let mut c = Commit::new(0);
        let nested = usize::from(4 - F::ROOT_LEVEL);
        if env.access.reserve(env.arch, nested).is_err() {
            return None;
        }
        if !matches!(self.remove_walk(env, req, false, &mut c), Ok(true)) {
            env.access.unreserve(env.arch);
            return None;
        }
        let res = self.remove_walk(env, req, true, &mut c);
        env.access.unreserve(env.arch);
        if res.is_err() || c.dirty {
            // A failure: whatever was written must not stay cached.
            self.inv_all(env.arch, &mut c);
        }
        self.inv_sync(env.arch, &mut c);
        Some(res.map(|_| c.report))
    }

    /// The walk of [`PageTable::remove_blocks`] over the request's range,
    /// without recursion: the tables being visited, one per level from the
    /// root to level 2, are held on a small stack (each mapped while its
    /// children are visited), with their counts and the tables unlinked
    /// from them and not yet freed. Read-only (`commit` false) it returns
    /// whether the writing walk can do the whole update; writing, it
    /// returns `true`.
    fn remove_walk<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &self,
        env: &mut Env<'_, A, T, M>,
        req: &Req<F::Attrs>,
        commit: bool,
        c: &mut Commit,
    ) -> Result<bool, Error> {
        // (table, its address, end of the part of it the walk visits, its
        // counts).
        let mut stack = [(Mfn(0), Vaddr(0), 0u64, TableMeta::UNKNOWN); 3];
        let mut pending = [Unlinked::new(), Unlinked::new(), Unlinked::new()];
        let span = level_size(F::ROOT_LEVEL) * ENTRIES as u64;
        let mut depth = 0usize;
        let mut cur = req.va;
        let res = loop {
            if depth == 0 {
                if cur >= req.end {
                    break Ok(true);
                }
                let root = self.root_for(cur);
                let end = if F::ROOT_TABLES == 1 {
                    req.end
                } else {
                    ((cur / span) + 1).saturating_mul(span).min(req.end)
                };
                match Self::map(env, root) {
                    Ok(tva) => stack[0] = (root, tva, end, load_meta(env.alloc, root)),
                    Err(e) => break Err(e),
                }
                c.report.table_maps += 1;
                depth = 1;
            }
            let top = depth - 1;
            let level = F::ROOT_LEVEL + top as u8;
            let (mfn, tva, tend, _) = stack[top];
            if cur >= tend {
                // Done with this table: free what was unlinked from it, then
                // unlink it too if that left it empty.
                let mut empty = false;
                if commit {
                    self.free_unlinked(env, req, &mut pending[top], c);
                    let meta = stack[top].3;
                    empty = level != F::ROOT_LEVEL
                        && match meta.live_entries() {
                            Some(live) => live == 0,
                            None => match Self::any_live(env, level, tva) {
                                Ok(any) => !any,
                                Err(e) => break Err(e),
                            },
                        };
                    store_meta(env.alloc, mfn, meta);
                }
                env.access.unmap_table(env.arch, mfn, tva);
                depth -= 1;
                if empty && freeable(env.alloc, mfn) {
                    let (_, ptva, _, pmeta) = &mut stack[top - 1];
                    let idx = table_index(cur - 1, level - 1);
                    if let Err(e) = env.arch.write_pte(entry_va(*ptva, idx), 0) {
                        break Err(e.into());
                    }
                    pmeta.note(level - 1, idx, Pte::table::<F>(mfn).0, 0);
                    c.dirty = true;
                    self.push_unlinked(env, req, &mut pending[top - 1], mfn, NO_SUBTREE, c);
                }
                continue;
            }
            let idx = table_index(cur, level);
            let eva = entry_va(tva, idx);
            let se = slot_end(cur, level, tend);
            let old = match env.arch.read_pte(eva) {
                Ok(e) => e,
                Err(e) => break Err(e.into()),
            };
            let pte = Pte(old);
            let full = covers_slot(cur, se, level);
            let subtree = if pte.is_table(level) {
                let child = pte.table_mfn::<F>();
                if !full {
                    // Below level 2 only: every level-2 slot is covered whole.
                    match Self::map(env, child) {
                        Ok(ctva) => {
                            stack[depth] = (child, ctva, se, load_meta(env.alloc, child));
                            depth += 1;
                            c.report.table_maps += 1;
                        }
                        Err(e) => break Err(e),
                    }
                    continue;
                }
                if !commit && !Self::detached_cheaply(env, level + 1, child) {
                    break Ok(false);
                }
                // Unlinked with what is below it, its leaves never read.
                Some(child)
            } else if pte.is_leaf(level) {
                if !commit && (!full || pte.is_contiguous()) {
                    break Ok(false);
                }
                None
            } else {
                cur = se;
                continue;
            };
            if commit {
                if let Err(e) = env.arch.write_pte(eva, 0) {
                    break Err(e.into());
                }
                stack[top].3.note(level, idx, old, 0);
                c.dirty = true;
                match subtree {
                    Some(child) => {
                        self.push_unlinked(env, req, &mut pending[top], child, level + 1, c)
                    }
                    None => c.report.leaves += 1,
                }
            }
            cur = se;
        };
        // Give back every mapping still held (after a failure: the counts of
        // the tables being written are unknown now).
        for k in (0..depth).rev() {
            let (mfn, tva, _, _) = stack[k];
            if commit {
                store_meta(env.alloc, mfn, TableMeta::UNKNOWN);
            }
            env.access.unmap_table(env.arch, mfn, tva);
        }
        res
    }

    /// Records `mfn`, unlinked, to be freed as a table of `level` with the
    /// batch `pending` (freed first if full).
    #[inline]
    fn push_unlinked<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &self,
        env: &mut Env<'_, A, T, M>,
        req: &Req<F::Attrs>,
        pending: &mut Unlinked,
        mfn: Mfn,
        level: u8,
        c: &mut Commit,
    ) {
        if pending.is_full() {
            self.free_unlinked(env, req, pending, c);
        }
        pending.push(mfn, level);
    }

    /// Whether the table `mfn` at `level` (2 or 3), covered whole by a
    /// Remove, can be unlinked and freed with all it links without reading
    /// it: a level-3 table the engine made or the allocator may free, a
    /// level-2 table the engine made that links only tables it made
    /// ([`PageTable::detachable`] without its reads).
    #[inline]
    fn detached_cheaply<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        env: &mut Env<'_, A, T, M>,
        level: u8,
        mfn: Mfn,
    ) -> bool {
        let meta = load_meta(env.alloc, mfn);
        match level {
            3 => meta.is_known() || env.alloc.can_free(mfn),
            2 => meta.is_known() && !meta.untracked(),
            _ => false,
        }
    }

    /// The general update: prepare, reserve, commit.
    fn update_two_pass<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &mut self,
        env: &mut Env<'_, A, T, M>,
        req: &Req<F::Attrs>,
    ) -> Result<UpdateReport, Error> {
        let req = *req;
        let op = req.op;
        let root_level = F::ROOT_LEVEL;
        // Prepare: validate everything and count the tables to create.
        let mut need = 0usize;
        let mut maps = 0u64;
        self.for_root_pages(req.va, req.end, |root, lo, hi| {
            self.prepare(env, &req, root_level, root, lo, hi, &mut need, &mut maps)
        })?;
        if need > 0 {
            env.alloc.reserve(need).map_err(|e| Error::OutOfMemory {
                needed: e.needed,
                available: e.available,
            })?;
        }
        // The commit pass holds at most one mapping per level at a time: a
        // split of a level-L block holds the tables down to level L and
        // builds its new ones at levels L+1 to 3.
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
                    err: AccessError::Unreachable { provider },
                });
            }
        }

        let mut c = Commit::new(maps);
        let res = self.for_root_pages(req.va, req.end, |root, lo, hi| {
            self.commit(env, &req, root_level, root, lo, hi, &mut c)
                .map(|_| ())
        });
        env.access.unreserve(env.arch);
        env.alloc.unreserve();
        match res {
            Ok(()) => {
                if let (Some((va, l3)), false) =
                    (c.last_l3, matches!(op, Op::Remove) || req.flags.merge)
                {
                    self.remember_l3(va, l3);
                }
                match op {
                    Op::Insert { .. } | Op::Populate => {
                        // Merges completed their own invalidations.
                        env.arch.isb();
                    }
                    Op::Modify { .. } | Op::Remove => {
                        if c.dirty {
                            self.inv_all(env.arch, &mut c);
                        }
                        self.inv_sync(env.arch, &mut c);
                    }
                }
                Ok(c.report)
            }
            Err(e) => {
                // Whatever was written must not stay cached.
                self.inv_all(env.arch, &mut c);
                self.inv_sync(env.arch, &mut c);
                Err(e)
            }
        }
    }

    /// A one-page Insert, Modify or Remove in a single walk. Each level's
    /// table is mapped and held (as the commit pass holds them, under the
    /// same reservation) and its entry for the page read; the walk decides,
    /// by the prepare pass's rules, what the update writes, reserves the
    /// tables an Insert below an invalid entry needs and checks that the
    /// provider reaches them — and only then writes: the leaf; new tables
    /// built unlinked, then linked; a table the update emptied unlinked,
    /// invalidated and freed, and its parent if that emptied it; a table
    /// the update made uniform merged into a block, and upwards. A table's
    /// [`TableMeta`] says whether it became empty or uniform; a table without
    /// one is read. The TLB rules and the order of writes, invalidations and
    /// frees are the general path's.
    ///
    /// Anything else — a block or a contiguous entry in the way, a refusal,
    /// a shortage, a provider or memory failure before the first write —
    /// gives the mappings back and returns `None` with nothing written, and
    /// the caller runs the general two-pass update, which meets and reports
    /// the same thing. `Some(Err)` is a failure after writing began (a
    /// provider that broke its reservation, a memory fault on the model),
    /// handled as the general path's commit failures are.
    fn update_one<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &mut self,
        env: &mut Env<'_, A, T, M>,
        req: &Req<F::Attrs>,
    ) -> Option<Result<UpdateReport, Error>> {
        let va = req.va;
        let nested = usize::from(4 - F::ROOT_LEVEL);
        if env.access.reserve(env.arch, nested).is_err() {
            return None;
        }
        let mut path = [Held::NONE; 4];
        let mut n = 0usize;
        let mut mfn = self.root_for(va);
        let mut level = F::ROOT_LEVEL;
        let plan = loop {
            let Ok(tva) = env.access.map_table(env.arch, mfn) else {
                break None;
            };
            path[n] = Held {
                mfn,
                tva,
                meta: load_meta(env.alloc, mfn),
                pte: 0,
                mapped: true,
            };
            n += 1;
            let Ok(raw) = env.arch.read_pte(entry_va(tva, table_index(va, level))) else {
                break None;
            };
            path[n - 1].pte = raw;
            let pte = Pte(raw);
            if level < 3 {
                if pte.is_table(level) {
                    mfn = pte.table_mfn::<F>();
                    level += 1;
                    continue;
                }
                if pte.is_leaf(level) {
                    // A block: AlreadyMapped, or a split.
                    break None;
                }
                break match req.op {
                    Op::Insert { .. } => Some(One::Create),
                    Op::Remove => Some(One::Absent),
                    _ => None,
                };
            }
            let leaf = pte.is_leaf(3);
            break match req.op {
                Op::Insert { .. } if !(leaf || pte.is_table(3)) => Some(One::Leaf),
                Op::Modify { .. }
                    if leaf && !pte.is_contiguous() && raw & F::Attrs::MEM_MASK == req.mem =>
                {
                    Some(One::Leaf)
                }
                Op::Remove if !leaf => Some(One::Absent),
                Op::Remove if !pte.is_contiguous() => Some(One::Leaf),
                _ => None,
            };
        };
        // The tables an Insert below the invalid entry at `level` makes.
        let need = match plan {
            Some(One::Create) => usize::from(3 - level),
            _ => 0,
        };
        if plan.is_none() || (need > 0 && !Self::reserve_tables(env, need)) {
            for h in path[..n].iter().rev() {
                env.access.unmap_table(env.arch, h.mfn, h.tva);
            }
            env.access.unreserve(env.arch);
            return None;
        }
        let plan = plan?;
        let mut c = Commit::new(n as u64);
        let res = self.one_commit(env, req, &mut path[..n], level, plan, need, &mut c);
        for h in path[..n].iter().rev().filter(|h| h.mapped) {
            let meta = if res.is_ok() {
                h.meta
            } else {
                TableMeta::UNKNOWN
            };
            store_meta(env.alloc, h.mfn, meta);
            env.access.unmap_table(env.arch, h.mfn, h.tva);
        }
        env.access.unreserve(env.arch);
        env.alloc.unreserve();
        Some(match res {
            Ok(l3) => {
                match l3 {
                    _ if c.report.tables_freed > 0 => self.forget_walk(),
                    Some(l3) => self.remember_l3(va, l3),
                    None => {}
                }
                match req.op {
                    // Merges completed their own invalidations.
                    Op::Insert { .. } | Op::Populate => env.arch.isb(),
                    Op::Modify { .. } | Op::Remove => {
                        if c.dirty {
                            self.inv_all(env.arch, &mut c);
                        }
                        self.inv_sync(env.arch, &mut c);
                    }
                }
                Ok(c.report)
            }
            Err(e) => {
                // Whatever was written must not stay cached.
                self.forget_walk();
                self.inv_all(env.arch, &mut c);
                self.inv_sync(env.arch, &mut c);
                Err(e)
            }
        })
    }

    /// Reserves `need` frames for new tables and checks that the provider
    /// reaches every one of them; on failure nothing stays reserved.
    fn reserve_tables<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        env: &mut Env<'_, A, T, M>,
        need: usize,
    ) -> bool {
        if env.alloc.reserve(need).is_err() {
            return false;
        }
        let mut reachable = true;
        let access = &*env.access;
        env.alloc.reserved_frames(&mut |mfn| {
            reachable &= access.can_reach(mfn);
        });
        if !reachable {
            env.alloc.unreserve();
        }
        reachable
    }

    /// The writes of [`PageTable::update_one`], once decided: `path` holds
    /// the walk's tables from the root down to `level`. Returns the level-3
    /// table the page is in afterwards, for the remembered walk.
    #[allow(clippy::too_many_arguments)]
    fn one_commit<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &self,
        env: &mut Env<'_, A, T, M>,
        req: &Req<F::Attrs>,
        path: &mut [Held],
        level: u8,
        plan: One,
        need: usize,
        c: &mut Commit,
    ) -> Result<Option<Mfn>, Error> {
        let va = req.va;
        let last = path.len() - 1;
        match plan {
            One::Absent => {
                // Nothing to clear; a table that holds nothing (Populate
                // makes them) is freed all the same.
                let l3 = path[last].mfn;
                self.one_unlink_empty(env, path, va, c)?;
                Ok((level == 3 && c.report.tables_freed == 0).then_some(l3))
            }
            One::Leaf => {
                let h = &mut path[last];
                let idx = table_index(va, 3);
                let old = h.pte;
                let new = match req.op {
                    Op::Insert { .. } => Pte::leaf_bits::<F>(3, Paddr(req.pa), req.bits, false).0,
                    _ => req.applied(old),
                };
                if new != old {
                    env.arch.write_pte(entry_va(h.tva, idx), new)?;
                    h.meta.note(3, idx, old, new);
                    h.pte = new;
                    c.report.leaves = 1;
                    if !matches!(req.op, Op::Insert { .. }) {
                        self.inv_one(env.arch, va, c);
                    }
                }
                let l3 = h.mfn;
                if matches!(req.op, Op::Remove) {
                    self.one_unlink_empty(env, path, va, c)?;
                } else if req.flags.merge {
                    self.one_merge(env, req, path, c)?;
                }
                Ok((c.report.tables_freed == 0).then_some(l3))
            }
            One::Create => {
                // Frames taken top-down (the general path's order), tables
                // built bottom-up, unlinked, then linked.
                let mut frames = [Mfn(0); 3];
                let mut zeroed = [false; 3];
                for (f, z) in frames[..need].iter_mut().zip(&mut zeroed) {
                    (*f, *z) = env.alloc.take_zeroed().ok_or(Error::OutOfMemory {
                        needed: need,
                        available: 0,
                    })?;
                }
                c.report.tables_created = need as u64;
                let mut built = Ok(());
                for k in (0..need).rev() {
                    let lvl = level + 1 + k as u8;
                    let (entry, child) = if lvl == 3 {
                        (
                            Pte::leaf_bits::<F>(3, Paddr(req.pa), req.bits, false).0,
                            None,
                        )
                    } else {
                        (Pte::table::<F>(frames[k + 1]).0, Some(frames[k + 1]))
                    };
                    built =
                        self.one_new_table(env, req, lvl, frames[k], zeroed[k], entry, child, c);
                    if built.is_err() {
                        break;
                    }
                }
                let h = &mut path[last];
                let idx = table_index(va, level);
                let link = Pte::table::<F>(frames[0]).0;
                if let Err(e) =
                    built.and_then(|()| Ok(env.arch.write_pte(entry_va(h.tva, idx), link)?))
                {
                    // Never linked anywhere, so no TLB can hold them.
                    for &f in &frames[..need] {
                        release(env.alloc, f);
                    }
                    c.report.tables_created = 0;
                    return Err(e);
                }
                h.meta.note(level, idx, h.pte, link);
                h.meta.linked(env.alloc, frames[0]);
                h.pte = link;
                c.report.leaves = 1;
                Ok(Some(frames[need - 1]))
            }
        }
    }

    /// A new table of the one-page Insert: the frame `mfn` zeroed (unless
    /// the allocator said it is: `zeroed`), with `entry` (the leaf, or the
    /// link to the table `child` below) at the page's index, and its counts.
    #[allow(clippy::too_many_arguments)]
    fn one_new_table<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &self,
        env: &mut Env<'_, A, T, M>,
        req: &Req<F::Attrs>,
        level: u8,
        mfn: Mfn,
        zeroed: bool,
        entry: u64,
        child: Option<Mfn>,
        c: &mut Commit,
    ) -> Result<(), Error> {
        let tva = Self::map(env, mfn)?;
        c.report.table_maps += 1;
        let idx = table_index(req.va, level);
        let zero = if zeroed {
            Ok(())
        } else {
            env.arch.zero_page(tva)
        };
        let res = zero.and_then(|()| env.arch.write_pte(entry_va(tva, idx), entry));
        env.access.unmap_table(env.arch, mfn, tva);
        res?;
        let mut meta = TableMeta::fresh(Self::insert_pattern(req, level, req.va));
        meta.note(level, idx, 0, entry);
        if let Some(child) = child {
            meta.linked(env.alloc, child);
        }
        store_meta(env.alloc, mfn, meta);
        Ok(())
    }

    /// After a one-page Remove cleared its leaf: from the level-3 table up,
    /// each table left without a live entry is unlinked from its parent,
    /// invalidated, and freed (the general path's order: unlink, invalidate
    /// by address, wait, free).
    fn one_unlink_empty<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &self,
        env: &mut Env<'_, A, T, M>,
        path: &mut [Held],
        va: u64,
        c: &mut Commit,
    ) -> Result<(), Error> {
        let mut k = path.len() - 1;
        while k > 0 {
            let level = F::ROOT_LEVEL + k as u8;
            let h = path[k];
            let empty = match h.meta.live_entries() {
                Some(live) => live == 0,
                None => !Self::any_live(env, level, h.tva)?,
            };
            if !empty || !(h.meta.is_known() || env.alloc.can_free(h.mfn)) {
                break;
            }
            let p = &mut path[k - 1];
            let idx = table_index(va, level - 1);
            env.arch.write_pte(entry_va(p.tva, idx), 0)?;
            p.meta.note(level - 1, idx, p.pte, 0);
            p.pte = 0;
            self.inv_one(env.arch, va, c);
            self.inv_sync(env.arch, c);
            env.access.unmap_table(env.arch, h.mfn, h.tva);
            path[k].mapped = false;
            // Its counts (held here, not stored yet) say whether it is all
            // zero.
            store_meta(env.alloc, h.mfn, TableMeta::UNKNOWN);
            if h.meta.live_entries() == Some(0) {
                env.alloc.free_zeroed(h.mfn);
            } else {
                env.alloc.free(h.mfn);
            }
            c.report.tables_freed += 1;
            k -= 1;
        }
        Ok(())
    }

    /// After a one-page Insert or Modify with [`MapFlags::merge`]: from the
    /// level-3 table up, each table that is now uniform is merged into a
    /// block of its parent ([`PageTable::merge`]'s rules and order).
    fn one_merge<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &self,
        env: &mut Env<'_, A, T, M>,
        req: &Req<F::Attrs>,
        path: &mut [Held],
        c: &mut Commit,
    ) -> Result<(), Error> {
        let va = req.va;
        let mut k = path.len() - 1;
        while k > 0 {
            let level = F::ROOT_LEVEL + k as u8;
            if !req.flags.block_at(level - 1) {
                break;
            }
            let h = path[k];
            let After::Uniform { pa, bits } = Self::uniform(env, level, h.tva, &h.meta)? else {
                break;
            };
            let plevel = level - 1;
            let size = level_size(plevel);
            let p = &mut path[k - 1];
            if !(h.meta.is_known() || env.alloc.can_free(h.mfn))
                || Self::check_break(p.tva, va & !(size - 1), size, plevel).is_err()
            {
                break;
            }
            let idx = table_index(va, plevel);
            let eva = entry_va(p.tva, idx);
            env.arch.write_pte(eva, 0)?;
            // The TLB may hold any of the table's 512 leaves, and walk caches
            // the link itself: invalidate the regime / VMID whole.
            self.inv_all(env.arch, c);
            self.inv_sync(env.arch, c);
            let block = Pte::leaf_bits::<F>(plevel, Paddr(pa), bits, false).0;
            env.arch.write_pte(eva, block)?;
            p.meta.note(plevel, idx, p.pte, block);
            p.pte = block;
            env.access.unmap_table(env.arch, h.mfn, h.tva);
            path[k].mapped = false;
            release(env.alloc, h.mfn);
            c.report.tables_freed += 1;
            c.report.merges += 1;
            k -= 1;
        }
        Ok(())
    }

    /// Whether the level-`level` table at `tva` holds a live entry (read).
    #[inline(never)]
    fn any_live<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        env: &mut Env<'_, A, T, M>,
        level: u8,
        tva: Vaddr,
    ) -> Result<bool, Error> {
        Ok(env
            .arch
            .find_pte(tva, ENTRIES, |e| is_live(level, e))?
            .is_some())
    }

    /// The pattern a table made by an Insert for `va` (at `level`) is
    /// tracked against: the leaf its entry 0 would be if the Insert covered
    /// it whole; 0 when the table cannot become a block, or for Populate.
    #[inline]
    fn insert_pattern(req: &Req<F::Attrs>, level: u8, va: u64) -> u64 {
        if !matches!(req.op, Op::Insert { .. }) || level == 0 || !block_allowed(level - 1) {
            return 0;
        }
        let base = va & !(level_size(level) * ENTRIES as u64 - 1);
        let pa = req.pa.wrapping_add(base.wrapping_sub(req.va));
        Pte::leaf_bits::<F>(level, Paddr(pa), req.bits, false).0
    }

    fn check(
        &self,
        va: u64,
        pages: u64,
        op: Op<F::Attrs>,
        flags: MapFlags,
    ) -> Result<Req<F::Attrs>, Error> {
        let (end, len) = Self::check_range(va, pages)?;
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
        let bits = match op {
            Op::Insert { attrs, .. } | Op::Modify { attrs } => attrs.leaf_bits(&self.mair)?,
            Op::Remove | Op::Populate => 0,
        };
        Ok(Req {
            va,
            end,
            pa,
            op,
            flags,
            bits,
            perm: bits & F::Attrs::PERM_MASK,
            mem: bits & F::Attrs::MEM_MASK,
            flush_all: pages > TLB_FLUSH_ALL_THRESHOLD,
        })
    }

    /// Checks an input range; returns its end and length in bytes.
    fn check_range(va: u64, pages: u64) -> Result<(u64, u64), Error> {
        if pages == 0 {
            return Err(Error::EmptyRange);
        }
        if !va.is_multiple_of(PAGE_SIZE) {
            return Err(Error::VaMisaligned(Vaddr(va)));
        }
        let overflow = Error::VaRangeOverflow {
            va: Vaddr(va),
            pages,
        };
        let len = pages.checked_mul(PAGE_SIZE).ok_or(overflow)?;
        let end = va.checked_add(len).ok_or(overflow)?;
        if !F::va_end_fits(end) {
            return Err(Error::VaOutOfRange {
                va: Vaddr(va),
                pages,
                va_bits: F::VA_BITS,
            });
        }
        Ok((end, len))
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
    fn tables_needed(req: &Req<F::Attrs>, level: u8, va: u64, end: u64) -> usize {
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

    /// Stage 1: refuses a break of `[lo, lo + len)` when the table page the
    /// engine writes the new entry through (`tva`) lies inside it.
    #[inline]
    fn check_break(tva: Vaddr, lo: u64, len: u64, level: u8) -> Result<(), Error> {
        if matches!(F::STAGE, Stage::One) && tva.0 >= lo && tva.0 - lo < len {
            return Err(Error::BreakUnmapsTable {
                va: Vaddr(lo),
                level,
                table_va: tva,
            });
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn prepare<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &self,
        env: &mut Env<'_, A, T, M>,
        req: &Req<F::Attrs>,
        level: u8,
        mfn: Mfn,
        va: u64,
        end: u64,
        need: &mut usize,
        maps: &mut u64,
    ) -> Result<(), Error> {
        Self::in_table(env, mfn, |env, tva| {
            *maps += 1;
            match req.op {
                Op::Insert { .. } | Op::Populate => {
                    self.prepare_insert(env, req, level, tva, va, end, need, maps)
                }
                Op::Modify { .. } | Op::Remove => {
                    self.prepare_change(env, req, level, tva, va, end, need, maps)
                }
            }
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn prepare_insert<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &self,
        env: &mut Env<'_, A, T, M>,
        req: &Req<F::Attrs>,
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
                let found = env.arch.find_pte(eva, run, |e| {
                    let p = Pte(e);
                    p.is_table(level) || p.is_leaf(level)
                })?;
                if let Some(j) = found {
                    return Err(Error::AlreadyMapped {
                        va: Vaddr(cur + j as u64 * level_size(level)),
                        level,
                    });
                }
                cur += run as u64 * level_size(level);
                continue;
            }
            let se = slot_end(cur, level, end);
            let pte = Pte(env.arch.read_pte(eva)?);
            let table = pte.is_table(level);
            let leaf = pte.is_leaf(level);
            if req.is_target(level, cur, se) {
                if matches!(req.op, Op::Insert { .. }) && (table || leaf) {
                    return Err(Error::AlreadyMapped {
                        va: Vaddr(cur),
                        level,
                    });
                }
            } else if table {
                if !(matches!(req.op, Op::Populate) && level + 1 == 3) {
                    let child = pte.table_mfn::<F>();
                    self.prepare(env, req, level + 1, child, cur, se, need, maps)?;
                }
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
            cur = se;
        }
        Ok(())
    }

    /// Prepare for Modify and Remove: every address Modify covers must be
    /// mapped with the memory type it asks for; each block covered in part
    /// (that the update changes) needs its split's tables; a stage-1 break
    /// must not unmap the table it writes through.
    #[allow(clippy::too_many_arguments)]
    fn prepare_change<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &self,
        env: &mut Env<'_, A, T, M>,
        req: &Req<F::Attrs>,
        level: u8,
        tva: Vaddr,
        va: u64,
        end: u64,
        need: &mut usize,
        maps: &mut u64,
    ) -> Result<(), Error> {
        let size = level_size(level);
        if level == 3 {
            let n = ((end - va) / PAGE_SIZE) as usize;
            let eva = entry_va(tva, table_index(va, 3));
            if let Op::Modify { .. } = req.op {
                let mem = req.mem;
                let found = env.arch.find_pte(eva, n, |e| {
                    !(Pte(e).is_leaf(3) && e & F::Attrs::MEM_MASK == mem)
                })?;
                if let Some(j) = found {
                    let at = va + j as u64 * PAGE_SIZE;
                    let pte = Pte(env.arch.read_pte(entry_va(eva, j))?);
                    return Err(Self::modify_refusal(req, pte, 3, at));
                }
            }
            // A contiguous group the change breaks must not hold the
            // mapping of this very table (stage 1).
            if matches!(F::STAGE, Stage::One) {
                let group = PAGE_SIZE * CONTIG_ENTRIES;
                let hot = tva.0 & !(group - 1);
                let (glo, ghi) = (va & !(group - 1), (end - 1) | (group - 1));
                if hot >= glo && hot <= ghi {
                    let first = Pte(env.arch.read_pte(entry_va(tva, table_index(hot, 3)))?);
                    if first.is_leaf(3) && first.is_contiguous() {
                        Self::check_break(tva, hot, group, 3)?;
                    }
                }
            }
            return Ok(());
        }
        let mut cur = va;
        while cur < end {
            let eva = entry_va(tva, table_index(cur, level));
            let se = slot_end(cur, level, end);
            let pte = Pte(env.arch.read_pte(eva)?);
            let full = covers_slot(cur, se, level);
            if pte.is_table(level) {
                // A table a Remove covers whole holds nothing to split.
                if !(matches!(req.op, Op::Remove) && full) {
                    let child = pte.table_mfn::<F>();
                    self.prepare(env, req, level + 1, child, cur, se, need, maps)?;
                }
            } else if pte.is_leaf(level) {
                if let Op::Modify { .. } = req.op {
                    if pte.0 & F::Attrs::MEM_MASK != req.mem {
                        return Err(Self::modify_refusal(req, pte, level, cur));
                    }
                }
                if req.changes(pte.0) {
                    if pte.is_contiguous() {
                        let group = size * CONTIG_ENTRIES;
                        Self::check_break(tva, cur & !(group - 1), group, level)?;
                    } else if !full {
                        Self::check_break(tva, cur & !(size - 1), size, level)?;
                    }
                    if !full {
                        *need += split_tables(level, cur, se);
                    }
                }
            } else if let Op::Modify { .. } = req.op {
                return Err(Error::NotMapped { va: Vaddr(cur) });
            }
            cur = se;
        }
        Ok(())
    }

    /// The error a Modify gets for the entry `pte` at `level` mapping `va`.
    fn modify_refusal(req: &Req<F::Attrs>, pte: Pte, level: u8, va: u64) -> Error {
        if !pte.is_leaf(level) {
            return Error::NotMapped { va: Vaddr(va) };
        }
        Error::AttrIndexChange {
            va: Vaddr(va),
            from: ((pte.0 & F::Attrs::MEM_MASK) >> 2) as u8,
            to: (req.mem >> 2) as u8,
        }
    }

    /// Commits the request in the table `mfn` (mapped here), keeping its
    /// [`TableMeta`] (unknown after a failure).
    #[allow(clippy::too_many_arguments)]
    fn commit<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &self,
        env: &mut Env<'_, A, T, M>,
        req: &Req<F::Attrs>,
        level: u8,
        mfn: Mfn,
        va: u64,
        end: u64,
        c: &mut Commit,
    ) -> Result<After, Error> {
        Self::in_table(env, mfn, |env, tva| {
            c.report.table_maps += 1;
            if level == 3 {
                c.last_l3 = Some((va, mfn));
            }
            let mut meta = load_meta(env.alloc, mfn);
            let res = self.commit_in(env, req, level, tva, va, end, c, &mut meta);
            let meta = if res.is_ok() {
                meta
            } else {
                TableMeta::UNKNOWN
            };
            store_meta(env.alloc, mfn, meta);
            res
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn commit_in<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &self,
        env: &mut Env<'_, A, T, M>,
        req: &Req<F::Attrs>,
        level: u8,
        tva: Vaddr,
        va: u64,
        end: u64,
        c: &mut Commit,
        meta: &mut TableMeta,
    ) -> Result<After, Error> {
        if matches!(req.op, Op::Populate) && level == 3 {
            return Ok(After::Kept);
        }
        if level == 3 && matches!(req.op, Op::Modify { .. } | Op::Remove) {
            self.commit_pages(env, req, tva, va, end, c, meta)?;
            return Self::after(env, req, level, tva, va, end, meta);
        }
        let mut cur = va;
        let mut pending = Unlinked::new();
        while cur < end {
            let idx = table_index(cur, level);
            let eva = entry_va(tva, idx);
            let run = req.run_len(level, cur, end);
            if run > 0 {
                Self::commit_insert_run(env, req, level, eva, cur, run, c, meta)?;
                cur += run as u64 * level_size(level);
                continue;
            }
            let se = slot_end(cur, level, end);
            let pte = Pte(env.arch.read_pte(eva)?);
            let table = pte.is_table(level);
            match req.op {
                Op::Insert { .. } if req.is_target(level, cur, se) => {
                    let contig = req.contiguous(level, cur);
                    let new = Pte::leaf_bits::<F>(level, Paddr(req.pa_at(cur)), req.bits, contig);
                    env.arch.write_pte(eva, new.0)?;
                    meta.note(level, idx, pte.0, new.0);
                    c.report.leaves += 1;
                }
                Op::Populate if req.is_target(level, cur, se) || (table && level + 1 == 3) => {}
                Op::Insert { .. } | Op::Populate => {
                    if table {
                        let child = pte.table_mfn::<F>();
                        let after = self.commit(env, req, level + 1, child, cur, se, c)?;
                        self.merge(env, level, tva, eva, cur, pte.0, after, c, meta)?;
                    } else {
                        let new = self.new_table(env, req, level + 1, cur, se, c)?;
                        let link = Pte::table::<F>(new).0;
                        env.arch.write_pte(eva, link)?;
                        meta.note(level, idx, pte.0, link);
                        meta.linked(env.alloc, new);
                    }
                }
                Op::Modify { .. } | Op::Remove => {
                    if table {
                        let child = pte.table_mfn::<F>();
                        // A subtree a Remove covers whole: unlinked and freed
                        // without reading or clearing its leaves, when
                        // every table in it may be freed.
                        if matches!(req.op, Op::Remove)
                            && covers_slot(cur, se, level)
                            && self.detachable(env, level + 1, child, c)?
                        {
                            env.arch.write_pte(eva, 0)?;
                            meta.note(level, idx, pte.0, 0);
                            // A whole table is more than the threshold: one
                            // whole-regime invalidation.
                            c.dirty = true;
                            if pending.is_full() {
                                self.free_unlinked(env, req, &mut pending, c);
                            }
                            pending.push(child, level + 1);
                            cur = se;
                            continue;
                        }
                        let after = self.commit(env, req, level + 1, child, cur, se, c)?;
                        if after == After::Empty && freeable(env.alloc, child) {
                            // Unlink now; free only after the walk caches
                            // that may hold the link are invalidated.
                            env.arch.write_pte(eva, 0)?;
                            meta.note(level, idx, pte.0, 0);
                            if !req.flush_all {
                                self.inv_one(env.arch, cur, c);
                            } else {
                                c.dirty = true;
                            }
                            if pending.is_full() {
                                self.free_unlinked(env, req, &mut pending, c);
                            }
                            pending.push(child, NO_SUBTREE);
                        } else {
                            self.merge(env, level, tva, eva, cur, pte.0, after, c, meta)?;
                        }
                    } else if pte.is_leaf(level) && req.changes(pte.0) {
                        if pte.is_contiguous() {
                            cur = self
                                .rewrite_group(env, req, level, tva, cur, c, meta)?
                                .min(end);
                            continue;
                        }
                        if covers_slot(cur, se, level) {
                            let new = req.applied(pte.0);
                            env.arch.write_pte(eva, new)?;
                            meta.note(level, idx, pte.0, new);
                            c.report.leaves += 1;
                            self.flush_leaf(env.arch, req, cur, c);
                        } else {
                            self.split(env, req, level, eva, pte, cur, se, c, meta)?;
                        }
                    }
                }
            }
            cur = se;
        }
        self.free_unlinked(env, req, &mut pending, c);
        Self::after(env, req, level, tva, va, end, meta)
    }

    /// What the table at `tva` (level `level`), just committed for
    /// `[va, end)`, is for its parent: empty after a Remove, uniform when
    /// the update may merge it, or kept. Its counts say which when known;
    /// otherwise it is read.
    #[allow(clippy::too_many_arguments)]
    fn after<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        env: &mut Env<'_, A, T, M>,
        req: &Req<F::Attrs>,
        level: u8,
        tva: Vaddr,
        va: u64,
        end: u64,
        meta: &TableMeta,
    ) -> Result<After, Error> {
        if level == F::ROOT_LEVEL {
            return Ok(After::Kept);
        }
        if matches!(req.op, Op::Remove) {
            // Empty if the request covered the whole table, else count or
            // look.
            let span = level_size(level) * ENTRIES as u64;
            let empty = (va.is_multiple_of(span) && end - va == span)
                || match meta.live_entries() {
                    Some(live) => live == 0,
                    None => !Self::any_live(env, level, tva)?,
                };
            if empty {
                return Ok(After::Empty);
            }
        }
        if !(req.flags.merge && req.flags.block_at(level - 1)) {
            return Ok(After::Kept);
        }
        Self::uniform(env, level, tva, meta)
    }

    /// Whether the level-`level` table at `tva` maps one aligned, physically
    /// contiguous range with one set of attributes: every entry a leaf,
    /// entry `i` the first one plus `i` entries' worth of output address
    /// (the contiguous hint aside), the first one's output address aligned
    /// to the parent's block size. Its counts say so when it is tracked
    /// (all 512 entries equal their pattern's, or — some do, some do not —
    /// it is not uniform: a uniform table with one entry equal to the
    /// pattern's has them all equal); otherwise the table is read.
    fn uniform<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        env: &mut Env<'_, A, T, M>,
        level: u8,
        tva: Vaddr,
        meta: &TableMeta,
    ) -> Result<After, Error> {
        let parent = level_size(level - 1);
        let tracked = match meta.uniform_entries() {
            Some((pattern, matching)) if matching > 0 => {
                if usize::from(matching) != ENTRIES {
                    return Ok(After::Kept);
                }
                Some(pattern)
            }
            _ => None,
        };
        let first = match tracked {
            Some(pattern) => pattern,
            None => env.arch.read_pte(tva)?,
        };
        let oa = Pte(first).oa::<F>().0;
        if !Pte(first).is_leaf(level) || !oa.is_multiple_of(parent) {
            return Ok(After::Kept);
        }
        if tracked.is_none() {
            let size = level_size(level);
            let mut want = first & !Pte::CONTIG;
            let odd = env.arch.find_pte(tva, ENTRIES, |e| {
                let ok = e & !Pte::CONTIG == want;
                want = want.wrapping_add(size);
                !ok
            })?;
            if odd.is_some() {
                return Ok(After::Kept);
            }
        }
        let bits = first & !(F::oa_mask() | 3 | Pte::CONTIG);
        Ok(After::Uniform { pa: oa, bits })
    }

    /// Replaces the table `child` (linked by the descriptor `old` at `eva`
    /// of the level-`level` table at `tva`, mapping `va`) by a block when it
    /// came back uniform: break, invalidate the whole range, make, then free
    /// the table. A table the allocator may not free, or (stage 1) a break
    /// that would unmap the table at `tva`, stays as it is.
    #[allow(clippy::too_many_arguments)]
    fn merge<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &self,
        env: &mut Env<'_, A, T, M>,
        level: u8,
        tva: Vaddr,
        eva: Vaddr,
        va: u64,
        old: u64,
        after: After,
        c: &mut Commit,
        meta: &mut TableMeta,
    ) -> Result<(), Error> {
        let After::Uniform { pa, bits } = after else {
            return Ok(());
        };
        let child = Pte(old).table_mfn::<F>();
        let size = level_size(level);
        let base = va & !(size - 1);
        if !freeable(env.alloc, child) || Self::check_break(tva, base, size, level).is_err() {
            return Ok(());
        }
        env.arch.write_pte(eva, 0)?;
        // The TLB may hold any of the table's 512 leaves, and walk caches
        // the link itself: invalidate the regime / VMID whole.
        self.inv_all(env.arch, c);
        self.inv_sync(env.arch, c);
        let block = Pte::leaf_bits::<F>(level, Paddr(pa), bits, false).0;
        env.arch.write_pte(eva, block)?;
        meta.note(level, table_index(va, level), old, block);
        release(env.alloc, child);
        c.report.tables_freed += 1;
        c.report.merges += 1;
        Ok(())
    }

    /// Modify / Remove of the pages `[va, end)` of the level-3 table at
    /// `tva`: one pass over the run for a large update (the whole-regime
    /// invalidation follows at the end), leaf by leaf with an invalidation
    /// each for a small one; contiguous groups are broken and remade.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn commit_pages<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &self,
        env: &mut Env<'_, A, T, M>,
        req: &Req<F::Attrs>,
        tva: Vaddr,
        va: u64,
        end: u64,
        c: &mut Commit,
        meta: &mut TableMeta,
    ) -> Result<(), Error> {
        let first = table_index(va, 3);
        let n = ((end - va) / PAGE_SIZE) as usize;
        if req.flush_all {
            // One pass, no branch but the contiguous hint's: prepare proved
            // every Modify target a leaf (a permission rewrite of an entry
            // that already has it stores the same value); a Remove clears
            // what is a leaf. The counts, in one accumulator (so that the
            // loop carries no count through memory): the leaves changed in
            // the low 32 bits, the change of the number of entries equal to
            // the tracked pattern's (wrapping) in the high 32.
            const MATCH: u64 = 1 << 32;
            let mut counts = 0u64;
            let mut contig = false;
            let mut expect = meta.pattern().wrapping_add(first as u64 * PAGE_SIZE);
            let res = match req.op {
                Op::Remove => env.arch.update_pte_run(entry_va(tva, first), n, |e| {
                    let exp = expect;
                    expect = expect.wrapping_add(PAGE_SIZE);
                    if !Pte(e).is_leaf(3) {
                        return None;
                    }
                    if e & Pte::CONTIG != 0 {
                        contig = true;
                        return None;
                    }
                    counts = counts
                        .wrapping_add(1)
                        .wrapping_sub(u64::from(e == exp) * MATCH);
                    Some(0)
                }),
                _ => {
                    let perm = req.perm;
                    env.arch.update_pte_run(entry_va(tva, first), n, |e| {
                        let exp = expect;
                        expect = expect.wrapping_add(PAGE_SIZE);
                        if e & Pte::CONTIG != 0 {
                            contig = true;
                            return None;
                        }
                        let new = (e & !F::Attrs::PERM_MASK) | perm;
                        counts = counts
                            .wrapping_add(u64::from(new != e))
                            .wrapping_add(u64::from(new == exp) * MATCH)
                            .wrapping_sub(u64::from(e == exp) * MATCH);
                        Some(new)
                    })
                }
            };
            let changed = counts & (MATCH - 1);
            let matching = i64::from((counts >> 32) as u32 as i32);
            c.report.leaves += changed;
            c.dirty |= changed > 0;
            if matches!(req.op, Op::Remove) {
                meta.add_live(-(changed as i64));
            }
            if meta.pattern() != 0 && meta.is_known() {
                meta.add_matching(matching);
            }
            res?;
            if !contig {
                return Ok(());
            }
        }
        // Small updates, and the contiguous groups a large one skipped.
        let mut cur = va;
        while cur < end {
            let idx = table_index(cur, 3);
            let at = entry_va(tva, idx);
            let left = ((end - cur) / PAGE_SIZE) as usize;
            let pick = |e: u64| Pte(e).is_leaf(3) && (e & Pte::CONTIG != 0 || !req.flush_all);
            let Some(j) = env.arch.find_pte(at, left, pick)? else {
                break;
            };
            cur += j as u64 * PAGE_SIZE;
            let eva = entry_va(at, j);
            let pte = Pte(env.arch.read_pte(eva)?);
            if !req.changes(pte.0) {
                cur += PAGE_SIZE;
                continue;
            }
            if pte.is_contiguous() {
                cur = self.rewrite_group(env, req, 3, tva, cur, c, meta)?.min(end);
                continue;
            }
            let new = req.applied(pte.0);
            env.arch.write_pte(eva, new)?;
            meta.note(3, idx + j, pte.0, new);
            c.report.leaves += 1;
            self.flush_leaf(env.arch, req, cur, c);
            cur += PAGE_SIZE;
        }
        Ok(())
    }

    /// Breaks and remakes the aligned group of 16 entries (at `level`, in
    /// the table at `tva`) that contains `va`, with the request applied to
    /// the part of it the request covers. Returns the end of the group.
    #[allow(clippy::too_many_arguments)]
    fn rewrite_group<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &self,
        env: &mut Env<'_, A, T, M>,
        req: &Req<F::Attrs>,
        level: u8,
        tva: Vaddr,
        va: u64,
        c: &mut Commit,
        meta: &mut TableMeta,
    ) -> Result<u64, Error> {
        const N: usize = CONTIG_ENTRIES as usize;
        let size = level_size(level);
        let gva = va & !(size * CONTIG_ENTRIES - 1);
        let gend = gva + size * CONTIG_ENTRIES;
        let gidx = table_index(gva, level);
        let at = entry_va(tva, gidx);
        let mut old = [0u64; N];
        for (k, o) in old.iter_mut().enumerate() {
            *o = env.arch.read_pte(entry_va(at, k))?;
        }
        let whole = gva >= req.va && gend <= req.end;
        let keep_hint = whole
            && matches!(req.op, Op::Modify { .. })
            && old
                .iter()
                .all(|&e| Pte(e).is_leaf(level) && Pte(e).is_contiguous());
        // The new entries, splits built unlinked first.
        let mut new = old;
        let mut changed = 0;
        for k in 0..N {
            let o = Pte(old[k]);
            if !o.is_leaf(level) {
                continue;
            }
            let ev = gva + k as u64 * size;
            let plain = Pte(if keep_hint { o.0 } else { o.0 & !Pte::CONTIG });
            new[k] = match req.overlap(ev, ev + size) {
                None => plain.0,
                Some((lo, hi)) if covers_slot(lo, hi, level) => {
                    changed += 1;
                    req.applied(plain.0)
                }
                Some((lo, hi)) => {
                    let t = self.build_split(env, req, level + 1, plain, ev, lo, hi, c)?;
                    c.report.splits += 1;
                    meta.linked(env.alloc, t);
                    Pte::table::<F>(t).0
                }
            };
        }
        if new == old {
            return Ok(gend);
        }
        c.report.leaves += changed;
        c.report.contiguous_breaks += 1;
        if (0..N).all(|k| new[k] == old[k] || new[k] == 0) {
            // Nothing to make (a Remove of the whole group): clearing needs
            // no wait before anything, only the invalidation a Remove gives
            // every leaf it clears.
            for k in 0..N {
                if old[k] != new[k] {
                    env.arch.write_pte(entry_va(at, k), 0)?;
                    meta.note(level, gidx + k, old[k], 0);
                    self.flush_leaf(env.arch, req, gva + k as u64 * size, c);
                }
            }
            return Ok(gend);
        }
        // Break every entry that changes, invalidate them, wait, make.
        for k in 0..N {
            if old[k] != new[k] && Pte(old[k]).is_leaf(level) {
                env.arch.write_pte(entry_va(at, k), 0)?;
            }
        }
        self.inv_broken(env.arch, gva, size, N, c);
        for k in 0..N {
            if old[k] != new[k] && new[k] != 0 {
                env.arch.write_pte(entry_va(at, k), new[k])?;
            }
        }
        for k in 0..N {
            meta.note(level, gidx + k, old[k], new[k]);
        }
        Ok(gend)
    }

    /// Splits the leaf `old` at `level` (entry `eva`, slot `[lo, hi)` of
    /// which the request covers, in part): builds the replacement table
    /// unlinked, then break, invalidate the block, wait, make.
    #[allow(clippy::too_many_arguments)]
    fn split<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &self,
        env: &mut Env<'_, A, T, M>,
        req: &Req<F::Attrs>,
        level: u8,
        eva: Vaddr,
        old: Pte,
        lo: u64,
        hi: u64,
        c: &mut Commit,
        meta: &mut TableMeta,
    ) -> Result<(), Error> {
        let size = level_size(level);
        let base = lo & !(size - 1);
        let table = self.build_split(env, req, level + 1, old, base, lo, hi, c)?;
        env.arch.write_pte(eva, 0)?;
        self.inv_broken(env.arch, base, size, 1, c);
        let link = Pte::table::<F>(table).0;
        env.arch.write_pte(eva, link)?;
        meta.note(level, table_index(lo, level), old.0, link);
        meta.linked(env.alloc, table);
        c.report.splits += 1;
        Ok(())
    }

    /// Builds, unlinked, the table at `level` that replaces the leaf `old`
    /// one level up mapping `[base, base + size)`: entries that copy its
    /// translation (blocks where the level allows), the request applied to
    /// the entries `[lo, hi)` covers whole, and deeper splits for the ones
    /// it covers in part. Takes reserved frames; on failure frees what it
    /// took. The table is tracked against the old leaf's translation.
    #[allow(clippy::too_many_arguments)]
    fn build_split<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &self,
        env: &mut Env<'_, A, T, M>,
        req: &Req<F::Attrs>,
        level: u8,
        old: Pte,
        base: u64,
        lo: u64,
        hi: u64,
        c: &mut Commit,
    ) -> Result<Mfn, Error> {
        let (mfn, zeroed) = env.alloc.take_zeroed().ok_or(Error::OutOfMemory {
            needed: 1,
            available: 0,
        })?;
        c.report.tables_created += 1;
        let tva = match Self::map(env, mfn) {
            Ok(v) => v,
            Err(e) => {
                release(env.alloc, mfn);
                c.report.tables_created -= 1;
                return Err(e);
            }
        };
        c.report.table_maps += 1;
        let mut meta = TableMeta::fresh(0);
        let zero = if zeroed {
            Ok(())
        } else {
            env.arch.zero_page(tva)
        };
        let res = zero
            .map_err(Error::from)
            .and_then(|()| self.fill_split(env, req, level, tva, old, base, lo, hi, c, &mut meta));
        if res.is_err() {
            Self::free_new_subtree(env, level, tva, c);
        }
        env.access.unmap_table(env.arch, mfn, tva);
        match res {
            Ok(()) => {
                store_meta(env.alloc, mfn, meta);
                Ok(mfn)
            }
            Err(e) => {
                release(env.alloc, mfn);
                c.report.tables_created -= 1;
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn fill_split<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &self,
        env: &mut Env<'_, A, T, M>,
        req: &Req<F::Attrs>,
        level: u8,
        tva: Vaddr,
        old: Pte,
        base: u64,
        lo: u64,
        hi: u64,
        c: &mut Commit,
        meta: &mut TableMeta,
    ) -> Result<(), Error> {
        let cs = level_size(level);
        // The old leaf's attribute and software bits, for every child.
        let bits = old.0 & !(F::oa_mask() | 3 | Pte::CONTIG);
        let opa = old.oa::<F>().0;
        let copy = |i: usize| Pte::leaf_bits::<F>(level, Paddr(opa + i as u64 * cs), bits, false).0;
        meta.set_pattern(copy(0));
        let first = ((lo - base) / cs) as usize;
        let last = ((hi - 1 - base) / cs) as usize;
        env.arch.write_pte_run(tva, copy(0), cs, first)?;
        meta.note_run(level, 0, copy(0), first);
        let mut i = first;
        while i <= last {
            let cva = base + i as u64 * cs;
            let (a, b) = (lo.max(cva), hi.min(cva + cs));
            if covers_slot(a, b, level) {
                // The run of children the request covers whole.
                let k = (((hi - cva) / cs) as usize).min(last + 1 - i);
                match req.op {
                    Op::Remove => {}
                    _ => {
                        let v = req.applied(copy(i));
                        env.arch.write_pte_run(entry_va(tva, i), v, cs, k)?;
                        meta.note_run(level, i, v, k);
                    }
                }
                c.report.leaves += k as u64;
                i += k;
                continue;
            }
            let sub = self.build_split(env, req, level + 1, Pte(copy(i)), cva, a, b, c)?;
            let link = Pte::table::<F>(sub).0;
            env.arch.write_pte(entry_va(tva, i), link)?;
            meta.note(level, i, 0, link);
            meta.linked(env.alloc, sub);
            c.report.splits += 1;
            i += 1;
        }
        let rest = ENTRIES - 1 - last;
        env.arch
            .write_pte_run(entry_va(tva, last + 1), copy(last + 1), cs, rest)?;
        meta.note_run(level, last + 1, copy(last + 1), rest);
        Ok(())
    }

    /// Commits a run of `n` insert target entries of one table (at `eva`,
    /// the first one mapping `va`), which the prepare pass proved invalid:
    /// written without reading them, as runs of descriptors that differ by
    /// the level size (split where the contiguous hint changes).
    #[allow(clippy::too_many_arguments)]
    fn commit_insert_run<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        env: &mut Env<'_, A, T, M>,
        req: &Req<F::Attrs>,
        level: u8,
        eva: Vaddr,
        va: u64,
        n: usize,
        c: &mut Commit,
        meta: &mut TableMeta,
    ) -> Result<(), Error> {
        let size = level_size(level);
        let idx = table_index(va, level);
        if !req.flags.contiguous {
            let first = Pte::leaf_bits::<F>(level, Paddr(req.pa_at(va)), req.bits, false);
            env.arch.write_pte_run(eva, first.0, size, n)?;
            meta.note_run(level, idx, first.0, n);
        } else {
            // The hint is the same for the entries of one aligned group of 16.
            let group = size * CONTIG_ENTRIES;
            let mut i = 0;
            while i < n {
                let at = va + i as u64 * size;
                let k = (((at | (group - 1)) - at) / size + 1).min((n - i) as u64) as usize;
                let contig = req.contiguous(level, at);
                let first = Pte::leaf_bits::<F>(level, Paddr(req.pa_at(at)), req.bits, contig);
                env.arch.write_pte_run(entry_va(eva, i), first.0, size, k)?;
                meta.note_run(level, idx + i, first.0, k);
                i += k;
            }
        }
        c.report.leaves += n as u64;
        Ok(())
    }

    fn flush_leaf<A: Arch>(&self, arch: &mut A, req: &Req<F::Attrs>, va: u64, c: &mut Commit) {
        if req.flush_all {
            c.dirty = true;
        } else {
            self.inv_one(arch, va, c);
        }
    }

    /// Frees tables that were unlinked: first makes sure no TLB or walk
    /// cache can still reach them (one whole-regime invalidation for a
    /// large update; the per-address ones were issued when unlinking), then
    /// frees them, with every table below the subtrees unlinked whole.
    #[inline(never)]
    fn free_unlinked<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &self,
        env: &mut Env<'_, A, T, M>,
        req: &Req<F::Attrs>,
        pending: &mut Unlinked,
        c: &mut Commit,
    ) {
        if pending.len == 0 {
            return;
        }
        if req.flush_all {
            self.inv_all(env.arch, c);
        }
        self.inv_sync(env.arch, c);
        for &packed in &pending.frames[..pending.len] {
            let (mfn, level) = (Mfn(packed >> 3), (packed & 7) as u8);
            Self::free_subtree(env, level, mfn, c);
        }
        pending.len = 0;
    }

    /// Frees the unlinked table `mfn` at `level` and every table below it.
    /// A subtree removed whole ([`PageTable::detachable`]; `level` 1 to 3)
    /// adds the leaves it held to the report: a level-3 table's are its
    /// live entries, from its counts when known (else it is read); a table
    /// emptied entry by entry ([`NO_SUBTREE`]) is freed as it is.
    fn free_subtree<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        env: &mut Env<'_, A, T, M>,
        level: u8,
        mfn: Mfn,
        c: &mut Commit,
    ) {
        if level == 3 {
            c.report.leaves += Self::release_l3(env, mfn, c);
            c.report.tables_freed += 1;
            return;
        }
        if level < 3 {
            if let Ok(tva) = Self::map(env, mfn) {
                c.report.table_maps += 1;
                if level == 2 {
                    Self::release_l3s(env, tva, c);
                } else {
                    let mut leaves = 0u64;
                    let _ = Self::each_entry(env, tva, |env, _, e| {
                        let pte = Pte(e);
                        if pte.is_table(level) {
                            Self::free_subtree(env, level + 1, pte.table_mfn::<F>(), c);
                        } else {
                            leaves += u64::from(pte.is_leaf(level));
                        }
                        Ok(true)
                    });
                    c.report.leaves += leaves;
                }
                env.access.unmap_table(env.arch, mfn, tva);
            }
            release(env.alloc, mfn);
        } else {
            // Emptied entry by entry: all zero if its counts say so.
            release_emptied(env.alloc, mfn);
        }
        c.report.tables_freed += 1;
    }

    /// Frees the level-3 tables linked by the unlinked level-2 table at
    /// `tva` and counts the leaves they and it held: a level-3 table with
    /// known counts is neither mapped nor read (its slot read and set back
    /// to unknown, the frame freed), any other is read
    /// ([`PageTable::release_l3`]).
    fn release_l3s<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        env: &mut Env<'_, A, T, M>,
        tva: Vaddr,
        c: &mut Commit,
    ) {
        const CHUNK: usize = 64;
        let (mut leaves, mut freed) = (0u64, 0u64);
        let mut entries = [0u64; CHUNK];
        let mut tables = [Mfn(0); CHUNK];
        for i in (0..ENTRIES).step_by(CHUNK) {
            // The chunk's entries copied out (one scan), then looked at.
            let mut k = 0;
            let read = env.arch.find_pte(entry_va(tva, i), CHUNK, |e| {
                entries[k] = e;
                k += 1;
                false
            });
            if read.is_err() {
                break;
            }
            let mut n = 0;
            for &e in &entries {
                let pte = Pte(e);
                if !pte.is_table(2) {
                    leaves += u64::from(pte.is_leaf(2));
                    continue;
                }
                let mfn = pte.table_mfn::<F>();
                match env.alloc.table_meta(mfn) {
                    Some(slot) if slot.is_known() => {
                        leaves += u64::from(slot.live_entries().unwrap_or(0));
                        *slot = TableMeta::UNKNOWN;
                        tables[n] = mfn;
                        n += 1;
                    }
                    _ => {
                        // Freed in order: the ones before it first.
                        Self::release_uncounted(env, &tables[..n], mfn, c);
                        freed += n as u64 + 1;
                        n = 0;
                    }
                }
            }
            env.alloc.free_batch(&tables[..n]);
            freed += n as u64;
        }
        c.report.leaves += leaves;
        c.report.tables_freed += freed;
    }

    /// The slow path of [`PageTable::release_l3s`]: frees `counted`, then
    /// the level-3 table `mfn`, whose leaves are read.
    #[cold]
    #[inline(never)]
    fn release_uncounted<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        env: &mut Env<'_, A, T, M>,
        counted: &[Mfn],
        mfn: Mfn,
        c: &mut Commit,
    ) {
        env.alloc.free_batch(counted);
        c.report.leaves += Self::release_l3(env, mfn, c);
    }

    /// Frees the level-3 table `mfn` removed whole, returning its leaves:
    /// its live entries, from its counts when known (taken from the slot as
    /// it is set back to unknown), else read.
    #[inline(always)]
    fn release_l3<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        env: &mut Env<'_, A, T, M>,
        mfn: Mfn,
        c: &mut Commit,
    ) -> u64 {
        // Unknown from here on.
        let known = env
            .alloc
            .table_meta(mfn)
            .map_or(TableMeta::UNKNOWN, |slot| {
                core::mem::replace(slot, TableMeta::UNKNOWN)
            });
        let leaves = match known.live_entries() {
            Some(live) => u64::from(live),
            _ => Self::in_table(env, mfn, |env, tva| {
                c.report.table_maps += 1;
                Self::any_live_count(env, 3, tva)
            })
            .unwrap_or(0),
        };
        env.alloc.free(mfn);
        leaves
    }

    /// Whether the table `mfn` at `level`, which a Remove covers whole, and
    /// every table below it may be freed. Its leaves are then never read
    /// nor cleared: the subtree is unlinked, invalidated and freed
    /// ([`PageTable::free_subtree`] counts them). A level-2 table the engine
    /// made and keeps counts for, linking no untracked table, holds only
    /// tables the engine made: nothing to read. Others are read down to the
    /// level-2 tables (a level-3 table is asked about, not read).
    fn detachable<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &self,
        env: &mut Env<'_, A, T, M>,
        level: u8,
        mfn: Mfn,
        c: &mut Commit,
    ) -> Result<bool, Error> {
        let meta = load_meta(env.alloc, mfn);
        if !(meta.is_known() || env.alloc.can_free(mfn)) {
            return Ok(false);
        }
        if level == 3 || (level == 2 && meta.is_known() && !meta.untracked()) {
            return Ok(true);
        }
        Self::in_table(env, mfn, |env, tva| {
            c.report.table_maps += 1;
            let mut ok = true;
            Self::each_entry(env, tva, |env, _, e| {
                let pte = Pte(e);
                if pte.is_table(level) {
                    let child = pte.table_mfn::<F>();
                    ok = if level == 2 {
                        freeable(env.alloc, child)
                    } else {
                        self.detachable(env, level + 1, child, c)?
                    };
                }
                Ok(ok)
            })?;
            Ok(ok)
        })
    }

    /// The number of live entries of the level-`level` table at `tva`
    /// (read).
    fn any_live_count<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        env: &mut Env<'_, A, T, M>,
        level: u8,
        tva: Vaddr,
    ) -> Result<u64, Error> {
        let mut live = 0u64;
        Self::each_entry(env, tva, |_, _, e| {
            live += u64::from(is_live(level, e));
            Ok(true)
        })?;
        Ok(live)
    }

    /// Calls `f(env, index, entry)` for the entries of the table at `tva`,
    /// in order, until it returns `false`. The entries are copied out a
    /// chunk at a time (one scan each), so that `f` may use `env`.
    fn each_entry<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        env: &mut Env<'_, A, T, M>,
        tva: Vaddr,
        mut f: impl FnMut(&mut Env<'_, A, T, M>, usize, u64) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        let mut buf = [0u64; 64];
        let mut i = 0;
        while i < ENTRIES {
            let mut k = 0;
            env.arch.find_pte(entry_va(tva, i), buf.len(), |e| {
                buf[k] = e;
                k += 1;
                false
            })?;
            for (j, &e) in buf.iter().enumerate() {
                if !f(env, i + j, e)? {
                    return Ok(());
                }
            }
            i += buf.len();
        }
        Ok(())
    }

    /// Creates a table at `level` for `[va, end)`: takes a reserved frame,
    /// zeroes it, fills it, and returns it for the caller to link.
    fn new_table<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        &self,
        env: &mut Env<'_, A, T, M>,
        req: &Req<F::Attrs>,
        level: u8,
        va: u64,
        end: u64,
        c: &mut Commit,
    ) -> Result<Mfn, Error> {
        let (mfn, zeroed) = env.alloc.take_zeroed().ok_or(Error::OutOfMemory {
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
                release(env.alloc, mfn);
                c.report.tables_created -= 1;
                return Err(e);
            }
        };
        c.report.table_maps += 1;
        let mut meta = TableMeta::fresh(Self::insert_pattern(req, level, va));
        let zero = if zeroed {
            Ok(())
        } else {
            env.arch.zero_page(tva)
        };
        let res = zero
            .map_err(Error::from)
            .and_then(|()| self.commit_in(env, req, level, tva, va, end, c, &mut meta));
        if res.is_err() {
            // Never linked anywhere, so no TLB can hold it: give back the
            // tables already made under it.
            Self::free_new_subtree(env, level, tva, c);
        }
        env.access.unmap_table(env.arch, mfn, tva);
        match res {
            Ok(_) => {
                store_meta(env.alloc, mfn, meta);
                Ok(mfn)
            }
            Err(e) => {
                release(env.alloc, mfn);
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
            release(env.alloc, child);
            c.report.tables_created -= 1;
        }
    }

    // ----------------------------------------------------------------------
    // Reading: lookup, range walk, dump (no frame allocator)
    // ----------------------------------------------------------------------

    /// The leaf for `pte` at `level`, for the address `va` inside it.
    #[inline(always)]
    fn leaf_at(&self, pte: Pte, level: u8, va: u64) -> Leaf<F::Attrs> {
        let off = va & (level_size(level) - 1);
        Leaf {
            level,
            pa: Paddr(pte.oa::<F>().0 + off),
            pte,
            attrs: F::Attrs::from_leaf_bits(pte.0, &self.mair),
        }
    }

    /// Walks the tables for `va` and returns the leaf that maps it, `None` if
    /// it is unmapped.
    #[inline(always)]
    pub fn lookup<A: Arch, T: TableAccess<A>>(
        &self,
        arch: &mut A,
        access: &mut T,
        va: F::Input,
    ) -> Result<Option<Leaf<F::Attrs>>, Error> {
        let va = va.raw();
        // In the remembered level-3 table: one table mapped, one read. A
        // provider or memory failure retries the whole walk, which reports it.
        if let Some(l3) = self.cached_l3(va) {
            if let Ok(tva) = access.map_table(arch, l3) {
                let read = arch.read_pte(entry_va(tva, table_index(va, 3)));
                access.unmap_table(arch, l3, tva);
                if let Ok(raw) = read {
                    let pte = Pte(raw);
                    return Ok(pte.is_leaf(3).then(|| self.leaf_at(pte, 3, va)));
                }
            }
        }
        self.lookup_walk(&mut Env::new(arch, access, &mut NoFrames), va)
    }

    /// Refuses a single address beyond the format's input size.
    fn check_one_va(va: u64) -> Result<(), Error> {
        if F::va_end_fits(va.saturating_add(1)) {
            Ok(())
        } else {
            Err(Error::VaOutOfRange {
                va: Vaddr(va),
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
        va: u64,
    ) -> Result<Option<Leaf<F::Attrs>>, Error> {
        Self::check_one_va(va)?;
        let mut mfn = self.root_for(va);
        let mut level = F::ROOT_LEVEL;
        loop {
            let pte = Self::read_entry(env, mfn, table_index(va, level))?;
            if pte.is_table(level) {
                mfn = pte.table_mfn::<F>();
                level += 1;
                if level == 3 {
                    self.remember_l3(va, mfn);
                }
                continue;
            }
            if pte.is_leaf(level) {
                return Ok(Some(self.leaf_at(pte, level, va)));
            }
            return Ok(None);
        }
    }

    /// Calls `f(va, pages, leaf)` for every leaf mapping in
    /// `[va, va + pages * 4 KiB)`, visiting each table once (a range
    /// translation, not a lookup per page): the visited part of the leaf
    /// starts at `va` and is `pages` 4 KiB pages long (sizes are counted in
    /// pages here as in [`PageTable::update`]); `leaf.pa` is the address
    /// `va` maps to.
    pub fn for_each_leaf<A: Arch, T: TableAccess<A>>(
        &self,
        arch: &mut A,
        access: &mut T,
        va: F::Input,
        pages: u64,
        f: &mut dyn FnMut(F::Input, u64, Leaf<F::Attrs>),
    ) -> Result<(), Error> {
        self.for_each_leaf_with(arch, access, va, pages, f)
    }

    /// [`PageTable::for_each_leaf`] with a statically dispatched callback
    /// (the visitor is monomorphised for `f`, so a small callback inlines).
    #[inline(always)]
    pub fn for_each_leaf_with<A: Arch, T: TableAccess<A>, G>(
        &self,
        arch: &mut A,
        access: &mut T,
        va: F::Input,
        pages: u64,
        mut f: G,
    ) -> Result<(), Error>
    where
        G: FnMut(F::Input, u64, Leaf<F::Attrs>),
    {
        let va = va.raw();
        let (end, _) = Self::check_range(va, pages)?;
        // The root pages in a plain loop (no closure that `f` would escape
        // into).
        let span = level_size(F::ROOT_LEVEL) * ENTRIES as u64;
        let mut cur = va;
        while cur < end {
            let next = if F::ROOT_TABLES == 1 {
                end
            } else {
                ((cur / span) + 1).saturating_mul(span).min(end)
            };
            self.visit(arch, access, self.root_for(cur), cur, next, &mut f)?;
            cur = next;
        }
        Ok(())
    }

    /// The range walk of one root page over `[va, end)`, without recursion:
    /// the tables being visited, one per level, are held on a small stack
    /// (each mapped while its children are visited), so that the whole walk
    /// inlines into its caller and the callback's state stays in registers.
    #[inline(always)]
    fn visit<A: Arch, T: TableAccess<A>, G>(
        &self,
        arch: &mut A,
        access: &mut T,
        root: Mfn,
        va: u64,
        end: u64,
        f: &mut G,
    ) -> Result<(), Error>
    where
        G: FnMut(F::Input, u64, Leaf<F::Attrs>),
    {
        // (table, its address, end of the part of it the walk visits).
        let mut stack = [(Mfn(0), Vaddr(0), 0u64); 4];
        let tva = access
            .map_table(arch, root)
            .map_err(|err| Error::TableAccess { mfn: root, err })?;
        stack[0] = (root, tva, end);
        let mut depth = 0usize;
        let mut cur = va;
        let mair = &self.mair;
        // Attributes decoded once per distinct set of attribute bits.
        let mut memo: (u64, Option<F::Attrs>) = (u64::MAX, None);
        // Entries are copied out a chunk at a time, so that the loops that
        // call `f` hold no state but their own (the callback's stays in
        // registers).
        let mut buf = [0u64; 64];
        let res = loop {
            let (mfn, tva, tend) = stack[depth];
            let level = F::ROOT_LEVEL + depth as u8;
            if cur >= tend {
                access.unmap_table(arch, mfn, tva);
                if depth == 0 {
                    return Ok(());
                }
                depth -= 1;
                continue;
            }
            if level == 3 {
                // Pages only: every slot is one whole page, no table entries.
                let mut left = ((tend - cur) / PAGE_SIZE) as usize;
                let mut eva = entry_va(tva, table_index(cur, 3));
                let mut failed = None;
                while left > 0 {
                    let k = left.min(buf.len());
                    let mut i = 0;
                    if let Err(e) = arch.find_pte(eva, k, |e| {
                        buf[i] = e;
                        i += 1;
                        false
                    }) {
                        failed = Some(e);
                        break;
                    }
                    for &e in &buf[..k] {
                        let pte = Pte(e);
                        if pte.is_leaf(3) {
                            let key = e & ATTR_BITS;
                            if key != memo.0 {
                                memo = (key, F::Attrs::from_leaf_bits(e, mair));
                            }
                            f(
                                F::Input::from_raw(cur),
                                1,
                                Leaf {
                                    level: 3,
                                    pa: pte.oa::<F>(),
                                    pte,
                                    attrs: memo.1,
                                },
                            );
                        }
                        cur += PAGE_SIZE;
                    }
                    left -= k;
                    eva = Vaddr(eva.0 + 8 * k as u64);
                }
                if let Some(e) = failed {
                    break Err(Error::from(e));
                }
                cur = tend;
                continue;
            }
            // The entries of this table, a chunk at a time: leaves go to
            // `f`, a table entry stops the scan to be visited.
            let size = level_size(level);
            let first = table_index(cur, level);
            let n = (((tend - 1 - (cur & !(size - 1))) / size) as usize + 1).min(ENTRIES - first);
            let k = n.min(buf.len());
            let mut i = 0;
            if let Err(e) = arch.find_pte(entry_va(tva, first), k, |e| {
                buf[i] = e;
                i += 1;
                false
            }) {
                break Err(Error::from(e));
            }
            let mut child = None;
            for &e in &buf[..k] {
                let pte = Pte(e);
                if pte.is_table(level) {
                    child = Some(pte.table_mfn::<F>());
                    break;
                }
                let se = slot_end(cur, level, tend);
                if pte.is_leaf(level) {
                    let key = e & ATTR_BITS;
                    if key != memo.0 {
                        memo = (key, F::Attrs::from_leaf_bits(e, mair));
                    }
                    f(
                        F::Input::from_raw(cur),
                        (se - cur) / PAGE_SIZE,
                        Leaf {
                            level,
                            pa: Paddr(pte.oa::<F>().0 + (cur & (size - 1))),
                            pte,
                            attrs: memo.1,
                        },
                    );
                }
                cur = se;
            }
            if let Some(cmfn) = child {
                let se = slot_end(cur, level, tend);
                match access.map_table(arch, cmfn) {
                    Ok(ctva) => {
                        depth += 1;
                        stack[depth] = (cmfn, ctva, se);
                    }
                    Err(err) => break Err(Error::TableAccess { mfn: cmfn, err }),
                }
            }
        };
        for &(mfn, tva, _) in stack[..=depth].iter().rev() {
            access.unmap_table(arch, mfn, tva);
        }
        res
    }

    /// Writes the walk for `va` (Xen's `dump_hyp_walk`, or a guest's p2m
    /// walk): each level's table, index and entry, down to the leaf or the
    /// first invalid entry. A stage-1 root is checked against the root
    /// register.
    pub fn dump<A: Arch, T: TableAccess<A>>(
        &self,
        arch: &mut A,
        access: &mut T,
        va: F::Input,
        out: &mut dyn fmt::Write,
    ) -> Result<(), Error> {
        let raw = va.raw();
        let root = self.root_for(raw);
        match self.scope {
            TlbScope::Hyp => {
                let hw_root = arch.root();
                let _ = writeln!(
                    out,
                    "Walking hypervisor VA {va} ({}) root {} (root register {}{})",
                    F::NAME,
                    root.paddr(),
                    hw_root,
                    if hw_root == self.root.paddr() {
                        ""
                    } else {
                        ", a different table"
                    }
                );
            }
            TlbScope::Guest(vmid) => {
                let _ = writeln!(
                    out,
                    "Walking guest IPA {va} ({}, {vmid}) root {}",
                    F::NAME,
                    root.paddr(),
                );
            }
        }
        Self::check_one_va(raw)?;
        let mut none = NoFrames;
        let env = &mut Env::new(arch, access, &mut none);
        let mut mfn = root;
        let mut level = F::ROOT_LEVEL;
        loop {
            let idx = table_index(raw, level);
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
                let leaf = self.leaf_at(pte, level, raw);
                let _ = match leaf.attrs {
                    Some(a) => writeln!(out, "  -> PA {} {a}", leaf.pa),
                    None => writeln!(out, "  -> PA {} (attributes not hvmm's)", leaf.pa),
                };
            }
            return Ok(());
        }
    }

    // ----------------------------------------------------------------------
    // Lifecycle
    // ----------------------------------------------------------------------

    /// Frees every table page of the table, root included, after
    /// invalidating the regime's TLB entries (the hypervisor's, or the
    /// guest's VMID) so that no walk cache still reaches them. The table
    /// must not be in use: no CPU's root register (TTBR / VTTBR) may point
    /// at it. Returns the number of pages freed.
    pub fn destroy<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        self,
        env: &mut Env<'_, A, T, M>,
    ) -> Result<u64, Error> {
        let mut c = Commit::new(0);
        self.inv_all(env.arch, &mut c);
        self.inv_sync(env.arch, &mut c);
        let nested = usize::from(4 - F::ROOT_LEVEL);
        env.access
            .reserve(env.arch, nested)
            .map_err(|err| Error::TableAccess {
                mfn: self.root,
                err,
            })?;
        let mut freed = 0u64;
        let mut res = Ok(());
        for i in 0..F::ROOT_TABLES as u64 {
            let root = self.root.add(i);
            if res.is_ok() {
                res = Self::free_tree(env, F::ROOT_LEVEL, root, &mut freed);
            }
            release(env.alloc, root);
            freed += 1;
        }
        env.access.unreserve(env.arch);
        res.map(|()| freed)
    }

    /// Frees the tables below the table `mfn` at `level` (not `mfn` itself).
    fn free_tree<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        env: &mut Env<'_, A, T, M>,
        level: u8,
        mfn: Mfn,
        freed: &mut u64,
    ) -> Result<(), Error> {
        if level == 3 {
            return Ok(());
        }
        Self::in_table(env, mfn, |env, tva| {
            for i in 0..ENTRIES {
                let pte = Pte(env.arch.read_pte(entry_va(tva, i))?);
                if pte.is_table(level) {
                    let child = pte.table_mfn::<F>();
                    Self::free_tree(env, level + 1, child, freed)?;
                    if freeable(env.alloc, child) {
                        release(env.alloc, child);
                        *freed += 1;
                    }
                }
            }
            Ok(())
        })
    }
}

impl<F: Stage1Format> PageTable<F> {
    /// A new, empty stage-1 table (the hypervisor's own): allocates and
    /// zeroes its root. Attributes use Xen's MAIR layout unless
    /// [`PageTable::with_mair`] says otherwise.
    pub fn create<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        env: &mut Env<'_, A, T, M>,
    ) -> Result<Self, Error> {
        Ok(Self::with_root(Self::alloc_root(env)?, TlbScope::Hyp))
    }

    /// A handle over the stage-1 table whose (zeroed or already built) root
    /// is `root`, such as the boot tables the head built.
    ///
    /// # Safety
    ///
    /// No other [`PageTable`] over `root` may exist while this one does:
    /// each handle remembers the last level-3 table it reached, and one
    /// handle's Remove could free a table the other would then write into.
    /// (Nothing else about the tables is assumed; an update reads them.)
    #[allow(unsafe_code)]
    pub const unsafe fn from_root(root: Mfn) -> Self {
        Self::with_root(root, TlbScope::Hyp)
    }

    /// The same table with stage-1 attributes encoded through `mair` (the
    /// CPU's MAIR register must hold [`MairMap::value`]).
    pub const fn with_mair(mut self, mair: MairMap) -> Self {
        self.mair = mair;
        self
    }
}

impl<F: Stage2Format> PageTable<F> {
    /// A new, empty stage-2 table for the guest `vmid`: allocates and zeroes
    /// its root (every concatenated page, aligned to their total size). A
    /// VMID wider than the format's VTTBR field is refused.
    pub fn create_stage2<A: Arch, T: TableAccess<A>, M: FrameAlloc>(
        env: &mut Env<'_, A, T, M>,
        vmid: Vmid,
    ) -> Result<Self, Error> {
        Self::check_vmid(vmid)?;
        Ok(Self::with_root(
            Self::alloc_root(env)?,
            TlbScope::Guest(vmid),
        ))
    }

    /// A handle over an existing stage-2 root for the guest `vmid`.
    ///
    /// # Safety
    ///
    /// As for [`PageTable::from_root`]: no other handle over `root` may
    /// exist while this one does.
    #[allow(unsafe_code)]
    pub unsafe fn from_root_stage2(root: Mfn, vmid: Vmid) -> Result<Self, Error> {
        Self::check_vmid(vmid)?;
        Ok(Self::with_root(root, TlbScope::Guest(vmid)))
    }

    fn check_vmid(vmid: Vmid) -> Result<(), Error> {
        if u32::from(vmid.0) >> F::VMID_BITS != 0 {
            return Err(Error::VmidTooWide {
                vmid,
                bits: F::VMID_BITS,
            });
        }
        Ok(())
    }

    /// The VTTBR value that makes this table the guest's stage 2: the root's
    /// address and the VMID in bits \[63:48\] (arm64) / \[55:48\] (arm32).
    pub fn vttbr(&self) -> u64 {
        let vmid = self.vmid().map_or(0, |v| u64::from(v.0));
        self.root.paddr().0 | (vmid << 48)
    }
}

impl Commit {
    fn new(maps: u64) -> Self {
        Commit {
            report: UpdateReport {
                table_maps: maps,
                ..Default::default()
            },
            dirty: false,
            by_ipa: false,
            last_l3: None,
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
        let mut pt = PageTable::<Arm64>::create(&mut mem.env()).unwrap();
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
        let tlb = a.arch.tlb_ops();
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
        assert_eq!(a.arch.tlb_ops(), tlb + 1);
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
        let mut pt = PageTable::<Arm64>::create(&mut mem.env()).unwrap();
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
            assert_eq!(mem.frames.in_use(), 4);
            let r = pt
                .update(&mut mem.env(), VA, 8, Op::Remove, MapFlags::PAGES)
                .unwrap();
            assert_eq!(r.tables_freed, 3);
            assert_eq!(mem.frames.in_use(), 1);
            assert_eq!(mem.arch.snapshot()[1..], pristine[1..]);
            assert_eq!(pt.lookup(&mut mem.arch, &mut mem.access, VA).unwrap(), None);
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
        let mut pa = PageTable::<Arm64>::create(&mut a.env()).unwrap();
        let mut b = HostMemory::new(8);
        let mut pb = PageTable::<Arm64>::create(&mut b.env()).unwrap();
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
                    let la = pa.lookup(&mut a.arch, &mut a.access, va);
                    let lb = pb.lookup(&mut b.arch, &mut b.access, va);
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
            assert_eq!(a.frames.in_use(), b.frames.in_use());
        }
        // The walk was remembered and used, and the pool did run out.
        assert!(hits > steps / 20, "{hits} calls used the remembered walk");
        assert!(oom > 0);
    }

    /// The packed slot keeps every block mapping the engine tracks (pages
    /// and blocks, both stages' attribute bits, output addresses up to 48
    /// bits), drops the ones that do not pack (not tracked then), and an
    /// unknown slot stays unknown under any drift of its live count an
    /// update can make.
    #[test]
    fn table_meta_packs_the_tracked_mapping() {
        use crate::S2Attrs;
        let mair = MairMap::XEN;
        let rw = Attrs::RW.leaf_bits(&mair).unwrap();
        let rx = Attrs::RX.leaf_bits(&mair).unwrap();
        let s2 = S2Attrs::RAM.leaf_bits(&mair).unwrap();
        for (level, pa, bits) in [
            (3, 0x8000_0000u64, rw),
            (3, 0xffff_ffe0_0000, rx),
            (2, 0x40_0000_0000, rw),
            (3, 0x1234_5620_0000, s2),
            (2, 0xc000_0000, s2),
        ] {
            let pattern = Pte::leaf_bits::<Arm64>(level, Paddr(pa), bits, false).0;
            let mut m = TableMeta::fresh(pattern);
            assert_eq!(m.pattern(), pattern, "{pattern:#x}");
            assert_eq!(m.uniform_entries(), Some((pattern, 0)));
            m.note_run(level, 0, pattern, 512);
            assert_eq!(m.live_entries(), Some(512));
            assert_eq!(m.uniform_entries(), Some((pattern, 512)));
            let last = pattern + 511 * level_size(level);
            m.note(level, 511, last, 0);
            assert_eq!((m.live_entries(), m.matching()), (Some(511), 511));
            m.set_untracked();
            assert!(m.untracked() && m.pattern() == pattern && m.matching() == 511);
        }
        // Not 2 MiB-aligned, software bits, beyond 48 bits: not tracked.
        for pattern in [
            Pte::leaf_bits::<Arm64>(3, Paddr(0x8000_1000), rw, false).0,
            Pte::leaf_bits::<Arm64>(3, Paddr(0x8000_0000), rw, false)
                .with_sw(3)
                .0,
            (1 << 48) | rw | 3,
        ] {
            let m = TableMeta::fresh(pattern);
            assert_eq!((m.pattern(), m.uniform_entries()), (0, None));
            assert_eq!(m.live_entries(), Some(0));
        }
        for d in [-512i64, -1, 0, 1, 512] {
            let mut m = TableMeta::UNKNOWN;
            m.add_live(d);
            m.add_matching(-d);
            assert!(!m.is_known() && m.live_entries().is_none(), "{d}");
        }
    }

    /// Removes on 2 MiB boundaries (their own path) leave exactly what the
    /// general two-pass path leaves, over pages, 2 MiB blocks, 1 GiB blocks
    /// covered in part, contiguous runs and holes, with and without table
    /// counts: the same result or error, table bytes, frames in use and
    /// counts of leaves and tables.
    #[test]
    fn aligned_removes_match_the_general_path() {
        fn build(mem: &mut HostMemory) -> PageTable<Arm64> {
            let mut pt = PageTable::<Arm64>::create(&mut mem.env()).unwrap();
            let mib2 = 512;
            let map = |pt: &mut PageTable<Arm64>, mem: &mut HostMemory, va: u64, pages, pa, f| {
                let op = Op::Insert {
                    pa: Paddr(pa),
                    attrs: Attrs::RW,
                };
                pt.update(&mut mem.env(), Vaddr(va), pages, op, f).unwrap();
            };
            // Pages over 3 MiB, 2 MiB blocks, a 1 GiB block, contiguous
            // pages and 2 MiB contiguous blocks, a lone page.
            map(
                &mut pt,
                mem,
                1 << 30,
                3 * mib2 / 2,
                0x8000_0000,
                MapFlags::PAGES,
            );
            map(
                &mut pt,
                mem,
                (1 << 30) + (8 << 20),
                4 * mib2,
                0x9000_0000,
                MapFlags::BLOCKS,
            );
            map(
                &mut pt,
                mem,
                4 << 30,
                512 * mib2,
                0x1_0000_0000,
                MapFlags::BLOCKS,
            );
            map(
                &mut pt,
                mem,
                (1 << 30) + (32 << 20),
                2 * mib2,
                0xa000_0000,
                MapFlags::BLOCKS_CONTIG,
            );
            map(
                &mut pt,
                mem,
                (1 << 30) + (64 << 20),
                32 * mib2,
                0xc000_0000,
                MapFlags::BLOCKS_2M_CONTIG,
            );
            map(
                &mut pt,
                mem,
                (1 << 30) + (200 << 20) + 0x5000,
                1,
                0xb000_0000,
                MapFlags::PAGES,
            );
            pt
        }
        let mut cases = 0;
        // Miri interprets every step: the counted half, a few ranges.
        let (variants, ranges) = if cfg!(miri) { (1, 5) } else { (2, usize::MAX) };
        for counted in [true, false].into_iter().take(variants) {
            for (start, mib2s) in [
                ((1u64 << 30), 1u64),
                ((1 << 30), 2),
                ((1 << 30) + (2 << 20), 3),
                ((1 << 30), 512),
                ((1 << 30) + (8 << 20), 2),
                ((1 << 30) + (32 << 20), 1),
                ((1 << 30) + (64 << 20), 16),
                ((1 << 30) + (64 << 20), 32),
                ((1 << 30) + (198 << 20), 2),
                ((4 << 30) + (6 << 20), 5),
                ((4 << 30), 512),
                ((0), 4096),
                ((1 << 30) + (100 << 20), 1),
            ]
            .into_iter()
            .take(ranges)
            {
                let pages = mib2s * 512;
                let mut a = HostMemory::new(64);
                let mut b = HostMemory::new(64);
                let mut pa = build(&mut a);
                let mut pb = build(&mut b);
                if !counted {
                    // No counts: every table is read.
                    for mem in [&mut a, &mut b] {
                        for i in 0..64 {
                            if let Some(m) = mem.frames.table_meta(Mfn(0x4_0000 + i)) {
                                *m = TableMeta::UNKNOWN;
                            }
                        }
                    }
                }
                let ra = pa.update(
                    &mut a.env(),
                    Vaddr(start),
                    pages,
                    Op::Remove,
                    MapFlags::PAGES,
                );
                let req = pb.check(start, pages, Op::Remove, MapFlags::PAGES).unwrap();
                pb.forget_walk();
                let rb = pb.update_two_pass(&mut b.env(), &req);
                let what =
                    rust_alloc::format!("remove {mib2s} x 2 MiB at {start:#x} (counted {counted})");
                match (&ra, &rb) {
                    (Ok(x), Ok(y)) => {
                        assert_eq!(
                            (x.leaves, x.tables_freed, x.tables_created, x.splits),
                            (y.leaves, y.tables_freed, y.tables_created, y.splits),
                            "{what}"
                        );
                        assert!(x.leaves == 0 || x.tlb_invalidations > 0, "{what}");
                    }
                    _ => assert_eq!(ra, rb, "{what}"),
                }
                assert_eq!(a.arch.snapshot(), b.arch.snapshot(), "{what}");
                assert_eq!(a.frames.in_use(), b.frames.in_use(), "{what}");
                for va in [start, start + (pages - 1) * PAGE_SIZE, 1 << 30, 4 << 30] {
                    let la = pa.lookup(&mut a.arch, &mut a.access, Vaddr(va)).unwrap();
                    let lb = pb.lookup(&mut b.arch, &mut b.access, Vaddr(va)).unwrap();
                    assert_eq!(la, lb, "{what}: {va:#x}");
                }
                cases += 1;
            }
        }
        assert_eq!(cases, if cfg!(miri) { 5 } else { 26 });
    }

    /// A table the engine emptied goes back to the allocator as all zero
    /// and is not zeroed when it is taken again; a frame given back with
    /// entries in it (a level-3 table of a subtree removed whole, its
    /// leaves never cleared) is zeroed before it is used.
    #[test]
    fn emptied_tables_are_reused_without_zeroing_and_others_are_zeroed() {
        let mut mem = HostMemory::new(16);
        let mut pt = PageTable::<Arm64>::create(&mut mem.env()).unwrap();
        let map = |pt: &mut PageTable<Arm64>, mem: &mut HostMemory, va: u64, pages| {
            let op = Op::Insert {
                pa: Paddr(0x8000_0000),
                attrs: Attrs::RW,
            };
            pt.update(&mut mem.env(), Vaddr(va), pages, op, MapFlags::PAGES)
                .unwrap()
        };
        let g = 1u64 << 30;
        // One page: three tables made (zeroed), then emptied and freed zeroed.
        let z0 = mem.arch.zeroed_pages();
        assert_eq!(map(&mut pt, &mut mem, 4 * g, 1).tables_created, 3);
        assert_eq!(mem.arch.zeroed_pages(), z0 + 3);
        let r = pt
            .update(&mut mem.env(), Vaddr(4 * g), 1, Op::Remove, MapFlags::PAGES)
            .unwrap();
        assert_eq!(r.tables_freed, 3);
        // A page elsewhere takes the same three frames: nothing zeroed.
        assert_eq!(map(&mut pt, &mut mem, 8 * g, 1).tables_created, 3);
        assert_eq!(mem.arch.zeroed_pages(), z0 + 3);
        let lookup = |pt: &PageTable<Arm64>, mem: &mut HostMemory, va: u64| {
            pt.lookup(&mut mem.arch, &mut mem.access, Vaddr(va))
                .unwrap()
        };
        assert!(lookup(&pt, &mut mem, 8 * g).is_some());
        assert!(lookup(&pt, &mut mem, 8 * g + PAGE_SIZE).is_none());
        assert!(lookup(&pt, &mut mem, 4 * g).is_none());
        // A 1 GiB subtree removed whole: its level-3 tables go back with
        // their leaves; the tables made next are zeroed.
        map(&mut pt, &mut mem, g, 1024);
        let r = pt
            .update(
                &mut mem.env(),
                Vaddr(g),
                512 * 512,
                Op::Remove,
                MapFlags::PAGES,
            )
            .unwrap();
        assert_eq!((r.leaves, r.tables_freed), (1024, 3));
        let z1 = mem.arch.zeroed_pages();
        let r = map(&mut pt, &mut mem, 12 * g + 5 * PAGE_SIZE, 1);
        assert_eq!(r.tables_created, 2);
        assert_eq!(mem.arch.zeroed_pages(), z1 + 2);
        for i in 0..512 {
            let va = 12 * g + i * PAGE_SIZE;
            assert_eq!(lookup(&pt, &mut mem, va).is_some(), i == 5, "{va:#x}");
        }
    }

    /// The range walk reports exactly what a lookup per page finds, over
    /// pages, 2 MiB blocks, holes and a range that starts and ends inside
    /// blocks and tables.
    #[test]
    fn range_walk_matches_lookups() {
        let mut mem = HostMemory::new(32);
        let mut pt = PageTable::<Arm64>::create(&mut mem.env()).unwrap();
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
        pt.for_each_leaf_with(
            &mut mem.arch,
            &mut mem.access,
            Vaddr(start),
            pages,
            |va, pages, leaf| {
                seen.push((va.0, pages * PAGE_SIZE, leaf));
            },
        )
        .unwrap();
        let mut next = 0;
        for i in 0..pages {
            let va = start + i * PAGE_SIZE;
            let want = pt
                .lookup(&mut mem.arch, &mut mem.access, Vaddr(va))
                .unwrap();
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
