//! Counters count, and reset.

use hvmm::{Arch, Vaddr};
use hvmm_model::Counters;
use hvmm_testkit::tables::*;

#[test]
fn counters_count_each_operation() {
    let mut m = arm64(1);
    m.reset_counters();
    m.write_pte(Vaddr(L3 + 4 * 8), page(0x4000_4000)).unwrap();
    m.zero_page(Vaddr(0x4000_4000)).unwrap();
    m.read_pte(Vaddr(0x4000_4000)).unwrap();
    m.tlb_flush_va(l3_va(4));
    m.tlb_flush_va_local(l3_va(4));
    m.tlb_flush_all();
    m.tlb_flush_all_local();
    m.tlb_sync();
    m.isb();
    m.translate(l3_va(4), false).unwrap();
    let c = m.counters();
    assert_eq!(c.pte_writes, 1);
    assert_eq!(c.pte_reads, 1);
    assert_eq!(c.pages_zeroed, 1);
    assert_eq!(
        (c.tlbi_va, c.tlbi_va_local, c.tlbi_all, c.tlbi_all_local),
        (1, 1, 1, 1)
    );
    assert_eq!(c.tlb_syncs, 1);
    assert_eq!(
        c.dsb,
        2 + 1 + 1 + 1,
        "write_pte 2, zero_page, tlbi local, tlb_sync"
    );
    assert_eq!(c.isb, 1 + 1 + 1, "isb, tlbi local, tlb_sync");
    assert_eq!(c.at, 1);
    // write_pte missed (L3 page), zero_page and read_pte hit the new page
    // after a miss.
    assert_eq!((c.tlb_misses, c.tlb_hits, c.walks), (2, 1, 2));
    m.reset_counters();
    assert_eq!(m.counters(), Counters::default());
}

#[test]
fn aborts_are_counted() {
    let mut m = arm64(1);
    m.reset_counters();
    let _ = m.read_u64(l3_va(200));
    let _ = m.write_u64(l3_va(201), 0);
    assert_eq!(m.counters().faults, 2);
}
