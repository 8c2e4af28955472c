//! Whole boots on the machine model, one scenario each. Every successful boot
//! reaches Active, every region it mapped translates as the layout says (the
//! boot's own AT check), and the model saw no stale TLB entry and no
//! break-before-make violation.

use hvmm::{Paddr, SystemState};
use hvmm_boot::model::{run, ArchKind, Loader, ModuleFile, Outcome, Scenario};
use hvmm_boot::report::BootStep;
use hvmm_bootinfo::{KindSource, ModuleKind};
use hvmm_testkit::boot::boot_fails;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// A good boot ([`hvmm_testkit::boot::boot_ok`]) that verified more than
/// a token number of pages.
fn boot_ok(s: &Scenario) -> Outcome {
    let o = hvmm_testkit::boot::boot_ok(s);
    let sum = o.result.as_ref().unwrap();
    assert!(
        sum.verified_pages > 100,
        "too few pages verified: {}",
        sum.verified_pages
    );
    o
}

fn kinds(o: &Outcome) -> Vec<(ModuleKind, KindSource)> {
    o.result
        .as_ref()
        .unwrap()
        .modules
        .iter()
        .map(|m| (m.kind, m.source))
        .collect()
}

fn both() -> [ArchKind; 2] {
    [ArchKind::Arm64, ArchKind::Arm32]
}

#[test]
fn grub_untyped_modules_are_guessed_by_reading_them_in_early_boot() {
    for arch in both() {
        let o = boot_ok(&Scenario::default_for(arch));
        assert_eq!(
            kinds(&o),
            vec![
                (ModuleKind::Kernel, KindSource::Guessed { read: false }),
                (ModuleKind::Ramdisk, KindSource::Guessed { read: true }),
                (ModuleKind::XsmPolicy, KindSource::Guessed { read: true }),
            ]
        );
        let sum = o.result.as_ref().unwrap();
        let copies: Vec<_> = sum.early_copies.iter().collect();
        assert_eq!(copies.len(), 2, "the 2nd and 3rd module are read");
        for (_, state, image_maps, _) in copies {
            assert_eq!(*state, SystemState::EarlyBoot);
            assert!(*image_maps > 0, "served by the image tables");
        }
        assert!(o.log.contains("copy_from_paddr"), "{}", o.log);
    }
}

#[test]
fn typed_modules_are_taken_as_given() {
    for arch in both() {
        let mut s = Scenario::default_for(arch);
        s.loader = Loader::Uboot;
        let o = boot_ok(&s);
        assert_eq!(
            kinds(&o),
            vec![
                (ModuleKind::Kernel, KindSource::Typed),
                (ModuleKind::Ramdisk, KindSource::Typed),
                (ModuleKind::XsmPolicy, KindSource::Typed),
            ]
        );
        assert!(
            o.result.as_ref().unwrap().early_copies.is_empty(),
            "nothing read"
        );
    }
}

#[test]
fn direct_boot_without_modules() {
    for arch in both() {
        let mut s = Scenario::default_for(arch);
        s.loader = Loader::Direct;
        let o = boot_ok(&s);
        assert!(o.result.as_ref().unwrap().modules.is_empty());
    }
}

#[test]
fn one_and_four_cpus() {
    for arch in both() {
        for cpus in [1, 4] {
            let mut s = Scenario::default_for(arch);
            s.cpus = cpus;
            let o = boot_ok(&s);
            assert_eq!(o.result.as_ref().unwrap().cpus, cpus);
        }
    }
}

#[test]
fn arm64_image_loaded_at_512_gib() {
    let mut s = Scenario::default_for(ArchKind::Arm64);
    s.ram = vec![(0x4000_0000, GIB), (512 * GIB, GIB)];
    s.load_addr = Some(512 * GIB + 2 * MIB);
    let o = boot_ok(&s);
    assert_eq!(
        o.result.as_ref().unwrap().image_pa,
        Some(Paddr(512 * GIB + 2 * MIB))
    );
}

