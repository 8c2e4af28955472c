//! Running domain 0: entering it at EL1 (arm64) / in SVC mode (arm32) under
//! its stage-2 table,
//! and serving what it traps to EL2 — PSCI over HVC and SMC (one vCPU per
//! physical CPU), stage-2 aborts (logged with ESR, FAR, HPFAR and the IPA,
//! and answered with an abort injected into the guest, as Xen does), and
//! hvmm's test service 0xC600_0001 (write-protect one page of the guest's
//! RAM from another CPU: a live split of a 2 MiB block).
//!
//! Interrupts and the timer stay the guest's: HCR_EL2.IMO/FMO are clear, so
//! physical interrupts go straight to EL1; EL1 may use the physical timer and
//! counter (CNTHCTL_EL2), and the virtual offset is 0.

use crate::arch;
use crate::exit::{exit, EXIT_FAIL, EXIT_OK};
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use hvmm::{Env, Ipa, MapFlags, Op, S2Attrs};
use hvmm_boot::stress::SpinLock;
use hvmm_boot::Mm;

type Fmt = arch::Fmt;

/// The hypervisor's memory manager (with domain 0's stage 2 and pool),
/// shared by the CPUs once the guest runs.
static MM: SpinLock<Option<Mm<Fmt>>> = SpinLock::new(None);

/// Where the guest starts and what its vCPUs need.
static VTTBR: AtomicU64 = AtomicU64::new(0);
static VTCR: AtomicU64 = AtomicU64::new(0);
static WP_PAGE: AtomicU64 = AtomicU64::new(0);
static PROBE: AtomicU64 = AtomicU64::new(0);
/// Domain 0's RAM: base and end (IPA == PA).
static RAM: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
/// Stage-2 translation faults inside the guest's RAM that were retried (a
/// break-before-make window of a live change).
static RETRIED: AtomicU64 = AtomicU64::new(0);
static CPUS: AtomicU64 = AtomicU64::new(1);

/// Per physical CPU: what its vCPU is (off, starting, on), and the entry
/// point and context of a CPU_ON.
const VCPU_OFF: u8 = 0;
const VCPU_START: u8 = 1;
const VCPU_ON: u8 = 2;
/// Claimed by a CPU_ON whose entry point is not published yet.
const VCPU_CLAIMED: u8 = 3;
static VCPU: [AtomicU8; crate::MAX_CPUS] = [const { AtomicU8::new(VCPU_OFF) }; crate::MAX_CPUS];
static VCPU_ENTRY: [AtomicU64; crate::MAX_CPUS] = [const { AtomicU64::new(0) }; crate::MAX_CPUS];
static VCPU_CTX: [AtomicU64; crate::MAX_CPUS] = [const { AtomicU64::new(0) }; crate::MAX_CPUS];
/// A write-protect request for CPU 1 (the IPA, 0 when none).
static WP_REQUEST: AtomicU64 = AtomicU64::new(0);
/// Aborts injected into the guest.
static INJECTED: AtomicU64 = AtomicU64::new(0);
/// vCPUs started (CPU_ON) and stopped (CPU_OFF).
static VCPUS_ON: AtomicU64 = AtomicU64::new(0);
static VCPUS_OFF: AtomicU64 = AtomicU64::new(0);

const PSCI_VERSION: u64 = 0x8400_0000;
const PSCI_CPU_OFF: u64 = 0x8400_0002;
const PSCI_CPU_ON_32: u64 = 0x8400_0003;
const PSCI_CPU_ON_64: u64 = 0xc400_0003;
const PSCI_AFFINITY_INFO_64: u64 = 0xc400_0004;
const PSCI_SYSTEM_OFF: u64 = 0x8400_0008;
const PSCI_SYSTEM_RESET: u64 = 0x8400_0009;
const PSCI_FEATURES: u64 = 0x8400_000a;
const HVMM_WRITE_PROTECT: u64 = 0xc600_0001;
const NOT_SUPPORTED: u64 = -1i64 as u64;
const INVALID_PARAMETERS: u64 = -2i64 as u64;
const ALREADY_ON: u64 = -4i64 as u64;

