//! Stage-2 translation (VTTBR, VTCR, HCR.VM) and guest (EL1&0) accesses:
//! walks with concatenated roots, every stage-2 fault kind with the syndrome
//! EL2 sees, the guest's own stage 1 with its table walks through stage 2.

use hvmm::{AccessKind, Arm32Stage2, Arm64Stage2, Ipa, Paddr, Stage, Stage2Format, Vaddr, Vmid};
use hvmm_model::{AbortKind, GuestFault, Machine, Regime, Stage2, TlbTag};
use hvmm_testkit::tables::*;

const A64: Regime = Regime::Arm64El2 { pa_bits: 48 };
const IL: u32 = 1 << 25;
const S1PTW: u32 = 1 << 7;

fn s2tag() -> TlbTag {
    TlbTag::Stage2 { vmid: Vmid(1) }
}

fn s12tag() -> TlbTag {
    TlbTag::Stage12 { vmid: Vmid(1) }
}

/// hvmm's VTCR for `F` decodes, by the model's reading of the Arm ARM, to
/// the sizes `F` declares.
fn decodes_like<F: Stage2Format>(regime: Regime) -> Stage2 {
    let s = Stage2::from_vtcr(regime, F::vtcr()).unwrap_or_else(|e| panic!("{}: {e}", F::NAME));
    assert_eq!(u32::from(s.ipa_bits), F::VA_BITS, "{}", F::NAME);
    assert_eq!(s.start_level, F::ROOT_LEVEL, "{}", F::NAME);
    assert_eq!(s.root_entries(), F::ROOT_ENTRIES as u64, "{}", F::NAME);
    assert_eq!(s.root_tables(), F::ROOT_TABLES as u64, "{}", F::NAME);
    assert_eq!(u32::from(s.oa_bits), F::PA_BITS, "{}", F::NAME);
    s
}

#[test]
fn hvmm_vtcr_values_decode_to_the_formats_sizes() {
    let table = [
        (decodes_like::<Arm64Stage2<32>>(A64), 32, 1, 1),
        (decodes_like::<Arm64Stage2<36>>(A64), 36, 1, 1),
        (decodes_like::<Arm64Stage2<40>>(A64), 40, 1, 2),
        (decodes_like::<Arm64Stage2<42>>(A64), 42, 1, 8),
        (decodes_like::<Arm64Stage2<44>>(A64), 44, 0, 1),
        (decodes_like::<Arm64Stage2<48>>(A64), 48, 0, 1),
        (decodes_like::<Arm32Stage2>(Regime::Arm32Hyp), 40, 1, 2),
    ];
    for (s, bits, level, pages) in table {
        assert_eq!(
            (s.ipa_bits, s.start_level, s.root_tables()),
            (bits, level, pages)
        );
        // hvmm's VTCR leaves VTCR_EL2.VS clear: 8-bit VMIDs.
        assert_eq!(s.vmid_bits, 8);
    }
    // The model's own encoder agrees with its decoder.
    for bits in [32u8, 36, 40, 42, 44, 48] {
        let s = Stage2::arm64(bits);
        assert_eq!(Stage2::from_vtcr(A64, s.vtcr(A64).unwrap()), Ok(s));
        let s16 = s.with_vmid16();
        assert_eq!(Stage2::from_vtcr(A64, s16.vtcr(A64).unwrap()), Ok(s16));
    }
    let a32 = Stage2::arm32();
    let v = a32.vtcr(Regime::Arm32Hyp).unwrap();
    assert_eq!(v & 0x1f, 0b1_1000, "T0SZ = -8 with S set");
    assert_eq!(Stage2::from_vtcr(Regime::Arm32Hyp, v), Ok(a32));
}

