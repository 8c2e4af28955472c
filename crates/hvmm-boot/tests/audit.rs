//! The whole-address-space audit at the end of every boot: it passes on the
//! boots of today (every root walked, counts that add up), and each kind of
//! violation planted before it is caught with its rule, VA, PA and
//! attributes, on both architectures.

use hvmm::{Paddr, Vaddr};
use hvmm_boot::audit::{AuditReport, Plant, Rule, Violation, RULES};
use hvmm_boot::domain::Dom0Config;
use hvmm_boot::model::{run, ArchKind, Loader, Outcome, Scenario};
use hvmm_boot::report::BootStep;
use hvmm_boot::ImageLayout;
use hvmm_xen::layout::{fixmap_va, FIXMAP_SLOTS};

const GIB: u64 = 1 << 30;

fn both() -> [ArchKind; 2] {
    [ArchKind::Arm64, ArchKind::Arm32]
}

fn audited(s: &Scenario) -> (Outcome, AuditReport) {
    let o = run(s).expect("scenario set-up");
    let a = o.audited().unwrap_or_else(|e| panic!("{e}"));
    assert!(o.ok(), "model checks failed:\n{}", o.log);
    (o, a)
}

/// Boots `s` with `plant`; returns the violation the audit reported (and
/// checks that the boot failed in the audit step, saying so).
fn caught(s: &Scenario, plant: Plant) -> (Outcome, Violation) {
    let mut s = s.clone();
    s.audit.plant = Some(plant);
    let o = run(&s).expect("scenario set-up");
    let f = match &o.result {
        Ok(_) => panic!("{plant:?} was not caught\n{}", o.log),
        Err(f) => f,
    };
    assert_eq!(f.error.step, BootStep::Audit, "{}\n{}", f.error, o.log);
    let a = f.summary.audit.expect("the audit's report comes back");
    let v = a.first.expect("the first violation is reported");
    assert!(a.violations >= 1);
    let msg = f.error.message.as_str();
    assert!(msg.contains(v.rule.name()), "{msg}");
    assert!(msg.contains(&format!("VA {}", v.va)), "{msg}");
    assert!(msg.contains(&format!("PA {}", v.pa)), "{msg}");
    assert!(o.log.contains("PANIC: boot failed in address-space audit"));
    (o, v)
}

fn image_pa(o: &Outcome) -> Paddr {
    let f = o.result.as_ref().expect_err("failed boot");
    f.summary.image_pa.expect("image found")
}

#[test]
fn every_boot_passes_the_audit_with_every_root_walked() {
    for arch in both() {
        for (loader, cpus) in [(Loader::Grub, 4), (Loader::Uboot, 2), (Loader::Direct, 1)] {
            let mut s = Scenario::default_for(arch);
            s.loader = loader;
            s.cpus = cpus;
            if loader == Loader::Direct {
                s.dom0 = None;
            }
            let (o, a) = audited(&s);
            // A root per CPU on both: arm32's own, arm64's for its
            // mapcache slots.
            let roots = cpus;
            assert_eq!((a.roots, a.cpus), (roots, cpus), "{arch:?} {loader:?}");
            assert_eq!(a.guards, 8);
            // 1 GiB of RAM direct-mapped, or arm32's 32 MiB xenheap (1/32
            // of the RAM, as Xen sizes it) and its 1023 domain-page slots.
            let least = if arch == ArchKind::Arm64 {
                GIB
            } else {
                32 << 20
            };
            assert!(a.pages > least / 4096, "{a:?}");
            assert!(a.exec_pages > 0 && a.exec_pages < 0x100, "{a:?}");
            assert_eq!(a.device_pages, 1, "the console only");
            assert!(a.table_pages >= 4, "{a:?}");
            // Tables from the pool outside the direct map (arm64) or the
            // xenheap (arm32), through slots, the image's sealed: the rule
            // holds on both.
            assert!(a.tables_rule && a.tables_writable == 0, "{a:?}");
            assert!(o
                .log
                .contains("no page table writable through a permanent mapping"));
            assert!(o
                .log
                .contains(" 0 of them writable through a permanent mapping"));
            assert!(o.log.contains(&format!("(XEN) audit: {} root", a.roots)));
            assert!(o.log.contains(RULES));
        }
    }
}

