//! The per-phase table-access paths on the machine model: PMAP, the fixmap,
//! `copy_from_paddr` and arm32's domain-page slots, each at its limits.

use hvmm::access::AccessError;
use hvmm::phase::ImageRange;
use hvmm::{Arch, Arm32, Arm64, Attrs, Error, Format, MapFlags, Mfn, Op, Paddr, Vaddr};
use hvmm_boot::image::ImageLayout;
use hvmm_boot::model::head;
use hvmm_boot::{AccessPolicy, Mm};
use hvmm_model::{Machine, Regime};
use hvmm_xen::layout::DOMHEAP_SLOTS;
use hvmm_xen::layout::{fixmap_va, FIXMAP_MISC, NUM_PMAP};
use hvmm_xen::phase::{DomainPage, Pmap};

const LOAD: u64 = 0x4020_0000;

/// A machine right after the head: MMU on, boot tables, fixmap linked.
fn early<F: Format>(regime: Regime) -> (Machine, ImageLayout, ImageRange) {
    let mut m = Machine::new(regime, 2);
    m.add_ram(Paddr(0x4000_0000), 1 << 30).unwrap();
    let img = ImageLayout::model();
    head::<F>(&mut m, Paddr(LOAD), &img).unwrap();
    let image = ImageRange::discover(&mut m, img.start, img.end).unwrap();
    (m, img, image)
}

fn early_mm<F: hvmm_xen::layout::HasLayout>(regime: Regime) -> (Machine, Mm<F>) {
    let (m, img, image) = early::<F>(regime);
    let root = Mfn((LOAD + (img.tables.boot_root.0 - img.start.0)) >> 12);
    // SAFETY: each test makes one memory manager over its model's root.
    let mut mm = unsafe { Mm::<F>::new(root, image, img.tables.fixmap_l3, AccessPolicy::Correct) };
    mm.alloc
        .add(Paddr(0x5000_0000), Paddr(0x5100_0000))
        .unwrap();
    (m, mm)
}

#[test]
fn image_range_is_found_by_translation() {
    let (_, img, image) = early::<Arm64>(Regime::Arm64El2 { pa_bits: 48 });
    assert_eq!(image.0.pa, Paddr(LOAD));
    assert_eq!(image.0.size, img.size());
}

#[test]
fn pmap_has_eight_slots_then_says_so() {
    let (mut m, img, _) = early::<Arm64>(Regime::Arm64El2 { pa_bits: 48 });
    let mut pmap = Pmap::new(img.tables.fixmap_l3);
    let mut vas = Vec::new();
    for i in 0..NUM_PMAP as u64 {
        let va = pmap.map(&mut m, Mfn(0x5_0000 + i)).unwrap();
        m.write_u64(va, i).unwrap();
        vas.push(va);
    }
    assert_eq!(
        pmap.map(&mut m, Mfn(0x5_1000)),
        Err(AccessError::SlotsExhausted {
            provider: "pmap",
            slots: NUM_PMAP
        })
    );
    for (i, va) in vas.into_iter().enumerate() {
        assert_eq!(
            m.phys_read_u64(Paddr((0x5_0000 + i as u64) << 12)).unwrap(),
            i as u64
        );
        pmap.unmap(&mut m, va);
        assert!(m.read_u64(va).is_err(), "an unmapped slot faults");
    }
    assert!(m.all_stale_tlb_entries().is_empty());
    assert_eq!(pmap.in_use(), 0);
}

#[test]
fn pmap_refuses_once_other_cpus_may_run() {
    let (mut m, img, _) = early::<Arm64>(Regime::Arm64El2 { pa_bits: 48 });
    let mut pmap = Pmap::new(img.tables.fixmap_l3);
    pmap.retire();
    assert_eq!(
        pmap.map(&mut m, Mfn(0x5_0000)),
        Err(AccessError::WrongPhase {
            provider: "pmap",
            state: "SmpBoot"
        })
    );
}

