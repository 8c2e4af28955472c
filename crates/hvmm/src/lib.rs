//! # hvmm — the memory-management core of an Arm hypervisor
//!
//! `no_std`, for arm64 (EL2, VMSAv8-64) and arm32 (HYP, LPAE). This crate holds
//! what does not depend on the machine: addresses ([`addr`]), descriptor
//! formats ([`format`]), attributes ([`attr`]), the page-table update engine
//! ([`engine`]) and the interfaces it needs — processor operations ([`Arch`]),
//! a way to reach table pages ([`TableAccess`]) and a source of table frames
//! ([`FrameAlloc`]).
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
#![no_std]
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
pub mod boot_alloc;
pub mod engine;
pub mod error;
pub mod format;
#[cfg(any(test, feature = "host"))]
pub mod host;
pub mod layout;
pub mod phase;

pub use access::{AccessError, TableAccess};
pub use addr::{InputAddr, Ipa, LinearRange, Mfn, Paddr, Vaddr, Vaddr32, Vmid, PAGE_SIZE};
pub use alloc::{FrameAlloc, NoFrames, OutOfFrames};
pub use arch::{AccessKind, Arch, AtResult, FaultKind, MemFault};
pub use attr::{Attrs, LeafAttrs, MairMap, MapFlags, MemType, Perm, S2Access, S2Attrs, S2MemType};
pub use engine::{Env, Leaf, Op, PageTable, UpdateReport};
pub use error::Error;
pub use format::{
    Arm32, Arm32Stage2, Arm64, Arm64Stage2, Format, Pte, Stage, Stage1Format, Stage2Format,
};
pub use phase::SystemState;