#[test]
fn the_audit_reads_a_64_tib_direct_map_as_blocks() {
    const TIB: u64 = 1 << 40;
    let mut s = Scenario::default_for(ArchKind::Arm64);
    s.ram = [0x40_0000_0000u64, 40 * TIB, 100 * TIB, 180 * TIB]
        .iter()
        .map(|&b| (b, 16 * TIB))
        .collect();
    s.loader = Loader::Direct;
    s.load_addr = Some(0x40_0020_0000);
    s.cpus = 2;
    s.dom0 = None;
    let (_, a) = audited(&s);
    assert!(a.pages > 64 * TIB / 4096, "{a:?}");
    assert!(a.leaves < 200_000, "{a:?}");
    assert!(a.table_pages < 400, "{a:?}");
}

#[test]
fn a_writable_and_executable_page_is_caught() {
    for arch in both() {
        let (o, v) = caught(&Scenario::default_for(arch), Plant::WriteExec);
        assert_eq!(v.rule, Rule::WriteExec);
        assert_eq!(v.va, fixmap_va(FIXMAP_SLOTS));
        assert_eq!(v.pa, image_pa(&o));
        assert_eq!((v.write, v.exec, v.level), (true, true, 3));
        let msg = &o.result.as_ref().unwrap_err().error.message;
        assert!(msg.as_str().contains("RWX Normal"), "{msg:?}");
    }
}

#[test]
fn an_executable_page_outside_text_is_caught() {
    for arch in both() {
        let (o, v) = caught(&Scenario::default_for(arch), Plant::ExecOutsideText);
        assert_eq!(v.rule, Rule::ExecOutsideText);
        assert_eq!(v.va, fixmap_va(FIXMAP_SLOTS));
        assert_eq!(v.pa, image_pa(&o));
        assert_eq!((v.write, v.exec), (false, true));
        let msg = &o.result.as_ref().unwrap_err().error.message;
        assert!(msg.as_str().contains("RX Normal"), "{msg:?}");
    }
}

#[test]
fn device_memory_over_ram_is_caught() {
    for arch in both() {
        let (o, v) = caught(&Scenario::default_for(arch), Plant::DeviceOnRam);
        assert_eq!(v.rule, Rule::DeviceOutsideDevices);
        assert_eq!(v.va, fixmap_va(FIXMAP_SLOTS));
        assert_eq!(v.pa, image_pa(&o));
        assert_eq!(v.mem, Some(hvmm::MemType::DeviceNgnre));
        let msg = &o.result.as_ref().unwrap_err().error.message;
        assert!(msg.as_str().contains("RW Device-nGnRE"), "{msg:?}");
    }
}

#[test]
fn a_stray_mapping_outside_the_declared_regions_is_caught() {
    for arch in both() {
        let (o, v) = caught(&Scenario::default_for(arch), Plant::Stray);
        assert_eq!(v.rule, Rule::OutsideRegions);
        let vmap = match arch {
            ArchKind::Arm64 => hvmm_xen::layout::ARM64_LAYOUT.vmap.start,
            ArchKind::Arm32 => hvmm_xen::layout::ARM32_LAYOUT.vmap.start,
        };
        assert_eq!(v.va, Vaddr(vmap.0 + (64 << 20)));
        assert_eq!(v.pa, image_pa(&o));
        assert_eq!((v.write, v.exec, v.region), (false, false, None));
    }
}

#[test]
fn a_mapped_stack_guard_is_caught() {
    for arch in both() {
        let (o, v) = caught(&Scenario::default_for(arch), Plant::StackGuard);
        let guard = ImageLayout::model().stacks.guard(1);
        assert_eq!(v.rule, Rule::StackGuardMapped);
        assert_eq!(v.va, guard);
        assert_eq!(v.pa, Paddr(image_pa(&o).0 + (guard.0 - 0x20_0000)));
        // Found by the walk, with its descriptor.
        assert_ne!(v.pte, 0);
    }
}

#[test]
fn a_region_mapped_unlike_its_declaration_is_caught() {
    for arch in both() {
        let (o, v) = caught(&Scenario::default_for(arch), Plant::WritableRodata);
        let rodata = ImageLayout::model().sections[1];
        assert_eq!(v.rule, Rule::NotAsDeclared);
        assert_eq!(v.va, rodata.start);
        assert_eq!(v.region, Some("rodata"));
        assert_eq!(v.pa, Paddr(image_pa(&o).0 + (rodata.start.0 - 0x20_0000)));
        assert!(v.write && !v.exec);
    }
}

