//! Guest TLB entries are tagged by VMID; each guest TLB invalidation
//! reaches exactly what the architecture says (arm64 IPAS2E1IS, VMALLE1IS,
//! VMALLS12E1IS; arm32 TLBIALLNSNHIS for all three), and stale guest entries
//! are reported.

use hvmm::{AccessKind, Arch, Ipa, Paddr, Vaddr, Vmid};
use hvmm_model::{Machine, Stage2, StaleEntry, TlbTag, Tlbi};
use hvmm_testkit::tables::*;

const V1: Vmid = Vmid(1);
const V2: Vmid = Vmid(2);

fn s2(vmid: Vmid) -> TlbTag {
    TlbTag::Stage2 { vmid }
}

fn s12(vmid: Vmid) -> TlbTag {
    TlbTag::Stage12 { vmid }
}

fn has(m: &Machine, cpu: usize, tag: TlbTag, ia: u64) -> bool {
    m.tlb_lookup_tagged(cpu, tag, ia).is_some()
}

/// Entries of `cpu` under `tag`.
fn count(m: &Machine, cpu: usize, tag: TlbTag) -> usize {
    m.tlb_entries(cpu).iter().filter(|e| e.tag == tag).count()
}

/// Two CPUs. VMID 1 (stage-2 root `t1`): IPA 0x1000 -> DATA, 0x2000 ->
/// DATA + 0x1000. VMID 2 (root `t2`): IPA 0x1000 -> DATA + 0x2000. CPU 0
/// runs VMID 1, CPU 1 VMID 2; both have touched IPA 0x1000 (and CPU 0 also
/// 0x2000) with the guest's stage 1 off, and EL2 VA l3_va(0).
struct Two {
    m: Machine,
    f: Frames,
    t1: HandTables,
}

fn two_vmids_arm64() -> Two {
    let s = Stage2::arm64(40);
    let (mut m, mut f, t1) = arm64_s2(2, s);
    let t2 = HandTables::new(&mut f, s.start_level, 40);
    t1.map(&mut m, &mut f, 0x1000, 3, s2_page(GUEST_DATA64));
    t1.map(&mut m, &mut f, 0x2000, 3, s2_page(GUEST_DATA64 + 0x1000));
    t2.map(&mut m, &mut f, 0x1000, 3, s2_page(GUEST_DATA64 + 0x2000));
    m.set_vttbr(1, Paddr(t2.root), V2).unwrap();
    setup_accesses(&mut m, GUEST_DATA64);
    Two { m, f, t1 }
}

fn setup_accesses(m: &mut Machine, data: u64) {
    assert_eq!(
        m.guest_access(0, Vaddr(0x1008), AccessKind::Read),
        Ok(Paddr(data + 8))
    );
    assert_eq!(
        m.guest_access(0, Vaddr(0x2008), AccessKind::Read),
        Ok(Paddr(data + 0x1008))
    );
    assert_eq!(
        m.guest_access(1, Vaddr(0x1008), AccessKind::Read),
        Ok(Paddr(data + 0x2008))
    );
    for cpu in 0..2 {
        m.touch(cpu, m.ready_el2_va()).unwrap();
    }
}

/// An EL2 VA every fixture maps.
trait El2Va {
    fn ready_el2_va(&self) -> Vaddr;
}

impl El2Va for Machine {
    fn ready_el2_va(&self) -> Vaddr {
        if self.regime().is_arm64() {
            l3_va(0)
        } else {
            a32_l3_va(0)
        }
    }
}

