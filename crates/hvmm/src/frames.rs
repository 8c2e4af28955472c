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
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TableMeta {
    /// The leaf that would be entry 0 of the table if it mapped one aligned
    /// block uniformly (contiguous hint clear); entry `i` would be this plus
    /// `i` entries' worth of output address. 0: not tracked.
    pub(crate) pattern: u64,
    /// Live entries (at most 512); around [`TableMeta::UNKNOWN_LIVE`] for
    /// an unknown slot, which the engine's updates may move by a few
    /// hundred either way without making it known (so that they need not
    /// test it first).
    pub(crate) live: u32,
    /// Entries equal to their `pattern` value (meaningful if `pattern` is
    /// not 0).
    pub(crate) matching: u16,
    /// Some entry links (or linked) a table the engine keeps no counts for
    /// (its frame has no slot): the tables below are asked about, not
    /// assumed the engine's.
    pub(crate) untracked: bool,
}

impl TableMeta {
    /// `live` of an unknown slot.
    pub(crate) const UNKNOWN_LIVE: u32 = 1 << 30;
    /// Every `live` below this is a count (a known slot).
    const KNOWN_BELOW: u32 = 1 << 16;

    /// The slot of a frame the engine has no bookkeeping for.
    pub const UNKNOWN: TableMeta = TableMeta {
        pattern: 0,
        live: Self::UNKNOWN_LIVE,
        matching: 0,
        untracked: false,
    };

    /// Whether the slot holds the engine's counts for a table it made.
    pub const fn is_known(&self) -> bool {
        self.live < Self::KNOWN_BELOW
    }

    /// The table's live entries (tables and leaves), if known.
    pub const fn live_entries(&self) -> Option<u16> {
        if self.is_known() {
            Some(self.live as u16)
        } else {
            None
        }
    }

    /// The aligned block mapping the table is tracked against (its entry 0,
    /// contiguous hint clear) and how many of its entries equal that
    /// mapping's, if known and tracked.
    pub const fn uniform_entries(&self) -> Option<(u64, u16)> {
        if self.is_known() && self.pattern != 0 {
            Some((self.pattern, self.matching))
        } else {
            None
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
