//! What the arm64 secret-free mode (`hvmm boot --no-directmap`) costs
//! against the direct map, on the machine model: exact counts (table maps
//! by access path, the engine's invalidations, the slots' local ones, the
//! model's descriptor writes and barriers) and the model's run time.
//!
//! * **Boots**: `hvmm_boot::model::run` of the default arm64 scenario
//!   (GRUB-style modules, 4 CPUs, 1 GiB), without and with domain 0, in
//!   each mode.
//! * **Rows**: on the booted machine in Active (CPU 0, the other CPUs up on
//!   their roots), `Mm::update` of [`ROW_PAGES`] 4 KiB pages in the vmap
//!   area (`map-4k`, `modify-ro`, `unmap`), the same as one-page calls
//!   (`map-single`), and one-page lookups (`translate`): each goes through
//!   the mode's access path, the direct map or this CPU's mapcache slots.
//!
//! Times are the model's (host wall time of the emulated work, median of
//! the rounds): they rank the paths, they are not hardware times.

use hvmm::{Arm64, Attrs, MapFlags, Mfn, Op, Paddr, Vaddr, PAGE_SIZE};
use hvmm_boot::domain::Dom0Config;
use hvmm_boot::mm::PhaseCounts;
use hvmm_boot::model::{run, run_arm64_keep, ArchKind, Scenario};
use hvmm_boot::Mm;
use hvmm_model::{Counters, Machine};
use std::fmt::Write;
use std::time::Instant;

/// Pages of the rows (64 MiB).
pub const ROW_PAGES: u64 = 16384;
/// One-page calls of `map-single` and `translate`.
pub const ROW_CALLS: u64 = 4096;
/// Where the rows map: 512 MiB into the vmap area (clear of the SMP
/// stress's regions and of the populated first 2 MiB).
const ROW_VA: u64 = (1 << 30) + (512 << 20);

/// The two modes.
pub const MODES: [(&str, bool); 2] = [("direct map", true), ("secret-free", false)];

/// One boot's cost.
#[derive(Clone, Debug)]
pub struct BootCost {
    /// "direct map" or "secret-free".
    pub mode: &'static str,
    /// Whether domain 0 was built.
    pub dom0: bool,
    /// Counts per state.
    pub phases: [PhaseCounts; 4],
    /// The model's counters for the whole run.
    pub counters: Counters,
    /// Model time of the whole run (median), µs.
    pub micros: f64,
}

/// One row's cost in one mode.
#[derive(Clone, Debug)]
pub struct RowCost {
    /// Row name.
    pub row: &'static str,
    /// "direct map" or "secret-free".
    pub mode: &'static str,
    /// Pages the row covers (or one-page calls it makes).
    pub units: u64,
    /// Table maps, image / directmap / domain-page (mapcache).
    pub maps: (u64, u64, u64),
    /// The engine's broadcast invalidations.
    pub tlbi: u64,
    /// The slots' local invalidations.
    pub slot_tlbi: u64,
    /// Descriptor writes (the model's count: slot entries included).
    pub pte_writes: u64,
    /// DSB + ISB.
    pub barriers: u64,
    /// Model time per unit (median), ns.
    pub ns_per_unit: f64,
}

/// Everything this module measures.
#[derive(Clone, Debug)]
pub struct SecretReport {
    /// Boots, direct map then secret-free, without then with domain 0.
    pub boots: Vec<BootCost>,
    /// Rows, each in both modes.
    pub rows: Vec<RowCost>,
    /// Rounds per measurement.
    pub reps: usize,
}

fn scenario(directmap: bool, dom0: bool) -> Scenario {
    let mut s = Scenario::default_for(ArchKind::Arm64);
    s.directmap = directmap;
    s.dom0 = dom0.then(Dom0Config::default);
    s
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn boot_cost(
    mode: &'static str,
    directmap: bool,
    dom0: bool,
    reps: usize,
) -> Result<BootCost, String> {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        let o = run(&scenario(directmap, dom0)).map_err(|e| e.to_string())?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
        if !o.ok() {
            return Err(format!("the {mode} boot failed:\n{}", o.log));
        }
        last = Some(o);
    }
    let o = last.ok_or("no run")?;
    let sum = o.result.as_ref().map_err(|f| f.error.to_string())?;
    Ok(BootCost {
        mode,
        dom0,
        phases: sum.phases,
        counters: o.machine.counters(),
        micros: median(times),
    })
}

/// The Active phase's counts now.
fn active(mm: &Mm<Arm64>) -> PhaseCounts {
    mm.phases[3]
}

