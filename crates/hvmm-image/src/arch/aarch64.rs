//! arm64 at EL2.

use crate::exception::{self, Report};
use crate::exit;
use core::arch::global_asm;
use hvmm_arch::aarch64 as hw_regs;
use hvmm_arch::regs;

global_asm!(
    include_str!("aarch64_head.S"),
    MAIR = const regs::MAIR_VALUE,
    TCR = const regs::tcr_el2(0),
    SCTLR = const regs::SCTLR_EL2_BOOT,
    CPTR = const regs::CPTR_EL2_NO_TRAPS,
    STACK_SIZE = const crate::STACK_SIZE,
    MAX_CPUS = const crate::MAX_CPUS,
    EXIT_WRONG_MODE = const exit::EXIT_WRONG_MODE,
    EXIT_IDMAP_CLASH = const exit::EXIT_IDMAP_CLASH,
    EXIT_SMP = const exit::EXIT_SMP,
    EXIT_EXCEPTION = const exit::EXIT_EXCEPTION,
    EXIT_RETURNED = const exit::EXIT_RETURNED,
);

pub use hvmm_arch::aarch64::{set_wxn, switch_root};

/// The processor back end.
pub type Cpu = hvmm_arch::Aarch64El2;
/// The translation format.
pub type Fmt = hvmm::Arm64;
/// How the banner names the mode.
pub const MODE: &str = "arm64 EL2";

/// The processor back end for this CPU.
pub fn hw() -> Cpu {
    // SAFETY: from `start_hvmm` / `start_secondary` on, this image runs at
    // EL2 with the MMU on; the only descriptor addresses it hands to
    // `write_pte` are the fixmap L3 entries and the recorded identity-map
    // entry, table memory that no Rust reference aliases.
    unsafe { Cpu::new() }
}

/// This CPU's MPIDR affinity.
pub fn mpidr() -> u64 {
    hw_regs::mpidr() & regs::MPIDR_AFF_MASK
}

/// The physical counter and its frequency.
pub fn counter() -> (u64, u64) {
    (hw_regs::cntpct(), hw_regs::cntfrq())
}

/// PSCI CPU_ON (SMC64): start `mpidr` at physical address `entry` with
/// `context` in x0.
pub fn psci_cpu_on(mpidr: u64, entry: u64, context: u64) -> i32 {
    // SAFETY: `entry` is the head's secondary entry point (found by AT), code
    // that runs with the MMU off; PSCI does not touch our memory.
    unsafe { hw_regs::smc(0xc400_0003, mpidr, entry, context) as i32 }
}

/// Waits for an event (parked CPUs).
pub fn wait_for_event() {
    // SAFETY: WFE only pauses this CPU.
    unsafe { core::arch::asm!("wfe", options(nomem, nostack, preserves_flags)) };
}

const KINDS: [&str; 16] = [
    "Synchronous, current EL with SP_EL0",
    "IRQ, current EL with SP_EL0",
    "FIQ, current EL with SP_EL0",
    "SError, current EL with SP_EL0",
    "Synchronous, current EL with SP_ELx",
    "IRQ, current EL with SP_ELx",
    "FIQ, current EL with SP_ELx",
    "SError, current EL with SP_ELx",
    "Synchronous, lower EL (AArch64)",
    "IRQ, lower EL (AArch64)",
    "FIQ, lower EL (AArch64)",
    "SError, lower EL (AArch64)",
    "Synchronous, lower EL (AArch32)",
    "IRQ, lower EL (AArch32)",
    "FIQ, lower EL (AArch32)",
    "SError, lower EL (AArch32)",
];

/// Called by the vectors (MMU on) with the vector index and the syndrome
/// registers; reports and exits.
#[no_mangle]
extern "C" fn hvmm_exception(kind: u64, esr: u64, far: u64, elr: u64, spsr: u64) -> ! {
    exception::report(&Report {
        kind: KINDS.get(kind as usize).copied().unwrap_or("?"),
        cpu: crate::smp::this_cpu(),
        syndrome_reg: "ESR_EL2",
        syndrome: esr as u32,
        far_reg: "FAR_EL2",
        far,
        elr_reg: "ELR_EL2",
        elr,
        spsr,
    })
}