#[test]
fn guest_entries_are_tagged_by_vmid() {
    let Two { mut m, .. } = two_vmids_arm64();
    // Each CPU holds stage-2 and combined entries of its own VMID only.
    assert!(has(&m, 0, s2(V1), 0x1000) && has(&m, 0, s12(V1), 0x1000));
    assert!(has(&m, 1, s2(V2), 0x1000) && has(&m, 1, s12(V2), 0x1000));
    assert!(!has(&m, 0, s2(V2), 0x1000) && !has(&m, 1, s12(V1), 0x1000));
    // The same IPA under the two VMIDs translates differently.
    let e1 = m.tlb_lookup_tagged(0, s2(V1), 0x1000).unwrap();
    let e2 = m.tlb_lookup_tagged(1, s2(V2), 0x1000).unwrap();
    assert_eq!(
        (e1.pa, e2.pa),
        (Paddr(GUEST_DATA64), Paddr(GUEST_DATA64 + 0x2000))
    );
    // CPU 1 switches to VMID 1 (its root too): a miss, then VMID 1's PA;
    // its VMID 2 entries stay and are used again when it switches back.
    let t1root = m.vttbr(0).unwrap();
    let t2root = m.vttbr(1).unwrap();
    m.set_vttbr_raw(1, t1root).unwrap();
    m.reset_counters();
    assert_eq!(
        m.guest_access(1, Vaddr(0x1008), AccessKind::Read),
        Ok(Paddr(GUEST_DATA64 + 8))
    );
    assert_eq!(m.counters().guest_tlb_misses, 2, "combined, then stage 2");
    assert!(has(&m, 1, s12(V1), 0x1000) && has(&m, 1, s12(V2), 0x1000));
    m.set_vttbr_raw(1, t2root).unwrap();
    m.reset_counters();
    assert_eq!(
        m.guest_access(1, Vaddr(0x1008), AccessKind::Read),
        Ok(Paddr(GUEST_DATA64 + 0x2008))
    );
    assert_eq!(m.counters().guest_tlb_hits, 1);
    // EL2 maintenance does not touch guest entries.
    m.tlb_flush_all();
    m.tlb_flush_va(Vaddr(0x1000));
    m.tlb_sync();
    m.tlb_flush_all_local();
    assert!(m.tlb_lookup(0, l3_va(0)).is_none());
    assert!(has(&m, 0, s2(V1), 0x1000) && has(&m, 0, s12(V1), 0x1000));
    assert!(has(&m, 1, s2(V2), 0x1000));
}

#[test]
fn ipas2e1is_removes_one_ipa_of_one_vmid_at_every_level_and_nothing_else() {
    let Two { mut m, .. } = two_vmids_arm64();
    m.tlb_flush_ipa(V1, 0x1abc);
    assert_eq!(
        m.pending_tlbis(),
        vec![(
            0,
            Tlbi::Ipa {
                vmid: V1,
                ipa: Ipa(0x1000)
            }
        )]
    );
    assert!(has(&m, 0, s2(V1), 0x1000), "complete only at the DSB");
    m.tlb_sync();
    assert!(m.pending_tlbis().is_empty());
    assert!(!has(&m, 0, s2(V1), 0x1000));
    // Not: other IPAs, combined entries, other VMIDs, EL2.
    assert!(has(&m, 0, s2(V1), 0x2000));
    assert!(has(&m, 0, s12(V1), 0x1000) && has(&m, 0, s12(V1), 0x2000));
    assert!(has(&m, 1, s2(V2), 0x1000) && has(&m, 1, s12(V2), 0x1000));
    assert!(m.tlb_lookup(0, l3_va(0)).is_some());
    assert_eq!(m.counters().tlbi_ipa, 1);
}