#[test]
fn arm64_image_loaded_above_4_gib() {
    let mut s = Scenario::default_for(ArchKind::Arm64);
    s.ram = vec![(0x4000_0000, 8 * GIB)];
    s.load_addr = Some(0x1_4000_0000);
    let o = boot_ok(&s);
    assert_eq!(
        o.result.as_ref().unwrap().image_pa,
        Some(Paddr(0x1_4000_0000))
    );
}

#[test]
fn arm32_image_loaded_below_its_link_address() {
    // The sign case of the thread: linked at 0x200000, loaded at 0x100000.
    let mut s = Scenario::default_for(ArchKind::Arm32);
    s.ram = vec![(0, GIB)];
    s.load_addr = Some(0x10_0000);
    let o = boot_ok(&s);
    let sum = o.result.as_ref().unwrap();
    assert_eq!(sum.image_pa, Some(Paddr(0x10_0000)));
    assert!(o.log.contains("PA - VA = -0x100000"), "{}", o.log);
}

#[test]
fn arm32_page_tables_from_above_4_gib() {
    // The truncation case: table pages at 40-bit addresses.
    let mut s = Scenario::default_for(ArchKind::Arm32);
    s.ram = vec![(0x4000_0000, GIB), (0x8_0000_0000, GIB)];
    s.loader = Loader::Uboot;
    s.load_addr = Some(0x4001_0000);
    let o = boot_ok(&s);
    let sum = o.result.as_ref().unwrap();
    assert!(
        sum.highest_table.0 >= 0x8_0000_0000,
        "highest table page {}",
        sum.highest_table
    );
    assert!(
        sum.phases[SystemState::Boot as usize].access.domain_page > 0,
        "reached through domain-page slots"
    );
}

#[test]
fn arm32_page_tables_can_be_kept_below_4_gib() {
    // What `hvmm.tables-below-4g` does on QEMU 7.2, whose arm32 walker
    // truncates table addresses above 4 GiB.
    let mut s = Scenario::default_for(ArchKind::Arm32);
    s.ram = vec![(0x4000_0000, GIB), (0x8_0000_0000, GIB)];
    s.loader = Loader::Uboot;
    s.load_addr = Some(0x4001_0000);
    s.table_limit = Some(1 << 32);
    let o = boot_ok(&s);
    let sum = o.result.as_ref().unwrap();
    assert!(
        sum.highest_table.0 < 1 << 32,
        "highest table page {}",
        sum.highest_table
    );
    assert!(
        o.log
            .contains("page-table pages are taken from below 0x0000000100000000 only"),
        "{}",
        o.log
    );
}

#[test]
fn dtb_straddling_a_2_mib_boundary() {
    for arch in both() {
        let mut s = Scenario::default_for(arch);
        s.loader = Loader::Uboot;
        s.dtb_addr = Some(0x4800_0000 - 0x400);
        let o = boot_ok(&s);
        assert_eq!(
            o.result.as_ref().unwrap().dtb_pa,
            Paddr(0x4800_0000 - 0x400)
        );
    }
}

// ---- The two bugs of the thread, reproduced, and caught. ----

#[test]
fn xen_2019_fixmap_through_domain_page_dies_in_the_module_scan_on_arm64() {
    let mut s = Scenario::default_for(ArchKind::Arm64);
    s.access = hvmm_boot::AccessPolicy::Xen2019Fixmap;
    let (o, err) = boot_fails(&s);
    assert_eq!(err.step, BootStep::BootFdtInfo, "{}", o.log);
    assert_eq!(err.state, SystemState::EarlyBoot);
    let fault = err.fault.expect("a hardware fault");
    assert_eq!(fault.kind, hvmm::FaultKind::Translation);
    assert_eq!(fault.syndrome() >> 26, 0x25, "Data Abort taken at EL2");
    assert!(
        fault.va.0 >= 0x8000_0000_0000,
        "the abort is on a direct-map address: {}",
        fault.va
    );
    // The correct providers pass the very same scenario.
    boot_ok(&Scenario::default_for(ArchKind::Arm64));
}

