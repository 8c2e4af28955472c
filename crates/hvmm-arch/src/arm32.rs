//! arm32 in HYP mode (ARMv7-A with the Virtualization and LPAE extensions).
//!
//! Hypervisor virtual addresses are 32 bits: a [`Vaddr`] that does not fit
//! is a bug of the caller and is refused by a debug assertion before any
//! instruction sees a truncated value.

use crate::par::decode_par;
use crate::regs;
use core::arch::asm;
use hvmm::{Arch, AtResult, CpuOps, MemFault, Paddr, Vaddr, Vmid};

/// The real HYP-mode instructions behind [`hvmm::Arch`].
///
/// Descriptor accesses go through the MMU at the given virtual addresses: an
/// access to an unmapped table page is a real Data Abort, never an `Err`.
#[derive(Debug)]
pub struct Armv7Hyp {
    _private: (),
}

impl Armv7Hyp {
    /// The back end.
    ///
    /// # Safety
    ///
    /// The caller runs in HYP mode with its stage-1 MMU on, and every virtual
    /// address later given to [`Arch::write_pte`] or [`Arch::zero_page`] is a
    /// page-table page (or a page about to become one) that no Rust reference
    /// aliases.
    pub const unsafe fn new() -> Self {
        Armv7Hyp { _private: () }
    }
}

fn va32(va: Vaddr) -> u32 {
    debug_assert!(
        va.0 <= u64::from(u32::MAX),
        "arm32 VA wider than 32 bits: {va}"
    );
    va.0 as u32
}

impl Arch for Armv7Hyp {
    fn read_pte(&mut self, va: Vaddr) -> Result<u64, MemFault> {
        debug_assert!(va.is_aligned(8));
        let (lo, hi): (u32, u32);
        // SAFETY: `va` is an aligned descriptor address the engine reached
        // through a mapping it established (contract of `new`); `ldrd` of an
        // 8-byte aligned doubleword is single-copy atomic with LPAE.
        unsafe {
            asm!("ldrd r2, r3, [{p}]", p = in(reg) va32(va), out("r2") lo, out("r3") hi,
                 options(nostack, preserves_flags, readonly));
        }
        Ok(u64::from(lo) | (u64::from(hi) << 32))
    }

    fn write_pte(&mut self, va: Vaddr, val: u64) -> Result<(), MemFault> {
        debug_assert!(va.is_aligned(8));
        // SAFETY: as for `read_pte`; `strd` of an aligned doubleword is
        // single-copy atomic with LPAE, and the barriers order it and make it
        // visible to the table walker.
        unsafe {
            asm!("dsb sy", "strd r2, r3, [{p}]", "dsb sy", p = in(reg) va32(va),
                 in("r2") val as u32, in("r3") (val >> 32) as u32, options(nostack, preserves_flags));
        }
        Ok(())
    }

    /// One `dsb sy` before the run and one after it, instead of a pair per
    /// descriptor: the entries go from invalid to valid, nothing can have
    /// cached them, and nothing uses them before the trailing barrier. Each
    /// descriptor is still one `strd` (single-copy atomic with LPAE).
    fn write_pte_run(
        &mut self,
        va: Vaddr,
        first: u64,
        step: u64,
        n: usize,
    ) -> Result<(), MemFault> {
        debug_assert!(va.is_aligned(8));
        let p = va32(va);
        // SAFETY: a barrier only; orders earlier accesses (the zeroing of a
        // new table) before the stores.
        unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
        let mut val = first;
        for i in 0..n as u32 {
            // SAFETY: as for `write_pte`; the engine passes a run inside one
            // table page, so `p + 8 * i` is a descriptor of that page.
            unsafe {
                asm!("strd r2, r3, [{p}]", p = in(reg) p + 8 * i,
                     in("r2") val as u32, in("r3") (val >> 32) as u32, options(nostack, preserves_flags));
            }
            val = val.wrapping_add(step);
        }
        // SAFETY: a barrier only; makes the stores visible to the walker.
        unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
        Ok(())
    }

