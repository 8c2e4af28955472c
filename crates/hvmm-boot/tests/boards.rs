//! Real boards' trees and the model loader's placements: RAM given with
//! `--ram` to trees that have none (U-Boot's memory fix-up), reserved memory
//! kept clear by the loaders and refused by the boot when something is
//! placed in it by hand, Xen's module-kind rule down to domain 0's initrd,
//! small RAM sizes (no underflow, a message naming sizes), and summaries
//! that keep every entry.

use hvmm_boot::domain::Dom0Config;
use hvmm_boot::model::{
    board_from_dtb, run, ArchKind, Board, Loader, ModuleFile, Outcome, ReservedRegion, Scenario,
};
use hvmm_boot::report::BootStep;
use hvmm_bootinfo::{ModuleKind, ReservedSource, XSM_MAGIC};
use hvmm_testkit::boot::boot_ok;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

const RPI4: &[u8] = include_bytes!("../../hvmm-bootinfo/tests/data/boards/rpi4-like.dtb");
const ZYNQMP: &[u8] = include_bytes!("../../hvmm-bootinfo/tests/data/boards/zynqmp-like.dtb");
const PINE64: &[u8] = include_bytes!("../../hvmm-bootinfo/tests/data/boards/pine64-like.dtb");
const UBOOT: &[u8] = include_bytes!("../../hvmm-bootinfo/tests/data/boards/uboot-fixed-up.dtb");

fn both() -> [ArchKind; 2] {
    [ArchKind::Arm64, ArchKind::Arm32]
}

/// Every placement of `o` inside one of `ram`'s banks and disjoint from
/// the others and from `avoid`.
fn assert_placed_apart(o: &Outcome, s: &Scenario, image_size: u64, avoid: &[(u64, u64)]) {
    let p = &o.placement;
    let mut all = vec![
        (p.image, image_size, "image".to_string()),
        (p.dtb.0, p.dtb.1, "dtb".into()),
    ];
    for (i, m) in p.modules.iter().enumerate() {
        all.push((m.0, m.1.max(1), format!("module {i}")));
    }
    for (a, len, what) in &all {
        assert!(
            s.ram.iter().any(|&(b, sz)| *a >= b && a + len <= b + sz),
            "{what} at {a:#x}+{len:#x} outside RAM {:?}",
            s.ram
        );
        for &(r, rl) in avoid {
            assert!(
                a + len <= r || r + rl <= *a,
                "{what} at {a:#x} in {r:#x}+{rl:#x}"
            );
        }
    }
    for (i, x) in all.iter().enumerate() {
        for y in &all[i + 1..] {
            assert!(
                x.0 + x.1 <= y.0 || y.0 + y.1 <= x.0,
                "{} overlaps {}",
                x.2,
                y.2
            );
        }
    }
}

const MODEL_IMAGE: u64 = hvmm_boot::ImageLayout::model().size();

// ---------------------------------------------------------- placement bugs

#[test]
fn grub_placement_fits_32_mib_of_ram_at_0() {
    // Was: 64 MiB subtracted from the top of RAM unchecked (a debug build
    // panicked; a release build put the image at 0xfffffffffe000000).
    for arch in both() {
        let mut s = Scenario::default_for(arch);
        s.ram = vec![(0, 32 * MIB)];
        s.cpus = 1;
        let o = boot_ok(&s);
        assert_placed_apart(&o, &s, MODEL_IMAGE, &[]);
        // GRUB loads high: the image in the top half.
        assert!(o.placement.image >= 16 * MIB, "{:#x}", o.placement.image);
    }
}

#[test]
fn uboot_placement_in_256_mib_at_2_gib_keeps_the_dtb_clear_of_the_modules() {
    // Was: "the DTB at 0x88000000 would overlap a module" (the modules
    // started where the DTB goes when the first bank is about 256 MiB).
    for arch in both() {
        let mut s = Scenario::default_for(arch);
        s.ram = vec![(0x8000_0000, 256 * MIB)];
        s.loader = Loader::Uboot;
        s.cpus = 1;
        let o = boot_ok(&s);
        assert_eq!(o.placement.dtb.0, 0x8800_0000);
        assert_placed_apart(&o, &s, MODEL_IMAGE, &[]);
    }
}

