//! RAM anywhere in the physical address space (issue 12, item 6): banks far
//! apart are packed into the direct map (the holes take no VA), the
//! frametable is built per bank (the holes take neither VA nor memory), and
//! the page-table work follows the banks and the blocks, not the bytes.

use hvmm::Paddr;
use hvmm_boot::model::{run, ArchKind, Loader, Outcome, Scenario};
use hvmm_testkit::boot::boot_ok;

const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

fn scenario(ram: Vec<(u64, u64)>, load: u64) -> Scenario {
    let mut s = Scenario::default_for(ArchKind::Arm64);
    s.ram = ram;
    s.loader = Loader::Direct;
    s.load_addr = Some(load);
    s
}

/// The direct-map and frametable regions the boot reported, as (VA, PA,
/// size).
fn regions(o: &Outcome, name: &str) -> Vec<(u64, u64, u64)> {
    o.result
        .as_ref()
        .unwrap()
        .regions
        .iter()
        .filter(|r| r.name == name)
        .map(|r| (r.va.0, r.pa.0, r.size))
        .collect()
}

#[test]
fn banks_at_0_1_tib_and_200_tib_are_all_direct_mapped() {
    let ram = vec![(0, GIB), (TIB, GIB), (200 * TIB, GIB)];
    let o = boot_ok(&scenario(ram, 0x1000_0000));
    // Each bank direct-mapped from its start (a bank may be in pieces
    // around the table pool's 2 MiB and the image's tables, which the
    // direct map leaves out).
    let dm = regions(&o, "directmap");
    let banks = [0, TIB, 200 * TIB];
    for bank in banks {
        assert!(dm.iter().any(|r| r.1 == bank), "{}", o.log);
    }
    let holes = GIB * 3 - dm.iter().map(|r| r.2).sum::<u64>();
    assert!((2 << 20..4 << 20).contains(&holes), "{holes:#x}");
    // Packed: each bank's VA follows the previous one's (1 GiB apart here),
    // whatever the hole between their PAs.
    let base = dm[0].0;
    for r in &dm {
        let i = banks.iter().rposition(|&b| b <= r.1).unwrap() as u64;
        assert_eq!(r.0 - base, i * GIB + (r.1 - banks[i as usize]), "{r:x?}");
    }
    // One frametable part per bank, back to back.
    let ft = regions(&o, "frametable");
    assert_eq!(ft.len(), 3, "{}", o.log);
    assert_eq!(ft[1].0, ft[0].0 + ft[0].2);
    assert_eq!(ft[2].0, ft[1].0 + ft[1].2);
    // Each part taken from its own bank.
    for (part, bank) in ft.iter().zip([0, TIB, 200 * TIB]) {
        assert!(part.1 >= bank && part.1 + part.2 <= bank + GIB, "{part:x?}");
    }
    assert!(o.log.contains("(XEN) RAM: 0x0000c80000000000"), "{}", o.log);
}

#[test]
fn an_image_loaded_in_a_far_bank_boots() {
    let ram = vec![(0x4000_0000, GIB), (200 * TIB, GIB)];
    let load = 200 * TIB + 0x20_3000;
    let o = boot_ok(&scenario(ram, load));
    assert_eq!(o.result.as_ref().unwrap().image_pa, Some(Paddr(load)));
}

#[test]
fn a_machine_with_64_tib_of_ram_in_several_banks() {
    // 4 banks of 16 TiB spread over the 48-bit space.
    let ram: Vec<(u64, u64)> = [0x40_0000_0000u64, 40 * TIB, 100 * TIB, 180 * TIB]
        .iter()
        .map(|&b| (b, 16 * TIB))
        .collect();
    let mut s = scenario(ram, 0x40_0020_0000);
    s.cpus = 2;
    let o = boot_ok(&s);
    let sum = o.result.as_ref().unwrap();
    let dm = regions(&o, "directmap");
    // All of it but the table pool's 2 MiB and the image's tables.
    let holes = 64 * TIB - dm.iter().map(|r| r.2).sum::<u64>();
    assert!((2 << 20..4 << 20).contains(&holes), "{holes:#x}");
    // 64 TiB of frames, 32 bytes each: 512 GiB of frametable in 4 parts.
    let ft = regions(&o, "frametable");
    assert_eq!(ft.iter().map(|r| r.2).sum::<u64>(), 512 * GIB);
    // The work follows banks and blocks: 64 TiB direct-mapped with 1 GiB
    // blocks (65 536 descriptors), 512 GiB of frametable with 2 MiB blocks
    // (262 144), a few hundred more for the rest. Page by page it would be
    // 2^34 descriptors.
    let writes = o.machine.counters().pte_writes;
    assert!(writes < 400_000, "{writes} descriptor writes\n{}", o.log);
    assert!(sum.verified_pages > 100);
}

#[test]
fn a_bank_past_the_direct_map_is_refused_by_name() {
    // 129 TiB of RAM: more than the 128 TiB direct map holds.
    let ram = vec![(0x4000_0000, GIB), (TIB, 64 * TIB), (100 * TIB, 64 * TIB)];
    let o = run(&scenario(ram, 0x4020_0000)).expect("set-up");
    let err = &o.result.as_ref().expect_err("refused").error;
    assert!(
        err.message
            .as_str()
            .contains("beyond the direct map's reach"),
        "{err}"
    );
}
