//! The Xilinx ZynqMP ZCU102 on QEMU (`-machine xlnx-zcu102,virtualization=on`),
//! the board Xen's own CI runs on real hardware: four Cortex-A53s, GIC-400,
//! Cadence UARTs, PSCI over SMC (QEMU's), and RAM from PA 0 (2 GiB at 0, the
//! rest at 32 GiB) — so the image, linked at 0x200000, can be loaded on top of
//! its own link range, which `virt` (RAM from 1 GiB) cannot show.
//!
//! The device tree is Debian's `zynqmp-zcu102-rev1.0.dtb`, from the arm64
//! kernel package the Linux assets come from. QEMU is given no `-kernel`:
//! with one it would rewrite `/memory` as a single bank from 0 of the whole
//! RAM size, over the ZynqMP's device space (QEMU 7.2 then crashes when the
//! frametable is zeroed there). The image, the DTB and the register set-up
//! stub are written with `-device loader`; the tree's two memory banks match
//! `-m 4G`.

use crate::image::Image;
use crate::qemu::{self, Outcome};
use crate::{linux, Arch};
use anyhow::{ensure, Context, Result};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Where the DTB is written (inside the first RAM bank, far from the image).
const DTB_ADDR: u64 = 0x1000_0000;
/// Where the register set-up stub is written.
const STUB_ADDR: u64 = 0x1020_0000;
/// Bytes of RAM: 2 GiB at 0 and 2 GiB at 32 GiB, as the tree describes.
const RAM: &str = "4G";

/// Load addresses that share table slots with the link address 0x200000:
/// on top of the link range (the load once refused with "overlaps its link
/// range"), one page above it (the identity page is then the image's last),
/// and one page below it.
pub const CLASHING_LOADS: [u64; 3] = [0x30_0000, 0x20_1000, 0x1f_f000];

/// Debian's ZCU102 device tree (extracted and cached on first use).
pub fn dtb() -> Result<PathBuf> {
    linux::kernel_package_file(
        Arch::Arm64,
        "./usr/lib/linux-image-*/xilinx/zynqmp-zcu102-rev1.0.dtb",
        "zynqmp-zcu102-rev1.0.dtb",
    )
}

