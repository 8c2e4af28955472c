//! The boot log on QEMU and on the machine model, for the same board, the
//! same image layout and the same load address, must agree line for line:
//! the same modules, layout, phases, table-access counts and addresses.
//!
//! The board is QEMU's own `virt` DTB (dumped with `dumpdtb=`, the run's
//! bootargs added), the image layout is read from the image's ELF symbols,
//! and both boots are direct (`-kernel`) with 4 CPUs; on arm64 in both
//! modes (the direct map and the secret-free mode).

use crate::image::{self, Image};
use crate::qemu::{self, QemuArgs};
use crate::Arch;
use anyhow::{bail, ensure, Context, Result};
use hvmm::Vaddr;
use hvmm_boot::image::{ImageLayout, Stacks, StaticTables};
use hvmm_boot::model::{ArchKind, Scenario};
use object::{Object, ObjectSymbol};
use std::collections::HashMap;

/// The image's layout, from its ELF symbols (the names the linker scripts define).
pub fn layout_from_elf(elf: &[u8]) -> Result<ImageLayout> {
    let file = object::File::parse(elf).context("parsing the image ELF")?;
    let syms: HashMap<String, u64> = file
        .symbols()
        .filter_map(|s| Some((s.name().ok()?.to_string(), s.address())))
        .collect();
    let get = |n: &str| -> Result<Vaddr> {
        syms.get(n)
            .map(|&a| Vaddr(a))
            .with_context(|| format!("symbol {n} missing from the image ELF"))
    };
    let tables = StaticTables {
        boot_root: get("boot_root")?,
        boot_l2: get("boot_l2")?,
        idmap_record: get("boot_idmap")?,
        root: get("runtime_root")?,
        l1: get("runtime_l1").ok(),
        l2: get("runtime_l2")?,
        image_l3: get("runtime_l3")?,
        fixmap_l3: get("boot_fixmap_l3")?,
        first: get("__pgtables_start")?,
        last: get("__pgtables_end")?,
    };
    // The stack slots: `hvmm_stack_slot` is an absolute symbol (its value is
    // the slot size), the slots run from `boot_stacks` to `boot_stacks_end`.
    let first = get("boot_stacks")?;
    let slot = get("hvmm_stack_slot")?.0;
    ensure!(slot > 0, "the image ELF's hvmm_stack_slot is zero");
    let stacks = Stacks {
        first,
        slot,
        cpus: (get("boot_stacks_end")?
            .0
            .checked_sub(first.0)
            .context("boot_stacks_end lies before boot_stacks")?
            / slot) as usize,
    };
    let layout = ImageLayout::from_bounds(
        get("_start")?,
        get("_etext")?,
        get("_erodata")?,
        get("__init_end")?,
        get("_end")?,
        tables,
        stacks,
    );
    layout
        .check()
        .map_err(|why| anyhow::anyhow!("the image ELF's layout: {why}"))?;
    Ok(layout)
}

fn xen_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.starts_with("(XEN)")).collect()
}

/// Boots `arch` on QEMU and on the model and compares the `(XEN)` lines;
/// with `secret_free` (arm64), both in the secret-free mode
/// (`hvmm.directmap=off` on QEMU, `Scenario::directmap` off on the model).
pub fn compare(arch: Arch, img: &Image, secret_free: bool) -> Result<usize> {
    let dir = std::env::temp_dir().join(format!(
        "hvmm-compare-{}-{}",
        arch.name(),
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)?;
    let bootargs = secret_free.then_some("hvmm.directmap=off");
    let args = QemuArgs {
        smp: 4,
        bootargs: bootargs.map(String::from),
        ..qemu::base_args(arch)
    };
    // QEMU's own tree, as this run gets it (bootargs in /chosen).
    let dtb = qemu::dump_direct_dtb(&args, img, &dir)
        .and_then(|p| std::fs::read(&p).with_context(|| format!("reading {}", p.display())));
    let _ = std::fs::remove_dir_all(&dir);
    let dtb = dtb?;

    let hw = qemu::run_image(&args, img, false)?;
    ensure!(hw.code == Some(0), "the QEMU boot failed:\n{}", hw.output);

    let elf = std::fs::read(&img.elf).with_context(|| format!("reading {}", img.elf.display()))?;
    let mut s = Scenario::default_for(match arch {
        Arch::Arm64 => ArchKind::Arm64,
        Arch::Arm32 => ArchKind::Arm32,
    });
    s.loader = hvmm_boot::model::Loader::Direct;
    s.modules.clear();
    s.cpus = 4;
    s.dtb_override = Some(dtb);
    s.directmap = !secret_free;
    s.image = Some(layout_from_elf(&elf)?);
    let model = hvmm_boot::model::run(&s).map_err(|e| anyhow::anyhow!("model: {e}"))?;
    ensure!(model.ok(), "the model boot failed:\n{}", model.log);

    let a = xen_lines(&hw.output);
    let b = xen_lines(&model.log);
    for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
        if x != y {
            bail!("line {} differs:\n  QEMU : {x}\n  model: {y}", i + 1);
        }
    }
    ensure!(
        a.len() == b.len(),
        "QEMU printed {} (XEN) lines, the model {}; the first extra one:\n  {}",
        a.len(),
        b.len(),
        a.get(b.len()).or(b.get(a.len())).unwrap_or(&"")
    );
    ensure!(
        a.len() > 30,
        "only {} (XEN) lines: nothing much compared",
        a.len()
    );
    Ok(a.len())
}

/// `cargo xtask compare-logs`: both architectures (or one).
pub fn compare_command(only: Option<Arch>) -> Result<i32> {
    let arches = match only {
        Some(a) => vec![a],
        None => vec![Arch::Arm64, Arch::Arm32],
    };
    let mut failed = 0;
    for arch in arches {
        let img = image::build(arch)?;
        let modes: &[bool] = match arch {
            Arch::Arm64 => &[false, true],
            Arch::Arm32 => &[false],
        };
        for &secret_free in modes {
            let mode = if secret_free { " secret-free" } else { "" };
            match compare(arch, &img, secret_free) {
                Ok(n) => println!("PASS {}{mode} boot logs agree ({n} lines)", arch.name()),
                Err(e) => {
                    failed += 1;
                    println!("FAIL {}{mode} boot logs: {e:#}", arch.name());
                }
            }
        }
    }
    Ok(if failed == 0 { 0 } else { 1 })
}
