//! The TLB keeps translations until told to forget them.

use hvmm::{AccessKind, Arch, CpuOps, FaultKind, Paddr, Vaddr};
use hvmm_model::{ModelError, StaleEntry};
use hvmm_testkit::tables::*;

/// Changes L3[7] from DATA to DATA + 0x1000 through the MMU, as the engine
/// would, but without any TLB maintenance.
fn remap_without_tlbi(m: &mut hvmm_model::Machine) {
    m.write_pte(Vaddr(L3 + 7 * 8), 0).unwrap();
    m.write_pte(Vaddr(L3 + 7 * 8), page(DATA + 0x1000)).unwrap();
}

#[test]
fn missing_invalidation_shows_as_a_stale_translation_and_tlbi_clears_it() {
    let mut m = arm64(1);
    set(&mut m, L3, 7, page(DATA));
    m.phys_write_u64(Paddr(DATA), 1).unwrap();
    m.phys_write_u64(Paddr(DATA + 0x1000), 2).unwrap();
    assert_eq!(m.read_u64(l3_va(7)).unwrap(), 1);
    remap_without_tlbi(&mut m);
    assert_eq!(
        m.read_u64(l3_va(7)).unwrap(),
        1,
        "the TLB still has the old page"
    );
    let stale = m.stale_tlb_entries(0);
    assert_eq!(stale.len(), 1);
    match &stale[0] {
        StaleEntry::Leaf {
            va, cached, fresh, ..
        } => {
            assert_eq!(*va, l3_va(7));
            assert_eq!(cached.pa, Paddr(DATA));
            assert_eq!(fresh.unwrap().pa, Paddr(DATA + 0x1000));
        }
        other => panic!("unexpected {other:?}"),
    }
    m.tlb_flush_va(l3_va(7));
    m.tlb_sync();
    assert!(m.stale_tlb_entries(0).is_empty());
    assert_eq!(m.read_u64(l3_va(7)).unwrap(), 2);
}