#[test]
fn inconsistent_or_unsupported_vtcr_is_refused_and_faults_at_level_0() {
    // T0SZ = 24 (40 bits) with SL0 = 0 (start at level 2): 2^19 entries.
    let bad = 24 | (5 << 16) | (1 << 31); // SL0 = 0
    assert!(Stage2::from_vtcr(A64, bad).is_err());
    // 64 KiB granule: not modelled.
    assert!(Stage2::from_vtcr(A64, Stage2::arm64(40).vtcr(A64).unwrap() | (1 << 14)).is_err());
    // SL0 = 3 is reserved for 4 KiB.
    assert!(Stage2::from_vtcr(A64, 24 | (3 << 6)).is_err());
    // arm32: S must equal T0SZ[3]; SL0 = 2 is reserved.
    assert!(Stage2::from_vtcr(Regime::Arm32Hyp, 0b0_1000 | (1 << 6)).is_err());
    assert!(Stage2::from_vtcr(Regime::Arm32Hyp, 0b1_1000 | (2 << 6)).is_err());

    let (mut m, mut f, t) = arm64_s2(1, Stage2::arm64(40));
    t.map(&mut m, &mut f, 0x1000, 3, s2_page(GUEST_DATA64));
    assert!(m.guest_read_u64(0, Vaddr(0x1000)).is_ok());
    m.set_vtcr(0, bad).unwrap();
    assert!(m.stage2(0).is_err());
    let g = m.s2_walk(0, Ipa(0x1000)).unwrap_err();
    assert_eq!(
        (g.kind, g.level, g.stage),
        (AbortKind::Translation, 0, Stage::Two)
    );
}

/// Maps the top and the bottom page of the IPA space and checks that each
/// translates through the root page its index selects.
fn concatenated_root_walk(bits: u8) {
    let s = Stage2::arm64(bits);
    let (mut m, mut f, t) = arm64_s2(1, s);
    let top = (1u64 << bits) - 0x1000;
    t.map(&mut m, &mut f, top, 3, s2_page(GUEST_DATA64));
    t.map(&mut m, &mut f, 0x1000, 3, s2_page(GUEST_DATA64 + 0x1000));
    m.phys_write_u64(Paddr(GUEST_DATA64 + 0x18), 0xfeed)
        .unwrap();
    m.phys_write_u64(Paddr(GUEST_DATA64 + 0x1018), 0xbeef)
        .unwrap();
    // The top page's root entry is in the last root page.
    let root_slot = t.slot(&mut m, &mut f, top, s.start_level);
    assert_eq!(
        (root_slot - t.root) / 0x1000,
        s.root_tables() - 1,
        "{bits} bits"
    );
    assert_eq!(
        m.s2_walk(0, Ipa(top + 0x18)).unwrap().pa,
        Paddr(GUEST_DATA64 + 0x18)
    );
    // The guest's stage 1 is off: VA = IPA (up to the 48-bit PA size).
    assert_eq!(m.guest_read_u64(0, Vaddr(top + 0x18)).unwrap(), 0xfeed);
    assert_eq!(m.guest_read_u64(0, Vaddr(0x1018)).unwrap(), 0xbeef);
    let e = m.tlb_lookup_tagged(0, s2tag(), top).unwrap();
    assert_eq!(
        (e.va, e.size, e.pa),
        (Vaddr(top), 0x1000, Paddr(GUEST_DATA64))
    );
    // One IPA beyond the configured size: a stage-2 translation fault at
    // level 0, whatever the start level (never folded onto a lower IPA).
    let beyond = 1u64 << bits;
    let g = m.s2_walk(0, Ipa(beyond)).unwrap_err();
    assert_eq!(
        (g.kind, g.level, g.stage, g.ipa),
        (AbortKind::Translation, 0, Stage::Two, Some(Ipa(beyond)))
    );
    if bits < 48 {
        let g = m.guest_read_u64(0, Vaddr(beyond + 0x18)).unwrap_err();
        assert_eq!(
            (g.kind, g.level, g.stage),
            (AbortKind::Translation, 0, Stage::Two)
        );
        assert_eq!(m.esr(0), (0x24 << 26) | IL | 0b00_0100);
        assert_eq!(m.far(0), Vaddr(beyond + 0x18));
        assert_eq!(m.hpfar(0), (beyond >> 12) << 4);
    }
}

