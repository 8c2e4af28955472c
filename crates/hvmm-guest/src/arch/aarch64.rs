//! arm64 at EL1.

use super::Fault;
use core::arch::{asm, global_asm};

global_asm!(
    include_str!("aarch64_head.S"),
    CPACR_FPEN = const CPACR_FPEN,
    MAIR = const MAIR,
    TCR = const TCR,
    SCTLR = const SCTLR,
    STACK_SIZE = const crate::STACK_SIZE,
    MAX_CPUS = const crate::MAX_CPUS,
    POOL_PAGES = const crate::mm::POOL_PAGES,
);

/// The name in the banner.
pub const NAME: &str = "arm64";
/// Where the image is linked: L0 slot 511 of the 48-bit TTBR0 range, an
/// address no guest RAM or device of a QEMU `virt`-like board uses.
pub const LINK_VA: usize = 0xff80_0000_0000;
/// First VA the identity map cannot use (the image's and the windows' slot).
pub const VA_LIMIT: u64 = 0xff80_0000_0000;
/// The first level of a walk (L0, 512 entries).
pub const START_LEVEL: usize = 0;
/// PSCI CPU_ON as an AArch64 caller makes it (SMC64).
pub const PSCI_CPU_ON: u32 = 0xc400_0003;

/// CPACR_EL1.FPEN = 0b11: FP/SIMD does not trap.
const CPACR_FPEN: u64 = 0x30_0000;
/// MAIR_EL1: 0 Device-nGnRnE, 1 Normal write-back, 2 Device-nGnRE.
const MAIR: u64 = 0x04_ff00;
/// TCR_EL1 without IPS: T0SZ 16, walks inner/outer WB WA inner shareable,
/// 4 KiB granule, EPD1 (no TTBR1 walks). The head adds IPS.
const TCR: u64 = 16 | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 23);
/// SCTLR_EL1: the RES1 bits of ARMv8.0, M, C, I (A off: unaligned Normal
/// accesses are fine).
const SCTLR: u64 = 0x30d0_0800 | 1 | (1 << 2) | (1 << 12);

/// The exception level and stack, for the banner.
pub fn mode() -> &'static str {
    let el: u64;
    // SAFETY: reading CurrentEL has no side effect.
    unsafe { asm!("mrs {}, CurrentEL", out(reg) el, options(nomem, nostack, preserves_flags)) };
    match (el >> 2) & 3 {
        1 => "EL1",
        2 => "EL2",
        _ => "EL?",
    }
}

/// Whether the CPU implements EL2 (ID_AA64PFR0_EL1.EL2): without it there
/// is certainly no stage 2 above this guest.
pub fn el2_implemented() -> bool {
    let v: u64;
    // SAFETY: reading an ID register has no side effect.
    unsafe {
        asm!("mrs {}, id_aa64pfr0_el1", out(reg) v, options(nomem, nostack, preserves_flags))
    };
    (v >> 8) & 0xf != 0
}

