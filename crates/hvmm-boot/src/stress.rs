//! SMP stress after the boot: every CPU updates the hypervisor's page tables
//! under one lock — in a region of its own and in a region all CPUs share —
//! and checks by hardware translation (AT, which may use the TLB) that what
//! it sees is what the tables say. On arm32 every CPU also hammers its own
//! domain-page slots, and in the arm64 secret-free mode its own mapcache
//! slots (a slot given back must no longer translate). The same [`step`] runs on hardware (each CPU in a loop,
//! truly concurrently) and on the machine model (CPUs interleaved).

use crate::mm::{Mm, MAX_CPUS};
use crate::platform::Platform;
use core::cell::UnsafeCell;
use core::fmt;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};
use hvmm::{Attrs, Error, MapFlags, Mfn, Op, Paddr, Vaddr, PAGE_SIZE};
use hvmm_xen::layout::HasLayout;

/// A test-and-set spin lock (the engine's "one lock serialises updates").
pub struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reached through a guard, and at most one guard
// exists at a time (the flag is taken with Acquire and released with Release).
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// An unlocked lock around `value`.
    pub const fn new(value: T) -> Self {
        SpinLock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }
    /// Spins until the lock is taken.
    pub fn lock(&self) -> SpinGuard<'_, T> {
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        SpinGuard { lock: self }
    }
    /// The value, when nothing else can hold the lock.
    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }
}

/// Holding the lock.
pub struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard is the only one (see the `Sync` impl).
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: this guard is the only one, and `&mut self` is unique.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}

/// Pages of the region every CPU updates.
pub const SHARED_PAGES: usize = 16;
/// Pages of each CPU's own region.
pub const OWN_PAGES: u64 = 4;

/// What the CPUs share, behind the lock.
pub struct Shared<F: HasLayout> {
    /// The memory manager (page tables, allocator, access path).
    pub mm: Mm<F>,
    /// What each shared page is mapped to, by the tables.
    ledger: [Option<Paddr>; SHARED_PAGES],
    /// Engine updates done.
    pub updates: u64,
}

impl<F: HasLayout> Shared<F> {
    /// Shares `mm` (in Active) for a stress run.
    pub fn new(mm: Mm<F>) -> Self {
        Shared {
            mm,
            ledger: [None; SHARED_PAGES],
            updates: 0,
        }
    }
}

/// One CPU's progress.
#[derive(Clone, Debug, Default)]
pub struct CpuStress {
    /// The CPU.
    pub cpu: usize,
    rng: u64,
    /// Iterations done.
    pub iterations: u64,
    /// Translations checked.
    pub checks: u64,
    /// Domain-page maps (arm32) or mapcache maps (arm64 secret-free).
    pub domain_maps: u64,
}

impl CpuStress {
    /// A fresh state for `cpu`.
    pub fn new(cpu: usize) -> Self {
        CpuStress {
            cpu,
            rng: 0x9e37_79b9_7f4a_7c15 ^ (cpu as u64 + 1),
            ..Default::default()
        }
    }
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// What the stress found wrong.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StressError {
    /// A CPU saw a translation the tables do not hold.
    Inconsistent {
        /// The CPU.
        cpu: usize,
        /// The VA.
        va: Vaddr,
        /// What the tables say (None: unmapped).
        expected: Option<Paddr>,
        /// What the CPU saw (None: fault).
        seen: Option<Paddr>,
        /// Whether it was a write check.
        write: bool,
    },
    /// An update the rules allow failed.
    Update {
        /// The CPU.
        cpu: usize,
        /// The error.
        err: Error,
    },
    /// A CPU's TLB still held a translation the tables no longer give
    /// (found by the machine model after a step).
    StaleTlb {
        /// The VA.
        va: Vaddr,
    },
    /// A domain-page or mapcache mapping translated to another frame, or a
    /// mapcache slot still translated after it was given back.
    DomainPage {
        /// The CPU.
        cpu: usize,
        /// The frame.
        mfn: Mfn,
    },
}