#[test]
fn early_updates_reach_new_tables_through_pmap_and_image_tables_directly() {
    let (mut m, mut mm) = early_mm::<Arm64>(Regime::Arm64El2 { pa_bits: 48 });
    // 2 MiB of pages at 1 GiB: new L1? no: L0[0] exists (image), so new L2 and L3.
    mm.update(
        &mut m,
        Vaddr(1 << 30),
        512,
        Op::Insert {
            pa: Paddr(0x4800_0000),
            attrs: Attrs::RW,
        },
        MapFlags::PAGES,
    )
    .unwrap();
    let c = mm.phases[0].access;
    assert!(c.image >= 2, "root and L1 are image tables: {c:?}");
    assert_eq!(c.pmap, 2, "the new L2 and L3 through PMAP: {c:?}");
    assert_eq!(mm.pmap_in_use(), 0, "every PMAP slot given back");
    assert_eq!(
        m.read_u64(Vaddr((1 << 30) + 8)).unwrap(),
        m.phys_read_u64(Paddr(0x4800_0008)).unwrap()
    );
}

#[test]
fn set_fixmap_refuses_a_slot_in_use_and_clear_fixmap_frees_it() {
    let (mut m, mut mm) = early_mm::<Arm64>(Regime::Arm64El2 { pa_bits: 48 });
    mm.set_fixmap(&mut m, FIXMAP_MISC, Mfn(0x5_0000), Attrs::WC)
        .unwrap();
    assert!(matches!(
        mm.set_fixmap(&mut m, FIXMAP_MISC, Mfn(0x5_0001), Attrs::WC),
        Err(Error::AlreadyMapped { level: 3, .. })
    ));
    mm.clear_fixmap(&mut m, FIXMAP_MISC).unwrap();
    assert!(m.read_u64(fixmap_va(FIXMAP_MISC)).is_err());
    mm.set_fixmap(&mut m, FIXMAP_MISC, Mfn(0x5_0001), Attrs::WC)
        .unwrap();
    assert!(m.all_stale_tlb_entries().is_empty());
}

#[test]
fn copy_from_paddr_handles_any_alignment_across_pages() {
    for arm32 in [false, true] {
        let (mut m, mut mm_bytes) = if arm32 {
            let (m, mm) = early_mm::<Arm32>(Regime::Arm32Hyp);
            (m, Err(mm))
        } else {
            let (m, mm) = early_mm::<Arm64>(Regime::Arm64El2 { pa_bits: 48 });
            (m, Ok(mm))
        };
        let src: Vec<u8> = (0..3 * 4096 + 100).map(|i| (i * 13 + 5) as u8).collect();
        m.phys_write(Paddr(0x6000_0000), &src).unwrap();
        for (start, len) in [
            (0usize, 1usize),
            (4095, 2),
            (17, 4096 * 2 + 9),
            (4096, 4096),
            (1, 3 * 4096 + 90),
        ] {
            let mut dst = vec![0u8; len];
            let pa = Paddr(0x6000_0000 + start as u64);
            match &mut mm_bytes {
                Ok(mm) => mm.copy_from_paddr(&mut m, &mut dst, pa).unwrap(),
                Err(mm) => mm.copy_from_paddr(&mut m, &mut dst, pa).unwrap(),
            }
            assert_eq!(
                &dst[..],
                &src[start..start + len],
                "copy of {len} bytes at +{start}"
            );
        }
        assert!(
            m.read_u64(fixmap_va(FIXMAP_MISC)).is_err(),
            "misc slot cleared"
        );
        assert!(m.all_stale_tlb_entries().is_empty());
        assert!(m.bbm_violations().is_empty());
    }
}

#[test]
fn virt_to_maddr_uses_hardware_translation() {
    let (mut m, _) = early_mm::<Arm64>(Regime::Arm64El2 { pa_bits: 48 });
    assert_eq!(
        Mm::<Arm64>::virt_to_maddr(&mut m, Vaddr(0x20_1234)).unwrap(),
        Paddr(LOAD + 0x1234)
    );
    assert!(matches!(
        Mm::<Arm64>::virt_to_maddr(&mut m, Vaddr(0x7000_0000)),
        Err(Error::Fault(_))
    ));
}

