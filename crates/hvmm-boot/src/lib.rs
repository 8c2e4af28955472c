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
//! With the `model` feature, the module `model` runs whole scenarios on the machine
//! model, including an emulation of the head (boot tables, identity map).
//!
//! # The path
//!
//! The sequence is Xen-shaped (it uses `hvmm-xen`'s layout, boot allocator
//! and PMAP / domain-page providers) and drives the core through its
//! low-level API, because its table access changes with the system state
//! ([`Mm`]). To run it on a machine of your own:
//!
//! 1. implement [`Platform`] for it: [`hvmm::Arch`] and [`hvmm::CpuOps`]
//!    (on hardware, delegate to `hvmm_arch::Aarch64El2` / `Armv7Hyp`), plus
//!    switching the root table and WXN, reads and copies through the MMU,
//!    and starting a secondary CPU — the bare-metal image's `HwPlatform`
//!    is the hardware one, the `model` module's the model's;
//! 2. from the head, with the MMU on at the link address and the static
//!    boot tables of [`ImageLayout`] in place, call [`boot`] with where the
//!    DTB is ([`BootParams`]) and what you choose ([`BootConfig`]: CPUs,
//!    dumps, domain 0); it returns a [`BootSummary`] in
//!    [`hvmm::SystemState::Active`], or a [`Failed`] that names the step, the
//!    state and the cause;
//! 3. [`boot_keep`] also hands back the memory manager, to keep changing
//!    the hypervisor's table (and to build guests' stage 2) after the boot.
//!
//! On the model the whole thing is one call:
//!
//! ```
//! use hvmm_boot::model::{run, ArchKind, Scenario};
//!
//! let out = run(&Scenario::default_for(ArchKind::Arm64)).unwrap();
//! assert!(out.ok(), "{}", out.log);
//! let summary = out.result.as_ref().unwrap();
//! assert_eq!(summary.state, Some(hvmm::SystemState::Active));
//! assert!(summary.verified_pages > 0); // every mapped region checked by AT
//! ```
#![cfg_attr(not(feature = "model"), no_std)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
// Errors carry a fixed-size message (no heap in early boot), so they are
// larger than clippy likes; boxing is not available on bare metal.
#![allow(clippy::result_large_err)]

pub mod audit;
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
#[cfg(feature = "test-hooks")]
pub use seq::FailPoint;
pub use seq::{boot, boot_keep, AuditConfig, BootConfig, BootParams, Failed, PaPolicy};
