//! Where table pages come from.
//!
//! The engine is all-or-nothing: it first works out how many new tables an
//! update needs and *reserves* them (the only allocation step that can fail),
//! then writes, taking reserved frames as it goes. A frame allocator therefore
//! offers a reservation, not just "give me a page".
//!
//! An allocator may also keep, beside each frame, a slot for the engine's
//! bookkeeping of the table in it ([`TableMeta`], [`FrameAlloc::table_meta`]):
//! Xen keeps a `page_info` per frame, KVM counts a table's live entries in its
//! page's reference count through the `mm_ops` its caller supplies, TF-A
//! keeps a count per table. With it the engine knows without reading a table
//! whether it is empty or uniform; without it (the default) it reads the
//! table.

use crate::addr::Mfn;

/// The allocator could not reserve the frames an update needs.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct OutOfFrames {
    /// Frames asked for.
    pub needed: usize,
    /// Frames that were available.
    pub available: usize,
}

/// The engine's bookkeeping for one translation table it made, kept by the
/// frame allocator beside the table's frame ([`FrameAlloc::table_meta`]).
///
/// Two counts, exact whenever the slot is known: the table's *live* entries
/// (tables and leaves: what must be gone before the table can be freed, so
/// that an update knows a table became empty without reading its 512
/// entries), and how many entries equal those of one aligned block mapping
/// the table was made for (so that a merge knows a table became uniform
/// without reading it). Only the engine reads and writes them: a table the
/// engine made must not be written behind its back (as for
/// [`crate::PageTable::forget_walk`], outside writes are for tables the
/// engine did not make — the boot tables, the fixmap's, PMAP's and the
/// domain-page slots — whose slots stay [`TableMeta::UNKNOWN`]).
///
/// An allocator that keeps slots initialises each to [`TableMeta::UNKNOWN`]
/// (the `Default`) and otherwise only stores what the engine gives it. The
/// engine sets a slot when it makes a table in the frame, and sets it back to
/// unknown before it frees the frame; for a table whose slot is unknown it
/// reads the table instead, as it would without slots. A table whose slot is
/// known is one the engine took from the allocator and made: it gives it
/// back when it empties it without asking [`FrameAlloc::can_free`] (which is
/// for the tables it did not make, such as the image's).
///
/// A slot is one word (8 bytes), so that a frametable of them stays small
/// and the engine's walks over many tables touch few cache lines: the live
/// count, the matching count, the flag for untracked children and the
/// tracked block mapping packed together, most of the mapping's bits where
/// a descriptor has them (so that reading it back is a mask). A block
/// mapping that does not pack — an output address beyond 48 bits or not
/// 2 MiB-aligned, no access flag, nG, software or other bits the engine
/// does not write — is simply not tracked.
#[derive(Copy, Clone, PartialEq, Eq)]
pub struct TableMeta(u64);

impl TableMeta {
    /// Shift of the live count (bits \[63:52\], at the top so that the
    /// engine's wrapping changes of it touch nothing else): at most 512
    /// when known, around [`TableMeta::UNKNOWN_LIVE`] for an unknown slot,
    /// which the engine's updates may move by up to 512 either way without
    /// making it known (so that they need not test it first).
    const LIVE_SHIFT: u32 = 52;
    /// The live count of an unknown slot.
    const UNKNOWN_LIVE: u64 = 2048;
    /// Every live count below this is a count (a known slot).
    const KNOWN_BELOW: u64 = 1024;
    /// Shift and mask of the count of entries equal to the tracked block
    /// mapping's (bits \[20:11\], at most 512; changed only in a known,
    /// tracked slot).
    const MATCH_SHIFT: u32 = 11;
    const MATCH_MASK: u64 = 0x3ff << Self::MATCH_SHIFT;
    /// Some entry links (or linked) a table the engine keeps no counts for
    /// (its frame has no slot): the tables below are asked about, not
    /// assumed the engine's.
    const UNTRACKED: u64 = 1 << 48;
    /// The tracked block mapping's descriptor bits kept in place: output
    /// address \[47:21\] and attributes \[10:2\] (bit 10, the access flag,
    /// says that a mapping is tracked).
    const PATTERN_IN_PLACE: u64 = (((1 << 48) - 1) & !((1 << 21) - 1)) | 0x7fc;
    const PATTERN_AF: u64 = 1 << 10;
    /// XN / PXN (descriptor bits \[54:53\]) are kept in bits \[1:0\], the
    /// page / block bit (descriptor bit 1) in bit 49.
    const PATTERN_XN: u64 = 3 << 53;
    const PATTERN_PAGE: u64 = 1 << 49;
    /// Every bit of a slot that holds the tracked mapping.
    const PATTERN_BITS: u64 = Self::PATTERN_IN_PLACE | 3 | Self::PATTERN_PAGE;

