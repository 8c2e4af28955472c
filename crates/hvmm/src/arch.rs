//! What the engine needs from the processor ([`Arch`]: descriptor reads and
//! writes with their barriers, TLB maintenance, the root register), and what
//! per-CPU table access and a boot sequence need beside it ([`CpuOps`]: the
//! CPU's index, local TLB invalidation, hardware address translation, reads
//! through the MMU).
//!
//! The crate `hvmm-arch` implements both with the real arm64 / arm32
//! instructions; the machine model (`hvmm-model`) implements them over
//! emulated memory, an emulated MMU and TLB; the host back end (module `host`, feature `host`) over host memory
//! for examples and benchmarks. The engine never knows which one it runs on.

use crate::addr::{Paddr, Vaddr, Vmid};
use core::fmt;

/// Kind of memory access that faulted.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum AccessKind {
    /// Data read.
    Read,
    /// Data write.
    Write,
    /// Instruction fetch.
    Exec,
}

/// Fault status, as the Arm architecture reports it (long-descriptor format).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// No valid descriptor at `level`.
    Translation,
    /// A descriptor with AF = 0.
    AccessFlag,
    /// The access is not permitted by AP / XN.
    Permission,
    /// An output address, or the input address, beyond the configured size.
    AddressSize,
    /// Synchronous external abort: the physical address is not backed by
    /// memory (reported at `level` 0 when it was not a table walk).
    External,
}

/// A synchronous abort taken on a memory access through a virtual address.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct MemFault {
    /// The faulting virtual address (FAR_EL2 / HDFAR / HIFAR).
    pub va: Vaddr,
    /// What kind of access it was.
    pub access: AccessKind,
    /// Fault status.
    pub kind: FaultKind,
    /// Lookup level at which the fault was found.
    pub level: u8,
}

impl MemFault {
    /// The fault status code (DFSC / IFSC, long-descriptor encoding).
    pub const fn status_code(&self) -> u32 {
        let base = match self.kind {
            FaultKind::AddressSize => 0b00_0000,
            FaultKind::Translation => 0b00_0100,
            FaultKind::AccessFlag => 0b00_1000,
            FaultKind::Permission => 0b00_1100,
            FaultKind::External => return 0b01_0000,
        };
        base | (self.level as u32 & 3)
    }

    /// The syndrome as ESR_EL2 / HSR reports it for an abort taken from EL2
    /// (data abort EC 0x25, prefetch abort EC 0x21), IL set, WnR for writes.
    pub const fn syndrome(&self) -> u32 {
        let ec: u32 = match self.access {
            AccessKind::Exec => 0x21,
            _ => 0x25,
        };
        let wnr: u32 = if matches!(self.access, AccessKind::Write) {
            1 << 6
        } else {
            0
        };
        (ec << 26) | (1 << 25) | wnr | self.status_code()
    }
}

impl fmt::Display for MemFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.access {
            AccessKind::Exec => "Instruction Abort",
            _ => "Data Abort",
        };
        let kind = match self.kind {
            FaultKind::Translation => "translation fault",
            FaultKind::AccessFlag => "access flag fault",
            FaultKind::Permission => "permission fault",
            FaultKind::AddressSize => "address size fault",
            FaultKind::External => "synchronous external abort",
        };
        write!(
            f,
            "{what} ({kind}, level {}) on {:?} at VA {}: syndrome {:#010x}",
            self.level,
            self.access,
            self.va,
            self.syndrome()
        )
    }
}

impl core::error::Error for MemFault {}

/// Result of a successful address translation (AT S1E2R/W, ATS1HR/W).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct AtResult {
    /// The physical address `va` translates to (PAR's PA plus the page offset).
    pub pa: Paddr,
    /// The MAIR attribute byte of the mapping, as PAR reports it.
    pub mair_attr: u8,
}

