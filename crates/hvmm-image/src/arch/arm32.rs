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
    FIXMAP_L2_OFF = const crate::layout::FIXMAP_L2_OFF,
    IMAGE_L3_TABLES = const hvmm_xen::layout::IMAGE_L3_TABLES,
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

// ---------------------------------------------------------------------------
// Running a guest in SVC mode
// ---------------------------------------------------------------------------

extern "C" {
    /// Loads r0-r12 from `regs`, sets SP_hyp to `sp`, and `eret`s (the head).
    fn guest_eret(regs: *const u32, sp: u32) -> !;
}

/// The mode the guest starts in.
pub const GUEST_MODE: &str = "SVC";

/// HCR for the guest: stage 2 on (VM), set/way invalidation upgraded
/// (SWIO), SMC trapped (TSC); IMO / FMO / AMO clear: physical interrupts go
/// to the guest.
const HCR_GUEST: u32 = (1 << 0) | (1 << 1) | (1 << 19);
/// The guest's SCTLR at entry: its RES1 bits, MMU and caches off.
const SCTLR_RESET: u32 = 0x00c5_0078;
/// The guest's CPSR at entry: SVC mode, A, I and F masked.
const CPSR_SVC_MASKED: u32 = 0x1d3;

/// The guest format's VTCR (T0SZ = -8, SL0 = 1: 40-bit IPA, level 1).
pub fn guest_vtcr() -> u64 {
    use hvmm::Stage2Format;
    <<Fmt as hvmm_xen::layout::HasLayout>::Guest as Stage2Format>::vtcr()
}

/// The registers of the boot vCPU's entry (the zImage protocol): r0 = 0,
/// r1 = ~0 (machine type: use the device tree), r2 = the tree.
pub fn boot_regs(dtb: u64) -> [u64; 4] {
    [0, 0xffff_ffff, dtb, 0]
}

/// Programs this CPU's virtualization controls for domain 0 and enters it
/// at `entry` in SVC mode (MMU off) with `r` in r0-r3; never returns. Each
/// entry starts on the top of this CPU's stack.
pub fn enter_guest(cpu: usize, entry: u64, r: [u64; 4], vttbr: u64, vtcr: u64) -> ! {
    // SAFETY: HYP system registers only; VTTBR is domain 0's complete stage
    // 2; every non-secure non-HYP TLB entry is dropped first.
    unsafe {
        core::arch::asm!(
            "mcr p15, 4, {vtcr}, c2, c1, 2",
            "mcrr p15, 6, {lo}, {hi}, c2",
            "mcr p15, 4, {hcr}, c1, c1, 0",
            "mov {t}, #0",
            "mcr p15, 4, {t}, c1, c1, 3",
            "mcrr p15, 4, {t}, {t}, c14",
            "mov {t}, #3",
            "mcr p15, 4, {t}, c14, c1, 0",
            "mrc p15, 0, {t}, c0, c0, 0",
            "mcr p15, 4, {t}, c0, c0, 0",
            "mrc p15, 0, {t}, c0, c0, 5",
            "mcr p15, 4, {t}, c0, c0, 5",
            "mcr p15, 0, {sctlr}, c1, c0, 0",
            ".arch_extension virt",
            "msr ELR_hyp, {entry}",
            "msr spsr_fsxc, {cpsr}",
            "isb",
            "mcr p15, 4, {t}, c8, c7, 4",
            "dsb",
            "isb",
            vtcr = in(reg) vtcr as u32,
            lo = in(reg) vttbr as u32,
            hi = in(reg) (vttbr >> 32) as u32,
            hcr = in(reg) HCR_GUEST,
            sctlr = in(reg) SCTLR_RESET,
            entry = in(reg) entry as u32,
            cpsr = in(reg) CPSR_SVC_MASKED,
            t = out(reg) _,
            options(nostack)
        )
    };
    let mut regs = [0u32; 13];
    for (d, s) in regs.iter_mut().zip(r) {
        *d = s as u32;
    }
    let top = crate::layout::boot_stacks_va().0 as u32 + ((cpu + 1) * crate::STACK_SIZE) as u32;
    // SAFETY: the registers are set for the guest; the stack top is this
    // CPU's own boot stack, whose frames below are abandoned.
    unsafe { guest_eret(regs.as_ptr(), top) }
}

/// ELR_hyp: where the guest resumes.
pub fn guest_elr() -> u64 {
    u64::from(hw_regs::elr_hyp())
}

/// Resumes the guest after the trapped (A32) instruction.
pub fn skip_guest_instruction() {
    let elr = hw_regs::elr_hyp().wrapping_add(4);
    // SAFETY: moves the guest's return address past one A32 instruction.
    unsafe {
        core::arch::asm!(".arch_extension virt", "msr ELR_hyp, {v}", v = in(reg) elr, options(nomem, nostack))
    };
}

