//! The arm64 secret-free mode (`hvmm boot --no-directmap`): no direct map,
//! every CPU on its own root with its own mapcache slots, page tables
//! written only through those slots once the boot is over.
//!
//! The address spaces are read here with a walker of the test's own, over
//! the model's physical memory (not the engine's): every leaf of every
//! CPU's root.

use hvmm::{Attrs, MapFlags, Op, Paddr, Vaddr, PAGE_SIZE};
use hvmm_boot::domain::Dom0Config;
use hvmm_boot::model::{run, run_arm64_keep, ArchKind, Loader, Outcome, Scenario};
use hvmm_model::Machine;
use hvmm_testkit::boot::boot_ok;
use hvmm_xen::layout::{ARM64_LAYOUT, MAPCACHE_L0_SLOT, MAPCACHE_SELF};
use std::collections::BTreeSet;

const GIB: u64 = 1 << 30;

/// One leaf of a CPU's address space.
#[derive(Copy, Clone, Debug)]
struct Leaf {
    va: u64,
    pa: u64,
    size: u64,
    writable: bool,
}

/// Every leaf under `root` and every table page on the way (root included).
fn walk(m: &Machine, root: Paddr) -> (Vec<Leaf>, BTreeSet<u64>) {
    fn go(
        m: &Machine,
        table: u64,
        level: u8,
        va: u64,
        leaves: &mut Vec<Leaf>,
        tables: &mut BTreeSet<u64>,
    ) {
        tables.insert(table);
        let shift = 39 - 9 * u32::from(level);
        for i in 0..512u64 {
            let e = m.phys_read_u64(Paddr(table + i * 8)).expect("table in RAM");
            if e & 1 == 0 {
                continue;
            }
            let at = va | (i << shift);
            let oa = e & 0x0000_ffff_ffff_f000;
            if level < 3 && e & 3 == 3 {
                go(m, oa, level + 1, at, leaves, tables);
            } else {
                leaves.push(Leaf {
                    va: at,
                    pa: oa,
                    size: 1 << shift,
                    writable: e & (1 << 7) == 0,
                });
            }
        }
    }
    let mut leaves = Vec::new();
    let mut tables = BTreeSet::new();
    go(m, root.0, 0, 0, &mut leaves, &mut tables);
    (leaves, tables)
}

fn secret_free(mut s: Scenario) -> Scenario {
    s.directmap = false;
    s
}

fn roots(o: &Outcome) -> Vec<Paddr> {
    let cpus = o.result.as_ref().unwrap().cpus;
    (0..cpus)
        .map(|c| o.machine.root_of(c).expect("cpu"))
        .collect()
}

/// Where RAM may be mapped in the secret-free mode once the boot is over:
/// the image, the frametable, the DTB's own pages, and each CPU's mapcache
/// slot table (its self-mapping). Returns the leaves mapping RAM elsewhere.
fn ram_outside_the_allowed_set(o: &Outcome) -> Vec<(usize, Leaf)> {
    let sum = o.result.as_ref().unwrap();
    let image = (sum.image_pa.unwrap().0, sum.image_size);
    let frametable: Vec<(u64, u64)> = sum
        .regions
        .iter()
        .filter(|r| r.name == "frametable")
        .map(|r| (r.pa.0, r.size))
        .collect();
    let (dtb, dtb_len) = o.placement.dtb;
    let dtb = (
        dtb & !(PAGE_SIZE - 1),
        (dtb + dtb_len).next_multiple_of(PAGE_SIZE),
    );
    let self_map = ARM64_LAYOUT.mapcache.unwrap().start.0 + MAPCACHE_SELF as u64 * PAGE_SIZE;
    let inside = |pa: u64, size: u64, (b, s): (u64, u64)| pa >= b && pa + size <= b + s;
    let mut bad = Vec::new();
    for (cpu, root) in roots(o).into_iter().enumerate() {
        let (leaves, tables) = walk(&o.machine, root);
        for l in leaves {
            if !o.machine.is_ram(Paddr(l.pa)) {
                continue;
            }
            let allowed = inside(l.pa, l.size, image)
                || frametable.iter().any(|&f| inside(l.pa, l.size, f))
                || inside(l.pa, l.size, (dtb.0, dtb.1 - dtb.0))
                || (l.va == self_map && tables.contains(&l.pa));
            if !allowed {
                bad.push((cpu, l));
            }
        }
    }
    bad
}