#[test]
fn arm64_stage2_walks_for_each_ipa_size() {
    for bits in [32, 36, 40, 42, 44, 48] {
        concatenated_root_walk(bits);
    }
}

#[test]
fn concatenated_root_index_is_not_folded_onto_the_first_page() {
    // 40 bits: IPA bit 39 selects the second root page.
    let (mut m, mut f, t) = arm64_s2(1, Stage2::arm64(40));
    let hi = (1u64 << 39) | 0x4000_0000;
    let lo = 0x4000_0000;
    t.map(&mut m, &mut f, hi, 2, s2_block(GUEST_DATA64 - 0x20_0000));
    t.map(&mut m, &mut f, lo, 2, s2_block(GUEST_DATA64));
    assert_eq!(
        m.s2_walk(0, Ipa(hi + 8)).unwrap().pa,
        Paddr(GUEST_DATA64 - 0x20_0000 + 8)
    );
    assert_eq!(
        m.s2_walk(0, Ipa(lo + 8)).unwrap().pa,
        Paddr(GUEST_DATA64 + 8)
    );
    // VTTBR bits below the root's 8 KiB alignment are ignored.
    m.set_vttbr(0, Paddr(t.root + 0x1000), Vmid(1)).unwrap();
    assert_eq!(
        m.s2_walk(0, Ipa(hi + 8)).unwrap().pa,
        Paddr(GUEST_DATA64 - 0x20_0000 + 8)
    );
}

#[test]
fn arm32_stage2_forty_bit_ipa_with_two_root_pages() {
    let (mut m, mut f, t) = arm32_s2(1);
    let top = (1u64 << 40) - 0x1000;
    t.map(&mut m, &mut f, top, 3, s2_page(HIGH32 + 0x1000));
    t.map(&mut m, &mut f, 0x1000, 3, s2_page(GUEST_DATA32));
    assert_eq!(
        (t.slot(&mut m, &mut f, top, 1) - t.root) / 0x1000,
        1,
        "second root page"
    );
    assert_eq!(
        m.s2_walk(0, Ipa(top + 0x10)).unwrap().pa,
        Paddr(HIGH32 + 0x1010)
    );
    m.phys_write_u64(Paddr(GUEST_DATA32 + 8), 7).unwrap();
    assert_eq!(m.guest_read_u64(0, Vaddr(0x1008)).unwrap(), 7);
    // Beyond 40 bits: AArch32 reports the translation fault at level 1.
    let g = m.s2_walk(0, Ipa(1 << 40)).unwrap_err();
    assert_eq!((g.kind, g.level), (AbortKind::Translation, 1));
    // A 32-bit IPA space (T0SZ = 0, SL0 = 1: four level-1 entries): an IPA
    // above 4 GiB faults at level 1 as well.
    let s32 = Stage2 {
        ipa_bits: 32,
        ..Stage2::arm32()
    };
    m.set_stage2_config(0, s32).unwrap();
    assert_eq!(m.vtcr(0).unwrap() & 0x1f, 0);
    let g = m.s2_walk(0, Ipa(1 << 32)).unwrap_err();
    assert_eq!((g.kind, g.level), (AbortKind::Translation, 1));
}

/// ESR_EL2 / HSR of a stage-2 data abort from a lower EL.
fn dabt(dfsc: u32, write: bool) -> u32 {
    (0x24 << 26) | IL | if write { 1 << 6 } else { 0 } | dfsc
}

