//! The break-before-make checker on `Arch::write_pte`.

use hvmm::{Arch, Paddr, Vaddr};
use hvmm_model::{BbmKind, BbmReason};
use hvmm_testkit::tables::*;

const SLOT: Vaddr = Vaddr(L3 + 7 * 8);

fn with_page() -> hvmm_model::Machine {
    let mut m = arm64(1);
    m.write_pte(SLOT, page(DATA)).unwrap();
    m
}

#[test]
fn direct_change_of_output_address_is_flagged() {
    let mut m = with_page();
    m.write_pte(SLOT, page(DATA + 0x1000)).unwrap();
    let v = m.bbm_violations();
    assert_eq!(v.len(), 1);
    assert_eq!((v[0].pa, v[0].va), (Paddr(L3 + 7 * 8), SLOT));
    assert_eq!((v[0].old, v[0].new), (page(DATA), page(DATA + 0x1000)));
    assert_eq!(
        (v[0].reason, v[0].kind),
        (BbmReason::OutputAddress, BbmKind::Direct)
    );
    // Recorded, and the write was still done.
    assert_eq!(get(&m, L3, 7), page(DATA + 0x1000));
}

#[test]
fn break_invalidate_make_is_accepted() {
    let mut m = with_page();
    m.write_pte(SLOT, 0).unwrap();
    m.tlb_flush_va(l3_va(7));
    m.tlb_sync();
    m.write_pte(SLOT, page(DATA + 0x1000)).unwrap();
    assert!(m.bbm_violations().is_empty());
}

#[test]
fn invalidation_completed_by_the_barrier_of_the_make_is_accepted() {
    let mut m = with_page();
    m.write_pte(SLOT, 0).unwrap();
    m.tlb_flush_va(l3_va(7)); // its DSB is the one write_pte starts with
    m.write_pte(SLOT, page(DATA + 0x1000)).unwrap();
    assert!(m.bbm_violations().is_empty());
}

#[test]
fn break_and_make_without_invalidation_is_flagged() {
    let mut m = with_page();
    m.write_pte(SLOT, 0).unwrap();
    m.write_pte(SLOT, page(DATA + 0x1000)).unwrap();
    let v = m.take_bbm_violations();
    assert_eq!(v.len(), 1);
    assert_eq!(
        (v[0].kind, v[0].reason, v[0].old),
        (
            BbmKind::RemadeWithoutInvalidation,
            BbmReason::OutputAddress,
            page(DATA)
        )
    );
    assert!(m.bbm_violations().is_empty());
}

#[test]
fn permission_only_changes_are_accepted() {
    let mut m = with_page();
    m.write_pte(SLOT, page(DATA) | RO).unwrap();
    m.write_pte(SLOT, page(DATA) | RO | XN).unwrap();
    m.write_pte(SLOT, 0).unwrap();
    m.write_pte(SLOT, page(DATA)).unwrap(); // same page back: no TLBI needed
    assert!(m.bbm_violations().is_empty());
}

#[test]
fn memory_type_contiguous_and_type_changes_are_flagged() {
    let mut m = with_page();
    m.write_pte(SLOT, (page(DATA) & !NORMAL) | DEVICE).unwrap();
    m.write_pte(SLOT, (page(DATA) & !NORMAL) | DEVICE | CONT)
        .unwrap();
    // A 2 MiB block replaced by a table, in L2.
    m.write_pte(Vaddr(L2 + 5 * 8), block(0x4060_0000)).unwrap();
    m.write_pte(Vaddr(L2 + 5 * 8), table(0x4060_0000)).unwrap();
    let reasons: Vec<_> = m.bbm_violations().iter().map(|v| v.reason).collect();
    assert_eq!(
        reasons,
        vec![BbmReason::AttrIndx, BbmReason::Contiguous, BbmReason::Type]
    );
}

#[test]
fn misaligned_descriptor_write_is_flagged() {
    let mut m = arm64(1);
    m.write_pte(Vaddr(L3 + 7 * 8 + 4), 0).unwrap();
    assert_eq!(m.bbm_violations()[0].reason, BbmReason::Misaligned);
}

#[test]
fn physical_writes_are_not_checked() {
    let mut m = with_page();
    set(&mut m, L3, 7, page(DATA + 0x1000));
    assert!(m.bbm_violations().is_empty());
}