/// Boots `img` on the ZCU102 at `load` with `smp` CPUs.
pub fn run(img: &Image, load: u64, smp: u32, timeout: Duration) -> Result<Outcome> {
    ensure!(
        load.is_multiple_of(0x1000),
        "load address {load:#x} is not 4 KiB aligned"
    );
    ensure!(
        (1..=4).contains(&smp),
        "the ZCU102 has 1 to 4 Cortex-A53s, not {smp}"
    );
    ensure!(
        load + img.mem_size <= DTB_ADDR,
        "the image at {load:#x}+{:#x} would overlap the DTB at {DTB_ADDR:#x}",
        img.mem_size
    );
    let dtb = dtb()?;
    let dir = img
        .bin
        .parent()
        .context("the image has no directory")?
        .join(format!("zcu102-{load:x}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // The tree lists the board's four A53s; with fewer, the tree says so
    // too (hvmm starts every CPU the tree lists).
    let dtb = if smp < 4 {
        let trimmed = dir.join("zcu102.dtb");
        std::fs::copy(&dtb, &trimmed).with_context(|| format!("copying {}", dtb.display()))?;
        let mut fdtput = Command::new("fdtput");
        fdtput.arg("-r").arg(&trimmed);
        fdtput.args((smp..4).map(|c| format!("/cpus/cpu@{c}")));
        let out = fdtput
            .output()
            .context("running fdtput (device-tree-compiler)")?;
        ensure!(
            out.status.success(),
            "fdtput -r of CPUs {smp}..3: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        trimmed
    } else {
        dtb
    };
    let stub = dir.join("stub.bin");
    std::fs::write(&stub, qemu::setup_stub(Arch::Arm64, DTB_ADDR, load)?)
        .with_context(|| format!("writing {}", stub.display()))?;
    let mut cmd = Command::new("qemu-system-aarch64");
    cmd.args(["-M", "xlnx-zcu102,virtualization=on", "-m", RAM])
        .args(["-smp", &smp.to_string()])
        .args(["-nographic", "-semihosting", "-no-reboot"])
        // The board's DisplayPort has an audio device: no host audio.
        .args(["-audiodev", "none,id=none0"])
        .env("QEMU_AUDIO_DRV", "none");
    for (file, addr) in [(&img.bin, load), (&dtb, DTB_ADDR), (&stub, STUB_ADDR)] {
        cmd.arg("-device").arg(format!(
            "loader,file={},addr={addr:#x},force-raw=on",
            file.display()
        ));
    }
    cmd.args(["-device", &format!("loader,addr={STUB_ADDR:#x},cpu-num=0")]);
    let r = qemu::run(&mut cmd, Some(timeout), false);
    let _ = std::fs::remove_dir_all(&dir);
    r
}

/// What a boot that reached Active on `smp` CPUs at `load` prints.
pub fn ok_lines(load: u64, smp: u32) -> Vec<String> {
    vec![
        format!("image at PA {load:#x}-"),
        "(XEN) RAM: 0x0000000000000000 - 0x000000007fffffff (2048 MiB)".into(),
        "(XEN) RAM: 0x0000000800000000 - 0x000000087fffffff (2048 MiB)".into(),
        format!("(XEN) hvmm: reached Active with {smp} CPU(s)"),
        "(XEN) verified ".into(),
        hvmm_boot::audit::RULES.into(),
        "hvmm: boot checks passed".into(),
    ]
}

/// The matrix cases: every clashing load address with 1 and 4 CPUs (those
/// whose name `wanted` accepts).
pub fn test_cases(img: &Image, verbose: bool, wanted: &dyn Fn(&str) -> bool) -> (usize, usize) {
    let (mut passed, mut failed) = (0, 0);
    for load in CLASHING_LOADS {
        for smp in [1, 4] {
            let name = format!("arm64 zcu102 at {load:#x} smp{smp}");
            if !wanted(&name) {
                continue;
            }
            let r = run(img, load, smp, Duration::from_secs(qemu::DEFAULT_TIMEOUT));
            let problems: Vec<String> = match &r {
                Err(e) => vec![format!("{e:#}")],
                Ok(o) => {
                    let mut p = Vec::new();
                    if o.timed_out {
                        p.push("timed out".to_string());
                    } else if o.code != Some(0) {
                        p.push(format!("exit code {:?}, expected 0", o.code));
                    }
                    p.extend(
                        ok_lines(load, smp)
                            .into_iter()
                            .filter(|l| !o.output.contains(l.as_str()))
                            .map(|l| format!("missing {l:?}")),
                    );
                    p.extend(crate::matrix::audit_problem(&o.output));
                    p
                }
            };
            let secs = r.as_ref().map(|o| o.elapsed.as_secs_f64()).unwrap_or(0.0);
            if problems.is_empty() {
                passed += 1;
                println!("PASS {name} ({secs:.2} s)");
            } else {
                failed += 1;
                println!("FAIL {name} ({secs:.2} s): {}", problems.join("; "));
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
    }
    (passed, failed)
}

/// `cargo xtask zcu102`: one boot, its console streamed; the image's exit
/// code.
pub fn command(args: &ZcuArgs) -> Result<i32> {
    let img = crate::image::build(Arch::Arm64)?;
    let o = run(
        &img,
        args.load_addr,
        args.smp,
        Duration::from_secs(args.timeout),
    )?;
    print!("{}", o.output);
    eprintln!("xtask: {}", o.command);
    ensure!(!o.timed_out, "QEMU timed out after {} s", args.timeout);
    Ok(o.code.unwrap_or(1))
}

/// Options of `cargo xtask zcu102`.
#[derive(clap::Args, Debug)]
pub struct ZcuArgs {
    /// Physical load address of the image (4 KiB aligned).
    #[arg(long, value_parser = qemu::parse_u64, default_value = "0x300000")]
    pub load_addr: u64,
    /// Number of CPUs (Cortex-A53s).
    #[arg(long, default_value_t = 4)]
    pub smp: u32,
    /// Kill QEMU and fail after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}
