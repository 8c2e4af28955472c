//! The PL011 console, reached through fixmap slot 0 (Device-nGnRE, XN).
//!
//! One lock serialises lines between CPUs. The exception and panic paths
//! take the console over with [`force_unlock`]: they never return, and a
//! CPU that faulted while printing must still be able to report it.

use crate::fixmap;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};
use hvmm::{Attrs, Paddr};

const UARTDR: usize = 0x00;
const UARTFR: usize = 0x18;
const UARTFR_TXFF: u32 = 1 << 5;

static READY: AtomicBool = AtomicBool::new(false);
static LOCK: AtomicBool = AtomicBool::new(false);

/// Maps the PL011 in fixmap slot 0 (its entry is written directly: the
/// fixmap L3 table is in the image).
pub fn init() {
    fixmap::map(
        fixmap::SLOT_CONSOLE,
        Paddr(crate::layout::UART_PA),
        Attrs::DEVICE,
    );
    READY.store(true, Ordering::Release);
}

fn base() -> usize {
    fixmap::slot_va(fixmap::SLOT_CONSOLE).0 as usize
}

fn putc(b: u8) {
    let base = base();
    // SAFETY: the PL011's registers are mapped at fixmap slot 0 (READY is
    // only set after `init` mapped them); volatile MMIO accesses to the
    // flag and data registers have no other effect than sending a byte.
    unsafe {
        while core::ptr::read_volatile((base + UARTFR) as *const u32) & UARTFR_TXFF != 0 {
            core::hint::spin_loop();
        }
        core::ptr::write_volatile((base + UARTDR) as *mut u32, u32::from(b));
    }
}

/// The console as a [`fmt::Write`] (no locking: see [`print_line`]).
pub struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if !READY.load(Ordering::Acquire) {
            return Ok(());
        }
        for b in s.bytes() {
            if b == b'\n' {
                putc(b'\r');
            }
            putc(b);
        }
        Ok(())
    }
}

/// Prints one line under the console lock.
pub fn print_line(args: fmt::Arguments<'_>) {
    while LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    let _ = Console.write_fmt(args);
    let _ = Console.write_str("\n");
    LOCK.store(false, Ordering::Release);
}

/// Takes the console over from whoever holds it (exception and panic paths).
pub fn force_unlock() {
    LOCK.store(false, Ordering::Release);
}

/// `println!` on the hvmm console.
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::console::print_line(format_args!($($arg)*))
    };
}
