//! `hvmm`: boot hvmm on the built-in machine model and show what happened.
//!
//! `cargo run --release` is `hvmm boot` with defaults: arm64, a QEMU-virt-like
//! board with 1 GiB of RAM, GRUB-style untyped modules (a kernel, an initrd
//! and an XSM policy, synthesised), 4 CPUs.

use clap::{Parser, Subcommand, ValueEnum};
use hvmm_boot::model::{self, ArchKind, Loader, ModuleFile, Outcome, Scenario};
use hvmm_boot::report::BootSummary;
use hvmm_bootinfo::ModuleKind;
use serde_json::json;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "hvmm",
    version,
    about = "Boot the hvmm memory-management core on a machine model"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Boot a scenario on the machine model (the default command).
    Boot(BootArgs),
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum ArchArg {
    Arm64,
    Arm32,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum LoaderArg {
    /// QEMU -kernel: no modules.
    Direct,
    /// U-Boot style typed modules.
    Uboot,
    /// GRUB: untyped multiboot,module nodes, guessed by reading them.
    Grub,
}

#[derive(clap::Args, Debug, Default)]
struct BootArgs {
    /// Architecture.
    #[arg(long, value_enum)]
    arch: Option<ArchArg>,
    /// Boot on the memory of this board's device tree: its RAM (/memory)
    /// and reserved ranges (/memreserve/, /reserved-memory), read as Xen
    /// 4.22 reads them. The boot's own tree is built from them (hvmm's UART,
    /// CPUs and modules). Trees whose /memory is missing or empty (the loader
    /// fills it at boot) need --ram.
    #[arg(long, value_name = "FILE")]
    dtb: Option<std::path::PathBuf>,
    /// A RAM bank, e.g. 1G@0x40000000 (repeatable; default 1G@0x40000000,
    /// or the --dtb tree's /memory). With --dtb, --ram replaces the tree's
    /// /memory (or supplies it) as U-Boot's memory fix-up does; the tree's
    /// reserved ranges stay, and the log notes those outside the new RAM.
    #[arg(long, value_name = "SIZE@BASE")]
    ram: Vec<String>,
    /// Physical address the image is loaded at (default: where the loader puts it).
    #[arg(long, value_name = "PA")]
    load_addr: Option<String>,
    /// Which boot loader to imitate.
    #[arg(long, value_enum)]
    loader: Option<LoaderArg>,
    /// A module file, optionally with its kind: FILE[:kernel|ramdisk|xsm] (repeatable).
    #[arg(long, value_name = "FILE[:KIND]")]
    module: Vec<String>,
    /// Number of CPUs.
    #[arg(long, value_name = "N")]
    smp: Option<usize>,
    /// Print the page-table walk of this VA at the end (repeatable).
    #[arg(long, value_name = "VA")]
    dump: Vec<String>,
    /// After the boot, run this many SMP stress iterations per CPU.
    #[arg(long, value_name = "N", default_value_t = 0)]
    stress: u64,
    /// Print the facts as JSON instead of the log.
    #[arg(long)]
    json: bool,
    /// Stop at Active: do not build domain 0 from the boot modules.
    #[arg(long)]
    no_dom0: bool,
    /// Domain 0's RAM, a multiple of 2 MiB (default 128M).
    #[arg(long, value_name = "SIZE")]
    dom0_mem: Option<String>,
    /// arm64's secret-free mode: no direct map; every CPU on its own root
    /// with its own mapcache slots, through which page tables and other RAM
    /// are reached only while a step needs them.
    #[arg(long)]
    no_directmap: bool,
    /// Draw the memory map after the boot into this SVG file: the physical
    /// map (banks, reserved ranges, image, DTB, modules, table pages, domain
    /// 0) and the virtual layout with each mapped run's permissions.
    #[arg(long, value_name = "FILE")]
    svg: Option<std::path::PathBuf>,
}

fn parse_num(s: &str) -> Result<u64, String> {
    let t = s.trim().replace('_', "");
    let (digits, mult) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 1 << 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 1 << 30),
        Some('T' | 't') => (&t[..t.len() - 1], 1 << 40),
        _ => (t.as_str(), 1),
    };
    let v = if let Some(h) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        u64::from_str_radix(h, 16)
    } else {
        digits.parse::<u64>()
    }
    .map_err(|_| format!("'{s}' is not a number (use decimal, 0x-hex, or a K/M/G/T suffix)"))?;
    v.checked_mul(mult)
        .ok_or_else(|| format!("'{s}' does not fit in 64 bits"))
}

