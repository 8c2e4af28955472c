//! Expected faults. A check arms the handler, makes one access that should
//! fault, and gets the decoded fault back; the vectors skip the faulting
//! instruction. Any other exception is reported and ends the run.

use crate::arch::{self, Fault};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

static ARMED: AtomicBool = AtomicBool::new(false);

/// The last expected fault (written by the handler, read after it).
struct Last(UnsafeCell<Option<Fault>>);
// SAFETY: only the primary CPU arms faults; the handler runs on that CPU
// between `expect`'s arming and its read, so accesses never overlap.
unsafe impl Sync for Last {}
static LAST: Last = Last(UnsafeCell::new(None));

/// Runs `access` with the handler armed for one data abort; returns the
/// fault it took, if any.
pub fn expect(access: impl FnOnce()) -> Option<Fault> {
    // SAFETY: see `Last`: nothing else touches it while not armed.
    unsafe { *LAST.0.get() = None };
    ARMED.store(true, Ordering::SeqCst);
    access();
    ARMED.store(false, Ordering::SeqCst);
    // SAFETY: the handler (same CPU) is done with it.
    unsafe { *LAST.0.get() }
}

/// Called by the vectors with the vector index and the saved registers.
/// Returns only for an expected data abort (the vectors then skip the
/// faulting instruction); anything else is reported and ends the run.
#[no_mangle]
extern "C" fn guest_exception(kind: usize, frame: &mut arch::Frame) {
    let f = arch::decode(kind, frame);
    if f.data_abort && ARMED.swap(false, Ordering::SeqCst) {
        // SAFETY: see `Last`.
        unsafe { *LAST.0.get() = Some(f) };
        return;
    }
    crate::console::force_unlock();
    println!(
        "hvmm-guest: unexpected exception ({}) on cpu {:#x}: syndrome {:#x} ({}), address {:#x}, pc {:#x}",
        f.kind,
        arch::mpidr(),
        f.syndrome,
        if f.data_abort { f.status_name() } else { "not a data abort" },
        f.far,
        f.pc
    );
    crate::finish(1)
}