/// Runs `work` on the model, returning what it cost: counts from the Active
/// phase's counters and the model's, and the time.
fn measure(
    m: &mut Machine,
    mm: &mut Mm<Arm64>,
    work: RowFn,
    frames: Mfn,
) -> Result<(PhaseCounts, Counters, f64), String> {
    let before = active(mm);
    m.reset_counters();
    let t = Instant::now();
    work(m, mm, frames)?;
    let ns = t.elapsed().as_secs_f64() * 1e9;
    let after = active(mm);
    let d = PhaseCounts {
        access: after.access.since(&before.access),
        updates: hvmm::UpdateReport {
            tlb_invalidations: after.updates.tlb_invalidations - before.updates.tlb_invalidations,
            leaves: after.updates.leaves - before.updates.leaves,
            ..Default::default()
        },
        calls: after.calls - before.calls,
    };
    Ok((d, m.counters(), ns))
}

type RowFn = fn(&mut Machine, &mut Mm<Arm64>, Mfn) -> Result<(), String>;

fn e(err: hvmm::Error) -> String {
    err.to_string()
}

fn map_4k(m: &mut Machine, mm: &mut Mm<Arm64>, f: Mfn) -> Result<(), String> {
    let op = Op::Insert {
        pa: f.paddr(),
        attrs: Attrs::RW,
    };
    mm.update(m, Vaddr(ROW_VA), ROW_PAGES, op, MapFlags::PAGES)
        .map(|_| ())
        .map_err(e)
}

fn modify_ro(m: &mut Machine, mm: &mut Mm<Arm64>, _: Mfn) -> Result<(), String> {
    let op = Op::Modify { attrs: Attrs::RO };
    mm.update(m, Vaddr(ROW_VA), ROW_PAGES, op, MapFlags::PAGES)
        .map(|_| ())
        .map_err(e)
}

fn unmap(m: &mut Machine, mm: &mut Mm<Arm64>, _: Mfn) -> Result<(), String> {
    mm.update(m, Vaddr(ROW_VA), ROW_PAGES, Op::Remove, MapFlags::PAGES)
        .map(|_| ())
        .map_err(e)
}

fn map_single(m: &mut Machine, mm: &mut Mm<Arm64>, f: Mfn) -> Result<(), String> {
    for i in 0..ROW_CALLS {
        let op = Op::Insert {
            pa: Paddr(f.paddr().0 + i * PAGE_SIZE),
            attrs: Attrs::RW,
        };
        mm.update(m, Vaddr(ROW_VA + i * PAGE_SIZE), 1, op, MapFlags::PAGES)
            .map_err(e)?;
    }
    Ok(())
}

fn translate(m: &mut Machine, mm: &mut Mm<Arm64>, f: Mfn) -> Result<(), String> {
    for i in 0..ROW_CALLS {
        let leaf = mm.lookup(m, Vaddr(ROW_VA + i * PAGE_SIZE)).map_err(e)?;
        let want = Paddr(f.paddr().0 + i * PAGE_SIZE);
        if leaf.map(|l| l.pa) != Some(want) {
            return Err(format!("translate: page {i} is {leaf:?}, not {want}"));
        }
    }
    Ok(())
}

fn unmap_single(m: &mut Machine, mm: &mut Mm<Arm64>, _: Mfn) -> Result<(), String> {
    mm.update(m, Vaddr(ROW_VA), ROW_CALLS, Op::Remove, MapFlags::PAGES)
        .map(|_| ())
        .map_err(e)
}

/// The rows in order: (name, units, measured, work).
const ROWS: [(&str, u64, bool, RowFn); 6] = [
    ("map-4k", ROW_PAGES, true, map_4k),
    ("modify-ro", ROW_PAGES, true, modify_ro),
    ("unmap", ROW_PAGES, true, unmap),
    ("map-single", ROW_CALLS, true, map_single),
    ("translate", ROW_CALLS, true, translate),
    // Clean-up between rounds, not a row.
    ("unmap-single", ROW_CALLS, false, unmap_single),
];

fn rows_in(mode: &'static str, directmap: bool, reps: usize) -> Result<Vec<RowCost>, String> {
    let (mut o, mm) = run_arm64_keep(&scenario(directmap, false)).map_err(|e| e.to_string())?;
    let mut mm = mm.ok_or_else(|| format!("the {mode} boot failed:\n{}", o.log))?;
    let m = &mut o.machine;
    m.set_current_cpu(0).map_err(|e| e.to_string())?;
    let frames = mm.alloc.alloc(ROW_PAGES, 512).map_err(|e| e.to_string())?;
    let mut out: Vec<RowCost> = Vec::new();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); ROWS.len()];
    for rep in 0..reps.max(1) {
        for (k, &(row, units, measured, work)) in ROWS.iter().enumerate() {
            let (d, c, ns) = measure(m, &mut mm, work, frames)?;
            if !measured {
                continue;
            }
            times[k].push(ns / units as f64);
            if rep == 0 {
                out.push(RowCost {
                    row,
                    mode,
                    units,
                    maps: (d.access.image, d.access.directmap, d.access.domain_page),
                    tlbi: c.tlbi_va + c.tlbi_all,
                    slot_tlbi: d.access.slot_tlbi,
                    pte_writes: c.pte_writes,
                    barriers: c.dsb + c.isb,
                    ns_per_unit: 0.0,
                });
            }
        }
    }
    for (r, t) in out
        .iter_mut()
        .zip(times.into_iter().filter(|t| !t.is_empty()))
    {
        r.ns_per_unit = median(t);
    }
    if !m.all_stale_tlb_entries().is_empty() || !m.bbm_violations().is_empty() {
        return Err(format!(
            "{mode}: the model saw stale TLB entries or BBM violations"
        ));
    }
    Ok(out)
}

