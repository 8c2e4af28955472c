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

/// Why a provider could not map a table page. The frame is not named here:
/// whoever asked for it knows it ([`crate::Error::TableAccess`] carries it).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccessError {
    /// Every slot of the provider is in use.
    SlotsExhausted {
        /// The provider's name.
        provider: &'static str,
        /// How many slots it has.
        slots: usize,
    },
    /// The frame is out of the provider's reach (outside the image, outside
    /// RAM, beyond the direct map).
    Unreachable {
        /// The provider's name.
        provider: &'static str,
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
                write!(f, "all {slots} {provider} slots are in use")
            }
            AccessError::Unreachable { provider } => {
                write!(f, "out of the reach of {provider}")
            }
            AccessError::WrongPhase { provider, state } => {
                write!(f, "{provider} is not usable in state {state}")
            }
            AccessError::Fault(fault) => write!(f, "writing its mapping faulted: {fault}"),
        }
    }
}

impl core::error::Error for AccessError {}

/// What a table-access provider is, whatever processor it runs on: its name
/// and the frames it can reach.
///
/// These two live apart from [`TableAccess`] because they do not depend on
/// the processor type: inside `impl<A: Arch> TableAccess<A> for MyAccess`,
/// `self.can_reach(mfn)` then names one method, not one per `A`.
pub trait AccessPath {
    /// Name shown in errors, logs and counters ("image+pmap", "directmap",
    /// "domain-page").
    fn name(&self) -> &'static str;
    /// Whether [`TableAccess::map_table`] can reach `mfn` at all (a frame
    /// outside the direct map cannot be reached through it). The engine asks
    /// this of every frame it is about to take, before writing anything. The
    /// default reaches every frame.
    fn can_reach(&self, mfn: Mfn) -> bool {
        let _ = mfn;
        true
    }
}

/// A provider of temporary mappings of table pages, for the processor
/// back end `A`.
///
/// Most providers work on any processor: `impl<A: Arch> TableAccess<A> for
/// MyAccess`. One that must write its own mappings with processor operations
/// beyond [`Arch`] (a per-CPU slot that needs a local TLB invalidation, such
/// as Xen's PMAP) bounds `A` by what it needs, for instance
/// [`crate::CpuOps`].
///
/// A linear map of RAM (every frame at a fixed offset, always mapped) is the
/// simplest provider:
///
/// ```
/// use hvmm::{AccessError, AccessPath, Arch, Mfn, TableAccess, Vaddr};
///
/// /// RAM `[0x4000_0000, 0x8000_0000)` mapped at `0xffff_0000_0000_0000 + PA`.
/// struct LinearMap;
///
/// impl AccessPath for LinearMap {
///     fn name(&self) -> &'static str {
///         "linear-map"
///     }
///     fn can_reach(&self, mfn: Mfn) -> bool {
///         (0x4000_0000..0x8000_0000).contains(&mfn.paddr().0)
///     }
/// }
///
/// impl<A: Arch> TableAccess<A> for LinearMap {
///     fn map_table(&mut self, _arch: &mut A, mfn: Mfn) -> Result<Vaddr, AccessError> {
///         if !self.can_reach(mfn) {
///             return Err(AccessError::Unreachable { provider: self.name() });
///         }
///         Ok(Vaddr(0xffff_0000_0000_0000 + mfn.paddr().0))
///     }
///     fn unmap_table(&mut self, _arch: &mut A, _mfn: Mfn, _va: Vaddr) {}
/// }
/// ```
pub trait TableAccess<A: Arch>: AccessPath {
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
}

impl<T: AccessPath + ?Sized> AccessPath for &mut T {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn can_reach(&self, mfn: Mfn) -> bool {
        (**self).can_reach(mfn)
    }
}

impl<A: Arch, T: TableAccess<A> + ?Sized> TableAccess<A> for &mut T {
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
}
