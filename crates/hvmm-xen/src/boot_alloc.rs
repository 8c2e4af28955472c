//! The boot allocator (`init_boot_pages` / `alloc_boot_pages`) and the page
//! allocator it hands over to at the end of boot.
//!
//! Free memory is a sorted list of disjoint frame ranges with a fixed
//! capacity (no heap in early boot). Allocation takes from the top of the
//! highest range that fits, as Xen does, so low memory stays free longest.

use core::fmt;
use hvmm::addr::{Mfn, Paddr, PAGE_SIZE};
use hvmm::frames::{FrameAlloc, OutOfFrames};

/// Most free ranges the allocator can track.
pub const MAX_RANGES: usize = 128;

/// A boot-allocator failure.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BootAllocError {
    /// No free range can satisfy the request.
    Exhausted {
        /// Pages asked for.
        pages: u64,
        /// Alignment asked for, in pages.
        align: u64,
        /// Free pages left in all.
        free: u64,
    },
    /// The alignment is not a power of two, or the page count is zero.
    BadRequest {
        /// Pages asked for.
        pages: u64,
        /// Alignment asked for, in pages.
        align: u64,
    },
    /// A range given to `init_boot_pages` overlaps memory already free.
    Overlap {
        /// Start of the range given.
        start: Paddr,
        /// End of the range given.
        end: Paddr,
    },
    /// More disjoint ranges than [`MAX_RANGES`].
    TooManyRanges,
}

impl fmt::Display for BootAllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BootAllocError::Exhausted { pages, align, free } => write!(
                f,
                "boot allocator exhausted: {pages} pages aligned to {align} pages requested, {free} pages free"
            ),
            BootAllocError::BadRequest { pages, align } => {
                write!(f, "bad allocation request: {pages} pages aligned to {align} pages")
            }
            BootAllocError::Overlap { start, end } => {
                write!(f, "range {start}..{end} overlaps memory already given to the allocator")
            }
            BootAllocError::TooManyRanges => {
                write!(f, "more than {MAX_RANGES} disjoint free ranges")
            }
        }
    }
}

impl core::error::Error for BootAllocError {}

/// Sorted, disjoint free frame ranges `[start, end)`.
#[derive(Clone, Debug)]
pub struct FrameRanges {
    ranges: [(u64, u64); MAX_RANGES],
    len: usize,
    reserved: u64,
    /// Frames that are never returned to the allocator (image tables).
    pinned: Option<(u64, u64)>,
    /// Allocation calls served (for logs and fault injection).
    allocations: u64,
    /// If set, the allocation with this index (0-based) fails (fault injection).
    fail_at: Option<u64>,
    /// If set, frames taken for page tables ([`FrameAlloc::take`]) come from
    /// below this frame only. (QEMU 7.2's arm32 table walker truncates table
    /// addresses to 32 bits; `hvmm.tables-below-4g` sets this on arm32.)
    pub table_limit: Option<Mfn>,
}

impl Default for FrameRanges {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameRanges {
    /// No free memory.
    pub const fn new() -> Self {
        FrameRanges {
            ranges: [(0, 0); MAX_RANGES],
            len: 0,
            reserved: 0,
            pinned: None,
            allocations: 0,
            fail_at: None,
            table_limit: None,
        }
    }

    /// Allocation requests served so far (allocations and reservations: each
    /// one a point where fault injection can fail).
    pub const fn allocations(&self) -> u64 {
        self.allocations
    }

    /// Fault injection (feature `test-hooks`): the request with this index
    /// (0-based, counted by [`FrameRanges::allocations`]) fails as if memory
    /// had run out; `None` turns it off.
    #[cfg(feature = "test-hooks")]
    pub fn set_fail_at(&mut self, index: Option<u64>) {
        self.fail_at = index;
    }

    /// Frames in `[start, end)` (physical addresses) will never be freed back:
    /// they hold the image (and its static tables).
    pub fn pin(&mut self, start: Paddr, end: Paddr) {
        self.pinned = Some((start.0 / PAGE_SIZE, end.0.div_ceil(PAGE_SIZE)));
    }

    /// The free ranges as physical address pairs.
    pub fn ranges(&self) -> impl Iterator<Item = (Paddr, Paddr)> + '_ {
        self.ranges[..self.len]
            .iter()
            .map(|&(s, e)| (Paddr(s * PAGE_SIZE), Paddr(e * PAGE_SIZE)))
    }

    /// Free pages in all.
    pub fn free_pages(&self) -> u64 {
        self.ranges[..self.len].iter().map(|&(s, e)| e - s).sum()
    }

    /// Free pages below frame `limit`.
    pub fn free_pages_below(&self, limit: Mfn) -> u64 {
        self.ranges[..self.len]
            .iter()
            .map(|&(s, e)| e.min(limit.0).saturating_sub(s))
            .sum()
    }

    /// Gives `[start, end)` to the allocator (Xen's `init_boot_pages`). The
    /// range is shrunk inward to page boundaries; an empty result is fine.
    pub fn add(&mut self, start: Paddr, end: Paddr) -> Result<(), BootAllocError> {
        let s = start.0.div_ceil(PAGE_SIZE);
        let e = end.0 / PAGE_SIZE;
        if s >= e {
            return Ok(());
        }
        self.insert(s, e).map_err(|err| match err {
            BootAllocError::Overlap { .. } => BootAllocError::Overlap { start, end },
            other => other,
        })
    }

