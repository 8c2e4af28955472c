//! Booting hvmm through the real U-Boot: Debian's `u-boot-qemu` firmware
//! (`qemu_arm64`, `qemu_arm`) runs from `virt`'s first flash bank, as a
//! board's boot ROM would, with QEMU's `virtualization=on` (arm64 U-Boot
//! runs and hands over at EL2; arm32 U-Boot, started in HYP mode, stays in
//! it), and boots hvmm the way Xen is booted on boards: a boot script loads
//! hvmm, the device tree and the modules from a disk, adds the module nodes
//! to /chosen with `fdt` commands, sets `xen,xen-bootargs`, and starts hvmm
//! with `booti` (arm64 `Image` header) or `bootz` (arm32 `zImage` header).
//!
//! What U-Boot reads, all written per run into a scratch directory:
//! - its environment, in the second flash bank (where Debian's builds keep
//!   it: `CONFIG_ENV_IS_IN_FLASH`, `CONFIG_ENV_ADDR=0x4000000`,
//!   `CONFIG_ENV_SIZE=0x40000`), made with `mkenvimage`: no autoboot delay,
//!   and a `bootcmd` that loads `boot.scr` from the disk and sources it;
//! - a FAT disk on virtio-blk (`mkfs.vfat` + `mcopy`): `boot.scr` (the
//!   script below, wrapped by `mkimage -T script`), `hvmm.bin`, `virt.dtb`
//!   (QEMU's tree for this machine, dumped and recompiled with `dtc` as a
//!   board's `.dtb` is), and the modules (`kernel`, `initrd`, `xsm.pol`).
//!
//! Where things go follows [`crate::qemu::plan`] (the same addresses as the
//! imitation, `--loader uboot-sim`), kept below the top 64 MiB of RAM that
//! U-Boot occupies. `booti` runs an arm64 Image at the next 2 MiB boundary
//! (our header says "anywhere in RAM", `text_offset` 0): a `--load-addr` off
//! that boundary is moved by U-Boot. `bootz` runs the arm32 image where it
//! was loaded.
//!
//! When the script fails (a file missing, an `fdt` command refused) it says
//! which step failed and does not start hvmm; the boot command then prints
//! [`NOT_STARTED`] and the run is stopped, with U-Boot's last lines in the
//! error.

use crate::image::Image;
use crate::qemu::{self, Module, Prepared, QemuArgs, RAM_BASE};
use crate::{setup, Arch};
use anyhow::{bail, ensure, Context, Result};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Debian's U-Boot for QEMU's arm64 `virt` (package `u-boot-qemu`).
pub const FIRMWARE_ARM64: &str = "/usr/lib/u-boot/qemu_arm64/u-boot.bin";
/// Debian's U-Boot for QEMU's arm32 `virt` (package `u-boot-qemu`).
pub const FIRMWARE_ARM32: &str = "/usr/lib/u-boot/qemu_arm/u-boot.bin";

/// The firmware of `arch`.
pub fn firmware(arch: Arch) -> &'static str {
    match arch {
        Arch::Arm64 => FIRMWARE_ARM64,
        Arch::Arm32 => FIRMWARE_ARM32,
    }
}

/// The U-Boot command that starts hvmm (`--uboot-cmd`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BootCmd {
    /// arm64 (the default): the image's `Image` header; U-Boot runs it at
    /// the next 2 MiB boundary.
    Booti,
    /// arm32 (the default): the image's `zImage` header; U-Boot runs it
    /// where it was loaded.
    Bootz,
    /// Both: a uImage (`mkimage -T kernel`, load and entry address
    /// `--load-addr`, below 4 GiB: the header's fields are 32 bits) loaded
    /// elsewhere; U-Boot copies hvmm to its load address and runs it there.
    Bootm,
}