fn expect(m: &mut Machine, va: u64, access: AccessKind, kind: AbortKind, level: u8) -> GuestFault {
    let g = m.guest_access(0, Vaddr(va), access).unwrap_err();
    assert_eq!(
        (g.kind, g.level, g.stage, g.s1ptw, g.access),
        (kind, level, Stage::Two, false, access),
        "{va:#x} {access:?}: {g}"
    );
    assert_eq!(g.ipa, Some(Ipa(va)), "stage 1 off: IPA = VA");
    assert_eq!(m.esr(0), g.esr());
    assert_eq!(m.far(0), Vaddr(va));
    assert_eq!(m.hpfar(0), (va >> 12) << 4);
    assert_eq!(m.last_guest_fault(0), Some(g));
    g
}

#[test]
fn each_stage2_fault_kind_with_its_syndrome_arm64() {
    let s = Stage2 {
        oa_bits: 40,
        ..Stage2::arm64(40)
    };
    let (mut m, mut f, t) = arm64_s2(1, s);
    let d = GUEST_DATA64;
    t.map(&mut m, &mut f, 0x1000, 3, s2_page(d));
    t.map(&mut m, &mut f, 0x3000, 3, s2_page(d) & !AF);
    t.map(&mut m, &mut f, 0x4000, 3, s2_page(d) & !S2_RW);
    t.map(&mut m, &mut f, 0x5000, 3, (s2_page(d) & !S2_RW) | S2_READ);
    t.map(&mut m, &mut f, 0x6000, 3, (s2_page(d) & !S2_RW) | S2_WRITE);
    t.map(&mut m, &mut f, 0x7000, 3, s2_page(d) | XN);
    t.map(&mut m, &mut f, 0x8000, 3, s2_page(1 << 40));
    t.map(
        &mut m,
        &mut f,
        0x9000,
        3,
        (s2_page(d) & !MEMATTR_WB) | MEMATTR_DEV,
    );
    // L2[1] of the same L2 table: a table address beyond the 40-bit PS.
    let l2_1 = t.slot(&mut m, &mut f, 0x20_0000, 2);
    m.phys_write_u64(Paddr(l2_1), table(1 << 41)).unwrap();

    assert_eq!(
        m.guest_access(0, Vaddr(0x1010), AccessKind::Write),
        Ok(Paddr(d + 0x10))
    );
    // Translation: a missing page (level 3), a missing level-1 entry.
    let g = expect(&mut m, 0x2000, AccessKind::Read, AbortKind::Translation, 3);
    assert_eq!(g.esr(), dabt(0b00_0111, false));
    expect(
        &mut m,
        0x4000_0000,
        AccessKind::Read,
        AbortKind::Translation,
        1,
    );
    assert_eq!(m.esr(0), dabt(0b00_0101, false));
    // Access flag.
    expect(&mut m, 0x3000, AccessKind::Read, AbortKind::AccessFlag, 3);
    assert_eq!(m.esr(0), dabt(0b00_1011, false));
    // Permission: S2AP 00 (nothing), 01 (read only), 10 (write only).
    expect(&mut m, 0x4000, AccessKind::Read, AbortKind::Permission, 3);
    assert_eq!(m.esr(0), dabt(0b00_1111, false));
    expect(&mut m, 0x4008, AccessKind::Write, AbortKind::Permission, 3);
    assert_eq!(m.esr(0), dabt(0b00_1111, true), "WnR");
    assert!(m.guest_access(0, Vaddr(0x5000), AccessKind::Read).is_ok());
    expect(&mut m, 0x5000, AccessKind::Write, AbortKind::Permission, 3);
    assert!(m.guest_access(0, Vaddr(0x6000), AccessKind::Write).is_ok());
    expect(&mut m, 0x6000, AccessKind::Read, AbortKind::Permission, 3);
    // XN: an instruction abort from a lower EL (EC 0x20), HIFAR on arm32.
    assert!(m.guest_fetch_u32(0, Vaddr(0x5000)).is_ok(), "XN clear");
    let g = expect(&mut m, 0x7004, AccessKind::Exec, AbortKind::Permission, 3);
    assert_eq!(g.esr(), (0x20 << 26) | IL | 0b00_1111);
    assert_eq!(m.hifar(0), 0x7004);
    // Address size: an output address, a table address beyond PS.
    expect(&mut m, 0x8000, AccessKind::Read, AbortKind::AddressSize, 3);
    assert_eq!(m.esr(0), dabt(0b00_0011, false));
    expect(
        &mut m,
        0x20_0000,
        AccessKind::Read,
        AbortKind::AddressSize,
        2,
    );
    assert_eq!(m.esr(0), dabt(0b00_0010, false));
    // MemAttr is recorded in the stage-2 part of the entries.
    let t9 = m.s2_walk(0, Ipa(0x9000)).unwrap();
    assert_eq!(t9.stage2.unwrap().attr, 0b0001);
    assert!(m.guest_access(0, Vaddr(0x9000), AccessKind::Read).is_ok());
    let e = m.tlb_lookup_tagged(0, s2tag(), 0x9000).unwrap();
    assert_eq!(e.stage2.unwrap().attr, 0b0001);
    assert_eq!(e.attr_idx, 0b0001);
    // Every one of them was taken to EL2.
    assert_eq!(m.counters().faults, 10);
}