    fn insert(&mut self, s: u64, e: u64) -> Result<(), BootAllocError> {
        let pos = self.ranges[..self.len].partition_point(|&(rs, _)| rs < s);
        if pos > 0 && self.ranges[pos - 1].1 > s || pos < self.len && self.ranges[pos].0 < e {
            return Err(BootAllocError::Overlap {
                start: Paddr(s * PAGE_SIZE),
                end: Paddr(e * PAGE_SIZE),
            });
        }
        let merge_left = pos > 0 && self.ranges[pos - 1].1 == s;
        let merge_right = pos < self.len && self.ranges[pos].0 == e;
        match (merge_left, merge_right) {
            (true, true) => {
                self.ranges[pos - 1].1 = self.ranges[pos].1;
                self.ranges.copy_within(pos + 1..self.len, pos);
                self.len -= 1;
            }
            (true, false) => self.ranges[pos - 1].1 = e,
            (false, true) => self.ranges[pos].0 = s,
            (false, false) => {
                if self.len == MAX_RANGES {
                    return Err(BootAllocError::TooManyRanges);
                }
                self.ranges.copy_within(pos..self.len, pos + 1);
                self.ranges[pos] = (s, e);
                self.len += 1;
            }
        }
        Ok(())
    }

    /// Allocates `pages` contiguous pages aligned to `align` pages (Xen's
    /// `alloc_boot_pages`), from the top of the highest range that fits.
    pub fn alloc(&mut self, pages: u64, align: u64) -> Result<Mfn, BootAllocError> {
        self.alloc_below(pages, align, Mfn(0), Mfn(u64::MAX))
    }

    /// Like [`FrameRanges::alloc`], but only frames in `[lo, hi)` are used
    /// (Xen's xenheap allocations on arm32).
    pub fn alloc_below(
        &mut self,
        pages: u64,
        align: u64,
        lo: Mfn,
        hi: Mfn,
    ) -> Result<Mfn, BootAllocError> {
        if pages == 0 || align == 0 || !align.is_power_of_two() {
            return Err(BootAllocError::BadRequest { pages, align });
        }
        let index = self.allocations;
        self.allocations += 1;
        let exhausted = BootAllocError::Exhausted {
            pages,
            align,
            free: self.free_pages(),
        };
        if self.fail_at == Some(index) {
            return Err(exhausted);
        }
        for i in (0..self.len).rev() {
            let (s, e) = self.ranges[i];
            let Some(top) = e.min(hi.0).checked_sub(pages) else {
                continue;
            };
            let start = top & !(align - 1);
            if start < s || start < lo.0 {
                continue;
            }
            let end = start + pages;
            // Split [s, e) into [s, start) and [end, e).
            if end < e && start > s {
                if self.len == MAX_RANGES {
                    continue;
                }
                self.ranges.copy_within(i + 1..self.len, i + 2);
                self.ranges[i] = (s, start);
                self.ranges[i + 1] = (end, e);
                self.len += 1;
            } else if start > s {
                self.ranges[i].1 = start;
            } else if end < e {
                self.ranges[i].0 = end;
            } else {
                self.ranges.copy_within(i + 1..self.len, i);
                self.len -= 1;
            }
            return Ok(Mfn(start));
        }
        Err(exhausted)
    }

    /// Returns pages to the allocator. Pinned (image) frames are ignored.
    pub fn free_pages_at(&mut self, mfn: Mfn, pages: u64) -> Result<(), BootAllocError> {
        if let Some((ps, pe)) = self.pinned {
            if mfn.0 < pe && mfn.0 + pages > ps {
                return Ok(());
            }
        }
        self.insert(mfn.0, mfn.0 + pages)
    }
}