#[test]
fn ipas2e1is_drops_the_stage2_walk_cache_on_the_path_but_combined_entries_need_vmalle1is() {
    let Two {
        mut m, mut f, t1, ..
    } = two_vmids_arm64();
    // Replace VMID 1's stage-2 L3 table (IPA 0..2 MiB) by another one that
    // maps IPA 0x1000 elsewhere, 0x2000 the same and 0x3000 too, with no
    // invalidation.
    let old_l2 = t1.slot(&mut m, &mut f, 0x3000, 2);
    let new_l3 = f.take(1);
    m.phys_write_u64(Paddr(new_l3 + 8), s2_page(GUEST_DATA64 + 0x5000))
        .unwrap();
    m.phys_write_u64(Paddr(new_l3 + 2 * 8), s2_page(GUEST_DATA64 + 0x1000))
        .unwrap();
    m.phys_write_u64(Paddr(new_l3 + 3 * 8), s2_page(GUEST_DATA64 + 0x3000))
        .unwrap();
    m.phys_write_u64(Paddr(old_l2), table(new_l3)).unwrap();
    // IPA 0x3000 was never translated, but the walk cache still leads to
    // the old L3 table, which has nothing there.
    assert!(m.guest_access(0, Vaddr(0x3000), AccessKind::Read).is_err());
    assert!(m.all_stale_tlb_entries().iter().any(|s| matches!(
        s,
        StaleEntry::Table {
            cpu: 0,
            tag: TlbTag::Stage2 { vmid: V1 },
            level: 2,
            ..
        }
    )));
    m.tlb_flush_ipa(V1, 0x3000);
    m.tlb_sync();
    assert_eq!(
        m.guest_access(0, Vaddr(0x3000), AccessKind::Read),
        Ok(Paddr(GUEST_DATA64 + 0x3000))
    );
    // IPA 0x1000: the stage-2 entry is invalidated, the combined one is not.
    m.tlb_flush_ipa(V1, 0x1000);
    m.tlb_sync();
    assert!(!has(&m, 0, s2(V1), 0x1000));
    assert_eq!(
        m.guest_access(0, Vaddr(0x1000), AccessKind::Read),
        Ok(Paddr(GUEST_DATA64)),
        "the combined entry still gives the old PA"
    );
    assert!(m
        .stale_tlb_entries(0)
        .iter()
        .any(|s| matches!(s, StaleEntry::GuestLeaf { entry, .. } if entry.tag == s12(V1))));
    m.tlb_flush_guest_s1(V1);
    m.tlb_sync();
    assert_eq!(
        m.guest_access(0, Vaddr(0x1000), AccessKind::Read),
        Ok(Paddr(GUEST_DATA64 + 0x5000))
    );
    // CPU 0 is clean now (its stage-2 entry for 0x2000 still matches).
    assert!(m.stale_tlb_entries(0).is_empty());
}

#[test]
fn vmalle1is_removes_stage1_and_combined_entries_of_one_vmid() {
    let Two { mut m, .. } = two_vmids_arm64();
    m.set_current_cpu(1).unwrap();
    m.tlb_flush_guest_s1(V1);
    m.tlb_sync();
    assert_eq!(count(&m, 0, s12(V1)), 0, "broadcast: CPU 0 too");
    assert!(has(&m, 0, s2(V1), 0x1000) && has(&m, 0, s2(V1), 0x2000));
    assert!(has(&m, 1, s12(V2), 0x1000) && has(&m, 1, s2(V2), 0x1000));
    assert!(m.tlb_lookup(0, l3_va(0)).is_some());
    assert_eq!(m.counters().tlbi_guest_s1, 1);
}

#[test]
fn vmalls12e1is_removes_everything_of_one_vmid() {
    let Two { mut m, .. } = two_vmids_arm64();
    m.tlb_flush_vmid(V2);
    m.tlb_sync();
    assert_eq!(count(&m, 1, s2(V2)) + count(&m, 1, s12(V2)), 0);
    assert!(has(&m, 0, s2(V1), 0x1000) && has(&m, 0, s12(V1), 0x1000));
    assert!(m.tlb_lookup(1, l3_va(0)).is_some());
    assert_eq!(m.counters().tlbi_vmid, 1);
}

#[test]
fn guest_tlbis_of_another_cpu_complete_at_its_dsb_only() {
    let Two { mut m, .. } = two_vmids_arm64();
    m.set_current_cpu(1).unwrap();
    m.tlb_flush_vmid(V1);
    m.set_current_cpu(0).unwrap();
    m.dsb();
    assert!(
        has(&m, 0, s12(V1), 0x1000),
        "CPU 0's DSB does not complete it"
    );
    m.set_current_cpu(1).unwrap();
    m.dsb();
    assert!(!has(&m, 0, s12(V1), 0x1000));
}