/// Enters domain 0 on this CPU (CPU 0); never returns.
pub fn run(mm: Mm<Fmt>, cpus: usize) -> ! {
    let Some(d) = mm.dom0.as_ref() else {
        println!("hvmm: no domain 0 to run");
        exit(EXIT_FAIL)
    };
    let vttbr = d.p2m.vttbr();
    let vtcr = arch::guest_vtcr();
    let entry = d.entry;
    let dtb = d.dtb.ipa;
    WP_PAGE.store(d.wp.unwrap_or(0), Ordering::Relaxed);
    RAM[0].store(d.ram.ipa, Ordering::Relaxed);
    RAM[1].store(d.ram.ipa + d.ram.size, Ordering::Relaxed);
    PROBE.store(d.probe.unwrap_or(0), Ordering::Relaxed);
    VTTBR.store(vttbr, Ordering::Relaxed);
    VTCR.store(vtcr, Ordering::Relaxed);
    CPUS.store(cpus as u64, Ordering::Relaxed);
    println!(
        "hvmm: entering dom0 at IPA {entry:#x} ({}, MMU off), device tree {dtb:#x}; VTTBR {vttbr:#x}, VTCR {vtcr:#x}; {cpus} vCPU(s) possible",
        arch::GUEST_MODE
    );
    *MM.lock() = Some(mm);
    VCPU[0].store(VCPU_ON, Ordering::Release);
    RUNNING.store(1, Ordering::Release);
    arch::enter_guest(0, entry, arch::boot_regs(dtb), vttbr, vtcr)
}

/// Set once domain 0 runs.
static RUNNING: AtomicU8 = AtomicU8::new(0);

/// Whether parked CPU `cpu` may power off: a guest runs, its vCPU is off,
/// and it does not serve the test guest's write-protect requests (CPU 1).
pub fn may_power_off(cpu: usize) -> bool {
    RUNNING.load(Ordering::Acquire) != 0
        && VCPU
            .get(cpu)
            .is_some_and(|v| v.load(Ordering::Acquire) == VCPU_OFF)
        && !(cpu == 1 && WP_PAGE.load(Ordering::Relaxed) != 0)
}

/// A parked secondary CPU's work: start its vCPU when asked (never
/// returns then), or serve a write-protect request (CPU 1). Called in the
/// parking loop.
pub fn poll(cpu: usize) {
    if cpu == 1 {
        let ipa = WP_REQUEST.swap(0, Ordering::AcqRel);
        if ipa != 0 {
            write_protect(ipa, cpu);
        }
    }
    if VCPU
        .get(cpu)
        .is_some_and(|v| v.load(Ordering::Acquire) == VCPU_START)
    {
        VCPU[cpu].store(VCPU_ON, Ordering::Release);
        let entry = VCPU_ENTRY[cpu].load(Ordering::Acquire);
        let ctx = VCPU_CTX[cpu].load(Ordering::Acquire);
        arch::enter_guest(
            cpu,
            entry,
            [ctx, 0, 0, 0],
            VTTBR.load(Ordering::Relaxed),
            VTCR.load(Ordering::Relaxed),
        )
    }
}

/// The live split: the page becomes read-only inside its 2 MiB block.
fn write_protect(ipa: u64, cpu: usize) {
    let mut guard = MM.lock();
    let Some(mm) = guard.as_mut() else {
        return;
    };
    let Some(mut d) = mm.dom0.take() else {
        return;
    };
    let mut hw = arch::hw();
    let r = mm.with_access(&mut hw, |p, mut acc| {
        d.p2m.update(
            &mut Env::new(p, &mut acc, &mut d.pool),
            Ipa(ipa),
            1,
            Op::Modify {
                attrs: S2Attrs::RAM_RO,
            },
            MapFlags::PAGES,
        )
    });
    mm.dom0 = Some(d);
    drop(guard);
    match r {
        Ok(rep) => println!(
            "hvmm: CPU {cpu}: dom0 IPA {ipa:#x} made read-only while the guest runs: {} split(s), {} table(s) made, {} invalidation(s)",
            rep.splits, rep.tables_created, rep.tlb_invalidations
        ),
        Err(e) => println!("hvmm: CPU {cpu}: write-protecting dom0 IPA {ipa:#x} failed: {e}"),
    }
}

