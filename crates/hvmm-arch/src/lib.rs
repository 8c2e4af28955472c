//! # hvmm-arch — the processor under hvmm, on hardware
//!
//! The real instructions behind [`hvmm::Arch`] and [`hvmm::CpuOps`], and the
//! register values hvmm's tables assume. Two back ends, each compiled only
//! for its own architecture:
//!
//! - `Aarch64El2` (`target_arch = "aarch64"`, module `aarch64`): VMSAv8-64 at
//!   EL2 — `TTBR0_EL2`, `TLBI VAE2IS`, `AT S1E2R`, `PAR_EL1`…
//! - `Armv7Hyp` (`target_arch = "arm"`, module `arm32`): LPAE long descriptors
//!   in HYP mode — `HTTBR`, `TLBIMVAHIS`, `ATS1HR`, the 64-bit `PAR`…
//!
//! On any target the crate holds what does not need the processor, unit
//! tested on the host: the register values ([`regs`]) and the decoding of
//! `PAR` ([`par`]).
//!
//! # The path at EL2 (arm64)
//!
//! 1. **The head** (assembly, MMU off): `MAIR_EL2` = [`regs::MAIR_VALUE`],
//!    `TCR_EL2` = [`regs::tcr_el2`] of `ID_AA64MMFR0_EL1.PARange` (T0SZ 16,
//!    4 KiB granule, write-back walks), a small static table in
//!    `TTBR0_EL2`, then `SCTLR_EL2` = [`regs::SCTLR_EL2_BOOT`] (MMU and
//!    caches on). From Rust, `aarch64::write_mair_el2` and
//!    `aarch64::write_tcr_el2` (with `aarch64::boot_tcr_el2()`) write the
//!    same values.
//! 2. **The table**: `let cpu = unsafe { Aarch64El2::new() };` is the
//!    processor part of an [`hvmm::Table`], with your frame allocator and
//!    table access: `Table::new(Arm64, cpu, access, frames)`, then `map`,
//!    `protect`...
//! 3. **The switch**: `aarch64::switch_root(Paddr(table.ttbr()))`, or
//!    `aarch64::switch_root_identity` from identity-mapped code (it turns
//!    the MMU off for the few instructions of the switch, so that no TLB
//!    entry of the old table can meet one of the new); then
//!    `aarch64::set_wxn(true)` once no code is writable.
//! 4. **A guest**: `VTCR_EL2` = [`regs::vtcr_el2`]`(guest.vtcr(), PARange)`,
//!    `VTTBR_EL2` = `guest.vttbr()`, `HCR_EL2.VM` ([`regs::HCR_VM`]).
//!
//! The repository's `examples/el2-hello` is those four steps on QEMU
//! (`cargo xtask example-el2`), using nothing but `hvmm` and this crate:
//!
//! ```text
//! let cpu = unsafe { Aarch64El2::new() };
//! let mut hyp = Table::new(Arm64, cpu, Identity { pool }, &mut frames)?;
//! hyp.map(Vaddr(text), Paddr(text), pages(text, text_end), Attrs::RX)?;
//! hyp.map(Vaddr(data), Paddr(data), pages(data, data_end), Attrs::RW)?;
//! hyp.map(Vaddr(UART), Paddr(UART), 1, Attrs::DEVICE)?;
//! unsafe { hvmm_arch::aarch64::switch_root_identity(hyp.root().paddr()) };
//! unsafe { hvmm_arch::aarch64::set_wxn(true) };
//! ```
//!
//! # In HYP mode (arm32)
//!
//! The same steps with `arm32::write_hmair` ([`regs::HMAIR0`] /
//! [`regs::HMAIR1`]), `arm32::write_htcr` ([`regs::HTCR`]),
//! [`regs::HSCTLR_BOOT`], `Armv7Hyp::new`, `arm32::switch_root` and
//! `arm32::set_wxn`; a guest's `VTCR` is [`hvmm::Table::vtcr`] as it is
//! (LPAE's 40-bit IPA).
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