#[test]
fn arm64_vmids_are_eight_bits_unless_vtcr_vs_is_set() {
    let s = Stage2::arm64(40);
    let (mut m, mut f, t) = arm64_s2(1, s);
    t.map(&mut m, &mut f, 0x1000, 3, s2_page(GUEST_DATA64));
    m.set_vttbr(0, Paddr(t.root), Vmid(0x101)).unwrap();
    assert_eq!(m.vmid(0).unwrap(), Vmid(1));
    m.guest_access(0, Vaddr(0x1000), AccessKind::Read).unwrap();
    assert!(has(&m, 0, s2(Vmid(1)), 0x1000));
    // VMID 0x201 is the same guest for the TLB when VS = 0 ...
    m.tlb_flush_vmid(Vmid(0x201));
    m.tlb_sync();
    assert!(m.tlb_entries(0).is_empty());
    // ... and another one with 16-bit VMIDs.
    m.set_stage2_config(0, s.with_vmid16()).unwrap();
    assert_eq!(m.vmid(0).unwrap(), Vmid(0x101));
    m.guest_access(0, Vaddr(0x1000), AccessKind::Read).unwrap();
    assert!(has(&m, 0, s2(Vmid(0x101)), 0x1000));
    m.tlb_flush_vmid(Vmid(0x201));
    m.tlb_sync();
    assert!(has(&m, 0, s2(Vmid(0x101)), 0x1000));
    m.tlb_flush_vmid(Vmid(0x101));
    m.tlb_sync();
    assert!(!has(&m, 0, s2(Vmid(0x101)), 0x1000));
}

