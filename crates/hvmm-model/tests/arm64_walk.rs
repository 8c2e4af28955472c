//! arm64 (VMSAv8-64, EL2, 4 KiB granule, T0SZ = 16): what a walk of
//! hand-built tables gives.

use hvmm::{AccessKind, CpuOps, FaultKind, MemFault, Paddr, Vaddr};
use hvmm_testkit::tables::*;

fn fault(m: &mut hvmm_model::Machine, va: u64, access: AccessKind) -> MemFault {
    match access {
        AccessKind::Read => m.read_u64(Vaddr(va)).unwrap_err(),
        AccessKind::Write => m.write_u64(Vaddr(va), 1).unwrap_err(),
        AccessKind::Exec => m.fetch_u32(Vaddr(va)).unwrap_err(),
    }
}

#[test]
fn l1_block_maps_one_gib() {
    let mut m = arm64(1);
    // L1[2]: VA 0x8000_0000.. -> PA 0x4000_0000.. as a 1 GiB block.
    set(&mut m, L1, 2, block(0x4000_0000));
    m.phys_write_u64(Paddr(0x4012_3450), 0xfeed).unwrap();
    assert_eq!(m.read_u64(Vaddr(0x8012_3450)).unwrap(), 0xfeed);
    let t = m.walk(0, Vaddr(0x8012_3456)).unwrap();
    assert_eq!((t.pa, t.level), (Paddr(0x4012_3456), 1));
    let e = m.tlb_lookup(0, Vaddr(0x8012_3456)).unwrap();
    assert_eq!((e.va, e.size), (Vaddr(0x8000_0000), 1 << 30));
}

#[test]
fn l2_block_maps_two_mib() {
    let mut m = arm64(1);
    // L2[5]: VA 0x40a0_0000.. -> PA 0x4060_0000..
    set(&mut m, L2, 5, block(0x4060_0000));
    m.write_u64(Vaddr(0x40a1_2340), 77).unwrap();
    assert_eq!(m.phys_read_u64(Paddr(0x4061_2340)).unwrap(), 77);
    assert_eq!(m.walk(0, Vaddr(0x40a1_2340)).unwrap().level, 2);
}

#[test]
fn l3_page_maps_four_kib() {
    let mut m = arm64(1);
    set(&mut m, L3, 7, page(DATA));
    m.write_u64(l3_va(7), 0x1234).unwrap();
    assert_eq!(m.phys_read_u64(Paddr(DATA)).unwrap(), 0x1234);
    let t = m.walk(0, Vaddr(l3_va(7).0 + 0xabc)).unwrap();
    assert_eq!(
        (t.pa, t.level, t.descriptor_pa),
        (Paddr(DATA + 0xabc), 3, Paddr(L3 + 7 * 8))
    );
    // The neighbour is unmapped.
    assert_eq!(
        m.walk(0, l3_va(8)).unwrap_err().kind,
        FaultKind::Translation
    );
}

#[test]
fn contiguous_run_is_cached_as_one_entry() {
    let mut m = arm64(1);
    for i in 0..16 {
        set(&mut m, L3, 16 + i, page(DATA + i * 0x1000) | CONT);
    }
    m.touch(0, l3_va(20)).unwrap();
    let entries = m.tlb_entries(0);
    let e = entries.iter().find(|e| e.contiguous).unwrap();
    assert_eq!((e.va, e.size, e.pa), (l3_va(16), 0x1_0000, Paddr(DATA)));
    m.reset_counters();
    assert_eq!(
        m.access(Vaddr(l3_va(31).0 + 8), AccessKind::Read).unwrap(),
        Paddr(DATA + 15 * 0x1000 + 8)
    );
    assert_eq!((m.counters().tlb_hits, m.counters().walks), (1, 0));
}

#[test]
fn inconsistent_contiguous_run_translates_wrongly_from_the_tlb() {
    let mut m = arm64(1);
    for i in 0..16 {
        set(&mut m, L3, 16 + i, page(DATA + i * 0x1000) | CONT);
    }
    // Entry 5 of the run points elsewhere: the run is inconsistent.
    set(&mut m, L3, 21, page(0x4200_0000) | CONT);
    m.touch(0, l3_va(21)).unwrap();
    // The run's entry is derived from the walked entry: OA - 5 pages.
    assert_eq!(
        m.access(l3_va(16), AccessKind::Read).unwrap(),
        Paddr(0x4200_0000 - 5 * 0x1000)
    );
    assert_eq!(m.walk(0, l3_va(16)).unwrap().pa, Paddr(DATA));
    assert!(!m.stale_tlb_entries(0).is_empty());
}

