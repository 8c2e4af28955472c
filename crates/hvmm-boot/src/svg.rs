//! A picture of the memory map after a model boot (`hvmm boot --svg FILE`).
//!
//! What a hypervisor developer sketches by hand on a whiteboard: on the left
//! the physical map (RAM banks, reserved ranges, the image, the DTB, the boot
//! modules, the page-table pages the boot made, domain 0's memory and what
//! was copied into it), on the right hvmm's virtual layout (the layout's
//! areas, and what is really mapped in each, with its permissions and memory
//! type). Like a whiteboard sketch it is ordered by address but not to scale:
//! each row's height grows with the logarithm of its size, so a 4 KiB table
//! page and a 64 GiB bank are both readable. Empty stretches are drawn as
//! short gaps with their size.
//!
//! The facts come from the boot's summary and from the machine model after
//! the boot, never from the boot's own table code: table pages are found by
//! walking each CPU's root (and domain 0's stage-2 root) in the model's
//! memory, and permissions by the model's translation of each leaf. Every
//! drawn box carries its facts as attributes (`data-panel`, `data-kind`,
//! `data-start`, `data-size`, `data-perm`), so a program can check the
//! picture against the boot (the crate's `tests/svg.rs` does).

use crate::model::Outcome;
use crate::report::BootSummary;
use hvmm::{Paddr, Vaddr, PAGE_SIZE};
use hvmm_bootinfo::ModuleKind;
use hvmm_model::{Machine, Regime};
use hvmm_xen::layout::{Layout, Region};
use std::collections::BTreeSet;
use std::fmt::Write;

/// One box of the picture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// Column inside its panel: 0 is the outermost (RAM banks, layout areas).
    pub lane: usize,
    /// What it is: `ram`, `reserved`, `image`, `dtb`, `module`, `tables`,
    /// `s2-tables`, `guest-ram`, `guest-kernel`, `guest-initrd`, `guest-dtb`
    /// (physical); `area`, `mapped` (virtual).
    pub kind: &'static str,
    /// The text in the box.
    pub label: String,
    /// First address.
    pub start: u64,
    /// Size in bytes (never 0).
    pub size: u64,
    /// Permissions of a `mapped` box: `R`/`-`, `W`/`-`, `X`/`-` and the
    /// memory type (`normal` or `device`), e.g. `RW- normal`.
    pub perm: Option<String>,
}

impl Item {
    fn end(&self) -> u64 {
        self.start.saturating_add(self.size)
    }
}

/// The picture's content: the physical and the virtual panel.
#[derive(Clone, Debug, Default)]
pub struct MemoryMap {
    /// Architecture name.
    pub arch: &'static str,
    /// Physical boxes.
    pub physical: Vec<Item>,
    /// Virtual boxes (hvmm's stage 1 as CPU 0 sees it).
    pub virtual_: Vec<Item>,
}

fn summary(o: &Outcome) -> &BootSummary {
    match &o.result {
        Ok(s) => s,
        Err(f) => &f.summary,
    }
}

fn module_name(k: ModuleKind) -> &'static str {
    match k {
        ModuleKind::Kernel => "kernel",
        ModuleKind::Ramdisk => "ramdisk",
        ModuleKind::XsmPolicy => "XSM policy",
        ModuleKind::GuestDtb => "guest DTB",
        ModuleKind::Microcode => "microcode",
        ModuleKind::Unknown => "unknown",
    }
}

/// Frames of every table reachable from `root` (a table of `entries`
/// descriptors at lookup level `level`), leaves as (input address, size).
struct Walk {
    tables: BTreeSet<u64>,
    leaves: Vec<(u64, u64)>,
    oa_mask: u64,
}

impl Walk {
    fn table(&mut self, m: &Machine, pa: u64, level: u32, entries: u64, base: u64) {
        for p in 0..entries.div_ceil(512) {
            self.tables.insert(pa + p * PAGE_SIZE);
        }
        let span = 1u64 << (12 + 9 * (3 - level));
        for i in 0..entries {
            let Ok(d) = m.phys_read_u64(Paddr(pa + i * 8)) else {
                return;
            };
            if d & 1 == 0 {
                continue;
            }
            let ia = base + i * span;
            let next = d & self.oa_mask & !(PAGE_SIZE - 1);
            if level < 3 && d & 2 != 0 {
                self.table(m, next, level + 1, 512, ia);
            } else if level == 3 && d & 2 != 0 || (level == 1 || level == 2) && d & 2 == 0 {
                self.leaves.push((ia, span));
            }
        }
    }
}

