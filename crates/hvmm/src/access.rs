//! How the engine reaches a table page: the table-access provider.
//!
//! To read or write a translation table the page must itself be mapped. Which
//! mapping exists depends on the boot phase (image-resident tables, PMAP slots,
//! the arm64 direct map, arm32 domain-page slots). The engine never assumes
//! one: it asks a [`TableAccess`] for a virtual address of the frame, uses it,
//! and gives it back. A provider that cannot serve a frame says so with an
//! [`AccessError`]; the engine then fails the whole update without having
//! written anything.

use crate::addr::{Mfn, Vaddr};
use crate::arch::{Arch, MemFault};
use core::fmt;

/// Why a provider could not map a table page.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AccessError {
    /// Every slot of the provider is in use.
    SlotsExhausted {
        /// The provider's name.
        provider: &'static str,
        /// How many slots it has.
        slots: usize,
    },
    /// The provider cannot reach this frame (outside the image, outside RAM,
    /// beyond the direct map).
    Unreachable {
        /// The provider's name.
        provider: &'static str,
        /// The frame asked for.
        mfn: Mfn,
    },
    /// The provider is not usable in the current system state.
    WrongPhase {
        /// The provider's name.
        provider: &'static str,
        /// The state the system is in.
        state: &'static str,
    },
    /// Writing the provider's own mapping faulted.
    Fault(MemFault),
}

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccessError::SlotsExhausted { provider, slots } => {
                write!(f, "{provider}: all {slots} slots are in use")
            }
            AccessError::Unreachable { provider, mfn } => {
                write!(f, "{provider}: cannot reach table frame {mfn}")
            }
            AccessError::WrongPhase { provider, state } => {
                write!(f, "{provider}: not usable in state {state}")
            }
            AccessError::Fault(fault) => write!(f, "mapping a table page faulted: {fault}"),
        }
    }
}

/// A provider of temporary mappings of table pages.
pub trait TableAccess<A: Arch> {
    /// Name shown in logs and counters ("image", "pmap", "directmap", "domain-page").
    fn name(&self) -> &'static str;
    /// Makes the frame `mfn` readable and writable and returns its address.
    fn map_table(&mut self, arch: &mut A, mfn: Mfn) -> Result<Vaddr, AccessError>;
    /// Gives back a mapping obtained from [`TableAccess::map_table`].
    fn unmap_table(&mut self, arch: &mut A, mfn: Mfn, va: Vaddr);
    /// Guarantees that up to `nested` mappings can be held at once until
    /// [`TableAccess::unreserve`]: after this succeeds, `map_table` must not
    /// fail for a reachable frame. The engine calls it between its prepare and
    /// commit passes, so a provider with few slots (PMAP, domain page) fails
    /// the update before anything is written. Providers without a slot limit
    /// keep the default.
    fn reserve(&mut self, arch: &mut A, nested: usize) -> Result<(), AccessError> {
        let _ = (arch, nested);
        Ok(())
    }
    /// Ends a reservation made by [`TableAccess::reserve`].
    fn unreserve(&mut self, arch: &mut A) {
        let _ = arch;
    }
    /// Whether [`TableAccess::map_table`] can reach `mfn` at all (a frame
    /// outside the direct map cannot be reached through it). The engine asks
    /// this of every frame it is about to take, before writing anything.
    fn can_reach(&self, mfn: Mfn) -> bool {
        let _ = mfn;
        true
    }
}

impl<A: Arch, T: TableAccess<A> + ?Sized> TableAccess<A> for &mut T {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn map_table(&mut self, arch: &mut A, mfn: Mfn) -> Result<Vaddr, AccessError> {
        (**self).map_table(arch, mfn)
    }
    fn unmap_table(&mut self, arch: &mut A, mfn: Mfn, va: Vaddr) {
        (**self).unmap_table(arch, mfn, va)
    }
    fn reserve(&mut self, arch: &mut A, nested: usize) -> Result<(), AccessError> {
        (**self).reserve(arch, nested)
    }
    fn unreserve(&mut self, arch: &mut A) {
        (**self).unreserve(arch)
    }
    fn can_reach(&self, mfn: Mfn) -> bool {
        (**self).can_reach(mfn)
    }
}
