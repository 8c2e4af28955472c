//! Per-architecture glue: the head assembly, the [`hvmm::Arch`] back end,
//! PSCI, the counter and the exception entry.

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "aarch64")]
pub use aarch64::*;

#[cfg(target_arch = "arm")]
mod arm32;
#[cfg(target_arch = "arm")]
pub use arm32::*;

/// PSCI return code: success.
pub const PSCI_SUCCESS: i32 = 0;