#[test]
fn any_ram_size_is_placed_or_refused_with_the_sizes_never_wrapped() {
    // Sizes around every threshold of the placements (the image's size,
    // 2 MiB slots, half of 64 MiB, 64 MiB of headroom, 144 MiB), every
    // loader, RAM at 0 and high. A scenario refused before the boot says
    // that RAM is too small and what did not fit; a boot that starts
    // reaches Active or runs out of memory with a message.
    let sizes = [
        64 * 1024,
        512 * 1024,
        MIB,
        2 * MIB,
        3 * MIB,
        4 * MIB,
        5 * MIB,
        31 * MIB,
        32 * MIB,
        63 * MIB,
        64 * MIB,
        65 * MIB,
        66 * MIB,
        130 * MIB,
        145 * MIB,
        256 * MIB,
    ];
    let mut placed = 0;
    for base in [0u64, 0x8000_0000, 0x80_0000_0000] {
        for &size in &sizes {
            for loader in [Loader::Grub, Loader::Uboot, Loader::Direct] {
                let mut s = Scenario::default_for(ArchKind::Arm64);
                s.ram = vec![(base, size)];
                s.loader = loader;
                s.cpus = 1;
                match run(&s) {
                    Ok(o) => {
                        placed += 1;
                        assert_placed_apart(&o, &s, MODEL_IMAGE, &[]);
                        // PA 0 would read as "no DTB".
                        assert_ne!(o.placement.dtb.0, 0, "{base:#x}+{size:#x} {loader:?}");
                        // The boot itself runs out of memory at worst (any
                        // load address works, the link range included).
                        if let Err(f) = &o.result {
                            let m = f.error.message.as_str();
                            assert!(
                                m.contains("exhausted") || m.contains("too small"),
                                "{base:#x}+{size:#x} {loader:?}: {}",
                                f.error
                            );
                        }
                        assert!(o.stale.is_empty() && o.bbm.is_empty());
                        assert!(o.root_switches.is_empty() && o.conflicts.is_empty());
                    }
                    Err(e) => {
                        let t = e.to_string();
                        assert!(
                            t.contains("RAM is too small") && t.contains("KiB"),
                            "{base:#x}+{size:#x} {loader:?}: {t}"
                        );
                        assert!(size < 4 * MIB, "{base:#x}+{size:#x} {loader:?}: {t}");
                    }
                }
            }
        }
    }
    assert!(placed > 100, "{placed}");
}

#[test]
fn ram_too_small_for_the_image_names_the_sizes() {
    let mut s = Scenario::default_for(ArchKind::Arm64);
    s.ram = vec![(0, 256 * 1024)];
    let e = run(&s).err().expect("refused").to_string();
    assert!(
        e.contains("no room for the image")
            && e.contains(&format!("{} KiB", MODEL_IMAGE / 1024))
            && e.contains("256 KiB at 0x0"),
        "{e}"
    );
}

// ---------------------------------------------------------- reserved memory

fn with_no_map(arch: ArchKind, base: u64, size: u64) -> Scenario {
    let mut s = Scenario::default_for(arch);
    s.reserved = vec![ReservedRegion::no_map(base, size)];
    s.cpus = 1;
    s
}

#[test]
fn loaders_keep_clear_of_reserved_memory() {
    for arch in both() {
        // GRUB's image would go at 0x7c00_0000, its modules and DTB just
        // below: a no-map region over all of that.
        let s = with_no_map(arch, 0x7a00_0000, 0x300_0000);
        let o = boot_ok(&s);
        assert_placed_apart(&o, &s, MODEL_IMAGE, &[(0x7a00_0000, 0x300_0000)]);
        // U-Boot's DTB slot and modules (128 MiB and 144 MiB in).
        let mut s = with_no_map(arch, 0x4800_0000, 0x200_0000);
        s.loader = Loader::Uboot;
        let o = boot_ok(&s);
        assert_placed_apart(&o, &s, MODEL_IMAGE, &[(0x4800_0000, 0x200_0000)]);
    }
}

/// Changes a scenario.
type SetUp = Box<dyn Fn(&mut Scenario)>;

#[test]
fn anything_placed_by_hand_in_no_map_memory_is_refused_by_the_boot() {
    let region = (0x5000_0000, 16 * MIB);
    for arch in both() {
        let cases: Vec<(&str, SetUp, &str)> = vec![
            (
                "image",
                Box::new(|s: &mut Scenario| s.load_addr = Some(0x5000_0000)),
                "the hypervisor image",
            ),
            (
                "DTB",
                Box::new(|s: &mut Scenario| s.dtb_addr = Some(0x5080_0000)),
                "the device tree blob",
            ),
            (
                "module",
                Box::new(|s: &mut Scenario| {
                    s.loader = Loader::Uboot;
                    s.modules[1].addr = Some(0x50ff_0000);
                }),
                "module #1",
            ),
        ];
        for (what, set, needle) in cases {
            let mut s = with_no_map(arch, region.0, region.1);
            set(&mut s);
            let o = run(&s).expect("set-up");
            let e = match &o.result {
                Ok(_) => panic!("{arch:?} {what}: booted\n{}", o.log),
                Err(f) => f.error.clone(),
            };
            assert_eq!(e.step, BootStep::BootFdtInfo, "{what}: {e}");
            let m = e.message.as_str();
            assert!(
                m.contains(needle) && m.contains("no-map") && m.contains("reserved memory"),
                "{arch:?} {what}: {m}"
            );
            assert!(o.stale.is_empty() && o.bbm.is_empty());
        }
    }
}