fn parse_ram(s: &str) -> Result<(u64, u64), String> {
    let (size, base) = s
        .split_once('@')
        .ok_or_else(|| format!("--ram '{s}': expected SIZE@BASE, e.g. 1G@0x40000000"))?;
    Ok((parse_num(base)?, parse_num(size)?))
}

fn parse_module(s: &str) -> Result<ModuleFile, String> {
    let (path, kind) = match s.rsplit_once(':') {
        Some((p, k)) if matches!(k, "kernel" | "ramdisk" | "initrd" | "xsm") => (p, Some(k)),
        _ => (s, None),
    };
    let data = std::fs::read(path).map_err(|e| format!("--module {path}: {e}"))?;
    if data.is_empty() {
        return Err(format!(
            "--module {path}: the file is empty (a zero-size module is refused)"
        ));
    }
    let kind = match kind {
        Some("kernel") => ModuleKind::Kernel,
        Some("ramdisk" | "initrd") => ModuleKind::Ramdisk,
        Some("xsm") => ModuleKind::XsmPolicy,
        _ => ModuleKind::Unknown,
    };
    Ok(ModuleFile {
        data,
        kind,
        name: path.to_string(),
        addr: None,
    })
}

fn scenario(a: &BootArgs) -> Result<Scenario, String> {
    let arch = match a.arch {
        Some(ArchArg::Arm32) => ArchKind::Arm32,
        _ => ArchKind::Arm64,
    };
    let mut s = Scenario::default_for(arch);
    let pa_bits = if arch == ArchKind::Arm32 { 40 } else { 48 };
    let ram = if a.ram.is_empty() {
        None
    } else {
        Some(
            a.ram
                .iter()
                .map(|r| parse_ram(r))
                .collect::<Result<Vec<_>, _>>()?,
        )
    };
    match (&a.dtb, ram) {
        (Some(path), ram) => {
            let at = |e: &dyn std::fmt::Display| format!("--dtb {}: {e}", path.display());
            let bytes = std::fs::read(path).map_err(|e| at(&e))?;
            let board = model::board_from_dtb(&bytes, pa_bits).map_err(|e| at(&e))?;
            s.use_board(&board, ram).map_err(|e| at(&e))?;
        }
        (None, Some(ram)) => s.ram = ram,
        (None, None) => {}
    }
    if let Some(l) = &a.load_addr {
        s.load_addr = Some(parse_num(l)?);
    }
    s.loader = match a.loader {
        Some(LoaderArg::Direct) => Loader::Direct,
        Some(LoaderArg::Uboot) => Loader::Uboot,
        Some(LoaderArg::Grub) | None => Loader::Grub,
    };
    if !a.module.is_empty() {
        if s.loader == Loader::Direct {
            return Err(
                "--loader direct takes no modules (QEMU -kernel loads the image only)".into(),
            );
        }
        s.modules = a
            .module
            .iter()
            .map(|m| parse_module(m))
            .collect::<Result<_, _>>()?;
        if s.loader == Loader::Uboot {
            if let Some(m) = s.modules.iter().find(|m| m.kind == ModuleKind::Unknown) {
                return Err(format!("--loader uboot needs typed modules: give {} a :kernel, :ramdisk or :xsm suffix", m.name));
            }
        }
    }
    if let Some(n) = a.smp {
        s.cpus = n;
    }
    s.dumps = a
        .dump
        .iter()
        .map(|d| parse_num(d))
        .collect::<Result<_, _>>()?;
    s.stress_iterations = a.stress;
    s.directmap = !a.no_directmap;
    if !a.no_dom0 {
        s.dom0 = Some(hvmm_boot::domain::Dom0Config {
            mem: match &a.dom0_mem {
                Some(m) => parse_num(m).map_err(|e| format!("--dom0-mem: {e}"))?,
                None => hvmm_boot::domain::Dom0Config::default().mem,
            },
            ..Default::default()
        });
    }
    Ok(s)
}

fn kind_name(k: ModuleKind) -> &'static str {
    match k {
        ModuleKind::Kernel => "kernel",
        ModuleKind::Ramdisk => "ramdisk",
        ModuleKind::XsmPolicy => "xsm-policy",
        ModuleKind::GuestDtb => "guest-dtb",
        ModuleKind::Microcode => "microcode",
        ModuleKind::Unknown => "unknown",
    }
}

