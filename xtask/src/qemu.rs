//! Running the image under QEMU: direct `-kernel` boots, boots at any load
//! address, an imitation of U-Boot's placement with typed `/chosen/module@`
//! nodes, and (in [`crate::uboot`] and [`crate::grub`]) boots through the
//! real U-Boot and through the real GRUB and UEFI firmware.
//!
//! # Loading at an address of our choosing (`--load-addr`, `--loader uboot-sim`)
//!
//! QEMU's DTB is dumped with the same machine options (`dumpdtb=`), edited
//! with `dtc` (bootargs, modules), and everything is loaded with raw
//! `-device loader` entries. CPU 0 starts at a 64-byte register set-up stub
//! (another loader with `cpu-num=0` sets its PC) that does what a boot
//! loader does: arm64 `x0 = DTB, x1 = x2 = x3 = 0`, arm32 `r0 = 0,
//! r1 = ~0 (no machine type), r2 = DTB`, then branches to the image. The
//! stub, the DTB and the modules are placed from the bottom of RAM upwards,
//! around the image.

use crate::image::{self, Image};
use crate::{Arch, Loader};
use anyhow::{bail, ensure, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Physical base of RAM on QEMU's `virt` machine (both architectures).
pub const RAM_BASE: u64 = 0x4000_0000;
/// What QEMU occupies at the bottom of RAM when there is no `-kernel`.
const QEMU_DTB_SLOT: u64 = 0x10_0000;
/// Room reserved for our DTB (QEMU's is 1 MiB; dtc's output is smaller).
pub const DTB_SLOT: u64 = 0x10_0000;
/// Default run time limit.
pub const DEFAULT_TIMEOUT: u64 = 60;

/// `cargo xtask qemu` options.
#[derive(clap::Args, Debug, Clone)]
pub struct QemuArgs {
    /// Architecture.
    #[arg(long, value_enum, default_value = "arm64")]
    pub arch: Arch,
    /// How the image is loaded and entered.
    #[arg(long, value_enum, default_value = "direct")]
    pub loader: Loader,
    /// Physical load address of the image (4 KiB aligned), e.g. 0x7f601000.
    #[arg(long, value_parser = parse_u64)]
    pub load_addr: Option<u64>,
    /// Number of CPUs.
    #[arg(long, default_value_t = 4)]
    pub smp: u32,
    /// RAM size, as QEMU's -m takes it (e.g. 1G, 8G, 512M).
    #[arg(long, default_value = "1G")]
    pub ram: String,
    /// Wait for gdb on :1234 (adds -s -S; no time limit).
    #[arg(long)]
    pub gdb: bool,
    /// The kernel command line (/chosen/bootargs).
    #[arg(long)]
    pub bootargs: Option<String>,
    /// Kill QEMU and fail after this many seconds.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT)]
    pub timeout: u64,
    /// U-Boot style boots: place the modules from this PA upwards (e.g.
    /// above 4 GiB) instead of after the DTB.
    #[arg(long, value_parser = parse_u64)]
    pub modules_at: Option<u64>,
    /// Run a guest as domain 0 (`test`: hvmm's test guest, `crates/hvmm-guest`),
    /// loaded as the kernel module; a direct boot becomes U-Boot style.
    #[arg(long, value_enum)]
    pub guest: Option<GuestKind>,
    /// `--loader uboot`: the command that starts hvmm (default `booti` on
    /// arm64, `bootz` on arm32; `bootm` boots a uImage made with mkimage,
    /// run exactly at `--load-addr`).
    #[arg(long, value_enum)]
    pub uboot_cmd: Option<crate::uboot::BootCmd>,
}

/// The guest `--guest` runs.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GuestKind {
    /// hvmm's test guest (`crates/hvmm-guest`): its checks, then PSCI
    /// SYSTEM_OFF (pass) or SYSTEM_RESET (fail).
    Test,
    /// Debian's Linux with xtask's initramfs (`cargo xtask linux-assets`):
    /// its /init prints a line and powers off.
    Linux,
}

/// The command line Linux gets as domain 0.
pub const LINUX_DOM0_ARGS: &str = "console=ttyAMA0 earlycon=pl011,0x9000000 panic=-1 rdinit=/init";

