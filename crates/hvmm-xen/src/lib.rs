//! # hvmm-xen — Xen on Arm's layout and boot pieces, one instance of the hvmm core
//!
//! `no_std`. The [`hvmm`] core knows nothing of any hypervisor's virtual
//! layout; this crate is what makes it Xen-shaped, and what hvmm's boot
//! sequence (`hvmm-boot`) and bare-metal image use:
//!
//! - [`layout`]: the virtual layout of both architectures (the image's link
//!   address and size, the fixmap and its slots, the early FDT window, the
//!   frametable, vmap, xenheap/domheap on arm32, the direct map on arm64),
//!   and [`layout::HasLayout`], which ties a stage-1 format to its layout and
//!   to its guests' stage-2 format;
//! - [`boot_alloc`]: the boot allocator (`init_boot_pages` /
//!   `alloc_boot_pages`), a [`hvmm::FrameAlloc`] over sorted free ranges;
//! - [`phase`]: the table-access providers bound to this layout — PMAP in
//!   early boot ([`phase::EarlyAccess`]) and the arm32 per-CPU domain-page
//!   slots ([`phase::DomainPageAccess`]). The layout-free providers (the
//!   direct map, the image range) are the core's, in [`hvmm::phase`].
//!
//! A hypervisor with another layout uses the core alone and writes its own
//! equivalent of this crate.
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod boot_alloc;
pub mod layout;
pub mod phase;