/// Writable leaves, on any CPU, that map a page of any CPU's tables —
/// other than a CPU's own mapcache slot table through its self-mapping.
fn writable_table_pages(o: &Outcome) -> Vec<(usize, Leaf)> {
    let rs = roots(o);
    let mut all_tables = BTreeSet::new();
    let mut spaces = Vec::new();
    for r in &rs {
        let (leaves, tables) = walk(&o.machine, *r);
        all_tables.extend(tables);
        spaces.push(leaves);
    }
    let self_map = ARM64_LAYOUT.mapcache.unwrap().start.0 + MAPCACHE_SELF as u64 * PAGE_SIZE;
    let mut bad = Vec::new();
    for (cpu, leaves) in spaces.into_iter().enumerate() {
        for l in leaves
            .into_iter()
            .filter(|l| l.writable && l.va != self_map)
        {
            let mut pa = l.pa;
            while pa < l.pa + l.size {
                if all_tables.contains(&pa) {
                    bad.push((cpu, Leaf { pa, ..l }));
                    break;
                }
                pa += PAGE_SIZE;
            }
        }
    }
    bad
}

#[test]
fn the_secret_free_boot_reaches_active_with_every_cpu_on_its_own_root() {
    let o = boot_ok(&secret_free(Scenario::default_for(ArchKind::Arm64)));
    let sum = o.result.as_ref().unwrap();
    assert!(sum.secret_free);
    assert_eq!(sum.cpus, 4);
    let rs = roots(&o);
    let distinct: BTreeSet<u64> = rs.iter().map(|r| r.0).collect();
    assert_eq!(distinct.len(), 4, "one root per CPU: {rs:?}");
    assert!(o
        .log
        .contains("page tables are now reached through image+mapcache"));
    assert!(!o.log.contains("directmap: 0x"), "{}", o.log);
    assert!(
        sum.regions.iter().all(|r| r.name != "directmap"),
        "no direct-map region"
    );
    // The mapcache level-0 entry is each CPU's own; every other one is
    // CPU 0's.
    let entry = |r: Paddr, i: usize| o.machine.phys_read_u64(Paddr(r.0 + i as u64 * 8)).unwrap();
    for r in &rs[1..] {
        for i in 0..512 {
            if i == MAPCACHE_L0_SLOT {
                assert_ne!(entry(*r, i), entry(rs[0], i), "own mapcache tables");
            } else {
                assert_eq!(entry(*r, i), entry(rs[0], i), "shared entry {i}");
            }
        }
    }
    assert!(o.mapcache_held.is_empty());
}

#[test]
fn no_ram_is_mapped_outside_the_allowed_set_on_any_cpu() {
    let mut s = secret_free(Scenario::default_for(ArchKind::Arm64));
    s.dom0 = Some(Dom0Config::default());
    let o = boot_ok(&s);
    let bad = ram_outside_the_allowed_set(&o);
    assert!(
        bad.is_empty(),
        "RAM mapped outside the allowed set: {bad:x?}"
    );
    // Domain 0's memory in particular is mapped only at stage 2.
    let d = o.result.as_ref().unwrap().dom0.expect("dom0 built");
    for (cpu, root) in roots(&o).into_iter().enumerate() {
        let (leaves, _) = walk(&o.machine, root);
        for l in leaves {
            assert!(
                l.pa + l.size <= d.ram.0 .0 || l.pa >= d.ram.0 .0 + d.ram.1,
                "CPU {cpu} maps dom0's RAM at {:#x}",
                l.va
            );
        }
    }
}

#[test]
fn the_direct_map_mode_maps_all_ram_which_the_allowed_set_check_catches() {
    // The negative control: the same check over a default boot.
    let o = boot_ok(&Scenario::default_for(ArchKind::Arm64));
    let bad = ram_outside_the_allowed_set(&o);
    assert!(
        bad.iter()
            .any(|(_, l)| l.va >= ARM64_LAYOUT.directmap.unwrap().start.0),
        "the direct map is RAM outside the allowed set"
    );
}

