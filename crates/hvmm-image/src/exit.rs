//! Leaving the machine: semihosting exit with a code (QEMU `-semihosting`),
//! or PSCI SYSTEM_OFF (exit code 0 in QEMU) when semihosting is absent.

/// Success.
pub const EXIT_OK: u32 = 0;
/// A check failed (AT verification, FDT…).
pub const EXIT_FAIL: u32 = 1;
/// A Rust panic.
pub const EXIT_PANIC: u32 = 2;
/// An exception reached the vectors.
pub const EXIT_EXCEPTION: u32 = 3;
/// Not entered at EL2 / in HYP mode.
pub const EXIT_WRONG_MODE: u32 = 4;
/// Secondary CPUs did not all come up.
pub const EXIT_SMP: u32 = 6;
/// `start_hvmm` or `start_secondary` returned (cannot happen).
pub const EXIT_RETURNED: u32 = 8;

extern "C" {
    /// The head's exit routine (PC-relative: works with the MMU on or off).
    fn hvmm_exit(code: usize) -> !;
}

/// Ends the run with `code`.
pub fn exit(code: u32) -> ! {
    // SAFETY: `hvmm_exit` only touches its own data words and traps to the
    // semihosting host or the PSCI firmware; it never returns.
    unsafe { hvmm_exit(code as usize) }
}