/// A synchronous exception from the guest: `x` holds its x0..x30, which the
/// vectors restore on return. `esr`, `far`, `hpfar` as trapped.
pub fn sync_exception(x: &mut [u64; 31], esr: u64, far: u64, hpfar: u64) {
    let cpu = crate::smp::this_cpu();
    let ec = (esr >> 26) & 0x3f;
    match ec {
        // HVC (ELR is past the instruction), SMC (trapped by HCR.TSC: ELR
        // is the instruction itself); AArch64 (0x16, 0x17) and AArch32
        // (0x12, 0x13).
        0x16 | 0x17 | 0x12 | 0x13 => {
            if ec == 0x17 || ec == 0x13 {
                arch::skip_guest_instruction();
            }
            x[0] = call(cpu, x[0], x[1], x[2], x[3]);
        }
        0x24 | 0x20 => data_or_instruction_abort(cpu, ec, esr, far, hpfar),
        _ => {
            println!(
                "hvmm: dom0 CPU {cpu}: unexpected trap EC {ec:#x} ({}), ESR {esr:#x}, ELR {:#x}",
                crate::exception::ec_name(ec as u32),
                arch::guest_elr()
            );
            exit(EXIT_FAIL)
        }
    }
}

/// PSCI (SMCCC) and hvmm's service.
fn call(cpu: usize, fid: u64, a1: u64, a2: u64, a3: u64) -> u64 {
    match fid {
        PSCI_VERSION => 0x0001_0000,
        PSCI_FEATURES => match a1 {
            PSCI_VERSION
            | PSCI_CPU_OFF
            | PSCI_CPU_ON_32
            | PSCI_CPU_ON_64
            | PSCI_SYSTEM_OFF
            | PSCI_SYSTEM_RESET
            | PSCI_FEATURES
            | PSCI_AFFINITY_INFO_64 => 0,
            _ => NOT_SUPPORTED,
        },
        PSCI_CPU_ON_32 | PSCI_CPU_ON_64 => cpu_on(a1, a2, a3),
        PSCI_AFFINITY_INFO_64 | 0x8400_0004 => match crate::smp::cpu_of_mpidr(a1) {
            Some(c) => match VCPU[c].load(Ordering::Acquire) {
                VCPU_OFF => 1,
                VCPU_START | VCPU_CLAIMED => 2,
                _ => 0,
            },
            None => INVALID_PARAMETERS,
        },
        PSCI_CPU_OFF => {
            // Counted, not printed: the guest's own output shares the UART.
            VCPUS_OFF.fetch_add(1, Ordering::Relaxed);
            VCPU[cpu].store(VCPU_OFF, Ordering::Release);
            crate::smp::park(cpu)
        }
        PSCI_SYSTEM_OFF => {
            println!(
                "hvmm: dom0 powered off (PSCI SYSTEM_OFF); {} abort(s) injected, {} break-window fault(s) retried, {} vCPU start(s), {} stop(s)",
                INJECTED.load(Ordering::Relaxed),
                RETRIED.load(Ordering::Relaxed),
                VCPUS_ON.load(Ordering::Relaxed),
                VCPUS_OFF.load(Ordering::Relaxed)
            );
            let sealed = crate::smp::sealed_writes();
            if sealed > 0 {
                println!(
                    "hvmm: {sealed} boot-table write(s) for CPUs restarted in Active, through per-CPU slots (the image's tables are read-only)"
                );
            }
            exit(EXIT_OK)
        }
        PSCI_SYSTEM_RESET => {
            println!("hvmm: dom0 asked for a reset (PSCI SYSTEM_RESET): its verdict is a failure");
            exit(EXIT_FAIL)
        }
        HVMM_WRITE_PROTECT => {
            let wp = WP_PAGE.load(Ordering::Relaxed);
            if wp == 0 || a1 != wp {
                return INVALID_PARAMETERS;
            }
            println!("hvmm: dom0 asks for IPA {a1:#x} to be write-protected from another CPU");
            if CPUS.load(Ordering::Relaxed) > 1 && VCPU[1].load(Ordering::Acquire) == VCPU_OFF {
                WP_REQUEST.store(a1, Ordering::Release);
                arch::send_event();
            } else {
                write_protect(a1, cpu);
            }
            0
        }
        _ => NOT_SUPPORTED,
    }
}