impl BootCmd {
    /// The command a run uses: `--uboot-cmd`, else the architecture's own.
    pub fn of(a: &QemuArgs) -> Result<BootCmd> {
        let cmd = a.uboot_cmd.unwrap_or(match a.arch {
            Arch::Arm64 => BootCmd::Booti,
            Arch::Arm32 => BootCmd::Bootz,
        });
        match (a.arch, cmd) {
            (Arch::Arm32, BootCmd::Booti) => {
                bail!("booti takes arm64 Images: boot the arm32 image with bootz or bootm")
            }
            (Arch::Arm64, BootCmd::Bootz) => {
                bail!("bootz takes arm32 zImages: boot the arm64 image with booti or bootm")
            }
            _ => Ok(cmd),
        }
    }

    /// The command's name in the script.
    fn name(self) -> &'static str {
        match self {
            BootCmd::Booti => "booti",
            BootCmd::Bootz => "bootz",
            BootCmd::Bootm => "bootm",
        }
    }
}

/// Where U-Boot's `cmd` runs hvmm loaded at `load`: `booti` moves an arm64
/// Image up to the next 2 MiB boundary; `bootz` runs it where it is,
/// `bootm` at the uImage's load address.
pub fn runs_at(cmd: BootCmd, load: u64) -> u64 {
    match cmd {
        BootCmd::Booti => load.next_multiple_of(BOOTI_ALIGN),
        BootCmd::Bootz | BootCmd::Bootm => load,
    }
}

/// `mkimage -A`'s name of `arch`.
fn mkimage_arch(arch: Arch) -> &'static str {
    match arch {
        Arch::Arm64 => "arm64",
        Arch::Arm32 => "arm",
    }
}

/// Lines of a run in which U-Boot ran the boot script and handed over, and
/// hvmm found itself at EL2 (arm64) / in HYP mode (arm32).
pub fn handover_lines(arch: Arch) -> Vec<String> {
    vec![
        "hvmm boot script: starting hvmm".into(),
        "Starting kernel ...".into(),
        match arch {
            Arch::Arm64 => "hvmm: arm64 EL2 on CPU 0".into(),
            Arch::Arm32 => "hvmm: arm32 HYP on CPU 0".into(),
        },
    ]
}

/// What the boot command prints when the boot script came back: U-Boot did
/// not start hvmm.
pub const NOT_STARTED: &str = "xtask: U-Boot did not start hvmm";
/// U-Boot's words when it ignores the environment xtask wrote to flash.
const DEFAULT_ENV: &str = "using default environment";
/// The texts after which the run is stopped.
pub const GAVE_UP: [&str; 2] = [NOT_STARTED, DEFAULT_ENV];

/// The environment's size (`CONFIG_ENV_SIZE` of Debian's qemu_arm64 and
/// qemu_arm builds).
const ENV_SIZE: u64 = 0x4_0000;
/// `virt`'s flash banks are 64 MiB; QEMU wants the whole bank's file.
const FLASH_SIZE: u64 = 64 << 20;
/// The top of RAM that U-Boot keeps for itself (relocated code, 16 MiB of
/// malloc, its device tree, stack: about 36 MiB with 1 GiB of RAM).
const UBOOT_RESERVED: u64 = 64 << 20;
/// `booti` places an arm64 Image at a multiple of this.
const BOOTI_ALIGN: u64 = 2 << 20;
/// The boot script's name on the disk.
const SCRIPT: &str = "boot.scr";
/// hvmm's name on the disk.
const IMAGE: &str = "hvmm.bin";
/// hvmm's uImage (for `bootm`) on the disk.
const UIMAGE: &str = "hvmm.uimg";
/// The device tree's name on the disk.
const DTB: &str = "virt.dtb";
/// Room `fdt resize` adds for the nodes and properties the script writes.
const FDT_ROOM: u64 = 0x1_0000;

/// Why a stopped run did not reach hvmm, with U-Boot's last lines.
pub fn why_stopped(output: &str) -> String {
    let why = if output.contains(DEFAULT_ENV) {
        "U-Boot ignored the environment xtask wrote to its flash (it found no valid \
         environment there; did the u-boot-qemu package change CONFIG_ENV_*?)"
    } else if output.contains("hvmm boot script: ") {
        "U-Boot ran the boot script but did not start hvmm"
    } else {
        "U-Boot did not run the boot script"
    };
    let tail: Vec<&str> = output
        .lines()
        .filter(|l| !l.trim().is_empty())
        .rev()
        .take(8)
        .collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    format!("{why}; U-Boot's last lines:\n  | {}", tail.join("\n  | "))
}