/// The modules and hvmm's bootargs of a `--guest` run.
pub fn guest_modules(a: &QemuArgs) -> Result<Option<(Vec<Module>, &'static str)>> {
    match a.guest {
        None => Ok(None),
        Some(GuestKind::Test) => {
            let g = crate::guest::build(a.arch)?;
            let data =
                std::fs::read(&g.bin).with_context(|| format!("reading {}", g.bin.display()))?;
            Ok(Some((
                vec![Module {
                    compatible: &["multiboot,kernel", "multiboot,module"],
                    data,
                    addr: 0,
                    bootargs: None,
                }],
                "hvmm.dom0=test",
            )))
        }
        Some(GuestKind::Linux) => {
            let assets = crate::linux::assets(a.arch)?;
            let read =
                |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
            Ok(Some((
                vec![
                    Module {
                        compatible: &["multiboot,kernel", "multiboot,module"],
                        data: read(&assets.kernel)?,
                        addr: 0,
                        bootargs: Some(LINUX_DOM0_ARGS),
                    },
                    Module {
                        compatible: &["multiboot,ramdisk", "multiboot,module"],
                        data: read(&assets.initramfs)?,
                        addr: 0,
                        bootargs: None,
                    },
                ],
                "hvmm.dom0",
            )))
        }
    }
}

/// Parses `0x…` hexadecimal or decimal.
pub fn parse_u64(s: &str) -> Result<u64, String> {
    let t = s.replace('_', "");
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => t.parse(),
    };
    r.map_err(|e| format!("{s}: {e}"))
}

/// Parses a QEMU memory size (`1G`, `512M`, `8g`, plain bytes).
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, mul) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 1 << 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 1 << 30),
        Some('t' | 'T') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1 << 20), // QEMU: a bare number is MiB
    };
    let n: u64 = num.parse().with_context(|| format!("bad RAM size {s:?}"))?;
    n.checked_mul(mul)
        .with_context(|| format!("RAM size {s:?} overflows"))
}

/// The outcome of one QEMU run.
#[derive(Debug)]
pub struct Outcome {
    /// QEMU's exit code (the image's semihosting exit code); `None` when it
    /// was killed (time limit) or died of a signal.
    pub code: Option<i32>,
    /// Whether the time limit killed it.
    pub timed_out: bool,
    /// Whether it was stopped because the output showed the stop text
    /// (GRUB gave up: the image did not run).
    pub stopped: bool,
    /// Console output (stdout) then QEMU's stderr.
    pub output: String,
    /// Wall time.
    pub elapsed: Duration,
    /// The command line, for reports.
    pub command: String,
}

/// The QEMU binary of `arch`.
pub fn qemu_binary(arch: Arch) -> &'static str {
    match arch {
        Arch::Arm64 => "qemu-system-aarch64",
        Arch::Arm32 => "qemu-system-arm",
    }
}

/// The default arguments of a run (what `cargo xtask qemu` assumes).
pub fn base_args(arch: Arch) -> QemuArgs {
    QemuArgs {
        arch,
        loader: Loader::Direct,
        load_addr: None,
        smp: 1,
        ram: "1G".into(),
        gdb: false,
        bootargs: None,
        timeout: DEFAULT_TIMEOUT,
        modules_at: None,
        guest: None,
        uboot_cmd: None,
    }
}

/// `-M`, `-cpu`, `-m`, `-smp` and the console/exit options of a run;
/// `extra_machine` is appended to the `-M` value.
pub fn machine_args(a: &QemuArgs, extra_machine: &str) -> Vec<String> {
    let cpu = match a.arch {
        Arch::Arm64 => "cortex-a57",
        Arch::Arm32 => "cortex-a15",
    };
    let mut m = String::from("virt,virtualization=on");
    if a.arch == Arch::Arm32 && parse_size(&a.ram).unwrap_or(0) > (3 << 30) {
        m.push_str(",highmem=on");
    }
    m.push_str(extra_machine);
    vec![
        "-M".into(),
        m,
        "-cpu".into(),
        cpu.into(),
        "-m".into(),
        a.ram.clone(),
        "-smp".into(),
        a.smp.to_string(),
        "-nographic".into(),
        "-semihosting".into(),
        "-no-reboot".into(),
    ]
}

/// A bump allocator over RAM that avoids the image's range.
struct Placer {
    next: u64,
    ram_end: u64,
    avoid: (u64, u64),
}

