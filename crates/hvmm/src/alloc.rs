//! Where table pages come from.
//!
//! The engine is all-or-nothing: it first works out how many new tables an
//! update needs and *reserves* them (the only allocation step that can fail),
//! then writes, taking reserved frames as it goes. A frame allocator therefore
//! offers a reservation, not just "give me a page".

use crate::addr::Mfn;

/// The allocator could not reserve the frames an update needs.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct OutOfFrames {
    /// Frames asked for.
    pub needed: usize,
    /// Frames that were available.
    pub available: usize,
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
    /// the hypervisor image (the boot tables, the fixmap's L3) may not.
    fn can_free(&self, mfn: Mfn) -> bool {
        let _ = mfn;
        true
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
    fn reserved_frames(&self, f: &mut dyn FnMut(Mfn)) {
        (**self).reserved_frames(f)
    }
    fn alloc_contiguous(&mut self, frames: usize) -> Result<Mfn, OutOfFrames> {
        (**self).alloc_contiguous(frames)
    }
}