/// A module as the boot script loads and describes it.
#[derive(Debug, Clone)]
pub struct ScriptModule<'a> {
    /// Its file on the disk.
    pub file: String,
    /// Where it is loaded.
    pub addr: u64,
    /// Its size (the `reg` size).
    pub size: u64,
    /// Its `compatible` strings.
    pub compatible: &'a [&'a str],
    /// Its own command line (the node's `bootargs`).
    pub bootargs: Option<&'a str>,
}

/// What the boot script loads, where, and how it starts hvmm.
#[derive(Debug, Clone)]
pub struct Script<'a> {
    /// The architecture (`fdt_high`'s width).
    pub arch: Arch,
    /// The command that starts hvmm.
    pub boot: BootCmd,
    /// hvmm's file on the disk (the raw image, or its uImage for `bootm`).
    pub image_file: &'a str,
    /// Where that file is loaded, and the address the command is given.
    pub image: u64,
    /// The device tree's address.
    pub dtb: u64,
    /// hvmm's command line (`/chosen/xen,xen-bootargs`).
    pub bootargs: Option<&'a str>,
    /// The modules, in order (the first kernel is domain 0's).
    pub modules: Vec<ScriptModule<'a>>,
}

/// A U-Boot shell word in double quotes; refuses what would need escaping.
fn quoted(what: &str, s: &str) -> Result<String> {
    ensure!(
        !s.contains(['"', '\'', '\\', '$', '\n', '\r']),
        "{what} {s:?} cannot be passed through a U-Boot script (it holds a quote, an \
         apostrophe, a backslash, a '$' or a line break)"
    );
    Ok(format!("\"{s}\""))
}

/// A 64-bit value as two cells, for a `reg` with two address and two size
/// cells.
fn cells(v: u64) -> String {
    format!("{:#x} {:#x}", v >> 32, v & 0xffff_ffff)
}

/// A step of the boot script that records its name in `hvmm_failed` when
/// it fails.
fn step(out: &mut String, cmd: &str, what: &str) {
    out.push_str(&format!("{cmd} || setenv hvmm_failed \"{what}\"\n"));
}

/// The boot script (the text `mkimage -T script` wraps). Every step that
/// can fail records its name in `hvmm_failed`; hvmm is started only when
/// none did.
pub fn boot_script(s: &Script<'_>) -> Result<String> {
    let mut out = format!(
        "# hvmm on U-Boot: written by cargo xtask (xtask/src/uboot.rs)\n\
         echo \"hvmm boot script: loading {}, {DTB} and {} module(s)\"\n\
         setenv hvmm_failed\n",
        s.image_file,
        s.modules.len()
    );
    let o = &mut out;
    let load = |o: &mut String, addr: u64, file: &str| {
        step(
            o,
            &format!("load virtio 0 {addr:#x} {file}"),
            &format!("loading {file}"),
        )
    };
    load(o, s.image, s.image_file);
    load(o, s.dtb, DTB);
    for m in &s.modules {
        load(o, m.addr, &m.file);
    }
    step(o, &format!("fdt addr {:#x}", s.dtb), "fdt addr");
    step(o, &format!("fdt resize {FDT_ROOM:#x}"), "fdt resize");
    for cells in ["address", "size"] {
        step(
            o,
            &format!("fdt set /chosen \\#{cells}-cells <0x2>"),
            &format!("setting #{cells}-cells of /chosen"),
        );
    }
    if let Some(b) = s.bootargs {
        let b = quoted("hvmm's command line", b)?;
        step(
            o,
            &format!("fdt set /chosen xen,xen-bootargs {b}"),
            "setting xen,xen-bootargs",
        );
    }
    // `fdt mknode` makes the new node the first child: made last to first,
    // the nodes appear in the tree in load order.
    for m in s.modules.iter().rev() {
        let node = format!("/chosen/module@{:x}", m.addr);
        step(
            o,
            &format!("fdt mknode /chosen module@{:x}", m.addr),
            &format!("adding {node}"),
        );
        let compat: Vec<String> = m.compatible.iter().map(|c| format!("\"{c}\"")).collect();
        step(
            o,
            &format!("fdt set {node} compatible {}", compat.join(" ")),
            &format!("setting {node} compatible"),
        );
        step(
            o,
            &format!("fdt set {node} reg <{} {}>", cells(m.addr), cells(m.size)),
            &format!("setting {node} reg"),
        );
        if let Some(b) = m.bootargs {
            let b = quoted(&format!("{}'s command line", m.file), b)?;
            step(
                o,
                &format!("fdt set {node} bootargs {b}"),
                &format!("setting {node} bootargs"),
            );
        }
    }
    let fdt_high = match s.arch {
        Arch::Arm64 => "0xffffffffffffffff",
        Arch::Arm32 => "0xffffffff",
    };
    let boot = s.boot.name();
    // Keep the tree where it was loaded; start hvmm only if nothing failed.
    out.push_str(&format!(
        "setenv fdt_high {fdt_high}\n\
         if env exists hvmm_failed; then echo \"hvmm boot script: ${{hvmm_failed}} failed: \
         not starting hvmm\"; else echo \"hvmm boot script: starting hvmm\"; \
         {boot} {:#x} - {:#x}; fi\n",
        s.image, s.dtb
    ));
    Ok(out)
}

