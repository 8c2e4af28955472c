//! Secondary CPUs: PSCI CPU_ON into the head's secondary entry, which turns
//! the MMU on with the boot tables (through the identity map, reinstalled
//! for the occasion), then `start_secondary` reports and parks.

use crate::arch;
use crate::fdt::FdtInfo;
use crate::layout;
use core::sync::atomic::{AtomicUsize, Ordering};
use hvmm::{Arch, Vaddr};

static CPUS_UP: AtomicUsize = AtomicUsize::new(1);

/// How long the boot CPU waits for the others.
const WAIT_MS: u64 = 2000;

/// This CPU's index ([`hvmm::Arch::cpu`]).
pub fn this_cpu() -> usize {
    arch::hw().cpu()
}

fn read_word(va: Vaddr) -> u64 {
    // SAFETY: `va` is one of the head's records in the image's page-table
    // area (mapped RW); a plain read of a u64 (usize-sized halves on arm32
    // are written as one u64 by the head).
    unsafe { core::ptr::read_volatile(va.0 as usize as *const u64) }
}

/// Starts every CPU of the FDT other than this one; returns how many CPUs
/// are up (this one included).
pub fn start_secondaries(info: &FdtInfo) -> usize {
    let me = arch::mpidr();
    let n_cpus = info.n_cpus.min(crate::MAX_CPUS);
    if info.n_cpus > crate::MAX_CPUS {
        println!(
            "hvmm: {} CPUs in the DTB, starting {}",
            info.n_cpus,
            crate::MAX_CPUS
        );
    }
    if n_cpus <= 1 {
        return 1;
    }
    let mut hw = arch::hw();
    let entry = match hw.translate(layout::secondary_entry_va(), false) {
        Ok(r) => r.pa,
        Err(e) => {
            println!("hvmm: cannot translate the secondary entry: {e}");
            crate::exit::exit(crate::exit::EXIT_SMP)
        }
    };

    // The secondaries turn their MMU on through the identity map: put the
    // head's identity entry back while they boot.
    let slot = Vaddr(read_word(layout::idmap_slot()));
    let val = read_word(layout::idmap_val());
    if slot.0 != 0 {
        let cur = hw.read_pte(slot).unwrap_or(0);
        if cur != 0 && cur != val {
            println!("hvmm: cannot start secondary CPUs: the identity-map entry at {slot} is now in use ({cur:#x})");
            crate::exit::exit(crate::exit::EXIT_SMP)
        }
        let _ = hw.write_pte(slot, val);
        hw.isb();
    }

    let mut expected = 1;
    let mut index = 1;
    for mpidr in info.cpus.iter().take(n_cpus).flatten() {
        if *mpidr == me {
            continue;
        }
        let rc = arch::psci_cpu_on(*mpidr, entry.0, index as u64);
        if rc == arch::PSCI_SUCCESS {
            expected += 1;
        } else {
            println!("hvmm: PSCI CPU_ON of MPIDR {mpidr:#x} failed: {rc}");
        }
        index += 1;
    }

    let (t0, freq) = arch::counter();
    let limit = freq.saturating_mul(WAIT_MS) / 1000;
    while CPUS_UP.load(Ordering::Acquire) < expected {
        let (t, _) = arch::counter();
        if t.wrapping_sub(t0) > limit {
            break;
        }
        core::hint::spin_loop();
    }

    if slot.0 != 0 {
        let _ = hw.write_pte(slot, 0);
        hw.tlb_flush_all();
        hw.tlb_sync();
    }
    let up = CPUS_UP.load(Ordering::Acquire);
    if up < n_cpus {
        println!("hvmm: only {up} of {n_cpus} CPUs came up");
        crate::exit::exit(crate::exit::EXIT_SMP)
    }
    up
}

/// A secondary CPU, MMU on, on its own stack.
pub fn secondary_main(cpu: usize) -> ! {
    println!("hvmm: CPU {} up (MPIDR {:#x})", cpu, arch::mpidr());
    CPUS_UP.fetch_add(1, Ordering::AcqRel);
    loop {
        arch::wait_for_event();
    }
}