/// Runs of contiguous frames, as (start, size).
fn runs(frames: impl IntoIterator<Item = u64>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for f in frames {
        match out.last_mut() {
            Some((s, n)) if *s + *n == f => *n += PAGE_SIZE,
            _ => out.push((f, PAGE_SIZE)),
        }
    }
    out
}

fn layout_of(regime: Regime) -> Layout {
    if regime.is_arm64() {
        hvmm_xen::layout::ARM64_LAYOUT
    } else {
        hvmm_xen::layout::ARM32_LAYOUT
    }
}

/// Gathers what to draw from a model boot.
pub fn memory_map(o: &Outcome) -> MemoryMap {
    let s = summary(o);
    let m = &o.machine;
    let regime = m.regime();
    let mut phys = Vec::new();
    let banks: Vec<(u64, u64)> = if s.banks.is_empty() {
        m.ram_regions().iter().map(|(b, n)| (b.0, *n)).collect()
    } else {
        s.banks.iter().map(|(b, n)| (b.0, *n)).collect()
    };
    for (i, (b, n)) in banks.iter().enumerate() {
        phys.push(item(0, "ram", format!("RAM bank {i}"), *b, *n, None));
    }
    for r in s.reserved.iter() {
        let what = match r.source {
            hvmm_bootinfo::ReservedSource::MemReserve => "/memreserve/",
            hvmm_bootinfo::ReservedSource::ReservedMemory => "reserved-memory",
        };
        let no_map = if r.no_map { ", no-map" } else { "" };
        phys.push(item(
            1,
            "reserved",
            format!("{what}{no_map}"),
            r.start.0,
            r.size,
            None,
        ));
    }
    let image = s
        .image_pa
        .map(|p| (p.0, s.image_size))
        .unwrap_or((o.placement.image, s.image_size));
    if image.1 > 0 {
        phys.push(item(
            1,
            "image",
            "hvmm image".into(),
            image.0,
            image.1,
            None,
        ));
    }
    let (dtb, dtb_size) = o.placement.dtb;
    if dtb_size > 0 {
        phys.push(item(1, "dtb", "device tree".into(), dtb, dtb_size, None));
    }
    for md in s.modules.iter() {
        let label = format!("module: {}", module_name(md.kind));
        phys.push(item(1, "module", label, md.start.0, md.size, None));
    }
    // Table pages: every CPU's root (per-CPU roots on arm32), walked in the
    // model's memory. The image's static tables are part of the image box.
    let (root_level, root_entries) = if regime.is_arm64() { (0, 512) } else { (1, 4) };
    let oa_mask = (1u64 << 48) - 1;
    let mut w = Walk {
        tables: BTreeSet::new(),
        leaves: Vec::new(),
        oa_mask,
    };
    let mut roots = BTreeSet::new();
    for cpu in 0..m.ncpus() {
        if let Ok(r) = m.root_of(cpu) {
            if r.0 != 0 && roots.insert(r.0) {
                let mut per_cpu = Walk {
                    tables: BTreeSet::new(),
                    leaves: Vec::new(),
                    oa_mask,
                };
                per_cpu.table(m, r.0, root_level, root_entries, 0);
                w.tables.extend(per_cpu.tables);
                if cpu == 0 {
                    w.leaves = per_cpu.leaves;
                }
            }
        }
    }
    let in_image = |f: &u64| *f >= image.0 && *f < image.0 + image.1;
    for (start, size) in runs(w.tables.iter().copied().filter(|f| !in_image(f))) {
        let label = format!("page tables ({} pages)", size / PAGE_SIZE);
        phys.push(item(1, "tables", label, start, size, None));
    }
    if let Some(d) = &s.dom0 {
        phys.push(item(
            1,
            "guest-ram",
            format!("dom0 RAM (VMID {})", d.vmid),
            d.ram.0 .0,
            d.ram.1,
            None,
        ));
        for (kind, label, (pa, n)) in [
            ("guest-kernel", "dom0 kernel", d.kernel),
            ("guest-initrd", "dom0 initrd", d.initrd),
            ("guest-dtb", "dom0 device tree", d.dtb),
        ] {
            if n > 0 {
                phys.push(item(2, kind, label.into(), pa.0, n, None));
            }
        }
        let mut s2 = Walk {
            tables: BTreeSet::new(),
            leaves: Vec::new(),
            oa_mask,
        };
        // Both stage-2 formats start at level 1 with two concatenated pages.
        s2.table(m, d.p2m_root.0, 1, 1024, 0);
        for (start, size) in runs(s2.tables) {
            let label = format!("dom0 stage-2 tables ({} pages)", size / PAGE_SIZE);
            phys.push(item(1, "s2-tables", label, start, size, None));
        }
    }

    // The virtual panel: the layout's areas, and the mapped runs of CPU 0's
    // tables with the permissions the model's translation gives them.
    let layout = layout_of(regime);
    let mut virt = Vec::new();
    let areas: Vec<Region> = Layout::COMMON
        .iter()
        .copied()
        .chain([layout.frametable, layout.vmap])
        .chain(layout.xenheap)
        .chain(layout.domheap)
        .chain(layout.directmap)
        .collect();
    for a in &areas {
        virt.push(item(0, "area", a.name.into(), a.start.0, a.size, None));
    }
    let mair = m.mair();
    let mut mapped: Vec<Item> = Vec::new();
    for (va, size) in w.leaves {
        let Ok(t) = m.walk(0, Vaddr(va)) else {
            continue;
        };
        let attr = (mair >> (8 * u64::from(t.attr_idx))) & 0xff;
        let ty = if attr & 0xf0 == 0 { "device" } else { "normal" };
        let perm = format!(
            "R{}{} {ty}",
            if t.writable { "W" } else { "-" },
            if t.executable { "X" } else { "-" }
        );
        match mapped.last_mut() {
            Some(prev) if prev.end() == va && prev.perm.as_deref() == Some(&perm) => {
                prev.size += size;
            }
            _ => mapped.push(item(1, "mapped", String::new(), va, size, Some(perm))),
        }
    }
    for mut it in mapped {
        let area = areas
            .iter()
            .find(|a| a.contains(Vaddr(it.start)))
            .map_or("outside the layout", |a| a.name);
        let section = s
            .regions
            .iter()
            .find(|r| r.va.0 <= it.start && it.start < r.va.0 + r.size)
            .map(|r| r.name);
        it.label = match section {
            Some(sec) => format!("{sec} {}", it.perm.as_deref().unwrap_or("")),
            None => format!("{area} {}", it.perm.as_deref().unwrap_or("")),
        };
        virt.push(it);
    }
    MemoryMap {
        arch: s.arch,
        physical: phys,
        virtual_: virt,
    }
}