/// U-Boot's environment: no autoboot delay; the boot command loads the
/// boot script at `script` and sources it, and says so if it comes back.
pub fn environment(script: u64) -> String {
    format!(
        "bootdelay=0\n\
         bootcmd=virtio scan; load virtio 0 {script:#x} {SCRIPT} && source {script:#x}; \
         echo \"{NOT_STARTED}\"\n"
    )
}

/// The file a module is stored in on the disk.
fn module_file(i: usize, m: &Module) -> String {
    match m.compatible.first().copied() {
        Some("multiboot,kernel") => "kernel".into(),
        Some("multiboot,ramdisk") => "initrd".into(),
        Some("xen,xsm-policy") => "xsm.pol".into(),
        _ => format!("module{i}"),
    }
}

/// Installs what is missing (`cargo xtask setup` installs everything
/// U-Boot boots need: the firmware, u-boot-tools, dosfstools, mtools), or
/// fails naming it.
fn ensure_installed(arch: Arch) -> Result<()> {
    let needs = [
        firmware(arch),
        "mkimage",
        "mkenvimage",
        "mkfs.vfat",
        "mcopy",
    ];
    let missing = || -> Vec<&str> { needs.into_iter().filter(|b| !setup::have(b)).collect() };
    if missing().is_empty() {
        return Ok(());
    }
    eprintln!(
        "xtask: U-Boot boots need {}: installing",
        missing().join(", ")
    );
    setup::setup()?;
    let still = missing();
    ensure!(
        still.is_empty(),
        "still missing for U-Boot boots: {}",
        still.join(", ")
    );
    Ok(())
}

fn run_tool(cmd: &mut Command, what: &str) -> Result<()> {
    qemu::run_tool(cmd.env("MTOOLS_SKIP_CHECK", "1"), what)
}

/// A FAT disk image at `disk` holding `files` (name on the disk, source).
fn fat_disk(disk: &Path, files: &[(String, &Path)]) -> Result<()> {
    let mut bytes = 0u64;
    for (_, f) in files {
        bytes += std::fs::metadata(f)
            .with_context(|| format!("reading {}", f.display()))?
            .len()
            .div_ceil(0x1000)
            * 0x1000;
    }
    // Room for the FAT and directories; at least 8 MiB.
    let kib = (bytes + bytes / 8 + (4 << 20)).max(8 << 20) / 1024;
    let _ = std::fs::remove_file(disk);
    run_tool(
        Command::new("mkfs.vfat")
            .args(["-C", "-n", "HVMM"])
            .arg(disk)
            .arg(kib.to_string()),
        "mkfs.vfat (dosfstools)",
    )?;
    for (name, f) in files {
        run_tool(
            Command::new("mcopy")
                .arg("-i")
                .arg(disk)
                .arg(f)
                .arg(format!("::{name}")),
            &format!("mcopy {name} (mtools)"),
        )?;
    }
    Ok(())
}