impl Placer {
    fn place(&mut self, size: u64, align: u64) -> Result<u64> {
        let mut a = self.next.div_ceil(align) * align;
        if a < self.avoid.1 && a + size > self.avoid.0 {
            a = self.avoid.1.div_ceil(align) * align;
        }
        ensure!(
            a + size <= self.ram_end,
            "no room in RAM for {size:#x} bytes"
        );
        self.next = a + size;
        Ok(a)
    }
}

/// Register set-up stub: loads the DTB address and the image address from
/// two literals after the code and branches to the image.
pub fn setup_stub(arch: Arch, dtb: u64, entry: u64) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    match arch {
        Arch::Arm64 => {
            for insn in [
                0x5800_0100u32, // ldr x0, #0x20   (DTB)
                0x5800_0124,    // ldr x4, #0x24   (image, literal at 0x28)
                0xaa1f_03e1,    // mov x1, xzr
                0xaa1f_03e2,    // mov x2, xzr
                0xaa1f_03e3,    // mov x3, xzr
                0xd61f_0080,    // br x4
                0xd503_201f,    // nop
                0xd503_201f,    // nop
            ] {
                v.extend_from_slice(&insn.to_le_bytes());
            }
            v.extend_from_slice(&dtb.to_le_bytes());
            v.extend_from_slice(&entry.to_le_bytes());
        }
        Arch::Arm32 => {
            let dtb = u32::try_from(dtb).context("arm32 DTB must be below 4 GiB")?;
            let entry = u32::try_from(entry).context("arm32 image must be below 4 GiB")?;
            for insn in [
                0xe59f_2010u32, // ldr r2, [pc, #0x10]  (DTB, at 0x18)
                0xe59f_3010,    // ldr r3, [pc, #0x10]  (image, at 0x1c)
                0xe3a0_0000,    // mov r0, #0
                0xe3e0_1000,    // mvn r1, #0
                0xe12f_ff13,    // bx r3
                0xe320_f000,    // nop
                dtb,
                entry,
            ] {
                v.extend_from_slice(&insn.to_le_bytes());
            }
        }
    }
    Ok(v)
}

/// Escapes a string for a DTS string literal.
fn dts_string(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// A module for a U-Boot style boot.
pub struct Module {
    /// Its compatible strings.
    pub compatible: &'static [&'static str],
    /// Its contents.
    pub data: Vec<u8>,
    /// Where it is loaded.
    pub addr: u64,
    /// Its own command line (the module node's `bootargs`): a kernel's.
    pub bootargs: Option<&'static str>,
}

/// The typed modules of a U-Boot style boot: a (fake) dom0 kernel, a
/// ramdisk, and an XSM policy starting with the XSM magic 0xf97cff8c.
pub fn synth_modules() -> Vec<Module> {
    let mut kernel = b"hvmm test dom0 kernel\n".to_vec();
    kernel.resize(0x3000, 0xaa);
    let mut ramdisk = b"hvmm test ramdisk\n".to_vec();
    ramdisk.resize(0x2800, 0x55);
    let mut xsm = 0xf97c_ff8cu32.to_le_bytes().to_vec();
    xsm.extend_from_slice(b"XenFlask hvmm test policy\n");
    xsm.resize(0x800, 0);
    vec![
        Module {
            compatible: &["multiboot,kernel", "multiboot,module"],
            data: kernel,
            addr: 0,
            bootargs: None,
        },
        Module {
            compatible: &["multiboot,ramdisk", "multiboot,module"],
            data: ramdisk,
            addr: 0,
            bootargs: None,
        },
        Module {
            compatible: &["xen,xsm-policy", "multiboot,module"],
            data: xsm,
            addr: 0,
            bootargs: None,
        },
    ]
}

/// The DTS fragment merged into QEMU's tree: bootargs and module nodes.
fn chosen_fragment(bootargs: Option<&str>, modules: &[Module]) -> String {
    let mut s = String::from("\n/ {\n\tchosen {\n");
    if !modules.is_empty() {
        s.push_str("\t\t#address-cells = <2>;\n\t\t#size-cells = <2>;\n");
    }
    if let Some(b) = bootargs {
        s.push_str(&format!("\t\tbootargs = {};\n", dts_string(b)));
    }
    for m in modules {
        let compat: Vec<String> = m.compatible.iter().map(|c| dts_string(c)).collect();
        let len = m.data.len() as u64;
        let args = m
            .bootargs
            .map(|b| format!("\t\t\tbootargs = {};\n", dts_string(b)))
            .unwrap_or_default();
        s.push_str(&format!(
            "\t\tmodule@{:x} {{\n\t\t\tcompatible = {};\n\t\t\treg = <{:#x} {:#x} {:#x} {:#x}>;\n{args}\t\t}};\n",
            m.addr,
            compat.join(", "),
            m.addr >> 32,
            m.addr & 0xffff_ffff,
            len >> 32,
            len & 0xffff_ffff
        ));
    }
    s.push_str("\t};\n};\n");
    s
}