fn item(
    lane: usize,
    kind: &'static str,
    label: String,
    start: u64,
    size: u64,
    perm: Option<String>,
) -> Item {
    Item {
        lane,
        kind,
        label,
        start,
        size: size.max(1),
        perm,
    }
}

fn fill(kind: &str) -> &'static str {
    match kind {
        "ram" => "#e8f1e4",
        "reserved" => "#f4c7c3",
        "image" => "#9fc5e8",
        "dtb" => "#ffe599",
        "module" => "#f9cb9c",
        "tables" => "#b4a7d6",
        "s2-tables" => "#d5a6bd",
        "guest-ram" => "#d9ead3",
        "guest-kernel" | "guest-initrd" | "guest-dtb" => "#b6d7a8",
        "area" => "#eeeeee",
        _ => "#cfe2f3",
    }
}

fn human(n: u64) -> String {
    const UNITS: [(u64, &str); 5] = [
        (1 << 50, "PiB"),
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    for (u, name) in UNITS {
        if n >= u && n.is_multiple_of(u) {
            return format!("{} {name}", n / u);
        }
    }
    for (u, name) in UNITS {
        if n >= u {
            return format!("{:.1} {name}", n as f64 / u as f64);
        }
    }
    format!("{n} B")
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const LANE_W: f64 = 210.0;
const AXIS_W: f64 = 150.0;
const TOP: f64 = 60.0;

/// Draws one panel at `x0`; returns its height.
fn panel(out: &mut String, name: &str, items: &[Item], x0: f64) -> f64 {
    // Rows between consecutive boundaries of all boxes; a row no box covers
    // is a gap.
    let mut bounds: BTreeSet<u64> = BTreeSet::new();
    for it in items {
        bounds.insert(it.start);
        bounds.insert(it.end());
    }
    let bounds: Vec<u64> = bounds.into_iter().collect();
    let mut ys = Vec::with_capacity(bounds.len());
    let mut y = TOP + 10.0;
    for pair in bounds.windows(2) {
        ys.push(y);
        let (a, b) = (pair[0], pair[1]);
        let covered = items.iter().any(|it| it.start <= a && b <= it.end());
        let h = if covered {
            let pages = ((b - a) as f64 / PAGE_SIZE as f64).max(1.0);
            (16.0 + 2.2 * pages.log2()).clamp(16.0, 70.0)
        } else {
            14.0
        };
        if !covered {
            let _ = writeln!(
                out,
                r##"<text class="gap" x="{:.1}" y="{:.1}" font-size="9" fill="#888">… {} unused …</text>"##,
                x0 + AXIS_W,
                y + 10.0,
                human(b - a)
            );
        }
        y += h;
    }
    ys.push(y);
    let lanes = items.iter().map(|i| i.lane + 1).max().unwrap_or(1);
    let _ = writeln!(
        out,
        r##"<text x="{x0:.1}" y="{:.1}" font-size="15" font-weight="bold">{}</text>"##,
        TOP - 20.0,
        esc(name)
    );
    for (i, b) in bounds.iter().enumerate() {
        let _ = writeln!(
            out,
            r##"<text class="addr" x="{:.1}" y="{:.1}" font-size="9" text-anchor="end" font-family="monospace">{b:#x}</text><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#ccc" stroke-width="0.5"/>"##,
            x0 + AXIS_W - 6.0,
            ys[i] + 3.0,
            x0 + AXIS_W - 4.0,
            ys[i],
            x0 + AXIS_W + lanes as f64 * LANE_W,
            ys[i]
        );
    }
    let y_of = |a: u64| -> f64 {
        let i = bounds.partition_point(|b| *b < a);
        ys[i.min(ys.len() - 1)]
    };
    for it in items {
        // Rounded as printed, so that a box's printed end (y + height)
        // never passes the next box's printed start.
        let round = |y: f64| (y * 10.0).round() / 10.0;
        let (y0, y1) = (round(y_of(it.start)), round(y_of(it.end())));
        let x = x0 + AXIS_W + it.lane as f64 * LANE_W + 2.0;
        let w = LANE_W - 4.0;
        let perm = it
            .perm
            .as_deref()
            .map(|p| format!(r#" data-perm="{}""#, esc(p)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            r##"<g class="item"><rect data-panel="{}" data-kind="{}" data-start="{:#x}" data-size="{:#x}"{perm} x="{x:.1}" y="{y0:.1}" width="{w:.1}" height="{:.1}" fill="{}" stroke="#555" stroke-width="0.6"><title>{}: {:#x}..{:#x} ({})</title></rect>"##,
            if name.starts_with("Physical") {
                "physical"
            } else {
                "virtual"
            },
            it.kind,
            it.start,
            it.size,
            (y1 - y0).max(1.0),
            fill(it.kind),
            esc(&it.label),
            it.start,
            it.end(),
            human(it.size)
        );
        if y1 - y0 >= 12.0 {
            let _ = writeln!(
                out,
                r##"<text x="{:.1}" y="{:.1}" font-size="10">{} · {}</text>"##,
                x + 4.0,
                y0 + 11.0,
                esc(&it.label),
                human(it.size)
            );
        }
        out.push_str("</g>\n");
    }
    y
}

/// The SVG document for a map.
pub fn render(map: &MemoryMap) -> String {
    let mut body = String::new();
    let lanes = |v: &[Item]| v.iter().map(|i| i.lane + 1).max().unwrap_or(1) as f64;
    let pw = AXIS_W + lanes(&map.physical) * LANE_W;
    let h1 = panel(&mut body, "Physical memory", &map.physical, 10.0);
    let h2 = panel(
        &mut body,
        "Virtual layout (hvmm's stage 1, CPU 0)",
        &map.virtual_,
        pw + 40.0,
    );
    let width = pw + 40.0 + AXIS_W + lanes(&map.virtual_) * LANE_W + 20.0;
    let height = h1.max(h2) + 30.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif">"##
    );
    let _ = writeln!(
        out,
        r##"<rect width="100%" height="100%" fill="white"/><text x="10" y="20" font-size="17" font-weight="bold">hvmm memory map ({}) — by address, not to scale</text>"##,
        esc(map.arch)
    );
    out.push_str(&body);
    out.push_str("</svg>\n");
    out
}
