//! Early-boot cost on the machine model: exact counts, not times.
//!
//! The machine is set up as the real boot leaves it after
//! `setup_pagetables`: the head emulation builds the boot tables, the image
//! is found by address translation, the runtime tables (root, L1, L2, image
//! L3, fixmap L3 — all inside the image) are linked and the sections mapped,
//! the root register switched. New tables come from the boot allocator
//! ([`hvmm_xen::boot_alloc::FrameRanges`]) and are reached through PMAP. Then
//! 1 GiB is mapped as 4 KiB pages at VA 1 GiB and unmapped again, by hvmm
//! (`Mm::update` in EarlyBoot: image tables at their link address, others
//! through PMAP) and by the Xen-style baseline (every level's table through
//! a PMAP slot, for every page, as Xen's early boot does).

use crate::xen::{XenOp, XenPt};
use hvmm::access::{AccessError, AccessPath, TableAccess};
use hvmm::phase::ImageRange;
use hvmm::{Arch, Arm64, Attrs, CpuOps, MapFlags, Mfn, Op, Paddr, Vaddr, PAGE_SIZE};
use hvmm_boot::model::{head, run, ArchKind, Scenario};
use hvmm_boot::{AccessPolicy, ImageLayout, Mm, Platform};
use hvmm_model::{Counters, Machine, Regime};
use hvmm_xen::phase::Pmap;

const RAM: u64 = 0x4000_0000;
const RAM_SIZE: u64 = 1 << 30;
/// VA of the 1 GiB (arm64's vmap area, still empty in early boot).
pub const EARLY_VA: u64 = 1 << 30;
/// PA it maps to.
pub const EARLY_PA: u64 = 0x8_0000_0000;

/// What one piece of early-boot work cost.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct EarlyCounts {
    /// Table pages mapped in all (image-resident tables included).
    pub table_maps: u64,
    /// Of which through a PMAP slot (each one a PTE write + later a local TLBI).
    pub pmap_maps: u64,
    /// Descriptor writes (`write_pte`), PMAP slot writes included.
    pub pte_writes: u64,
    /// Broadcast TLB invalidations of the page table's own mappings (by VA or all).
    pub tlbi: u64,
    /// Local TLB invalidations of PMAP slots.
    pub tlbi_local: u64,
    /// DSBs.
    pub dsb: u64,
    /// ISBs.
    pub isb: u64,
    /// Table pages freed.
    pub tables_freed: u64,
    /// Distinct table pages the work touched.
    pub tables_touched: u64,
}

impl EarlyCounts {
    fn from_model(c: Counters) -> Self {
        EarlyCounts {
            pte_writes: c.pte_writes,
            tlbi: c.tlbi_va + c.tlbi_all,
            tlbi_local: c.tlbi_va_local + c.tlbi_all_local,
            dsb: c.dsb,
            isb: c.isb,
            ..Default::default()
        }
    }
    /// TLB invalidations of every kind.
    pub fn tlbi_total(&self) -> u64 {
        self.tlbi + self.tlbi_local
    }
    /// Barriers (DSB + ISB).
    pub fn barriers(&self) -> u64 {
        self.dsb + self.isb
    }
}

/// Early-boot map + unmap for hvmm and the baseline.
#[derive(Clone, Debug)]
pub struct EarlyReport {
    /// Pages mapped and unmapped.
    pub pages: u64,
    /// hvmm, map.
    pub hvmm_map: EarlyCounts,
    /// hvmm, unmap.
    pub hvmm_unmap: EarlyCounts,
    /// Xen-style baseline, map.
    pub xen_map: EarlyCounts,
    /// Xen-style baseline, unmap.
    pub xen_unmap: EarlyCounts,
}

struct Early {
    m: Machine,
    mm: Mm<Arm64>,
    image: ImageRange,
    fixmap_l3: Vaddr,
    root: Mfn,
}

