//! The model as an `hvmm::Arch`: descriptor accesses go through the MMU.

use hvmm::{AccessKind, Arch, CpuOps, FaultKind, Paddr, Vaddr};
use hvmm_model::{Machine, ModelError, Regime};
use hvmm_testkit::tables::*;

#[test]
fn builds_a_table_through_write_pte_with_the_mmu_on() {
    let mut m = arm64(1);
    // A new L3 table at PA 0x4000_4000, reachable at VA 0x4000_4000 once
    // L3[4] maps it.
    m.write_pte(Vaddr(L3 + 4 * 8), page(0x4000_4000)).unwrap();
    m.phys_write_u64(Paddr(0x4000_4100), 0xdead_beef).unwrap(); // garbage
    m.zero_page(Vaddr(0x4000_4000)).unwrap();
    assert!(m.phys_page_is_zero(Paddr(0x4000_4000)).unwrap());
    for i in 0..4 {
        m.write_pte(Vaddr(0x4000_4000 + i * 8), page(DATA + i * 0x1000))
            .unwrap();
    }
    // Link it: VA 0x4020_0000.. (L2[1]).
    m.write_pte(Vaddr(L2 + 8), table(0x4000_4000)).unwrap();
    m.write_u64(Vaddr(0x4020_3010), 42).unwrap();
    assert_eq!(m.phys_read_u64(Paddr(DATA + 0x3010)).unwrap(), 42);
    assert_eq!(
        m.read_pte(Vaddr(0x4000_4000 + 3 * 8)).unwrap(),
        page(DATA + 0x3000)
    );
    assert!(m.bbm_violations().is_empty());
    assert!(m.stale_tlb_entries(0).is_empty());
}

#[test]
fn read_pte_of_an_unmapped_va_is_a_translation_fault_data_abort() {
    let mut m = arm64(1);
    let f = m.read_pte(l3_va(100)).unwrap_err();
    assert_eq!(
        (f.kind, f.level, f.access, f.va),
        (FaultKind::Translation, 3, AccessKind::Read, l3_va(100))
    );
    assert_eq!(
        (ec(m.esr(0)), wnr(m.esr(0)), fsc(m.esr(0))),
        (0x25, false, 0x07)
    );
    assert_eq!(m.far(0), l3_va(100));
}

#[test]
fn write_pte_through_a_read_only_mapping_faults_and_changes_nothing() {
    let mut m = arm64(1);
    m.write_pte(Vaddr(L3 + 4 * 8), page(0x4000_4000) | RO)
        .unwrap();
    let snap = m.snapshot_frames(&[Paddr(0x4000_4000).mfn()]).unwrap();
    let f = m.write_pte(Vaddr(0x4000_4000), page(DATA)).unwrap_err();
    assert_eq!(
        (f.kind, f.access),
        (FaultKind::Permission, AccessKind::Write)
    );
    let f = m.zero_page(Vaddr(0x4000_4000)).unwrap_err();
    assert_eq!(f.kind, FaultKind::Permission);
    assert!(m.changed_frames(&snap).is_empty());
}

#[test]
fn root_and_cpu_are_the_current_cpus() {
    let mut m = arm64(2);
    m.set_root(1, Paddr(0x4000_8000)).unwrap();
    assert_eq!((m.cpu(), m.root()), (0, Paddr(L0)));
    m.set_current_cpu(1).unwrap();
    assert_eq!((m.cpu(), m.root()), (1, Paddr(0x4000_8000)));
    assert_eq!(m.set_current_cpu(2), Err(ModelError::NoSuchCpu(2)));
    assert_eq!(m.enable_mmu(5, true), Err(ModelError::NoSuchCpu(5)));
}

#[test]
fn each_cpu_walks_from_its_own_root() {
    let mut m = arm64(2);
    // CPU 1: a copy of the tables whose L3[7] maps another page.
    for (i, t) in [L0, L1, L2, L3].iter().enumerate() {
        let mut buf = vec![0u8; 4096];
        m.phys_read(Paddr(*t), &mut buf).unwrap();
        m.phys_write(Paddr(0x4001_0000 + i as u64 * 0x1000), &buf)
            .unwrap();
    }
    set(&mut m, 0x4001_0000, 0, table(0x4001_1000));
    set(&mut m, 0x4001_1000, 1, table(0x4001_2000));
    set(&mut m, 0x4001_2000, 0, table(0x4001_3000));
    set(&mut m, L3, 7, page(DATA));
    set(&mut m, 0x4001_3000, 7, page(DATA + 0x1000));
    m.set_root(1, Paddr(0x4001_0000)).unwrap();
    assert_eq!(m.touch(0, l3_va(7)).unwrap(), Paddr(DATA));
    assert_eq!(m.touch(1, l3_va(7)).unwrap(), Paddr(DATA + 0x1000));
}

#[test]
fn arm32_builds_and_reads_through_write_pte() {
    let mut m = arm32(1);
    m.write_pte(Vaddr(A32_L3 + 5 * 8), page(HIGH32)).unwrap();
    m.write_u64(a32_l3_va(5), 3).unwrap();
    assert_eq!(m.phys_read_u64(Paddr(HIGH32)).unwrap(), 3);
    assert_eq!(m.read_pte(Vaddr(A32_L3 + 5 * 8)).unwrap(), page(HIGH32));
    let f = m.read_pte(a32_l3_va(6)).unwrap_err();
    assert_eq!((f.kind, f.level), (FaultKind::Translation, 3));
    assert_eq!(m.hdfar(0), 0x8000_6000);
}

#[test]
fn mmu_off_accesses_are_physical() {
    let mut m = Machine::new(Regime::Arm64El2 { pa_bits: 40 }, 1);
    m.add_ram(Paddr(0x4000_0000), 0x10_0000).unwrap();
    m.write_pte(Vaddr(0x4000_0010), 0x1234).unwrap();
    assert_eq!(m.phys_read_u64(Paddr(0x4000_0010)).unwrap(), 0x1234);
    let f = m.read_pte(Vaddr(1 << 40)).unwrap_err();
    assert_eq!((f.kind, f.level), (FaultKind::AddressSize, 0));
    assert_eq!(
        m.hw_translate(Vaddr(0x4000_0010), true).unwrap().pa,
        Paddr(0x4000_0010)
    );
}
