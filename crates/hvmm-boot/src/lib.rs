//! # hvmm-boot — the boot sequence
//!
//! One code path, generic over the [`Platform`] (the bare-metal image's real
//! processor, or the host machine model): from the first Rust instruction
//! after the head turned the MMU on, through `setup_pagetables`, the early
//! FDT mapping, `boot_fdt_info` (with Xen's module-kind guessing through
//! `copy_from_paddr` in early boot), memory set-up, the end of the boot
//! allocator, secondary CPUs and the freeing of init memory, to
//! [`hvmm::SystemState::Active`] — and then a proof by hardware address
//! translation that every region it mapped is where the layout says.
//!
//! With the `model` feature, the `model` module runs whole scenarios on the machine
//! model, including an emulation of the head (boot tables, identity map).
#![cfg_attr(not(feature = "model"), no_std)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
// Errors carry a fixed-size message (no heap in early boot), so they are
// larger than clippy likes; boxing is not available on bare metal.
#![allow(clippy::result_large_err)]

pub mod domain;
pub mod image;
pub mod mm;
#[cfg(feature = "model")]
#[cfg_attr(docsrs, doc(cfg(feature = "model")))]
pub mod model;
pub mod platform;
pub mod report;
pub mod seq;
pub mod stress;
#[cfg(feature = "model")]
#[cfg_attr(docsrs, doc(cfg(feature = "model")))]
pub mod svg;

pub use image::ImageLayout;
pub use mm::{AccessPolicy, Mm};
pub use platform::Platform;
pub use report::{BootError, BootStep, BootSummary};
pub use seq::{boot, boot_keep, BootConfig, BootParams, FailPoint, Failed, PaPolicy};