fn write(path: &Path, data: &[u8]) -> Result<()> {
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}

/// `mkimage -A <arch> <args> -d input output`.
fn mkimage(arch: Arch, args: &[&str], input: &Path, output: &Path, what: &str) -> Result<()> {
    run_tool(
        Command::new("mkimage")
            .args(["-A", mkimage_arch(arch)])
            .args(args)
            .arg("-d")
            .arg(input)
            .arg(output),
        &format!("mkimage {what} (u-boot-tools)"),
    )
}

/// The QEMU command of a real U-Boot boot of `img`.
pub fn command(a: &QemuArgs, img: &Image) -> Result<Prepared> {
    ensure_installed(a.arch)?;
    let boot = BootCmd::of(a)?;
    let ram_end = RAM_BASE + qemu::parse_size(&a.ram)?;
    let mut ram_top = ram_end.saturating_sub(UBOOT_RESERVED);
    if a.arch == Arch::Arm32 {
        // 32-bit U-Boot loads below 4 GiB only.
        ram_top = ram_top.min(1 << 32);
    }
    // bootm: the uImage (a 64-byte header, then the image) is staged apart.
    let staging = match boot {
        BootCmd::Bootm => {
            std::fs::metadata(&img.bin)
                .with_context(|| format!("reading {}", img.bin.display()))?
                .len()
                + 64
        }
        BootCmd::Booti | BootCmd::Bootz => 0,
    };
    let plan = qemu::plan(a, img, true, |l| runs_at(boot, l), ram_top, staging)?;
    let run = runs_at(boot, plan.load);
    ensure!(
        run + img.mem_size <= ram_top,
        "the image at {run:#x}+{:#x} would overlap U-Boot, which keeps RAM from {ram_top:#x} \
         (the top {} MiB) for itself",
        img.mem_size,
        (ram_end - ram_top) >> 20
    );
    if run != plan.load {
        eprintln!(
            "xtask: booti runs an arm64 Image at a 2 MiB boundary: U-Boot moves hvmm from \
             {:#x} to {run:#x} (--uboot-cmd bootm runs it where asked)",
            plan.load
        );
    }
    if plan.staging.is_some() {
        ensure!(
            plan.load + img.mem_size <= 1 << 32,
            "bootm: a uImage's load address is 32 bits, so hvmm cannot be placed at {:#x}; \
             use booti",
            plan.load
        );
    }
    let dir = qemu::scratch_dir(img, "uboot", plan.load)?;
    // Removes the scratch directory if a later step fails.
    let mut prepared = Prepared {
        cmd: Command::new(qemu::qemu_binary(a.arch)),
        workdir: Some(dir.clone()),
    };

    // The device tree as a board ships it: QEMU's, recompiled compact.
    let dtb = dir.join(DTB);
    qemu::dtc(&qemu::dump_dtb(a, &dir)?, "dtb", &dtb, "dtb")?;
    let dtb_len = std::fs::metadata(&dtb)
        .with_context(|| format!("reading {}", dtb.display()))?
        .len();
    ensure!(
        dtb_len + FDT_ROOM <= qemu::DTB_SLOT,
        "DTB of {dtb_len:#x} bytes does not fit its {:#x}-byte slot with {FDT_ROOM:#x} bytes \
         of room",
        qemu::DTB_SLOT
    );

    let (image_file, image_at) = match plan.staging {
        Some(at) => {
            let load = format!("{:#x}", plan.load);
            let args = [
                "-O", "linux", "-T", "kernel", "-C", "none", "-a", &load, "-e", &load,
            ];
            let uimg = dir.join(UIMAGE);
            mkimage(
                a.arch,
                &[&args[..], &["-n", "hvmm"]].concat(),
                &img.bin,
                &uimg,
                "-T kernel",
            )?;
            ((UIMAGE, uimg), at)
        }
        None => ((IMAGE, img.bin.clone()), plan.load),
    };
    let mut files: Vec<(String, std::path::PathBuf)> = vec![
        (image_file.0.into(), image_file.1),
        (DTB.into(), dtb.clone()),
    ];
    let mut modules = Vec::new();
    for (i, m) in plan.modules.iter().enumerate() {
        let file = module_file(i, m);
        let p = dir.join(&file);
        write(&p, &m.data)?;
        files.push((file.clone(), p));
        modules.push(ScriptModule {
            file,
            addr: m.addr,
            size: m.data.len() as u64,
            compatible: m.compatible,
            bootargs: m.bootargs,
        });
    }
    let text = boot_script(&Script {
        arch: a.arch,
        boot,
        image_file: image_file.0,
        image: image_at,
        dtb: plan.dtb,
        bootargs: plan.bootargs.as_deref(),
        modules,
    })?;
    let cmd_file = dir.join("boot.cmd");
    write(&cmd_file, text.as_bytes())?;
    let scr = dir.join(SCRIPT);
    mkimage(
        a.arch,
        &["-T", "script", "-C", "none", "-n", "hvmm boot script"],
        &cmd_file,
        &scr,
        "-T script",
    )?;
    let scr_len = std::fs::metadata(&scr)
        .with_context(|| format!("reading {}", scr.display()))?
        .len();
    ensure!(
        scr_len <= 0x1000,
        "the boot script ({scr_len} bytes) does not fit its 4 KiB page"
    );
    files.push((SCRIPT.into(), scr));
    let disk = dir.join("disk.img");
    let refs: Vec<(String, &Path)> = files
        .iter()
        .map(|(n, p)| (n.clone(), p.as_path()))
        .collect();
    fat_disk(&disk, &refs)?;

    let env_txt = dir.join("env.txt");
    write(&env_txt, environment(plan.first).as_bytes())?;
    let env = dir.join("env.bin");
    run_tool(
        Command::new("mkenvimage")
            .args(["-s", &format!("{ENV_SIZE:#x}"), "-o"])
            .arg(&env)
            .arg(&env_txt),
        "mkenvimage (u-boot-tools)",
    )?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&env)
        .and_then(|f| f.set_len(FLASH_SIZE))
        .with_context(|| format!("padding {} to the flash bank's size", env.display()))?;

    let fw = firmware(a.arch);
    let cmd = &mut prepared.cmd;
    cmd.args(qemu::machine_args(a, ""));
    if a.gdb {
        cmd.args(["-s", "-S"]);
    }
    cmd.args(["-bios", fw, "-nic", "none", "-drive"])
        .arg(format!(
            "if=pflash,unit=1,format=raw,readonly=on,file={}",
            env.display()
        ))
        .arg("-drive")
        .arg(format!(
            "if=none,id=hvmm-disk,format=raw,readonly=on,file={}",
            disk.display()
        ))
        .args(["-device", "virtio-blk-device,drive=hvmm-disk"]);
    Ok(prepared)
}

