//! A pool of prefaulted, 4 KiB-aligned host frames for the peers' table
//! allocators.
//!
//! Every library gets its table pages from memory that is already resident
//! (hvmm's `HostMemory` is prefaulted the same way), so no row measures the
//! host kernel's page faults. A frame's "physical address" is its host
//! address: `physical_to_virtual` / `phys_to_virt` is the identity, the
//! cheapest possible direct map.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;

/// Bytes per frame.
pub const FRAME: usize = 4096;

/// A fixed pool of frames with a LIFO free list.
pub struct FramePool {
    base: NonNull<u8>,
    count: usize,
    free: Vec<u32>,
    /// Frames handed out so far.
    pub allocated: u64,
    /// Frames given back so far.
    pub freed: u64,
}

impl FramePool {
    /// A pool of `count` frames, every one written once so that it is resident.
    pub fn new(count: usize) -> Self {
        let count = count.max(1);
        let layout = Self::layout(count);
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let base = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        for i in 0..count {
            // SAFETY: `i * FRAME` is inside the allocation; a volatile write
            // makes the kernel back the page now rather than during a row.
            unsafe { std::ptr::write_volatile(base.as_ptr().add(i * FRAME), 0) };
        }
        FramePool {
            base,
            count,
            free: (0..count as u32).rev().collect(),
            allocated: 0,
            freed: 0,
        }
    }

    fn layout(count: usize) -> Layout {
        Layout::from_size_align(count * FRAME, FRAME).expect("pool layout")
    }

    /// Host address of one frame, not zeroed (the caller zeroes it).
    #[inline]
    pub fn alloc(&mut self) -> Option<usize> {
        let i = self.free.pop()? as usize;
        self.allocated += 1;
        Some(self.base.as_ptr() as usize + i * FRAME)
    }

    /// Host address of one zeroed frame.
    #[inline]
    pub fn alloc_zeroed(&mut self) -> Option<usize> {
        let a = self.alloc()?;
        // SAFETY: `a` is a whole frame of this pool, handed out just now.
        unsafe { std::ptr::write_bytes(a as *mut u8, 0, FRAME) };
        Some(a)
    }

    /// Returns the frame at host address `addr`.
    #[inline]
    pub fn free(&mut self, addr: usize) {
        let off = addr - self.base.as_ptr() as usize;
        assert!(
            off.is_multiple_of(FRAME) && off / FRAME < self.count,
            "not a frame of this pool"
        );
        self.freed += 1;
        self.free.push((off / FRAME) as u32);
    }

    /// Frames currently handed out.
    pub fn in_use(&self) -> usize {
        self.count - self.free.len()
    }
}

impl Drop for FramePool {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with the same layout.
        unsafe { dealloc(self.base.as_ptr(), Self::layout(self.count)) };
    }
}
