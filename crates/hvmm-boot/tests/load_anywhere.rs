//! Loading the image anywhere (issue 12, items 1–3): any 4 KiB-aligned load
//! address inside the PA size boots, including those that share a table
//! slot with the link address; the image may be 8 MiB; every root switch
//! (boot CPU and secondaries) leaves no TLB entry that the new tables map
//! with another size, address or memory type — and the sequence hvmm used
//! before, kept as the negative case, is caught by the model.

use hvmm::{Paddr, Vaddr};
use hvmm_boot::image::ImageLayout;
use hvmm_boot::model::{
    head, idmap_page_offset, start_secondary, ArchKind, HeadError, Loader, Outcome, Scenario,
    SecondaryStart,
};
use hvmm_model::{Machine, Regime, RootSwitchReason};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
const TIB: u64 = 1 << 40;

/// A good boot ([`hvmm_testkit::boot::boot_ok`]: no unsafe root switch, no
/// TLB conflict among its checks) where the scenario put it, on every CPU.
fn boot_ok(s: &Scenario) -> Outcome {
    let o = hvmm_testkit::boot::boot_ok(s);
    let sum = o.result.as_ref().unwrap();
    if let Some(load) = s.load_addr {
        assert_eq!(sum.image_pa, Some(Paddr(load)));
    }
    assert_eq!(sum.cpus, s.cpus);
    o
}

fn direct(arch: ArchKind, ram: Vec<(u64, u64)>, load: u64, cpus: usize) -> Scenario {
    let mut s = Scenario::default_for(arch);
    s.ram = ram;
    s.loader = Loader::Direct;
    s.load_addr = Some(load);
    s.cpus = cpus;
    s
}

#[test]
fn loads_sharing_a_table_slot_with_the_link_address_boot() {
    // RAM at 0 (as on the ZynqMP): the image linked at 0x200000 loaded on
    // top of its own link range, just below it, just above it, and inside
    // the fixmap's slot. These were refused ("overlaps its link range").
    for arch in [ArchKind::Arm64, ArchKind::Arm32] {
        for load in [
            0x30_0000, 0x20_1000, 0x1f_f000, 0x10_0000, 0x27_f000, 0xa0_0000,
        ] {
            for cpus in [1, 4] {
                boot_ok(&direct(arch, vec![(0, GIB)], load, cpus));
            }
        }
    }
}

#[test]
fn the_identity_page_is_never_a_page_of_the_image() {
    let img = ImageLayout::model();
    let link = img.start.0;
    let size = img.size();
    // Below, on top, just above, and far from the link address.
    for load in [
        0x1000,
        link - 0x1000,
        link + 0x1000,
        link + size - 0x1000,
        link + size,
        0x4000_0000,
    ] {
        let off = idmap_page_offset(Paddr(load), &img);
        let id_va = load + off;
        let on_image = id_va >= link && id_va < link + size && id_va != link + off;
        assert!(!on_image, "load {load:#x}: identity page at VA {id_va:#x}");
    }
    assert_eq!(idmap_page_offset(Paddr(link), &img), 0);
    assert_eq!(idmap_page_offset(Paddr(link + 0x1000), &img), size - 0x1000);
}

#[test]
fn arm64_loaded_at_16_tib_and_near_the_top_of_48_bits() {
    boot_ok(&direct(
        ArchKind::Arm64,
        vec![(16 * TIB, GIB)],
        16 * TIB + 0x1000,
        4,
    ));
    let top = (1u64 << 48) - GIB;
    boot_ok(&direct(
        ArchKind::Arm64,
        vec![(top, GIB)],
        (1 << 48) - 16 * MIB + 0x1000,
        4,
    ));
}

#[test]
fn arm64_loaded_4_kib_aligned_at_the_bottom_and_top_of_ram_and_above_4_gib() {
    for load in [0x4000_1000, 0x8000_0000 - 8 * MIB + 0x1000] {
        boot_ok(&direct(ArchKind::Arm64, vec![(0x4000_0000, GIB)], load, 4));
    }
    let ram = vec![(0x4000_0000, 8 * GIB)];
    boot_ok(&direct(ArchKind::Arm64, ram, 0x1_8000_3000, 4));
}

#[test]
fn arm32_loaded_at_0x1000_and_at_0xfff00000() {
    boot_ok(&direct(ArchKind::Arm32, vec![(0, GIB)], 0x1000, 4));
    let ram = vec![(0x4000_0000, GIB), (0xf000_0000, 256 * MIB)];
    boot_ok(&direct(ArchKind::Arm32, ram, 0xfff0_0000, 4));
}

