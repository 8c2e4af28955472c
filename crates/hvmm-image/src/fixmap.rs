//! The fixmap: 512 slots of 4 KiB at VA 0x00a0_0000 whose L3 table is in the
//! image, so its entries are written directly (never through the update
//! engine, which would need the fixmap to reach table pages).
//!
//! Slots: 0 console, 1 misc (`copy_from_paddr`), 2–3 the FDT reader, 4 the
//! back-end self-check.

use crate::arch;
use crate::layout::{fixmap_l3, FIXMAP_VA};
use hvmm::{Arch, Attrs, CpuOps, Paddr, Pte, Vaddr, PAGE_SIZE};

/// The console (PL011).
pub const SLOT_CONSOLE: usize = 0;
/// The FDT reader's structure-block window.
pub const SLOT_FDT_A: usize = 2;
/// The FDT reader's strings-block window.
pub const SLOT_FDT_B: usize = 3;
/// Scratch slot of the back-end self-check.
pub const SLOT_CHECK: usize = 4;

/// The virtual address of a slot.
pub fn slot_va(slot: usize) -> Vaddr {
    Vaddr(FIXMAP_VA + slot as u64 * PAGE_SIZE)
}

/// The virtual address of a slot's L3 entry.
pub fn entry_va(slot: usize) -> Vaddr {
    Vaddr(fixmap_l3().0 + slot as u64 * 8)
}

/// Maps the page at `pa` in `slot` on this CPU. A slot that held another
/// mapping goes through break-before-make (invalid, local TLB flush, new).
pub fn map(slot: usize, pa: Paddr, attrs: Attrs) {
    assert!(slot < 512, "fixmap slot {slot} out of range");
    let mut cpu = arch::hw();
    let new = Pte::leaf::<arch::Fmt>(3, pa.page_floor(), attrs, false);
    let e = entry_va(slot);
    let old = cpu.read_pte(e).unwrap_or(0);
    if old == new.0 {
        return;
    }
    if Pte(old).is_valid() {
        let _ = cpu.write_pte(e, 0);
        cpu.tlb_flush_va_local(slot_va(slot));
    }
    let _ = cpu.write_pte(e, new.0);
    cpu.isb();
}

/// Unmaps `slot` on this CPU.
pub fn unmap(slot: usize) {
    let mut cpu = arch::hw();
    let _ = cpu.write_pte(entry_va(slot), 0);
    cpu.tlb_flush_va_local(slot_va(slot));
}

/// A read window onto physical memory through one fixmap slot; it remaps
/// only when a read leaves the page currently mapped.
pub struct PhysWindow {
    slot: usize,
    page: Option<u64>,
}

impl PhysWindow {
    /// A window using `slot`.
    pub const fn new(slot: usize) -> Self {
        PhysWindow { slot, page: None }
    }

    /// Reads `buf.len()` bytes at `pa` (any alignment, crossing pages).
    pub fn read(&mut self, pa: u64, buf: &mut [u8]) {
        let mut pa = pa;
        let mut done = 0;
        while done < buf.len() {
            let page = pa & !(PAGE_SIZE - 1);
            if self.page != Some(page) {
                map(self.slot, Paddr(page), Attrs::RO);
                self.page = Some(page);
            }
            let off = (pa - page) as usize;
            let n = core::cmp::min(buf.len() - done, PAGE_SIZE as usize - off);
            let src = slot_va(self.slot).0 as usize + off;
            for (i, b) in buf[done..done + n].iter_mut().enumerate() {
                // SAFETY: `src + i` lies in the page just mapped read-only at
                // this slot; the byte read has no side effect.
                *b = unsafe { core::ptr::read_volatile((src + i) as *const u8) };
            }
            done += n;
            pa += n as u64;
        }
    }

    /// A big-endian 32-bit word at `pa`.
    pub fn be32(&mut self, pa: u64) -> u32 {
        let mut b = [0u8; 4];
        self.read(pa, &mut b);
        u32::from_be_bytes(b)
    }

    /// Releases the slot.
    pub fn release(&mut self) {
        if self.page.take().is_some() {
            unmap(self.slot);
        }
    }
}