fn cpu_on(mpidr: u64, entry: u64, ctx: u64) -> u64 {
    let Some(target) = crate::smp::cpu_of_mpidr(mpidr) else {
        return INVALID_PARAMETERS;
    };
    if target >= CPUS.load(Ordering::Relaxed) as usize {
        return INVALID_PARAMETERS;
    }
    // Claim it first: a parked CPU polling for START must never see it
    // before the entry point and context are there.
    if VCPU[target]
        .compare_exchange(VCPU_OFF, VCPU_CLAIMED, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return ALREADY_ON;
    }
    VCPU_ENTRY[target].store(entry, Ordering::Release);
    VCPU_CTX[target].store(ctx, Ordering::Release);
    // The entry and context are published before the state says START.
    VCPU[target].store(VCPU_START, Ordering::Release);
    arch::send_event();
    VCPUS_ON.fetch_add(1, Ordering::Relaxed);
    // A CPU the hypervisor powered off comes back through the head.
    if let Err(e) = crate::smp::wake(target) {
        println!("hvmm: starting CPU {target} for dom0's vCPU failed: {e}");
        VCPU[target].store(VCPU_OFF, Ordering::Release);
        return INVALID_PARAMETERS;
    }
    0
}

/// A stage-2 abort. A translation fault inside the guest's RAM is the
/// break window of a live change on another CPU: wait for the change (the
/// lock) and let the guest retry. Anything else is logged and answered with
/// an abort injected into the guest — a permission fault for a write to a
/// write-protected page, a synchronous external abort for an address that
/// is not the guest's.
fn data_or_instruction_abort(cpu: usize, ec: u64, esr: u64, far: u64, hpfar: u64) {
    let ipa = ((hpfar >> 4) << 12) | (far & 0xfff);
    let dfsc = esr & 0x3f;
    let write = esr & (1 << 6) != 0;
    let in_ram = ipa >= RAM[0].load(Ordering::Relaxed) && ipa < RAM[1].load(Ordering::Relaxed);
    if dfsc & 0x3c == 0x04 && in_ram {
        drop(MM.lock());
        let n = RETRIED.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= 3 {
            println!(
                "hvmm: dom0 CPU {cpu}: stage-2 translation fault at IPA {ipa:#x} inside its RAM: a break window, retried"
            );
        }
        return;
    }
    let kind = match dfsc & 0x3c {
        0x04 => "translation fault",
        0x08 => "access flag fault",
        0x0c => "permission fault",
        0x00 => "address size fault",
        _ => "other",
    };
    println!(
        "hvmm: dom0 CPU {cpu}: stage-2 {} ({kind}, level {}): ESR {esr:#x}, FAR {far:#x}, HPFAR {hpfar:#x}, IPA {ipa:#x}",
        if ec == 0x24 { "data abort" } else { "instruction abort" },
        dfsc & 3
    );
    let wp = WP_PAGE.load(Ordering::Relaxed);
    let status = if dfsc & 0x3c == 0x0c && write && wp != 0 && ipa & !0xfff == wp {
        println!("hvmm: dom0 wrote its write-protected page: permission fault injected");
        0x0f // permission fault, level 3
    } else {
        println!("hvmm: IPA {ipa:#x} is not dom0's: synchronous external abort injected");
        0x10 // synchronous external abort
    };
    INJECTED.fetch_add(1, Ordering::Relaxed);
    arch::inject_abort(ec == 0x20, write, status, far);
}
