//! The break-before-make checker: every descriptor written with
//! `Arch::write_pte` is compared with the one it replaces.

use crate::mem::IntMap;
use crate::walk::{ATTR_SHIFT, CONTIGUOUS, OA_MASK, VALID};
use hvmm::{Paddr, Vaddr};

/// Why a descriptor write breaks the break-before-make rule.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum BbmReason {
    /// The output (or next-level table) address changed.
    OutputAddress,
    /// The descriptor type changed: bits `[1:0]` differ (table ↔ block at
    /// levels 1-2; the checker does not know the level, so a level-3 page
    /// and a table look alike).
    Type,
    /// The contiguous hint changed.
    Contiguous,
    /// The memory attributes changed: descriptor bits `[5:2]`, i.e. AttrIndx
    /// and NS of a stage-1 descriptor, or MemAttr of a stage-2 descriptor
    /// (the checker knows descriptors by PA only, not their stage).
    AttrIndx,
    /// The descriptor was written at an address that is not 8-byte aligned,
    /// so the store is not single-copy atomic.
    Misaligned,
}

/// How the rule was broken.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum BbmKind {
    /// A valid descriptor was overwritten directly by a valid one.
    Direct,
    /// The descriptor was made invalid, then valid again, with no TLB
    /// invalidation of any kind completed in between: `old` is the value it
    /// had before the break.
    RemadeWithoutInvalidation,
}

/// A recorded break-before-make violation.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct BbmViolation {
    /// Physical address of the descriptor.
    pub pa: Paddr,
    /// The VA the descriptor was written through.
    pub va: Vaddr,
    /// The CPU that wrote it.
    pub cpu: usize,
    /// The valid descriptor that was replaced.
    pub old: u64,
    /// The new descriptor.
    pub new: u64,
    /// What changed.
    pub reason: BbmReason,
    /// Direct overwrite, or break-and-remake without an invalidation.
    pub kind: BbmKind,
}

/// The first change between two valid descriptors that needs
/// break-before-make; `None` when only permissions or ignored bits differ.
pub(crate) fn needs_bbm(old: u64, new: u64) -> Option<BbmReason> {
    if old & 3 != new & 3 {
        Some(BbmReason::Type)
    } else if old & OA_MASK != new & OA_MASK {
        Some(BbmReason::OutputAddress)
    } else if old & CONTIGUOUS != new & CONTIGUOUS {
        Some(BbmReason::Contiguous)
    } else if (old >> ATTR_SHIFT) & 0xf != (new >> ATTR_SHIFT) & 0xf {
        Some(BbmReason::AttrIndx)
    } else {
        None
    }
}

/// Checker state.
#[derive(Clone, Debug, Default)]
pub(crate) struct Bbm {
    /// Descriptors made invalid: their PA → (valid value before, TLBI epoch then).
    broken: IntMap<u64, (u64, u64)>,
    /// Violations found so far.
    pub(crate) violations: Vec<BbmViolation>,
}

impl Bbm {
    /// Checks the write of `new` over `old` at `pa`; `epoch` counts the TLB
    /// invalidations completed so far.
    pub(crate) fn on_write(
        &mut self,
        pa: u64,
        va: u64,
        cpu: usize,
        old: u64,
        new: u64,
        epoch: u64,
    ) {
        let mut record = |old, reason, kind| {
            self.violations.push(BbmViolation {
                pa: Paddr(pa),
                va: Vaddr(va),
                cpu,
                old,
                new,
                reason,
                kind,
            })
        };
        if pa & 7 != 0 {
            record(old, BbmReason::Misaligned, BbmKind::Direct);
        }
        match (old & VALID != 0, new & VALID != 0) {
            (true, true) => {
                if let Some(r) = needs_bbm(old, new) {
                    record(old, r, BbmKind::Direct);
                }
            }
            (true, false) => {
                self.broken.insert(pa, (old, epoch));
            }
            (false, true) => {
                if let Some((before, then)) = self.broken.remove(&pa) {
                    if then == epoch {
                        if let Some(r) = needs_bbm(before, new) {
                            record(before, r, BbmKind::RemadeWithoutInvalidation);
                        }
                    }
                }
            }
            (false, false) => {}
        }
    }
}