#[test]
fn a_module_uboot_lists_in_memreserve_boots() {
    // U-Boot puts the initrd's range in the memory reservation block.
    for arch in both() {
        let mut s = Scenario::default_for(arch);
        s.loader = Loader::Uboot;
        s.cpus = 1;
        s.modules[1].addr = Some(0x4a00_0000);
        s.reserved = vec![ReservedRegion::memreserve(0x4a00_0000, 4 * MIB)];
        let o = boot_ok(&s);
        let sum = o.result.as_ref().unwrap();
        assert_eq!(sum.modules.get_kind(1), Some(ModuleKind::Ramdisk));
        assert!(o.log.contains("(/memreserve/)"), "{}", o.log);
    }
}

trait KindAt {
    fn get_kind(&self, i: usize) -> Option<ModuleKind>;
}

impl<const N: usize> KindAt
    for hvmm_boot::report::heapless_list::List<hvmm_boot::report::ModuleFact, N>
{
    fn get_kind(&self, i: usize) -> Option<ModuleKind> {
        self.iter().nth(i).map(|m| m.kind)
    }
}

// ---------------------------------------------------------- real boards' trees

/// Boots `arch` on `board`'s memory (with `ram` instead of its /memory when
/// given) through `loader`, one CPU; the scenario and what the boot did.
fn boot_board(
    board: &Board,
    arch: ArchKind,
    ram: Option<Vec<(u64, u64)>>,
    loader: Loader,
) -> (Scenario, Outcome) {
    let mut s = Scenario::default_for(arch);
    s.use_board(board, ram).expect("the board's memory");
    s.loader = loader;
    s.cpus = 1;
    let o = boot_ok(&s);
    (s, o)
}

#[test]
fn an_rpi4_tree_needs_ram_and_boots_with_it_as_after_ubootss_fix_up() {
    let board = board_from_dtb(RPI4, 48).unwrap();
    assert!(board.banks.is_empty());
    assert_eq!(board.empty_banks, 1);
    let mut s = Scenario::default_for(ArchKind::Arm64);
    let e = s.use_board(&board, None).unwrap_err().to_string();
    assert!(e.contains("empty RAM bank") && e.contains("--ram"), "{e}");
    let (_, o) = boot_board(&board, ArchKind::Arm64, Some(vec![(0, GIB)]), Loader::Grub);
    assert!(
        o.log.starts_with("loader: the device tree has only 1 empty RAM bank(s); --ram [0x0, 0x40000000) supplies it, as U-Boot's memory fix-up does"),
        "{}",
        o.log
    );
    let sum = o.result.as_ref().unwrap();
    assert_eq!(sum.empty_banks, 0, "the boot's own tree has the RAM");
    let r: Vec<_> = sum
        .reserved
        .iter()
        .map(|r| (r.start.0, r.size, r.source))
        .collect();
    assert_eq!(r, [(0, 0x1000, ReservedSource::MemReserve)]);
}

#[test]
fn a_tree_without_memory_boots_with_ram_supplied() {
    for arch in both() {
        let board = board_from_dtb(PINE64, 40).unwrap();
        let ram = Some(vec![(0x4000_0000, 512 * MIB)]);
        let (_, o) = boot_board(&board, arch, ram, Loader::Uboot);
        assert!(o.log.contains("has no /memory node; --ram"), "{}", o.log);
    }
}

