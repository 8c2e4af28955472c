//! arm32 in HYP mode (LPAE).

use crate::exception::{self, Report};
use crate::exit;
use core::arch::global_asm;
use hvmm_arch::arm32 as hw_regs;
use hvmm_arch::regs;

global_asm!(
    include_str!("arm32_head.S"),
    HMAIR0 = const regs::HMAIR0,
    HMAIR1 = const regs::HMAIR1,
    HTCR = const regs::HTCR,
    HSCTLR = const regs::HSCTLR_BOOT as u32,
    STACK_SIZE = const crate::STACK_SIZE,
    MAX_CPUS = const crate::MAX_CPUS,
    EXIT_WRONG_MODE = const exit::EXIT_WRONG_MODE,
    EXIT_IDMAP_CLASH = const exit::EXIT_IDMAP_CLASH,
    EXIT_SMP = const exit::EXIT_SMP,
    EXIT_EXCEPTION = const exit::EXIT_EXCEPTION,
    EXIT_RETURNED = const exit::EXIT_RETURNED,
);

pub use hvmm_arch::arm32::{set_wxn, switch_root};

/// The processor back end.
pub type Cpu = hvmm_arch::Armv7Hyp;
/// The translation format.
pub type Fmt = hvmm::Arm32;
/// How the banner names the mode.
pub const MODE: &str = "arm32 HYP";

/// The processor back end for this CPU.
pub fn hw() -> Cpu {
    // SAFETY: from `start_hvmm` / `start_secondary` on, this image runs in
    // HYP mode with the MMU on; the only descriptor addresses it hands to
    // `write_pte` are the fixmap L3 entries and the recorded identity-map
    // entry, table memory that no Rust reference aliases.
    unsafe { Cpu::new() }
}

/// This CPU's MPIDR affinity.
pub fn mpidr() -> u64 {
    u64::from(hw_regs::mpidr()) & 0x00ff_ffff
}

/// The physical counter and its frequency.
pub fn counter() -> (u64, u64) {
    (hw_regs::cntpct(), u64::from(hw_regs::cntfrq()))
}

/// PSCI CPU_ON (SMC32): start `mpidr` at physical address `entry` with
/// `context` in r0.
pub fn psci_cpu_on(mpidr: u64, entry: u64, context: u64) -> i32 {
    let (Ok(m), Ok(e), Ok(c)) = (
        u32::try_from(mpidr),
        u32::try_from(entry),
        u32::try_from(context),
    ) else {
        return -2; // INVALID_PARAMETERS
    };
    // SAFETY: `entry` is the head's secondary entry point (found by AT), code
    // that runs with the MMU off; PSCI does not touch our memory.
    unsafe { hw_regs::smc(0x8400_0003, m, e, c) as i32 }
}

/// Waits for an event (parked CPUs).
pub fn wait_for_event() {
    // SAFETY: WFE only pauses this CPU.
    unsafe { core::arch::asm!("wfe", options(nomem, nostack, preserves_flags)) };
}

const KINDS: [&str; 8] = [
    "Reset (unexpected)",
    "Undefined Instruction (HYP)",
    "Supervisor/Hypervisor Call (HYP)",
    "Prefetch Abort (HYP)",
    "Data Abort (HYP)",
    "Hyp Trap",
    "IRQ",
    "FIQ",
];

/// Called by the vectors (MMU on) with the vector index and the syndrome
/// registers; reports and exits.
#[no_mangle]
extern "C" fn hvmm_exception(kind: u32, hsr: u32, far: u32, elr: u32, spsr: u32) -> ! {
    exception::report(&Report {
        kind: KINDS.get(kind as usize).copied().unwrap_or("?"),
        cpu: crate::smp::this_cpu(),
        syndrome_reg: "HSR",
        syndrome: hsr,
        far_reg: if kind == 3 { "HIFAR" } else { "HDFAR" },
        far: u64::from(far),
        elr_reg: "ELR_hyp",
        elr: u64::from(elr),
        spsr: u64::from(spsr),
    })
}