/// Runs a prepared U-Boot boot that must not reach hvmm: the run must stop
/// at U-Boot's give-up line, and the reason (with U-Boot's last lines) must
/// hold `words`. Returns the seconds.
fn must_stop(mut p: Prepared, a: &QemuArgs, words: &str) -> Result<f64> {
    let stop = qemu::stop_texts(a.loader);
    let o = qemu::run_until(
        &mut p.cmd,
        Some(Duration::from_secs(a.timeout)),
        false,
        stop,
    )?;
    ensure!(
        o.stopped,
        "the run was not stopped at U-Boot's give-up line (exit {:?}, timed out {}):\n{}",
        o.code,
        o.timed_out,
        o.output
    );
    let why = why_stopped(&o.output);
    ensure!(
        why.starts_with("U-Boot ran the boot script but did not start hvmm")
            && why.contains(words)
            && !o.output.contains("(XEN)"),
        "expected {words:?} and no hvmm output; got: {why}"
    );
    Ok(o.elapsed.as_secs_f64())
}

/// The matrix's negative case: a copy of the image with its loader magic
/// cleared (arm64 `ARM\x64` at 0x38, arm32 the zImage magic at 0x24).
/// `booti` / `bootz` must refuse it and U-Boot must not start hvmm.
pub fn refuses_image_without_magic(arch: Arch, img: &Image) -> Result<f64> {
    let mut raw =
        std::fs::read(&img.bin).with_context(|| format!("reading {}", img.bin.display()))?;
    let (off, refusal) = match arch {
        Arch::Arm64 => (0x38, "Bad Linux ARM64 Image magic!"),
        Arch::Arm32 => (0x24, "zimage: Bad magic!"),
    };
    raw[off..off + 4].fill(0);
    let bad = Image {
        bin: img.bin.with_file_name("hvmm-nomagic.bin"),
        ..img.clone()
    };
    write(&bad.bin, &raw)?;
    let mut a = qemu::base_args(arch);
    a.loader = crate::Loader::Uboot;
    must_stop(command(&a, &bad)?, &a, refusal)
}