/// The end-of-boot audit's counts and its first violation.
fn audit_json(a: &hvmm_boot::audit::AuditReport) -> serde_json::Value {
    let first = a.first.map(|v| {
        json!({
            "rule": v.rule.name(), "va": v.va.0, "size": v.size, "pa": v.pa.0,
            "level": v.level, "descriptor": v.pte,
            "perm": hvmm_boot::audit::perm_name(v.write, v.exec),
            "mem": v.mem.map(|m| m.to_string()), "cpu": v.cpu, "region": v.region,
        })
    });
    json!({
        "roots": a.roots, "cpus": a.cpus, "leaves": a.leaves, "pages": a.pages,
        "regions": a.regions, "table_pages": a.table_pages,
        "writable_pages": a.writable_pages, "exec_pages": a.exec_pages,
        "device_pages": a.device_pages, "slot_pages": a.slot_pages, "guards": a.guards,
        "tables_writable": a.tables_writable, "tables_rule": a.tables_rule,
        "allowed_ram_rule": a.allowed_ram_rule, "table_maps": a.table_maps,
        "violations": a.violations,
        "first": first,
    })
}

fn summary_json(s: &BootSummary) -> serde_json::Value {
    let states = ["EarlyBoot", "Boot", "SmpBoot", "Active"];
    json!({
        "arch": s.arch,
        "image_pa": s.image_pa.map(|p| p.0),
        "image_size": s.image_size,
        "dtb_pa": s.dtb_pa.0,
        "ram": s.banks.iter().map(|(b, sz)| json!({"base": b.0, "size": sz})).collect::<Vec<_>>(),
        "empty_banks_skipped": s.empty_banks,
        "reserved": s.reserved.iter().map(|r| json!({
            "base": r.start.0, "size": r.size,
            "source": match r.source {
                hvmm_bootinfo::ReservedSource::MemReserve => "memreserve",
                hvmm_bootinfo::ReservedSource::ReservedMemory => "reserved-memory",
            },
            "no_map": r.no_map, "in_ram": r.in_ram,
        })).collect::<Vec<_>>(),
        "modules": s.modules.iter().map(|m| json!({
            "start": m.start.0, "size": m.size, "kind": kind_name(m.kind),
            "source": match m.source {
                hvmm_bootinfo::KindSource::Typed => "typed",
                hvmm_bootinfo::KindSource::Guessed { read: false } => "guessed",
                hvmm_bootinfo::KindSource::Guessed { read: true } => "guessed-by-reading",
            },
        })).collect::<Vec<_>>(),
        "early_copies": s.early_copies.iter().map(|(pa, st, img, pmap)| json!({
            "pa": pa.0, "state": st.name(), "image_maps": img, "pmap_maps": pmap,
        })).collect::<Vec<_>>(),
        "regions": s.regions.iter().map(|r| json!({
            "name": r.name, "va": r.va.0, "pa": r.pa.0, "size": r.size, "writable": r.writable,
        })).collect::<Vec<_>>(),
        "phases": s.phases.iter().enumerate().map(|(i, p)| json!({
            "state": states[i],
            "table_maps": {"image": p.access.image, "pmap": p.access.pmap, "directmap": p.access.directmap, "domain_page": p.access.domain_page},
            "engine_calls": p.calls,
            "leaves": p.updates.leaves,
            "tables_created": p.updates.tables_created,
            "tables_freed": p.updates.tables_freed,
            "tlb_invalidations": p.updates.tlb_invalidations,
            "slot_tlb_invalidations": p.access.slot_tlbi,
        })).collect::<Vec<_>>(),
        "secret_free": s.secret_free,
        "cpus": s.cpus,
        "table_pages": s.table_pages,
        "verified_pages": s.verified_pages,
        "audit": s.audit.as_ref().map(audit_json),
        "free_pages": s.free_pages,
        "state": s.state.map(|x| x.name()),
    })
}

