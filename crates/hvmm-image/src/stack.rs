//! The boot CPU's stack high-water mark: the unused part of the stack is
//! painted at entry and measured before exit, so a boot that comes close to
//! overflowing says so. Below each stack is a guard page, unmapped once the
//! runtime tables are live: an overflow then faults instead of writing
//! what lies below (the stacks sit right above the page tables).

use crate::layout;

const PAINT: u64 = 0x5a5a_5a5a_5a5a_5a5a;

/// CPU 0's lowest stack byte: its slot's first page is the guard.
fn bottom() -> usize {
    layout::boot_stacks_va().0 as usize + crate::STACK_GUARD
}

/// Bytes of stack each CPU has (its slot less the guard page).
const USABLE: usize = crate::STACK_SIZE - crate::STACK_GUARD;

/// Paints CPU 0's stack below the current frame (called first thing).
pub fn paint() {
    let marker = 0u8;
    let sp = core::hint::black_box(&marker) as *const u8 as usize;
    let end = (sp - 512) & !7;
    let mut p = bottom();
    while p < end {
        // SAFETY: [bottom, sp - 512) is CPU 0's boot stack below the live
        // frames (the head set SP to the slot's end), above its guard page;
        // nothing uses it yet.
        unsafe { core::ptr::write_volatile(p as *mut u64, PAINT) };
        p += 8;
    }
}

/// Bytes of CPU 0's stack ever used.
pub fn used() -> usize {
    let mut p = bottom();
    let top = bottom() + USABLE;
    while p < top {
        // SAFETY: reading CPU 0's own boot stack, below the live frames.
        if unsafe { core::ptr::read_volatile(p as *const u64) } != PAINT {
            break;
        }
        p += 8;
    }
    top - p
}

/// Prints the high-water mark; `false` when over 7/8 of the stack was used.
pub fn report() -> bool {
    let used = used();
    println!(
        "hvmm: boot stack high-water mark: {} KiB of {} KiB",
        used.div_ceil(1024),
        USABLE / 1024
    );
    used < USABLE / 8 * 7
}