#[test]
fn arm32_stage2_faults_set_hsr_hdfar_hifar_hpfar() {
    let (mut m, mut f, t) = arm32_s2(1);
    t.map(&mut m, &mut f, 0x1000, 3, s2_page(GUEST_DATA32) | XN);
    t.map(
        &mut m,
        &mut f,
        0x2000,
        3,
        (s2_page(GUEST_DATA32) & !S2_RW) | S2_READ,
    );
    let g = m
        .guest_write_u64(0, Vaddr(0x2008), 1)
        .expect_err("read-only at stage 2");
    assert_eq!(
        (g.kind, g.level, g.stage, g.arm64),
        (AbortKind::Permission, 3, Stage::Two, false)
    );
    assert_eq!(m.esr(0), dabt(0b00_1111, true));
    assert_eq!(m.hdfar(0), 0x2008);
    assert_eq!(m.hpfar(0), 0x20);
    let g = m.guest_fetch_u32(0, Vaddr(0x1000)).unwrap_err();
    assert_eq!(g.esr(), (0x20 << 26) | IL | 0b00_1111);
    assert_eq!(m.hifar(0), 0x1000);
    let g = m.guest_read_u64(0, Vaddr(0x3000)).unwrap_err();
    assert_eq!((g.kind, g.level), (AbortKind::Translation, 3));
    assert_eq!(m.hpfar(0), 0x30);
}

// ---- the guest's own stage 1 ----------------------------------------------
// arm64: stage 2 maps IPA 0x4300_0000..0x4340_0000 to the same PAs with two
// 2 MiB blocks; the guest's stage-1 tables and data live there (so their IPAs
// are their PAs), tables from GUEST_DATA64 + 1 MiB.

const GVA: u64 = 0x1000_0000;

struct Guest {
    m: Machine,
    s2: HandTables,
    f2: Frames,
    s1: HandTables,
    f1: Frames,
}

fn arm64_guest() -> Guest {
    let (mut m, mut f2, s2) = arm64_s2(2, Stage2::arm64(40));
    s2.map(&mut m, &mut f2, GUEST_DATA64, 2, s2_block(GUEST_DATA64));
    s2.map(
        &mut m,
        &mut f2,
        GUEST_DATA64 + 0x20_0000,
        2,
        s2_block(GUEST_DATA64 + 0x20_0000),
    );
    let mut f1 = Frames {
        next: GUEST_DATA64 + 0x10_0000,
    };
    let s1 = HandTables::new(&mut f1, 0, 48);
    s1.map(&mut m, &mut f1, GVA, 3, page(GUEST_DATA64));
    s1.map(
        &mut m,
        &mut f1,
        GVA + 0x1000,
        3,
        page(GUEST_DATA64 + 0x1000) | RO,
    );
    s1.map(
        &mut m,
        &mut f1,
        GVA + 0x2000,
        3,
        page(GUEST_DATA64 + 0x2000) | PXN,
    );
    for cpu in 0..2 {
        m.set_guest_ttbr0(cpu, Ipa(s1.root)).unwrap();
        m.enable_guest_mmu(cpu, true).unwrap();
    }
    Guest { m, s2, f2, s1, f1 }
}