impl fmt::Display for StressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            StressError::Inconsistent {
                cpu,
                va,
                expected,
                seen,
                write,
            } => write!(
                f,
                "CPU {cpu}: {} of {va} translates to {seen:?}, the tables say {expected:?}",
                if write { "write" } else { "read" }
            ),
            StressError::Update { cpu, err } => write!(f, "CPU {cpu}: update failed: {err}"),
            StressError::StaleTlb { va } => {
                write!(f, "a TLB still translates {va} as the tables no longer do")
            }
            StressError::DomainPage { cpu, mfn } => {
                write!(
                    f,
                    "CPU {cpu}: the domain-page / mapcache slot of {mfn} translated to another frame, or still translated once given back"
                )
            }
        }
    }
}

impl core::error::Error for StressError {}

/// First VA of the region every CPU updates.
pub fn shared_base<F: HasLayout>() -> u64 {
    F::LAYOUT.vmap.start.0 + (128 << 20)
}

fn own_base<F: HasLayout>(cpu: usize) -> u64 {
    F::LAYOUT.vmap.start.0 + (256 << 20) + (cpu as u64) * (2 << 20)
}

fn expect<P: Platform>(
    p: &mut P,
    cpu: usize,
    va: Vaddr,
    expected: Option<Paddr>,
    write: bool,
) -> Result<(), StressError> {
    let seen = p.hw_translate(va, write).ok().map(|r| r.pa);
    if seen != expected {
        return Err(StressError::Inconsistent {
            cpu,
            va,
            expected,
            seen,
            write,
        });
    }
    Ok(())
}