fn report(o: &Outcome, notes: &[String], json_out: bool) -> ExitCode {
    let c = o.machine.counters();
    let ok = o.ok();
    if json_out {
        let (summary, error) = match &o.result {
            Ok(s) => (summary_json(s), serde_json::Value::Null),
            Err(f) => (
                summary_json(&f.summary),
                json!({
                    "step": f.error.step.name(),
                    "state": f.error.state.name(),
                    "message": f.error.message.as_str(),
                    "syndrome": f.error.fault.map(|x| x.syndrome()),
                    "fault_va": f.error.fault.map(|x| x.va.0),
                }),
            ),
        };
        let v = json!({
            "ok": ok,
            "loader_notes": notes,
            "summary": summary,
            "error": error,
            "dom0": o.result.as_ref().ok().and_then(|s| s.dom0).map(|d| json!({
                "ram": [d.ram.0 .0, d.ram.1], "kernel": [d.kernel.0 .0, d.kernel.1],
                "entry": d.entry.0, "dtb": [d.dtb.0 .0, d.dtb.1], "initrd": [d.initrd.0 .0, d.initrd.1],
                "devices": d.devices, "p2m_root": d.p2m_root.0, "vmid": d.vmid,
                "pool_used": d.pool_used, "pool_pages": d.pool_pages, "leaves": d.leaves,
                "checked_pages": d.checked_pages,
            })),
            "stress": match &o.stress {
                None => serde_json::Value::Null,
                Some(Ok(r)) => json!({"cpus": r.cpus, "iterations": r.iterations, "updates": r.updates, "checks": r.checks, "domain_maps": r.domain_maps}),
                Some(Err(e)) => json!({"error": e.to_string()}),
            },
            "model": {
                "stale_tlb_entries": o.stale.len(),
                "bbm_violations": o.bbm.len(),
                "root_switch_hazards": o.root_switches.len(),
                "tlb_conflict_aborts": o.conflicts.len(),
                "descriptor_writes": c.pte_writes,
                "tlbi_va": c.tlbi_va, "tlbi_va_local": c.tlbi_va_local,
                "tlbi_all": c.tlbi_all, "tlbi_all_local": c.tlbi_all_local,
                "dsb": c.dsb, "isb": c.isb, "at": c.at,
            },
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print!("{}", o.log);
        println!("(XEN) model: descriptor writes {}, TLBI by VA {} (+{} local), TLBI all {} (+{} local), DSB {}, ISB {}, AT {}", c.pte_writes, c.tlbi_va, c.tlbi_va_local, c.tlbi_all, c.tlbi_all_local, c.dsb, c.isb, c.at);
        println!(
            "(XEN) model checks: {} stale TLB entries, {} break-before-make violations, {} hazardous root switches, {} TLB conflict aborts",
            o.stale.len(),
            o.bbm.len(),
            o.root_switches.len(),
            o.conflicts.len()
        );
        for s in o.stale.iter().take(5) {
            println!("(XEN)   stale: {s:?}");
        }
        for b in o.bbm.iter().take(5) {
            println!("(XEN)   BBM: {b:?}");
        }
        for r in o.root_switches.iter().take(5) {
            println!(
                "(XEN)   root switch: CPU {} to {}: VA {} cached {:#x} bytes -> {}, new tables level {} -> {} ({:?})",
                r.cpu, r.root, r.va, r.cached.size, r.cached.pa, r.fresh.level, r.fresh.pa, r.reason
            );
        }
        if let Err(f) = &o.result {
            eprintln!("hvmm: {}", f.error);
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Boot(a)) => a,
        None => BootArgs::default(),
    };
    let s = match scenario(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hvmm: {e}");
            return ExitCode::from(2);
        }
    };
    match model::run(&s) {
        Ok(o) => {
            if let Some(path) = &args.svg {
                let picture = hvmm_boot::svg::render(&hvmm_boot::svg::memory_map(&o));
                if let Err(e) = std::fs::write(path, picture) {
                    eprintln!("hvmm: --svg {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            }
            report(&o, &s.notes, args.json)
        }
        Err(e) => {
            eprintln!("hvmm: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_sizes_parse() {
        assert_eq!(parse_num("1G"), Ok(1 << 30));
        assert_eq!(parse_num("0x4000_0000"), Ok(0x4000_0000));
        assert_eq!(parse_num("512M"), Ok(512 << 20));
        assert!(parse_num("lots").is_err());
        assert!(parse_num("99999999999T").is_err());
        assert_eq!(parse_ram("1G@0x40000000"), Ok((0x4000_0000, 1 << 30)));
        assert!(parse_ram("1G").is_err());
    }
}