/// arm32: domain-page slots over a hand-made xenheap window.
fn domain_page_setup() -> (Machine, DomainPage) {
    let (mut m, mut mm) = early_mm::<Arm32>(Regime::Arm32Hyp);
    // RAM where a frame hashes to the same slot as 0x6000_0000 (one 2 MiB
    // block per slot further on).
    m.add_ram(
        Paddr(0x6000_0000 + (DOMHEAP_SLOTS as u64) * (2 << 20)),
        4 << 20,
    )
    .unwrap();
    // Xenheap window: VA 0x4000_0000 -> PA 0x5000_0000, 32 MiB of blocks.
    mm.update(
        &mut m,
        Vaddr(0x4000_0000),
        8192,
        Op::Insert {
            pa: Paddr(0x5000_0000),
            attrs: Attrs::RW,
        },
        MapFlags::BLOCKS,
    )
    .unwrap();
    let slots_pa = Paddr(0x5100_0000);
    let slots_va = Vaddr(0x4000_0000 + 0x100_0000);
    m.zero_page(slots_va).unwrap();
    m.zero_page(Vaddr(slots_va.0 + 4096)).unwrap();
    let img = ImageLayout::model();
    for i in 0..2u64 {
        let e = hvmm::Pte::table::<Arm32>(Mfn((slots_pa.0 >> 12) + i)).0;
        m.write_pte(Vaddr(img.tables.boot_root.0 + (2 + i) * 8), e)
            .unwrap();
    }
    (m, DomainPage::new(slots_va, Vaddr(0x8000_0000)))
}

#[test]
fn domain_page_counts_references_and_unmaps_lazily() {
    let (mut m, dp) = domain_page_setup();
    let a = dp.map(&mut m, Mfn(0x6_0001)).unwrap();
    let b = dp.map(&mut m, Mfn(0x6_0002)).unwrap();
    assert_eq!(b.0 - a.0, 4096, "same 2 MiB frame, same slot");
    assert_eq!(dp.held(&mut m).unwrap(), 2);
    m.write_u64(a, 0xfeed).unwrap();
    assert_eq!(m.phys_read_u64(Paddr(0x6000_1000)).unwrap(), 0xfeed);
    dp.unmap(&mut m, a);
    dp.unmap(&mut m, b);
    assert_eq!(dp.held(&mut m).unwrap(), 0);
    assert!(
        m.read_u64(a).is_ok(),
        "lazy: the entry stays until the slot is reused"
    );
}

#[test]
fn domain_page_reuses_a_stale_slot_by_the_book() {
    let (mut m, dp) = domain_page_setup();
    let a = dp.map(&mut m, Mfn(0x6_0000)).unwrap();
    m.read_u64(a).unwrap(); // cache it
    dp.unmap(&mut m, a);
    // Same hash (2 MiB frame + every slot further), different frame.
    let other = Mfn(0x6_0000 + DOMHEAP_SLOTS as u64 * 512);
    let b = dp.map(&mut m, other).unwrap();
    assert_eq!(b, a, "the stale slot is reused");
    m.write_u64(b, 7).unwrap();
    assert_eq!(
        m.phys_read_u64(other.paddr()).unwrap(),
        7,
        "no stale translation used"
    );
    assert!(m.bbm_violations().is_empty(), "{:?}", m.bbm_violations());
    assert!(m.all_stale_tlb_entries().is_empty());
}

#[test]
fn domain_page_exhaustion_is_a_named_error() {
    let (mut m, dp) = domain_page_setup();
    // Every entry but the window's is a slot.
    assert_eq!(DOMHEAP_SLOTS, 1023);
    for i in 0..DOMHEAP_SLOTS as u64 {
        dp.map(&mut m, Mfn(i * 512)).unwrap();
    }
    assert_eq!(
        dp.map(&mut m, Mfn(DOMHEAP_SLOTS as u64 * 512)),
        Err(AccessError::SlotsExhausted {
            provider: "domain-page",
            slots: DOMHEAP_SLOTS
        })
    );
}
