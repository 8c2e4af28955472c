//! Physical ranges and fixed-capacity lists of them.

use core::fmt;
use hvmm::{Paddr, PAGE_SIZE};

/// A non-empty range of physical addresses `[base, base + size)` whose end
/// fits in 64 bits.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemRange {
    base: Paddr,
    size: u64,
}

impl MemRange {
    /// The range `[base, base + size)`, or `None` when `size` is zero or the
    /// end does not fit in 64 bits.
    pub const fn new(base: Paddr, size: u64) -> Option<MemRange> {
        if size == 0 {
            return None;
        }
        match base.0.checked_add(size) {
            Some(_) => Some(MemRange { base, size }),
            None => None,
        }
    }

    /// The range `[start, end)`, or `None` when it is empty.
    pub const fn from_bounds(start: Paddr, end: Paddr) -> Option<MemRange> {
        if end.0 <= start.0 {
            return None;
        }
        Some(MemRange {
            base: start,
            size: end.0 - start.0,
        })
    }

    /// First address.
    pub const fn base(&self) -> Paddr {
        self.base
    }

    /// Size in bytes (never zero).
    pub const fn size(&self) -> u64 {
        self.size
    }

    /// First address after the range.
    pub const fn end(&self) -> Paddr {
        Paddr(self.base.0 + self.size)
    }

    /// Whether the two ranges share at least one byte.
    pub const fn overlaps(&self, other: &MemRange) -> bool {
        self.base.0 < other.end().0 && other.base.0 < self.end().0
    }

    /// Whether `other` lies wholly inside `self`.
    pub const fn contains_range(&self, other: &MemRange) -> bool {
        self.base.0 <= other.base.0 && other.end().0 <= self.end().0
    }

    /// Whether `pa` is inside the range.
    pub const fn contains(&self, pa: Paddr) -> bool {
        self.base.0 <= pa.0 && pa.0 < self.end().0
    }

    /// The whole pages inside the range (start rounded up, end rounded down),
    /// or `None` if it holds no whole page.
    pub const fn pages_inside(&self) -> Option<MemRange> {
        let start = match self.base.0.checked_add(PAGE_SIZE - 1) {
            Some(s) => s & !(PAGE_SIZE - 1),
            None => return None,
        };
        let end = self.end().0 & !(PAGE_SIZE - 1);
        MemRange::from_bounds(Paddr(start), Paddr(end))
    }
}

impl fmt::Debug for MemRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, {:#x})", self.base.0, self.end().0)
    }
}

impl fmt::Display for MemRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A fixed-capacity list (no allocation): `N` slots, `len` of them used.
#[derive(Clone, Copy)]
pub struct FixedVec<T: Copy, const N: usize> {
    items: [Option<T>; N],
    len: usize,
}

impl<T: Copy, const N: usize> FixedVec<T, N> {
    /// An empty list.
    pub const fn new() -> Self {
        FixedVec {
            items: [None; N],
            len: 0,
        }
    }

    /// Appends `item`; gives it back when the list is full.
    pub fn push(&mut self, item: T) -> Result<(), T> {
        match self.items.get_mut(self.len) {
            Some(slot) => {
                *slot = Some(item);
                self.len += 1;
                Ok(())
            }
            None => Err(item),
        }
    }

    /// Number of items.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether the list is empty.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The capacity `N`.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// The item at `i`.
    pub fn get(&self, i: usize) -> Option<&T> {
        if i < self.len {
            self.items.get(i).and_then(Option::as_ref)
        } else {
            None
        }
    }

    /// Mutable access to the item at `i`.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        if i < self.len {
            self.items.get_mut(i).and_then(Option::as_mut)
        } else {
            None
        }
    }

    /// The items, in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + '_ {
        self.items.iter().take(self.len).filter_map(Option::as_ref)
    }

    /// Inserts `item` at `i`, shifting later items; gives it back when full.
    pub fn insert(&mut self, i: usize, item: T) -> Result<(), T> {
        if self.len >= N || i > self.len {
            return Err(item);
        }
        let mut j = self.len;
        while j > i {
            self.items.swap(j, j - 1);
            j -= 1;
        }
        self.items[i] = Some(item);
        self.len += 1;
        Ok(())
    }

    /// Removes and returns the item at `i`, shifting later items.
    pub fn remove(&mut self, i: usize) -> Option<T> {
        if i >= self.len {
            return None;
        }
        let v = self.items[i].take();
        for j in i..self.len - 1 {
            self.items.swap(j, j + 1);
        }
        self.len -= 1;
        v
    }
}

impl<T: Copy, const N: usize> Default for FixedVec<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy + fmt::Debug, const N: usize> fmt::Debug for FixedVec<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: Copy + PartialEq, const N: usize> PartialEq for FixedVec<T, N> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}
