//! Secondary CPUs: PSCI CPU_ON into the head's secondary entry, which turns
//! the MMU on with the boot tables (through the identity map, reinstalled
//! for the occasion) and, at the link address, removes the identity entry
//! and invalidates its TLB; then `start_secondary` switches to the runtime
//! root, reports and parks.

use crate::arch;
use crate::layout;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use hvmm::{Arch, CpuOps, Vaddr};

/// How long the boot CPU waits for the others.
const WAIT_MS: u64 = 2000;

/// Once the boot made the image's tables read-only: how a boot-table entry
/// is written. [`UNSEALED`]: at its link address; [`SEALED_MAPCACHE`]
/// (arm64): through the running CPU's mapcache slots at [`SEALED_BASE`];
/// [`SEALED_DOMAIN_PAGE`] (arm32): through its domain-page slots over the
/// domheap area at [`SEALED_BASE`].
static SEALED: AtomicU8 = AtomicU8::new(UNSEALED);
const UNSEALED: u8 = 0;
const SEALED_MAPCACHE: u8 = 1;
const SEALED_DOMAIN_PAGE: u8 = 2;
/// The slots' VA (the same in every CPU's root, each CPU's own slots).
static SEALED_BASE: AtomicU64 = AtomicU64::new(0);
/// Boot-table entries written through a slot (CPUs started once the
/// image's tables were read-only).
static SEALED_WRITES: AtomicU64 = AtomicU64::new(0);

/// How many boot-table entries were written through a slot.
pub fn sealed_writes() -> u64 {
    SEALED_WRITES.load(Ordering::Relaxed)
}

/// The image's tables are read-only from now on (arm64): entries of the
/// boot tables are written through the running CPU's mapcache slots at
/// `base`.
pub fn tables_sealed(base: Vaddr) {
    SEALED_BASE.store(base.0, Ordering::Relaxed);
    SEALED.store(SEALED_MAPCACHE, Ordering::Release);
}

/// The image's tables are read-only from now on (arm32): entries of the
/// boot tables are written through the running CPU's domain-page slots
/// over the domheap area at `base` (reached through its window).
pub fn tables_sealed_domain_page(base: Vaddr) {
    SEALED_BASE.store(base.0, Ordering::Relaxed);
    SEALED.store(SEALED_DOMAIN_PAGE, Ordering::Release);
}

/// Writes the boot-table entry at `slot` (its link VA): directly, or
/// through one of this CPU's slots once the image's tables are read-only.
fn write_boot_entry(hw: &mut arch::Cpu, slot: Vaddr, val: u64) -> Result<(), &'static str> {
    let kind = SEALED.load(Ordering::Acquire);
    if kind == UNSEALED {
        return hw
            .write_pte(slot, val)
            .map_err(|_| "writing the boot tables faulted");
    }
    let base = Vaddr(SEALED_BASE.load(Ordering::Relaxed));
    let pa = hw
        .hw_translate(slot, false)
        .map_err(|_| "the boot tables do not translate")?
        .pa;
    let r = if kind == SEALED_MAPCACHE {
        let mc = hvmm_xen::phase::MapCache::new(base);
        let va = mc
            .map(hw, pa.mfn())
            .map_err(|_| "no mapcache slot for the boot tables")?;
        let r = hw.write_pte(Vaddr(va.0 + pa.page_offset()), val);
        mc.unmap(hw, va);
        r
    } else {
        let dp = hvmm_xen::phase::DomainPage::window(base);
        let va = dp
            .map(hw, pa.mfn())
            .map_err(|_| "no domain-page slot for the boot tables")?;
        let r = hw.write_pte(Vaddr(va.0 + pa.page_offset()), val);
        dp.unmap(hw, va);
        r
    };
    SEALED_WRITES.fetch_add(1, Ordering::Relaxed);
    r.map_err(|_| "writing the boot tables through a slot faulted")
}

/// This CPU's index ([`hvmm::CpuOps::cpu`]).
pub fn this_cpu() -> usize {
    arch::hw().cpu()
}

fn read_word(va: Vaddr) -> u64 {
    // SAFETY: `va` is one of the head's records in the image's page-table
    // area (mapped RW); a plain read of a u64 (usize-sized halves on arm32
    // are written as one u64 by the head).
    unsafe { core::ptr::read_volatile(va.0 as usize as *const u64) }
}

