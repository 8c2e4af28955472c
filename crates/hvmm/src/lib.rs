//! # hvmm — the memory-management core of an Arm hypervisor
//!
//! `no_std`, for arm64 (EL2, VMSAv8-64) and arm32 (HYP, LPAE). This crate holds
//! what does not depend on the machine: addresses ([`addr`]), descriptor
//! formats ([`format`]), attributes ([`attr`]), the page-table update engine
//! ([`engine`]) and the interfaces it needs — processor operations ([`Arch`]),
//! a way to reach table pages ([`TableAccess`]) and a source of table frames
//! ([`FrameAlloc`]).
//!
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod access;
pub mod addr;
pub mod alloc;
pub mod arch;
pub mod attr;
pub mod error;
pub mod format;

pub use access::{AccessError, TableAccess};
pub use addr::{LinearRange, Mfn, Paddr, Vaddr, Vaddr32, PAGE_SIZE};
pub use alloc::{FrameAlloc, OutOfFrames};
pub use arch::{AccessKind, Arch, AtResult, FaultKind, MemFault};
pub use attr::{Attrs, MapFlags, MemType, Perm};
pub use error::Error;
pub use format::{Arm32, Arm64, Format, Pte};