    /// The slot of a frame the engine has no bookkeeping for.
    pub const UNKNOWN: TableMeta = TableMeta(Self::UNKNOWN_LIVE << Self::LIVE_SHIFT);

    /// A known slot: no live entry, tracked against the block mapping
    /// `pattern` (0, or one that does not pack: not tracked).
    #[inline(always)]
    pub(crate) const fn fresh(pattern: u64) -> Self {
        TableMeta(Self::pack(pattern))
    }

    /// `pattern`'s bits in a slot, 0 if it does not pack.
    #[inline(always)]
    const fn pack(pattern: u64) -> u64 {
        let kept = Self::PATTERN_IN_PLACE | Self::PATTERN_XN | 3;
        if pattern & 1 == 0 || pattern & Self::PATTERN_AF == 0 || pattern & !kept != 0 {
            return 0;
        }
        (pattern & Self::PATTERN_IN_PLACE)
            | ((pattern & Self::PATTERN_XN) >> 53)
            | ((pattern & 2) << 48)
    }

    /// The tracked block mapping (0: not tracked).
    #[inline(always)]
    pub(crate) const fn pattern(&self) -> u64 {
        let p = self.0;
        if p & Self::PATTERN_AF == 0 {
            return 0;
        }
        (p & Self::PATTERN_IN_PLACE) | ((p & 3) << 53) | ((p & Self::PATTERN_PAGE) >> 48) | 1
    }

    /// The same slot tracked against `pattern` instead.
    #[inline(always)]
    pub(crate) fn set_pattern(&mut self, pattern: u64) {
        self.0 = (self.0 & !Self::PATTERN_BITS) | Self::pack(pattern);
    }

    /// Adds `d` (wrapping) to the live count.
    #[inline(always)]
    pub(crate) fn add_live(&mut self, d: i64) {
        self.0 = self.0.wrapping_add((d as u64) << Self::LIVE_SHIFT);
    }

    /// One more live entry, and one more matching entry if `matching` (of a
    /// known, tracked slot), in one change of the slot.
    #[inline(always)]
    pub(crate) fn add_inserted(&mut self, matching: bool) {
        self.0 = self
            .0
            .wrapping_add(1 << Self::LIVE_SHIFT)
            .wrapping_add(u64::from(matching) << Self::MATCH_SHIFT);
    }

    /// The count of entries equal to the tracked block mapping's.
    #[inline(always)]
    pub(crate) const fn matching(&self) -> u16 {
        ((self.0 & Self::MATCH_MASK) >> Self::MATCH_SHIFT) as u16
    }

    /// Adds `d` to the matching count of a known, tracked slot (where the
    /// count stays within 0..=512: nothing else changes).
    #[inline(always)]
    pub(crate) fn add_matching(&mut self, d: i64) {
        self.0 = self.0.wrapping_add((d as u64) << Self::MATCH_SHIFT);
    }

    /// Whether some entry links (or linked) a table without counts.
    #[inline(always)]
    pub(crate) const fn untracked(&self) -> bool {
        self.0 & Self::UNTRACKED != 0
    }

    /// Marks the table as linking a table without counts.
    #[inline(always)]
    pub(crate) fn set_untracked(&mut self) {
        self.0 |= Self::UNTRACKED;
    }

    /// Whether the slot holds the engine's counts for a table it made.
    #[inline(always)]
    pub const fn is_known(&self) -> bool {
        self.0 >> Self::LIVE_SHIFT < Self::KNOWN_BELOW
    }

    /// The table's live entries (tables and leaves), if known.
    #[inline(always)]
    pub const fn live_entries(&self) -> Option<u16> {
        if self.is_known() {
            Some((self.0 >> Self::LIVE_SHIFT) as u16)
        } else {
            None
        }
    }

    /// The aligned block mapping the table is tracked against (its entry 0,
    /// contiguous hint clear) and how many of its entries equal that
    /// mapping's, if known and tracked.
    pub const fn uniform_entries(&self) -> Option<(u64, u16)> {
        let pattern = self.pattern();
        if self.is_known() && pattern != 0 {
            Some((pattern, self.matching()))
        } else {
            None
        }
    }
}

