//! Real boards' memory layouts (`data/boards/*.dts`), read as Xen 4.22
//! reads them: empty and disabled banks, `/memreserve/`, `/reserved-memory`
//! children (a `memory@` one included), overlaps with `/memreserve/`, and
//! nothing the loader placed inside reserved memory.

use hvmm::Paddr;
use hvmm_bootinfo::builder::VirtBoard;
use hvmm_bootinfo::*;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

const RPI4: &[u8] = include_bytes!("data/boards/rpi4-like.dtb");
const ZYNQMP: &[u8] = include_bytes!("data/boards/zynqmp-like.dtb");
const PINE64: &[u8] = include_bytes!("data/boards/pine64-like.dtb");
const UBOOT: &[u8] = include_bytes!("data/boards/uboot-fixed-up.dtb");

fn range(base: u64, size: u64) -> MemRange {
    MemRange::new(Paddr(base), size).expect("valid range")
}

fn rsv(base: u64, size: u64, source: ReservedSource, no_map: bool) -> Reserved {
    Reserved {
        range: range(base, size),
        source,
        no_map,
    }
}

fn params(image: u64, dtb: u64) -> ParseParams {
    ParseParams {
        pa_bits: 48,
        image: (Paddr(image), 2 * MIB),
        dtb: (Paddr(dtb), 0x1000),
    }
}

fn banks(map: &MemoryMap) -> Vec<MemRange> {
    map.ram_banks().iter().copied().collect()
}

fn reserved(map: &MemoryMap) -> Vec<Reserved> {
    map.reserved().iter().copied().collect()
}

#[test]
fn the_committed_dtbs_match_their_sources() {
    // scripts/test installs dtc (Debian's device-tree-compiler).
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/boards/");
    for (name, blob) in [
        ("rpi4-like", RPI4),
        ("zynqmp-like", ZYNQMP),
        ("pine64-like", PINE64),
        ("uboot-fixed-up", UBOOT),
    ] {
        let out = std::process::Command::new("dtc")
            .args(["-q", "-I", "dts", "-O", "dtb", "-o", "-"])
            .arg(format!("{dir}{name}.dts"))
            .output()
            .expect("dtc (device-tree-compiler) checks the committed trees");
        assert!(out.status.success(), "{name}: {out:?}");
        assert_eq!(out.stdout, blob, "{name}.dtb is stale: recompile it");
    }
}

#[test]
fn an_rpi4_tree_has_an_empty_bank_and_the_spin_table_page_reserved() {
    let map = MemoryMap::parse(RPI4, 48).unwrap();
    assert!(map.ram_banks().is_empty(), "the size-zero bank is skipped");
    assert_eq!(map.empty_banks(), 1);
    assert_eq!(
        reserved(&map),
        [rsv(0, 0x1000, ReservedSource::MemReserve, false)],
        "the CMA pool has no reg and the no-map child is disabled"
    );
    // The boot itself needs RAM.
    assert_eq!(
        BootInfo::parse(RPI4, &params(0x20_0000, 0x800_0000), &mut NoReader).unwrap_err(),
        BootInfoError::NoMemory
    );
}

#[test]
fn a_pine64_tree_has_no_memory_node_and_that_is_not_ram() {
    let map = MemoryMap::parse(PINE64, 48).unwrap();
    assert!(map.ram_banks().is_empty());
    assert_eq!(map.empty_banks(), 0);
    assert!(map.reserved().is_empty());
    let e = BootInfo::parse(PINE64, &params(0x4020_0000, 0x4800_0000), &mut NoReader).unwrap_err();
    assert_eq!(e, BootInfoError::NoMemory);
    assert!(e.to_string().contains("fills /memory at boot"), "{e}");
}

#[test]
fn a_zynqmp_tree_has_two_banks_and_a_no_map_region() {
    let map = MemoryMap::parse(ZYNQMP, 48).unwrap();
    assert_eq!(
        banks(&map),
        [range(0, 2 * GIB), range(0x8_0000_0000, 2 * GIB)]
    );
    assert_eq!(
        reserved(&map),
        [rsv(
            0x3ed0_0000,
            0x4_0000,
            ReservedSource::ReservedMemory,
            true
        )]
    );
    let info = BootInfo::parse(ZYNQMP, &params(0x20_0000, 0x800_0000), &mut NoReader).unwrap();
    assert_eq!(info.total_ram(), 4 * GIB);
}