/// Measures both modes (`reps` rounds each).
pub fn run_secret(reps: usize) -> Result<SecretReport, String> {
    let mut boots = Vec::new();
    for dom0 in [false, true] {
        for (mode, directmap) in MODES {
            boots.push(boot_cost(mode, directmap, dom0, reps)?);
        }
    }
    let mut by_mode = Vec::new();
    for (mode, directmap) in MODES {
        by_mode.push(rows_in(mode, directmap, reps)?);
    }
    // Interleave: each row in both modes, side by side.
    let mut rows = Vec::new();
    for i in 0..by_mode[0].len() {
        for m in &by_mode {
            if let Some(r) = m.get(i) {
                rows.push(r.clone());
            }
        }
    }
    Ok(SecretReport { boots, rows, reps })
}

/// The Markdown section for docs/BENCHMARKS.md.
pub fn markdown(r: &Result<SecretReport, String>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## The arm64 secret-free mode against the direct map (machine model)\n"
    );
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(s, "FAILED: {e}\n");
            return s;
        }
    };
    let _ = writeln!(
        s,
        "`hvmm boot` (arm64, GRUB-style modules, 4 CPUs, 1 GiB) in the default mode and with `--no-directmap`, by `hvmm_bench::secret` ({} rounds, median model time: host time of the emulated run, for ranking only). \"maps\" are table maps by access path (image at its link address, the direct map, the mapcache's per-CPU 4 KiB slots); \"TLBI\" the engine's broadcast invalidations; \"slot TLBI\" the local invalidations of PMAP and mapcache slots given back (one per slot map outside the image).\n",
        r.reps
    );
    let _ = writeln!(
        s,
        "| boot | mode | maps: image | pmap | directmap | mapcache | TLBI (engine) | slot TLBI | descriptor writes | DSB + ISB | model time |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
    for b in &r.boots {
        let mut tot = hvmm::phase::AccessStats::default();
        let mut tlbi = 0;
        for p in &b.phases {
            tot.image += p.access.image;
            tot.pmap += p.access.pmap;
            tot.directmap += p.access.directmap;
            tot.domain_page += p.access.domain_page;
            tot.slot_tlbi += p.access.slot_tlbi;
            tlbi += p.updates.tlb_invalidations;
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} µs |",
            if b.dom0 { "with dom0" } else { "to Active" },
            b.mode,
            tot.image,
            tot.pmap,
            tot.directmap,
            tot.domain_page,
            tlbi,
            tot.slot_tlbi,
            b.counters.pte_writes,
            b.counters.dsb + b.counters.isb,
            b.micros
        );
    }
    let _ = writeln!(
        s,
        "\nRows in Active, on CPU 0 with the other three up ({} pages of 4 KiB at VA {ROW_VA:#x}, or {} one-page calls), each in both modes:\n",
        ROW_PAGES, ROW_CALLS
    );
    let _ = writeln!(
        s,
        "| row | mode | units | maps: image | directmap | mapcache | TLBI (engine) | slot TLBI | descriptor writes | DSB + ISB | model ns/unit | × direct map |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut base = f64::NAN;
    for row in &r.rows {
        if row.mode == MODES[0].0 {
            base = row.ns_per_unit;
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.2}× |",
            row.row,
            row.mode,
            row.units,
            row.maps.0,
            row.maps.1,
            row.maps.2,
            row.tlbi,
            row.slot_tlbi,
            row.pte_writes,
            row.barriers,
            row.ns_per_unit,
            row.ns_per_unit / base
        );
    }
    s
}

/// `md` (the report) with this module's section put before its "Notes"
/// (at the end when it has none).
pub fn insert_section(md: String, r: &Result<SecretReport, String>) -> String {
    let section = markdown(r);
    match md.find("\n## Notes") {
        Some(i) => format!("{}\n{section}{}", &md[..i], &md[i..]),
        None => format!("{md}\n{section}"),
    }
}
