//! arm32 (ARMv7-A with LPAE) in SVC mode.

use super::Fault;
use core::arch::{asm, global_asm};

global_asm!(
    include_str!("arm32_head.S"),
    MAIR0 = const MAIR0,
    TTBCR = const TTBCR,
    SCTLR_SET = const SCTLR_SET,
    SCTLR_CLEAR = const SCTLR_CLEAR,
    STACK_SIZE = const crate::STACK_SIZE,
    EXC_STACK = const EXC_STACK,
    MAX_CPUS = const crate::MAX_CPUS,
    POOL_PAGES = const crate::mm::POOL_PAGES,
);

/// The name in the banner.
pub const NAME: &str = "arm32";
/// Where the image is linked (L1 slot 3, L2 slot 384).
pub const LINK_VA: usize = 0xf000_0000;
/// First VA the identity map cannot use: the image's and the windows' slot
/// (above it, 32-bit VAs end soon anyway).
pub const VA_LIMIT: u64 = 0xf000_0000;
/// The first level of a walk (L1, 4 entries with T0SZ = 0).
pub const START_LEVEL: usize = 1;
/// PSCI CPU_ON as an AArch32 caller makes it (SMC32).
pub const PSCI_CPU_ON: u32 = 0x8400_0003;

/// MAIR0: 0 Device-nGnRnE, 1 Normal write-back, 2 Device-nGnRE.
const MAIR0: u32 = 0x04_ff00;
/// TTBCR: EAE (long descriptors), T0SZ 0, walks inner/outer WB WA inner
/// shareable, EPD1 (no TTBR1 walks).
const TTBCR: u32 = (1 << 31) | (1 << 23) | (3 << 12) | (1 << 10) | (1 << 8);
/// SCTLR bits set: M, C, I.
const SCTLR_SET: u32 = 1 | (1 << 2) | (1 << 12);
/// SCTLR bits cleared: A (unaligned Normal accesses are fine), V (vectors
/// at VBAR), TE (exceptions in ARM state).
const SCTLR_CLEAR: u32 = (1 << 1) | (1 << 13) | (1 << 30);
/// Bytes of each CPU's stack area used by the abort and undefined modes.
const EXC_STACK: usize = 0x1000;