    /// One `dsb sy` before the run and one after it: permission changes and
    /// clears take effect through the TLB invalidation that follows the run,
    /// which the trailing barrier orders after every store.
    fn update_pte_run<G: FnMut(u64) -> Option<u64>>(
        &mut self,
        va: Vaddr,
        n: usize,
        mut f: G,
    ) -> Result<(), MemFault> {
        debug_assert!(va.is_aligned(8));
        // SAFETY: a barrier only.
        unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
        for i in 0..n as u64 {
            let at = Vaddr(va.0 + 8 * i);
            let old = self.read_pte(at)?;
            if let Some(new) = f(old) {
                // SAFETY: as for `write_pte_run`.
                unsafe {
                    asm!("strd r2, r3, [{p}]", p = in(reg) va32(at),
                         in("r2") new as u32, in("r3") (new >> 32) as u32, options(nostack, preserves_flags));
                }
            }
        }
        // SAFETY: a barrier only.
        unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
        Ok(())
    }

    fn zero_page(&mut self, va: Vaddr) -> Result<(), MemFault> {
        debug_assert!(va.is_aligned(hvmm::PAGE_SIZE));
        let p = va32(va) as usize as *mut u32;
        for i in 0..(hvmm::PAGE_SIZE as usize / 4) {
            // SAFETY: the page at `va` is a table page being created, owned
            // by the caller (contract of `new`); `i` stays inside the page.
            unsafe { core::ptr::write_volatile(p.add(i), 0) };
        }
        // SAFETY: a barrier only.
        unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
        Ok(())
    }

    fn tlb_flush_va(&mut self, va: Vaddr) {
        // SAFETY: TLBIMVAHIS (invalidate HYP entry by MVA, inner shareable)
        // changes no memory.
        unsafe {
            asm!("mcr p15, 4, {x}, c8, c3, 1", x = in(reg) va32(va) & !0xfff, options(nostack, preserves_flags))
        };
    }

    fn tlb_flush_all(&mut self) {
        // SAFETY: TLBIALLHIS changes no memory (the register value is ignored).
        unsafe {
            asm!("mcr p15, 4, {x}, c8, c3, 0", x = in(reg) 0u32, options(nostack, preserves_flags))
        };
    }

    // ARMv7 (Cortex-A15, QEMU's arm32 virt CPU) has no stage-2
    // invalidation by IPA or VMID: TLBIALLNSNHIS removes every non-secure
    // non-Hyp entry (all guests' stage 1 and 2), a superset of each.
    fn tlb_flush_ipa(&mut self, _vmid: Vmid, _ipa: u64) {
        tlbiallnsnhis();
    }

    fn tlb_flush_guest_s1(&mut self, _vmid: Vmid) {
        tlbiallnsnhis();
    }

    fn tlb_flush_vmid(&mut self, _vmid: Vmid) {
        tlbiallnsnhis();
    }

    fn tlb_sync(&mut self) {
        // SAFETY: barriers only.
        unsafe { asm!("dsb ish", "isb", options(nostack, preserves_flags)) };
    }

    fn isb(&mut self) {
        // SAFETY: a barrier only.
        unsafe { asm!("isb", options(nostack, preserves_flags)) };
    }

    fn root(&self) -> Paddr {
        Paddr(read_httbr() & 0xff_ffff_f000)
    }
}

impl CpuOps for Armv7Hyp {
    fn tlb_flush_va_local(&mut self, va: Vaddr) {
        // SAFETY: TLBIMVAH (this CPU only) and its completion barriers.
        unsafe {
            asm!("mcr p15, 4, {x}, c8, c7, 1", "dsb nsh", "isb",
                 x = in(reg) va32(va) & !0xfff, options(nostack, preserves_flags));
        }
    }
    fn hw_translate(&mut self, va: Vaddr, write: bool) -> Result<AtResult, MemFault> {
        let (lo, hi): (u32, u32);
        // SAFETY: ATS1HR/ATS1HW only write PAR, read right after (64-bit
        // form, `mrrc p15, 0, .., c7`) behind an ISB; interrupts are masked
        // in HYP mode while hvmm runs, so nothing else uses PAR in between.
        unsafe {
            if write {
                asm!("mcr p15, 4, {va}, c7, c8, 1", "isb", "mrrc p15, 0, {lo}, {hi}, c7",
                     va = in(reg) va32(va), lo = out(reg) lo, hi = out(reg) hi,
                     options(nostack, preserves_flags));
            } else {
                asm!("mcr p15, 4, {va}, c7, c8, 0", "isb", "mrrc p15, 0, {lo}, {hi}, c7",
                     va = in(reg) va32(va), lo = out(reg) lo, hi = out(reg) hi,
                     options(nostack, preserves_flags));
            }
        }
        decode_par(u64::from(lo) | (u64::from(hi) << 32), va, write, 40)
    }
    fn cpu(&self) -> usize {
        regs::mpidr_to_cpu(u64::from(mpidr()))
    }
}