#[test]
fn a_table_writable_through_a_permanent_mapping_is_caught_when_the_rule_is_on() {
    // arm32 has the rule on and holds it: the plant maps the highest pool
    // table page at the vmap area's first page, writable, and only the
    // table rule breaks.
    let (o, v) = caught(
        &Scenario::default_for(ArchKind::Arm32),
        Plant::WritableTable,
    );
    assert_eq!(v.rule, Rule::TableWritable);
    assert_eq!(v.region, Some("vmap"));
    assert_eq!(v.va, hvmm_xen::layout::ARM32_LAYOUT.vmap.start);
    assert!(v.write && !v.exec && v.level == 3, "{v:?}");
    assert!(o.log.contains("outside the xenheap"));
    // arm64 has the rule on and holds it: the plant maps a pool table page
    // back into the direct map, writable, and only the table rule breaks.
    let (o, v) = caught(
        &Scenario::default_for(ArchKind::Arm64),
        Plant::WritableTable,
    );
    assert_eq!(v.rule, Rule::TableWritable);
    assert_eq!(v.region, Some("directmap"));
    assert!(v.va.0 >= 0x8000_0000_0000, "{v:?}");
    assert!(v.write && !v.exec && v.level == 3);
    assert!(o.log.contains("(XEN) table pool: "));
}

#[test]
fn a_guests_stage_2_pool_is_held_to_the_table_rule() {
    for arch in both() {
        let mut with_guest = Scenario::default_for(arch);
        with_guest.dom0 = Some(Dom0Config::default());
        // Every boot with a guest: its pool counts among the table pages,
        // none of them writable through a permanent mapping.
        let (o, a) = audited(&with_guest);
        assert!(a.pool_pages >= 64 && a.table_pages > a.pool_pages, "{a:?}");
        assert_eq!(a.tables_writable, 0, "{a:?}");
        assert!(
            o.log.contains("64 of them guests' stage-2 pools"),
            "{}",
            o.log
        );
        // Its root mapped writable at a permanent VA: caught by the rule.
        let (o, v) = caught(&with_guest, Plant::WritableGuestTable);
        assert_eq!(v.rule, Rule::TableWritable, "{arch:?}");
        assert_eq!(v.region, Some("vmap"));
        let root = o
            .result
            .as_ref()
            .expect_err("caught")
            .summary
            .dom0
            .as_ref()
            .map(|d| d.p2m_root);
        assert_eq!(Some(v.pa), root, "{arch:?}");
        assert!(v.write && !v.exec);
        // No guest: the plant is refused by name.
        let mut s = Scenario::default_for(arch);
        s.dom0 = None;
        s.audit.plant = Some(Plant::WritableGuestTable);
        let o = run(&s).expect("set-up");
        let f = o.result.as_ref().expect_err("refused");
        assert_eq!(f.error.step, BootStep::Audit);
        assert!(
            f.error.message.as_str().contains("without a domain 0"),
            "{}",
            f.error
        );
    }
}

#[test]
fn every_plant_breaks_the_rule_it_names() {
    let mut s = Scenario::default_for(ArchKind::Arm64);
    s.dom0 = Some(Dom0Config::default());
    for plant in Plant::ALL {
        let (_, v) = caught(&s, plant);
        assert_eq!(v.rule, plant.rule(), "{plant:?}");
        assert_eq!(Plant::from_name(plant.name()), Some(plant));
    }
}

#[test]
fn ram_outside_an_allowed_set_is_caught_and_inside_it_passes() {
    for arch in both() {
        let base = Scenario::default_for(arch);
        // Only the image allowed: the first RAM outside it in address order
        // is the early FDT mapping of the DTB.
        let mut s = base.clone();
        let probe = run(&base).expect("set-up");
        let sum = probe.result.as_ref().expect("boots");
        let image = sum.image_pa.expect("image");
        s.audit.allowed_ram[0] = Some((image, sum.image_size));
        let o = run(&s).expect("set-up");
        let f = o.result.as_ref().expect_err("caught");
        let v = f.summary.audit.and_then(|a| a.first).expect("violation");
        assert_eq!(v.rule, Rule::RamOutsideAllowed, "{}", f.error);
        assert_eq!(v.va, hvmm_xen::layout::BOOT_FDT_VIRT_START);
        assert_eq!(v.region, Some("early-fdt"));
        // All RAM allowed: the audit passes and says it checked the rule.
        let mut s = base.clone();
        s.audit.allowed_ram[0] = Some((Paddr(0x4000_0000), GIB));
        let (o, a) = audited(&s);
        assert!(a.allowed_ram_rule);
        assert!(o.log.contains("no RAM outside the allowed set"));
    }
}

#[test]
fn plants_are_named_for_the_command_line() {
    let names = hvmm_boot::audit::PlantNames.to_string();
    assert_eq!(
        names,
        "wx, exec, device, stray, guard, rodata, table, s2-table"
    );
    assert_eq!(Plant::from_name("nonsense"), None);
}
