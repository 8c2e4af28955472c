//! # hvmm — page tables for an Arm hypervisor
//!
//! `no_std`. hvmm builds and changes the translation tables a hypervisor
//! keeps: its own stage 1 at EL2 (arm64, VMSAv8-64) or in HYP mode (arm32,
//! LPAE), and each guest's stage 2. What it will not write is the point:
//! writable-and-executable or executable device mappings, a silent
//! replacement of a live mapping, a change of memory type under a live
//! mapping, an address beyond the format's size. Every update is all or
//! nothing — refused or out of frames, it leaves every table byte as it was
//! — and it changes live mappings at any granularity: a block is split (or
//! merged back) with break-before-make and the TLB maintenance the regime
//! needs.
//!
//! The crate knows no hypervisor's virtual layout. `hvmm-xen` is Xen on
//! Arm's (its layout, boot allocator, PMAP and domain-page slots), one
//! instance of this core.
//!
//! # The whole path
//!
//! ## 1. Pick or write the three parts
//!
//! | trait | what the engine asks of it | what to use |
//! |---|---|---|
//! | [`Arch`] | descriptor reads and writes with their barriers, TLB maintenance, the root register | on hardware `hvmm_arch::Aarch64El2` / `hvmm_arch::Armv7Hyp` (crate `hvmm-arch`); on the host `hvmm::host::HostArch` (feature `host`); in tests `hvmm_model::Machine`, which faults like hardware |
//! | [`FrameAlloc`] | frames for new tables, *reserved* before anything is written | your page allocator: [`reserve`](FrameAlloc::reserve), [`take`](FrameAlloc::take), [`unreserve`](FrameAlloc::unreserve), [`free`](FrameAlloc::free); [`alloc_contiguous`](FrameAlloc::alloc_contiguous) for stage-2 roots of several pages |
//! | [`TableAccess`] (with [`AccessPath`]) | a virtual address for a table page, for as long as the engine needs it | an identity or linear map (as below, or [`phase::DirectMapAccess`]), or temporary slots (`hvmm-xen`'s PMAP and domain-page providers) |
//!
//! [`CpuOps`] is what per-CPU table access and a boot sequence need beside
//! [`Arch`] (local TLB invalidation, `AT`, the CPU's index); the engine
//! itself never calls it.
//!
//! A frame allocator and a table-access provider, and the two kinds of
//! table built with them (on the host: `HostArch` plays the machine's RAM):
//!
//! ```
//! # #[cfg(feature = "host")] {
//! use hvmm::host::HostArch;
//! use hvmm::{
//!     AccessError, AccessPath, Arch, Arm64, Arm64Stage2, Attrs, FrameAlloc, Ipa, Mfn,
//!     OutOfFrames, Paddr, S2Attrs, Table, TableAccess, Vaddr, Vmid,
//! };
//!
//! /// Frames for page tables. A reservation promises the next `n` takes.
//! struct Frames {
//!     free: Vec<Mfn>,
//!     reserved: usize,
//! }
//!
//! impl FrameAlloc for Frames {
//!     fn reserve(&mut self, n: usize) -> Result<(), OutOfFrames> {
//!         let available = self.free.len();
//!         if n > available {
//!             return Err(OutOfFrames { needed: n, available });
//!         }
//!         self.reserved = n;
//!         Ok(())
//!     }
//!     fn take(&mut self) -> Option<Mfn> {
//!         self.reserved = self.reserved.checked_sub(1)?;
//!         self.free.pop()
//!     }
//!     fn unreserve(&mut self) {
//!         self.reserved = 0;
//!     }
//!     fn free(&mut self, mfn: Mfn) {
//!         self.free.push(mfn);
//!     }
//! }
//!
//! /// RAM mapped linearly at `OFFSET + PA` (on the host the offset is 0).
//! struct LinearMap;
//! const OFFSET: u64 = 0;
//!
//! impl AccessPath for LinearMap {
//!     fn name(&self) -> &'static str {
//!         "linear-map"
//!     }
//!     fn can_reach(&self, mfn: Mfn) -> bool {
//!         (0x4000_0000..0x8000_0000).contains(&mfn.paddr().0)
//!     }
//! }
//!
//! impl<A: Arch> TableAccess<A> for LinearMap {
//!     fn map_table(&mut self, _cpu: &mut A, mfn: Mfn) -> Result<Vaddr, AccessError> {
//!         if !self.can_reach(mfn) {
//!             return Err(AccessError::Unreachable { provider: self.name() });
//!         }
//!         Ok(Vaddr(OFFSET + mfn.paddr().0))
//!     }
//!     fn unmap_table(&mut self, _cpu: &mut A, _mfn: Mfn, _va: Vaddr) {}
//! }
//!
//! let mut cpu = HostArch::new(Mfn(0x4_0000), 64);
//! let mut frames = Frames {
//!     free: (0..64).map(|i| Mfn(0x4_0000 + i)).collect(),
//!     reserved: 0,
//! };
//!
//! // The hypervisor's own table. Sizes are counted in 4 KiB pages.
//! let mut hyp = Table::new(Arm64, &mut cpu, LinearMap, &mut frames)?;
//! hyp.map(Vaddr(0x20_0000), Paddr(0x4020_0000), 16, Attrs::RX)?;
//! hyp.map(Vaddr(0x40_0000), Paddr(0x4040_0000), 512, Attrs::RW)?; // one 2 MiB block
//! hyp.map(Vaddr(0x900_0000), Paddr(0x900_0000), 1, Attrs::DEVICE)?;
//! hyp.protect(Vaddr(0x40_0000), 1, Attrs::RO)?; // splits the block
//! let leaf = hyp.translate(Vaddr(0x40_0008))?.unwrap();
//! assert_eq!((leaf.pa, leaf.level, leaf.attrs), (Paddr(0x4040_0008), 3, Some(Attrs::RO)));
//! let (hyp, ..) = hyp.into_parts(); // keep the table, lend the parts back
//!
//! // A guest's table: 36-bit IPA space, VMID 1.
//! let mut guest = Table::new_stage2(Arm64Stage2::<36>, Vmid(1), &mut cpu, LinearMap, &mut frames)?;
//! guest.map(Ipa(0x4000_0000), Paddr(0x4800_0000), 512, S2Attrs::RAM)?;
//! assert_eq!(guest.translate(Ipa(0x4000_1000))?.unwrap().pa, Paddr(0x4800_1000));
//! assert_eq!(guest.vttbr() >> 48, 1);
//! # let _ = hyp;
//! # }
//! # Ok::<(), hvmm::Error>(())
//! ```
//!
//! Refusals are values of [`Error`], each naming the problem and the
//! address once (`core::error::Error` + `Display`):
//!
//! ```
//! # #[cfg(feature = "host")] {
//! use hvmm::host::HostMemory;
//! use hvmm::{Arm64, Attrs, Error, Paddr, Table, Vaddr};
//!
//! let mut mem = HostMemory::new(16);
//! let (cpu, access, frames) = mem.parts();
//! let mut hyp = Table::new(Arm64, cpu, access, frames).unwrap();
//! hyp.map(Vaddr(0x20_0000), Paddr(0x4020_0000), 4, Attrs::RW).unwrap();
//! let e = hyp.map(Vaddr(0x20_2000), Paddr(0x5000_0000), 4, Attrs::RW).unwrap_err();
//! assert_eq!(e, Error::AlreadyMapped { va: Vaddr(0x20_2000), level: 3 });
//! assert_eq!(
//!     e.to_string(),
//!     "0x0000000000202000 is already mapped (valid level-3 entry); remove it first"
//! );
//! # }
//! ```
//!
//! ## 2. Build and change tables
//!
//! [`Table`] is one table with its parts: [`Table::new`] (stage 1, format
//! [`Arm64`] or [`Arm32`]) and [`Table::new_stage2`] ([`Arm64Stage2`] of 32
//! to 48 IPA bits, [`Arm32Stage2`]) allocate a root; [`Table::map`],
//! [`Table::protect`], [`Table::unmap`] and [`Table::populate`] change it;
//! [`Table::translate`], [`Table::walk`] and [`Table::dump`] read it and
//! need no allocator; [`Table::destroy`] frees it. Attributes are typed per
//! stage ([`Attrs`]: RO, RX, RW, device, write-combine — never RWX;
//! [`S2Attrs`]: stage-2 access, XN, memory type). [`MapFlags`] (per table,
//! [`Table::set_map_flags`]) say whether new mappings may use blocks, the
//! contiguous hint, or merge back into blocks. Each verb returns an
//! [`UpdateReport`] (leaves written, tables made and freed, TLB
//! invalidations, splits, merges).
//!
//! A table owns its parts. On hardware they are usually small handles (the
//! processor back end, a linear map, a handle to a locked global
//! allocator), so each table keeps its own for good; pass `&mut part` to
//! share one, and [`Table::into_parts`] / [`Table::from_parts`] to lend
//! them to another table or a new boot phase.
//!
//! ## 3. Switch to it on hardware
//!
//! The descriptors hvmm writes assume these register values (the functions
//! and constants are in `hvmm_arch::regs`, with instructions to write them
//! in `hvmm_arch::aarch64` / `hvmm_arch::arm32`):
//!
//! | register (arm64 / arm32) | value |
//! |---|---|
//! | `MAIR_EL2` / `HMAIR0`, `HMAIR1` | [`attr::MAIR_VALUE`] = [`MairMap::XEN`]`.value()` (or the value of the map given to [`Table::with_mair`]); `regs::HMAIR0` / `HMAIR1` |
//! | `TCR_EL2` / `HTCR` | `regs::tcr_el2(ID_AA64MMFR0_EL1.PARange)`: T0SZ 16 (48-bit VA), 4 KiB granule, write-back inner-shareable walks / `regs::HTCR`: T0SZ 0 |
//! | `TTBR0_EL2` / `HTTBR` | [`Table::ttbr`] |
//! | `SCTLR_EL2` / `HSCTLR` | `regs::SCTLR_EL2_BOOT` / `regs::HSCTLR_BOOT` (MMU, caches), then WXN (`regs::SCTLR_WXN`) once no code is writable |
//! | `VTCR_EL2` / `VTCR` | `regs::vtcr_el2(`[`Table::vtcr`]`, PARange)` (PS clamped to the CPU) / [`Table::vtcr`] |
//! | `VTTBR_EL2` / `VTTBR` | [`Table::vttbr`] (root and VMID) |
//! | `HCR_EL2` / `HCR` | `regs::HCR_VM` set to run the guest under its stage 2 |
//!
//! A hypervisor's head usually turns the MMU on with a small static table
//! and these MAIR, TCR and SCTLR values; Rust code then builds the real
//! table and switches to it (`hvmm_arch::aarch64::switch_root`, or
//! `switch_root_identity` from identity-mapped code), then sets WXN. The
//! repository's `examples/el2-hello` does exactly that on QEMU, and
//! `hvmm-boot` does it for a whole Xen-shaped boot.
//!
//! ## 4. When a live change is safe
//!
//! A split or a merge breaks an entry for a moment (break-before-make). For
//! a guest's stage 2 that is always safe: a guest access in the window
//! faults to the hypervisor, which retries it. For the hypervisor's own
//! stage 1 only if nothing uses the block during the window; the engine
//! refuses a break that would unmap the table page it writes through
//! ([`Error::BreakUnmapsTable`]). See [`engine`].
//!
//! # The low-level API
//!
//! [`PageTable`] is the table alone (root, format, MAIR map or VMID), and
//! [`PageTable::update`] performs one [`Op`] with the parts given per call
//! in an [`Env`]. It is what [`Table`] is built on, and what a boot sequence
//! whose table access changes with its phase uses (`hvmm-boot`'s `Mm`).
//!
//! # Features
//!
//! - `host`: the host back end (module `host`: tables in host memory; needs
//!   `alloc`), for examples, tests and benchmarks.
//! - `test-hooks`: counters and knobs for tests (the host back end's TLB
//!   and table-map counts, pinned frames).
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
// The only `unsafe` items are the two `PageTable` constructors that adopt an
// existing root (their contract: no second handle); there is no unsafe block.
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod access;
pub mod addr;
pub mod arch;
pub mod attr;
pub mod engine;
pub mod error;
pub mod format;
pub mod frames;
#[cfg(any(test, feature = "host"))]
#[cfg_attr(docsrs, doc(cfg(feature = "host")))]
pub mod host;
pub mod phase;
pub mod table;

pub use access::{AccessError, AccessPath, TableAccess};
pub use addr::{InputAddr, Ipa, LinearRange, Mfn, Paddr, Vaddr, Vaddr32, Vmid, PAGE_SIZE};
pub use arch::{AccessKind, Arch, AtResult, CpuOps, FaultKind, MemFault};
pub use attr::{Attrs, LeafAttrs, MairMap, MapFlags, MemType, Perm, S2Access, S2Attrs, S2MemType};
pub use engine::{Env, Leaf, Op, PageTable, UpdateReport};
pub use error::Error;
pub use format::{
    Arm32, Arm32Stage2, Arm64, Arm64Stage2, Format, Pte, Stage, Stage1Format, Stage2Format,
};
pub use frames::{FrameAlloc, NoFrames, OutOfFrames, TableMeta, WithTableMeta};
pub use phase::SystemState;
pub use table::Table;
