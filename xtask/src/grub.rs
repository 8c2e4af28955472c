//! Booting hvmm through the real GRUB and the real UEFI firmware, the path
//! on which Xen crashed: Debian's `qemu-efi-aarch64` firmware runs a GRUB
//! EFI binary from an ESP; its `grub.cfg` loads hvmm with `xen_hypervisor`
//! and three untyped `xen_module`s (a kernel, an initrd and an XSM policy),
//! so hvmm must guess their kinds by reading them in early boot.
//!
//! GRUB's arm64-efi modules come from Debian's `grub-efi-arm64-bin`, an
//! arm64-only package: it is downloaded with apt's architecture options
//! (apt's state kept under the cache directory, not the system's),
//! extracted with `dpkg-deb -x`, and turned into `BOOTAA64.EFI` with the
//! host's `grub-mkimage` (`grub-common`). Everything is cached under
//! `$CARGO_TARGET_DIR/hvmm-image/grub-efi/`; a machine without the cache
//! fetches it (`apt-get update` included) and fails loudly if it cannot.
//!
//! The ESP is a directory served by QEMU's vvfat (`-drive file=fat:DIR`):
//! `EFI/BOOT/BOOTAA64.EFI`, `boot/grub/grub.cfg`, `hvmm.efi`, `kernel`,
//! `initrd`, `xsm.pol`.