/// The matrix's other negative case: the initrd deleted from the disk. The
/// script's `load` fails, the script says so and does not start hvmm.
pub fn stops_at_a_missing_module(arch: Arch, img: &Image) -> Result<f64> {
    let mut a = qemu::base_args(arch);
    a.loader = crate::Loader::Uboot;
    let p = command(&a, img)?;
    let disk = p
        .workdir
        .as_ref()
        .context("a U-Boot run has a scratch directory")?
        .join("disk.img");
    run_tool(
        Command::new("mdel").arg("-i").arg(&disk).arg("::initrd"),
        "mdel (mtools)",
    )?;
    must_stop(
        p,
        &a,
        "hvmm boot script: loading initrd failed: not starting hvmm",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(arch: Arch) -> Script<'static> {
        Script {
            arch,
            boot: match arch {
                Arch::Arm64 => BootCmd::Booti,
                Arch::Arm32 => BootCmd::Bootz,
            },
            image_file: IMAGE,
            image: 0x4040_0000,
            dtb: 0x4010_1000,
            bootargs: Some("console=hvc0 hvmm.dom0"),
            modules: vec![
                ScriptModule {
                    file: "kernel".into(),
                    addr: 0x1_4000_0000,
                    size: 0x3000,
                    compatible: &["multiboot,kernel", "multiboot,module"],
                    bootargs: Some("console=ttyAMA0 rdinit=/init"),
                },
                ScriptModule {
                    file: "initrd".into(),
                    addr: 0x4020_4000,
                    size: 0x2800,
                    compatible: &["multiboot,ramdisk", "multiboot,module"],
                    bootargs: None,
                },
            ],
        }
    }

    #[test]
    fn the_script_loads_describes_and_boots() {
        let s = boot_script(&script(Arch::Arm64)).unwrap();
        assert!(s.contains("load virtio 0 0x40400000 hvmm.bin || setenv hvmm_failed"));
        assert!(s.contains("load virtio 0 0x140000000 kernel || "));
        assert!(s.contains("fdt addr 0x40101000 || "));
        assert!(s.contains("fdt set /chosen xen,xen-bootargs \"console=hvc0 hvmm.dom0\" || "));
        assert!(s.contains("fdt mknode /chosen module@140000000 || "));
        assert!(s.contains(
            "fdt set /chosen/module@140000000 compatible \"multiboot,kernel\" \"multiboot,module\""
        ));
        assert!(s.contains("fdt set /chosen/module@140000000 reg <0x1 0x40000000 0x0 0x3000> || "));
        assert!(s.contains(
            "fdt set /chosen/module@140000000 bootargs \"console=ttyAMA0 rdinit=/init\""
        ));
        assert!(s.contains("fdt set /chosen/module@40204000 reg <0x0 0x40204000 0x0 0x2800>"));
        assert!(!s.contains("/chosen/module@40204000 bootargs"));
        // The last module's node is made first: the tree lists them in order.
        assert!(
            s.find("mknode /chosen module@40204000") < s.find("mknode /chosen module@140000000")
        );
        assert!(s.contains("setenv fdt_high 0xffffffffffffffff\n"));
        assert!(s.contains("booti 0x40400000 - 0x40101000; fi\n"));
        // U-Boot's shell opens a quote at an apostrophe even inside double
        // quotes, swallowing the lines up to the next one.
        assert!(!s.contains('\''));
        // Every load and fdt step records its failure.
        for l in s
            .lines()
            .filter(|l| l.starts_with("load ") || l.starts_with("fdt "))
        {
            assert!(l.contains(" || setenv hvmm_failed \""), "{l}");
        }
        let s = boot_script(&script(Arch::Arm32)).unwrap();
        assert!(s.contains("setenv fdt_high 0xffffffff\n"));
        assert!(s.contains("bootz 0x40400000 - 0x40101000; fi\n"));
    }

    #[test]
    fn bootm_boots_the_staged_uimage_and_commands_fit_the_arch() {
        let mut s = script(Arch::Arm64);
        s.boot = BootCmd::Bootm;
        s.image_file = UIMAGE;
        s.image = 0x4030_0000;
        let t = boot_script(&s).unwrap();
        assert!(t.contains("load virtio 0 0x40300000 hvmm.uimg || "));
        assert!(t.contains("bootm 0x40300000 - 0x40101000; fi\n"));
        assert_eq!(runs_at(BootCmd::Bootm, 0x4800_1000), 0x4800_1000);
        assert_eq!(runs_at(BootCmd::Booti, 0x4800_1000), 0x4820_0000);
        assert_eq!(runs_at(BootCmd::Booti, 0x4820_0000), 0x4820_0000);
        for (arch, default, wrong, refusal) in [
            (
                Arch::Arm64,
                BootCmd::Booti,
                BootCmd::Bootz,
                "bootz takes arm32",
            ),
            (
                Arch::Arm32,
                BootCmd::Bootz,
                BootCmd::Booti,
                "booti takes arm64",
            ),
        ] {
            let mut a = qemu::base_args(arch);
            assert_eq!(BootCmd::of(&a).unwrap(), default);
            a.uboot_cmd = Some(wrong);
            let e = BootCmd::of(&a).unwrap_err().to_string();
            assert!(e.contains(refusal), "{e}");
            a.uboot_cmd = Some(BootCmd::Bootm);
            assert_eq!(BootCmd::of(&a).unwrap(), BootCmd::Bootm);
        }
    }

    #[test]
    fn words_that_need_escaping_are_refused() {
        let mut s = script(Arch::Arm64);
        s.bootargs = Some("a=\"b\"");
        let e = boot_script(&s).unwrap_err().to_string();
        assert!(e.contains("hvmm's command line"), "{e}");
        let mut s = script(Arch::Arm64);
        s.modules[0].bootargs = Some("x=$y");
        let e = boot_script(&s).unwrap_err().to_string();
        assert!(e.contains("kernel's command line"), "{e}");
    }

    #[test]
    fn the_environment_sources_the_script() {
        let e = environment(0x4010_0000);
        assert!(e.starts_with("bootdelay=0\n"));
        assert!(e.contains("load virtio 0 0x40100000 boot.scr && source 0x40100000; "));
        assert!(e.contains(NOT_STARTED));
    }

    #[test]
    fn a_stop_names_the_reason_and_the_last_lines() {
        let o = "U-Boot 2023.01\nhvmm boot script: loading\nFailed to load 'kernel'\n\
                 hvmm boot script: loading kernel failed: not starting hvmm\n\
                 xtask: U-Boot did not start hvmm\n";
        let w = why_stopped(o);
        assert!(w.starts_with("U-Boot ran the boot script but did not start hvmm"));
        assert!(w.contains("  | Failed to load 'kernel'"));
        assert!(why_stopped(
            "Loading Environment from Flash... *** Warning - bad CRC, using default environment"
        )
        .contains("ignored the environment"));
    }
}