/// Held while the boot tables' identity entry is live for a starting CPU:
/// two CPUs starting two others at once (a guest's vCPUs calling CPU_ON)
/// would otherwise see one remove the entry the other still needs.
static IDMAP_BUSY: AtomicBool = AtomicBool::new(false);

/// The root each secondary CPU switches to once its MMU is on (0: stay on
/// the boot tables).
static SECONDARY_ROOT: [AtomicU64; crate::MAX_CPUS] =
    [const { AtomicU64::new(0) }; crate::MAX_CPUS];
/// Counts each secondary CPU's arrivals on its root: a CPU that comes up,
/// runs a guest's vCPU and powers off again before its starter looked still
/// counted one more (a flag would have read "not up").
static UP: [AtomicU64; crate::MAX_CPUS] = [const { AtomicU64::new(0) }; crate::MAX_CPUS];
/// Each CPU's MPIDR affinity (+1; 0: no such CPU): a guest's vCPU n runs on
/// CPU n and has its MPIDR.
static MPIDR: [AtomicU64; crate::MAX_CPUS] = [const { AtomicU64::new(0) }; crate::MAX_CPUS];

/// The CPU index whose MPIDR affinity is `mpidr`.
pub fn cpu_of_mpidr(mpidr: u64) -> Option<usize> {
    let me = arch::mpidr();
    MPIDR[0].store(me + 1, Ordering::Relaxed);
    let want = mpidr & hvmm_arch::regs::MPIDR_AFF_MASK;
    MPIDR
        .iter()
        .position(|m| m.load(Ordering::Acquire) == want + 1)
}

/// Each CPU's power state while a guest runs: running, deciding to power
/// off (it re-checks for work after saying so), or off (PSCI CPU_OFF).
const PHYS_RUNNING: u8 = 0;
const PHYS_GOING_OFF: u8 = 1;
const PHYS_OFF: u8 = 2;
static PHYS: [AtomicU8; crate::MAX_CPUS] = [const { AtomicU8::new(PHYS_RUNNING) }; crate::MAX_CPUS];

/// Parks this CPU in the hypervisor: serves what the running guest asks of
/// it (a vCPU start, a write-protect request) and, when it has nothing left
/// to do for the guest, powers off (PSCI CPU_OFF): a spinning CPU would take
/// host time from the guest's CPUs on an emulator.
pub fn park(cpu: usize) -> ! {
    loop {
        {
            crate::guest::poll(cpu);
            if cpu != 0 && cpu < crate::MAX_CPUS && crate::guest::may_power_off(cpu) {
                // Say so first, then look again: a waker that saw us
                // running knows we will see its work (see `wake`).
                PHYS[cpu].store(PHYS_GOING_OFF, Ordering::SeqCst);
                if crate::guest::may_power_off(cpu) {
                    PHYS[cpu].store(PHYS_OFF, Ordering::SeqCst);
                    arch::psci_cpu_off();
                }
                PHYS[cpu].store(PHYS_RUNNING, Ordering::SeqCst);
            }
        }
        arch::wait_for_event();
    }
}

/// Brings CPU `cpu` back if this hypervisor powered it off (it comes up
/// through the head and [`secondary_main`], then parks); `Ok` when it runs.
/// Call it after publishing the work (SeqCst): a CPU still running will see
/// it; one that powered off is waited for until PSCI says it is off, then
/// started.
pub fn wake(cpu: usize) -> Result<(), &'static str> {
    if cpu >= crate::MAX_CPUS {
        return Ok(());
    }
    loop {
        match PHYS[cpu].load(Ordering::SeqCst) {
            PHYS_RUNNING => return Ok(()),
            PHYS_GOING_OFF => core::hint::spin_loop(),
            _ => break,
        }
    }
    let mpidr = MPIDR[cpu].load(Ordering::Acquire).wrapping_sub(1);
    let (t0, freq) = arch::counter();
    while arch::psci_affinity_info(mpidr) != 1 {
        let (t, _) = arch::counter();
        if t.wrapping_sub(t0) > freq.saturating_mul(WAIT_MS) / 1000 {
            return Err("it did not power off");
        }
        core::hint::spin_loop();
    }
    PHYS[cpu].store(PHYS_RUNNING, Ordering::SeqCst);
    let root = SECONDARY_ROOT[cpu].load(Ordering::Acquire);
    start_one(cpu, mpidr, hvmm::Paddr(root))
}

