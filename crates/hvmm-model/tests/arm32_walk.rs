//! arm32 (LPAE long descriptors, Hyp mode, T0SZ = 0): what a walk of
//! hand-built tables gives.

use hvmm::{AccessKind, CpuOps, FaultKind, Paddr, Vaddr};
use hvmm_testkit::tables::*;

#[test]
fn l1_block_maps_one_gib() {
    let mut m = arm32(1);
    // L1[3]: VA 0xc000_0000.. -> PA 0x8000_0000.. (1 GiB block).
    set(&mut m, A32_L1, 3, block(0x8000_0000));
    m.phys_write_u64(Paddr(0x8123_4560), 9).unwrap();
    assert_eq!(m.read_u64(Vaddr(0xc123_4560)).unwrap(), 9);
    assert_eq!(m.walk(0, Vaddr(0xc123_4560)).unwrap().level, 1);
}

#[test]
fn l2_block_and_l3_page() {
    let mut m = arm32(1);
    set(&mut m, A32_L2, 1, block(0x8040_0000)); // VA 0x8020_0000
    set(&mut m, A32_L3, 5, page(0x8100_0000)); // VA 0x8000_5000
    assert_eq!(
        m.access(Vaddr(0x8020_1234), AccessKind::Read).unwrap(),
        Paddr(0x8040_1234)
    );
    assert_eq!(
        m.access(Vaddr(0x8000_5678), AccessKind::Write).unwrap(),
        Paddr(0x8100_0678)
    );
    assert_eq!(m.walk(0, Vaddr(0x8020_0000)).unwrap().level, 2);
    assert_eq!(m.walk(0, Vaddr(0x8000_5000)).unwrap().level, 3);
}

#[test]
fn forty_bit_output_address_above_4gib_translates() {
    let mut m = arm32(1);
    set(&mut m, A32_L3, 5, page(HIGH32 + 0x3000));
    m.write_u64(Vaddr(0x8000_5ff8), 0xabcd).unwrap();
    assert_eq!(m.phys_read_u64(Paddr(HIGH32 + 0x3ff8)).unwrap(), 0xabcd);
    assert_eq!(
        m.phys_read_u64(Paddr(0x3ff8)).ok(),
        None,
        "no aliasing to the low 32 bits"
    );
    assert_eq!(
        m.hw_translate(Vaddr(0x8000_5010), true).unwrap().pa,
        Paddr(HIGH32 + 0x3010)
    );
}

#[test]
fn output_address_bits_above_40_are_an_address_size_fault() {
    let mut m = arm32(1);
    set(&mut m, A32_L3, 5, page(1 << 40));
    let f = m.read_u64(Vaddr(0x8000_5000)).unwrap_err();
    assert_eq!((f.kind, f.level), (FaultKind::AddressSize, 3));
}

#[test]
fn level_1_table_has_only_four_entries() {
    let mut m = arm32(1);
    // The root is 32 bytes at 0x8000_0fe0: VA[31:30] selects one of 4.
    set(&mut m, A32_L1, 3, block(0x8000_0000));
    // Whatever follows the 4 entries is never used as a descriptor.
    set(&mut m, A32_L1, 4, block(0x4000_0000));
    assert_eq!(
        m.walk(0, Vaddr(0xffff_f000)).unwrap().descriptor_pa,
        Paddr(A32_L1 + 3 * 8)
    );
    // Entry 0 and 1 are invalid: translation faults at level 1 (no level 0).
    let f = m.read_u64(Vaddr(0x0000_1000)).unwrap_err();
    assert_eq!((f.kind, f.level), (FaultKind::Translation, 1));
    // No VA reaches beyond entry 3: a wider VA faults.
    let f = m.read_u64(Vaddr(1 << 32)).unwrap_err();
    assert_eq!((f.kind, f.level), (FaultKind::Translation, 1));
}

#[test]
fn permission_and_access_flag_faults_use_the_same_bits() {
    let mut m = arm32(1);
    set(&mut m, A32_L3, 5, page(0x8100_0000) | RO);
    set(&mut m, A32_L3, 6, page(0x8100_1000) & !AF);
    set(&mut m, A32_L3, 7, page(0x8100_2000) | XN);
    let f = m.write_u64(Vaddr(0x8000_5008), 1).unwrap_err();
    assert_eq!((f.kind, f.level), (FaultKind::Permission, 3));
    assert_eq!(
        (ec(m.esr(0)), wnr(m.esr(0)), fsc(m.esr(0))),
        (0x25, true, 0x0f)
    );
    assert_eq!(m.hdfar(0), 0x8000_5008);
    let f = m.read_u64(Vaddr(0x8000_6000)).unwrap_err();
    assert_eq!((f.kind, f.level), (FaultKind::AccessFlag, 3));
    let f = m.fetch_u32(Vaddr(0x8000_7004)).unwrap_err();
    assert_eq!(
        (f.kind, f.access),
        (FaultKind::Permission, AccessKind::Exec)
    );
    assert_eq!(m.hifar(0), 0x8000_7004);
    assert_eq!(ec(m.esr(0)), 0x21);
}

#[test]
fn level_1_contiguous_hint_is_ignored() {
    let mut m = arm32(1);
    set(&mut m, A32_L1, 3, block(0x8000_0000) | CONT);
    m.touch(0, Vaddr(0xc000_0000)).unwrap();
    let e = m.tlb_lookup(0, Vaddr(0xc000_0000)).unwrap();
    assert_eq!((e.size, e.contiguous), (1 << 30, false));
}

#[test]
fn level_3_contiguous_run_is_one_entry() {
    let mut m = arm32(1);
    for i in 0..16 {
        set(&mut m, A32_L3, 16 + i, page(HIGH32 + i * 0x1000) | CONT);
    }
    m.touch(0, Vaddr(0x8001_3000)).unwrap();
    let e = m.tlb_lookup(0, Vaddr(0x8001_f000)).unwrap();
    assert_eq!(
        (e.va, e.size, e.pa),
        (Vaddr(0x8001_0000), 0x1_0000, Paddr(HIGH32))
    );
}

#[test]
fn tlbimvah_truncates_the_address_to_32_bits() {
    let mut m = arm32(1);
    set(&mut m, A32_L3, 5, page(0x8100_0000));
    m.touch(0, Vaddr(0x8000_5000)).unwrap();
    m.tlb_flush_va_local(Vaddr(0x1_8000_5000));
    assert!(m.tlb_lookup(0, Vaddr(0x8000_5000)).is_none());
}