#[test]
fn xen_2019_zero_extended_offset_is_detected_on_arm32() {
    let mut s = Scenario::default_for(ArchKind::Arm32);
    s.ram = vec![(0, GIB)];
    s.load_addr = Some(0x10_0000);
    s.pa = hvmm_boot::PaPolicy::Xen2019ZeroExtendedOffset;
    let (o, err) = boot_fails(&s);
    // VA 0x263000 (the root table) + 0xfff00000 = 0x1_0016_3000: not the
    // image, not even RAM. The first walk through it aborts.
    assert!(
        o.log
            .contains("runtime root table 0x0000000000263000 at 0x0000000100163000"),
        "{}",
        o.log
    );
    assert_eq!(err.step, BootStep::SetupPagetables, "{err}");
    assert_eq!(
        err.fault.map(|f| f.kind),
        Some(hvmm::FaultKind::External),
        "{err}"
    );
    // The correct derivation passes.
    s.pa = hvmm_boot::PaPolicy::Translate;
    boot_ok(&s);
}

// ---- Bad input: a clear message and a failed boot, never a panic. ----

#[test]
fn malformed_and_truncated_dtbs_are_refused() {
    let good = {
        let o = run(&Scenario::default_for(ArchKind::Arm64)).unwrap();
        let (a, len) = o.placement.dtb;
        let mut v = vec![0u8; len as usize];
        o.machine.phys_read(Paddr(a), &mut v).unwrap();
        v
    };
    let mut cases: Vec<(&str, Vec<u8>)> =
        vec![("garbage", vec![0x5a; 256]), ("empty header", vec![0; 64])];
    for cut in [8, 40, 100, good.len() / 4] {
        let mut t = good[..cut].to_vec();
        t.resize(good.len(), 0);
        cases.push(("truncated", t));
    }
    let mut bad_magic = good.clone();
    bad_magic[0] ^= 0xff;
    cases.push(("bad magic", bad_magic));
    for (what, dtb) in cases {
        let mut s = Scenario::default_for(ArchKind::Arm64);
        s.dtb_override = Some(dtb);
        let o = run(&s).expect("set-up");
        let err = match &o.result {
            Ok(_) => panic!("{what}: boot should have failed"),
            Err(f) => f.error.clone(),
        };
        assert!(
            matches!(err.step, BootStep::EarlyFdtMap | BootStep::BootFdtInfo),
            "{what}: {err}"
        );
        assert!(!err.message.as_str().is_empty(), "{what}");
    }
}

#[test]
fn a_dtb_without_memory_is_refused() {
    let dtb = hvmm_bootinfo::builder::VirtBoard::new()
        .cpus(1)
        .try_build()
        .unwrap();
    let mut s = Scenario::default_for(ArchKind::Arm64);
    s.dtb_override = Some(dtb);
    let (_, err) = boot_fails(&s);
    assert_eq!(err.step, BootStep::BootFdtInfo);
    assert!(
        err.message.as_str().to_lowercase().contains("memory"),
        "{err}"
    );
}

fn module(addr: u64, size: usize, kind: ModuleKind) -> ModuleFile {
    ModuleFile {
        data: vec![1; size],
        kind,
        name: format!("m@{addr:#x}"),
        addr: Some(addr),
    }
}

