//! # hvmm — the memory-management core of an Arm hypervisor
//!
//! `no_std`, for arm64 (EL2, VMSAv8-64) and arm32 (HYP, LPAE). This crate holds
//! what does not depend on the machine: addresses ([`addr`]), descriptor
//! formats ([`format`]), attributes ([`attr`]), the page-table update engine
//! ([`engine`]) and the interfaces it needs — processor operations ([`Arch`]),
//! a way to reach table pages ([`TableAccess`]) and a source of table frames
//! ([`FrameAlloc`]). It knows no hypervisor's virtual layout: [`phase`] holds
//! the layout-free building blocks of phase-aware table access (the boot
//! states, the image's range, a direct map), and Xen on Arm's layout, its
//! fixmap / PMAP / domain-page slots and its boot allocator are one instance
//! of this core, in the `hvmm-xen` crate.
//!
//! ```
//! # #[cfg(feature = "host")] {
//! use hvmm::host::HostMemory;
//! use hvmm::{Arm64, Attrs, MapFlags, Op, PageTable, Paddr, Vaddr};
//!
//! let mut mem = HostMemory::new(64);
//! let mut pt = PageTable::<Arm64>::create(&mut mem.env()).unwrap();
//! let insert = Op::Insert { pa: Paddr(0x8000_0000), attrs: Attrs::RW };
//! pt.update(&mut mem.env(), Vaddr(0x20_0000), 16, insert, MapFlags::PAGES).unwrap();
//! let leaf = pt.lookup(&mut mem.arch, &mut mem.access, Vaddr(0x20_3000)).unwrap().unwrap();
//! assert_eq!(leaf.pa, Paddr(0x8000_3000));
//! assert_eq!(leaf.level, 3);
//! # }
//! ```
//!
//! A guest's stage-2 table is the same engine over another regime: a 40-bit
//! IPA space with two concatenated root pages, stage-2 attributes, TLB
//! maintenance scoped to the guest's VMID. Making one page read-only inside
//! a 2 MiB block splits the block live, with break-before-make:
//!
//! ```
//! # #[cfg(feature = "host")] {
//! use hvmm::host::HostMemory;
//! use hvmm::{Arm64Stage2, Ipa, MapFlags, Op, PageTable, Paddr, S2Attrs, Vmid};
//!
//! let mut mem = HostMemory::new(64);
//! let mut p2m = PageTable::<Arm64Stage2<40>>::create_stage2(&mut mem.env(), Vmid(1)).unwrap();
//! let ram = Op::Insert { pa: Paddr(0x4000_0000), attrs: S2Attrs::RAM };
//! p2m.update(&mut mem.env(), Ipa(0x4000_0000), 512, ram, MapFlags::BLOCKS).unwrap();
//! let ro = Op::Modify { attrs: S2Attrs::RAM_RO };
//! let r = p2m.update(&mut mem.env(), Ipa(0x4000_5000), 1, ro, MapFlags::PAGES).unwrap();
//! assert_eq!(r.splits, 1);
//! let leaf = p2m.lookup(&mut mem.arch, &mut mem.access, Ipa(0x4000_5000)).unwrap().unwrap();
//! assert_eq!((leaf.level, leaf.attrs), (3, Some(S2Attrs::RAM_RO)));
//! p2m.destroy(&mut mem.env()).unwrap();
//! # }
//! ```
//!
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
pub mod alloc;
pub mod arch;
pub mod attr;
pub mod engine;
pub mod error;
pub mod format;
#[cfg(any(test, feature = "host"))]
#[cfg_attr(docsrs, doc(cfg(feature = "host")))]
pub mod host;
pub mod phase;

pub use access::{AccessError, TableAccess};
pub use addr::{InputAddr, Ipa, LinearRange, Mfn, Paddr, Vaddr, Vaddr32, Vmid, PAGE_SIZE};
pub use alloc::{FrameAlloc, NoFrames, OutOfFrames, TableMeta, WithTableMeta};
pub use arch::{AccessKind, Arch, AtResult, FaultKind, MemFault};
pub use attr::{Attrs, LeafAttrs, MairMap, MapFlags, MemType, Perm, S2Access, S2Attrs, S2MemType};
pub use engine::{Env, Leaf, Op, PageTable, UpdateReport};
pub use error::Error;
pub use format::{
    Arm32, Arm32Stage2, Arm64, Arm64Stage2, Format, Pte, Stage, Stage1Format, Stage2Format,
};
pub use phase::SystemState;