#[test]
fn write_to_read_only_page_is_a_permission_fault_at_level_3() {
    let mut m = arm64(1);
    set(&mut m, L3, 7, page(DATA) | RO);
    assert!(m.read_u64(l3_va(7)).is_ok());
    let f = fault(&mut m, l3_va(7).0 + 0x10, AccessKind::Write);
    assert_eq!(
        (f.kind, f.level, f.access),
        (FaultKind::Permission, 3, AccessKind::Write)
    );
    let esr = m.esr(0);
    assert_eq!(esr, f.syndrome());
    assert_eq!((ec(esr), wnr(esr), fsc(esr)), (0x25, true, 0x0f));
    assert_eq!(m.far(0), Vaddr(l3_va(7).0 + 0x10));
    assert_eq!(m.last_fault(0), Some(f));
    assert!(m.phys_page_is_zero(Paddr(DATA)).unwrap());
}

#[test]
fn execute_from_xn_page_is_a_permission_fault_prefetch_abort() {
    let mut m = arm64(1);
    set(&mut m, L3, 7, page(DATA) | XN | RO);
    set(&mut m, L3, 8, page(DATA + 0x1000) | RO);
    assert!(m.fetch_u32(l3_va(8)).is_ok());
    let f = fault(&mut m, l3_va(7).0, AccessKind::Exec);
    assert_eq!((f.kind, f.level), (FaultKind::Permission, 3));
    assert_eq!(
        (ec(m.esr(0)), wnr(m.esr(0)), fsc(m.esr(0))),
        (0x21, false, 0x0f)
    );
}

#[test]
fn wxn_makes_writable_mappings_execute_never() {
    let mut m = arm64(1);
    set(&mut m, L3, 7, page(DATA));
    set(&mut m, L3, 8, page(DATA + 0x1000) | RO);
    m.set_wxn(0, true).unwrap();
    assert_eq!(
        fault(&mut m, l3_va(7).0, AccessKind::Exec).kind,
        FaultKind::Permission
    );
    assert!(m.fetch_u32(l3_va(8)).is_ok());
}

#[test]
fn wxn_is_cached_in_the_tlb_until_invalidated() {
    let mut m = arm64(1);
    set(&mut m, L3, 7, page(DATA));
    assert!(m.fetch_u32(l3_va(7)).is_ok());
    m.set_wxn(0, true).unwrap();
    assert!(
        m.fetch_u32(l3_va(7)).is_ok(),
        "the TLB still holds the executable entry"
    );
    assert_eq!(m.stale_tlb_entries(0).len(), 1);
    m.tlb_flush_all_local();
    assert!(m.fetch_u32(l3_va(7)).is_err());
}

#[test]
fn aptable_and_xntable_apply_to_everything_below() {
    let mut m = arm64(1);
    // L2[1] -> a second L3 table at 0x4000_4000, with APTable[1] and XNTable.
    set(&mut m, L2, 1, table(0x4000_4000) | AP_TABLE_RO | XN_TABLE);
    set(&mut m, 0x4000_4000, 0, page(DATA)); // VA 0x4020_0000, RW and executable by itself
    let va = 0x4020_0000;
    assert!(m.read_u64(Vaddr(va)).is_ok());
    let w = fault(&mut m, va, AccessKind::Write);
    assert_eq!((w.kind, w.level), (FaultKind::Permission, 3));
    let x = fault(&mut m, va, AccessKind::Exec);
    assert_eq!((x.kind, x.level), (FaultKind::Permission, 3));
}

#[test]
fn access_flag_clear_is_an_access_flag_fault() {
    let mut m = arm64(1);
    set(&mut m, L3, 7, page(DATA) & !AF);
    let f = fault(&mut m, l3_va(7).0, AccessKind::Read);
    assert_eq!((f.kind, f.level), (FaultKind::AccessFlag, 3));
    assert_eq!(fsc(m.esr(0)), 0x0b);
    // Block with AF = 0: level 2.
    set(&mut m, L2, 5, block(0x4060_0000) & !AF);
    let f = fault(&mut m, 0x40a0_0000, AccessKind::Read);
    assert_eq!((f.kind, f.level), (FaultKind::AccessFlag, 2));
}

#[test]
fn output_address_beyond_pa_size_is_an_address_size_fault() {
    let mut m = arm64(1);
    m.set_pa_bits(40).unwrap();
    set(&mut m, L3, 7, page(1 << 40));
    let f = fault(&mut m, l3_va(7).0, AccessKind::Read);
    assert_eq!((f.kind, f.level), (FaultKind::AddressSize, 3));
    assert_eq!(fsc(m.esr(0)), 0x03);
    // A table address beyond it faults at the level of the table descriptor.
    set(&mut m, L1, 3, table(1 << 41));
    let f = fault(&mut m, 0xc000_0000, AccessKind::Read);
    assert_eq!((f.kind, f.level), (FaultKind::AddressSize, 1));
    // With 48 bits the same page descriptor is fine (but not RAM).
    m.set_pa_bits(48).unwrap();
    assert_eq!(m.walk(0, l3_va(7)).unwrap().pa, Paddr(1 << 40));
}