#[test]
fn bad_modules_are_refused_by_name() {
    let cases: Vec<(&str, Vec<ModuleFile>, &str)> = vec![
        (
            "overlapping each other",
            vec![
                module(0x4900_0000, 0x2000, ModuleKind::Kernel),
                module(0x4900_1000, 0x2000, ModuleKind::Ramdisk),
            ],
            "overlap",
        ),
        (
            "outside RAM",
            vec![module(0x1_0000_0000, 0x1000, ModuleKind::Kernel)],
            "RAM",
        ),
        (
            "zero size",
            vec![module(0x4900_0000, 0, ModuleKind::Kernel)],
            "size",
        ),
        (
            "overlapping the image",
            vec![module(0x4020_0000, 0x1000, ModuleKind::Kernel)],
            "image",
        ),
    ];
    for (what, mods, needle) in cases {
        let mut s = Scenario::default_for(ArchKind::Arm64);
        s.loader = Loader::Uboot;
        s.load_addr = Some(0x4020_0000);
        s.modules = mods;
        s.allow_overlaps = true;
        let (_, err) = boot_fails(&s);
        assert_eq!(err.step, BootStep::BootFdtInfo, "{what}: {err}");
        assert!(err.message.as_str().contains(needle), "{what}: {err}");
    }
}

#[test]
fn an_image_that_does_not_fit_in_ram_is_refused_before_boot() {
    let mut s = Scenario::default_for(ArchKind::Arm64);
    s.load_addr = Some(0x4000_0000 + GIB - 0x1000);
    let e = run(&s).err().expect("refused");
    assert!(e.to_string().contains("does not fit in RAM"), "{e}");
}

#[test]
fn an_image_loaded_exactly_at_its_link_address_boots() {
    let mut s = Scenario::default_for(ArchKind::Arm32);
    s.ram = vec![(0, GIB)];
    s.loader = Loader::Direct;
    s.load_addr = Some(0x20_0000);
    boot_ok(&s);
}

#[test]
fn too_little_ram_exhausts_the_boot_allocator_with_a_message() {
    for arch in both() {
        let mut s = Scenario::default_for(arch);
        s.ram = vec![(0x4000_0000, 0x28_0000)];
        s.loader = Loader::Direct;
        s.cpus = 1;
        let o = run(&s).expect("set-up");
        let err = o
            .result
            .as_ref()
            .err()
            .map(|f| f.error.clone())
            .expect("boot must fail");
        assert!(
            err.message.as_str().contains("exhausted")
                || err.message.as_str().contains("out of memory")
                || err.message.as_str().contains("too small"),
            "{err}"
        );
    }
}

// ---- SMP stress after the boot, CPUs interleaved on the model. ----

#[test]
fn smp_stress_keeps_every_cpu_view_consistent() {
    for arch in both() {
        let mut s = Scenario::default_for(arch);
        s.stress_iterations = 40;
        let o = boot_ok(&s);
        match &o.stress {
            Some(Ok(r)) => {
                assert_eq!(r.cpus, 4);
                assert!(r.updates >= 4 * 40 * 4, "{r:?}");
                assert!(r.checks > 4 * 40 * 20, "{r:?}");
                if arch == ArchKind::Arm32 {
                    assert!(r.domain_maps > 4 * 40, "{r:?}");
                }
            }
            other => panic!("{arch:?}: stress {other:?}\n{}", o.log),
        }
        assert!(
            o.log.contains("SMP stress: 4 CPUs x 40 iterations"),
            "{}",
            o.log
        );
    }
}

#[test]
fn arm32_ram_too_small_for_a_xenheap_and_a_table_pool_is_refused_by_name() {
    // 10 MiB with the image near the top: an 8 MiB xenheap fits below it,
    // but no 2 MiB outside it is free for the table pool, and taking one
    // from inside would leave less than 8 MiB.
    let mut s = Scenario::default_for(ArchKind::Arm32);
    s.ram = vec![(0x4000_0000, 10 << 20)];
    s.loader = Loader::Direct;
    s.load_addr = Some(0x4090_0000);
    s.dom0 = None;
    let o = run(&s).expect("set-up");
    let f = o.result.as_ref().expect_err("refused");
    assert_eq!(f.error.step, BootStep::SetupMm, "{}", f.error);
    assert!(
        f.error.message.as_str().contains(
            "too small for a xenheap (needs 8 MiB aligned to 32 MiB) and a 2 MiB table pool"
        ),
        "{}",
        f.error
    );
    assert!(!o.log.contains("xenheap: 0x"), "{}", o.log);
}
