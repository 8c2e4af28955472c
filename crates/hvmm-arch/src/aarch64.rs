//! arm64 at EL2 (VMSAv8-64, `HCR_EL2.E2H = 0`).

use crate::par::decode_par;
use crate::regs;
use core::arch::asm;
use hvmm::{Arch, AtResult, CpuOps, MemFault, Paddr, Vaddr, Vmid};

/// The real EL2 instructions behind [`hvmm::Arch`].
///
/// Descriptor accesses go through the MMU at the given virtual addresses: an
/// access to an unmapped table page is a real Data Abort (taken by the
/// exception vectors), never an `Err`.
#[derive(Debug)]
pub struct Aarch64El2 {
    _private: (),
}

impl Aarch64El2 {
    /// The back end.
    ///
    /// # Safety
    ///
    /// The caller runs at EL2 with its stage-1 MMU on, and every virtual
    /// address later given to [`Arch::write_pte`] or [`Arch::zero_page`] is a
    /// page-table page (or a page about to become one) that no Rust reference
    /// aliases: those writes bypass the borrow checker.
    pub const unsafe fn new() -> Self {
        Aarch64El2 { _private: () }
    }
}

impl Arch for Aarch64El2 {
    fn read_pte(&mut self, va: Vaddr) -> Result<u64, MemFault> {
        debug_assert!(va.is_aligned(8));
        // SAFETY: `va` is an aligned descriptor address the engine reached
        // through a mapping it established (contract of `new`); a volatile
        // read keeps the access exactly as written.
        Ok(unsafe { core::ptr::read_volatile(va.0 as usize as *const u64) })
    }

    fn write_pte(&mut self, va: Vaddr, val: u64) -> Result<(), MemFault> {
        debug_assert!(va.is_aligned(8));
        // SAFETY: as for `read_pte`; a 64-bit aligned `str` is single-copy
        // atomic, and the barriers order it against earlier accesses and make
        // it visible to the table walker before anything later.
        unsafe {
            asm!("dsb sy", "str {v}, [{p}]", "dsb sy",
                 v = in(reg) val, p = in(reg) va.0, options(nostack, preserves_flags));
        }
        Ok(())
    }

