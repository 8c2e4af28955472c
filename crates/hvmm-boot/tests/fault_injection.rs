//! Fault injection across the whole default boot, both architectures: for
//! every allocator request, every PMAP slot acquisition and every fixmap slot
//! acquisition, a boot in which that one request fails. The boot either
//! recovers and is verified, or stops with a message that names the step and
//! what ran out — never a panic — and the model shows no stale TLB entry, no
//! break-before-make violation and no PMAP slot left held.

use hvmm_boot::model::{run, ArchKind, Scenario};
use hvmm_boot::FailPoint;

/// How many points of a kind, how to name the n-th, and words the failure
/// message must contain.
type Kind = (u64, fn(u64) -> FailPoint, &'static [&'static str]);

fn sweep(arch: ArchKind) -> (u64, u64) {
    sweep_from(Scenario::default_for(arch))
}

fn sweep_from(base: Scenario) -> (u64, u64) {
    let arch = base.arch;
    let clean = run(&base).unwrap();
    let points = clean.result.as_ref().expect("clean boot").injection_points;
    let mut runs = 0;
    let mut recovered = 0;
    let kinds: [Kind; 3] = [
        (
            points.alloc,
            FailPoint::Alloc,
            &["exhausted", "out of memory"],
        ),
        (points.pmap, FailPoint::Pmap, &["pmap"]),
        (points.fixmap, FailPoint::Fixmap, &["fixmap"]),
    ];
    for (count, make, words) in kinds {
        assert!(count > 0, "{arch:?}: no {:?} points", make(0));
        for n in 0..count {
            let mut s = base.clone();
            s.inject = Some(make(n));
            let o = run(&s).unwrap();
            runs += 1;
            let what = format!("{arch:?} {:?}", make(n));
            assert!(
                o.stale.is_empty(),
                "{what}: stale TLB entries {:?}",
                o.stale
            );
            assert!(o.bbm.is_empty(), "{what}: BBM violations {:?}", o.bbm);
            assert!(
                o.mapcache_held.is_empty(),
                "{what}: mapcache slots left held {:?}",
                o.mapcache_held
            );
            match &o.result {
                Ok(sum) => {
                    recovered += 1;
                    assert_eq!(sum.pmap_in_use, 0, "{what}");
                }
                Err(f) => {
                    let msg = f.error.message.as_str().to_string();
                    assert!(
                        words.iter().any(|w| msg.contains(w)),
                        "{what}: message does not say what ran out: {msg}"
                    );
                    assert!(
                        o.log.contains(f.error.step.name()),
                        "{what}: log does not name the step\n{}",
                        o.log
                    );
                    assert_eq!(f.summary.pmap_in_use, 0, "{what}: PMAP slot left held");
                }
            }
        }
    }
    (runs, recovered)
}

#[test]
fn every_injection_point_of_the_arm64_boot_fails_cleanly() {
    let (runs, recovered) = sweep(ArchKind::Arm64);
    eprintln!("arm64: {runs} injection points, {recovered} recovered");
    assert!(runs > 10);
}

#[test]
fn every_injection_point_of_the_arm32_boot_fails_cleanly() {
    let (runs, recovered) = sweep(ArchKind::Arm32);
    eprintln!("arm32: {runs} injection points, {recovered} recovered");
    assert!(runs > 10);
}

#[test]
fn every_injection_point_of_the_secret_free_arm64_boot_fails_cleanly() {
    let mut s = Scenario::default_for(ArchKind::Arm64);
    s.directmap = false;
    let (runs, recovered) = sweep_from(s);
    eprintln!("arm64 secret-free: {runs} injection points, {recovered} recovered");
    assert!(runs > 10);
}
