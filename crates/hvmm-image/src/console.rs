//! The console, reached through fixmap slot 0 (Device-nGnRE, XN): the UART
//! the device tree names (`/chosen/stdout-path`), a PL011 (QEMU's `virt`) or
//! a Cadence UART (the ZynqMP); a PL011 at 0x0900_0000 when the tree names
//! none hvmm drives.
//!
//! One lock serialises lines between CPUs. The exception and panic paths
//! take the console over with [`force_unlock`]: they never return, and a
//! CPU that faulted while printing must still be able to report it.

use crate::fdt::{Uart, UartKind};
use crate::fixmap;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use hvmm::{Attrs, Paddr, PAGE_SIZE};

/// PL011: data register, flag register and its TX-FIFO-full bit.
const PL011_DR: usize = 0x00;
const PL011_FR: usize = 0x18;
const PL011_FR_TXFF: u32 = 1 << 5;
/// Cadence UART: control register (TX enable, TX disable), channel status
/// register and its TX-FIFO-full bit, TX/RX FIFO.
const CDNS_CR: usize = 0x00;
const CDNS_CR_TXEN: u32 = 1 << 4;
const CDNS_CR_TXDIS: u32 = 1 << 5;
const CDNS_SR: usize = 0x2c;
const CDNS_SR_TXFULL: u32 = 1 << 4;
const CDNS_FIFO: usize = 0x30;

/// 0: not mapped yet; 1: PL011; 2: Cadence.
static KIND: AtomicU8 = AtomicU8::new(0);
static LOCK: AtomicBool = AtomicBool::new(false);

/// The UART used when the device tree names none hvmm drives.
pub const DEFAULT: Uart = Uart {
    kind: UartKind::Pl011,
    base: crate::layout::UART_PA,
};

/// Maps `uart` in fixmap slot 0 (its entry is written directly: the fixmap
/// L3 table is in the image) and makes it the console; a Cadence UART's
/// transmitter is enabled (it may come out of reset disabled).
pub fn init(uart: Uart) {
    let page = uart.base & !(PAGE_SIZE - 1);
    fixmap::map(fixmap::SLOT_CONSOLE, Paddr(page), Attrs::DEVICE);
    PAGE.store(page, Ordering::Relaxed);
    BASE_OFF.store((uart.base - page) as usize, Ordering::Relaxed);
    if uart.kind == UartKind::Cadence {
        let cr = base() + CDNS_CR;
        // SAFETY: the UART's registers were just mapped at fixmap slot 0;
        // enabling its transmitter has no other effect.
        unsafe {
            let v = core::ptr::read_volatile(cr as *const u32);
            core::ptr::write_volatile(cr as *mut u32, (v & !CDNS_CR_TXDIS) | CDNS_CR_TXEN);
        }
    }
    let k = match uart.kind {
        UartKind::Pl011 => 1,
        UartKind::Cadence => 2,
    };
    KIND.store(k, Ordering::Release);
}

/// The registers' offset in the mapped page.
/// Physical address of the page mapped at the console's fixmap slot.
static PAGE: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The console's registers: the page [`init`] mapped at fixmap slot 0 (the
/// shared boot declares it as the platform's device), `None` before.
pub fn mapped_page() -> Option<Paddr> {
    KIND.load(Ordering::Acquire)
        .ne(&0)
        .then(|| Paddr(PAGE.load(Ordering::Relaxed)))
}

static BASE_OFF: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

fn base() -> usize {
    fixmap::slot_va(fixmap::SLOT_CONSOLE).0 as usize + BASE_OFF.load(Ordering::Relaxed)
}

fn putc(kind: u8, b: u8) {
    let base = base();
    let (status, full, data) = if kind == 2 {
        (CDNS_SR, CDNS_SR_TXFULL, CDNS_FIFO)
    } else {
        (PL011_FR, PL011_FR_TXFF, PL011_DR)
    };
    // SAFETY: the UART's registers are mapped at fixmap slot 0 (KIND is
    // only set after `init` mapped them); volatile MMIO accesses to the
    // status and data registers have no other effect than sending a byte.
    unsafe {
        while core::ptr::read_volatile((base + status) as *const u32) & full != 0 {
            core::hint::spin_loop();
        }
        core::ptr::write_volatile((base + data) as *mut u32, u32::from(b));
    }
}

/// The console as a [`fmt::Write`] (no locking: see [`print_line`]).
pub struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let kind = KIND.load(Ordering::Acquire);
        if kind == 0 {
            return Ok(());
        }
        for b in s.bytes() {
            if b == b'\n' {
                putc(kind, b'\r');
            }
            putc(kind, b);
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