use crate::image::{self, Image};
use crate::qemu::{self, Outcome, Prepared, QemuArgs};
use crate::{Arch, Loader};
use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The UEFI firmware (Debian's `qemu-efi-aarch64`).
pub const FIRMWARE: &str = "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd";
/// The Debian package holding GRUB's arm64-efi modules.
const GRUB_PACKAGE: &str = "grub-efi-arm64-bin";
/// GRUB modules built into `BOOTAA64.EFI` (xen_boot provides
/// `xen_hypervisor` / `xen_module`).
const GRUB_MODULES: &[&str] = &[
    "part_gpt",
    "part_msdos",
    "fat",
    "normal",
    "configfile",
    "xen_boot",
    "linux",
    "fdt",
    "search",
    "echo",
    "halt",
    "reboot",
];
/// Default hypervisor command line of a GRUB boot.
pub const DEFAULT_BOOTARGS: &str = "console=dtuart hvmm.test=grub";
/// What GRUB prints once every boot attempt failed: the image did not run
/// (or returned). The run is stopped shortly after it.
pub const GRUB_GAVE_UP: &str = "Press any key to continue";
/// GRUB's refusal of an arm64 image without the PE/COFF header.
pub const GRUB_PLAIN_REFUSED: &str = "plain image kernel not supported";

/// The cache directory.
fn cache_dir() -> PathBuf {
    image::out_root().join("grub-efi")
}

fn run_checked(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("running {what} ({cmd:?})"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// GRUB's arm64-efi module directory, fetched and extracted on first use.
pub fn grub_modules_dir() -> Result<PathBuf> {
    let cache = cache_dir();
    let root = cache.join("root");
    let mods = root.join("usr/lib/grub/arm64-efi");
    if mods.join("xen_boot.mod").is_file() {
        return Ok(mods);
    }
    let apt = cache.join("apt");
    let lists = apt.join("lists");
    let archives = apt.join("cache");
    for d in [lists.join("partial"), archives.join("archives/partial")] {
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    }
    let opts = [
        "-o".to_string(),
        "APT::Architecture=arm64".into(),
        "-o".into(),
        "APT::Architectures::=arm64".into(),
        "-o".into(),
        format!("Dir::State::Lists={}", lists.display()),
        "-o".into(),
        format!("Dir::Cache={}", archives.display()),
        "-o".into(),
        "APT::Sandbox::User=root".into(),
    ];
    eprintln!(
        "xtask: fetching {GRUB_PACKAGE} (arm64) with apt-get into {}",
        apt.display()
    );
    run_checked(
        Command::new("apt-get").args(&opts).args(["-q", "update"]),
        "apt-get update (arm64 package lists)",
    )
    .context("cannot fetch GRUB's arm64-efi modules: apt-get update failed")?;
    let debs = apt.join("debs");
    std::fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    run_checked(
        Command::new("apt-get")
            .args(&opts)
            .args(["-q", "download", GRUB_PACKAGE])
            .current_dir(&debs),
        &format!("apt-get download {GRUB_PACKAGE}"),
    )
    .with_context(|| format!("cannot fetch GRUB's arm64-efi modules ({GRUB_PACKAGE})"))?;
    let deb = std::fs::read_dir(&debs)
        .with_context(|| format!("reading {}", debs.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(GRUB_PACKAGE) && n.ends_with("_arm64.deb"))
        })
        .max()
        .with_context(|| {
            format!(
                "apt-get download left no {GRUB_PACKAGE} .deb in {}",
                debs.display()
            )
        })?;
    let tmp = cache.join(format!("root.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    run_checked(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp),
        "dpkg-deb -x",
    )?;
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&tmp, &root)
        .with_context(|| format!("renaming {} to {}", tmp.display(), root.display()))?;
    ensure!(
        mods.join("xen_boot.mod").is_file(),
        "{} holds no arm64-efi xen_boot.mod",
        deb.display()
    );
    eprintln!("xtask: GRUB arm64-efi modules from {}", deb.display());
    Ok(mods)
}

/// `BOOTAA64.EFI`, built with `grub-mkimage` on first use (cached).
pub fn grub_efi() -> Result<PathBuf> {
    let mods = grub_modules_dir()?;
    let out = cache_dir().join("BOOTAA64.EFI");
    let stamp = cache_dir().join("BOOTAA64.modules");
    let want = GRUB_MODULES.join(" ");
    if out.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
        return Ok(out);
    }
    let tmp = cache_dir().join(format!("BOOTAA64.EFI.tmp-{}", std::process::id()));
    run_checked(
        Command::new("grub-mkimage")
            .args(["-O", "arm64-efi", "-p", "/boot/grub", "-d"])
            .arg(&mods)
            .arg("-o")
            .arg(&tmp)
            .args(GRUB_MODULES),
        "grub-mkimage (grub-common)",
    )?;
    std::fs::rename(&tmp, &out).with_context(|| format!("writing {}", out.display()))?;
    std::fs::write(&stamp, want).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(out)
}

/// The `grub.cfg` of a boot: hvmm as the hypervisor, three untyped modules.
pub fn grub_cfg(bootargs: &str) -> String {
    grub_cfg_with(
        bootargs,
        &[
            ("kernel", Some("console=hvc0 root=/dev/ram0")),
            ("initrd", None),
            ("xsm.pol", None),
        ],
    )
}

/// The `grub.cfg` of a boot with these untyped modules (file name, command
/// line), in order: the first is the kernel.
pub fn grub_cfg_with(bootargs: &str, modules: &[(&str, Option<&str>)]) -> String {
    let mut lines = String::new();
    for (name, args) in modules {
        lines.push_str(&format!("  xen_module /{name}"));
        if let Some(a) = args {
            lines.push_str(&format!(" {a}"));
        }
        lines.push('\n');
    }
    format!(
        "set timeout=0\n\
         set default=0\n\
         menuentry 'hvmm' {{\n\
         \x20 echo 'GRUB: loading hvmm and {} untyped modules'\n\
         \x20 xen_hypervisor /hvmm.efi {bootargs}\n\
         {lines}\
         \x20 echo 'GRUB: booting hvmm'\n\
         \x20 boot\n\
         }}\n",
        modules.len()
    )
}

static RUNS: AtomicU32 = AtomicU32::new(0);

fn write(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}

/// The QEMU command of a GRUB boot of the raw image `bin` (the image is the
/// file GRUB loads as `hvmm.efi`).
pub fn command(a: &QemuArgs, bin: &Path) -> Result<Prepared> {
    ensure!(a.arch == Arch::Arm64, "--loader grub is arm64 only");
    ensure!(
        a.load_addr.is_none() && a.modules_at.is_none(),
        "--loader grub: GRUB and the firmware choose where the image and the modules go \
         (--load-addr and --modules-at do not apply)"
    );
    ensure!(
        Path::new(FIRMWARE).is_file(),
        "{FIRMWARE} missing: run `cargo xtask setup` (package qemu-efi-aarch64)"
    );
    let efi = grub_efi()?;
    let dir = image::out_root().join(format!(
        "run-grub-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let esp = dir.join("esp");
    std::fs::create_dir_all(esp.join("EFI/BOOT"))
        .with_context(|| format!("creating {}", esp.display()))?;
    std::fs::copy(&efi, esp.join("EFI/BOOT/BOOTAA64.EFI")).context("copying BOOTAA64.EFI")?;
    std::fs::copy(bin, esp.join("hvmm.efi")).context("copying the image")?;
    let bootargs = a.bootargs.as_deref().unwrap_or(DEFAULT_BOOTARGS);
    match qemu::guest_modules(a)? {
        // A guest: its modules, untyped, in order (kernel, then initrd).
        Some((mods, hvmm_args)) => {
            let names = ["kernel", "initrd"];
            let cfg: Vec<(&str, Option<&str>)> = names
                .iter()
                .zip(&mods)
                .map(|(n, m)| (*n, m.bootargs))
                .collect();
            let args = format!("{bootargs} {hvmm_args}");
            write(
                &esp.join("boot/grub/grub.cfg"),
                grub_cfg_with(&args, &cfg).as_bytes(),
            )?;
            for (name, m) in names.iter().zip(&mods) {
                write(&esp.join(name), &m.data)?;
            }
        }
        None => {
            write(
                &esp.join("boot/grub/grub.cfg"),
                grub_cfg(bootargs).as_bytes(),
            )?;
            let mods = qemu::synth_modules();
            for (name, m) in ["kernel", "initrd", "xsm.pol"].iter().zip(&mods) {
                write(&esp.join(name), &m.data)?;
            }
        }
    }

    let mut cmd = Command::new("qemu-system-aarch64");
    cmd.args(qemu::machine_args(a, ",acpi=off"));
    if a.gdb {
        cmd.args(["-s", "-S"]);
    }
    cmd.args([
        "-bios",
        FIRMWARE,
        "-boot",
        "menu=on,splash-time=0",
        "-drive",
    ])
    .arg(format!("file=fat:{},format=raw,readonly=on", esp.display()));
    Ok(Prepared {
        cmd,
        workdir: Some(dir),
    })
}

/// Runs a GRUB boot of `bin`; stops QEMU shortly after GRUB gives up.
pub fn run(a: &QemuArgs, bin: &Path, stream: bool) -> Result<Outcome> {
    let mut p = command(a, bin)?;
    let timeout = (!a.gdb).then(|| Duration::from_secs(a.timeout));
    qemu::run_until(
        &mut p.cmd,
        timeout,
        stream,
        Some((&[GRUB_GAVE_UP], Duration::from_millis(300))),
    )
}

/// A copy of the raw image without its PE/COFF header, as a plain (non-EFI)
/// arm64 Image: the first instruction is a NOP instead of the one encoding
/// "MZ", and the PE header offset at 0x3c is 0. Everything else, the Linux
/// Image header included, is unchanged (QEMU's `-kernel` still boots it).
pub fn plain_image(img: &Image) -> Result<PathBuf> {
    let mut raw =
        std::fs::read(&img.bin).with_context(|| format!("reading {}", img.bin.display()))?;
    ensure!(
        raw.len() >= 0x40 && &raw[0..2] == b"MZ",
        "the image has no MZ header"
    );
    raw[0..4].copy_from_slice(&0xd503_201fu32.to_le_bytes()); // nop
    raw[0x3c..0x40].copy_from_slice(&[0; 4]);
    ensure!(
        image::check_header(Arch::Arm64, &raw, img.mem_size).is_err(),
        "the plain copy still passes the PE header check"
    );
    let p = img.bin.with_file_name("hvmm-plain.bin");
    write(&p, &raw)?;
    Ok(p)
}

/// One GRUB case of the matrix.
struct GrubCase {
    name: String,
    args: QemuArgs,
    bin: PathBuf,
    /// `Some(code)`: QEMU must exit with it; `None`: GRUB must give up and
    /// QEMU be stopped.
    code: Option<i32>,
    expect: Vec<String>,
    absent: Vec<String>,
    /// RAM above 4 GiB: some module must be placed there.
    module_high: bool,
}

fn module_above_4g(output: &str) -> bool {
    output.lines().any(|l| {
        l.strip_prefix("(XEN) module ")
            .and_then(|r| r.split_once(": 0x"))
            .and_then(|(_, r)| u64::from_str_radix(&r[..16.min(r.len())], 16).ok())
            .is_some_and(|pa| pa >= 1 << 32)
    })
}

fn cases(img: &Image) -> Result<Vec<GrubCase>> {
    let mut v = Vec::new();
    for (ram, smp) in [("1G", 1), ("1G", 4), ("4G", 1), ("4G", 4)] {
        let mut a = qemu::base_args(Arch::Arm64);
        a.loader = Loader::Grub;
        a.ram = ram.into();
        a.smp = smp;
        v.push(GrubCase {
            name: format!("arm64 grub+uefi ram {ram} smp{smp}"),
            args: a,
            bin: img.bin.clone(),
            code: Some(0),
            expect: vec![
                "hvmm: EFI entry: finding the device tree, exiting boot services".into(),
                "hvmm: UEFI memory map at ExitBootServices:".into(),
                "hvmm: UEFI cross-check removed ".into(),
                format!("hvmm: bootargs: \"{DEFAULT_BOOTARGS}\""),
                " kernel (guessed: first untyped)".into(),
                " ramdisk (guessed by reading its first bytes)".into(),
                " XSM policy (guessed by reading its first bytes)".into(),
                " 4 bytes) in EarlyBoot via fixmap slot 1: table maps image ".into(),
                format!("(XEN) hvmm: reached Active with {smp} CPU(s)"),
                // Data around the sealed tables, the direct map around
                // the table pool and the image's tables.
                "(XEN) verified ".into(),
                "(XEN) table pool: ".into(),
                " 0 of them writable through a permanent mapping".into(),
                "no page table writable through a permanent mapping".into(),
                "hvmm: boot checks passed".into(),
            ],
            absent: vec![GRUB_GAVE_UP.into(), "error:".into()],
            module_high: ram == "4G",
        });
    }
    let plain = plain_image(img)?;
    let mut a = qemu::base_args(Arch::Arm64);
    a.loader = Loader::Grub;
    v.push(GrubCase {
        name: "arm64 grub+uefi refuses the plain image without the PE header".into(),
        args: a,
        bin: plain.clone(),
        code: None,
        expect: vec![
            "GRUB: loading hvmm".into(),
            GRUB_PLAIN_REFUSED.into(),
            GRUB_GAVE_UP.into(),
        ],
        absent: vec!["hvmm: EFI entry".into(), "(XEN)".into()],
        module_high: false,
    });
    // The control: the same plain image is a valid Image otherwise.
    v.push(GrubCase {
        name: "arm64 the plain image boots with -kernel (only the PE header differs)".into(),
        args: qemu::base_args(Arch::Arm64),
        bin: plain,
        code: Some(0),
        expect: vec![
            "(XEN) hvmm: reached Active with 1 CPU(s)".into(),
            "hvmm: boot checks passed".into(),
        ],
        absent: vec!["hvmm: EFI entry".into()],
        module_high: false,
    });
    Ok(v)
}

/// The GRUB + UEFI cases of `cargo xtask test-qemu`, run with the arm64
/// image `img`: prints PASS/FAIL lines, returns (passed, failed).
pub fn test_cases(img: &Image, verbose: bool, wanted: &dyn Fn(&str) -> bool) -> (usize, usize) {
    let (mut passed, mut failed) = (0, 0);
    let cases = match cases(img).and_then(|c| grub_efi().map(|_| c)) {
        Ok(c) => c
            .into_iter()
            .filter(|c| wanted(&c.name))
            .collect::<Vec<_>>(),
        Err(e) => {
            println!("FAIL arm64 grub+uefi set-up: {e:#}");
            return (0, 1);
        }
    };
    for case in cases {
        let r = if case.args.loader == Loader::Grub {
            run(&case.args, &case.bin, false)
        } else {
            let plain = Image {
                bin: case.bin.clone(),
                ..img.clone()
            };
            qemu::run_image(&case.args, &plain, false)
        };
        let problems: Vec<String> = match &r {
            Err(e) => vec![format!("{e:#}")],
            Ok(o) => {
                let mut p = Vec::new();
                match case.code {
                    Some(c) if o.timed_out => p.push(format!(
                        "timed out after {} s (expected exit {c})",
                        case.args.timeout
                    )),
                    Some(c) if o.stopped => p.push(format!("GRUB gave up (expected exit {c})")),
                    Some(c) if o.code != Some(c) => {
                        p.push(format!("exit code {:?}, expected {c}", o.code))
                    }
                    None if !o.stopped => p.push(format!(
                        "GRUB did not give up (exit {:?}, timed out {})",
                        o.code, o.timed_out
                    )),
                    _ => {}
                }
                for e in &case.expect {
                    if !o.output.contains(e.as_str()) {
                        p.push(format!("missing {e:?}"));
                    }
                }
                for e in &case.absent {
                    if o.output.contains(e.as_str()) {
                        p.push(format!("unexpected {e:?}"));
                    }
                }
                if case.module_high && !module_above_4g(&o.output) {
                    p.push("no module above 4 GiB".into());
                }
                p.extend(crate::matrix::audit_problem(&o.output));
                p
            }
        };
        let secs = r.as_ref().map(|o| o.elapsed.as_secs_f64()).unwrap_or(0.0);
        if problems.is_empty() {
            passed += 1;
            println!("PASS {} ({secs:.2} s)", case.name);
        } else {
            failed += 1;
            println!("FAIL {} ({secs:.2} s): {}", case.name, problems.join("; "));
        }
        if let Ok(o) = &r {
            if verbose || !problems.is_empty() {
                println!("  $ {}", o.command);
                for l in o.output.lines() {
                    println!("  | {l}");
                }
            }
        }
    }
    (passed, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cfg_loads_three_untyped_modules() {
        let c = grub_cfg("a b");
        assert!(c.contains("xen_hypervisor /hvmm.efi a b\n"));
        assert_eq!(c.matches("xen_module ").count(), 3);
        assert!(c.contains("xen_module /xsm.pol"));
        assert!(!c.contains("--type"));
    }

    #[test]
    fn finds_high_modules() {
        assert!(module_above_4g(
            "(XEN) module 2: 0x000000013c3a2000 - 0x000000013c3a27ff XSM policy (x)\n"
        ));
        assert!(!module_above_4g(
            "(XEN) module 1: 0x000000006ccbd000 - 0x000000006ccbf7ff ramdisk (x)\n"
        ));
    }
}

/// The image's UEFI memory-map cross-check (pure `core` code), tested on
/// the host.
#[cfg(test)]
#[path = "../../crates/hvmm-image/src/efi_map.rs"]
mod efi_map;

#[cfg(test)]
mod efi_map_tests {
    use super::efi_map::{cross_check, descriptors, free_after_exit, Desc, MAX_RESERVED};

    fn d(ty: u32, base: u64, last: u64) -> Desc {
        Desc {
            ty,
            base,
            pages: (last + 1 - base) / 4096,
        }
    }

    /// The map QEMU 7.2 + edk2 2022.11 + GRUB 2.06 gave at ExitBootServices
    /// (1 GiB, measured with `hvmm.efi-map`; abridged: the BootServices
    /// descriptors at 0x47ef2000-0x47ffffff are left out).
    fn measured() -> Vec<Desc> {
        vec![
            d(7, 0x4000_0000, 0x43ff_ffff),
            d(4, 0x4400_0000, 0x4401_ffff),
            d(7, 0x4402_0000, 0x4771_9fff),
            d(4, 0x4771_a000, 0x4773_afff),
            d(3, 0x4773_b000, 0x4777_1fff),
            d(4, 0x4777_2000, 0x47ef_1fff),
            d(7, 0x4800_0000, 0x6cae_efff),
            d(1, 0x6cae_f000, 0x6cb9_ffff),
            d(9, 0x6cba_0000, 0x6cca_ffff),
            d(7, 0x6ccb_0000, 0x6ccb_bfff),
            d(2, 0x6ccb_c000, 0x6cce_3fff),
            d(1, 0x6cce_4000, 0x7c3a_0fff),
            d(2, 0x7c3a_1000, 0x7c3a_7fff),
            d(1, 0x7c3a_8000, 0x7c43_ffff),
            d(5, 0x7c44_0000, 0x7c4b_ffff),
            d(6, 0x7c4c_0000, 0x7c67_ffff),
            d(5, 0x7c68_0000, 0x7c72_ffff),
            d(7, 0x7c73_0000, 0x7fbf_ffff),
            d(5, 0x7fc0_0000, 0x7fd8_ffff),
            d(6, 0x7fd9_0000, 0x7ffd_ffff),
            d(7, 0x7ffe_0000, 0x7fff_ffff),
            d(11, 0x0400_0000, 0x07ff_ffff),
            d(11, 0x0901_0000, 0x0901_0fff),
        ]
    }

    #[test]
    fn measured_map_keeps_runtime_and_acpi_out() {
        let mut m = measured();
        // A hole between 0x47ef2000 and 0x48000000 that no descriptor covers.
        let c = cross_check(&m, &[(0x4000_0000, 0x4000_0000)]);
        let r: Vec<(u64, u64)> = c.reserved.iter().flatten().copied().collect();
        assert_eq!(
            r,
            vec![
                (0x47ef_2000, 0x4800_0000 - 0x47ef_2000),
                (0x6cba_0000, 0x11_0000),
                (0x7c44_0000, 0x2f_0000),
                (0x7fc0_0000, 0x3e_0000),
            ]
        );
        assert_eq!(c.undescribed_bytes, 0x4800_0000 - 0x47ef_2000);
        assert_eq!(c.outside_dt_bytes, 0);
        // Fill the hole: exactly the three firmware ranges remain.
        m.push(d(4, 0x47ef_2000, 0x47ff_ffff));
        let c = cross_check(&m, &[(0x4000_0000, 0x4000_0000)]);
        assert_eq!(c.reserved.iter().flatten().count(), 3);
        assert_eq!(c.reserved_bytes, 0x11_0000 + 0x2f_0000 + 0x3e_0000);
        // GRUB's memory (LoaderCode/Data) is free after ExitBootServices.
        assert!(free_after_exit(1) && free_after_exit(2) && !free_after_exit(9));
    }

    #[test]
    fn ram_beyond_the_map_is_kept_out_and_extra_uefi_memory_reported() {
        let m = vec![
            d(7, 0x4000_0000, 0x7fff_ffff),
            d(7, 0x1_0000_0000, 0x1_0000_ffff),
        ];
        let c = cross_check(&m, &[(0x4000_0000, 0x8000_0000)]);
        let r: Vec<(u64, u64)> = c.reserved.iter().flatten().copied().collect();
        assert_eq!(r, vec![(0x8000_0000, 0x4000_0000)]);
        assert_eq!(c.undescribed_bytes, 0x4000_0000);
        assert_eq!(c.outside_dt_bytes, 0x1_0000);
    }

    #[test]
    fn more_ranges_than_slots_merge_over_the_smallest_gaps() {
        // 12 one-page runtime ranges, 1 MiB apart, except one pair 2 pages apart.
        let mut m = vec![d(7, 0x4000_0000, 0x7fff_ffff)];
        let mut rt = Vec::new();
        for i in 0..12u64 {
            let base = if i == 6 {
                0x4150_3000
            } else {
                0x4100_0000 + i * 0x10_0000
            };
            rt.push(base);
            m.push(d(6, base, base + 0xfff));
        }
        // Runtime descriptors override the conventional one they sit in:
        // drop the big one and describe the free space around them instead.
        m.remove(0);
        rt.sort_unstable();
        let mut cur = 0x4000_0000;
        for &b in &rt {
            if b > cur {
                m.push(d(7, cur, b - 1));
            }
            cur = b + 0x1000;
        }
        m.push(d(7, cur, 0x7fff_ffff));
        let c = cross_check(&m, &[(0x4000_0000, 0x4000_0000)]);
        assert_eq!(c.found, 12);
        let r: Vec<(u64, u64)> = c.reserved.iter().flatten().copied().collect();
        assert_eq!(r.len(), MAX_RESERVED);
        // Every runtime page is still covered.
        for b in rt {
            assert!(
                r.iter().any(|&(s, n)| s <= b && b + 0x1000 <= s + n),
                "{b:#x}"
            );
        }
        // The closest pair was merged first (one range covers both).
        assert!(r.iter().any(|&(s, n)| s == 0x4150_0000 && n == 0x4000));
    }

    #[test]
    fn descriptors_are_read_at_their_stride() {
        let mut raw = vec![0u8; 2 * 48];
        raw[0] = 7;
        raw[8..16].copy_from_slice(&0x4000_0000u64.to_le_bytes());
        raw[24..32].copy_from_slice(&16u64.to_le_bytes());
        raw[48] = 5;
        raw[56..64].copy_from_slice(&0x1_0000_0000u64.to_le_bytes());
        raw[72..80].copy_from_slice(&1u64.to_le_bytes());
        let v: Vec<Desc> = descriptors(&raw, 48).collect();
        assert_eq!(
            v,
            vec![
                d(7, 0x4000_0000, 0x4000_ffff),
                d(5, 0x1_0000_0000, 0x1_0000_0fff)
            ]
        );
        assert_eq!(descriptors(&raw, 8).count(), 0);
    }
}