/// Starts CPU `cpu` (MPIDR `mpidr`) with PSCI CPU_ON; it turns its MMU on
/// with the boot tables (the identity entry is reinstalled for that), then
/// switches to `root` and reports. Waits until it has.
pub fn start_one(cpu: usize, mpidr: u64, root: hvmm::Paddr) -> Result<(), &'static str> {
    if cpu == 0 || cpu >= crate::MAX_CPUS {
        return Err("CPU index out of range");
    }
    let mut hw = arch::hw();
    let entry = hw
        .hw_translate(layout::secondary_entry_va(), false)
        .map_err(|_| "the secondary entry point does not translate")?
        .pa;
    SECONDARY_ROOT[cpu].store(root.0, Ordering::Release);
    MPIDR[cpu].store(
        (mpidr & hvmm_arch::regs::MPIDR_AFF_MASK) + 1,
        Ordering::Release,
    );

    // The secondary turns its MMU on through the identity map of the boot
    // tables: put the head's identity entry back while it boots (it removes
    // it itself, with a local invalidation, before it switches roots). This
    // CPU runs on other tables, so no invalidation is needed for it.
    let rec = layout::idmap_record();
    let slot = Vaddr(read_word(rec));
    let val = read_word(Vaddr(rec.0 + 8));
    while IDMAP_BUSY
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    if slot.0 != 0 {
        let cur = hw.read_pte(slot).unwrap_or(0);
        if cur != 0 && cur != val {
            IDMAP_BUSY.store(false, Ordering::Release);
            return Err("the identity-map entry of the boot tables is in use");
        }
        if let Err(e) = write_boot_entry(&mut hw, slot, val) {
            IDMAP_BUSY.store(false, Ordering::Release);
            return Err(e);
        }
    }
    let arrivals = UP[cpu].load(Ordering::Acquire);
    let rc = arch::psci_cpu_on(mpidr, entry.0, cpu as u64);
    let result = if rc != arch::PSCI_SUCCESS {
        Err("PSCI CPU_ON failed")
    } else {
        let (t0, freq) = arch::counter();
        let limit = freq.saturating_mul(WAIT_MS) / 1000;
        loop {
            if UP[cpu].load(Ordering::Acquire) != arrivals {
                break Ok(());
            }
            let (t, _) = arch::counter();
            if t.wrapping_sub(t0) > limit {
                break Err("timed out waiting for it");
            }
            core::hint::spin_loop();
        }
    };
    // Normally already removed by the CPU that came up; not when it failed.
    if slot.0 != 0 && hw.read_pte(slot).unwrap_or(0) != 0 {
        let _ = write_boot_entry(&mut hw, slot, 0);
        hw.tlb_flush_all();
        hw.tlb_sync();
    }
    IDMAP_BUSY.store(false, Ordering::Release);
    result
}

/// A secondary CPU, MMU on with the boot tables, on its own stack: switch
/// to the root the boot sequence gave it, check it maps the image, report,
/// park.
pub fn secondary_main(cpu: usize) -> ! {
    let root = SECONDARY_ROOT
        .get(cpu)
        .map_or(0, |r| r.load(Ordering::Acquire));
    if root != 0 {
        // SAFETY: the root comes from the boot sequence, which gives each
        // CPU tables mapping the image exactly as the boot tables do.
        unsafe {
            arch::switch_root(hvmm::Paddr(root));
            arch::set_wxn(true);
        }
    }
    let mut hw = arch::hw();
    let ok = hw.hw_translate(layout::image_start(), false).is_ok() && hw.root().0 == root;
    if ok {
        // Said once: a CPU restarted for a guest's vCPU comes up quietly
        // (the guest's own output shares the UART).
        if UP.get(cpu).is_some_and(|u| u.load(Ordering::Acquire) == 0) {
            println!(
                "hvmm: CPU {} up (MPIDR {:#x}) on root {:#x}",
                cpu,
                arch::mpidr(),
                root
            );
        }
        if let Some(u) = UP.get(cpu) {
            u.fetch_add(1, Ordering::Release);
        }
        crate::stress::secondary(cpu);
    } else {
        println!("hvmm: CPU {cpu} cannot run on root {root:#x}");
    }
    park(cpu)
}
