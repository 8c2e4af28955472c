//! `hvmm boot --svg`: the picture is checked against the boot's facts. The
//! SVG is parsed as XML; every fact of the summary (RAM banks, reserved
//! ranges, the image, the DTB, the modules, domain 0's memory) must be a box
//! with its exact address and size; every page-table page the model's own
//! translation goes through for the boot's regions must lie in a table box
//! or in the image; every region the boot verified must be covered by a
//! mapped box with its permissions; boxes are ordered by address. A picture
//! with a fact removed or a permission changed fails the same checks.

use hvmm::{Vaddr, PAGE_SIZE};
use hvmm_boot::domain::Dom0Config;
use hvmm_boot::model::{run, ArchKind, Outcome, ReservedRegion, Scenario};
use hvmm_boot::svg::{memory_map, render};

#[derive(Debug, Clone, PartialEq)]
struct Box_ {
    panel: String,
    kind: String,
    start: u64,
    size: u64,
    perm: Option<String>,
    y: f64,
    height: f64,
    x: f64,
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex attribute")
}

fn parse(svg: &str) -> Vec<Box_> {
    let doc = roxmltree::Document::parse(svg).expect("well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert!(root.attribute("width").is_some() && root.attribute("viewBox").is_some());
    doc.descendants()
        .filter(|n| n.has_tag_name("rect") && n.attribute("data-kind").is_some())
        .map(|n| {
            let f = |a: &str| n.attribute(a).expect(a).parse::<f64>().expect(a);
            Box_ {
                panel: n.attribute("data-panel").expect("panel").to_string(),
                kind: n.attribute("data-kind").unwrap().to_string(),
                start: hex(n.attribute("data-start").expect("start")),
                size: hex(n.attribute("data-size").expect("size")),
                perm: n.attribute("data-perm").map(str::to_string),
                y: f("y"),
                height: f("height"),
                x: f("x"),
            }
        })
        .collect()
}

/// Checks a picture against a boot; returns the first disagreement.
fn check(o: &Outcome, svg: &str) -> Result<(), String> {
    let s = o.result.as_ref().map_err(|f| f.error.to_string())?;
    let boxes = parse(svg);
    let has = |panel: &str, kind: &str, start: u64, size: u64| {
        boxes
            .iter()
            .any(|b| b.panel == panel && b.kind == kind && b.start == start && b.size == size)
    };
    let within = |kinds: &[&str], pa: u64| {
        boxes.iter().any(|b| {
            b.panel == "physical"
                && kinds.contains(&b.kind.as_str())
                && b.start <= pa
                && pa < b.start + b.size
        })
    };
    for (base, size) in s.banks.iter() {
        if !has("physical", "ram", base.0, *size) {
            return Err(format!("RAM bank {base} missing"));
        }
    }
    for r in s.reserved.iter() {
        if !has("physical", "reserved", r.start.0, r.size) {
            return Err(format!("reserved range {} missing", r.start));
        }
    }
    let image = s.image_pa.expect("image placed");
    if !has("physical", "image", image.0, s.image_size) {
        return Err("image missing".into());
    }
    if !has("physical", "dtb", s.dtb_pa.0, o.placement.dtb.1) {
        return Err("DTB missing".into());
    }
    for m in s.modules.iter() {
        if !has("physical", "module", m.start.0, m.size) {
            return Err(format!("module at {} missing", m.start));
        }
    }
    if let Some(d) = &s.dom0 {
        for (kind, (pa, n)) in [
            ("guest-ram", d.ram),
            ("guest-kernel", d.kernel),
            ("guest-initrd", d.initrd),
            ("guest-dtb", d.dtb),
        ] {
            if !has("physical", kind, pa.0, n) {
                return Err(format!("dom0 {kind} missing"));
            }
        }
        if !within(&["s2-tables"], d.p2m_root.0) {
            return Err("dom0's stage-2 root not in a stage-2 table box".into());
        }
    }
    // The model's translation of every verified region's pages: the leaf
    // table it reads must be drawn, and the page covered by a mapped box
    // with the region's write permission.
    for r in s.regions.iter() {
        for i in (0..r.size / PAGE_SIZE).step_by(7) {
            let va = r.va.0 + i * PAGE_SIZE;
            if hvmm_boot::ImageLayout::model().stacks.is_guard(Vaddr(va)) {
                // A stack's guard page, unmapped on purpose.
                continue;
            }
            let t = o.machine.walk(0, Vaddr(va)).map_err(|f| format!("{f:?}"))?;
            let table = t.descriptor_pa.0 & !(PAGE_SIZE - 1);
            if !within(&["tables", "image"], table) {
                return Err(format!("table page {table:#x} of {va:#x} not drawn"));
            }
            let Some(b) = boxes.iter().find(|b| {
                b.panel == "virtual" && b.kind == "mapped" && b.start <= va && va < b.start + b.size
            }) else {
                return Err(format!("{} page {va:#x} not in a mapped box", r.name));
            };
            let perm = b.perm.as_deref().unwrap_or("");
            let w = perm.as_bytes().get(1) == Some(&b'W');
            let x = perm.as_bytes().get(2) == Some(&b'X');
            if w != r.writable || w != t.writable || x != t.executable {
                return Err(format!("{} page {va:#x} drawn as {perm}", r.name));
            }
        }
    }
    // Ordered by address in each column, no overlap in a column.
    for panel in ["physical", "virtual"] {
        let mut col: Vec<&Box_> = boxes.iter().filter(|b| b.panel == panel).collect();
        col.sort_by_key(|b| (b.x as i64, b.start));
        for w in col.windows(2) {
            let (a, b) = (w[0], w[1]);
            if a.x == b.x && a.start + a.size <= b.start && a.y + a.height > b.y + 0.01 {
                return Err(format!(
                    "{panel} boxes at {:#x} and {:#x} out of order",
                    a.start, b.start
                ));
            }
            if a.height <= 0.0 {
                return Err(format!("empty box at {:#x}", a.start));
            }
        }
    }
    Ok(())
}

fn scenario(arch: ArchKind) -> Scenario {
    let mut s = Scenario::default_for(arch);
    s.ram.push((0x1_0000_0000, 512 << 20));
    s.reserved
        .push(ReservedRegion::no_map(0x4800_0000, 2 << 20));
    s.reserved
        .push(ReservedRegion::memreserve(0x4a00_0000, 64 << 10));
    s.dom0 = Some(Dom0Config::default());
    s
}

#[test]
fn the_svg_draws_every_fact_of_the_boot_on_both_architectures() {
    for arch in [ArchKind::Arm64, ArchKind::Arm32] {
        let o = run(&scenario(arch)).expect("scenario");
        if let Err(f) = &o.result {
            panic!("{arch:?}: {}\n{}", f.error, o.log);
        }
        let svg = render(&memory_map(&o));
        check(&o, &svg).unwrap_or_else(|e| panic!("{arch:?}: {e}"));
        let boxes = parse(&svg);
        assert!(
            boxes.iter().any(|b| b.kind == "tables"),
            "{arch:?}: no table pages drawn"
        );
        assert!(boxes
            .iter()
            .any(|b| b.perm.as_deref() == Some("R-X normal")));
        assert!(boxes
            .iter()
            .any(|b| b.perm.as_deref().is_some_and(|p| p.ends_with("device"))));
    }
}

#[test]
fn a_picture_that_disagrees_with_the_boot_is_caught() {
    let o = run(&scenario(ArchKind::Arm64)).expect("scenario");
    let good = render(&memory_map(&o));
    check(&o, &good).expect("the real picture passes");
    // A module dropped.
    let mut map = memory_map(&o);
    let i = map
        .physical
        .iter()
        .position(|b| b.kind == "module")
        .unwrap();
    map.physical.remove(i);
    assert!(check(&o, &render(&map)).unwrap_err().contains("module"));
    // Text drawn writable.
    let mut map = memory_map(&o);
    for b in map.virtual_.iter_mut() {
        if b.perm.as_deref() == Some("R-X normal") {
            b.perm = Some("RWX normal".into());
        }
    }
    assert!(check(&o, &render(&map))
        .unwrap_err()
        .contains("drawn as RWX"));
    // The table pages left out.
    let mut map = memory_map(&o);
    map.physical.retain(|b| b.kind != "tables");
    assert!(check(&o, &render(&map)).unwrap_err().contains("table page"));
    // A reserved range moved.
    let mut map = memory_map(&o);
    let r = map
        .physical
        .iter_mut()
        .find(|b| b.kind == "reserved")
        .unwrap();
    r.start += PAGE_SIZE;
    assert!(check(&o, &render(&map)).unwrap_err().contains("reserved"));
}