#[test]
fn two_stage_translation_fills_combined_and_stage2_entries() {
    let mut g = arm64_guest();
    let m = &mut g.m;
    m.phys_write_u64(Paddr(GUEST_DATA64 + 0x40), 0x1234)
        .unwrap();
    assert_eq!(m.guest_read_u64(0, Vaddr(GVA + 0x40)).unwrap(), 0x1234);
    let c = m.tlb_lookup_tagged(0, s12tag(), GVA).unwrap();
    assert_eq!(
        (c.va, c.size, c.pa, c.ipa),
        (
            Vaddr(GVA),
            0x1000,
            Paddr(GUEST_DATA64),
            Some(Ipa(GUEST_DATA64))
        )
    );
    assert_eq!(c.stage1.unwrap().level, 3);
    assert_eq!(c.stage2.unwrap().level, 2);
    // Stage-2 entries were filled for the table reads and the data IPA.
    let s2 = m.tlb_lookup_tagged(0, s2tag(), g.s1.root).unwrap();
    assert_eq!(s2.size, 0x20_0000);
    // A second access hits the combined entry.
    m.reset_counters();
    m.guest_read_u64(0, Vaddr(GVA + 0x48)).unwrap();
    let k = m.counters();
    assert_eq!((k.guest_tlb_hits, k.guest_tlb_misses), (1, 0));
    // A stage-1 block over a stage-2 block: one 2 MiB combined entry; over
    // stage-2 pages: 4 KiB entries (the smaller size).
    g.s1.map(
        m,
        &mut g.f1,
        0x4000_0000,
        2,
        block(GUEST_DATA64 + 0x20_0000),
    );
    m.guest_read_u64(0, Vaddr(0x4001_2340)).unwrap();
    let b = m.tlb_lookup_tagged(0, s12tag(), 0x4000_0000).unwrap();
    assert_eq!((b.size, b.pa), (0x20_0000, Paddr(GUEST_DATA64 + 0x20_0000)));
    g.s2.map(m, &mut g.f2, 0x4500_0000, 3, s2_page(GUEST_DATA64 + 0x3000));
    g.s1.map(m, &mut g.f1, 0x4060_0000, 2, block(0x4500_0000));
    assert_eq!(
        m.guest_access(0, Vaddr(0x4060_0010), AccessKind::Read),
        Ok(Paddr(GUEST_DATA64 + 0x3010))
    );
    let p = m.tlb_lookup_tagged(0, s12tag(), 0x4060_0000).unwrap();
    assert_eq!((p.va, p.size), (Vaddr(0x4060_0000), 0x1000));
    assert!(m
        .guest_access(0, Vaddr(0x4060_1000), AccessKind::Read)
        .is_err());
}

#[test]
fn stage1_faults_go_to_the_guest_not_to_el2() {
    let mut g = arm64_guest();
    let m = &mut g.m;
    let f = m.guest_read_u64(0, Vaddr(GVA + 0x5000)).unwrap_err();
    assert_eq!(
        (f.kind, f.level, f.stage, f.ipa),
        (AbortKind::Translation, 3, Stage::One, None)
    );
    assert!(!f.to_el2());
    let f = m.guest_write_u64(0, Vaddr(GVA + 0x1000), 1).unwrap_err();
    assert_eq!((f.kind, f.stage), (AbortKind::Permission, Stage::One));
    let f = m.guest_fetch_u32(0, Vaddr(GVA + 0x2000)).unwrap_err();
    assert_eq!(
        (f.kind, f.stage),
        (AbortKind::Permission, Stage::One),
        "PXN"
    );
    assert!(m.guest_fetch_u32(0, Vaddr(GVA)).is_ok());
    // A VA beyond the guest's 48-bit TTBR0 range.
    let f = m.guest_read_u64(0, Vaddr(1 << 48)).unwrap_err();
    assert_eq!(
        (f.kind, f.level, f.stage),
        (AbortKind::Translation, 0, Stage::One)
    );
    // Nothing was taken to EL2.
    assert_eq!((m.esr(0), m.hpfar(0), m.counters().faults), (0, 0, 0));
    assert_eq!(m.counters().guest_faults, 4);
    assert_eq!(m.last_guest_fault(0), Some(f));
}

