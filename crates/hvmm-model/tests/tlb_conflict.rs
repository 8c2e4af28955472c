//! TLB conflict aborts: a TLB may hold, besides what it cached, whatever a
//! walk gives now; when that leaves two entries of different sizes for one
//! address (a block split or merge without break-before-make, a contiguous
//! run made inconsistent, a root switch without invalidation) the access
//! takes a TLB conflict abort (fault status 0b110000) instead of using
//! either entry.

use hvmm::{AccessKind, Arch, FaultKind, Ipa, Paddr, Stage, Vaddr, Vmid};
use hvmm_model::{AbortKind, BbmReason, Machine, Stage2, TlbTag};
use hvmm_testkit::tables::*;

const BLOCK_VA: u64 = 0x40a0_0000;
const BLOCK_PA: u64 = 0x4060_0000;
/// A free frame of the arm64 fixture for a new table.
const NEW_L3: u64 = 0x4000_4000;

/// The arm64 fixture with VA 0x40a0_0000 mapped by a 2 MiB block (L2[5])
/// and cached in CPU 0's TLB; a level-3 table mapping the same 512 pages
/// is ready, unlinked, at NEW_L3.
fn cached_block() -> Machine {
    let mut m = arm64(1);
    set(&mut m, L2, 5, block(BLOCK_PA));
    for i in 0..512 {
        set(&mut m, NEW_L3, i, page(BLOCK_PA + i * 0x1000));
    }
    m.read_u64(Vaddr(BLOCK_VA + 0x1000)).unwrap();
    assert_eq!(m.tlb_lookup(0, Vaddr(BLOCK_VA)).unwrap().size, 0x20_0000);
    m
}

#[test]
fn block_split_without_break_before_make_is_a_tlb_conflict_abort() {
    let mut m = cached_block();
    // The table descriptor is written straight over the cached block.
    m.write_pte(Vaddr(L2 + 5 * 8), table(NEW_L3)).unwrap();
    assert_eq!(m.bbm_violations()[0].reason, BbmReason::Type);
    let f = m.read_u64(Vaddr(BLOCK_VA + 0x1008)).unwrap_err();
    assert_eq!(
        (f.kind, f.level, f.va),
        (FaultKind::External, 0, Vaddr(BLOCK_VA + 0x1008))
    );
    assert_eq!(m.last_fault(0), Some(f));
    assert_eq!((ec(m.esr(0)), fsc(m.esr(0))), (0x25, 0b11_0000));
    assert_eq!(m.far(0), Vaddr(BLOCK_VA + 0x1008));
    let c = m.tlb_conflicts();
    assert_eq!(c.len(), 1);
    assert_eq!(
        (c[0].cpu, c[0].va, c[0].existing.size, c[0].new.size),
        (0, Vaddr(BLOCK_VA + 0x1008), 0x20_0000, 0x1000)
    );
    assert_eq!(c[0].existing.tag, TlbTag::El2);
    // Writes and fetches anywhere in the block abort the same way, until the
    // block is invalidated.
    assert!(m.write_u64(Vaddr(BLOCK_VA + 0x1f_0000), 1).is_err());
    assert_eq!(fsc(m.esr(0)), 0b11_0000);
    assert!(m.fetch_u32(Vaddr(BLOCK_VA)).is_err());
    assert_eq!((ec(m.esr(0)), fsc(m.esr(0))), (0x21, 0b11_0000));
    assert_eq!(m.counters().tlb_conflict_aborts, 3);
    m.tlb_flush_va(Vaddr(BLOCK_VA));
    m.tlb_sync();
    assert_eq!(m.read_u64(Vaddr(BLOCK_VA + 0x1008)), Ok(0));
    assert_eq!(
        m.tlb_lookup(0, Vaddr(BLOCK_VA + 0x1000)).unwrap().size,
        0x1000
    );
}

#[test]
fn block_split_with_break_before_make_is_clean() {
    let mut m = cached_block();
    m.write_pte(Vaddr(L2 + 5 * 8), 0).unwrap();
    m.tlb_flush_va(Vaddr(BLOCK_VA));
    m.tlb_sync();
    m.write_pte(Vaddr(L2 + 5 * 8), table(NEW_L3)).unwrap();
    assert!(m.read_u64(Vaddr(BLOCK_VA + 0x1008)).is_ok());
    assert!(m.tlb_conflicts().is_empty());
    assert!(m.bbm_violations().is_empty());
    assert!(m.all_stale_tlb_entries().is_empty());
}