#[test]
fn unmapping_without_invalidation_leaves_a_usable_stale_entry() {
    let mut m = arm64(1);
    set(&mut m, L3, 7, page(DATA));
    m.touch(0, l3_va(7)).unwrap();
    m.write_pte(Vaddr(L3 + 7 * 8), 0).unwrap();
    assert!(m.read_u64(l3_va(7)).is_ok());
    match &m.stale_tlb_entries(0)[..] {
        [StaleEntry::Leaf { fresh: Err(f), .. }] => assert_eq!(f.kind, FaultKind::Translation),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn local_invalidation_leaves_other_cpus_stale_broadcast_cleans_all() {
    let mut m = arm64(2);
    set(&mut m, L3, 7, page(DATA));
    m.touch(0, l3_va(7)).unwrap();
    m.touch(1, l3_va(7)).unwrap();
    remap_without_tlbi(&mut m);
    m.tlb_flush_va_local(l3_va(7));
    assert!(m.stale_tlb_entries(0).is_empty());
    assert_eq!(m.stale_tlb_entries(1).len(), 1);
    m.tlb_flush_va(l3_va(7));
    m.tlb_sync();
    assert!(m.all_stale_tlb_entries().is_empty());
}

#[test]
fn broadcast_invalidation_from_another_cpu_reaches_this_one() {
    let mut m = arm64(2);
    set(&mut m, L3, 7, page(DATA));
    m.touch(0, l3_va(7)).unwrap();
    m.set_current_cpu(1).unwrap();
    remap_without_tlbi(&mut m);
    m.tlb_flush_va(l3_va(7));
    m.tlb_sync();
    assert!(m.stale_tlb_entries(0).is_empty());
}

#[test]
fn broadcast_invalidation_completes_only_at_the_issuers_dsb() {
    let mut m = arm64(2);
    set(&mut m, L3, 7, page(DATA));
    m.touch(1, l3_va(7)).unwrap();
    set(&mut m, L3, 7, page(DATA + 0x1000));
    m.tlb_flush_va(l3_va(7));
    assert_eq!(m.pending_invalidations(), vec![(0, Some(l3_va(7)))]);
    assert_eq!(
        m.stale_tlb_entries(1).len(),
        1,
        "not complete without a DSB"
    );
    m.tlb_sync();
    assert!(m.pending_invalidations().is_empty());
    assert!(m.stale_tlb_entries(1).is_empty());
}

#[test]
fn invalidate_all_broadcast_and_local() {
    let mut m = arm64(2);
    set(&mut m, L3, 7, page(DATA));
    for cpu in 0..2 {
        m.touch(cpu, l3_va(7)).unwrap();
    }
    m.tlb_flush_all_local();
    assert!(m.tlb_entries(0).is_empty());
    assert!(!m.tlb_entries(1).is_empty());
    m.tlb_flush_all();
    m.tlb_sync();
    assert!(m.tlb_entries(1).is_empty());
}

#[test]
fn invalidation_by_va_removes_a_covering_block_entry() {
    let mut m = arm64(1);
    set(&mut m, L2, 5, block(0x4060_0000));
    m.touch(0, Vaddr(0x40a0_0000)).unwrap();
    m.tlb_flush_va_local(Vaddr(0x40b2_3000));
    assert!(m
        .tlb_entries(0)
        .iter()
        .all(|e| !e.covers(Vaddr(0x40a0_0000))));
}

#[test]
fn permissions_come_from_the_cached_entry() {
    let mut m = arm64(1);
    set(&mut m, L3, 7, page(DATA) | RO);
    m.touch(0, l3_va(7)).unwrap();
    m.write_pte(Vaddr(L3 + 7 * 8), page(DATA)).unwrap(); // now writable
    let f = m.write_u64(l3_va(7), 1).unwrap_err();
    assert_eq!(
        f.kind,
        FaultKind::Permission,
        "stale read-only entry still used"
    );
    m.tlb_flush_va_local(l3_va(7));
    assert!(m.write_u64(l3_va(7), 1).is_ok());
}

#[test]
fn walk_cache_catches_an_unlinked_table_without_invalidation() {
    let mut m = arm64(1);
    // A second L3 table under L2[1] (VA 0x4020_0000 ..).
    set(&mut m, L2, 1, table(0x4000_4000));
    set(&mut m, 0x4000_4000, 0, page(DATA));
    set(&mut m, 0x4000_4000, 1, page(DATA + 0x1000));
    m.touch(0, Vaddr(0x4020_0000)).unwrap();
    // Unlink the table without any invalidation.
    m.write_pte(Vaddr(L2 + 8), 0).unwrap();
    let stale = m.stale_tlb_entries(0);
    assert!(stale.iter().any(|s| matches!(
        s,
        StaleEntry::Table {
            level: 2,
            fresh_table: None,
            ..
        }
    )));
    // A VA under the unlinked table that was never in the TLB still
    // translates through the cached table descriptor, as hardware may.
    assert_eq!(
        m.access(Vaddr(0x4020_1000), AccessKind::Read).unwrap(),
        Paddr(DATA + 0x1000)
    );
    // Invalidating any VA under it drops the cached descriptor with the leaf.
    m.tlb_flush_va(Vaddr(0x4020_0000));
    m.tlb_sync();
    assert!(
        m.access(Vaddr(0x4020_1000), AccessKind::Read).is_ok(),
        "its own leaf entry remains"
    );
    m.tlb_flush_va(Vaddr(0x4020_1000));
    m.tlb_sync();
    assert!(m.stale_tlb_entries(0).is_empty());
    assert!(m.access(Vaddr(0x4020_1000), AccessKind::Read).is_err());
}

#[test]
fn replacing_a_table_by_a_block_without_bbm_makes_a_tlb_conflict() {
    let mut m = arm64(1);
    set(&mut m, L3, 7, page(DATA));
    m.touch(0, l3_va(7)).unwrap();
    // L2[0] (which holds the L3 table) becomes a 2 MiB block directly.
    m.set_walk_cache(false);
    set(&mut m, L2, 0, block(0x4000_0000));
    // The fill of the 2 MiB entry would leave it next to the 4 KiB one of
    // page 7. This used to be recorded with the new entry used ("the most
    // recent wins"); it is now a TLB conflict abort, and no entry is made.
    let r = m.touch(0, l3_va(8));
    assert!(
        matches!(r, Err(ModelError::Fault(f)) if f.kind == FaultKind::External),
        "{r:?}"
    );
    let c = m.tlb_conflicts();
    assert_eq!(c.len(), 1);
    assert_eq!((c[0].existing.size, c[0].new.size), (0x1000, 0x20_0000));
    assert_eq!(c[0].va, l3_va(8));
    assert!(m.tlb_lookup(0, l3_va(8)).is_none());
    // An access (not a prefetch) records it: DFSC 0b110000, FAR the VA.
    let f = m.read_u64(l3_va(9)).unwrap_err();
    assert_eq!((f.kind, f.level), (FaultKind::External, 0));
    assert_eq!((ec(m.esr(0)), fsc(m.esr(0))), (0x25, 0x30));
    assert_eq!(m.far(0), l3_va(9));
    // The cached page 7 itself is now a conflict too: a walk gives 2 MiB.
    assert!(m.read_u64(l3_va(7)).is_err());
    assert_eq!(m.tlb_conflicts().len(), 3);
    // Invalidating the VA clears the old entry; the block is then usable.
    m.tlb_flush_va(l3_va(7));
    m.tlb_sync();
    assert!(m.read_u64(l3_va(8)).is_ok());
}

#[test]
fn tlb_hits_do_not_walk() {
    let mut m = arm64(1);
    set(&mut m, L3, 7, page(DATA));
    m.read_u64(l3_va(7)).unwrap();
    m.read_u64(Vaddr(l3_va(7).0 + 8)).unwrap();
    let c = m.counters();
    assert_eq!((c.tlb_misses, c.tlb_hits, c.walks), (1, 1, 1));
}
