//! Whole boots on the machine model, judged the same way by the boot
//! crate's tests and the fuzz targets.

use hvmm::{FaultKind, SystemState};
use hvmm_boot::model::{run, Outcome, Scenario};
use hvmm_boot::report::BootStep;
use hvmm_boot::BootError;

/// Runs `s`, which must boot: Active reached and verified, the end-of-boot
/// audit ran over every root and found nothing, and the model saw nothing
/// wrong ([`Outcome::ok`]: no stale TLB entry, no break-before-make
/// violation, no unsafe root switch, no TLB conflict, the stress and domain
/// 0's two-stage check passed if they ran). Panics with the log otherwise.
pub fn boot_ok(s: &Scenario) -> Outcome {
    let o = run(s).expect("scenario set-up");
    if let Err(f) = &o.result {
        panic!("boot failed: {}\n{}", f.error, o.log);
    }
    // The end-of-boot audit ran, walked every root and found nothing.
    o.audited().unwrap_or_else(|e| panic!("{e}\n{}", o.log));
    assert!(
        o.ok(),
        "model checks failed: stale {:x?}, BBM {:x?}, root switches {:x?}, conflicts {:x?}, stress {:?}, dom0 {:?}\n{}",
        o.stale,
        o.bbm,
        o.root_switches,
        o.conflicts,
        o.stress,
        o.dom0_two_stage,
        o.log
    );
    let sum = o.result.as_ref().expect("checked above");
    assert_eq!(sum.state, Some(SystemState::Active), "{}", o.log);
    o
}

/// Runs `s`, which must fail to boot; returns the outcome and the error.
pub fn boot_fails(s: &Scenario) -> (Outcome, BootError) {
    let o = run(s).expect("scenario set-up");
    let err = match &o.result {
        Ok(_) => panic!("boot should have failed\n{}", o.log),
        Err(f) => f.error.clone(),
    };
    (o, err)
}

/// Runs `s` and panics on anything but a verified boot or a named rejection.
pub fn check_boot(s: &Scenario) {
    let out = match run(s) {
        // Set-up refused (e.g. a DTB too large to place): named.
        Err(e) => {
            if std::env::var_os("HVMM_FUZZ_VERBOSE").is_some() {
                std::eprintln!("scenario: {e}");
            }
            assert!(!e.0.is_empty(), "scenario error without a message");
            return;
        }
        Ok(o) => o,
    };
    if std::env::var_os("HVMM_FUZZ_VERBOSE").is_some_and(|v| v == "log") {
        std::eprintln!("{}", out.log);
    }
    if std::env::var_os("HVMM_FUZZ_VERBOSE").is_some() {
        match &out.result {
            Ok(sum) => std::eprintln!("boot: reached {:?}", sum.state),
            Err(f) => std::eprintln!("boot: {}", f.error),
        }
    }
    assert!(
        out.stale.is_empty(),
        "stale TLB entries after the boot: {:x?}\n{}",
        out.stale,
        out.log
    );
    assert!(
        out.bbm.is_empty(),
        "break-before-make violations: {:x?}\n{}",
        out.bbm,
        out.log
    );
    let conflicts = out.machine.tlb_conflicts();
    assert!(
        conflicts.is_empty(),
        "TLB conflicts: {conflicts:x?}\n{}",
        out.log
    );
    match &out.result {
        Ok(sum) => {
            assert!(
                out.ok(),
                "boot returned Ok but is not verified\n{}",
                out.log
            );
            assert_eq!(sum.pmap_in_use, 0, "PMAP slot left held\n{}", out.log);
        }
        Err(f) => {
            let e = &f.error;
            assert!(
                !e.message.as_str().is_empty(),
                "failure without a message at {:?}\n{}",
                e.step,
                out.log
            );
            assert_eq!(
                f.summary.pmap_in_use, 0,
                "PMAP slot left held after a failure\n{}",
                out.log
            );
            match e.step {
                // The DTB is read from here on: any named refusal is fine.
                BootStep::EarlyFdtMap | BootStep::BootFdtInfo => {}
                // Later steps fail when the DTB describes a machine that is
                // not there (RAM that does not exist, everything reserved):
                // still a named error, and a fault only as an external abort
                // (an access to memory the DTB invented).
                BootStep::SetupMm
                | BootStep::Frametable
                | BootStep::EndBootAllocator
                | BootStep::Vmap
                | BootStep::SmpBringUp
                | BootStep::FreeInitMem
                // A DTB's modules may be no kernel, or one that does not fit.
                | BootStep::Dom0 => {}
                // Before the DTB is read, or the final proof: never.
                BootStep::ImageDiscovery
                | BootStep::SetupPagetables
                | BootStep::Verify
                | BootStep::Audit => {
                    panic!("a DTB made the boot fail at {:?}: {e}\n{}", e.step, out.log)
                }
            }
            if let Some(fault) = e.fault {
                assert_eq!(
                    fault.kind,
                    FaultKind::External,
                    "the boot took a {:?} fault at {:?} ({e})\n{}",
                    fault.kind,
                    e.step,
                    out.log
                );
            }
        }
    }
}