/// Runs a tool, failing with its stderr.
pub fn run_tool(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Dumps QEMU's DTB for this configuration (`dumpdtb=`) into `dir`.
pub fn dump_dtb(a: &QemuArgs, dir: &Path) -> Result<PathBuf> {
    let raw = dir.join("qemu.dtb");
    let mut cmd = Command::new(qemu_binary(a.arch));
    cmd.args(machine_args(a, &format!(",dumpdtb={}", raw.display())));
    run_tool(&mut cmd, "QEMU dumpdtb")?;
    Ok(raw)
}

/// The DTB QEMU hands a `-kernel` boot of `img` with this configuration
/// (its bootargs given with `-append`, as [`run_image`] does), dumped into
/// `dir` instead of booting.
pub fn dump_direct_dtb(a: &QemuArgs, img: &Image, dir: &Path) -> Result<PathBuf> {
    let raw = dir.join("qemu-direct.dtb");
    let mut cmd = Command::new(qemu_binary(a.arch));
    cmd.args(machine_args(a, &format!(",dumpdtb={}", raw.display())));
    cmd.arg("-kernel").arg(&img.bin);
    if let Some(b) = &a.bootargs {
        cmd.arg("-append").arg(b);
    }
    run_tool(&mut cmd, "QEMU dumpdtb")?;
    Ok(raw)
}

/// Runs `dtc` from `from` (dtb or dts) to `to` (dtb or dts).
pub fn dtc(input: &Path, from: &str, output: &Path, to: &str) -> Result<()> {
    run_tool(
        Command::new("dtc")
            .args(["-q", "-I", from, "-O", to, "-o"])
            .arg(output)
            .arg(input),
        &format!("dtc ({from} to {to})"),
    )
}

/// Dumps QEMU's DTB for this configuration and adds `bootargs` and the
/// module nodes to /chosen.
fn make_dtb(
    a: &QemuArgs,
    bootargs: Option<&str>,
    dir: &Path,
    modules: &[Module],
) -> Result<PathBuf> {
    let raw = dump_dtb(a, dir)?;
    if bootargs.is_none() && modules.is_empty() {
        return Ok(raw);
    }
    let dts = dir.join("qemu.dts");
    dtc(&raw, "dtb", &dts, "dts")?;
    let mut text =
        std::fs::read_to_string(&dts).with_context(|| format!("reading {}", dts.display()))?;
    text.push_str(&chosen_fragment(bootargs, modules));
    let dts2 = dir.join("hvmm.dts");
    std::fs::write(&dts2, text).with_context(|| format!("writing {}", dts2.display()))?;
    let out = dir.join("hvmm.dtb");
    dtc(&dts2, "dts", &out, "dtb")?;
    Ok(out)
}

/// A prepared run: the QEMU command and the scratch directory holding its
/// DTB, stub and modules (removed after the run).
pub struct Prepared {
    /// The command.
    pub cmd: Command,
    /// Scratch files, if any.
    pub workdir: Option<PathBuf>,
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if let Some(d) = self.workdir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Where a loader puts things when hvmm is not booted with `-kernel`:
/// QEMU's `-device loader` entries (the imitation) or the real U-Boot's
/// `load` commands. Placed from the bottom of RAM upwards, around the image.
pub struct Plan {
    /// The image's load address.
    pub load: u64,
    /// A page before the DTB: the imitation's register set-up stub, U-Boot's
    /// boot script.
    pub first: u64,
    /// The DTB's slot ([`DTB_SLOT`] bytes).
    pub dtb: u64,
    /// The modules, placed.
    pub modules: Vec<Module>,
    /// hvmm's command line (the guest's words appended), if any.
    pub bootargs: Option<String>,
    /// Where a loader may stage a copy of the image before moving it to
    /// `load` (U-Boot's `bootm`), if asked for.
    pub staging: Option<u64>,
}

/// The default load address of a loader-style boot.
pub const DEFAULT_LOAD: u64 = RAM_BASE + 0x40_0000;

/// Places a loader-style boot of `img`: the image is loaded at
/// `--load-addr` and runs at `runs_at(load)` (a loader may move it), the
/// rest goes below `ram_top`. Modules: the guest's, or with `synth` the
/// synthesised typed ones. A non-zero `staging` places that many bytes for
/// a staged copy of the image too.
pub fn plan(
    a: &QemuArgs,
    img: &Image,
    synth: bool,
    runs_at: impl Fn(u64) -> u64,
    ram_top: u64,
    staging: u64,
) -> Result<Plan> {
    let ram_end = RAM_BASE + parse_size(&a.ram)?;
    let load = a.load_addr.unwrap_or(DEFAULT_LOAD);
    ensure!(
        load & 0xfff == 0,
        "load address {load:#x} is not 4 KiB aligned"
    );
    let run = runs_at(load);
    ensure!(
        load >= RAM_BASE && run + img.mem_size <= ram_end,
        "image at {run:#x}+{:#x} is outside RAM {RAM_BASE:#x}-{ram_end:#x}",
        img.mem_size
    );
    if a.arch == Arch::Arm32 {
        ensure!(
            run + img.mem_size <= 1 << 32,
            "arm32 images run with the MMU off first: load below 4 GiB"
        );
    }
    let avoid = (load, run + img.mem_size);
    // Without -kernel QEMU still puts its own DTB (1 MiB) at the bottom of
    // RAM, for firmware: start above it.
    let mut placer = Placer {
        next: RAM_BASE + QEMU_DTB_SLOT,
        ram_end: ram_top,
        avoid,
    };
    let first = placer.place(0x1000, 0x1000)?;
    let (mut modules, bootargs) = match guest_modules(a)? {
        Some((m, args)) => (
            m,
            Some(match &a.bootargs {
                Some(b) => format!("{b} {args}"),
                None => args.to_string(),
            }),
        ),
        None if synth => (synth_modules(), a.bootargs.clone()),
        None => (Vec::new(), a.bootargs.clone()),
    };
    let dtb = placer.place(DTB_SLOT, 0x1000)?;
    let mut mod_placer = a.modules_at.map(|at| Placer {
        next: at,
        ram_end: ram_top,
        avoid,
    });
    for m in &mut modules {
        let p = mod_placer.as_mut().unwrap_or(&mut placer);
        m.addr = p.place(m.data.len() as u64, 0x1000)?;
    }
    let staging = match staging {
        0 => None,
        n => Some(placer.place(n, 0x1000)?),
    };
    Ok(Plan {
        load,
        first,
        dtb,
        modules,
        bootargs,
        staging,
    })
}

/// A scratch directory next to the image for one run.
pub fn scratch_dir(img: &Image, what: &str, load: u64) -> Result<PathBuf> {
    let dir = img
        .bin
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
        .join(format!("run-{what}-{load:x}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The full QEMU command line for a run of `img`.
pub fn command(a: &QemuArgs, img: &Image) -> Result<Prepared> {
    ensure!(
        a.uboot_cmd.is_none() || a.loader == Loader::Uboot,
        "--uboot-cmd applies to --loader uboot only"
    );
    match a.loader {
        Loader::Grub => return crate::grub::command(a, &img.bin),
        Loader::Uboot => return crate::uboot::command(a, img),
        Loader::Direct | Loader::UbootSim => {}
    }
    let mut cmd = Command::new(qemu_binary(a.arch));
    cmd.args(machine_args(a, ""));
    if a.gdb {
        cmd.args(["-s", "-S"]);
    }
    if a.loader == Loader::Direct && a.load_addr.is_none() && a.guest.is_none() {
        cmd.arg("-kernel").arg(&img.bin);
        if let Some(b) = &a.bootargs {
            cmd.arg("-append").arg(b);
        }
        return Ok(Prepared { cmd, workdir: None });
    }

    let ram_end = RAM_BASE + parse_size(&a.ram)?;
    let plan = plan(a, img, a.loader == Loader::UbootSim, |l| l, ram_end, 0)?;
    let dir = scratch_dir(
        img,
        if a.loader == Loader::UbootSim {
            "uboot-sim"
        } else {
            "direct"
        },
        plan.load,
    )?;
    let dtb = make_dtb(a, plan.bootargs.as_deref(), &dir, &plan.modules)?;
    let dtb_len = std::fs::metadata(&dtb)
        .with_context(|| format!("reading {}", dtb.display()))?
        .len();
    ensure!(
        dtb_len <= DTB_SLOT,
        "DTB of {dtb_len:#x} bytes does not fit its {DTB_SLOT:#x}-byte slot"
    );

    let stub = dir.join("stub.bin");
    std::fs::write(&stub, setup_stub(a.arch, plan.dtb, plan.load)?).context("writing the stub")?;
    let mut loaders: Vec<(PathBuf, u64)> = vec![
        (stub, plan.first),
        (img.bin.clone(), plan.load),
        (dtb, plan.dtb),
    ];
    for (i, m) in plan.modules.iter().enumerate() {
        let p = dir.join(format!("module{i}.bin"));
        std::fs::write(&p, &m.data).with_context(|| format!("writing {}", p.display()))?;
        loaders.push((p, m.addr));
    }
    for (file, addr) in loaders {
        cmd.arg("-device").arg(format!(
            "loader,file={},addr={addr:#x},force-raw=on",
            file.display()
        ));
    }
    cmd.arg("-device")
        .arg(format!("loader,addr={:#x},cpu-num=0", plan.first));
    Ok(Prepared {
        cmd,
        workdir: Some(dir),
    })
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs QEMU; streams the console when `stream`; kills it after `timeout`
/// (if any).
pub fn run(cmd: &mut Command, timeout: Option<Duration>, stream: bool) -> Result<Outcome> {
    run_until(cmd, timeout, stream, None)
}

/// [`run`], and with `stop = Some((texts, grace))` also kills QEMU `grace`
/// after its console showed one of `texts` (the run is then `stopped`).
pub fn run_until(
    cmd: &mut Command,
    timeout: Option<Duration>,
    stream: bool,
    stop: Option<(&[&str], Duration)>,
) -> Result<Outcome> {
    let command = describe(cmd);
    let start = Instant::now();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("starting {command}"))?;
    let out = Arc::new(Mutex::new(Vec::new()));
    let err = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    if let Some(so) = child.stdout.take() {
        threads.push(pump(so, out.clone(), stream));
    }
    if let Some(se) = child.stderr.take() {
        threads.push(pump(se, err.clone(), stream));
    }
    let mut timed_out = false;
    let mut stopped = false;
    let mut seen: Option<Instant> = None;
    let status = loop {
        if let Some(st) = child.try_wait().context("waiting for QEMU")? {
            break Some(st);
        }
        if let Some((texts, grace)) = stop {
            if seen.is_none()
                && out.lock().is_ok_and(|b| {
                    texts
                        .iter()
                        .any(|t| b.windows(t.len()).any(|w| w == t.as_bytes()))
                })
            {
                seen = Some(Instant::now());
            }
            if seen.is_some_and(|t| t.elapsed() > grace) {
                let _ = child.kill();
                let _ = child.wait();
                stopped = true;
                break None;
            }
        }
        if timeout.is_some_and(|t| start.elapsed() > t) {
            let _ = child.kill();
            let _ = child.wait();
            timed_out = true;
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    for t in threads {
        let _ = t.join();
    }
    let elapsed = start.elapsed();
    let mut output =
        String::from_utf8_lossy(&out.lock().map(|g| g.clone()).unwrap_or_default()).into_owned();
    let e =
        String::from_utf8_lossy(&err.lock().map(|g| g.clone()).unwrap_or_default()).into_owned();
    if !e.is_empty() {
        output.push_str("\n[qemu stderr]\n");
        output.push_str(&e);
    }
    Ok(Outcome {
        code: status.and_then(|s| s.code()),
        timed_out,
        stopped,
        output,
        elapsed,
        command,
    })
}

fn pump<R: Read + Send + 'static>(
    mut r: R,
    buf: Arc<Mutex<Vec<u8>>>,
    stream: bool,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        loop {
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if stream {
                        use std::io::Write;
                        let mut o = std::io::stdout().lock();
                        let _ = o.write_all(&chunk[..n]);
                        let _ = o.flush();
                    }
                    if let Ok(mut b) = buf.lock() {
                        b.extend_from_slice(&chunk[..n]);
                    }
                }
            }
        }
    })
}

/// Runs one configuration of an already built image.
pub fn run_image(a: &QemuArgs, img: &Image, stream: bool) -> Result<Outcome> {
    let mut p = command(a, img)?;
    let timeout = (!a.gdb).then(|| Duration::from_secs(a.timeout));
    run_until(&mut p.cmd, timeout, stream, stop_texts(a.loader))
}

/// What a loader prints once it will not start hvmm any more (QEMU is
/// stopped shortly after), and how long to wait for its last words.
pub fn stop_texts(loader: Loader) -> Option<(&'static [&'static str], Duration)> {
    let texts: &'static [&'static str] = match loader {
        Loader::Grub => &[crate::grub::GRUB_GAVE_UP],
        Loader::Uboot => &crate::uboot::GAVE_UP,
        Loader::Direct | Loader::UbootSim => return None,
    };
    Some((texts, Duration::from_millis(300)))
}