impl core::fmt::Debug for TableMeta {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.live_entries() {
            None => f.write_str("TableMeta::UNKNOWN"),
            Some(live) => f
                .debug_struct("TableMeta")
                .field("live", &live)
                .field("pattern", &format_args!("{:#x}", self.pattern()))
                .field("matching", &self.matching())
                .field("untracked", &self.untracked())
                .finish(),
        }
    }
}

impl Default for TableMeta {
    fn default() -> Self {
        Self::UNKNOWN
    }
}

/// A source of zero-or-garbage 4 KiB frames for translation tables.
pub trait FrameAlloc {
    /// Guarantees that the next `n` calls to [`FrameAlloc::take`] succeed.
    /// Replaces any earlier reservation.
    fn reserve(&mut self, n: usize) -> Result<(), OutOfFrames>;
    /// Takes one reserved frame; `None` only if nothing was reserved.
    fn take(&mut self) -> Option<Mfn>;
    /// Drops what is left of the reservation.
    fn unreserve(&mut self);
    /// Returns a table frame that is no longer linked anywhere.
    fn free(&mut self, mfn: Mfn);
    /// Returns table frames that are no longer linked anywhere: the same as
    /// [`FrameAlloc::free`] of each, in order (the default does that; an
    /// allocator may do it in one step).
    fn free_batch(&mut self, mfns: &[Mfn]) {
        for &mfn in mfns {
            self.free(mfn);
        }
    }
    /// Returns a table frame that is no longer linked anywhere and whose
    /// 512 entries are all zero (a table the engine emptied), as
    /// [`FrameAlloc::free`]. An allocator that keeps track of zeroed free
    /// frames (as Xen tracks scrubbed pages) may say so when
    /// [`FrameAlloc::take_zeroed`] hands it out again, and the engine then
    /// does not zero it again. The default forgets it: [`FrameAlloc::free`].
    fn free_zeroed(&mut self, mfn: Mfn) {
        self.free(mfn)
    }
    /// [`FrameAlloc::take`], and whether the frame is known to be all zero:
    /// given back by [`FrameAlloc::free_zeroed`] and not handed to anyone
    /// since. The default knows nothing: `false`.
    fn take_zeroed(&mut self) -> Option<(Mfn, bool)> {
        self.take().map(|mfn| (mfn, false))
    }
    /// Calls `f` with each frame that the reserved [`FrameAlloc::take`]
    /// calls will return, in order, without taking them. An allocator that
    /// cannot tell calls `f` for nothing.
    fn reserved_frames(&self, f: &mut dyn FnMut(Mfn)) {
        let _ = f;
    }
    /// Whether `mfn` may be freed when its table becomes empty. Tables inside
    /// the hypervisor image (the boot tables, the fixmap's L3) may not. The
    /// engine asks this of the tables it keeps no counts for: a table with a
    /// known [`TableMeta`] slot is one it took from [`FrameAlloc::take`] and
    /// made, and it is always given back (an allocator does not pin frames it
    /// hands out for tables).
    fn can_free(&self, mfn: Mfn) -> bool {
        let _ = mfn;
        true
    }
    /// The bookkeeping slot of the table frame `mfn` ([`TableMeta`]), if
    /// this allocator keeps one for it. The default keeps none: the engine
    /// then reads a table to see whether it is empty or uniform.
    fn table_meta(&mut self, mfn: Mfn) -> Option<&mut TableMeta> {
        let _ = mfn;
        None
    }
    /// Takes `frames` consecutive frames (a power of two, at most 16)
    /// aligned to `frames` × 4 KiB, outside any update: the root of a new
    /// table (a stage-2 root may concatenate several). The default serves
    /// one frame through [`FrameAlloc::reserve`] and [`FrameAlloc::take`]
    /// and refuses more.
    fn alloc_contiguous(&mut self, frames: usize) -> Result<Mfn, OutOfFrames> {
        if frames != 1 {
            return Err(OutOfFrames {
                needed: frames,
                available: 0,
            });
        }
        self.reserve(1)?;
        let mfn = self.take();
        self.unreserve();
        mfn.ok_or(OutOfFrames {
            needed: 1,
            available: 0,
        })
    }
}

/// A frame allocator with no frames, for calls that never allocate (the
/// engine's lookups, range walks and dumps).
#[derive(Copy, Clone, Debug, Default)]
pub struct NoFrames;