/// This CPU's MPIDR affinity fields.
pub fn mpidr() -> u64 {
    let v: u64;
    // SAFETY: reading MPIDR_EL1 has no side effect.
    unsafe { asm!("mrs {}, mpidr_el1", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v & 0xff_00ff_ffff
}

/// The virtual counter and its frequency (Hz).
pub fn counter() -> (u64, u64) {
    let (c, f): (u64, u64);
    // SAFETY: reading the generic timer's counter and frequency has no side
    // effect; EL1 may read them.
    unsafe {
        asm!("isb", "mrs {}, cntvct_el0", "mrs {}, cntfrq_el0", out(reg) c, out(reg) f,
             options(nomem, nostack, preserves_flags))
    };
    (c, f)
}

/// An SMCCC call through `HVC #0`: function id and three arguments; x0 back.
pub fn hvc(fid: u32, a1: u64, a2: u64, a3: u64) -> u64 {
    let mut x0 = u64::from(fid);
    // SAFETY: SMCCC calls clobber at most x0-x17 (declared); the services
    // used (PSCI, hvmm's write-protect) do not write our memory except
    // through the stage-2 permission change the caller asked for.
    unsafe {
        asm!("hvc #0",
             inout("x0") x0, inout("x1") a1 => _, inout("x2") a2 => _, inout("x3") a3 => _,
             out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _,
             out("x10") _, out("x11") _, out("x12") _, out("x13") _, out("x14") _,
             out("x15") _, out("x16") _, out("x17") _, options(nostack))
    };
    x0
}

/// Writes one descriptor (a single 64-bit store).
///
/// # Safety
/// `entry` is a descriptor slot of a table page of this image's tables.
pub unsafe fn write_desc(entry: *mut u64, value: u64) {
    // SAFETY: the caller guarantees the slot; an aligned 64-bit store is
    // single-copy atomic for the table walker.
    unsafe { core::ptr::write_volatile(entry, value) };
}

/// Makes new descriptors visible to the walker (invalid-to-valid changes
/// need no TLB maintenance).
pub fn publish_tables() {
    // SAFETY: barriers only.
    unsafe { asm!("dsb ishst", "isb", options(nostack, preserves_flags)) };
}

/// Invalidates every EL1 TLB entry of this VMID, on every CPU.
pub fn tlb_flush_all() {
    // SAFETY: TLB maintenance and barriers only.
    unsafe {
        asm!(
            "dsb ishst",
            "tlbi vmalle1is",
            "dsb ish",
            "isb",
            options(nostack, preserves_flags)
        )
    };
}

/// Invalidates the TLB entries of one VA, on every CPU.
pub fn tlb_flush_va(va: usize) {
    // SAFETY: TLB maintenance and barriers only.
    unsafe {
        asm!("dsb ishst", "tlbi vaae1is, {}", "dsb ish", "isb", in(reg) (va >> 12) as u64,
             options(nostack, preserves_flags))
    };
}

/// One 32-bit load by one `ldr` (a fault on it is skipped by the vectors:
/// the result is then 0).
pub fn probe_load32(va: usize) -> u32 {
    let v: u32;
    // SAFETY: a single load; the caller armed the expected-fault handler
    // (`fault::expect`) or knows the address is mapped. A faulting `ldr` is
    // skipped and leaves the register at 0.
    unsafe {
        asm!("mov {v:w}, #0", "ldr {v:w}, [{a}]", a = in(reg) va, v = out(reg) v, options(nostack))
    };
    v
}

/// One 16-bit load by one `ldrh` (any alignment; see [`probe_load32`]).
pub fn probe_load16(va: usize) -> u16 {
    let v: u32;
    // SAFETY: as for `probe_load32`.
    unsafe {
        asm!("mov {v:w}, #0", "ldrh {v:w}, [{a}]", a = in(reg) va, v = out(reg) v, options(nostack))
    };
    v as u16
}

/// One 32-bit store by one `str` (a fault on it is skipped by the vectors).
pub fn probe_store32(va: usize, value: u32) {
    // SAFETY: a single store to a page of the guest's own RAM that the
    // caller owns; if the hypervisor write-protected it, the vectors skip
    // the faulting `str`.
    unsafe { asm!("str {v:w}, [{a}]", a = in(reg) va, v = in(reg) value, options(nostack)) };
}

/// Waits for an event.
pub fn wait_for_event() {
    // SAFETY: WFE only pauses this CPU.
    unsafe { asm!("wfe", options(nomem, nostack, preserves_flags)) };
}

const KINDS: [&str; 16] = [
    "synchronous, EL1t",
    "IRQ, EL1t",
    "FIQ, EL1t",
    "SError, EL1t",
    "synchronous, EL1h",
    "IRQ, EL1h",
    "FIQ, EL1h",
    "SError, EL1h",
    "synchronous, lower EL (AArch64)",
    "IRQ, lower EL (AArch64)",
    "FIQ, lower EL (AArch64)",
    "SError, lower EL (AArch64)",
    "synchronous, lower EL (AArch32)",
    "IRQ, lower EL (AArch32)",
    "FIQ, lower EL (AArch32)",
    "SError, lower EL (AArch32)",
];

/// Exception class: data abort taken without a change of exception level.
const EC_DABT_CUR: u64 = 0x25;

/// Decodes the exception the vectors are handling. `frame` is the saved
/// register block (x0-x30, ELR, SPSR).
pub fn decode(kind: usize, frame: &[u64; 34]) -> Fault {
    let (esr, far): (u64, u64);
    // SAFETY: reading the syndrome and fault address registers has no side
    // effect.
    unsafe {
        asm!("mrs {}, esr_el1", "mrs {}, far_el1", out(reg) esr, out(reg) far,
             options(nomem, nostack, preserves_flags))
    };
    let data_abort = kind == 4 && (esr >> 26) & 0x3f == EC_DABT_CUR;
    Fault {
        syndrome: esr,
        far: far as usize,
        pc: frame[31] as usize,
        data_abort,
        status: (esr & 0x3f) as u32,
        write: esr & (1 << 6) != 0,
        kind: KINDS.get(kind).copied().unwrap_or("unknown vector"),
    }
}

/// The saved register block of the vectors.
pub type Frame = [u64; 34];