#[test]
fn arm32_block_split_without_break_before_make_is_a_tlb_conflict_abort() {
    let mut m = arm32(1);
    // A32_L2[1]: VA 0x8020_0000 as a 2 MiB block; a new L3 at 0x8000_3000.
    set(&mut m, A32_L2, 1, block(0x8040_0000));
    for i in 0..512 {
        set(&mut m, 0x8000_3000, i, page(0x8040_0000 + i * 0x1000));
    }
    m.read_u64(Vaddr(0x8020_0000)).unwrap();
    m.write_pte(Vaddr(A32_L2 + 8), table(0x8000_3000)).unwrap();
    let f = m.read_u64(Vaddr(0x8020_5000)).unwrap_err();
    assert_eq!(f.kind, FaultKind::External);
    assert_eq!((ec(m.esr(0)), fsc(m.esr(0))), (0x25, 0b11_0000));
    assert_eq!(m.hdfar(0), 0x8020_5000);
    assert_eq!(m.tlb_conflicts().len(), 1);
}

#[test]
fn root_switch_to_other_page_sizes_without_invalidation_is_a_tlb_conflict_abort() {
    let mut m = cached_block();
    // A second set of tables: the same table pages at the same VAs, but VA
    // 0x40a0_0000 by 4 KiB pages.
    let (l0b, l1b, l2b) = (0x4000_5000, 0x4000_6000, 0x4000_7000);
    set(&mut m, l0b, 0, table(l1b));
    set(&mut m, l1b, 1, table(l2b));
    set(&mut m, l2b, 0, table(L3));
    set(&mut m, l2b, 5, table(NEW_L3));
    m.set_root(0, Paddr(l0b)).unwrap();
    // The table pages translate the same (4 KiB in both): fine.
    assert!(m.read_u64(l3_va(0)).is_ok());
    let f = m.read_u64(Vaddr(BLOCK_VA + 0x2000)).unwrap_err();
    assert_eq!(f.kind, FaultKind::External);
    assert_eq!(fsc(m.esr(0)), 0b11_0000);
    let c = m.tlb_conflicts();
    assert_eq!((c[0].existing.size, c[0].new.size), (0x20_0000, 0x1000));
    // Invalidating all (as the switch should have) clears it.
    m.tlb_flush_all_local();
    assert!(m.read_u64(Vaddr(BLOCK_VA + 0x2000)).is_ok());
    // And back to the first root without invalidation. The walk cache still
    // leads to the second root's level-3 table, but a walk from the root
    // gives the 2 MiB block, which the TLB may hold next to the 4 KiB
    // entries: a conflict again (on the fill this time).
    m.set_root(0, Paddr(L0)).unwrap();
    assert!(m.read_u64(Vaddr(BLOCK_VA + 0x3000)).is_err());
    assert_eq!(m.tlb_conflicts().len(), 2);
    assert_eq!(
        (
            m.tlb_conflicts()[1].existing.size,
            m.tlb_conflicts()[1].new.size
        ),
        (0x1000, 0x20_0000)
    );
}

#[test]
fn contiguous_run_made_inconsistent_is_a_tlb_conflict_abort() {
    let mut m = arm64(1);
    for i in 0..16 {
        set(&mut m, L3, 16 + i, page(DATA + i * 0x1000) | CONT);
    }
    m.read_u64(l3_va(20)).unwrap();
    assert_eq!(m.tlb_lookup(0, l3_va(21)).unwrap().size, 0x1_0000);
    // Entry 21 loses the contiguous hint: a walk of it gives a 4 KiB entry
    // next to the cached 64 KiB one.
    set(&mut m, L3, 21, page(DATA + 5 * 0x1000));
    let f = m.read_u64(l3_va(21)).unwrap_err();
    assert_eq!(f.kind, FaultKind::External);
    assert_eq!(fsc(m.esr(0)), 0b11_0000);
    // Entries still with the hint agree in size with the cached one.
    assert!(m.read_u64(l3_va(22)).is_ok());
}

#[test]
fn guest_stage2_block_split_without_bbm_is_a_conflict_reported_to_el2() {
    let (mut m, mut f, t) = arm64_s2(1, Stage2::arm64(40));
    let ipa = 0x20_0000;
    t.map(&mut m, &mut f, ipa, 2, s2_block(GUEST_DATA64));
    m.guest_read_u64(0, Vaddr(ipa + 0x1000)).unwrap();
    let s12 = TlbTag::Stage12 { vmid: Vmid(1) };
    assert_eq!(m.tlb_lookup_tagged(0, s12, ipa).unwrap().size, 0x20_0000);
    // Split the stage-2 block straight into pages.
    let l3 = f.take(1);
    for i in 0..512 {
        m.phys_write_u64(Paddr(l3 + i * 8), s2_page(GUEST_DATA64 + i * 0x1000))
            .unwrap();
    }
    let slot = t.slot(&mut m, &mut f, ipa, 2);
    m.phys_write_u64(Paddr(slot), table(l3)).unwrap();
    let g = m.guest_read_u64(0, Vaddr(ipa + 0x1008)).unwrap_err();
    assert_eq!(
        (g.kind, g.stage, g.ipa),
        (AbortKind::TlbConflict, Stage::Two, Some(Ipa(ipa + 0x1008)))
    );
    assert!(g.to_el2());
    assert_eq!(m.esr(0), (0x24 << 26) | (1 << 25) | 0b11_0000);
    assert_eq!(m.far(0), Vaddr(ipa + 0x1008));
    let c = m.tlb_conflicts();
    assert_eq!(
        (c[0].existing.tag, c[0].existing.size, c[0].new.size),
        (s12, 0x20_0000, 0x1000)
    );
    // The architecture's sequence for a stage-2 change: invalidate the IPA
    // at stage 2, then the combined entries.
    m.tlb_flush_ipa(Vmid(1), ipa);
    m.tlb_flush_guest_s1(Vmid(1));
    m.tlb_sync();
    assert!(m.guest_read_u64(0, Vaddr(ipa + 0x1008)).is_ok());
    assert!(m.all_stale_tlb_entries().is_empty());
}