impl FrameAlloc for NoFrames {
    fn reserve(&mut self, n: usize) -> Result<(), OutOfFrames> {
        if n == 0 {
            return Ok(());
        }
        Err(OutOfFrames {
            needed: n,
            available: 0,
        })
    }
    fn take(&mut self) -> Option<Mfn> {
        None
    }
    fn unreserve(&mut self) {}
    fn free(&mut self, _mfn: Mfn) {}
}

impl core::fmt::Display for OutOfFrames {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "out of frames: {} needed, {} available",
            self.needed, self.available
        )
    }
}

impl core::error::Error for OutOfFrames {}

impl<T: FrameAlloc + ?Sized> FrameAlloc for &mut T {
    fn reserve(&mut self, n: usize) -> Result<(), OutOfFrames> {
        (**self).reserve(n)
    }
    fn take(&mut self) -> Option<Mfn> {
        (**self).take()
    }
    fn unreserve(&mut self) {
        (**self).unreserve()
    }
    fn free(&mut self, mfn: Mfn) {
        (**self).free(mfn)
    }
    fn free_batch(&mut self, mfns: &[Mfn]) {
        (**self).free_batch(mfns)
    }
    fn free_zeroed(&mut self, mfn: Mfn) {
        (**self).free_zeroed(mfn)
    }
    fn take_zeroed(&mut self) -> Option<(Mfn, bool)> {
        (**self).take_zeroed()
    }
    fn can_free(&self, mfn: Mfn) -> bool {
        (**self).can_free(mfn)
    }
    fn table_meta(&mut self, mfn: Mfn) -> Option<&mut TableMeta> {
        (**self).table_meta(mfn)
    }
    fn reserved_frames(&self, f: &mut dyn FnMut(Mfn)) {
        (**self).reserved_frames(f)
    }
    fn alloc_contiguous(&mut self, frames: usize) -> Result<Mfn, OutOfFrames> {
        (**self).alloc_contiguous(frames)
    }
}

/// A frame allocator with a [`TableMeta`] slot for each frame of
/// `[base, base + slots)`, in storage the caller provides (a frametable:
/// `&mut [TableMeta]` in `no_std`, or an owned vector): every other call goes
/// to `alloc`.
#[derive(Clone, Debug)]
pub struct WithTableMeta<M, S> {
    /// The allocator the frames come from.
    pub alloc: M,
    base: Mfn,
    slots: S,
}

impl<M, S: AsMut<[TableMeta]>> WithTableMeta<M, S> {
    /// `alloc`, with `slots[i]` kept for the frame `base + i`. Every slot is
    /// set to [`TableMeta::UNKNOWN`].
    pub fn new(alloc: M, base: Mfn, mut slots: S) -> Self {
        slots.as_mut().fill(TableMeta::UNKNOWN);
        WithTableMeta { alloc, base, slots }
    }
}

impl<M: FrameAlloc, S: AsMut<[TableMeta]>> FrameAlloc for WithTableMeta<M, S> {
    fn reserve(&mut self, n: usize) -> Result<(), OutOfFrames> {
        self.alloc.reserve(n)
    }
    fn take(&mut self) -> Option<Mfn> {
        self.alloc.take()
    }
    fn unreserve(&mut self) {
        self.alloc.unreserve()
    }
    fn free(&mut self, mfn: Mfn) {
        self.alloc.free(mfn)
    }
    fn free_batch(&mut self, mfns: &[Mfn]) {
        self.alloc.free_batch(mfns)
    }
    fn free_zeroed(&mut self, mfn: Mfn) {
        self.alloc.free_zeroed(mfn)
    }
    fn take_zeroed(&mut self) -> Option<(Mfn, bool)> {
        self.alloc.take_zeroed()
    }
    fn reserved_frames(&self, f: &mut dyn FnMut(Mfn)) {
        self.alloc.reserved_frames(f)
    }
    fn can_free(&self, mfn: Mfn) -> bool {
        self.alloc.can_free(mfn)
    }
    #[inline]
    fn table_meta(&mut self, mfn: Mfn) -> Option<&mut TableMeta> {
        let i = usize::try_from(mfn.0.checked_sub(self.base.0)?).ok()?;
        self.slots.as_mut().get_mut(i)
    }
    fn alloc_contiguous(&mut self, frames: usize) -> Result<Mfn, OutOfFrames> {
        self.alloc.alloc_contiguous(frames)
    }
}