macro_rules! read_cp15 {
    ($(#[$m:meta])* $name:ident, $op1:literal, $crn:literal, $crm:literal, $op2:literal) => {
        $(#[$m])*
        pub fn $name() -> u32 {
            let v: u32;
            // SAFETY: reading this coprocessor register has no side effect
            // and is permitted in HYP mode.
            unsafe {
                asm!(concat!("mrc p15, ", $op1, ", {v}, ", $crn, ", ", $crm, ", ", $op2),
                     v = out(reg) v, options(nomem, nostack, preserves_flags));
            }
            v
        }
    };
}

read_cp15!(
    /// `MPIDR`.
    mpidr, "0", "c0", "c0", "5");
read_cp15!(
    /// `HSCTLR`.
    read_hsctlr, "4", "c1", "c0", "0");
read_cp15!(
    /// `HTCR`.
    read_htcr, "4", "c2", "c0", "2");
read_cp15!(
    /// `HMAIR0`.
    read_hmair0, "4", "c10", "c2", "0");
read_cp15!(
    /// `HMAIR1`.
    read_hmair1, "4", "c10", "c2", "1");
read_cp15!(
    /// `HSR`: the syndrome of the last exception taken to HYP mode.
    hsr, "4", "c5", "c2", "0");
read_cp15!(
    /// `HDFAR`: the faulting address of a data abort.
    hdfar, "4", "c6", "c0", "0");
read_cp15!(
    /// `HIFAR`: the faulting address of a prefetch abort.
    hifar, "4", "c6", "c0", "2");
read_cp15!(
    /// `CNTFRQ`: the generic timer frequency.
    cntfrq, "0", "c14", "c0", "0");

/// `HTTBR` (64 bits, `mrrc p15, 4, .., c2`).
pub fn read_httbr() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: reading HTTBR has no side effect.
    unsafe {
        asm!("mrrc p15, 4, {lo}, {hi}, c2", lo = out(reg) lo, hi = out(reg) hi, options(nomem, nostack, preserves_flags))
    };
    u64::from(lo) | (u64::from(hi) << 32)
}

/// `ELR_hyp`: the return address of the last exception taken to HYP mode.
pub fn elr_hyp() -> u32 {
    let v: u32;
    // SAFETY: reading ELR_hyp in HYP mode has no side effect.
    unsafe {
        asm!(".arch_extension virt", "mrs {v}, ELR_hyp", v = out(reg) v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// `SPSR_hyp`, read in HYP mode as the current mode's SPSR (the banked
/// `mrs .., SPSR_hyp` form is for Monitor mode only).
pub fn spsr_hyp() -> u32 {
    let v: u32;
    // SAFETY: reading the SPSR has no side effect.
    unsafe { asm!("mrs {v}, spsr", v = out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}
/// `CPSR`.
pub fn cpsr() -> u32 {
    let v: u32;
    // SAFETY: reading CPSR has no side effect.
    unsafe { asm!("mrs {v}, cpsr", v = out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// `CNTPCT`, the 64-bit physical counter, read in order with earlier code.
pub fn cntpct() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: reading the counter has no side effect.
    unsafe {
        asm!("isb", "mrrc p15, 0, {lo}, {hi}, c14", lo = out(reg) lo, hi = out(reg) hi, options(nomem, nostack, preserves_flags))
    };
    u64::from(lo) | (u64::from(hi) << 32)
}

/// Programs `HMAIR0` / `HMAIR1` with hvmm's memory types.
///
/// # Safety
///
/// Only before the MMU is on, or with the values already in use.
pub unsafe fn write_hmair() {
    // SAFETY: the caller guarantees no live mapping changes meaning.
    unsafe {
        asm!("mcr p15, 4, {a}, c10, c2, 0", "mcr p15, 4, {b}, c10, c2, 1", "isb",
             a = in(reg) regs::HMAIR0, b = in(reg) regs::HMAIR1, options(nostack, preserves_flags));
    }
}

/// Programs `HTCR` ([`regs::HTCR`]).
///
/// # Safety
///
/// Only before the MMU is on, or with the value already in use.
pub unsafe fn write_htcr(v: u32) {
    // SAFETY: the caller guarantees the walk parameters stay valid.
    unsafe {
        asm!("mcr p15, 4, {v}, c2, c0, 2", "isb", v = in(reg) v, options(nostack, preserves_flags))
    };
}

/// Switches `HTTBR` to the root table at `root`, then invalidates this CPU's
/// HYP TLB entries.
///
/// # Safety
///
/// The new tables map the code and data in use at the same addresses with
/// compatible attributes, and all their descriptors have been written.
pub unsafe fn switch_root(root: Paddr) {
    // SAFETY: the caller guarantees the new tables map everything in use;
    // `dsb ish` publishes table writes, the ISB makes the new root
    // effective, TLBIALLH drops the old tables' walks on this CPU.
    unsafe {
        asm!("dsb ish", "mcrr p15, 4, {lo}, {hi}, c2", "isb", "mcr p15, 4, {z}, c8, c7, 0",
             "dsb nsh", "isb",
             lo = in(reg) root.0 as u32, hi = in(reg) (root.0 >> 32) as u32, z = in(reg) 0u32,
             options(nostack, preserves_flags));
    }
}

/// Sets or clears `HSCTLR.WXN`, then invalidates this CPU's HYP TLB.
///
/// # Safety
///
/// With `on`, no code that is executed afterwards may be mapped writable.
pub unsafe fn set_wxn(on: bool) {
    let s = read_hsctlr();
    let bit = regs::SCTLR_WXN as u32;
    let s = if on { s | bit } else { s & !bit };
    // SAFETY: the caller guarantees the code it runs stays executable.
    unsafe {
        asm!("dsb sy", "mcr p15, 4, {s}, c1, c0, 0", "isb", "mcr p15, 4, {z}, c8, c7, 0",
             "dsb nsh", "isb", s = in(reg) s, z = in(reg) 0u32, options(nostack, preserves_flags));
    }
}

/// Whether `HSCTLR.WXN` is set.
pub fn wxn() -> bool {
    u64::from(read_hsctlr()) & regs::SCTLR_WXN != 0
}

/// Programs `HVBAR`.
///
/// # Safety
///
/// `va` is a 32-byte aligned, mapped, executable HYP vector table.
pub unsafe fn set_hvbar(va: u32) {
    // SAFETY: the caller guarantees `va` is a valid vector table.
    unsafe {
        asm!("mcr p15, 4, {v}, c12, c0, 0", "isb", v = in(reg) va, options(nostack, preserves_flags))
    };
}

/// An SMC Calling Convention call (`smc #0`) with up to three arguments;
/// returns `r0`. Used for PSCI.
///
/// # Safety
///
/// The function and its arguments are what the firmware expects.
pub unsafe fn smc(fid: u32, a1: u32, a2: u32, a3: u32) -> u32 {
    let mut r0 = fid;
    // SAFETY: SMCCC preserves r4–r14; r0–r3 are results or clobbered; the
    // caller vouches for the call itself.
    unsafe {
        asm!(".arch_extension sec", "smc #0", inout("r0") r0, inout("r1") a1 => _,
             inout("r2") a2 => _, inout("r3") a3 => _, options(nostack));
    }
    r0
}

/// `TLBIALLNSNHIS`: invalidates every non-secure, non-Hyp TLB entry (every
/// guest's, stage 1 and 2) on all CPUs of the inner shareable domain.
fn tlbiallnsnhis() {
    // SAFETY: TLB maintenance changes no memory (the register is ignored).
    unsafe {
        asm!("mcr p15, 4, {x}, c8, c3, 4", x = in(reg) 0u32, options(nostack, preserves_flags))
    };
}
