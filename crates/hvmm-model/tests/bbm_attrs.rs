//! The break-before-make checker compares descriptor bits [5:2]: stage-2
//! MemAttr and the stage-1 NS bit as well as AttrIndx; it sees stage-2
//! descriptors written with `Arch::write_pte` like any other (it works by
//! PA).

use hvmm::{Arch, Paddr, Vaddr};
use hvmm_model::{BbmKind, BbmReason, Stage2};
use hvmm_testkit::tables::*;

#[test]
fn stage2_memattr_change_needs_break_before_make() {
    let (mut m, mut f, t) = arm64_s2(1, Stage2::arm64(40));
    // Make the stage-2 L3 table for IPA 0..2 MiB reachable at EL2: L3[8]
    // of the EL2 fixture maps it at VA l3_va(8).
    let slot = t.slot(&mut m, &mut f, 0x1000, 3);
    let table_pa = slot & !0xfff;
    set(&mut m, L3, 8, page(table_pa));
    let va = Vaddr(l3_va(8).0 + (slot & 0xfff));
    m.write_pte(va, s2_page(GUEST_DATA64)).unwrap();
    // Normal write-back (MemAttr 0b1111) -> Device-nGnRE (0b0001).
    let dev = (s2_page(GUEST_DATA64) & !MEMATTR_WB) | MEMATTR_DEV;
    m.write_pte(va, dev).unwrap();
    let v = m.take_bbm_violations();
    assert_eq!(v.len(), 1);
    assert_eq!(
        (v[0].pa, v[0].reason, v[0].kind),
        (Paddr(slot), BbmReason::AttrIndx, BbmKind::Direct)
    );
    // MemAttr 0b1111 -> 0b0111: bit 5 (MemAttr[3]) only, which a check of
    // AttrIndx's bits [4:2] alone would miss.
    m.write_pte(va, 0).unwrap();
    m.tlb_flush_va(va);
    m.tlb_sync();
    m.write_pte(va, s2_page(GUEST_DATA64)).unwrap();
    m.write_pte(va, s2_page(GUEST_DATA64) & !(1 << 5)).unwrap();
    assert_eq!(m.take_bbm_violations()[0].reason, BbmReason::AttrIndx);
    // A stage-2 permission change (S2AP) needs no break.
    m.write_pte(va, (s2_page(GUEST_DATA64) & !(1 << 5) & !S2_RW) | S2_READ)
        .unwrap();
    assert!(m.bbm_violations().is_empty());
}

#[test]
fn stage1_ns_bit_change_needs_break_before_make() {
    let mut m = arm64(1);
    let slot = Vaddr(L3 + 7 * 8);
    m.write_pte(slot, page(DATA)).unwrap();
    m.write_pte(slot, page(DATA) | NS).unwrap();
    let v = m.take_bbm_violations();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].reason, BbmReason::AttrIndx);
    // Break, no invalidation, make with another NS: flagged as a remake.
    m.write_pte(slot, 0).unwrap();
    m.write_pte(slot, page(DATA)).unwrap();
    let v = m.take_bbm_violations();
    assert_eq!(
        (v[0].reason, v[0].kind),
        (BbmReason::AttrIndx, BbmKind::RemadeWithoutInvalidation)
    );
}