#[test]
fn no_table_page_is_writable_through_a_permanent_mapping_in_the_secret_free_mode() {
    let mut s = secret_free(Scenario::default_for(ArchKind::Arm64));
    s.dom0 = Some(Dom0Config::default());
    let o = boot_ok(&s);
    let bad = writable_table_pages(&o);
    assert!(bad.is_empty(), "table pages writable: {bad:x?}");
    // The image's tables are read-only in the image mapping now.
    let sum = o.result.as_ref().unwrap();
    let pgt = sum
        .regions
        .iter()
        .find(|r| r.name == "pgtables")
        .expect("the sealed tables are a verified region");
    assert!(!pgt.writable);
}

#[test]
fn in_the_direct_map_mode_no_table_page_is_writable_through_the_direct_map() {
    // The default mode keeps its direct map, but table frames come from the
    // pool it leaves out and the image's tables are sealed.
    let o = boot_ok(&Scenario::default_for(ArchKind::Arm64));
    let bad = writable_table_pages(&o);
    assert!(bad.is_empty(), "table pages writable: {bad:x?}");
    let sum = o.result.as_ref().unwrap();
    let dm = ARM64_LAYOUT.directmap.unwrap().start;
    assert!(sum
        .regions
        .iter()
        .any(|r| r.name == "directmap" && r.va >= dm));
    assert!(sum
        .regions
        .iter()
        .any(|r| r.name == "pgtables" && !r.writable));
}

#[test]
fn every_boot_path_passes_in_the_secret_free_mode() {
    for loader in [Loader::Grub, Loader::Uboot, Loader::Direct] {
        for cpus in [1, 4] {
            for dom0 in [false, true] {
                if dom0 && loader == Loader::Direct {
                    continue; // no kernel module
                }
                let mut s = secret_free(Scenario::default_for(ArchKind::Arm64));
                s.loader = loader;
                s.cpus = cpus;
                s.dom0 = dom0.then(Dom0Config::default);
                let o = boot_ok(&s);
                let what = format!("{loader:?} smp{cpus} dom0 {dom0}");
                assert_eq!(o.result.as_ref().unwrap().cpus, cpus, "{what}");
                let bad = ram_outside_the_allowed_set(&o);
                assert!(bad.is_empty(), "{what}: {bad:x?}");
                assert!(writable_table_pages(&o).is_empty(), "{what}");
            }
        }
    }
}

#[test]
fn secret_free_boots_on_banks_far_apart_and_above_4_gib() {
    let mut s = secret_free(Scenario::default_for(ArchKind::Arm64));
    s.ram = vec![(0x4000_0000, GIB), (0x80_0000_0000, GIB)];
    s.load_addr = Some(0x80_0020_0000);
    let o = boot_ok(&s);
    assert!(ram_outside_the_allowed_set(&o).is_empty());
}

#[test]
fn the_smp_stress_passes_in_the_secret_free_mode() {
    let mut s = secret_free(Scenario::default_for(ArchKind::Arm64));
    s.stress_iterations = 30;
    let o = boot_ok(&s);
    let r = o.stress.as_ref().unwrap().as_ref().unwrap();
    assert_eq!(r.cpus, 4);
    // Each CPU mapped frames in its own slots and saw them unmapped after.
    assert_eq!(r.domain_maps, 4 * 30 * 8);
}

#[test]
fn arm32_refuses_the_secret_free_mode_by_name() {
    let s = secret_free(Scenario::default_for(ArchKind::Arm32));
    let e = run(&s).err().expect("refused");
    assert!(e.0.contains("arm64 only"), "{e}");
}