#[test]
fn stage2_conflict_on_the_stage2_entry_itself() {
    // With only the stage-2 entry invalidated properly, a stale stage-2
    // block of another VMID-tagged lookup path (stage-1 table reads)
    // conflicts too: the guest's stage 1 walks through the split block.
    let (mut m, mut f, t) = arm64_s2(1, Stage2::arm64(40));
    t.map(&mut m, &mut f, GUEST_DATA64, 2, s2_block(GUEST_DATA64));
    let mut f1 = Frames {
        next: GUEST_DATA64 + 0x10_0000,
    };
    let s1 = HandTables::new(&mut f1, 0, 48);
    s1.map(&mut m, &mut f1, 0x5000, 3, page(GUEST_DATA64));
    s1.map(&mut m, &mut f1, 0x6000, 3, page(GUEST_DATA64 + 0x1000));
    m.set_guest_ttbr0(0, Ipa(s1.root)).unwrap();
    m.enable_guest_mmu(0, true).unwrap();
    m.guest_read_u64(0, Vaddr(0x5000)).unwrap();
    let s2 = TlbTag::Stage2 { vmid: Vmid(1) };
    assert_eq!(m.tlb_lookup_tagged(0, s2, s1.root).unwrap().size, 0x20_0000);
    // Split the stage-2 block holding the guest's tables without BBM.
    let l3 = f.take(1);
    for i in 0..512 {
        m.phys_write_u64(Paddr(l3 + i * 8), s2_page(GUEST_DATA64 + i * 0x1000))
            .unwrap();
    }
    let slot = t.slot(&mut m, &mut f, GUEST_DATA64, 2);
    m.phys_write_u64(Paddr(slot), table(l3)).unwrap();
    // VA 0x6000 misses the combined TLB; its stage-1 walk's stage-2 lookup
    // hits the 2 MiB stage-2 entry, which now conflicts: S1PTW.
    let g = m.guest_read_u64(0, Vaddr(0x6000)).unwrap_err();
    assert_eq!(
        (g.kind, g.stage, g.s1ptw),
        (AbortKind::TlbConflict, Stage::Two, true)
    );
    assert_eq!(m.esr(0) & 0x3f, 0b11_0000);
    assert_ne!(m.esr(0) & (1 << 7), 0, "S1PTW");
}

#[test]
fn guest_root_switch_without_invalidation_conflicts() {
    let s = Stage2::arm64(40);
    let (mut m, mut f, t) = arm64_s2(1, s);
    t.map(&mut m, &mut f, 0x20_0000, 2, s2_block(GUEST_DATA64));
    let t2 = HandTables::new(&mut f, s.start_level, 40);
    t2.map(&mut m, &mut f, 0x20_0000, 3, s2_page(GUEST_DATA64));
    m.guest_access(0, Vaddr(0x20_0000), AccessKind::Read)
        .unwrap();
    // Same VMID, other tables: needs TLBI VMALLS12E1 first.
    m.set_vttbr(0, Paddr(t2.root), Vmid(1)).unwrap();
    let g = m
        .guest_access(0, Vaddr(0x20_0000), AccessKind::Read)
        .unwrap_err();
    assert_eq!(g.kind, AbortKind::TlbConflict);
    m.tlb_flush_vmid(Vmid(1));
    m.tlb_sync();
    assert!(m
        .guest_access(0, Vaddr(0x20_0000), AccessKind::Read)
        .is_ok());
}

#[test]
fn changes_that_keep_the_size_are_not_conflicts() {
    // A permission change without invalidation leaves a stale entry (used,
    // reported as stale) but no conflict.
    let mut m = cached_block();
    m.write_pte(Vaddr(L2 + 5 * 8), block(BLOCK_PA) | RO)
        .unwrap();
    assert!(
        m.write_u64(Vaddr(BLOCK_VA), 1).is_ok(),
        "stale writable entry"
    );
    assert!(m.tlb_conflicts().is_empty());
    assert_eq!(m.stale_tlb_entries(0).len(), 1);
    // Unmapping without invalidation: the stale entry is still used.
    m.write_pte(Vaddr(L2 + 5 * 8), 0).unwrap();
    assert!(m.read_u64(Vaddr(BLOCK_VA)).is_ok());
    assert!(m.tlb_conflicts().is_empty());
}
