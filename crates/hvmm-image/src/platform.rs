//! The real machine as the shared boot sequence sees it: the processor back
//! end (`hvmm-arch`) plus root switching, WXN, mapped-memory views and PSCI.

use crate::arch;
use hvmm::{AccessKind, Arch, AtResult, CpuOps, FaultKind, MemFault, Paddr, Vaddr};

/// This CPU's processor back end, with the MPIDRs of the CPUs it may start.
pub struct HwPlatform {
    cpu: arch::Cpu,
    /// MPIDR of the secondary CPUs, in the order the boot sequence numbers them (1, 2, ...).
    mpidrs: [Option<u64>; crate::MAX_CPUS],
}

impl HwPlatform {
    /// The platform of the boot CPU.
    pub fn new(mpidrs: [Option<u64>; crate::MAX_CPUS]) -> Self {
        HwPlatform {
            cpu: arch::hw(),
            mpidrs,
        }
    }
}

impl Arch for HwPlatform {
    fn read_pte(&mut self, va: Vaddr) -> Result<u64, MemFault> {
        self.cpu.read_pte(va)
    }
    fn write_pte(&mut self, va: Vaddr, val: u64) -> Result<(), MemFault> {
        self.cpu.write_pte(va, val)
    }
    fn zero_page(&mut self, va: Vaddr) -> Result<(), MemFault> {
        self.cpu.zero_page(va)
    }
    fn tlb_flush_va(&mut self, va: Vaddr) {
        self.cpu.tlb_flush_va(va)
    }
    fn tlb_flush_all(&mut self) {
        self.cpu.tlb_flush_all()
    }
    fn tlb_flush_ipa(&mut self, vmid: hvmm::Vmid, ipa: u64) {
        self.cpu.tlb_flush_ipa(vmid, ipa)
    }
    fn tlb_flush_guest_s1(&mut self, vmid: hvmm::Vmid) {
        self.cpu.tlb_flush_guest_s1(vmid)
    }
    fn tlb_flush_vmid(&mut self, vmid: hvmm::Vmid) {
        self.cpu.tlb_flush_vmid(vmid)
    }
    fn tlb_sync(&mut self) {
        self.cpu.tlb_sync()
    }
    fn isb(&mut self) {
        self.cpu.isb()
    }
    fn root(&self) -> Paddr {
        self.cpu.root()
    }
    fn write_pte_run(
        &mut self,
        va: Vaddr,
        first: u64,
        step: u64,
        n: usize,
    ) -> Result<(), MemFault> {
        self.cpu.write_pte_run(va, first, step, n)
    }
    fn update_pte_run<G: FnMut(u64) -> Option<u64>>(
        &mut self,
        va: Vaddr,
        n: usize,
        f: G,
    ) -> Result<(), MemFault> {
        self.cpu.update_pte_run(va, n, f)
    }
    fn find_pte<P: FnMut(u64) -> bool>(
        &mut self,
        va: Vaddr,
        n: usize,
        pred: P,
    ) -> Result<Option<usize>, MemFault> {
        self.cpu.find_pte(va, n, pred)
    }
}

impl CpuOps for HwPlatform {
    fn tlb_flush_va_local(&mut self, va: Vaddr) {
        self.cpu.tlb_flush_va_local(va)
    }
    fn hw_translate(&mut self, va: Vaddr, write: bool) -> Result<AtResult, MemFault> {
        self.cpu.hw_translate(va, write)
    }
    fn cpu(&self) -> usize {
        self.cpu.cpu()
    }
    fn read_bytes(&mut self, va: Vaddr, buf: &mut [u8]) -> Result<(), MemFault> {
        let bytes = hvmm_boot::Platform::map_bytes(self, va, buf.len())?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
}

impl HwPlatform {
    /// A pointer to `[va, va + len)` once AT has shown every page of it
    /// translates for the access.
    fn checked_ptr(&mut self, va: Vaddr, len: usize, write: bool) -> Result<*mut u8, MemFault> {
        let end = va.0 + len as u64;
        let mut page = va.page_floor().0;
        while page < end {
            self.cpu.hw_translate(Vaddr(page.max(va.0)), write)?;
            page += hvmm::PAGE_SIZE;
        }
        let access = if write {
            AccessKind::Write
        } else {
            AccessKind::Read
        };
        usize::try_from(va.0)
            .map(|p| p as *mut u8)
            .map_err(|_| MemFault {
                va,
                access,
                kind: FaultKind::AddressSize,
                level: 0,
            })
    }
}

impl hvmm_boot::Platform for HwPlatform {
    type Bytes = &'static [u8];

    fn switch_root(&mut self, root: Paddr) {
        // SAFETY: the boot sequence only switches to tables that map the
        // image (code, data, stacks) at the same addresses as the current
        // ones (`setup_pagetables`), so execution continues unchanged.
        unsafe { arch::switch_root(root) }
    }

    fn set_wxn(&mut self, on: bool) {
        // SAFETY: the runtime tables map no page both writable and
        // executable, so enforcing WXN removes no permission in use.
        unsafe { arch::set_wxn(on) }
    }

    fn map_bytes(&mut self, va: Vaddr, len: usize) -> Result<&'static [u8], MemFault> {
        if len == 0 {
            return Ok(&[]);
        }
        // Probe every page with AT first: a fault is returned, not taken.
        let end = va.0 + len as u64;
        let mut page = va.page_floor().0;
        while page < end {
            self.cpu.hw_translate(Vaddr(page.max(va.0)), false)?;
            page += hvmm::PAGE_SIZE;
        }
        let ptr = usize::try_from(va.0).map_err(|_| MemFault {
            va,
            access: AccessKind::Read,
            kind: FaultKind::AddressSize,
            level: 0,
        })? as *const u8;
        // SAFETY: every page of [va, va + len) translates (checked above);
        // the boot sequence only asks for views of the early FDT mapping,
        // which stays mapped read-only, unchanged, for the rest of the run.
        Ok(unsafe { core::slice::from_raw_parts(ptr, len) })
    }

    fn copy(&mut self, dst: Vaddr, src: Vaddr, len: usize) -> Result<(), MemFault> {
        let d = self.checked_ptr(dst, len, true)?;
        let s = self.checked_ptr(src, len, false)?;
        // SAFETY: both ranges translate for the access (checked page by
        // page by AT); the boot sequence copies between a boot module and a
        // guest's RAM, which never overlap and which nothing else uses
        // meanwhile.
        unsafe { core::ptr::copy_nonoverlapping(s as *const u8, d, len) };
        Ok(())
    }

    fn write_bytes(&mut self, dst: Vaddr, data: &[u8]) -> Result<(), MemFault> {
        let d = self.checked_ptr(dst, data.len(), true)?;
        // SAFETY: the range translates for writes (checked by AT) and is a
        // guest's RAM, which nothing else uses while it is being built.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), d, data.len()) };
        Ok(())
    }

    fn entered(&mut self, state: hvmm::SystemState) {
        crate::exception::set_state(state);
    }

    fn start_cpu(
        &mut self,
        cpu: usize,
        root: Paddr,
        // The image's own boot tables: `start_one` reads the same record
        // through the linker symbols (it also serves a guest's CPU_ON).
        _tables: &hvmm_boot::image::StaticTables,
    ) -> Result<(), &'static str> {
        let mpidr = cpu
            .checked_sub(1)
            .and_then(|i| self.mpidrs.get(i).copied().flatten())
            .ok_or("no such CPU in the device tree")?;
        crate::smp::start_one(cpu, mpidr, root)
    }
}