#[test]
fn a_slot_given_back_no_longer_translates_and_is_reused_without_a_stale_entry() {
    let s = secret_free(Scenario::default_for(ArchKind::Arm64));
    let (mut o, mm) = run_arm64_keep(&s).unwrap();
    let mm = mm.expect("kept");
    let mc = mm.mapcache(0).unwrap();
    let m = &mut o.machine;
    m.set_current_cpu(0).unwrap();
    let image = o.result.as_ref().unwrap().image_pa.unwrap();
    let va = mc.map(m, image.mfn()).unwrap();
    assert_eq!(hvmm::CpuOps::hw_translate(m, va, false).unwrap().pa, image);
    // Cached now.
    m.touch(0, va).unwrap();
    mc.unmap(m, va);
    assert!(hvmm::CpuOps::hw_translate(m, va, false).is_err());
    assert!(m.tlb_lookup(0, va).is_none(), "invalidated on this CPU");
    // The same slot for another frame: the new translation, nothing stale.
    let other = Paddr(image.0 + PAGE_SIZE);
    let va2 = mc.map(m, other.mfn()).unwrap();
    assert_eq!(hvmm::CpuOps::hw_translate(m, va2, false).unwrap().pa, other);
    mc.unmap(m, va2);
    assert!(m.all_stale_tlb_entries().is_empty());
    assert!(m.bbm_violations().is_empty());
    // Another CPU never sees CPU 0's slots.
    m.set_current_cpu(1).unwrap();
    let va3 = mc.map(m, other.mfn()).unwrap();
    m.set_current_cpu(0).unwrap();
    assert!(
        hvmm::CpuOps::hw_translate(m, va3, false).is_err(),
        "CPU 1's slot is not in CPU 0's root"
    );
    m.set_current_cpu(1).unwrap();
    mc.unmap(m, va3);
}

#[test]
fn all_slots_held_is_a_named_error_and_changes_nothing() {
    let s = secret_free(Scenario::default_for(ArchKind::Arm64));
    let (mut o, mm) = run_arm64_keep(&s).unwrap();
    let mc = mm.expect("kept").mapcache(0).unwrap();
    let m = &mut o.machine;
    m.set_current_cpu(0).unwrap();
    let image = o.result.as_ref().unwrap().image_pa.unwrap();
    let mut held = Vec::new();
    for _ in 0..hvmm_xen::layout::MAPCACHE_SLOTS {
        held.push(mc.map(m, image.mfn()).unwrap());
    }
    let e = mc.map(m, image.mfn()).unwrap_err();
    assert_eq!(
        e,
        hvmm::AccessError::SlotsExhausted {
            provider: "mapcache",
            slots: hvmm_xen::layout::MAPCACHE_SLOTS
        }
    );
    assert!(e.to_string().contains("all 511 mapcache slots are in use"));
    assert_eq!(mc.held(m).unwrap(), hvmm_xen::layout::MAPCACHE_SLOTS);
    for va in held {
        mc.unmap(m, va);
    }
    assert_eq!(mc.held(m).unwrap(), 0);
}

#[test]
fn a_level_0_entry_made_after_the_secondaries_started_reaches_every_cpu() {
    let s = secret_free(Scenario::default_for(ArchKind::Arm64));
    let (mut o, mm) = run_arm64_keep(&s).unwrap();
    let mut mm = mm.expect("kept");
    let m = &mut o.machine;
    m.set_current_cpu(0).unwrap();
    // Level-0 slot 10 (5 TiB): nothing there until now.
    let va = Vaddr(10 << 39);
    let frame = mm.alloc.alloc(1, 1).unwrap();
    let r = mm
        .update(
            m,
            va,
            1,
            Op::Insert {
                pa: frame.paddr(),
                attrs: Attrs::RW,
            },
            MapFlags::PAGES,
        )
        .unwrap();
    assert!(r.tables_created >= 3);
    for cpu in 0..4 {
        assert_eq!(
            m.at(cpu, va, true).unwrap().pa,
            frame.paddr(),
            "CPU {cpu} sees the new mapping"
        );
    }
    // And its removal, tables freed, everywhere.
    mm.update(m, va, 1, Op::Remove, MapFlags::PAGES).unwrap();
    for cpu in 0..4 {
        assert!(m.at(cpu, va, false).is_err(), "CPU {cpu}");
    }
    assert!(m.all_stale_tlb_entries().is_empty());
}

#[test]
fn secret_free_only_steps_are_refused_elsewhere_and_change_nothing() {
    // Both arm64 modes (per-CPU roots in each): CPU 0 and CPUs past
    // MAX_CPUS get no second root, and nothing is taken.
    let default = Scenario::default_for(ArchKind::Arm64);
    for s in [default.clone(), secret_free(default)] {
        let (mut o, mm) = run_arm64_keep(&s).unwrap();
        let mut mm = mm.expect("kept");
        assert!(!mm.image_tables_writable());
        let m = &mut o.machine;
        let free = mm.alloc.free_pages();
        let pool = mm.pool.as_ref().map(|p| p.free.free_pages());
        for cpu in [0, hvmm_boot::mm::MAX_CPUS] {
            let e = mm.add_cpu_root(m, cpu).unwrap_err();
            assert!(e.to_string().contains("no such secondary CPU"), "{e}");
        }
        assert_eq!(mm.alloc.free_pages(), free);
        assert_eq!(mm.pool.as_ref().map(|p| p.free.free_pages()), pool);
        assert_eq!(pool.is_some(), s.directmap);
    }
}

