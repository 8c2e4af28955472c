//! Counters count, and reset.

use hvmm::{Arch, CpuOps, Vaddr};
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
    m.hw_translate(l3_va(4), false).unwrap();
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

#[test]
fn find_pte_reads_and_counts_like_read_pte_one_by_one() {
    let mut m = arm64(1);
    // L3 (mapped at l3_va(3)) holds page descriptors in entries 0..4.
    let want: Vec<u64> = (0..6)
        .map(|i| m.read_pte(Vaddr(L3 + i * 8)).unwrap())
        .collect();
    m.reset_counters();
    let mut seen = Vec::new();
    let hit = m
        .find_pte(l3_va(3), 512, |e| {
            seen.push(e);
            e == 0
        })
        .unwrap();
    assert_eq!(hit, Some(4));
    assert_eq!(seen, want[..5]);
    assert_eq!(m.counters().pte_reads, 5, "only the entries examined count");
    // None found: every entry read.
    m.reset_counters();
    assert_eq!(m.find_pte(l3_va(3), 4, |e| e == 0).unwrap(), None);
    assert_eq!(m.counters().pte_reads, 4);
    // A run that leaves the mapped page: its entries are seen, then the
    // next page (unmapped) faults, as one read at a time would.
    let mut n = 0;
    let last = Vaddr(l3_va(3).0 + 511 * 8);
    let err = m
        .find_pte(last, 2, |_| {
            n += 1;
            false
        })
        .unwrap_err();
    assert_eq!(n, 1);
    assert_eq!(err.va, l3_va(4));
    assert_eq!(err.kind, hvmm::FaultKind::Translation);
}