#[test]
fn block_at_level_0_is_a_translation_fault_at_level_0() {
    let mut m = arm64(1);
    set(&mut m, L0, 1, block(0x4000_0000));
    let f = fault(&mut m, 0x80_0000_0000, AccessKind::Read);
    assert_eq!((f.kind, f.level), (FaultKind::Translation, 0));
    assert_eq!(fsc(m.esr(0)), 0x04);
}

#[test]
fn va_beyond_48_bits_is_a_translation_fault_at_level_0() {
    let mut m = arm64(1);
    for va in [1u64 << 48, 0xffff_0000_4000_0000] {
        let f = fault(&mut m, va, AccessKind::Read);
        assert_eq!(
            (f.kind, f.level, f.va),
            (FaultKind::Translation, 0, Vaddr(va))
        );
    }
}

#[test]
fn reserved_level_3_encoding_is_a_translation_fault() {
    let mut m = arm64(1);
    set(&mut m, L3, 7, (page(DATA) & !0b11) | 0b01);
    let f = fault(&mut m, l3_va(7).0, AccessKind::Read);
    assert_eq!((f.kind, f.level), (FaultKind::Translation, 3));
}

#[test]
fn invalid_descriptor_faults_at_its_level() {
    let mut m = arm64(1);
    assert_eq!(fault(&mut m, 0x80_0000_0000, AccessKind::Read).level, 0);
    assert_eq!(fault(&mut m, 0xc000_0000, AccessKind::Read).level, 1);
    assert_eq!(fault(&mut m, 0x4040_0000, AccessKind::Read).level, 2);
    assert_eq!(fault(&mut m, l3_va(9).0, AccessKind::Read).level, 3);
}

#[test]
fn unbacked_physical_address_is_an_external_abort() {
    let mut m = arm64(1);
    // A data access to a PA that is not RAM.
    set(&mut m, L3, 7, page(0x1000_0000));
    let f = fault(&mut m, l3_va(7).0, AccessKind::Read);
    assert_eq!((f.kind, f.level), (FaultKind::External, 0));
    assert_eq!(fsc(m.esr(0)), 0x10);
    // A walk that reads a table outside RAM.
    set(&mut m, L2, 2, table(0x1000_0000));
    let f = fault(&mut m, 0x4040_0000, AccessKind::Read);
    assert_eq!((f.kind, f.level), (FaultKind::External, 3));
}

#[test]
fn mmu_off_is_the_identity() {
    let mut m = arm64(1);
    m.enable_mmu(0, false).unwrap();
    m.write_u64(Vaddr(DATA + 8), 5).unwrap();
    assert_eq!(m.phys_read_u64(Paddr(DATA + 8)).unwrap(), 5);
    assert_eq!(
        fault(&mut m, 0x1000, AccessKind::Read).kind,
        FaultKind::External
    );
    assert!(m.tlb_entries(0).is_empty());
}

#[test]
fn at_walks_memory_and_reports_the_mair_attribute() {
    let mut m = arm64(1);
    set(&mut m, L3, 7, page(DATA));
    set(
        &mut m,
        L3,
        8,
        (page(DATA + 0x1000) & !NORMAL) | DEVICE | RO | XN,
    );
    let r = m.hw_translate(Vaddr(l3_va(7).0 + 0x18), true).unwrap();
    assert_eq!((r.pa, r.mair_attr), (Paddr(DATA + 0x18), 0xff));
    assert_eq!(m.hw_translate(l3_va(8), false).unwrap().mair_attr, 0x04);
    let f = m.hw_translate(l3_va(8), true).unwrap_err();
    assert_eq!(
        (f.kind, f.level, f.access),
        (FaultKind::Permission, 3, AccessKind::Write)
    );
    m.set_mair(0x77 << 56);
    assert_eq!(m.hw_translate(l3_va(7), false).unwrap().mair_attr, 0x77);
    // AT neither uses nor fills the TLB, and is not an abort.
    assert!(m.tlb_entries(0).is_empty());
    assert_eq!(m.last_fault(0), None);
    assert_eq!(m.counters().at, 4);
}

#[test]
fn at_sees_memory_while_the_tlb_is_stale() {
    let mut m = arm64(1);
    set(&mut m, L3, 7, page(DATA));
    m.touch(0, l3_va(7)).unwrap();
    set(&mut m, L3, 7, page(DATA + 0x1000));
    assert_eq!(
        m.hw_translate(l3_va(7), false).unwrap().pa,
        Paddr(DATA + 0x1000)
    );
    assert_eq!(m.access(l3_va(7), AccessKind::Read).unwrap(), Paddr(DATA));
}

#[test]
fn faulting_walks_are_not_cached() {
    let mut m = arm64(1);
    assert!(m.read_u64(l3_va(7)).is_err());
    set(&mut m, L3, 7, page(DATA));
    assert!(
        m.read_u64(l3_va(7)).is_ok(),
        "no TLBI needed after mapping an invalid entry"
    );
}
