//! The PL011 console. Its VA is set once by [`init`] (the UART's page is
//! mapped Device-nGnRnE); until then nothing is printed.
//!
//! One lock serialises lines between CPUs; the exception and panic paths
//! take the console over with [`force_unlock`].

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

const UARTDR: usize = 0x00;
const UARTFR: usize = 0x18;
const UARTFR_TXFF: u32 = 1 << 5;

static BASE: AtomicUsize = AtomicUsize::new(0);
static LOCK: AtomicBool = AtomicBool::new(false);

/// Uses the PL011 whose registers are mapped at `va`.
pub fn init(va: usize) {
    BASE.store(va, Ordering::Release);
}

fn putc(base: usize, b: u8) {
    // SAFETY: `base` is the VA `init` was given, where the PL011's register
    // page is mapped as Device memory; volatile accesses to the flag and
    // data registers only send a byte.
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
        let base = BASE.load(Ordering::Acquire);
        if base == 0 {
            return Ok(());
        }
        for b in s.bytes() {
            if b == b'\n' {
                putc(base, b'\r');
            }
            putc(base, b);
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

/// `println!` on the guest console.
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::console::print_line(format_args!($($arg)*))
    };
}
