//! Exercises the [`hvmm::Arch`] back end on the real MMU, beyond what the
//! boot-mapping verification covers: `root()` against hardware translation
//! of the root table, a remap with break-before-make and the broadcast TLB
//! invalidation (a missing or wrong invalidation would leave the old
//! translation visible), `zero_page`, and translation faults at level 3.

use crate::arch;
use crate::fixmap::{self, SLOT_CHECK};
use crate::layout;
use core::cell::UnsafeCell;
use hvmm::{Arch, Attrs, CpuOps, FaultKind, Pte, Vaddr, PAGE_SIZE};

#[repr(C, align(4096))]
struct Page(UnsafeCell<[u8; PAGE_SIZE as usize]>);

// SAFETY: only the boot CPU touches the scratch page, before any secondary
// CPU is started.
unsafe impl Sync for Page {}

static SCRATCH: Page = Page(UnsafeCell::new([0; PAGE_SIZE as usize]));

fn read_u64(va: u64) -> u64 {
    // SAFETY: callers pass a mapped, readable, 8-byte aligned address (an
    // image page or the check slot they just mapped).
    unsafe { core::ptr::read_volatile(va as usize as *const u64) }
}

/// Runs the checks; `Err` says which one failed.
pub fn run() -> Result<(), &'static str> {
    let mut hw = arch::hw();

    // root(): the root register holds the PA of the boot root table.
    let root = hw
        .hw_translate(layout::boot_root_table(), false)
        .map_err(|_| "AT of the root table failed")?;
    if hw.root() != root.pa {
        return Err("root() differs from AT of the boot root table");
    }

    // Remap a slot from image page 0 to image page 1 with break-before-make
    // and the inner-shareable invalidation; reads must follow the new PA.
    let slot = fixmap::slot_va(SLOT_CHECK);
    let entry = fixmap::entry_va(SLOT_CHECK);
    let start = layout::image_start().0;
    let pa0 = hw
        .hw_translate(Vaddr(start), false)
        .map_err(|_| "AT of _start failed")?
        .pa;
    let pa1 = hw
        .hw_translate(Vaddr(start + PAGE_SIZE), false)
        .map_err(|_| "AT of _start + 4K failed")?
        .pa;
    let off = 0x40; // the PE header (arm64) / code (arm32): differs between the pages
    if read_u64(start + off) == read_u64(start + PAGE_SIZE + off) {
        return Err("image pages 0 and 1 have the same probe word");
    }
    let _ = hw.write_pte(entry, Pte::leaf::<arch::Fmt>(3, pa0, Attrs::RO, false).0);
    hw.isb();
    if read_u64(slot.0 + off) != read_u64(start + off) {
        return Err("slot mapped to image page 0 reads something else");
    }
    let _ = hw.write_pte(entry, 0);
    hw.tlb_flush_va(slot);
    hw.tlb_sync();
    let _ = hw.write_pte(entry, Pte::leaf::<arch::Fmt>(3, pa1, Attrs::RO, false).0);
    hw.isb();
    if read_u64(slot.0 + off) != read_u64(start + PAGE_SIZE + off) {
        return Err("after remap (TLBI VA, IS) the slot still reads the old page");
    }

    // zero_page through an RW alias of a scratch page of the image.
    let scratch_va = Vaddr(SCRATCH.0.get() as usize as u64);
    let scratch_pa = hw
        .hw_translate(scratch_va, false)
        .map_err(|_| "AT of the scratch page failed")?
        .pa;
    for i in 0..PAGE_SIZE as usize {
        // SAFETY: the scratch page is ours (see `Page`), `i` stays inside it.
        unsafe { core::ptr::write_volatile((scratch_va.0 as usize as *mut u8).add(i), 0xa5) };
    }
    let _ = hw.write_pte(entry, 0);
    hw.tlb_flush_all();
    hw.tlb_sync();
    let _ = hw.write_pte(
        entry,
        Pte::leaf::<arch::Fmt>(3, scratch_pa, Attrs::RW, false).0,
    );
    hw.isb();
    match hw.hw_translate(slot, true) {
        Ok(r) if r.pa == scratch_pa => {}
        _ => return Err("AT write of the RW check slot does not give the scratch page"),
    }
    let _ = hw.zero_page(slot);
    if (0..PAGE_SIZE)
        .step_by(8)
        .any(|o| read_u64(scratch_va.0 + o) != 0)
    {
        return Err("zero_page through the slot left non-zero bytes in the scratch page");
    }

    // Unmapped again: AT reports a translation fault at level 3.
    let _ = hw.write_pte(entry, 0);
    hw.tlb_flush_va_local(slot);
    match hw.hw_translate(slot, false) {
        Err(e) if e.kind == FaultKind::Translation && e.level == 3 => Ok(()),
        Err(_) => Err("AT of the unmapped slot: wrong fault"),
        Ok(_) => Err("AT of the unmapped slot still translates"),
    }
}