/// The machine right after `setup_pagetables` (see the module docs).
fn early_machine() -> Result<Early, String> {
    let img = ImageLayout::model();
    let mut m = Machine::new(Regime::Arm64El2 { pa_bits: 48 }, 1);
    m.add_ram(Paddr(RAM), RAM_SIZE).map_err(|e| e.to_string())?;
    let load = Paddr(RAM + (2 << 20));
    head::<Arm64>(&mut m, load, &img).map_err(|e| e.to_string())?;
    let image = ImageRange::discover(&mut m, img.start, img.end).map_err(|e| e.to_string())?;
    let t = img.tables;
    let pa_of = |va: Vaddr| {
        image
            .0
            .pa_of(va)
            .ok_or_else(|| format!("{va} outside the image"))
    };
    let root = pa_of(t.root)?;
    // SAFETY: the bench's one memory manager over this model's root.
    let mut mm = unsafe { Mm::<Arm64>::new(root.mfn(), image, t.fixmap_l3, AccessPolicy::Correct) };
    let img_end = Paddr(load.0 + img.size());
    mm.alloc.pin(load, img_end);
    mm.alloc.add(Paddr(RAM), load).map_err(|e| e.to_string())?;
    mm.alloc
        .add(img_end, Paddr(RAM + RAM_SIZE))
        .map_err(|e| e.to_string())?;
    let mut link = |table: Vaddr, va: Vaddr, level: u8, child: Vaddr| -> Result<(), String> {
        let idx = hvmm::format::table_index(va.0, level) as u64;
        let pte = hvmm::Pte::table::<Arm64>(pa_of(child)?.mfn()).0;
        m.write_pte(Vaddr(table.0 + idx * 8), pte)
            .map_err(|f| f.to_string())
    };
    let l1 = t.l1.ok_or("arm64 layout without L1")?;
    link(t.root, hvmm_xen::layout::XEN_VIRT_START, 0, l1)?;
    link(l1, hvmm_xen::layout::XEN_VIRT_START, 1, t.l2)?;
    link(t.l2, hvmm_xen::layout::XEN_VIRT_START, 2, t.image_l3)?;
    link(t.l2, hvmm_xen::layout::FIXMAP_ADDR, 2, t.fixmap_l3)?;
    for s in img.sections.iter() {
        let attrs = Attrs::new(hvmm::MemType::Normal, s.perm).map_err(|e| e.to_string())?;
        let pages = (s.end.0 - s.start.0) / PAGE_SIZE;
        mm.update(
            &mut m,
            s.start,
            pages,
            Op::Insert {
                pa: pa_of(s.start)?,
                attrs,
            },
            MapFlags::PAGES,
        )
        .map_err(|e| format!("mapping {}: {e}", s.name))?;
    }
    Platform::switch_root(&mut m, root);
    Platform::set_wxn(&mut m, true);
    Ok(Early {
        m,
        mm,
        image,
        fixmap_l3: t.fixmap_l3,
        root: root.mfn(),
    })
}

/// Xen's early-boot table access: every table, image-resident or not,
/// through a PMAP slot.
struct PmapOnly<'a> {
    pmap: &'a mut Pmap,
    maps: u64,
}

impl AccessPath for PmapOnly<'_> {
    fn name(&self) -> &'static str {
        "pmap (Xen)"
    }
}

impl<A: CpuOps> TableAccess<A> for PmapOnly<'_> {
    fn map_table(&mut self, arch: &mut A, mfn: Mfn) -> Result<Vaddr, AccessError> {
        self.maps += 1;
        self.pmap.map(arch, mfn)
    }
    fn unmap_table(&mut self, arch: &mut A, _mfn: Mfn, va: Vaddr) {
        self.pmap.unmap(arch, va);
    }
}

fn check_mapped(m: &mut Machine, pages: u64, mapped: bool) -> Result<(), String> {
    for i in [0, pages / 2, pages - 1] {
        let va = Vaddr(EARLY_VA + i * PAGE_SIZE);
        let r = m.hw_translate(va, false);
        match (mapped, r) {
            (true, Ok(at)) if at.pa == Paddr(EARLY_PA + i * PAGE_SIZE) => {}
            (false, Err(_)) => {}
            (_, r) => {
                return Err(format!(
                    "after {}, {va} translates to {r:?}",
                    if mapped { "map" } else { "unmap" }
                ))
            }
        }
    }
    if !m.all_stale_tlb_entries().is_empty() || !m.bbm_violations().is_empty() {
        return Err("the model saw stale TLB entries or a break-before-make violation".into());
    }
    Ok(())
}

