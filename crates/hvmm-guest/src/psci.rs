//! PSCI and hvmm's vendor service, over `HVC #0` (SMC Calling Convention).

use crate::arch;

/// PSCI_VERSION.
pub const VERSION: u32 = 0x8400_0000;
/// CPU_OFF.
pub const CPU_OFF: u32 = 0x8400_0002;
/// SYSTEM_OFF.
pub const SYSTEM_OFF: u32 = 0x8400_0008;
/// SYSTEM_RESET.
pub const SYSTEM_RESET: u32 = 0x8400_0009;
/// PSCI_FEATURES.
pub const FEATURES: u32 = 0x8400_000a;
/// hvmm's vendor-specific hypervisor service: "write-protect the page at
/// x1 / r1 from another CPU, asynchronously" (owner 6, fast call).
pub const HVMM_WRITE_PROTECT: u32 = 0xc600_0001;
/// The SMCCC / PSCI return code NOT_SUPPORTED.
pub const NOT_SUPPORTED: i32 = -1;

/// A call with up to three arguments; the 32-bit status it returns.
pub fn call(fid: u32, a1: u64, a2: u64, a3: u64) -> i32 {
    arch::hvc(fid, a1, a2, a3) as u32 as i32
}

/// The major and minor version PSCI_VERSION returns.
pub fn version() -> (u32, u32) {
    let v = arch::hvc(VERSION, 0, 0, 0) as u32;
    (v >> 16, v & 0xffff)
}

/// CPU_ON: start `mpidr` at the physical address `entry` with `context`
/// in x0 / r0.
pub fn cpu_on(mpidr: u64, entry: u64, context: u64) -> i32 {
    call(arch::PSCI_CPU_ON, mpidr, entry, context)
}