    /// One `dsb sy` before the run and one after it, instead of a pair per
    /// descriptor: the entries go from invalid to valid, nothing can have
    /// cached them, and nothing uses them before the trailing barrier.
    fn write_pte_run(
        &mut self,
        va: Vaddr,
        first: u64,
        step: u64,
        n: usize,
    ) -> Result<(), MemFault> {
        debug_assert!(va.is_aligned(8));
        let p = va.0 as usize as *mut u64;
        // SAFETY: a barrier only; orders earlier accesses (the zeroing of a
        // new table) before the stores.
        unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
        let mut val = first;
        for i in 0..n {
            // SAFETY: as for `write_pte`; the engine passes a run inside one
            // table page, so `p + i` is a descriptor of that page. A 64-bit
            // aligned volatile store is one `str`, single-copy atomic.
            unsafe { core::ptr::write_volatile(p.add(i), val) };
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
        let p = va.0 as usize as *mut u64;
        // SAFETY: a barrier only.
        unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
        for i in 0..n {
            // SAFETY: as for `write_pte_run`: `p + i` is a descriptor of the
            // table page the engine holds mapped; aligned 64-bit volatile
            // accesses are single `ldr` / `str`, single-copy atomic.
            unsafe {
                if let Some(new) = f(core::ptr::read_volatile(p.add(i))) {
                    core::ptr::write_volatile(p.add(i), new);
                }
            }
        }
        // SAFETY: a barrier only.
        unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
        Ok(())
    }

    fn zero_page(&mut self, va: Vaddr) -> Result<(), MemFault> {
        debug_assert!(va.is_aligned(hvmm::PAGE_SIZE));
        let p = va.0 as usize as *mut u64;
        for i in 0..(hvmm::PAGE_SIZE as usize / 8) {
            // SAFETY: the page at `va` is a table page being created, owned
            // by the caller (contract of `new`); `i` stays inside the page.
            unsafe { core::ptr::write_volatile(p.add(i), 0) };
        }
        // SAFETY: a barrier only.
        unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
        Ok(())
    }

    fn tlb_flush_va(&mut self, va: Vaddr) {
        // SAFETY: TLB invalidation by VA changes no memory; the descriptor
        // write it follows already ended with `dsb sy`.
        unsafe {
            asm!("tlbi vae2is, {x}", x = in(reg) va.0 >> 12, options(nostack, preserves_flags))
        };
    }

    fn tlb_flush_all(&mut self) {
        // SAFETY: invalidating every EL2 translation changes no memory.
        unsafe { asm!("tlbi alle2is", options(nostack, preserves_flags)) };
    }

    fn tlb_flush_ipa(&mut self, vmid: Vmid, ipa: u64) {
        with_vmid(vmid, || {
            // SAFETY: invalidating a guest's stage-2 entries changes no
            // memory; the `dsb` completes it under the VMID set here.
            unsafe {
                asm!("tlbi ipas2e1is, {x}", "dsb ish", x = in(reg) (ipa >> 12) & ((1 << 36) - 1),
                    options(nostack, preserves_flags))
            }
        });
    }

    fn tlb_flush_guest_s1(&mut self, vmid: Vmid) {
        // SAFETY: as for `tlb_flush_ipa`.
        with_vmid(vmid, || unsafe {
            asm!(
                "tlbi vmalle1is",
                "dsb ish",
                options(nostack, preserves_flags)
            )
        });
    }

    fn tlb_flush_vmid(&mut self, vmid: Vmid) {
        // SAFETY: as for `tlb_flush_ipa`.
        with_vmid(vmid, || unsafe {
            asm!(
                "tlbi vmalls12e1is",
                "dsb ish",
                options(nostack, preserves_flags)
            )
        });
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
        // TTBR0_EL2: BADDR in 47:1, CnP in bit 0.
        Paddr(read_ttbr0_el2() & 0x0000_ffff_ffff_fffe)
    }
}

impl CpuOps for Aarch64El2 {
    fn tlb_flush_va_local(&mut self, va: Vaddr) {
        // SAFETY: local TLB invalidation by VA plus its completion barriers.
        unsafe {
            asm!("tlbi vae2, {x}", "dsb nsh", "isb",
                 x = in(reg) va.0 >> 12, options(nostack, preserves_flags));
        }
    }
    fn hw_translate(&mut self, va: Vaddr, write: bool) -> Result<AtResult, MemFault> {
        let par: u64;
        // SAFETY: `AT` only writes PAR_EL1, read right after behind an ISB.
        // hvmm runs EL2 with interrupts masked, so nothing else can use PAR
        // between the two instructions.
        unsafe {
            if write {
                asm!("at s1e2w, {va}", "isb", "mrs {par}, par_el1",
                     va = in(reg) va.0, par = out(reg) par, options(nostack, preserves_flags));
            } else {
                asm!("at s1e2r, {va}", "isb", "mrs {par}, par_el1",
                     va = in(reg) va.0, par = out(reg) par, options(nostack, preserves_flags));
            }
        }
        decode_par(par, va, write, 48)
    }
    fn cpu(&self) -> usize {
        regs::mpidr_to_cpu(mpidr())
    }
}

macro_rules! read_sysreg {
    ($(#[$m:meta])* $name:ident, $reg:literal) => {
        $(#[$m])*
        pub fn $name() -> u64 {
            let v: u64;
            // SAFETY: reading this system register has no side effect and is
            // permitted at EL2.
            unsafe { asm!(concat!("mrs {v}, ", $reg), v = out(reg) v, options(nomem, nostack, preserves_flags)) };
            v
        }
    };
}

read_sysreg!(
    /// `MPIDR_EL1`.
    mpidr, "mpidr_el1");
read_sysreg!(
    /// `CurrentEL` (the EL in bits 3:2).
    current_el_raw, "CurrentEL");
read_sysreg!(
    /// `TTBR0_EL2`.
    read_ttbr0_el2, "ttbr0_el2");
read_sysreg!(
    /// `SCTLR_EL2`.
    read_sctlr_el2, "sctlr_el2");
read_sysreg!(
    /// `TCR_EL2`.
    read_tcr_el2, "tcr_el2");
read_sysreg!(
    /// `MAIR_EL2`.
    read_mair_el2, "mair_el2");
read_sysreg!(
    /// `ID_AA64MMFR0_EL1` (PARange in bits 3:0).
    id_aa64mmfr0, "id_aa64mmfr0_el1");
read_sysreg!(
    /// `ESR_EL2`: the syndrome of the last exception taken to EL2.
    esr_el2, "esr_el2");
read_sysreg!(
    /// `FAR_EL2`: the faulting virtual address.
    far_el2, "far_el2");
read_sysreg!(
    /// `ELR_EL2`: the return address of the last exception.
    elr_el2, "elr_el2");
read_sysreg!(
    /// `HPFAR_EL2`.
    hpfar_el2, "hpfar_el2");
read_sysreg!(
    /// `CNTFRQ_EL0`: the generic timer frequency.
    cntfrq, "cntfrq_el0");

/// The exception level this code runs at.
pub fn current_el() -> u8 {
    ((current_el_raw() >> 2) & 3) as u8
}

/// `CNTPCT_EL0`, the physical counter, read in order with earlier code.
pub fn cntpct() -> u64 {
    let v: u64;
    // SAFETY: reading the counter has no side effect; the ISB keeps it in
    // program order.
    unsafe {
        asm!("isb", "mrs {v}, cntpct_el0", v = out(reg) v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Programs `MAIR_EL2`.
///
/// # Safety
///
/// Changing memory types under live mappings changes what existing mappings
/// mean: call it before the MMU is on, or with the value already in use.
pub unsafe fn write_mair_el2(v: u64) {
    // SAFETY: the caller guarantees no live mapping changes meaning.
    unsafe { asm!("msr mair_el2, {v}", "isb", v = in(reg) v, options(nostack, preserves_flags)) };
}

/// Programs `TCR_EL2` (see [`regs::tcr_el2`]).
///
/// # Safety
///
/// As for [`write_mair_el2`]: only before the MMU is on, or with an
/// equivalent value.
pub unsafe fn write_tcr_el2(v: u64) {
    // SAFETY: the caller guarantees the walk parameters stay valid for the
    // tables in use.
    unsafe { asm!("msr tcr_el2, {v}", "isb", v = in(reg) v, options(nostack, preserves_flags)) };
}

/// The TCR_EL2 value for this processor ([`regs::tcr_el2`] with its PARange).
pub fn boot_tcr_el2() -> u64 {
    regs::tcr_el2(id_aa64mmfr0())
}

/// Switches `TTBR0_EL2` to the root table at `root`, then invalidates this
/// CPU's EL2 TLB entries (the old tables' translations).
///
/// # Safety
///
/// The new tables map the code and data in use (at least this function's
/// caller, its stack and the vectors) at the same addresses with compatible
/// attributes, and all their descriptors have been written (with
/// [`Arch::write_pte`]'s barriers).
pub unsafe fn switch_root(root: Paddr) {
    // SAFETY: the caller guarantees the new tables map everything in use;
    // `dsb ish` publishes table writes, the ISB makes the new root effective,
    // and the local TLB flush drops the old tables' cached walks.
    unsafe {
        asm!("dsb ish", "msr ttbr0_el2, {r}", "isb", "tlbi alle2", "dsb nsh", "isb",
             r = in(reg) root.0, options(nostack, preserves_flags));
    }
}

/// Switches `TTBR0_EL2` to the root table at `root` with the MMU off for the
/// few instructions of the switch: `SCTLR_EL2.M` cleared, the root written,
/// every EL2 TLB entry of this CPU invalidated, `M` set again. No TLB entry
/// of the old tables can then meet one of the new tables for the same
/// address, which a switch with the MMU on allows when the two map an
/// address with blocks of different sizes (a TLB conflict abort on some
/// CPUs).
///
/// # Safety
///
/// The code calling it runs identity-mapped (VA = PA) in the old tables and
/// in the new ones, the new tables map everything in use after the switch
/// with compatible attributes, and all their descriptors have been written
/// (with [`Arch::write_pte`]'s barriers).
pub unsafe fn switch_root_identity(root: Paddr) {
    // SAFETY: the caller guarantees this code is identity-mapped, so
    // instruction fetch continues at the same addresses with the MMU off;
    // nothing between the two SCTLR writes touches data memory; the TLB
    // invalidation completes (dsb, isb) before the MMU is back on.
    unsafe {
        asm!("dsb ish", "mrs {s}, sctlr_el2", "bic {t}, {s}, #1", "msr sctlr_el2, {t}", "isb",
             "msr ttbr0_el2, {r}", "tlbi alle2", "dsb nsh", "isb",
             "msr sctlr_el2, {s}", "isb",
             s = out(reg) _, t = out(reg) _, r = in(reg) root.0,
             options(nostack, preserves_flags));
    }
}

/// Sets or clears `SCTLR_EL2.WXN` (write permission implies execute-never),
/// then invalidates this CPU's TLB: WXN may be cached in TLB entries.
///
/// # Safety
///
/// With `on`, no code that is executed afterwards may be mapped writable.
pub unsafe fn set_wxn(on: bool) {
    let s = read_sctlr_el2();
    let s = if on {
        s | regs::SCTLR_WXN
    } else {
        s & !regs::SCTLR_WXN
    };
    // SAFETY: the caller guarantees the code it runs stays executable.
    unsafe {
        asm!("dsb sy", "msr sctlr_el2, {s}", "isb", "tlbi alle2", "dsb nsh", "isb",
             s = in(reg) s, options(nostack, preserves_flags));
    }
}

/// Whether `SCTLR_EL2.WXN` is set.
pub fn wxn() -> bool {
    read_sctlr_el2() & regs::SCTLR_WXN != 0
}

/// Programs `VBAR_EL2`.
///
/// # Safety
///
/// `va` is a 2 KiB-aligned, mapped, executable vector table.
pub unsafe fn set_vbar_el2(va: u64) {
    // SAFETY: the caller guarantees `va` is a valid vector table.
    unsafe { asm!("msr vbar_el2, {v}", "isb", v = in(reg) va, options(nostack, preserves_flags)) };
}

/// An SMC Calling Convention call (`smc #0`) with up to three arguments;
/// returns `x0`. Used for PSCI.
///
/// # Safety
///
/// The function and its arguments are what the firmware expects (for
/// example a PSCI CPU_ON entry point that is valid code).
pub unsafe fn smc(fid: u32, a1: u64, a2: u64, a3: u64) -> u64 {
    let mut x0 = u64::from(fid);
    // SAFETY: SMCCC preserves x4–x17 and the stack; x0–x3 are results or
    // clobbered; the caller vouches for the call itself.
    unsafe {
        asm!("smc #0", inout("x0") x0, inout("x1") a1 => _, inout("x2") a2 => _,
             inout("x3") a3 => _, options(nostack));
    }
    x0
}

/// Runs `f` with VTTBR_EL2.VMID = `vmid` (the guest-scoped TLB
/// invalidations act on the VMID in VTTBR_EL2), then restores VTTBR_EL2.
fn with_vmid(vmid: Vmid, f: impl FnOnce()) {
    let old: u64;
    // SAFETY: reads a system register.
    unsafe {
        asm!("mrs {v}, vttbr_el2", v = out(reg) old, options(nomem, nostack, preserves_flags))
    };
    let new = (old & !(0xffff << 48)) | (u64::from(vmid.0) << 48);
    // SAFETY: only the VMID field changes; the guest's stage-2 is not in
    // use while the hypervisor runs at EL2, and the old value comes back.
    unsafe {
        asm!("msr vttbr_el2, {v}", "isb", v = in(reg) new, options(nostack, preserves_flags))
    };
    f();
    // SAFETY: restores the value read above.
    unsafe {
        asm!("msr vttbr_el2, {v}", "isb", v = in(reg) old, options(nostack, preserves_flags))
    };
}
