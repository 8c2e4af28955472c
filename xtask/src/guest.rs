//! The test guest (`crates/hvmm-guest`): building it into a raw image
//! (arm64 Image / arm32 zImage), checking the header a loader relies on,
//! and `guest-smoke`: running it directly on QEMU (EL1 / SVC, no
//! hypervisor; QEMU implements PSCI over HVC itself).
//!
//! Outputs go to `$CARGO_TARGET_DIR/guest/<arch>/` (default
//! `target/guest/<arch>/`): `hvmm-guest.bin` (what loaders take) and
//! `hvmm-guest.elf` (symbols).

use crate::qemu::{self, Outcome};
use crate::{root, Arch};
use anyhow::{bail, ensure, Context, Result};
use object::{Object, ObjectSymbol};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Where the guest is linked (its `_start`): see `crates/hvmm-guest/src/arch`.
pub fn link_va(arch: Arch) -> u64 {
    match arch {
        Arch::Arm64 => 0xff80_0000_0000,
        Arch::Arm32 => 0xf000_0000,
    }
}

/// The guest must fit in 2 MiB (one L3 table maps it).
const MAX_GUEST: u64 = 0x20_0000;

/// `$CARGO_TARGET_DIR/guest` or `target/guest`: the guest images and the
/// Linux assets.
pub fn out_root() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("guest"),
        _ => root().join("target").join("guest"),
    }
}

/// A built guest.
#[derive(Debug, Clone)]
pub struct Guest {
    /// The raw image.
    pub bin: PathBuf,
    /// The ELF.
    pub elf: PathBuf,
    /// Bytes it occupies in memory, BSS included (the header's image_size).
    pub mem_size: u64,
}

/// Builds the guest for `arch` (release) and writes the raw image.
pub fn build(arch: Arch) -> Result<Guest> {
    let out = out_root();
    let cargo_target = out.join("cargo");
    let manifest = root().join("crates/hvmm-guest/Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            arch.target(),
            "--manifest-path",
        ])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &cargo_target)
        // The outer cargo's flags are for the host build of xtask.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .context("running cargo to build the guest")?;
    ensure!(
        status.success(),
        "building the {} guest failed ({status})",
        arch.name()
    );

    let elf_path = cargo_target
        .join(arch.target())
        .join("release")
        .join("hvmm-guest");
    let elf =
        std::fs::read(&elf_path).with_context(|| format!("reading {}", elf_path.display()))?;
    let (raw, mem_size) = elf_to_raw(arch, &elf)?;
    check_header(arch, &raw, mem_size)?;
    let dir = out.join(arch.name());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let bin = dir.join("hvmm-guest.bin");
    std::fs::write(&bin, &raw).with_context(|| format!("writing {}", bin.display()))?;
    let elf_copy = dir.join("hvmm-guest.elf");
    std::fs::write(&elf_copy, &elf).with_context(|| format!("writing {}", elf_copy.display()))?;
    Ok(Guest {
        bin,
        elf: elf_copy,
        mem_size,
    })
}