/// Wakes CPUs waiting in WFE.
pub fn send_event() {
    // SAFETY: SEV only signals an event.
    unsafe { core::arch::asm!("dsb", "sev", options(nostack)) };
}

/// PSCI CPU_OFF (SMC32): this CPU stops; it restarts only by CPU_ON.
pub fn psci_cpu_off() -> ! {
    // SAFETY: the CPU powers off; nothing of it is used any more.
    unsafe { hw_regs::smc(0x8400_0002, 0, 0, 0) };
    loop {
        wait_for_event();
    }
}

/// PSCI AFFINITY_INFO (SMC32) of `mpidr` at level 0: 0 on, 1 off, 2 on
/// pending.
pub fn psci_affinity_info(mpidr: u64) -> i64 {
    // SAFETY: a PSCI query; it changes nothing.
    i64::from(unsafe { hw_regs::smc(0x8400_0004, mpidr as u32, 0, 0) } as i32)
}

/// Injects a synchronous abort into the guest's PL1, as the architecture
/// takes one to Abort mode: DFSR / IFSR in the long-descriptor format (the
/// guest runs with LPAE) with `status` and WnR, DFAR / IFAR = `far`,
/// LR_abt and SPSR_abt from the trapped context, then the guest resumes at
/// its vector (VBAR + 0x10 for a data abort, + 0x0c for a prefetch abort).
pub fn inject_abort(instruction: bool, write: bool, status: u64, far: u64) {
    let elr = hw_regs::elr_hyp();
    let spsr = hw_regs::spsr_hyp();
    let (sctlr, vbar): (u32, u32);
    // SAFETY: reads the guest's SCTLR and VBAR.
    unsafe {
        core::arch::asm!(
            "mrc p15, 0, {s}, c1, c0, 0", "mrc p15, 0, {v}, c12, c0, 0",
            s = out(reg) sctlr, v = out(reg) vbar, options(nomem, nostack)
        )
    };
    let fsr = (1 << 9) | (status as u32) | if write && !instruction { 1 << 11 } else { 0 };
    let base = if sctlr & (1 << 13) != 0 {
        0xffff_0000
    } else {
        vbar
    };
    let (vector, lr) = if instruction {
        (base + 0x0c, elr.wrapping_add(4))
    } else {
        (base + 0x10, elr.wrapping_add(8))
    };
    let te = if sctlr & (1 << 30) != 0 { 1 << 5 } else { 0 };
    let cpsr = (spsr & (1 << 6)) | 0x180 | 0x17 | te;
    // SAFETY: the guest's PL1 abort state, written as the architecture does
    // when it takes an abort to Abort mode; it resumes at its own vector.
    unsafe {
        if instruction {
            core::arch::asm!(
                "mcr p15, 0, {fsr}, c5, c0, 1", "mcr p15, 0, {far}, c6, c0, 2",
                fsr = in(reg) fsr, far = in(reg) far as u32, options(nomem, nostack)
            );
        } else {
            core::arch::asm!(
                "mcr p15, 0, {fsr}, c5, c0, 0", "mcr p15, 0, {far}, c6, c0, 0",
                fsr = in(reg) fsr, far = in(reg) far as u32, options(nomem, nostack)
            );
        }
        core::arch::asm!(
            ".arch_extension virt",
            "msr LR_abt, {lr}", "msr SPSR_abt, {spsr}", "msr ELR_hyp, {vector}",
            "msr spsr_fsxc, {cpsr}",
            lr = in(reg) lr, spsr = in(reg) spsr, vector = in(reg) vector, cpsr = in(reg) cpsr,
            options(nomem, nostack)
        );
    }
}

/// Called by the Hyp Trap vector with the guest's r0-r12 and LR saved at
/// `frame` (restored on return).
#[no_mangle]
extern "C" fn hvmm_guest_trap(frame: *mut [u32; 14]) {
    let (hsr, hdfar, hifar, hpfar): (u32, u32, u32, u32);
    // SAFETY: reads the syndrome registers.
    unsafe {
        core::arch::asm!(
            "mrc p15, 4, {s}, c5, c2, 0", "mrc p15, 4, {d}, c6, c0, 0",
            "mrc p15, 4, {i}, c6, c0, 2", "mrc p15, 4, {h}, c6, c0, 4",
            s = out(reg) hsr, d = out(reg) hdfar, i = out(reg) hifar, h = out(reg) hpfar,
            options(nomem, nostack)
        )
    };
    // SAFETY: the vector passes the frame it pushed on this CPU's stack; it
    // lives until the vector pops it after this returns.
    let r = unsafe { &mut *frame };
    let mut x = [0u64; 31];
    for (d, s) in x.iter_mut().zip(r.iter().take(4)) {
        *d = u64::from(*s);
    }
    let far = if (hsr >> 26) == 0x20 { hifar } else { hdfar };
    crate::guest::sync_exception(&mut x, u64::from(hsr), u64::from(far), u64::from(hpfar));
    r[0] = x[0] as u32;
}