fn cpsr() -> u32 {
    let v: u32;
    // SAFETY: reading CPSR has no side effect.
    unsafe { asm!("mrs {}, cpsr", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// The processor mode, for the banner.
pub fn mode() -> &'static str {
    match cpsr() & 0x1f {
        0x13 => "SVC",
        0x1a => "HYP",
        _ => "other mode",
    }
}

/// Whether the CPU implements the Virtualization Extensions (ID_PFR1
/// bits 15:12): without them there is certainly no stage 2 above this guest.
pub fn el2_implemented() -> bool {
    let v: u32;
    // SAFETY: reading an ID register has no side effect.
    unsafe {
        asm!("mrc p15, 0, {}, c0, c1, 1", out(reg) v, options(nomem, nostack, preserves_flags))
    };
    (v >> 12) & 0xf != 0
}

/// This CPU's MPIDR affinity fields.
pub fn mpidr() -> u64 {
    let v: u32;
    // SAFETY: reading MPIDR has no side effect.
    unsafe {
        asm!("mrc p15, 0, {}, c0, c0, 5", out(reg) v, options(nomem, nostack, preserves_flags))
    };
    u64::from(v & 0x00ff_ffff)
}

/// The virtual counter and its frequency (Hz).
pub fn counter() -> (u64, u64) {
    let (lo, hi, f): (u32, u32, u32);
    // SAFETY: reading the generic timer's counter and frequency has no side
    // effect; PL1 may read them.
    unsafe {
        asm!("isb", "mrrc p15, 1, {}, {}, c14", "mrc p15, 0, {}, c14, c0, 0",
             out(reg) lo, out(reg) hi, out(reg) f, options(nomem, nostack, preserves_flags))
    };
    ((u64::from(hi) << 32) | u64::from(lo), u64::from(f))
}

/// An SMCCC call through `HVC #0` (encoded directly: the assembler wants the
/// virtualization extension for the mnemonic): function id and three
/// arguments; r0 back.
pub fn hvc(fid: u32, a1: u64, a2: u64, a3: u64) -> u64 {
    let mut r0 = fid;
    // SAFETY: SMCCC calls clobber at most r0-r3 and r12 (declared); the
    // services used (PSCI, hvmm's write-protect) do not write our memory
    // except through the stage-2 permission change the caller asked for.
    unsafe {
        asm!(".inst 0xe1400070", // hvc #0
             inout("r0") r0, inout("r1") a1 as u32 => _, inout("r2") a2 as u32 => _,
             inout("r3") a3 as u32 => _, out("r12") _, options(nostack))
    };
    u64::from(r0)
}

/// Writes one descriptor with one `strd` (single-copy atomic with LPAE).
///
/// # Safety
/// `entry` is an 8-byte aligned descriptor slot of this image's tables.
pub unsafe fn write_desc(entry: *mut u64, value: u64) {
    // SAFETY: the caller guarantees the slot.
    unsafe {
        asm!("strd r2, r3, [{e}]", e = in(reg) entry, in("r2") value as u32,
             in("r3") (value >> 32) as u32, options(nostack, preserves_flags))
    };
}

/// Makes new descriptors visible to the walker (invalid-to-valid changes
/// need no TLB maintenance).
pub fn publish_tables() {
    // SAFETY: barriers only.
    unsafe { asm!("dsb ishst", "isb", options(nostack, preserves_flags)) };
}

/// Invalidates every TLB entry, on every CPU (TLBIALLIS).
pub fn tlb_flush_all() {
    // SAFETY: TLB maintenance and barriers only.
    unsafe {
        asm!("dsb ishst", "mcr p15, 0, {}, c8, c3, 0", "dsb ish", "isb", in(reg) 0u32,
             options(nostack, preserves_flags))
    };
}

/// Invalidates the TLB entries of one VA, any ASID, on every CPU
/// (TLBIMVAAIS).
pub fn tlb_flush_va(va: usize) {
    // SAFETY: TLB maintenance and barriers only.
    unsafe {
        asm!("dsb ishst", "mcr p15, 0, {}, c8, c3, 3", "dsb ish", "isb", in(reg) va & !0xfff,
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
        asm!("mov {v}, #0", "ldr {v}, [{a}]", a = in(reg) va, v = out(reg) v, options(nostack))
    };
    v
}

/// One 16-bit load by one `ldrh` (any alignment; see [`probe_load32`]).
pub fn probe_load16(va: usize) -> u16 {
    let v: u32;
    // SAFETY: as for `probe_load32`.
    unsafe {
        asm!("mov {v}, #0", "ldrh {v}, [{a}]", a = in(reg) va, v = out(reg) v, options(nostack))
    };
    v as u16
}

/// One 32-bit store by one `str` (a fault on it is skipped by the vectors).
pub fn probe_store32(va: usize, value: u32) {
    // SAFETY: a single store to a page of the guest's own RAM that the
    // caller owns; if the hypervisor write-protected it, the vectors skip
    // the faulting `str`.
    unsafe { asm!("str {v}, [{a}]", a = in(reg) va, v = in(reg) value, options(nostack)) };
}

/// Waits for an event.
pub fn wait_for_event() {
    // SAFETY: WFE only pauses this CPU.
    unsafe { asm!("wfe", options(nomem, nostack, preserves_flags)) };
}

const KINDS: [&str; 8] = [
    "reset",
    "undefined instruction",
    "supervisor call",
    "prefetch abort",
    "data abort",
    "unused vector",
    "IRQ",
    "FIQ",
];

/// Decodes the exception the vectors are handling. `frame` is the saved
/// register block (r0-r12, the address of the instruction).
pub fn decode(kind: usize, frame: &Frame) -> Fault {
    let (fsr, far): (u32, u32);
    if kind == 3 {
        // SAFETY: reading IFSR / IFAR has no side effect.
        unsafe {
            asm!("mrc p15, 0, {}, c5, c0, 1", "mrc p15, 0, {}, c6, c0, 2", out(reg) fsr,
                 out(reg) far, options(nomem, nostack, preserves_flags))
        };
    } else {
        // SAFETY: reading DFSR / DFAR has no side effect.
        unsafe {
            asm!("mrc p15, 0, {}, c5, c0, 0", "mrc p15, 0, {}, c6, c0, 0", out(reg) fsr,
                 out(reg) far, options(nomem, nostack, preserves_flags))
        };
    }
    Fault {
        syndrome: u64::from(fsr),
        far: far as usize,
        pc: frame[13] as usize,
        data_abort: kind == 4,
        status: status(fsr),
        write: fsr & (1 << 11) != 0,
        kind: KINDS.get(kind).copied().unwrap_or("unknown vector"),
    }
}

/// The fault status in the long-descriptor encoding. With TTBCR.EAE = 1 the
/// CPU reports that format (bit 9 set, STATUS in bits 5:0); a short-format
/// value (what a hypervisor might inject by mistake) is translated.
fn status(fsr: u32) -> u32 {
    if fsr & (1 << 9) != 0 {
        return fsr & 0x3f;
    }
    match ((fsr >> 6) & 0x10) | (fsr & 0xf) {
        0b00101 => 0x05, // translation, section
        0b00111 => 0x07, // translation, page
        0b01101 => 0x0d, // permission, section
        0b01111 => 0x0f, // permission, page
        0b01000 => 0x10, // synchronous external abort
        0b00001 => 0x21, // alignment
        _ => 0x3f,
    }
}

/// The saved register block of the vectors.
pub type Frame = [u32; 14];