/// Why a run that showed one of [`stop_texts`] did not start hvmm.
pub fn stop_reason(loader: Loader, output: &str) -> String {
    match loader {
        Loader::Uboot => crate::uboot::why_stopped(output),
        _ => "GRUB gave up booting the image".into(),
    }
}

/// `cargo xtask qemu`.
pub fn qemu_command(a: &QemuArgs) -> Result<i32> {
    let img = image::build(a.arch)?;
    let mut p = command(a, &img)?;
    eprintln!("xtask: {}", describe(&p.cmd));
    if a.gdb {
        let gdb = "gdb-multiarch";
        eprintln!(
            "xtask: QEMU waits for gdb: {gdb} {} -ex 'target remote localhost:1234' \
             (symbols are at the link address 0x200000; the head runs at the load address with the MMU off)",
            img.elf.display()
        );
    }
    let timeout = (!a.gdb).then(|| Duration::from_secs(a.timeout));
    let o = run_until(&mut p.cmd, timeout, true, stop_texts(a.loader))?;
    if o.stopped {
        bail!("{}: QEMU stopped", stop_reason(a.loader, &o.output));
    }
    if o.timed_out {
        bail!("QEMU did not finish within {} s: killed", a.timeout);
    }
    match o.code {
        Some(c) => {
            eprintln!(
                "xtask: QEMU exited with {c} after {:.2} s",
                o.elapsed.as_secs_f64()
            );
            Ok(c)
        }
        None => bail!("QEMU was killed by a signal"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_sizes() {
        assert_eq!(parse_u64("0x7f60_1000"), Ok(0x7f60_1000));
        assert_eq!(parse_u64("4096"), Ok(4096));
        assert!(parse_u64("0xzz").is_err());
        assert_eq!(parse_size("1G").ok(), Some(1 << 30));
        assert_eq!(parse_size("512M").ok(), Some(512 << 20));
        assert_eq!(parse_size("256").ok(), Some(256 << 20));
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn stubs_carry_the_addresses() {
        let s = setup_stub(Arch::Arm64, 0x4010_1000, 0x2_0000_5000).unwrap();
        assert_eq!(s.len(), 0x30);
        assert_eq!(&s[0x20..0x28], &0x4010_1000u64.to_le_bytes());
        assert_eq!(&s[0x28..0x30], &0x2_0000_5000u64.to_le_bytes());
        let s = setup_stub(Arch::Arm32, 0x4010_1000, 0xfff0_0000).unwrap();
        assert_eq!(s.len(), 0x20);
        assert_eq!(&s[0x18..0x1c], &0x4010_1000u32.to_le_bytes());
        assert!(setup_stub(Arch::Arm32, 0x1_0000_0000, 0x4000_0000).is_err());
    }

    #[test]
    fn placer_skips_the_image() {
        let mut p = Placer {
            next: 0x4010_0000,
            ram_end: 0x8000_0000,
            avoid: (0x4010_0000, 0x4013_0000),
        };
        assert_eq!(p.place(0x40, 0x1000).unwrap(), 0x4013_0000);
        assert!(p.place(0x8000_0000, 0x1000).is_err());
    }

    #[test]
    fn chosen_fragment_has_typed_modules() {
        let mut m = synth_modules();
        m[0].addr = 0x1_4000_0000;
        let f = chosen_fragment(Some("a \"b\""), &m[..1]);
        assert!(f.contains("bootargs = \"a \\\"b\\\"\";"));
        assert!(f.contains("module@140000000"));
        assert!(f.contains("\"multiboot,kernel\", \"multiboot,module\""));
        assert!(f.contains("reg = <0x1 0x40000000 0x0 0x3000>;"));
        assert_eq!(&synth_modules()[2].data[..4], &[0x8c, 0xff, 0x7c, 0xf9]);
    }
}