/// Counts hvmm and the Xen-style baseline mapping `pages` 4 KiB pages in
/// EarlyBoot and unmapping them again.
pub fn early_counts(pages: u64) -> Result<EarlyReport, String> {
    let insert = Op::Insert {
        pa: Paddr(EARLY_PA),
        attrs: Attrs::RW,
    };
    let l3_tables = pages.div_ceil(512);

    // hvmm.
    let mut e = early_machine()?;
    let before = e.mm.phases[0];
    e.m.reset_counters();
    let r =
        e.mm.update(&mut e.m, Vaddr(EARLY_VA), pages, insert, MapFlags::PAGES)
            .map_err(|x| x.to_string())?;
    let mut hvmm_map = EarlyCounts::from_model(e.m.counters());
    let after = e.mm.phases[0];
    hvmm_map.table_maps = after.access.total() - before.access.total();
    hvmm_map.pmap_maps = after.access.pmap - before.access.pmap;
    // root and L1 (image) + the new L2 and L3s.
    hvmm_map.tables_touched = 2 + r.tables_created;
    check_mapped(&mut e.m, pages, true)?;
    let before = e.mm.phases[0];
    e.m.reset_counters();
    let r =
        e.mm.update(
            &mut e.m,
            Vaddr(EARLY_VA),
            pages,
            Op::Remove,
            MapFlags::PAGES,
        )
        .map_err(|x| x.to_string())?;
    let mut hvmm_unmap = EarlyCounts::from_model(e.m.counters());
    let after = e.mm.phases[0];
    hvmm_unmap.table_maps = after.access.total() - before.access.total();
    hvmm_unmap.pmap_maps = after.access.pmap - before.access.pmap;
    hvmm_unmap.tables_freed = r.tables_freed;
    hvmm_unmap.tables_touched = 3 + l3_tables;
    check_mapped(&mut e.m, pages, false)?;
    let _ = e.image;

    // Xen-style baseline.
    let mut e = early_machine()?;
    let mut pmap = Pmap::new(e.fixmap_l3);
    let mut pt = XenPt::<Arm64>::new(e.root);
    let mut acc = PmapOnly {
        pmap: &mut pmap,
        maps: 0,
    };
    e.m.reset_counters();
    pt.update(
        &mut e.m,
        &mut acc,
        &mut e.mm.alloc,
        EARLY_VA,
        pages,
        XenOp::Insert {
            pa: EARLY_PA,
            attrs: Attrs::RW,
        },
    )
    .map_err(|x| x.0)?;
    let mut xen_map = EarlyCounts::from_model(e.m.counters());
    xen_map.table_maps = acc.maps;
    xen_map.pmap_maps = acc.maps;
    xen_map.tables_touched = 2 + pt.stats.tables_created;
    check_mapped(&mut e.m, pages, true)?;
    acc.maps = 0;
    e.m.reset_counters();
    pt.update(
        &mut e.m,
        &mut acc,
        &mut e.mm.alloc,
        EARLY_VA,
        pages,
        XenOp::Remove,
    )
    .map_err(|x| x.0)?;
    let mut xen_unmap = EarlyCounts::from_model(e.m.counters());
    xen_unmap.table_maps = acc.maps;
    xen_unmap.pmap_maps = acc.maps;
    xen_unmap.tables_touched = 3 + l3_tables;
    check_mapped(&mut e.m, pages, false)?;

    Ok(EarlyReport {
        pages,
        hvmm_map,
        hvmm_unmap,
        xen_map,
        xen_unmap,
    })
}

/// One phase of a whole default boot.
#[derive(Clone, Debug)]
pub struct PhaseRow {
    /// Architecture.
    pub arch: &'static str,
    /// System state.
    pub state: &'static str,
    /// Engine calls.
    pub calls: u64,
    /// Table maps through the image / PMAP / direct map / domain-page slots.
    pub maps: [u64; 4],
    /// Leaves written, tables created, tables freed, TLB invalidations (engine).
    pub updates: [u64; 4],
}

/// The full default boot per phase, and the model's counters per architecture.
pub type BootPhases = (Vec<PhaseRow>, Vec<(&'static str, Counters)>);

/// The full default boot per phase, and the model's counters for the whole boot.
pub fn boot_phases() -> Result<BootPhases, String> {
    let mut rows = Vec::new();
    let mut totals = Vec::new();
    for arch in [ArchKind::Arm64, ArchKind::Arm32] {
        let out = run(&Scenario::default_for(arch)).map_err(|e| e.to_string())?;
        if !out.ok() {
            return Err(format!("default {} boot failed:\n{}", arch.name(), out.log));
        }
        let summary = out.result.as_ref().map_err(|f| format!("{:?}", f.error))?;
        for (i, p) in summary.phases.iter().enumerate() {
            let state = ["EarlyBoot", "Boot", "SmpBoot", "Active"][i];
            rows.push(PhaseRow {
                arch: arch.name(),
                state,
                calls: p.calls,
                maps: [
                    p.access.image,
                    p.access.pmap,
                    p.access.directmap,
                    p.access.domain_page,
                ],
                updates: [
                    p.updates.leaves,
                    p.updates.tables_created,
                    p.updates.tables_freed,
                    p.updates.tlb_invalidations,
                ],
            });
        }
        totals.push((arch.name(), out.machine.counters()));
    }
    Ok((rows, totals))
}