#[test]
fn the_head_refuses_only_what_cannot_work() {
    let img = ImageLayout::model();
    let mut m = Machine::new(Regime::Arm64El2 { pa_bits: 48 }, 1);
    m.add_ram(Paddr(0), 64 * MIB).unwrap();
    assert_eq!(
        head::<hvmm::Arm64>(&mut m, Paddr(0x30_0800), &img),
        Err(HeadError::Misaligned(Paddr(0x30_0800)))
    );
    let beyond = (1u64 << 48) - 0x1000;
    assert_eq!(
        head::<hvmm::Arm64>(&mut m, Paddr(beyond), &img),
        Err(HeadError::BeyondPa(Paddr(beyond)))
    );
    let mut big = img;
    big.end = Vaddr(img.start.0 + 8 * MIB + 0x1000);
    big.sections[3].end = big.end;
    assert!(matches!(
        head::<hvmm::Arm64>(&mut m, Paddr(0x40_0000), &big),
        Err(HeadError::TooLarge(_))
    ));
    // At 0x300000 (the old clash) it builds its tables and turns the MMU on.
    assert_eq!(head::<hvmm::Arm64>(&mut m, Paddr(0x30_0000), &img), Ok(()));
    assert!(m.mmu_enabled(0).unwrap());
    assert!(m.root_switch_hazards().is_empty());
}

/// Boots, then restarts CPU 1 with `how` and returns the hazards its root
/// switch left.
fn restart_cpu1(s: &Scenario, how: SecondaryStart) -> Vec<hvmm_model::RootSwitchHazard> {
    let o = boot_ok(s);
    let mut m = o.machine;
    let root = m.root_of(1).unwrap();
    let before = m.root_switch_hazards().len();
    start_secondary(&mut m, 1, root, &ImageLayout::model().tables, how).expect("CPU 1 restarts");
    m.root_switch_hazards()[before..].to_vec()
}

#[test]
fn switching_roots_with_the_identity_entry_cached_is_caught() {
    // arm32: loaded at the start of its RAM (1 GiB), the identity page has
    // a VA inside the xenheap's area, which the runtime tables map with 2
    // MiB contiguous blocks.
    let mut s = Scenario::default_for(ArchKind::Arm32);
    s.loader = Loader::Uboot;
    s.load_addr = Some(0x4020_0000);
    let bad = restart_cpu1(&s, SecondaryStart::SwitchWithIdentity);
    assert!(!bad.is_empty(), "the old switch was not caught");
    assert_eq!(bad[0].reason, RootSwitchReason::Size, "{bad:?}");
    assert_eq!(bad[0].cached.size, 0x1000);
    assert!(restart_cpu1(&s, SecondaryStart::BreakBeforeMake).is_empty());

    // arm64: loaded at 512 GiB, the identity page's VA is in the
    // frametable, mapped with 2 MiB blocks.
    let ram = vec![(0x4000_0000, GIB), (512 * GIB, GIB)];
    let s = direct(ArchKind::Arm64, ram, 512 * GIB, 2);
    let bad = restart_cpu1(&s, SecondaryStart::SwitchWithIdentity);
    assert!(!bad.is_empty(), "the old switch was not caught");
    assert_eq!(bad[0].reason, RootSwitchReason::Size, "{bad:?}");
    assert!(restart_cpu1(&s, SecondaryStart::BreakBeforeMake).is_empty());
}

/// The model's layout grown to `size` bytes (the data section takes the rest).
fn layout_of_size(size: u64) -> ImageLayout {
    let mut img = ImageLayout::model();
    img.end = Vaddr(img.start.0 + size);
    img.sections[3].end = img.end;
    assert_eq!(img.check(), Ok(()));
    img
}

#[test]
fn an_8_mib_image_boots_with_the_boot_tables_mapping_exactly_it() {
    for arch in [ArchKind::Arm64, ArchKind::Arm32] {
        for (load, ram) in [(0x4020_0000, (0x4000_0000, GIB)), (0x60_0000, (0, GIB))] {
            let mut s = direct(arch, vec![ram], load, 4);
            s.image = Some(layout_of_size(8 * MIB));
            let o = boot_ok(&s);
            assert!(o.log.contains("(8192 KiB)"), "{}", o.log);
        }
    }
    // One page more is refused by the layout check and by the head.
    let mut img = layout_of_size(8 * MIB);
    img.end = Vaddr(img.end.0 + 0x1000);
    img.sections[3].end = img.end;
    assert_eq!(img.check(), Err("the image does not fit in 8 MiB"));
}
