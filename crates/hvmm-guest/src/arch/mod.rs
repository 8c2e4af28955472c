//! Per-architecture glue: the head assembly, system registers, barriers and
//! TLB maintenance, the HVC conduit, single-instruction probes, and the
//! decoding of a synchronous exception into a [`Fault`].

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "aarch64")]
pub use aarch64::*;

#[cfg(target_arch = "arm")]
mod arm32;
#[cfg(target_arch = "arm")]
pub use arm32::*;

/// A synchronous exception, decoded.
#[derive(Copy, Clone, Debug)]
pub struct Fault {
    /// The raw syndrome: ESR_EL1 (arm64) or DFSR / IFSR (arm32).
    pub syndrome: u64,
    /// The faulting address: FAR_EL1 (arm64) or DFAR / IFAR (arm32).
    pub far: usize,
    /// Where it happened (ELR_EL1 / the aborted instruction).
    pub pc: usize,
    /// Whether it is a data abort taken from this exception level / mode.
    pub data_abort: bool,
    /// The fault status code (DFSC, or the LPAE DFSR STATUS field): the
    /// same encoding on both architectures.
    pub status: u32,
    /// Whether the access was a write (WnR).
    pub write: bool,
    /// The vector taken, for reports.
    pub kind: &'static str,
}

impl Fault {
    /// What the fault status code means (the codes both formats share).
    pub fn status_name(&self) -> &'static str {
        match self.status {
            0x04..=0x07 => "translation fault",
            0x09..=0x0b => "access flag fault",
            0x0d..=0x0f => "permission fault",
            0x10 => "synchronous external abort",
            0x21 => "alignment fault",
            _ => "other fault",
        }
    }
}

/// Fault status: level 0-3 translation fault.
pub fn is_translation(status: u32) -> bool {
    (0x04..=0x07).contains(&status)
}

/// Fault status: level 1-3 permission fault.
pub fn is_permission(status: u32) -> bool {
    (0x0d..=0x0f).contains(&status)
}

/// Fault status: synchronous external abort (not on a table walk).
pub const STATUS_EXTERNAL: u32 = 0x10;
/// Fault status: alignment fault.
pub const STATUS_ALIGNMENT: u32 = 0x21;