#[test]
fn after_uboot_disabled_empty_and_untyped_memory_nodes_give_no_ram() {
    let map = MemoryMap::parse(UBOOT, 48).unwrap();
    // Only memory@40000000: memory@c0000000 is disabled, memory@100000000
    // is empty, memory@f0000000 has no device_type, and the memory@ child
    // of /reserved-memory is reserved memory.
    assert_eq!(banks(&map), [range(0x4000_0000, GIB)]);
    assert_eq!(map.empty_banks(), 1);
    use ReservedSource::*;
    assert_eq!(
        reserved(&map),
        [
            rsv(0x4800_0000, MIB, MemReserve, false),
            rsv(0x4a00_0000, 4 * MIB, MemReserve, false),
            rsv(0x5000_0000, 16 * MIB, ReservedMemory, true),
            rsv(0x5e00_0000, 2 * MIB, ReservedMemory, false),
            // Repeats a /memreserve/ entry: allowed, as Xen 4.20+ allows it.
            rsv(0x4a00_0000, 4 * MIB, ReservedMemory, false),
        ]
    );
    assert!(map.ram_covers(&range(0x5000_0000, MIB)));
    assert!(!map.ram_overlaps(&range(0xf000_0000, MIB)));
}

#[test]
fn the_dtb_and_a_module_that_uboot_lists_in_memreserve_are_accepted() {
    // U-Boot's DTB copy at 0x4800_0000 and the initrd at 0x4a00_0000 both
    // lie wholly inside /memreserve/ entries; the free memory still leaves
    // them out.
    let dtb = with_modules(UBOOT, |r| r.source == ReservedSource::MemReserve);
    let info = BootInfo::parse(&dtb, &params(0x4020_0000, 0x4800_0000), &mut NoReader)
        .expect("modules inside /memreserve/ are fine");
    assert_eq!(info.modules().len(), 2);
    let free = info.free_ranges(&[]).unwrap();
    for r in free.iter() {
        assert!(!r.overlaps(&range(0x4a00_0000, 4 * MIB)));
        assert!(!r.overlaps(&range(0x4800_0000, MIB)));
    }
    // With the tree's /reserved-memory children too, the initrd lies in
    // the child that repeats its range: refused (Xen 4.22 drops such a
    // module or stops, depending on the nodes' order).
    let dtb = with_modules(UBOOT, |_| true);
    assert_eq!(
        BootInfo::parse(&dtb, &params(0x4020_0000, 0x4800_0000), &mut NoReader).unwrap_err(),
        BootInfoError::InReserved {
            item: Placed::Module(1),
            range: range(0x4a00_0000, 4 * MIB),
            reserved: rsv(0x4a00_0000, 4 * MIB, ReservedSource::ReservedMemory, false),
        }
    );
}

/// The memory map of `tree` (its reserved ranges that `keep` keeps) with a
/// typed kernel and initrd in /chosen, written by the builder.
fn with_modules(tree: &[u8], keep: impl Fn(&Reserved) -> bool) -> Vec<u8> {
    let map = MemoryMap::parse(tree, 48).unwrap();
    let mut b = VirtBoard::new();
    for bank in map.ram_banks().iter() {
        b = b.ram(bank.base().0, bank.size());
    }
    for r in map.reserved().iter().filter(|r| keep(r)) {
        b = match r.source {
            ReservedSource::MemReserve => b.memreserve(r.range.base().0, r.range.size()),
            ReservedSource::ReservedMemory => {
                b.reserved_memory_with(r.range.base().0, r.range.size(), r.no_map)
            }
        };
    }
    b.typed_module(0x4900_0000, 8 * MIB, "multiboot,kernel")
        .typed_module(0x4a00_0000, 4 * MIB, "multiboot,ramdisk")
        .build()
}

