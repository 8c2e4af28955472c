//! # hvmm-image — the bare-metal hvmm image
//!
//! Linked at `XEN_VIRT_START` (0x0020_0000), built for `aarch64-unknown-none`
//! (entered at EL2 as a Linux arm64 Image / PE/COFF file) and
//! `armv7a-none-eabi` (entered in HYP mode as a zImage).
//!
//! - `arch/*_head.S`: the head (MMU off): boot tables, identity map, MMU on,
//!   jump to the link address, fixmap link, BSS, stack; the secondary entry;
//!   the exception vectors; the exit path (semihosting, then PSCI).
//! - [`start_hvmm`] (this file): the first Rust code on the boot CPU. It
//!   brings up the console, finds the image's physical range by hardware
//!   translation and hands a [`boot::BootParams`] to [`boot::rust_main`],
//!   the seam where the shared boot sequence (`hvmm-boot`) plugs in.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[macro_use]
mod console;
mod arch;
mod boot;
mod efi;
mod efi_map;
mod exception;
mod exit;
mod fdt;
mod fixmap;
mod guest;
mod layout;
mod platform;
mod selfcheck;
mod smp;
mod stack;
mod stress;

use core::panic::PanicInfo;

/// With the `big-image` feature: 6 MiB of BSS, nothing else, so that the
/// image spans the four level-3 tables of its 8 MiB range.
#[cfg(feature = "big-image")]
#[used]
static mut BIG_IMAGE_PAD: [u8; 6 << 20] = [0; 6 << 20];

/// Bytes of each CPU's stack slot (the boot stacks live in the image's
/// BSS): a guard page, unmapped once the runtime tables are live, then the
/// stack.
// 192 KiB: the boot with domain 0 peaks at about 115 KiB (the boot
// summary's lists and the guest's device tree are built on the stack);
// the 8 MiB image leaves room for 8 of them.
pub const STACK_SIZE: usize = 0x30000;
/// The guard page at the bottom of each stack slot.
pub const STACK_GUARD: usize = 0x1000;
/// CPUs the image can bring up (boot stacks are reserved for this many).
pub const MAX_CPUS: usize = 8;

/// The first Rust code on the boot CPU: MMU on at the link address, BSS
/// zeroed, on the CPU's boot stack, interrupts masked.
///
/// `dtb_pa` is the device tree blob's physical address as the loader passed
/// it (x0 / r2), `cpu` the CPU index (0).
#[no_mangle]
pub extern "C" fn start_hvmm(dtb_pa: u64, cpu: usize) -> ! {
    stack::paint();
    // The console the device tree names (read through fixmap windows before
    // anything is printed); a malformed tree is reported by the boot itself.
    let uart = fdt::find_console(dtb_pa).ok().flatten();
    console::init(uart.unwrap_or(console::DEFAULT));
    let params = boot::BootParams::discover(dtb_pa, cpu);
    boot::rust_main(&params)
}

/// The first Rust code on a secondary CPU (started by PSCI CPU_ON): MMU on
/// with the boot tables, on its own boot stack.
#[no_mangle]
pub extern "C" fn start_secondary(cpu: usize) -> ! {
    smp::secondary_main(cpu)
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    console::force_unlock();
    println!("hvmm: PANIC: {info}");
    exit::exit(exit::EXIT_PANIC)
}