/// The processor operations the engine relies on, and nothing else.
///
/// Reads and writes take virtual addresses: on hardware they go through the
/// MMU, on the machine model through the model's MMU, so an access to an
/// unmapped table page is a Data Abort in both (the model returns it as
/// `Err`).
pub trait Arch {
    /// Reads one naturally aligned 64-bit word (a descriptor) at `va`.
    fn read_pte(&mut self, va: Vaddr) -> Result<u64, MemFault>;
    /// Writes one descriptor at `va`, single-copy atomic, with a barrier
    /// before and after (`dsb; str; dsb`; `strd` on arm32).
    fn write_pte(&mut self, va: Vaddr, val: u64) -> Result<(), MemFault>;
    /// Zeroes the 4 KiB page at `va` (a new table) and makes the zeroes
    /// visible to the table walker before it returns.
    fn zero_page(&mut self, va: Vaddr) -> Result<(), MemFault>;
    /// Invalidates this VA's translations on all CPUs (`TLBI VAE2IS` /
    /// `TLBIMVAHIS`). Completion needs [`Arch::tlb_sync`].
    fn tlb_flush_va(&mut self, va: Vaddr);
    /// Invalidates all hypervisor translations on all CPUs (`TLBI ALLE2IS` /
    /// `TLBIALLHIS`). Completion needs [`Arch::tlb_sync`].
    fn tlb_flush_all(&mut self);
    /// Invalidates, on all CPUs, the stage-2 translations of the guest
    /// `vmid` for the IPA `ipa`, at every level (walk-cache entries too):
    /// arm64 `TLBI IPAS2E1IS` issued with VTTBR_EL2.VMID = `vmid`; arm32
    /// ARMv7 has no stage-2 invalidation by IPA and uses `TLBIALLNSNHIS`.
    /// Combined stage 1+2 entries are not removed: follow with
    /// [`Arch::tlb_flush_guest_s1`]. Completion needs [`Arch::tlb_sync`].
    fn tlb_flush_ipa(&mut self, vmid: Vmid, ipa: u64);
    /// Invalidates, on all CPUs, the stage-1 and combined stage 1+2
    /// translations of the guest `vmid` (arm64 `TLBI VMALLE1IS` under that
    /// VMID; arm32 `TLBIALLNSNHIS`). Completion needs [`Arch::tlb_sync`].
    fn tlb_flush_guest_s1(&mut self, vmid: Vmid);
    /// Invalidates, on all CPUs, every translation of the guest `vmid`,
    /// stage 1 and 2 (arm64 `TLBI VMALLS12E1IS` under that VMID; arm32
    /// `TLBIALLNSNHIS`). Completion needs [`Arch::tlb_sync`].
    fn tlb_flush_vmid(&mut self, vmid: Vmid);
    /// Waits for TLB maintenance to complete (`dsb ish; isb`).
    fn tlb_sync(&mut self);
    /// Instruction synchronisation barrier.
    fn isb(&mut self);
    /// The current root table (TTBR0_EL2 / HTTBR).
    fn root(&self) -> Paddr;

    /// Writes a run of `n` descriptors into consecutive entries of one
    /// table: `first`, `first + step`, `first + 2 * step`... at `va`,
    /// `va + 8`, ... The engine uses it only where every entry of the run is
    /// known to be invalid (the prepare pass proved it, or the table was just
    /// zeroed), so entries only go from invalid to valid.
    ///
    /// The default writes them one by one with [`Arch::write_pte`] (the
    /// machine model checks every write). A back end may relax the barriers
    /// to one `dsb` before the first store and one after the last: no walker
    /// may use any entry of the run before the update returns, and an
    /// invalid entry is never cached, so the intermediate states cannot be
    /// observed.
    fn write_pte_run(
        &mut self,
        va: Vaddr,
        first: u64,
        step: u64,
        n: usize,
    ) -> Result<(), MemFault> {
        let mut val = first;
        for i in 0..n {
            self.write_pte(Vaddr(va.0 + 8 * i as u64), val)?;
            val = val.wrapping_add(step);
        }
        Ok(())
    }

    /// Reads each of `n` consecutive descriptors at `va`, `va + 8`, ... and,
    /// where `f(old)` returns `Some(new)`, writes `new` in its place. Used for
    /// permission changes (valid to valid, no break-before-make needed) and
    /// for clearing leaves (valid to invalid); the caller invalidates the TLB
    /// afterwards, as for single writes. With `n == 1` it is also the
    /// engine's read-decide-write of one leaf that needs no break (an invalid
    /// entry made valid, a permission change, a clear): the barriers of a
    /// [`Arch::read_pte`] followed by a [`Arch::write_pte`] suffice.
    ///
    /// The default uses [`Arch::read_pte`] and [`Arch::write_pte`]; a back end
    /// may relax the barriers to one `dsb` before the first store and one
    /// after the last (the TLB invalidation that follows the run is what
    /// makes the change take effect, and it waits for that last `dsb`).
    fn update_pte_run<G: FnMut(u64) -> Option<u64>>(
        &mut self,
        va: Vaddr,
        n: usize,
        mut f: G,
    ) -> Result<(), MemFault>
    where
        Self: Sized,
    {
        for i in 0..n {
            let at = Vaddr(va.0 + 8 * i as u64);
            if let Some(new) = f(self.read_pte(at)?) {
                self.write_pte(at, new)?;
            }
        }
        Ok(())
    }