#[test]
fn stage2_fault_on_a_stage1_table_walk_sets_s1ptw() {
    let mut g = arm64_guest();
    // A second L3 table for VA 0x1020_0000, at an IPA stage 2 does not map.
    let l2 = g.s1.slot(&mut g.m, &mut g.f1, GVA, 2);
    let l2_next = l2 + 8;
    let table_ipa = 0x4400_0000; // not RAM either: never read
    g.m.phys_write_u64(Paddr(l2_next), table(table_ipa))
        .unwrap();
    let va = GVA + 0x20_0010;
    let f = g.m.guest_write_u64(0, Vaddr(va), 1).unwrap_err();
    assert_eq!(
        (f.kind, f.stage, f.s1ptw, f.ipa),
        (
            AbortKind::Translation,
            Stage::Two,
            true,
            Some(Ipa(table_ipa))
        )
    );
    // The stage-2 tables have an L2 table for 0x4000_0000.. with no entry
    // for 0x4400_0000: a level-2 fault. WnR is 0: the walk only reads.
    assert_eq!(f.level, 2);
    assert_eq!(g.m.esr(0), (0x24 << 26) | IL | S1PTW | 0b00_0110);
    assert_eq!(g.m.far(0), Vaddr(va));
    assert_eq!(g.m.hpfar(0), (table_ipa >> 12) << 4);
    // The same for a fetch: an instruction abort with S1PTW.
    let f = g.m.guest_fetch_u32(0, Vaddr(va)).unwrap_err();
    assert_eq!(f.esr(), (0x20 << 26) | IL | S1PTW | 0b00_0110);
    // Stage 2 maps the table page, but without read permission: a stage-2
    // permission fault on the walk.
    let l3b = GUEST_DATA64 + 0x18_0000;
    g.s2.map(
        &mut g.m,
        &mut g.f2,
        table_ipa,
        3,
        (s2_page(l3b) & !S2_RW) | S2_WRITE,
    );
    g.m.phys_write_u64(Paddr(l3b), page(GUEST_DATA64)).unwrap();
    let f = g.m.guest_read_u64(1, Vaddr(va)).unwrap_err();
    assert_eq!(
        (f.kind, f.level, f.stage, f.s1ptw),
        (AbortKind::Permission, 3, Stage::Two, true)
    );
    assert_eq!(g.m.esr(1), (0x24 << 26) | IL | S1PTW | 0b00_1111);
}

#[test]
fn stage2_permission_on_the_final_access_reports_the_data_ipa() {
    let mut g = arm64_guest();
    // The data page's IPA becomes read-only at stage 2 (a 4 KiB mapping in
    // a new region, so that nothing cached is involved).
    g.s2.map(
        &mut g.m,
        &mut g.f2,
        0x4800_1000,
        3,
        (s2_page(GUEST_DATA64 + 0x5000) & !S2_RW) | S2_READ,
    );
    g.s1.map(&mut g.m, &mut g.f1, GVA + 0x9000, 3, page(0x4800_1000));
    let va = GVA + 0x9008;
    assert!(g.m.guest_read_u64(0, Vaddr(va)).is_ok());
    let f = g.m.guest_write_u64(0, Vaddr(va), 5).unwrap_err();
    assert_eq!(
        (f.kind, f.level, f.stage, f.s1ptw, f.ipa),
        (
            AbortKind::Permission,
            3,
            Stage::Two,
            false,
            Some(Ipa(0x4800_1008))
        )
    );
    assert_eq!(g.m.esr(0), dabt(0b00_1111, true));
    assert_eq!(g.m.far(0), Vaddr(va));
    assert_eq!(g.m.hpfar(0), 0x4_8001 << 4);
}

