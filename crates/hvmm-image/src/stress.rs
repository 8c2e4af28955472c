//! The SMP stress on real (emulated) CPUs: after the boot, every CPU runs
//! `hvmm_boot::stress::step` in a loop, concurrently, updating the shared page
//! tables under one lock and checking by AT what it sees. Selected with
//! `hvmm.stress=N` (N iterations per CPU).

use crate::arch;
use crate::platform::HwPlatform;
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicU8, Ordering};
use hvmm_boot::stress::{step, CpuStress, Shared, SpinLock, StressError};

type Lock = SpinLock<Shared<arch::Fmt>>;

/// The shared state, published by the boot CPU (null until then).
static SHARED: AtomicPtr<Lock> = AtomicPtr::new(core::ptr::null_mut());
/// 0 while the boot runs; then [`GO_STRESS`] or [`GO_NONE`].
static GO: AtomicU8 = AtomicU8::new(0);
/// The stress runs: [`SHARED`] is valid.
const GO_STRESS: u8 = 1;
/// No stress this boot.
const GO_NONE: u8 = 2;
/// Iterations each CPU runs.
static ITERATIONS: AtomicU64 = AtomicU64::new(0);
/// Per CPU: 0 not started, 1 running, 2 done, 3 failed.
static STATUS: [AtomicU8; crate::MAX_CPUS] = [const { AtomicU8::new(0) }; crate::MAX_CPUS];
static CHECKS: [AtomicU64; crate::MAX_CPUS] = [const { AtomicU64::new(0) }; crate::MAX_CPUS];
static DOMAIN_MAPS: [AtomicU64; crate::MAX_CPUS] = [const { AtomicU64::new(0) }; crate::MAX_CPUS];
/// The first inconsistency found.
static ERROR: SpinLock<Option<StressError>> = SpinLock::new(None);

/// How long the boot CPU waits for the others to finish.
const WAIT_MS: u64 = 20_000;

fn run_cpu(cpu: usize, lock: &Lock) {
    let mut p = HwPlatform::new([None; crate::MAX_CPUS]);
    let mut st = CpuStress::new(cpu);
    STATUS[cpu].store(1, Ordering::Release);
    for _ in 0..ITERATIONS.load(Ordering::Acquire) {
        if let Err(e) = step(&mut p, lock, &mut st) {
            ERROR.lock().get_or_insert(e);
            STATUS[cpu].store(3, Ordering::Release);
            return;
        }
        // Stop early if another CPU already failed.
        if ERROR.lock().is_some() {
            break;
        }
    }
    CHECKS[cpu].store(st.checks, Ordering::Release);
    DOMAIN_MAPS[cpu].store(st.domain_maps, Ordering::Release);
    STATUS[cpu].store(2, Ordering::Release);
}

/// A secondary CPU after it came up: wait for the boot CPU to publish the
/// shared state, run the stress (if any), then return to park.
pub fn secondary(cpu: usize) {
    loop {
        let go = GO.load(Ordering::Acquire);
        if go == GO_NONE {
            return;
        }
        let ptr = SHARED.load(Ordering::Acquire);
        if go == GO_STRESS && !ptr.is_null() {
            // SAFETY: the boot CPU publishes a pointer to a lock that lives
            // on its stack in `run`, which never returns while others use it
            // (it waits for every CPU, then exits the machine).
            let lock = unsafe { &*ptr };
            if cpu < crate::MAX_CPUS {
                run_cpu(cpu, lock);
            }
            return;
        }
        core::hint::spin_loop();
    }
}

/// No stress this boot: let the secondary CPUs stop waiting and park.
pub fn release_secondaries() {
    GO.store(GO_NONE, Ordering::Release);
}

/// The boot CPU: shares `shared` with every CPU, runs its own iterations,
/// waits for the others, cleans up and reports. `Err` on any inconsistency.
pub fn run(shared: Shared<arch::Fmt>, cpus: usize, iterations: u64) -> Result<(), StressError> {
    let lock = SpinLock::new(shared);
    ITERATIONS.store(iterations, Ordering::Release);
    // Only shared references are ever made from this pointer.
    SHARED.store(&lock as *const Lock as *mut Lock, Ordering::Release);
    GO.store(GO_STRESS, Ordering::Release);
    run_cpu(0, &lock);
    let (t0, freq) = arch::counter();
    let limit = freq.saturating_mul(WAIT_MS) / 1000;
    for (cpu, status) in STATUS.iter().enumerate().take(cpus).skip(1) {
        while status.load(Ordering::Acquire) < 2 {
            let (t, _) = arch::counter();
            if t.wrapping_sub(t0) > limit {
                println!("hvmm: stress: CPU {cpu} did not finish");
                break;
            }
            core::hint::spin_loop();
        }
    }
    if let Some(e) = *ERROR.lock() {
        return Err(e);
    }
    let mut p = HwPlatform::new([None; crate::MAX_CPUS]);
    hvmm_boot::stress::finish(&mut p, &lock).map_err(|err| StressError::Update { cpu: 0, err })?;
    let checks: u64 = CHECKS.iter().map(|c| c.load(Ordering::Acquire)).sum();
    let maps: u64 = DOMAIN_MAPS.iter().map(|c| c.load(Ordering::Acquire)).sum();
    let updates = lock.lock().updates;
    println!(
        "(XEN) SMP stress: {cpus} CPUs x {iterations} iterations: {updates} updates, {checks} translations checked, {maps} domain-page maps, no inconsistency"
    );
    Ok(())
}