/// The file-backed allocated sections laid out from `_start`, padded to
/// 4 KiB; and `_end - _start`.
fn elf_to_raw(arch: Arch, elf: &[u8]) -> Result<(Vec<u8>, u64)> {
    let file = object::File::parse(elf).context("parsing the guest ELF")?;
    let sym = |name: &str| -> Result<u64> {
        file.symbols()
            .find(|s| s.name() == Ok(name))
            .map(|s| s.address())
            .with_context(|| format!("symbol {name} missing from the guest"))
    };
    let (start, end) = (sym("_start")?, sym("_end")?);
    ensure!(
        start == link_va(arch),
        "_start is at {start:#x}, expected {:#x}",
        link_va(arch)
    );
    ensure!(
        end > start && end - start <= MAX_GUEST,
        "guest size {:#x} exceeds 2 MiB",
        end - start
    );
    let raw = crate::image::sections_to_raw(&file, start, end, "guest")?;
    Ok((raw, end - start))
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn le64(b: &[u8], off: usize) -> u64 {
    u64::from(le32(b, off)) | (u64::from(le32(b, off + 4)) << 32)
}

/// The arm64 Image header (text_offset 0, image_size, flags 0xa: little
/// endian, 4 KiB pages, anywhere in RAM) or the arm32 zImage header.
fn check_header(arch: Arch, raw: &[u8], mem_size: u64) -> Result<()> {
    ensure!(raw.len() >= 0x1000, "guest shorter than one page");
    match arch {
        Arch::Arm64 => {
            ensure!(&raw[0x38..0x3c] == b"ARM\x64", "arm64 Image magic missing");
            ensure!(le64(raw, 8) == 0, "text_offset is not 0");
            ensure!(
                le64(raw, 16) == mem_size,
                "image_size {:#x} != {mem_size:#x}",
                le64(raw, 16)
            );
            ensure!(le64(raw, 24) == 0xa, "flags are not 0xa");
        }
        Arch::Arm32 => {
            ensure!(le32(raw, 0x24) == 0x016f_2818, "zImage magic missing");
            ensure!(le32(raw, 0x28) == 0, "zImage start is not 0");
            ensure!(
                le32(raw, 0x2c) as usize == raw.len(),
                "zImage end {:#x} != file size {:#x}",
                le32(raw, 0x2c),
                raw.len()
            );
        }
    }
    ensure!(
        raw.len() as u64 <= mem_size,
        "raw guest larger than its image_size"
    );
    Ok(())
}

/// `cargo xtask guest-smoke` options.
#[derive(clap::Args, Debug, Clone)]
pub struct SmokeArgs {
    /// Architecture.
    #[arg(long, value_enum, default_value = "arm64")]
    pub arch: Arch,
    /// Number of CPUs.
    #[arg(long, default_value_t = 2)]
    pub smp: u32,
    /// Run one configuration with this command line instead of the set.
    #[arg(long)]
    pub bootargs: Option<String>,
    /// Print the console of every run.
    #[arg(long)]
    pub verbose: bool,
    /// Kill QEMU and fail after this many seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

/// One smoke configuration and what each check must say in it.
struct Case {
    name: &'static str,
    ram: &'static str,
    bootargs: String,
    /// `(check, word)`: the word (`ok`, `skipped`) the check's line must carry.
    expect: Vec<(&'static str, &'static str)>,
}

/// An address of QEMU `virt` where nothing is mapped: QEMU itself answers
/// an access with a synchronous external abort (no hypervisor needed).
const UNASSIGNED_IPA: u64 = 0x0b00_0000;
/// A RAM page for `hvmm.wp` (QEMU answers the service with NOT_SUPPORTED).
const WP_IPA: u64 = 0x4f00_0000;

fn cases(arch: Arch) -> Vec<Case> {
    let mut v = vec![
        Case {
            name: "plain (no hvmm bootargs)",
            ram: "256M",
            bootargs: String::new(),
            expect: vec![
                ("ram", "ok"),
                ("probe", "skipped"),
                ("device", "ok"),
                ("wp", "skipped"),
                ("psci", "ok"),
            ],
        },
        Case {
            name: "probe + wp bootargs (QEMU's own external abort; wp NOT_SUPPORTED)",
            ram: "256M",
            bootargs: format!("hvmm.probe={UNASSIGNED_IPA:#x} hvmm.wp={WP_IPA:#x}"),
            expect: vec![
                ("ram", "ok"),
                ("probe", "ok"),
                ("device", "ok"),
                ("wp", "skipped"),
                ("psci", "ok"),
            ],
        },
    ];
    v.push(Case {
        name: "wp self-test (the guest's own stage 1 write-protects the page mid-loop)",
        ram: "256M",
        bootargs: format!("hvmm.wp={WP_IPA:#x} hvmm.wp-selftest"),
        expect: vec![
            ("ram", "ok"),
            ("probe", "skipped"),
            ("device", "ok"),
            ("wp", "ok"),
            ("psci", "ok"),
        ],
    });
    if arch == Arch::Arm32 {
        v.push(Case {
            name: "4 GiB of RAM (above the 32-bit identity map: windows)",
            ram: "4G",
            bootargs: String::new(),
            expect: vec![
                ("ram", "ok"),
                ("probe", "skipped"),
                ("device", "ok"),
                ("wp", "skipped"),
                ("psci", "ok"),
            ],
        });
    }
    v
}

/// Runs the guest on QEMU without a hypervisor (`-M virt`, EL1 / SVC).
pub fn run(
    arch: Arch,
    guest: &Guest,
    smp: u32,
    ram: &str,
    bootargs: &str,
    timeout: u64,
) -> Result<Outcome> {
    let (bin, machine, cpu) = match arch {
        Arch::Arm64 => ("qemu-system-aarch64", "virt", "cortex-a57"),
        Arch::Arm32 => (
            "qemu-system-arm",
            if qemu::parse_size(ram)? > 3 << 30 {
                "virt,highmem=on"
            } else {
                "virt,highmem=off"
            },
            "cortex-a15",
        ),
    };
    let mut cmd = Command::new(bin);
    cmd.args(["-M", machine, "-cpu", cpu, "-m", ram, "-smp"])
        .arg(smp.to_string())
        .args(["-nographic", "-no-reboot", "-kernel"])
        .arg(&guest.bin);
    if !bootargs.is_empty() {
        cmd.arg("-append").arg(bootargs);
    }
    qemu::run(&mut cmd, Some(Duration::from_secs(timeout)), false)
}

/// What is wrong with a run, if anything.
fn judge(o: &Outcome, expect: &[(&str, &str)], smp: u32) -> Vec<String> {
    let mut bad = Vec::new();
    if o.timed_out {
        bad.push("QEMU did not exit by itself (killed at the time limit)".to_string());
    } else if o.code != Some(0) {
        bad.push(format!("QEMU exited with {:?}, not 0", o.code));
    }
    let lines: Vec<&str> = o.output.lines().map(str::trim_end).collect();
    for &(check, word) in expect {
        let prefix = format!("hvmm-guest: {check}: ");
        match lines.iter().find(|l| l.starts_with(&prefix)) {
            None => bad.push(format!("no line for check {check}")),
            Some(l) if !l[prefix.len()..].starts_with(word) => {
                bad.push(format!("check {check} should be {word}: {l}"))
            }
            Some(_) => {}
        }
    }
    for want in ["hvmm-guest: PASS", "hvmm-guest: SYSTEM_OFF"] {
        if !lines.contains(&want) {
            bad.push(format!("no {want:?} line"));
        }
    }
    let up = lines
        .iter()
        .filter(|l| l.starts_with("hvmm-guest: cpu ") && l.contains(" up"))
        .count();
    if up != smp.saturating_sub(1) as usize {
        bad.push(format!(
            "{up} secondary CPU(s) reported up, expected {}",
            smp - 1
        ));
    }
    bad
}

/// `cargo xtask guest-build`.
pub fn build_command(arch: Arch) -> Result<i32> {
    let g = build(arch)?;
    println!(
        "{} ({} bytes in memory; ELF {})",
        g.bin.display(),
        g.mem_size,
        g.elf.display()
    );
    Ok(0)
}

/// `cargo xtask guest-smoke`: every configuration must pass.
pub fn smoke(a: &SmokeArgs) -> Result<i32> {
    let guest = build(a.arch)?;
    let list = match &a.bootargs {
        Some(b) => vec![Case {
            name: "custom bootargs",
            ram: "256M",
            bootargs: b.clone(),
            expect: vec![("ram", "ok"), ("device", "ok"), ("psci", "ok")],
        }],
        None => cases(a.arch),
    };
    let mut failed = 0;
    for case in &list {
        let o = run(a.arch, &guest, a.smp, case.ram, &case.bootargs, a.timeout)?;
        let bad = judge(&o, &case.expect, a.smp);
        let verdict = if bad.is_empty() { "pass" } else { "FAIL" };
        println!(
            "guest-smoke {} {}: {verdict} in {:.2} s",
            a.arch.name(),
            case.name,
            o.elapsed.as_secs_f64()
        );
        if a.verbose || !bad.is_empty() {
            println!("  $ {}", o.command);
            for l in o.output.lines() {
                println!("  | {}", l.trim_end());
            }
        }
        for b in &bad {
            println!("  - {b}");
        }
        failed += usize::from(!bad.is_empty());
    }
    if failed > 0 {
        bail!(
            "guest-smoke {}: {failed} of {} configuration(s) failed",
            a.arch.name(),
            list.len()
        );
    }
    println!(
        "guest-smoke {}: {} configuration(s) passed",
        a.arch.name(),
        list.len()
    );
    Ok(0)
}
