//! The exception report: kind, syndrome decoded (EC, and for aborts the
//! fault status), fault address and return address; then exit with
//! [`crate::exit::EXIT_EXCEPTION`].

use crate::console;
use crate::exit;
use hvmm::FaultKind;
use hvmm_arch::par::decode_fsc;

/// What the vectors saw.
pub struct Report {
    /// The vector taken.
    pub kind: &'static str,
    /// The CPU index.
    pub cpu: usize,
    /// `ESR_EL2` / `HSR`.
    pub syndrome_reg: &'static str,
    /// Its value.
    pub syndrome: u32,
    /// `FAR_EL2` / `HDFAR` / `HIFAR`.
    pub far_reg: &'static str,
    /// Its value.
    pub far: u64,
    /// `ELR_EL2` / `ELR_hyp`.
    pub elr_reg: &'static str,
    /// Its value.
    pub elr: u64,
    /// `SPSR_EL2` / `SPSR_hyp`.
    pub spsr: u64,
}

/// The exception class names (ESR_EL2.EC / HSR.EC share the encoding).
pub fn ec_name(ec: u32) -> &'static str {
    match ec {
        0x00 => "unknown reason",
        0x01 => "WFI/WFE",
        0x03 => "MCR/MRC (cp15) trap",
        0x07 => "FP/SIMD access",
        0x0e => "illegal execution state",
        0x11 => "SVC (AArch32)",
        0x12 => "HVC (AArch32)",
        0x13 => "SMC (AArch32)",
        0x15 => "SVC (AArch64)",
        0x16 => "HVC (AArch64)",
        0x17 => "SMC (AArch64)",
        0x18 => "MSR/MRS trap",
        0x20 => "Instruction Abort from a lower level",
        0x21 => "Instruction Abort from the same level",
        0x22 => "PC alignment fault",
        0x24 => "Data Abort from a lower level",
        0x25 => "Data Abort from the same level",
        0x26 => "SP alignment fault",
        0x2f => "SError",
        0x3c => "BRK",
        _ => "other",
    }
}

/// A fault kind as the report names it.
pub fn fault_name(k: FaultKind) -> &'static str {
    match k {
        FaultKind::Translation => "translation fault",
        FaultKind::AccessFlag => "access flag fault",
        FaultKind::Permission => "permission fault",
        FaultKind::AddressSize => "address size fault",
        FaultKind::External => "synchronous external abort",
    }
}

/// The system state the shared boot sequence last entered (0: before it
/// started, else `SystemState as u8 + 1`).
static STATE: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);

/// Records the state for exception reports.
pub fn set_state(s: hvmm::SystemState) {
    STATE.store(s as u8 + 1, core::sync::atomic::Ordering::Relaxed);
}

fn state_name() -> &'static str {
    match STATE.load(core::sync::atomic::Ordering::Relaxed) {
        0 => "before the boot sequence (image checks)",
        1 => "EarlyBoot",
        2 => "Boot",
        3 => "SmpBoot",
        _ => "Active",
    }
}

/// Prints the report and exits.
pub fn report(r: &Report) -> ! {
    console::force_unlock();
    let ec = r.syndrome >> 26;
    let il = (r.syndrome >> 25) & 1;
    let iss = r.syndrome & 0x01ff_ffff;
    println!("hvmm: EXCEPTION on CPU {}: {}", r.cpu, r.kind);
    println!("hvmm:   phase: {}", state_name());
    println!(
        "hvmm:   {}={:#010x}: EC={:#04x} ({}), IL={}, ISS={:#09x}",
        r.syndrome_reg,
        r.syndrome,
        ec,
        ec_name(ec),
        il,
        iss
    );
    if matches!(ec, 0x20 | 0x21 | 0x24 | 0x25) {
        let fsc = iss & 0x3f;
        let access = if ec >= 0x24 {
            if iss & (1 << 6) != 0 {
                "write"
            } else {
                "read"
            }
        } else {
            "instruction fetch"
        };
        match decode_fsc(fsc) {
            Some((kind, level)) => {
                println!(
                    "hvmm:   {} (FSC {:#04x}) at level {}, on a {}",
                    fault_name(kind),
                    fsc,
                    level,
                    access
                )
            }
            None => println!("hvmm:   fault status code {fsc:#04x}, on a {access}"),
        }
    }
    println!(
        "hvmm:   {}={:#x} {}={:#x} SPSR={:#x}",
        r.far_reg, r.far, r.elr_reg, r.elr, r.spsr
    );
    if matches!(ec, 0x24 | 0x25) {
        if let Some(cpu) = guard_of(r.far) {
            println!(
                "hvmm:   stack overflow: {}={:#x} is in CPU {cpu}'s stack guard page",
                r.far_reg, r.far
            );
        }
    }
    exit::exit(exit::EXIT_EXCEPTION)
}

/// The CPU whose stack guard page holds `va`, if any (the page below each
/// stack slot's usable part, which the runtime tables leave unmapped).
fn guard_of(va: u64) -> Option<usize> {
    let first = crate::layout::boot_stacks_va().0;
    let off = va.checked_sub(first)?;
    let cpu = (off / crate::STACK_SIZE as u64) as usize;
    (cpu < crate::MAX_CPUS && off % (crate::STACK_SIZE as u64) < crate::STACK_GUARD as u64)
        .then_some(cpu)
}
