//! # el2-hello — hvmm in the smallest arm64 hypervisor
//!
//! What a hypervisor author writes to use hvmm at EL2, and nothing else:
//! only the core (`hvmm`) and the processor back end (`hvmm-arch`), no Xen
//! item. `cargo xtask example-el2` builds it and boots it on QEMU:
//!
//! ```text
//! qemu-system-aarch64 -M virt,virtualization=on -cpu cortex-a57 -m 128M \
//!     -nographic -semihosting -kernel target/el2-hello/aarch64-unknown-none/release/el2-hello
//! ```
//!
//! 1. **The head** (assembly, below) runs at EL2 with the MMU off: stack,
//!    FP/SIMD untrapped, BSS zeroed, vectors, then the MMU on with a static
//!    identity map of two 1 GiB blocks (devices, RAM), using the register
//!    values hvmm's tables assume — `MAIR_EL2` = [`MAIR_VALUE`], `TCR_EL2` =
//!    [`regs::tcr_el2`] for this CPU's PA size, `SCTLR_EL2` =
//!    [`regs::SCTLR_EL2_BOOT`].
//! 2. **The parts** hvmm needs: the processor ([`Aarch64El2`]), a frame
//!    allocator ([`PoolFrames`]: 64 frames in BSS) and a way to reach table
//!    pages ([`Identity`]: every frame at VA = PA, which holds before and
//!    after the switch because both tables map this image identity).
//! 3. **A stage-1 table** ([`Table::new`]) mapping the image with a
//!    permission per section (text RX, rodata RO, data and BSS RW) and the
//!    UART as device memory; then the switch to it
//!    ([`hvmm_arch::aarch64::switch_root_identity`]) and WXN on.
//! 4. **A page**: map a new VA to a page of BSS, write through it, read the
//!    value back at the page's identity address; `protect` it read-only and
//!    check with `AT` that writes now fault; `unmap` it.
//! 5. **A stage-2 table** ([`Table::new_stage2`], 40-bit IPA, VMID 1): RAM
//!    as a 2 MiB block, one page made read-only (the block is split), the
//!    UART; its VTTBR and VTCR; then destroyed, every frame given back.
//! 6. Exit through PSCI `SYSTEM_OFF` (QEMU exits 0), or on any failure
//!    through semihosting with exit code 1.
//!
//! On hardware (not QEMU, which models no caches) the head would also
//! invalidate the data cache lines of the image before turning the MMU on.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

use core::fmt::{self, Write};
use hvmm::attr::MAIR_VALUE;
use hvmm::{
    AccessError, AccessPath, Arch, Arm64, Arm64Stage2, Attrs, CpuOps, FrameAlloc, Ipa, Mfn,
    OutOfFrames, Paddr, S2Attrs, Table, TableAccess, Vaddr, Vmid, PAGE_SIZE,
};
use hvmm_arch::{regs, Aarch64El2};

// ---------------------------------------------------------------------------
// The head
// ---------------------------------------------------------------------------

core::arch::global_asm!(
    r#"
    .section .text.head, "ax"
    .global _start
_start:
    mrs     x0, CurrentEL
    cmp     x0, #8                  // EL2?
    b.ne    .
    ldr     x0, ={CPTR}
    msr     cptr_el2, x0            // FP/SIMD not trapped: Rust may use them
    isb
    ldr     x0, =__stack_top
    mov     sp, x0
    ldr     x0, =__bss_start
    ldr     x1, =__bss_end
1:  cmp     x0, x1
    b.hs    2f
    str     xzr, [x0], #8
    b       1b
2:  ldr     x0, =vectors
    msr     vbar_el2, x0
    // The registers hvmm's tables assume: its MAIR, its TCR (T0SZ 16,
    // 4 KiB granule, write-back walks) with PS = this CPU's PA size.
    ldr     x0, ={MAIR}
    msr     mair_el2, x0
    mrs     x1, id_aa64mmfr0_el1
    and     x1, x1, #0xf
    cmp     x1, #5
    mov     x2, #5
    csel    x1, x1, x2, ls
    ldr     x0, ={TCR0}
    orr     x0, x0, x1, lsl #16
    msr     tcr_el2, x0
    ldr     x0, =boot_l0
    msr     ttbr0_el2, x0
    isb
    tlbi    alle2
    dsb     nsh
    isb
    ldr     x0, ={SCTLR}
    msr     sctlr_el2, x0
    isb
    bl      el2_main
    b       .

    // Every exception goes to `el2_exception` (which does not return).
    .balign 2048
vectors:
    .rept 16
    mrs     x0, esr_el2
    mrs     x1, far_el2
    mrs     x2, elr_el2
    bl      el2_exception
    .balign 128
    .endr

    // The head's identity map: two 1 GiB blocks. Level 1, entry 0: devices
    // (Device-nGnRnE, AttrIndx 0, XN); entry 1: RAM from 0x4000_0000
    // (Normal write-back, AttrIndx 7, inner shareable). AF set, AP[1] = 1.
    .section .data.boot_tables, "aw"
    .balign 4096
boot_l0:
    .quad   boot_l1 + 3
    .fill   511, 8, 0
boot_l1:
    .quad   0x0000000000000000 + (1 << 54) + (1 << 10) + (1 << 6) + (0 << 2) + 1
    .quad   0x0000000040000000 + (1 << 10) + (3 << 8) + (1 << 6) + (7 << 2) + 1
    .fill   510, 8, 0

    .section .bss.stack, "aw", @nobits
    .balign 16
    .space  0x8000
__stack_top:
"#,
    CPTR = const regs::CPTR_EL2_NO_TRAPS,
    MAIR = const MAIR_VALUE,
    TCR0 = const regs::tcr_el2(0),
    SCTLR = const regs::SCTLR_EL2_BOOT,
);