#[test]
fn ram_replacing_a_trees_memory_reports_reserved_ranges_outside_it() {
    let board = board_from_dtb(ZYNQMP, 48).unwrap();
    assert_eq!(board.banks, [(0, 2 * GIB), (0x8_0000_0000, 2 * GIB)]);
    let ram = Some(vec![(0x4000_0000, GIB)]);
    let (_, o) = boot_board(&board, ArchKind::Arm64, ram, Loader::Grub);
    assert!(
        o.log.contains("--ram [0x40000000, 0x80000000) replaces it"),
        "{}",
        o.log
    );
    assert!(
        o.log.contains(
            "loader: no-map /reserved-memory range [0x3ed00000, 0x3ed40000) lies outside RAM"
        ),
        "{}",
        o.log
    );
    assert!(
        o.log.contains("(/reserved-memory, no-map, outside RAM)"),
        "{}",
        o.log
    );
    let r = o
        .result
        .as_ref()
        .unwrap()
        .reserved
        .iter()
        .next()
        .copied()
        .unwrap();
    assert!(r.no_map && !r.in_ram);
    // Without --ram the tree's own RAM is used, and nothing is noted.
    let mut s = Scenario::default_for(ArchKind::Arm64);
    s.use_board(&board, None).unwrap();
    assert_eq!(s.ram, board.banks);
    assert!(s.notes.is_empty(), "{:?}", s.notes);
}

#[test]
fn a_tree_after_uboot_boots_clear_of_its_reservations() {
    // /memreserve/ at 0x4800_0000 (where U-Boot-style placement puts the
    // DTB) and 0x4a00_0000, no-map memory at 0x5000_0000, plain reserved
    // memory at 0x5e00_0000.
    for loader in [Loader::Uboot, Loader::Grub] {
        let board = board_from_dtb(UBOOT, 48).unwrap();
        let (s, o) = boot_board(&board, ArchKind::Arm64, None, loader);
        let avoid: Vec<_> = board.reserved.iter().map(|r| (r.base, r.size)).collect();
        assert_placed_apart(&o, &s, MODEL_IMAGE, &avoid);
        assert_eq!(o.result.as_ref().unwrap().reserved.len(), 5);
    }
}

// ---------------------------------------------------------- module kinds

#[test]
fn a_policy_then_another_file_through_grub_leaves_dom0_without_an_initrd() {
    // Xen: kernel, a policy (by its magic), then anything else is Unknown,
    // not a ramdisk: domain 0 gets no initrd.
    for arch in both() {
        let mut s = Scenario::default_for(arch);
        let kernel = s.modules[0].clone();
        let mut policy = vec![0u8; 4096];
        policy[..4].copy_from_slice(&XSM_MAGIC.to_le_bytes());
        let random: Vec<u8> = (0..64 * 1024u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        s.modules = vec![
            kernel,
            ModuleFile {
                data: policy,
                kind: ModuleKind::Unknown,
                name: "policy".into(),
                addr: None,
            },
            ModuleFile {
                data: random,
                kind: ModuleKind::Unknown,
                name: "random".into(),
                addr: None,
            },
        ];
        s.dom0 = Some(Dom0Config::default());
        s.cpus = 1;
        let o = boot_ok(&s);
        let sum = o.result.as_ref().unwrap();
        let kinds: Vec<_> = sum.modules.iter().map(|m| m.kind).collect();
        assert_eq!(
            kinds,
            [
                ModuleKind::Kernel,
                ModuleKind::XsmPolicy,
                ModuleKind::Unknown
            ]
        );
        let d = sum.dom0.expect("dom0 built");
        assert_eq!(d.initrd.1, 0, "{arch:?}: no initrd\n{}", o.log);
        assert!(!o.log.contains("dom0: initrd"), "{}", o.log);
        assert!(o.log.contains("unknown (not used)"), "{}", o.log);
    }
}

// ---------------------------------------------------------- summaries

#[test]
fn the_summary_keeps_every_reserved_range_and_module() {
    // More than the 16 entries a list used to keep.
    let mut s = Scenario::default_for(ArchKind::Arm64);
    s.cpus = 1;
    s.reserved = (0..40)
        .map(|i| ReservedRegion::memreserve(0x5000_0000 + i * MIB, 0x1000))
        .collect();
    s.modules = (0..24)
        .map(|i| ModuleFile {
            data: vec![i as u8 + 1; 4096],
            kind: ModuleKind::Unknown,
            name: format!("m{i}"),
            addr: None,
        })
        .collect();
    let o = boot_ok(&s);
    let sum = o.result.as_ref().unwrap();
    assert_eq!(sum.reserved.len(), 40);
    assert_eq!(sum.reserved.dropped, 0);
    assert_eq!(sum.modules.len(), 24);
    assert_eq!(sum.modules.dropped, 0);
    assert_eq!(
        sum.early_copies.len(),
        23,
        "every module read but the first"
    );
    assert_eq!(o.log.matches("(XEN) reserved:").count(), 40);
}