#[test]
fn a_dtb_straddling_2_mib_keeps_exactly_its_pages_mapped() {
    let mut s = secret_free(Scenario::default_for(ArchKind::Arm64));
    s.loader = Loader::Uboot;
    s.dtb_addr = Some(0x4800_0000 - 0x400);
    let o = boot_ok(&s);
    let (dtb, len) = o.placement.dtb;
    let first = dtb & !(PAGE_SIZE - 1);
    let end = (dtb + len).next_multiple_of(PAGE_SIZE);
    assert!(o.log.contains(&format!(
        "DTB mapping trimmed to its {} pages",
        (end - first) / PAGE_SIZE
    )));
    let (leaves, _) = walk(&o.machine, roots(&o)[0]);
    let fdt = hvmm_xen::layout::BOOT_FDT_VIRT_START.0;
    let window = fdt..fdt + hvmm_xen::layout::BOOT_FDT_VIRT_SIZE;
    let mut pages: Vec<u64> = leaves
        .iter()
        .filter(|l| window.contains(&l.va))
        .inspect(|l| assert!(!l.writable && l.size == PAGE_SIZE, "{l:x?}"))
        .map(|l| l.pa)
        .collect();
    pages.sort();
    let want: Vec<u64> = (first..end).step_by(PAGE_SIZE as usize).collect();
    assert_eq!(
        pages, want,
        "the DTB's own pages, both sides of the 2 MiB line"
    );
    assert!(ram_outside_the_allowed_set(&o).is_empty());
}

#[test]
fn the_audit_passes_the_secret_free_boot_with_both_mode_rules_on() {
    let mut s = secret_free(Scenario::default_for(ArchKind::Arm64));
    s.dom0 = Some(Dom0Config::default());
    let o = boot_ok(&s);
    let a = o.audited().unwrap_or_else(|e| panic!("{e}"));
    assert!(a.tables_rule && a.allowed_ram_rule, "{a:?}");
    assert_eq!((a.roots, a.cpus), (4, 4), "a root per CPU walked");
    assert_eq!(a.tables_writable, 0);
    assert!(a.slot_pages >= 4, "each CPU's slot table, {a:?}");
    assert!(o.log.contains(
        "no RAM outside the allowed set, no page table writable through a permanent mapping"
    ));
}

#[test]
fn a_slot_left_held_over_a_page_of_ram_fails_the_secret_free_audit() {
    use hvmm_boot::audit::{self, Declared, PlatformDevice, Rule};
    let s = secret_free(Scenario::default_for(ArchKind::Arm64));
    let (mut o, mm) = run_arm64_keep(&s).unwrap();
    let mut mm = mm.expect("kept");
    let sum = o.result.as_ref().unwrap().clone();
    let (dtb, dtb_len) = o.placement.dtb;
    let img = hvmm_boot::ImageLayout::model();
    let devices = [
        Some(PlatformDevice {
            name: "console",
            va: hvmm_xen::layout::fixmap_va(hvmm_xen::layout::FIXMAP_CONSOLE),
            pa: Paddr(hvmm_boot::model::UART_PA),
            size: PAGE_SIZE,
        }),
        None,
    ];
    let mapped: Vec<_> = sum
        .regions
        .iter()
        .filter(|r| r.name == "frametable")
        .copied()
        .collect();
    let banks: Vec<(Paddr, u64)> = sum.banks.iter().copied().collect();
    let declared = |mm: &hvmm_boot::Mm<hvmm::Arm64>| {
        let mut d = Declared::for_boot::<hvmm::Arm64>(
            &img,
            mm.image(),
            Paddr(dtb),
            &devices,
            &mapped,
            &banks,
            mm,
        );
        hvmm_boot::seq::declare_secret_free::<hvmm::Arm64>(
            &mut d,
            mm.image(),
            (Paddr(dtb), dtb_len),
            &mapped,
        );
        d
    };
    let m = &mut o.machine;
    m.set_current_cpu(0).unwrap();
    let d = declared(&mm);
    audit::run::<hvmm::Arm64, _>(m, &mut mm, &d).expect("the boot as it ended passes");
    // A free page of RAM held in CPU 0's slot: exactly what the mode must
    // not leave behind.
    let free = mm.alloc.alloc(1, 1).unwrap();
    let mc = mm.mapcache(0).unwrap();
    let va = mc.map(m, free).unwrap();
    let (err, report) = audit::run::<hvmm::Arm64, _>(m, &mut mm, &d).expect_err("caught");
    let v = report.first.expect("the violation");
    assert_eq!(v.rule, Rule::RamOutsideAllowed, "{err}");
    assert_eq!((v.va, v.pa, v.cpu), (va, free.paddr(), 0));
    assert_eq!(v.region, Some("mapcache"));
    mc.unmap(m, va);
    audit::run::<hvmm::Arm64, _>(m, &mut mm, &d).expect("given back: passes again");
}