// ---------------------------------------------------------------------------
// Console and exit
// ---------------------------------------------------------------------------

/// QEMU virt's PL011 UART.
const UART: u64 = 0x0900_0000;

/// The PL011's data register, polled on its "transmit FIFO full" flag.
struct Uart;

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            let fr = (UART + 0x18) as *const u32;
            let dr = UART as *mut u32;
            // SAFETY: the PL011's registers, mapped as device memory by the
            // head's table and by the table this program builds.
            unsafe {
                while core::ptr::read_volatile(fr) & (1 << 5) != 0 {}
                core::ptr::write_volatile(dr, u32::from(b));
            }
        }
        Ok(())
    }
}

macro_rules! say {
    ($($t:tt)*) => {{
        let _ = writeln!(Uart, $($t)*);
    }};
}

/// PSCI SYSTEM_OFF: QEMU exits with status 0.
fn power_off() -> ! {
    // SAFETY: PSCI SYSTEM_OFF takes no argument and does not return; the
    // conduit is `smc` with `virtualization=on`.
    unsafe { hvmm_arch::aarch64::smc(0x8400_0008, 0, 0, 0) };
    fail_exit()
}

/// Semihosting `SYS_EXIT` with status 1 (QEMU runs with `-semihosting`).
fn fail_exit() -> ! {
    let block = [0x20026u64, 1];
    loop {
        // SAFETY: the semihosting call reads the two words at x1 and ends
        // the run; nothing else is touched.
        unsafe {
            core::arch::asm!("hlt #0xf000", in("x0") 0x18u64, in("x1") block.as_ptr(), options(nostack));
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    say!("el2-hello: FAILED: {info}");
    fail_exit()
}

#[no_mangle]
extern "C" fn el2_exception(esr: u64, far: u64, elr: u64) -> ! {
    say!("el2-hello: FAILED: exception at {elr:#x}: ESR_EL2 {esr:#x}, FAR_EL2 {far:#x}");
    fail_exit()
}

// ---------------------------------------------------------------------------
// The parts hvmm needs
// ---------------------------------------------------------------------------

/// Frames for page tables.
const POOL_FRAMES: usize = 64;

/// The frames' memory: page aligned, in BSS, touched only through hvmm.
#[repr(C, align(8192))]
struct Pool([[u64; 512]; POOL_FRAMES]);

static mut POOL: Pool = Pool([[0; 512]; POOL_FRAMES]);

/// A page for the new mapping of step 4.
#[repr(C, align(4096))]
struct Page([u64; 512]);

static mut SCRATCH: Page = Page([0; 512]);

/// A frame allocator over [`POOL`]: one bit per frame, and the reservation
/// hvmm's all-or-nothing updates make before they write anything.
struct PoolFrames {
    base: Mfn,
    used: u64,
    reserved: usize,
}

impl PoolFrames {
    fn new() -> Self {
        let base = core::ptr::addr_of!(POOL) as u64;
        PoolFrames {
            base: Paddr(base).mfn(),
            used: 0,
            reserved: 0,
        }
    }
    fn free_count(&self) -> usize {
        POOL_FRAMES - self.used.count_ones() as usize
    }
    fn in_use(&self) -> usize {
        self.used.count_ones() as usize
    }
    fn contains(&self, mfn: Mfn) -> bool {
        mfn.0.wrapping_sub(self.base.0) < POOL_FRAMES as u64
    }
}

impl FrameAlloc for PoolFrames {
    fn reserve(&mut self, n: usize) -> Result<(), OutOfFrames> {
        let available = self.free_count();
        if n > available {
            return Err(OutOfFrames {
                needed: n,
                available,
            });
        }
        self.reserved = n;
        Ok(())
    }
    fn take(&mut self) -> Option<Mfn> {
        if self.reserved == 0 {
            return None;
        }
        let i = (!self.used).trailing_zeros() as u64;
        self.used |= 1 << i;
        self.reserved -= 1;
        Some(self.base.add(i))
    }
    fn unreserve(&mut self) {
        self.reserved = 0;
    }
    fn free(&mut self, mfn: Mfn) {
        if self.contains(mfn) {
            self.used &= !(1 << (mfn.0 - self.base.0));
        }
    }
    /// A stage-2 root of a 40-bit IPA space is two pages, aligned to 8 KiB.
    fn alloc_contiguous(&mut self, frames: usize) -> Result<Mfn, OutOfFrames> {
        let n = frames as u64;
        let fail = OutOfFrames {
            needed: frames,
            available: self.free_count(),
        };
        if frames == 0 || !frames.is_power_of_two() || frames > POOL_FRAMES {
            return Err(fail);
        }
        let mask = (1u64 << n).wrapping_sub(1) | if n == 64 { u64::MAX } else { 0 };
        let first = (0..=(POOL_FRAMES as u64 - n))
            .find(|&i| (self.base.0 + i).is_multiple_of(n) && (self.used >> i) & mask == 0)
            .ok_or(fail)?;
        self.used |= mask << first;
        Ok(self.base.add(first))
    }
}

/// Table pages reached at VA = PA: this program runs identity-mapped, and
/// its tables come from [`POOL`], inside the image.
struct Identity {
    pool: Mfn,
}

impl AccessPath for Identity {
    fn name(&self) -> &'static str {
        "identity"
    }
    fn can_reach(&self, mfn: Mfn) -> bool {
        mfn.0.wrapping_sub(self.pool.0) < POOL_FRAMES as u64
    }
}

impl<A: Arch> TableAccess<A> for Identity {
    fn map_table(&mut self, _arch: &mut A, mfn: Mfn) -> Result<Vaddr, AccessError> {
        if !self.can_reach(mfn) {
            return Err(AccessError::Unreachable {
                provider: self.name(),
            });
        }
        Ok(Vaddr(mfn.paddr().0))
    }
    fn unmap_table(&mut self, _arch: &mut A, _mfn: Mfn, _va: Vaddr) {}
}

// ---------------------------------------------------------------------------
// The program
// ---------------------------------------------------------------------------

extern "C" {
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __data_end: u8;
}

/// The address of a linker symbol (taking it reads nothing).
macro_rules! sym {
    ($s:ident) => {
        core::ptr::addr_of!($s) as u64
    };
}

/// Pages in `[start, end)` (page-aligned by the linker script).
fn pages(start: u64, end: u64) -> u64 {
    (end - start) / PAGE_SIZE
}

/// A VA that nothing else maps: 4 GiB.
const NEW_VA: Vaddr = Vaddr(0x1_0000_0000);

#[no_mangle]
extern "C" fn el2_main() -> ! {
    say!("el2-hello: EL2, MMU on with the head's boot tables");
    match run() {
        Ok(()) => {
            say!("el2-hello: done");
            power_off()
        }
        Err(e) => {
            say!("el2-hello: FAILED: {e}");
            fail_exit()
        }
    }
}

fn run() -> Result<(), hvmm::Error> {
    // SAFETY: EL2 with the MMU on; the only addresses hvmm writes through are
    // the pool's frames, which nothing else references.
    let mut cpu = unsafe { Aarch64El2::new() };
    let mut frames = PoolFrames::new();
    let pool = frames.base;

    // Stage 1: the image, a permission per section, and the UART.
    let mut hyp = Table::new(Arm64, &mut cpu, Identity { pool }, &mut frames)?;
    let (text, text_end) = (sym!(__text_start), sym!(__text_end));
    let (ro, ro_end) = (sym!(__rodata_start), sym!(__rodata_end));
    let (data, data_end) = (sym!(__data_start), sym!(__data_end));
    hyp.map(Vaddr(text), Paddr(text), pages(text, text_end), Attrs::RX)?;
    if ro_end > ro {
        hyp.map(Vaddr(ro), Paddr(ro), pages(ro, ro_end), Attrs::RO)?;
    }
    hyp.map(Vaddr(data), Paddr(data), pages(data, data_end), Attrs::RW)?;
    hyp.map(Vaddr(UART), Paddr(UART), 1, Attrs::DEVICE)?;
    say!(
        "el2-hello: stage 1 root {}: text RX, rodata RO, data RW, UART device ({} table pages)",
        hyp.root().paddr(),
        hyp.frames().in_use()
    );

    // The switch: MAIR and TCR already hold hvmm's values (the head).
    // SAFETY: this code runs identity-mapped in both tables, the new one maps
    // all of the image (code, data, stack) and the UART, and the engine wrote
    // every descriptor with its barriers.
    unsafe { hvmm_arch::aarch64::switch_root_identity(hyp.root().paddr()) };
    // SAFETY: no page of this program is both writable and executable.
    unsafe { hvmm_arch::aarch64::set_wxn(true) };
    if hyp.arch().root() != hyp.root().paddr() || !hvmm_arch::aarch64::wxn() {
        panic!("TTBR0_EL2 / WXN not as set");
    }
    say!("el2-hello: switched to hvmm's table, WXN on");

    // A page: map, write through it, read back at the identity address.
    let scratch = core::ptr::addr_of_mut!(SCRATCH) as u64;
    hyp.map(NEW_VA, Paddr(scratch), 1, Attrs::RW)?;
    let at = hyp.arch_mut().hw_translate(NEW_VA, true);
    if at.map(|r| r.pa) != Ok(Paddr(scratch)) {
        panic!("AT of the new page: {at:?}");
    }
    // SAFETY: NEW_VA maps SCRATCH read-write (just checked by AT); nothing
    // else uses SCRATCH, and both addresses are 8-byte aligned.
    let back = unsafe {
        core::ptr::write_volatile(NEW_VA.0 as *mut u64, 0x4856_4d4d);
        core::ptr::read_volatile(scratch as *const u64)
    };
    if back != 0x4856_4d4d {
        panic!("read back {back:#x}");
    }
    say!(
        "el2-hello: VA {NEW_VA} -> PA {}: written through the new mapping, read back at the PA",
        Paddr(scratch)
    );
    hyp.protect(NEW_VA, 1, Attrs::RO)?;
    let write = hyp.arch_mut().hw_translate(NEW_VA, true);
    let read = hyp.arch_mut().hw_translate(NEW_VA, false);
    let Err(denied) = write else {
        panic!("a write to the read-only page translates: {write:?}");
    };
    if read.is_err() {
        panic!("the read-only page does not translate for reads: {read:?}");
    }
    hyp.unmap(NEW_VA, 1)?;
    let gone = hyp.arch_mut().hw_translate(NEW_VA, false);
    let Err(gone) = gone else {
        panic!("the unmapped page still translates: {gone:?}");
    };
    say!(
        "el2-hello: protect -> AT S1E2W refused ({:?} fault); unmap -> AT S1E2R refused ({:?} fault)",
        denied.kind,
        gone.kind
    );

    // Stage 2 for a guest: 40-bit IPA, VMID 1.
    let (_, cpu, _, frames) = hyp.into_parts();
    let before = frames.in_use();
    let mut guest = Table::new_stage2(Arm64Stage2::<40>, Vmid(1), cpu, Identity { pool }, frames)?;
    guest.map(Ipa(0x4000_0000), Paddr(0x4800_0000), 512, S2Attrs::RAM)?;
    guest.map(Ipa(UART), Paddr(UART), 1, S2Attrs::DEVICE)?;
    let split = guest.protect(Ipa(0x4000_5000), 1, S2Attrs::RAM_RO)?;
    let leaf = guest.translate(Ipa(0x4000_5000))?;
    let Some(leaf) = leaf.filter(|l| l.attrs == Some(S2Attrs::RAM_RO) && l.level == 3) else {
        panic!("IPA 0x40005000: {leaf:?}");
    };
    let parange = hvmm_arch::aarch64::id_aa64mmfr0() & 0xf;
    say!(
        "el2-hello: stage 2 VMID 1: IPA 0x40005000 -> PA {} (level {}, read-only, {} split), VTTBR {:#x}, VTCR {:#x}",
        leaf.pa,
        leaf.level,
        split.splits,
        guest.vttbr(),
        regs::vtcr_el2(guest.vtcr(), parange)
    );
    let (raw, cpu, access, frames) = guest.into_parts();
    let freed = Table::from_parts(raw, cpu, access, &mut *frames).destroy()?;
    if frames.in_use() != before {
        panic!(
            "frames in use {} after destroy, {before} before",
            frames.in_use()
        );
    }
    say!("el2-hello: stage 2 destroyed, {freed} pages freed, every frame back");
    Ok(())
}