#[test]
fn at_s12e1_walks_afresh_and_checks_both_stages() {
    let mut g = arm64_guest();
    let m = &mut g.m;
    let t = m.at_s12e1(0, Vaddr(GVA + 0x10), false).unwrap();
    assert_eq!(
        (t.ipa, t.pa, t.size),
        (Ipa(GUEST_DATA64 + 0x10), Paddr(GUEST_DATA64 + 0x10), 0x1000)
    );
    assert_eq!(t.stage2.unwrap().attr, 0b1111);
    assert!(m.at_s12e1(0, Vaddr(GVA + 0x1000), false).is_ok());
    let f = m.at_s12e1(0, Vaddr(GVA + 0x1000), true).unwrap_err();
    assert_eq!((f.kind, f.stage), (AbortKind::Permission, Stage::One));
    // No TLB entries, nothing recorded.
    assert!(m.tlb_entries(0).is_empty());
    assert_eq!((m.esr(0), m.last_guest_fault(0)), (0, None));
    assert_eq!(m.counters().at, 3);
    // AT sees memory while the TLB is stale.
    m.guest_read_u64(0, Vaddr(GVA)).unwrap();
    let l3 = g.s1.slot(m, &mut g.f1, GVA, 3);
    m.phys_write_u64(Paddr(l3), page(GUEST_DATA64 + 0x4000))
        .unwrap();
    assert_eq!(
        m.at_s12e1(0, Vaddr(GVA), false).unwrap().pa,
        Paddr(GUEST_DATA64 + 0x4000)
    );
    assert_eq!(
        m.guest_access(0, Vaddr(GVA), AccessKind::Read),
        Ok(Paddr(GUEST_DATA64))
    );
    // With stage 2 off, the IPA is the PA.
    m.set_stage2(0, false).unwrap();
    let t = m.at_s12e1(0, Vaddr(GVA + 0x1000), false).unwrap();
    assert_eq!((t.pa, t.stage2), (Paddr(GUEST_DATA64 + 0x1000), None));
}

#[test]
fn arm32_guest_stage1_output_above_4gib_reports_a_forty_bit_hpfar() {
    let (mut m, mut f2, s2) = arm32_s2(1);
    // Identity stage 2 for the guest's table region.
    s2.map(&mut m, &mut f2, GUEST_DATA32, 2, s2_block(GUEST_DATA32));
    let mut f1 = Frames {
        next: GUEST_DATA32 + 0x10_0000,
    };
    let s1 = HandTables::new(&mut f1, 1, 32);
    s1.map(&mut m, &mut f1, 0x1000, 3, page(0x12_3456_7000));
    s1.map(&mut m, &mut f1, 0x2000, 3, page(GUEST_DATA32));
    m.set_guest_ttbr0(0, Ipa(s1.root)).unwrap();
    m.enable_guest_mmu(0, true).unwrap();
    m.phys_write_u64(Paddr(GUEST_DATA32 + 8), 3).unwrap();
    assert_eq!(m.guest_read_u64(0, Vaddr(0x2008)).unwrap(), 3);
    let g = m.guest_read_u64(0, Vaddr(0x1010)).unwrap_err();
    assert_eq!(
        (g.kind, g.stage, g.ipa),
        (
            AbortKind::Translation,
            Stage::Two,
            Some(Ipa(0x12_3456_7010))
        )
    );
    assert_eq!(m.hpfar(0), 0x1234_5670);
    assert_eq!(m.hdfar(0), 0x1010);
    assert_eq!(m.esr(0) >> 26, 0x24);
}
