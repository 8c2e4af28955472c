//! What the boot sequence needs from the machine beyond [`hvmm::Arch`] and
//! [`hvmm::CpuOps`].

use hvmm::{CpuOps, MemFault, Paddr, SystemState, Vaddr};

/// A platform the boot sequence runs on: real hardware (the bare-metal image)
/// or the machine model. Beside the engine's [`hvmm::Arch`] it needs the CPU's
/// own operations ([`CpuOps`]: its index, `AT`, local TLB invalidation,
/// reads through the MMU).
pub trait Platform: CpuOps {
    /// A readable view of mapped memory (the DTB).
    type Bytes: AsRef<[u8]>;
    /// Switches this CPU to the root table `root` (TTBR0_EL2 / HTTBR) and
    /// invalidates this CPU's TLB. The new tables must map the running code
    /// and data at the same addresses as the old ones.
    fn switch_root(&mut self, root: Paddr);
    /// Sets or clears SCTLR_EL2.WXN / HSCTLR.WXN on this CPU.
    fn set_wxn(&mut self, on: bool);
    /// `len` bytes at `va`, read through the MMU.
    fn map_bytes(&mut self, va: Vaddr, len: usize) -> Result<Self::Bytes, MemFault>;
    /// Copies `len` bytes from `src` to `dst`, both read / written through
    /// the MMU (loading a guest: a module's bytes into the guest's RAM).
    fn copy(&mut self, dst: Vaddr, src: Vaddr, len: usize) -> Result<(), MemFault>;
    /// Writes `data` at `dst` through the MMU.
    fn write_bytes(&mut self, dst: Vaddr, data: &[u8]) -> Result<(), MemFault>;
    /// Starts CPU `cpu` (PSCI CPU_ON on hardware) and waits until it reports
    /// in on root table `root` with its MMU on. It turns its MMU on with the
    /// image's boot tables `tables` (their identity entry, recorded by the
    /// head, put back meanwhile), removes that entry and invalidates its TLB
    /// before it switches: its TLB then holds nothing `root` maps otherwise.
    fn start_cpu(
        &mut self,
        cpu: usize,
        root: Paddr,
        tables: &crate::image::StaticTables,
    ) -> Result<(), &'static str>;
    /// Zeroes `len` bytes (whole pages) at `va`, mapped writable. The
    /// default zeroes page by page with [`hvmm::Arch::zero_page`].
    fn zero_range(&mut self, va: Vaddr, len: u64) -> Result<(), MemFault> {
        let mut off = 0;
        while off < len {
            self.zero_page(Vaddr(va.0 + off))?;
            off += hvmm::PAGE_SIZE;
        }
        Ok(())
    }
    /// The system entered `state` (so that an exception report can name
    /// the phase). The default does nothing.
    fn entered(&mut self, state: SystemState) {
        let _ = state;
    }
}
