//! # hvmm-arch — the processor instructions behind [`hvmm::Arch`]
//!
//! Two back ends, each compiled only for its own architecture:
//!
//! - `Aarch64El2` (`target_arch = "aarch64"`, module `aarch64`): VMSAv8-64 at EL2 —
//!   `TTBR0_EL2`, `TLBI VAE2IS`, `AT S1E2R`, `PAR_EL1`…
//! - `Armv7Hyp` (`target_arch = "arm"`, module `arm32`): LPAE long descriptors in HYP mode —
//!   `HTTBR`, `TLBIMVAHIS`, `ATS1HR`, the 64-bit `PAR`…
//!
//! Besides the trait, each back end exports the helpers the boot code needs:
//! programming MAIR/TCR (HMAIR/HTCR), switching the root table with the right
//! barriers, setting and clearing `WXN`, and reading the syndrome registers.
//!
//! On the host the crate holds only what does not need the processor: the
//! decoding of `PAR` ([`par`]) and the register values ([`regs`]), both unit
//! tested there.
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod par;
pub mod regs;

// Each back end is compiled for its own architecture only, and for rustdoc on
// any target, so that the documentation built on a host (and on docs.rs)
// shows both.
#[cfg(any(target_arch = "aarch64", doc))]
#[cfg_attr(docsrs, doc(cfg(target_arch = "aarch64")))]
pub mod aarch64;
#[cfg(any(target_arch = "aarch64", doc))]
#[cfg_attr(docsrs, doc(cfg(target_arch = "aarch64")))]
pub use aarch64::Aarch64El2;

#[cfg(any(target_arch = "arm", doc))]
#[cfg_attr(docsrs, doc(cfg(target_arch = "arm")))]
pub mod arm32;
#[cfg(any(target_arch = "arm", doc))]
#[cfg_attr(docsrs, doc(cfg(target_arch = "arm")))]
pub use arm32::Armv7Hyp;