#[test]
fn placements_in_reserved_memory_are_refused_by_name() {
    let board = || {
        VirtBoard::new()
            .ram(0x4000_0000, GIB)
            .memreserve(0x4a00_0000, 4 * MIB)
            .reserved_memory(0x5000_0000, 16 * MIB)
            .reserved_memory_with(0x5e00_0000, 2 * MIB, false)
    };
    let p = params(0x4020_0000, 0x4800_0000);
    let no_map = rsv(0x5000_0000, 16 * MIB, ReservedSource::ReservedMemory, true);
    let plain = rsv(0x5e00_0000, 2 * MIB, ReservedSource::ReservedMemory, false);
    let memreserve = rsv(0x4a00_0000, 4 * MIB, ReservedSource::MemReserve, false);
    let cases: Vec<(&str, Vec<u8>, ParseParams, BootInfoError)> = vec![
        (
            "the image in no-map memory",
            board().build(),
            params(0x50f0_0000, 0x4800_0000),
            BootInfoError::InReserved {
                item: Placed::Image,
                range: range(0x50f0_0000, 2 * MIB),
                reserved: no_map,
            },
        ),
        (
            "the DTB in reserved (not no-map) memory",
            board().build(),
            params(0x4020_0000, 0x5e10_0000),
            BootInfoError::InReserved {
                item: Placed::Dtb,
                range: range(0x5e10_0000, 0x1000),
                reserved: plain,
            },
        ),
        (
            "a module straddling the end of a no-map region",
            board()
                .typed_module(0x50ff_0000, MIB, "multiboot,kernel")
                .build(),
            p,
            BootInfoError::InReserved {
                item: Placed::Module(0),
                range: range(0x50ff_0000, MIB),
                reserved: no_map,
            },
        ),
        (
            "a module only partly inside a /memreserve/ entry",
            board()
                .typed_module(0x4900_0000, 8 * MIB, "multiboot,kernel")
                .typed_module(0x4a00_0000, 5 * MIB, "multiboot,ramdisk")
                .build(),
            p,
            BootInfoError::InReserved {
                item: Placed::Module(1),
                range: range(0x4a00_0000, 5 * MIB),
                reserved: memreserve,
            },
        ),
    ];
    for (what, dtb, p, want) in cases {
        let e = BootInfo::parse(&dtb, &p, &mut NoReader).unwrap_err();
        assert_eq!(e, want, "{what}");
        let text = e.to_string();
        assert!(text.contains("reserved"), "{what}: {text}");
    }
    // The same module wholly inside the /memreserve/ entry is accepted.
    let ok = board()
        .typed_module(0x4a00_0000, 4 * MIB, "multiboot,ramdisk")
        .build();
    assert!(BootInfo::parse(&ok, &p, &mut NoReader).is_ok());
    // The message names no-map when it is.
    let e = BootInfoError::InReserved {
        item: Placed::Image,
        range: range(0x5000_0000, MIB),
        reserved: no_map,
    };
    assert!(e.to_string().contains("no-map"), "{e}");
}

#[test]
fn reserved_memory_children_overlapping_earlier_ranges_are_refused() {
    use ReservedSource::*;
    // Two /reserved-memory children overlapping.
    let two = VirtBoard::qemu_default()
        .reserved_memory(0x5000_0000, 2 * MIB)
        .reserved_memory_with(0x5010_0000, 2 * MIB, false)
        .build();
    assert_eq!(
        MemoryMap::parse(&two, 48).unwrap_err(),
        BootInfoError::ReservedOverlap {
            first: rsv(0x5000_0000, 2 * MIB, ReservedMemory, true),
            second: rsv(0x5010_0000, 2 * MIB, ReservedMemory, false),
        }
    );
    // A child sticking out of a /memreserve/ entry.
    let out = VirtBoard::qemu_default()
        .memreserve(0x5000_0000, MIB)
        .reserved_memory(0x5000_0000, 2 * MIB)
        .build();
    assert_eq!(
        MemoryMap::parse(&out, 48).unwrap_err(),
        BootInfoError::ReservedOverlap {
            first: rsv(0x5000_0000, MIB, MemReserve, false),
            second: rsv(0x5000_0000, 2 * MIB, ReservedMemory, true),
        }
    );
    // Inside one: fine, both recorded.
    let inside = VirtBoard::qemu_default()
        .memreserve(0x5000_0000, 2 * MIB)
        .reserved_memory(0x5010_0000, MIB)
        .build();
    assert_eq!(MemoryMap::parse(&inside, 48).unwrap().reserved().len(), 2);
}