#[test]
fn stale_guest_entries_are_reported_for_stage2_and_combined_entries() {
    let Two {
        mut m, mut f, t1, ..
    } = two_vmids_arm64();
    assert!(m.all_stale_tlb_entries().is_empty());
    // VMID 1's IPA 0x2000 moves to another page without invalidation.
    let slot = t1.slot(&mut m, &mut f, 0x2000, 3);
    m.phys_write_u64(Paddr(slot), s2_page(GUEST_DATA64 + 0x7000))
        .unwrap();
    let stale = m.stale_tlb_entries(0);
    let tags: Vec<TlbTag> = stale
        .iter()
        .map(|s| match s {
            StaleEntry::GuestLeaf { entry, .. } => entry.tag,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(tags, vec![s2(V1), s12(V1)]);
    match &stale[0] {
        StaleEntry::GuestLeaf {
            va, cached, fresh, ..
        } => {
            assert_eq!(*va, Vaddr(0x2000));
            assert_eq!(cached.pa, Paddr(GUEST_DATA64 + 0x1000));
            assert_eq!(fresh.unwrap().pa, Paddr(GUEST_DATA64 + 0x7000));
        }
        _ => unreachable!(),
    }
    // A VMID that is not the CPU's current one is checked against the
    // registers it was filled with: CPU 0 now runs VMID 2, yet its VMID 1
    // entries are still found stale.
    let v2 = m.vttbr(1).unwrap();
    m.set_vttbr_raw(0, v2).unwrap();
    assert_eq!(m.stale_tlb_entries(0).len(), 2);
    // The full sequence cleans it.
    m.tlb_flush_ipa(V1, 0x2000);
    m.tlb_flush_guest_s1(V1);
    m.tlb_sync();
    assert!(m.all_stale_tlb_entries().is_empty());
}

#[test]
fn stale_combined_entries_of_the_guests_own_stage1_are_reported() {
    let (mut m, mut f2, t2) = arm64_s2(1, Stage2::arm64(40));
    t2.map(&mut m, &mut f2, GUEST_DATA64, 2, s2_block(GUEST_DATA64));
    let mut f1 = Frames {
        next: GUEST_DATA64 + 0x10_0000,
    };
    let s1 = HandTables::new(&mut f1, 0, 48);
    s1.map(&mut m, &mut f1, 0x5000, 3, page(GUEST_DATA64));
    m.set_guest_ttbr0(0, Ipa(s1.root)).unwrap();
    m.enable_guest_mmu(0, true).unwrap();
    m.guest_read_u64(0, Vaddr(0x5000)).unwrap();
    // The guest changes its own page table (no TLBI of its own).
    let slot = s1.slot(&mut m, &mut f1, 0x5000, 3);
    m.phys_write_u64(Paddr(slot), page(GUEST_DATA64 + 0x1000) | RO)
        .unwrap();
    match &m.stale_tlb_entries(0)[..] {
        [StaleEntry::GuestLeaf { entry, fresh, .. }] => {
            assert_eq!(entry.tag, s12(V1));
            let fresh = fresh.unwrap();
            assert_eq!(fresh.pa, Paddr(GUEST_DATA64 + 0x1000));
            assert!(!fresh.writable());
        }
        other => panic!("unexpected {other:?}"),
    }
    m.tlb_flush_guest_s1(V1);
    m.tlb_sync();
    assert!(m.stale_tlb_entries(0).is_empty());
}

#[test]
fn arm32_every_guest_tlbi_is_tlbiallnsnhis() {
    let ops: [fn(&mut Machine); 3] = [
        |m| m.tlb_flush_ipa(V1, 0x1000),
        |m| m.tlb_flush_guest_s1(V1),
        |m| m.tlb_flush_vmid(V1),
    ];
    for (i, op) in ops.iter().enumerate() {
        let (mut m, mut f, t1) = arm32_s2(2);
        let t2 = HandTables::new(&mut f, 1, 40);
        t1.map(&mut m, &mut f, 0x1000, 3, s2_page(GUEST_DATA32));
        t1.map(&mut m, &mut f, 0x2000, 3, s2_page(GUEST_DATA32 + 0x1000));
        t2.map(&mut m, &mut f, 0x1000, 3, s2_page(GUEST_DATA32 + 0x2000));
        m.set_vttbr(1, Paddr(t2.root), V2).unwrap();
        setup_accesses(&mut m, GUEST_DATA32);
        op(&mut m);
        assert_eq!(m.pending_tlbis(), vec![(0, Tlbi::AllNonHyp)], "op {i}");
        m.tlb_sync();
        // Every guest entry of every VMID on every CPU is gone; Hyp's stay.
        for cpu in 0..2 {
            let left = m.tlb_entries(cpu);
            assert!(
                left.iter().all(|e| e.tag == TlbTag::El2),
                "op {i}: {left:x?}"
            );
            assert!(m.tlb_lookup(cpu, a32_l3_va(0)).is_some());
        }
        let c = m.counters();
        assert_eq!(
            (c.tlbi_ipa, c.tlbi_guest_s1, c.tlbi_vmid),
            match i {
                0 => (1, 0, 0),
                1 => (0, 1, 0),
                _ => (0, 0, 1),
            }
        );
    }
}

#[test]
fn arm32_guest_entries_are_tagged_by_eight_bit_vmids() {
    let (mut m, mut f, t) = arm32_s2(1);
    t.map(&mut m, &mut f, 0x1000, 3, s2_page(GUEST_DATA32));
    m.set_vttbr(0, Paddr(t.root), Vmid(0x1ff)).unwrap();
    assert_eq!(m.vttbr(0).unwrap() >> 48, 0xff, "VMID is VTTBR[55:48]");
    m.guest_access(0, Vaddr(0x1000), AccessKind::Read).unwrap();
    assert!(has(&m, 0, s2(Vmid(0xff)), 0x1000));
    assert!(has(&m, 0, s12(Vmid(0xff)), 0x1000));
}