impl FrameAlloc for FrameRanges {
    fn reserve(&mut self, n: usize) -> Result<(), OutOfFrames> {
        let free = match self.table_limit {
            None => self.free_pages(),
            Some(limit) => self.free_pages_below(limit),
        };
        // Fault injection counts a reservation as one allocation point.
        let index = self.allocations;
        self.allocations += 1;
        if (n as u64) > free || self.fail_at == Some(index) {
            return Err(OutOfFrames {
                needed: n,
                available: free as usize,
            });
        }
        self.reserved = n as u64;
        Ok(())
    }
    fn take(&mut self) -> Option<Mfn> {
        if self.reserved == 0 {
            return None;
        }
        self.reserved -= 1;
        let saved = self.fail_at.take();
        let hi = self.table_limit.unwrap_or(Mfn(u64::MAX));
        let r = self.alloc_below(1, 1, Mfn(0), hi).ok();
        self.allocations -= 1;
        self.fail_at = saved;
        r
    }
    fn unreserve(&mut self) {
        self.reserved = 0;
    }
    fn free(&mut self, mfn: Mfn) {
        // Only TooManyRanges can fail here; the frame is then lost to reuse
        // but never reused wrongly.
        let _ = self.free_pages_at(mfn, 1);
    }
    fn reserved_frames(&self, f: &mut dyn FnMut(Mfn)) {
        // `take` allocates single frames from the top of the highest range
        // below the table limit: walk the same order.
        let hi = self.table_limit.map_or(u64::MAX, |m| m.0);
        let mut left = self.reserved;
        for &(s, e) in self.ranges[..self.len].iter().rev() {
            let mut frame = e.min(hi);
            while left > 0 && frame > s {
                frame -= 1;
                f(Mfn(frame));
                left -= 1;
            }
        }
    }
    fn can_free(&self, mfn: Mfn) -> bool {
        !self.pinned.is_some_and(|(s, e)| mfn.0 >= s && mfn.0 < e)
    }
    fn alloc_contiguous(&mut self, frames: usize) -> Result<Mfn, OutOfFrames> {
        let available = self.free_pages() as usize;
        let fail = OutOfFrames {
            needed: frames,
            available,
        };
        if frames == 0 || !frames.is_power_of_two() {
            return Err(fail);
        }
        let hi = self.table_limit.unwrap_or(Mfn(u64::MAX));
        self.alloc_below(frames as u64, frames as u64, Mfn(0), hi)
            .map_err(|_| fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    fn ranges(fr: &FrameRanges) -> std::vec::Vec<(u64, u64)> {
        fr.ranges().map(|(s, e)| (s.0, e.0)).collect()
    }

    #[test]
    fn allocates_from_the_top_with_alignment() {
        let mut fr = FrameRanges::new();
        fr.add(Paddr(0x4000_0000), Paddr(0x4010_0000)).unwrap();
        assert_eq!(fr.alloc(1, 1).unwrap(), Mfn(0x400ff));
        assert_eq!(fr.alloc(2, 16).unwrap(), Mfn(0x400f0));
        assert_eq!(
            ranges(&fr),
            vec![(0x4000_0000, 0x400f_0000), (0x400f_2000, 0x400f_f000)]
        );
    }

    #[test]
    fn add_shrinks_inward_and_refuses_overlap() {
        let mut fr = FrameRanges::new();
        fr.add(Paddr(0x1001), Paddr(0x5fff)).unwrap();
        assert_eq!(ranges(&fr), vec![(0x2000, 0x5000)]);
        assert_eq!(
            fr.add(Paddr(0x4000), Paddr(0x8000)),
            Err(BootAllocError::Overlap {
                start: Paddr(0x4000),
                end: Paddr(0x8000)
            })
        );
        fr.add(Paddr(0x5000), Paddr(0x6000)).unwrap();
        assert_eq!(ranges(&fr), vec![(0x2000, 0x6000)], "adjacent ranges merge");
    }

    #[test]
    fn alloc_below_stays_in_its_window() {
        let mut fr = FrameRanges::new();
        fr.add(Paddr(0x0), Paddr(0x1_0000)).unwrap();
        fr.add(Paddr(0x10_0000), Paddr(0x20_0000)).unwrap();
        assert_eq!(fr.alloc_below(2, 2, Mfn(0), Mfn(0x10)).unwrap(), Mfn(0xe));
        assert_eq!(
            fr.alloc_below(1, 1, Mfn(0x100), Mfn(0x180)).unwrap(),
            Mfn(0x17f)
        );
        assert!(fr.alloc_below(1, 1, Mfn(0x20), Mfn(0x30)).is_err());
    }

    #[test]
    fn exhaustion_is_an_error_that_changes_nothing() {
        let mut fr = FrameRanges::new();
        fr.add(Paddr(0), Paddr(0x4000)).unwrap();
        let before = ranges(&fr);
        assert_eq!(
            fr.alloc(5, 1),
            Err(BootAllocError::Exhausted {
                pages: 5,
                align: 1,
                free: 4
            })
        );
        assert_eq!(
            fr.alloc(1, 3),
            Err(BootAllocError::BadRequest { pages: 1, align: 3 })
        );
        assert_eq!(ranges(&fr), before);
    }

    #[test]
    fn freed_pages_merge_back_and_pinned_ones_do_not() {
        let mut fr = FrameRanges::new();
        fr.add(Paddr(0), Paddr(0x10000)).unwrap();
        let m = fr.alloc(1, 1).unwrap();
        fr.free(m);
        assert_eq!(ranges(&fr), vec![(0, 0x10000)]);
        fr.pin(Paddr(0x20000), Paddr(0x30000));
        assert!(!fr.can_free(Mfn(0x21)));
        fr.free(Mfn(0x21));
        assert_eq!(ranges(&fr), vec![(0, 0x10000)]);
    }

    #[test]
    #[cfg(feature = "test-hooks")]
    fn injected_failure_hits_exactly_one_allocation() {
        let mut fr = FrameRanges::new();
        fr.add(Paddr(0), Paddr(0x10000)).unwrap();
        fr.set_fail_at(Some(1));
        assert!(fr.alloc(1, 1).is_ok());
        assert!(fr.alloc(1, 1).is_err());
        assert!(fr.alloc(1, 1).is_ok());
    }
}
