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
    FIXMAP_L2_OFF = const crate::layout::FIXMAP_L2_OFF,
    IMAGE_L3_TABLES = const hvmm_xen::layout::IMAGE_L3_TABLES,
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

/// PSCI CPU_OFF (SMC64): this CPU stops; it restarts only by CPU_ON, at
/// the head's secondary entry.
pub fn psci_cpu_off() -> ! {
    // SAFETY: the CPU powers off; nothing of it is used any more.
    unsafe { hw_regs::smc(0x8400_0002, 0, 0, 0) };
    loop {
        wait_for_event();
    }
}

/// PSCI AFFINITY_INFO (SMC64) of `mpidr` at level 0: 0 on, 1 off, 2 on
/// pending.
pub fn psci_affinity_info(mpidr: u64) -> i64 {
    // SAFETY: a PSCI query; it changes nothing.
    unsafe { hw_regs::smc(0xc400_0004, mpidr, 0, 0) as i64 }
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

// ---------------------------------------------------------------------------
// Running a guest at EL1
// ---------------------------------------------------------------------------

extern "C" {
    /// Loads x0..x30 from `regs`, sets SP to `sp`, and `eret`s (the head).
    fn guest_eret(regs: *const u64, sp: u64) -> !;
}

/// The mode the guest starts in.
pub const GUEST_MODE: &str = "EL1h";

/// HCR_EL2 for the guest: stage 2 on (VM), set/way invalidation upgraded
/// (SWIO), SMC trapped (TSC), EL1 is AArch64 (RW); IMO / FMO / AMO clear:
/// physical interrupts go to the guest.
const HCR_GUEST: u64 = (1 << 0) | (1 << 1) | (1 << 19) | (1 << 31);
/// SCTLR_EL1 at the guest's entry: its RES1 bits, MMU and caches off.
const SCTLR_EL1_RESET: u64 = 0x30d0_0800;
/// SPSR_EL2 for the entry: EL1h, D, A, I, F masked.
const SPSR_EL1H_MASKED: u64 = 0x3c5;

/// The guest format's VTCR with PS clamped to what this CPU implements
/// (ID_AA64MMFR0_EL1.PARange).
pub fn guest_vtcr() -> u64 {
    use hvmm::Stage2Format;
    let mmfr0: u64;
    // SAFETY: reads an ID register.
    unsafe {
        core::arch::asm!("mrs {v}, id_aa64mmfr0_el1", v = out(reg) mmfr0, options(nomem, nostack, preserves_flags))
    };
    let vtcr = <<Fmt as hvmm_xen::layout::HasLayout>::Guest as Stage2Format>::vtcr();
    regs::vtcr_el2(vtcr, mmfr0 & 0xf)
}

/// The registers of the boot vCPU's entry (the Image protocol): x0 = the
/// device tree, x1-x3 = 0.
pub fn boot_regs(dtb: u64) -> [u64; 4] {
    [dtb, 0, 0, 0]
}

/// Programs this CPU's virtualization controls for domain 0 and enters it
/// at `entry` (EL1h, MMU off) with `r` in x0-x3; never returns. Each entry
/// starts on the top of this CPU's stack.
pub fn enter_guest(cpu: usize, entry: u64, r: [u64; 4], vttbr: u64, vtcr: u64) -> ! {
    // SAFETY: EL2 system registers only; the guest's stage 2 (VTTBR) is
    // domain 0's complete table, and nothing at EL2 depends on HCR_EL2's
    // guest bits. The stale stage-1/2 entries of VMID are dropped first.
    unsafe {
        core::arch::asm!(
            "msr vtcr_el2, {vtcr}",
            "msr vttbr_el2, {vttbr}",
            "msr hcr_el2, {hcr}",
            "mov {t}, #3",
            "msr cnthctl_el2, {t}",
            "msr cntvoff_el2, xzr",
            "mrs {t}, midr_el1",
            "msr vpidr_el2, {t}",
            "mrs {t}, mpidr_el1",
            "msr vmpidr_el2, {t}",
            "msr sctlr_el1, {sctlr}",
            "msr elr_el2, {entry}",
            "msr spsr_el2, {spsr}",
            "isb",
            "tlbi vmalls12e1",
            "dsb nsh",
            "isb",
            vtcr = in(reg) vtcr,
            vttbr = in(reg) vttbr,
            hcr = in(reg) HCR_GUEST,
            sctlr = in(reg) SCTLR_EL1_RESET,
            entry = in(reg) entry,
            spsr = in(reg) SPSR_EL1H_MASKED,
            t = out(reg) _,
            options(nostack, preserves_flags)
        )
    };
    let mut regs = [0u64; 31];
    regs[..4].copy_from_slice(&r);
    let top = crate::layout::boot_stacks_va().0 + ((cpu + 1) * crate::STACK_SIZE) as u64;
    // SAFETY: the registers are set for EL1; the stack top is this CPU's own
    // boot stack, whose frames below are abandoned (this CPU now belongs to
    // the guest until a trap, which the vectors handle on this stack).
    unsafe { guest_eret(regs.as_ptr(), top) }
}

/// ELR_EL2: where the guest resumes.
pub fn guest_elr() -> u64 {
    let v: u64;
    // SAFETY: reads a system register.
    unsafe {
        core::arch::asm!("mrs {v}, elr_el2", v = out(reg) v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Resumes the guest after the trapped instruction (a trapped SMC leaves
/// ELR_EL2 on the instruction itself).
pub fn skip_guest_instruction() {
    let elr = guest_elr() + 4;
    // SAFETY: moves the guest's return address past one A64 instruction.
    unsafe {
        core::arch::asm!("msr elr_el2, {v}", v = in(reg) elr, options(nomem, nostack, preserves_flags))
    };
}

/// Wakes CPUs waiting in WFE.
pub fn send_event() {
    // SAFETY: SEV only signals an event.
    unsafe { core::arch::asm!("dsb ish", "sev", options(nostack, preserves_flags)) };
}

/// Injects a synchronous abort into the guest's EL1, as a data abort
/// (`instruction` false) or instruction abort taken from EL1 or EL0: the
/// fault status `status`, `write` for WnR, `far` as the faulting address;
/// the guest resumes at its vector.
pub fn inject_abort(instruction: bool, write: bool, status: u64, far: u64) {
    let (elr, spsr, vbar): (u64, u64, u64);
    // SAFETY: reads system registers.
    unsafe {
        core::arch::asm!(
            "mrs {e}, elr_el2", "mrs {s}, spsr_el2", "mrs {v}, vbar_el1",
            e = out(reg) elr, s = out(reg) spsr, v = out(reg) vbar,
            options(nomem, nostack, preserves_flags)
        )
    };
    let from_el0 = spsr & 0xf == 0;
    let ec: u64 = match (instruction, from_el0) {
        (false, false) => 0x25,
        (false, true) => 0x24,
        (true, false) => 0x21,
        (true, true) => 0x20,
    };
    let wnr = if write && !instruction { 1 << 6 } else { 0 };
    let esr = (ec << 26) | (1 << 25) | wnr | status;
    let offset = match spsr & 0xf {
        0b0101 => 0x200, // EL1h: current EL with SP_EL1
        0b0100 => 0x000, // EL1t: current EL with SP_EL0
        _ => 0x400,      // EL0: lower EL, AArch64
    };
    // SAFETY: the guest's EL1 exception state, written as the architecture
    // does when it takes an abort to EL1; it resumes at its own vector.
    unsafe {
        core::arch::asm!(
            "msr esr_el1, {esr}", "msr far_el1, {far}", "msr elr_el1, {elr}",
            "msr spsr_el1, {spsr}", "msr elr_el2, {target}", "msr spsr_el2, {entry_spsr}",
            esr = in(reg) esr, far = in(reg) far, elr = in(reg) elr, spsr = in(reg) spsr,
            target = in(reg) vbar + offset, entry_spsr = in(reg) SPSR_EL1H_MASKED,
            options(nomem, nostack, preserves_flags)
        )
    };
}

/// Called by the vectors for a synchronous exception from the guest, with
/// its x0..x30 saved at `frame` (restored on return).
#[no_mangle]
extern "C" fn hvmm_guest_sync(frame: *mut [u64; 31]) {
    let (esr, far, hpfar): (u64, u64, u64);
    // SAFETY: reads the syndrome registers.
    unsafe {
        core::arch::asm!(
            "mrs {e}, esr_el2", "mrs {f}, far_el2", "mrs {h}, hpfar_el2",
            e = out(reg) esr, f = out(reg) far, h = out(reg) hpfar,
            options(nomem, nostack, preserves_flags)
        )
    };
    // SAFETY: the vectors pass the frame they saved on this CPU's stack; it
    // lives until they restore it after this returns.
    let x = unsafe { &mut *frame };
    crate::guest::sync_exception(x, esr, far, hpfar);
}