    /// The index of the first of the `n` consecutive descriptors at `va`
    /// for which `pred` holds, or `None`. Reads only. The default uses
    /// [`Arch::read_pte`].
    fn find_pte<P: FnMut(u64) -> bool>(
        &mut self,
        va: Vaddr,
        n: usize,
        mut pred: P,
    ) -> Result<Option<usize>, MemFault>
    where
        Self: Sized,
    {
        for i in 0..n {
            if pred(self.read_pte(Vaddr(va.0 + 8 * i as u64))?) {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }
}

/// What per-CPU table access and a boot sequence need from the processor
/// beside [`Arch`]: the engine itself never calls these.
///
/// Xen's PMAP and arm32 domain-page slots invalidate their own slot on this
/// CPU only ([`CpuOps::tlb_flush_va_local`]); finding where the image was
/// loaded uses hardware address translation ([`CpuOps::hw_translate`]); a boot
/// sequence keeps per-CPU state ([`CpuOps::cpu`]) and reads the device tree
/// through the MMU ([`CpuOps::read_bytes`]).
pub trait CpuOps: Arch {
    /// Invalidates this VA's translations on this CPU only, and waits for it
    /// (`TLBI VAE2; dsb nsh; isb`). Used for per-CPU slots (PMAP, domain page).
    fn tlb_flush_va_local(&mut self, va: Vaddr);
    /// Hardware address translation of `va` for a read or a write
    /// (`AT S1E2R/W` / `ATS1HR/W`), reading PAR.
    fn hw_translate(&mut self, va: Vaddr, write: bool) -> Result<AtResult, MemFault>;
    /// The index of the CPU running this code.
    fn cpu(&self) -> usize;
    /// Reads `buf.len()` bytes at `va` (any alignment), through the MMU.
    /// The default reads aligned words with [`Arch::read_pte`].
    fn read_bytes(&mut self, va: Vaddr, buf: &mut [u8]) -> Result<(), MemFault> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = va.0 + done as u64;
            let word = self.read_pte(Vaddr(at & !7))?.to_le_bytes();
            let off = (at & 7) as usize;
            let n = (8 - off).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&word[off..off + n]);
            done += n;
        }
        Ok(())
    }
}

impl<A: Arch> Arch for &mut A {
    #[inline(always)]
    fn read_pte(&mut self, va: Vaddr) -> Result<u64, MemFault> {
        (**self).read_pte(va)
    }
    #[inline(always)]
    fn write_pte(&mut self, va: Vaddr, val: u64) -> Result<(), MemFault> {
        (**self).write_pte(va, val)
    }
    fn zero_page(&mut self, va: Vaddr) -> Result<(), MemFault> {
        (**self).zero_page(va)
    }
    fn tlb_flush_va(&mut self, va: Vaddr) {
        (**self).tlb_flush_va(va)
    }
    fn tlb_flush_all(&mut self) {
        (**self).tlb_flush_all()
    }
    fn tlb_flush_ipa(&mut self, vmid: Vmid, ipa: u64) {
        (**self).tlb_flush_ipa(vmid, ipa)
    }
    fn tlb_flush_guest_s1(&mut self, vmid: Vmid) {
        (**self).tlb_flush_guest_s1(vmid)
    }
    fn tlb_flush_vmid(&mut self, vmid: Vmid) {
        (**self).tlb_flush_vmid(vmid)
    }
    fn tlb_sync(&mut self) {
        (**self).tlb_sync()
    }
    fn isb(&mut self) {
        (**self).isb()
    }
    fn root(&self) -> Paddr {
        (**self).root()
    }
    #[inline(always)]
    fn write_pte_run(
        &mut self,
        va: Vaddr,
        first: u64,
        step: u64,
        n: usize,
    ) -> Result<(), MemFault> {
        (**self).write_pte_run(va, first, step, n)
    }
    #[inline(always)]
    fn update_pte_run<G: FnMut(u64) -> Option<u64>>(
        &mut self,
        va: Vaddr,
        n: usize,
        f: G,
    ) -> Result<(), MemFault> {
        (**self).update_pte_run(va, n, f)
    }
    #[inline(always)]
    fn find_pte<P: FnMut(u64) -> bool>(
        &mut self,
        va: Vaddr,
        n: usize,
        pred: P,
    ) -> Result<Option<usize>, MemFault> {
        (**self).find_pte(va, n, pred)
    }
}

impl<A: CpuOps> CpuOps for &mut A {
    fn tlb_flush_va_local(&mut self, va: Vaddr) {
        (**self).tlb_flush_va_local(va)
    }
    fn hw_translate(&mut self, va: Vaddr, write: bool) -> Result<AtResult, MemFault> {
        (**self).hw_translate(va, write)
    }
    fn cpu(&self) -> usize {
        (**self).cpu()
    }
    fn read_bytes(&mut self, va: Vaddr, buf: &mut [u8]) -> Result<(), MemFault> {
        (**self).read_bytes(va, buf)
    }
}
