//! # hvmm-guest — a test guest for hvmm's stage-2 tables
//!
//! A tiny bare-metal program that runs as domain 0: at EL1 on arm64
//! (entered like a Linux arm64 Image: x0 = DTB, MMU off) or in SVC mode on
//! arm32 (entered like a zImage: r0 = 0, r1 = ~0, r2 = DTB). It checks from
//! the inside what it can and cannot reach, prints one line per check on
//! the PL011 its DTB names, and powers off through PSCI: SYSTEM_OFF when
//! every check passed, SYSTEM_RESET otherwise. The protocol is in the
//! crate's README.
//!
//! - `arch/*_head.S`: image header, MMU-off entry (boot tables, MMU on,
//!   jump to the link address), secondary entry, exception vectors.
//! - [`mm`]: the guest's stage-1 tables (identity map, DTB, windows).
//! - [`platform`]: what the DTB says (RAM, UART, CPUs, bootargs).
//! - [`checks`]: the five checks; [`fault`]: expected data aborts.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[macro_use]
mod console;
mod arch;
mod checks;
mod fault;
mod mm;
mod platform;
mod psci;

use core::panic::PanicInfo;
use hvmm_bootinfo::dtb::{total_size, Dtb};

/// Bytes of stack per CPU.
pub const STACK_SIZE: usize = 0x4000;
/// CPUs the guest can run (one stack each).
pub const MAX_CPUS: usize = 8;

/// Maps the DTB at [`mm::DTB_VA`] and checks it.
fn map_dtb(dtb_pa: u64) -> Option<(Dtb<'static>, u64)> {
    let page = dtb_pa & !(mm::PAGE - 1);
    let off = (dtb_pa - page) as usize;
    mm::map(mm::DTB_VA, page, mm::PAGE, mm::Attr::Normal).ok()?;
    // SAFETY: the DTB's first page is mapped at DTB_VA; the FDT header
    // (40 bytes) starts at `off` and ends inside it or the next page, which
    // is mapped before more than 8 bytes are read.
    let header = unsafe { core::slice::from_raw_parts((mm::DTB_VA + off) as *const u8, 8) };
    let total = total_size(header).ok()?;
    let len = (off as u64 + total as u64).div_ceil(mm::PAGE) * mm::PAGE;
    if len > mm::DTB_MAX {
        return None;
    }
    mm::map(mm::DTB_VA, page, len, mm::Attr::Normal).ok()?;
    // SAFETY: `total` bytes from `off` are mapped (read-only use) for the
    // rest of the run; nothing writes the DTB.
    let blob = unsafe { core::slice::from_raw_parts((mm::DTB_VA + off) as *const u8, total) };
    Dtb::new(blob).ok().map(|d| (d, total as u64))
}

/// The first Rust code on the boot CPU: MMU on, at the link address, on
/// CPU 0's stack, interrupts masked.
#[no_mangle]
extern "C" fn guest_main(dtb_pa: usize, load_pa: usize) -> ! {
    mm::init(load_pa);
    let dtb_pa = dtb_pa as u64;
    // Without a DTB there is no console: a reset is all that can be said.
    let Some((dtb, dtb_len)) = map_dtb(dtb_pa) else {
        finish(1)
    };
    let p = platform::read(&dtb);
    let Some(uart) = p.uart else { finish(1) };
    let uart_va = if mm::identity_possible(uart, mm::PAGE) {
        mm::map(uart as usize, uart, mm::PAGE, mm::Attr::Device).map(|()| uart as usize)
    } else {
        mm::window(mm::WINDOWS - 1, uart, mm::Attr::Device)
    };
    match uart_va {
        Ok(va) => console::init(va),
        Err(_) => finish(1),
    }

    let (img_start, img_end) = mm::image_pa();
    println!(
        "hvmm-guest: {} {}, cpu {:#x}, image at {:#x}-{:#x}, DTB at {:#x} ({} bytes)",
        arch::NAME,
        arch::mode(),
        arch::mpidr(),
        img_start,
        img_end,
        dtb_pa,
        dtb_len
    );
    for &(base, size) in p.ram() {
        println!(
            "hvmm-guest: RAM {:#x}-{:#x} ({} MiB)",
            base,
            base + size,
            size >> 20
        );
    }
    println!("hvmm-guest: bootargs \"{}\"", p.bootargs);

    let mut failed = checks::identity_map(&p);
    println!(
        "hvmm-guest: stage 1 on: image at {:#x}, DTB at {:#x}, the rest identity; {} of {} table pages",
        arch::LINK_VA,
        mm::DTB_VA,
        mm::tables_used(),
        mm::POOL_PAGES
    );
    let ctx = checks::Context {
        platform: &p,
        avoid: [(img_start, img_end), (dtb_pa, dtb_pa + dtb_len)],
    };
    failed += checks::run_all(&ctx);
    finish(failed)
}

/// The first Rust code on a secondary CPU (PSCI CPU_ON): MMU on with the
/// primary's tables, on stack `slot`.
#[no_mangle]
extern "C" fn guest_secondary(slot: usize) -> ! {
    checks::secondary(slot)
}

/// Prints the verdict and powers off: SYSTEM_OFF when nothing failed,
/// SYSTEM_RESET otherwise (the hypervisor turns it into the run's exit
/// code).
pub fn finish(failed: usize) -> ! {
    if failed == 0 {
        println!("hvmm-guest: PASS");
        println!("hvmm-guest: SYSTEM_OFF");
        psci::call(psci::SYSTEM_OFF, 0, 0, 0);
    } else {
        println!("hvmm-guest: FAIL ({failed} checks)");
        println!("hvmm-guest: SYSTEM_RESET");
        psci::call(psci::SYSTEM_RESET, 0, 0, 0);
    }
    println!("hvmm-guest: PSCI returned from the power call: parked");
    loop {
        arch::wait_for_event();
    }
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    console::force_unlock();
    println!("hvmm-guest: PANIC: {info}");
    finish(1)
}