/// One iteration for the CPU `p` runs on.
pub fn step<F: HasLayout, P: Platform>(
    p: &mut P,
    shared: &SpinLock<Shared<F>>,
    st: &mut CpuStress,
) -> Result<(), StressError> {
    let cpu = st.cpu;
    let upd = |err| StressError::Update { cpu, err };
    // 1. Its own region: insert, check, make read-only, check, remove, check.
    let own = Vaddr(own_base::<F>(cpu.min(MAX_CPUS - 1)));
    let frames = {
        let mut g = shared.lock();
        let m = g.mm.alloc.alloc(OWN_PAGES, 1).map_err(|_| {
            upd(Error::OutOfMemory {
                needed: OWN_PAGES as usize,
                available: 0,
            })
        })?;
        let insert = Op::Insert {
            pa: m.paddr(),
            attrs: Attrs::RW,
        };
        g.mm.update(p, own, OWN_PAGES, insert, MapFlags::PAGES)
            .map_err(upd)?;
        g.updates += 1;
        m
    };
    for i in 0..OWN_PAGES {
        let va = Vaddr(own.0 + i * PAGE_SIZE);
        let pa = Some(Paddr(frames.paddr().0 + i * PAGE_SIZE));
        expect(p, cpu, va, pa, false)?;
        expect(p, cpu, va, pa, true)?;
        st.checks += 2;
    }
    {
        let mut g = shared.lock();
        g.mm.update(
            p,
            own,
            OWN_PAGES,
            Op::Modify { attrs: Attrs::RO },
            MapFlags::PAGES,
        )
        .map_err(upd)?;
        g.updates += 1;
    }
    for i in 0..OWN_PAGES {
        let va = Vaddr(own.0 + i * PAGE_SIZE);
        expect(
            p,
            cpu,
            va,
            Some(Paddr(frames.paddr().0 + i * PAGE_SIZE)),
            false,
        )?;
        expect(p, cpu, va, None, true)?;
        st.checks += 2;
    }
    {
        let mut g = shared.lock();
        g.mm.update(p, own, OWN_PAGES, Op::Remove, MapFlags::PAGES)
            .map_err(upd)?;
        g.updates += 1;
        let _ = g.mm.alloc.free_pages_at(frames, OWN_PAGES);
    }
    for i in 0..OWN_PAGES {
        expect(p, cpu, Vaddr(own.0 + i * PAGE_SIZE), None, false)?;
        st.checks += 1;
    }

    // 2. The shared region: flip one page, then check every shared page,
    // all under the lock so the ledger and the tables agree.
    {
        let mut g = shared.lock();
        let i = (st.next() % SHARED_PAGES as u64) as usize;
        let va = Vaddr(shared_base::<F>() + i as u64 * PAGE_SIZE);
        match g.ledger[i] {
            None => {
                let m = g.mm.alloc.alloc(1, 1).map_err(|_| {
                    upd(Error::OutOfMemory {
                        needed: 1,
                        available: 0,
                    })
                })?;
                let insert = Op::Insert {
                    pa: m.paddr(),
                    attrs: Attrs::RW,
                };
                g.mm.update(p, va, 1, insert, MapFlags::PAGES)
                    .map_err(upd)?;
                g.ledger[i] = Some(m.paddr());
            }
            Some(pa) => {
                g.mm.update(p, va, 1, Op::Remove, MapFlags::PAGES)
                    .map_err(upd)?;
                let _ = g.mm.alloc.free_pages_at(pa.mfn(), 1);
                g.ledger[i] = None;
            }
        }
        g.updates += 1;
        for (j, want) in g.ledger.iter().enumerate() {
            let va = Vaddr(shared_base::<F>() + j as u64 * PAGE_SIZE);
            expect(p, cpu, va, *want, false)?;
            st.checks += 1;
        }
    }

    // 3. arm32: this CPU's domain-page slots, no lock needed: map frames of
    // the image and of its own region (both RAM), read them through the
    // slot, give them back.
    let (dp, mc, image) = {
        let g = shared.lock();
        (g.mm.domain_page(cpu), g.mm.mapcache(cpu), g.mm.image())
    };
    // arm64 secret-free: the same with this CPU's mapcache slots, which
    // must stop translating once given back.
    if let Some(mc) = mc {
        for k in 0..8u64 {
            let mfn = if k % 2 == 0 {
                Mfn(image.0.pa.mfn().0 + st.next() % (image.0.size / PAGE_SIZE))
            } else {
                Mfn(frames.0 + st.next() % OWN_PAGES)
            };
            let Ok(va) = mc.map(p, mfn) else { continue };
            st.domain_maps += 1;
            let seen = p.hw_translate(va, false).ok().map(|r| r.pa);
            mc.unmap(p, va);
            let after = p.hw_translate(va, false).ok().map(|r| r.pa);
            if seen != Some(mfn.paddr()) || after.is_some() {
                return Err(StressError::DomainPage { cpu, mfn });
            }
        }
    }
    if let Some(dp) = dp {
        for k in 0..8u64 {
            let mfn = if k % 2 == 0 {
                Mfn(image.0.pa.mfn().0 + st.next() % (image.0.size / PAGE_SIZE))
            } else {
                Mfn(frames.0 + st.next() % OWN_PAGES)
            };
            let Ok(va) = dp.map(p, mfn) else { continue };
            st.domain_maps += 1;
            let seen = p.hw_translate(va, false).ok().map(|r| r.pa);
            dp.unmap(p, va);
            if seen != Some(mfn.paddr()) {
                return Err(StressError::DomainPage { cpu, mfn });
            }
        }
    }
    st.iterations += 1;
    Ok(())
}

/// Releases what a stress run left mapped in the shared region.
pub fn finish<F: HasLayout, P: Platform>(
    p: &mut P,
    shared: &SpinLock<Shared<F>>,
) -> Result<(), Error> {
    let mut g = shared.lock();
    for i in 0..SHARED_PAGES {
        if let Some(pa) = g.ledger[i] {
            let va = Vaddr(shared_base::<F>() + i as u64 * PAGE_SIZE);
            g.mm.update(p, va, 1, Op::Remove, MapFlags::PAGES)?;
            let _ = g.mm.alloc.free_pages_at(pa.mfn(), 1);
            g.ledger[i] = None;
        }
    }
    Ok(())
}