#[test]
fn every_planted_violation_is_caught_in_the_secret_free_mode_too() {
    use hvmm_boot::audit::Plant;
    use hvmm_boot::report::BootStep;
    // `WritableTable` plants nothing but the rule, which the mode has on
    // already, with no table page to break it: that boot passes.
    for plant in Plant::ALL {
        let mut s = secret_free(Scenario::default_for(ArchKind::Arm64));
        s.dom0 = Some(hvmm_boot::domain::Dom0Config::default());
        s.audit.plant = Some(plant);
        let o = run(&s).unwrap();
        if plant == Plant::WritableTable {
            assert!(o.audited().is_ok(), "{}", o.log);
            continue;
        }
        let f = o
            .result
            .as_ref()
            .err()
            .unwrap_or_else(|| panic!("{plant:?} not caught\n{}", o.log));
        assert_eq!(f.error.step, BootStep::Audit, "{plant:?}: {}", f.error);
        let v = f.summary.audit.and_then(|a| a.first).expect("violation");
        assert_eq!(v.rule, plant.rule(), "{plant:?}: {}", f.error);
    }
}

#[test]
fn the_table_pool_grows_by_a_chunk_carved_out_of_the_direct_map() {
    let (mut o, mm) = run_arm64_keep(&Scenario::default_for(ArchKind::Arm64)).unwrap();
    let mut mm = mm.expect("kept");
    let m = &mut o.machine;
    m.set_current_cpu(0).unwrap();
    let dm = mm.directmap().expect("the direct map stays");
    let pool = |mm: &hvmm_boot::Mm<_>| {
        let p = mm.pool.as_ref().expect("a table pool");
        (p.chunks, p.free.free_pages())
    };
    assert_eq!(pool(&mm).0, 1);
    // One level-3 table per 2 MiB of the vmap area: more than the first
    // chunk holds.
    let vmap = ARM64_LAYOUT.vmap;
    let step = 2 << 20;
    let free_before = mm.alloc.free_pages();
    for i in 2..vmap.size / step {
        let va = Vaddr(vmap.start.0 + i * step);
        mm.update(m, va, 1, Op::Populate, MapFlags::PAGES)
            .unwrap_or_else(|e| panic!("populating {va}: {e}"));
    }
    let (chunks, free) = pool(&mm);
    assert_eq!(chunks, 2, "the pool grew once");
    assert!(free >= 16, "{free}");
    assert_eq!(mm.alloc.free_pages(), free_before - 512);
    // The new chunk is gone from the direct map: some frame the pool
    // handed out has no direct-map leaf any more.
    let highest = mm.highest_table;
    let va = dm.va_of(highest).expect("in a bank");
    assert_eq!(
        mm.lookup(m, va).unwrap(),
        None,
        "{highest} still direct-mapped"
    );
    // Its neighbour outside the chunk is still there.
    let below = Paddr((highest.0 & !((2 << 20) - 1)) - PAGE_SIZE);
    let leaf = mm.lookup(m, dm.va_of(below).unwrap()).unwrap();
    assert!(
        leaf.is_some_and(|l| l.pa == below && l.attrs == Some(Attrs::RW)),
        "{leaf:?}"
    );
    assert!(m.all_stale_tlb_entries().is_empty());
    assert!(m.bbm_violations().is_empty());
}
