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
//!   early boot ([`phase::EarlyAccess`]), the arm32 per-CPU domain-page
//!   slots ([`phase::DomainPageAccess`]) and the arm64 secret-free mode's
//!   per-CPU mapcache slots ([`phase::MapCacheAccess`]). The layout-free providers (the
//!   direct map, the image range) are the core's, in [`hvmm::phase`].
//!
//! A hypervisor with another layout uses the core alone and writes its own
//! equivalent of this crate.
//!
//! # The path: Xen's pieces around the core
//!
//! Boot memory comes from the boot allocator, seeded with the free RAM
//! ranges (`hvmm-bootinfo`'s `BootInfo::free_ranges`); it is the
//! [`hvmm::FrameAlloc`] of the hypervisor's table, which maps the image at
//! [`layout::XEN_VIRT_START`] and, on arm64, RAM in the direct map:
//!
//! ```
//! use hvmm::host::{HostArch, HostIdentity};
//! use hvmm::{Arm64, Attrs, MapFlags, Mfn, Paddr, Table, Vaddr};
//! use hvmm_xen::boot_alloc::FrameRanges;
//! use hvmm_xen::layout::{HasLayout, XEN_VIRT_START};
//!
//! let mut cpu = HostArch::new(Mfn(0x4_0000), 256); // host memory plays RAM
//! let mut boot_alloc = FrameRanges::new();
//! boot_alloc.add(Paddr(0x4000_0000), Paddr(0x4010_0000)).unwrap(); // init_boot_pages
//!
//! let mut xen = Table::new(Arm64, &mut cpu, HostIdentity::default(), &mut boot_alloc)?;
//! xen.map(XEN_VIRT_START, Paddr(0x4020_0000), 16, Attrs::RX)?;
//! // The direct map of a 1 GiB bank at 0x4000_0000, in 1 GiB blocks.
//! let dm = Arm64::LAYOUT.directmap.expect("arm64 has a direct map");
//! xen.set_map_flags(MapFlags::BLOCKS);
//! xen.map(Vaddr(dm.start.0 + 0x4000_0000), Paddr(0x4000_0000), 1 << 18, Attrs::RW)?;
//! assert_eq!(xen.translate(Vaddr(dm.start.0 + 0x4000_1234))?.unwrap().level, 1);
//! assert!(boot_alloc.free_pages() < 256);
//! # Ok::<(), hvmm::Error>(())
//! ```
//!
//! Table pages are reached the way the phase allows: in early boot
//! [`phase::EarlyAccess`] (the image's own tables at their link address,
//! anything else through a PMAP slot, [`phase::Pmap`]); once memory is set
//! up, per-CPU slots: [`phase::MapCacheAccess`] on arm64 (4 KiB slots,
//! given back at once) or [`phase::DomainPageAccess`] on arm32 (2 MiB
//! domain-page slots, their own tables reached through a per-CPU window).
//! Neither needs a direct map, and once the boot seals the image's tables
//! no table page is writable through a permanent mapping. (The core's
//! [`hvmm::phase::DirectMapAccess`] is the plain alternative where a direct
//! map may reach the tables.) `hvmm-boot`'s `Mm` switches between them
//! with the system state, through the core's low-level API
//! ([`hvmm::PageTable::update`]).
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod boot_alloc;
pub mod layout;
pub mod phase;
