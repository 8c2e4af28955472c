//! `cargo xtask`: build the bare-metal hvmm image, run it under QEMU, run
//! the QEMU test matrix, install what those need.
//!
//! ```text
//! cargo xtask setup
//! cargo xtask build [--arch arm64|arm32]
//! cargo xtask qemu [--arch arm64|arm32] [--loader direct|uboot|uboot-sim|grub] [--load-addr PA]
//!                  [--smp N] [--ram SIZE] [--gdb] [--bootargs STR] [--timeout SECS]
//!                  [--modules-at PA] [--guest test|linux] [--uboot-cmd booti|bootz|bootm]
//! cargo xtask test-qemu [--arch arm64|arm32] [--verbose] [--filter TEXT]
//! cargo xtask guest-build|guest-smoke [--arch arm64|arm32]
//! cargo xtask linux-assets|linux-smoke [--arch arm64|arm32]
//! cargo xtask examples | example-host | example-readme | example-el2 [--verbose]
//! cargo xtask fuzz [--seconds N] [--target NAME]...
//! ```
//!
//! Images are built into `$CARGO_TARGET_DIR/hvmm-image` (default
//! `target/hvmm-image`): `<arch>/hvmm.bin` (raw, what loaders take) and
//! `<arch>/hvmm.elf` (for gdb), next to the image crate's own cargo output.

mod compare;
mod examples;
mod fuzz;
mod grub;
mod guest;
mod image;
mod linux;
mod matrix;
mod qemu;
mod setup;
mod uboot;
mod zcu102;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "hvmm images, QEMU runs and tests")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// The two architectures hvmm runs on.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Arch {
    /// AArch64 at EL2 (`aarch64-unknown-none`, QEMU cortex-a57).
    Arm64,
    /// AArch32 in HYP mode, LPAE (`armv7a-none-eabi`, QEMU cortex-a15).
    Arm32,
}

impl Arch {
    /// The Rust target triple.
    pub fn target(self) -> &'static str {
        match self {
            Arch::Arm64 => "aarch64-unknown-none",
            Arch::Arm32 => "armv7a-none-eabi",
        }
    }
    /// The name used in paths and logs.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Arm64 => "arm64",
            Arch::Arm32 => "arm32",
        }
    }
}

/// How the image is put in memory and entered.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Loader {
    /// QEMU's `-kernel` (or, with `--load-addr`, raw loaders and a register
    /// set-up stub).
    Direct,
    /// The real U-Boot (Debian's `u-boot-qemu`, `qemu_arm64` / `qemu_arm`):
    /// a boot script on a FAT disk loads hvmm, the DTB and typed modules,
    /// adds the module nodes to /chosen with `fdt` commands, and starts hvmm
    /// with `booti` (arm64) / `bootz` (arm32).
    Uboot,
    /// An imitation of U-Boot's placement: image, DTB and typed
    /// `/chosen/module@` modules put at chosen addresses by QEMU's `-device
    /// loader`, entered through a register set-up stub (no firmware runs).
    UbootSim,
    /// The real GRUB (`xen_hypervisor` + three untyped `xen_module`s) on
    /// the real UEFI firmware (arm64 only): hvmm enters as an EFI
    /// application.
    Grub,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the other commands need (Rust targets, QEMU, dtc, mtools, dosfstools,
    /// GRUB and UEFI pieces, Debian's U-Boot for QEMU and u-boot-tools).
    Setup,
    /// Build the image (release) and print the path of the raw binary.
    Build {
        #[arg(long, value_enum, default_value = "arm64")]
        arch: Arch,
    },
    /// Build the image and run it under QEMU; exits with the image's exit code.
    Qemu(qemu::QemuArgs),
    /// Run the core's and the DTB reader's tests under Miri (nightly; `scripts/miri`).
    Miri,
    /// Run every cargo-fuzz target in fuzz/ for N seconds each (nightly and
    /// cargo-fuzz are installed when missing); print executions and findings
    /// per target; exit 1 naming the inputs if anything was found.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Only this target (repeatable; default: all of them).
        #[arg(long = "target")]
        targets: Vec<String>,
    },
    /// Run the benchmarks against the peers and write docs/BENCHMARKS.md.
    Bench {
        /// Fewer repetitions (a smoke run).
        #[arg(long)]
        quick: bool,
    },
    /// Boot on QEMU and on the machine model with the same board, image
    /// layout and load address, and check the boot logs agree line for line.
    CompareLogs {
        /// Only this architecture.
        #[arg(long, value_enum)]
        arch: Option<Arch>,
    },
    /// Run the QEMU test matrix (calls setup first).
    TestQemu {
        /// Only this architecture (default: both).
        #[arg(long, value_enum)]
        arch: Option<Arch>,
        /// Print every run's console output, not only failing ones.
        #[arg(long)]
        verbose: bool,
        /// Only the cases whose name holds this text (e.g. "uboot at").
        #[arg(long)]
        filter: Option<String>,
    },
    /// Build the test guest (crates/hvmm-guest) and print the raw image's path.
    GuestBuild {
        #[arg(long, value_enum, default_value = "arm64")]
        arch: Arch,
    },
    /// Run the test guest directly on QEMU (EL1 / SVC, no hypervisor).
    GuestSmoke(guest::SmokeArgs),
    /// Fetch Debian's kernel and busybox and build the initramfs (cached).
    LinuxAssets {
        #[arg(long, value_enum, default_value = "arm64")]
        arch: Arch,
    },
    /// Boot the Linux assets directly on QEMU (no hypervisor).
    LinuxSmoke(linux::SmokeArgs),
    /// Run every example and check its output: the host example, the
    /// README's snippet as a crate outside the workspace, el2-hello on QEMU.
    Examples,
    /// Run `crates/hvmm/examples/tables.rs` on the host and check its output.
    ExampleHost,
    /// Build and run the README's "Use hvmm in your hypervisor" snippet as a
    /// crate of its own, outside the workspace, and check its output.
    ExampleReadme,
    /// Build examples/el2-hello, boot it at EL2 on QEMU, check its output and
    /// its exit status.
    ExampleEl2 {
        /// Stream QEMU's console.
        #[arg(long)]
        verbose: bool,
    },
    /// Boot the arm64 image on QEMU's Xilinx ZCU102 (RAM from PA 0: loads on
    /// top of the image's own link range).
    Zcu102(zcu102::ZcuArgs),
}

/// The repository root (the workspace holding xtask).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// `cargo run --release -p hvmm-bench -- --write docs/BENCHMARKS.md`.
fn bench(quick: bool) -> anyhow::Result<i32> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["run", "--release", "-p", "hvmm-bench", "--", "--write"])
        .arg(root().join("docs/BENCHMARKS.md"));
    if quick {
        cmd.arg("--quick");
    }
    let status = cmd.status()?;
    Ok(status.code().unwrap_or(1))
}

fn main() {
    let cli = Cli::parse();
    let r: Result<i32> = match cli.cmd {
        Cmd::Setup => setup::setup().map(|()| 0),
        Cmd::Build { arch } => image::build(arch).map(|img| {
            println!("{}", img.bin.display());
            0
        }),
        Cmd::Qemu(args) => qemu::qemu_command(&args),
        Cmd::TestQemu {
            arch,
            verbose,
            filter,
        } => matrix::test_qemu(arch, verbose, filter.as_deref()),
        Cmd::GuestBuild { arch } => guest::build_command(arch),
        Cmd::GuestSmoke(args) => guest::smoke(&args),
        Cmd::LinuxAssets { arch } => linux::assets_command(arch),
        Cmd::LinuxSmoke(args) => linux::smoke(&args),
        Cmd::CompareLogs { arch } => compare::compare_command(arch),
        Cmd::Zcu102(args) => zcu102::command(&args),
        Cmd::Bench { quick } => bench(quick),
        Cmd::Examples => examples::host()
            .and_then(|()| examples::readme())
            .and_then(|()| examples::el2(false))
            .map(|()| 0),
        Cmd::ExampleHost => examples::host().map(|()| 0),
        Cmd::ExampleReadme => examples::readme().map(|()| 0),
        Cmd::ExampleEl2 { verbose } => examples::el2(verbose).map(|()| 0),
        Cmd::Fuzz { seconds, targets } => fuzz::fuzz_command(seconds, &targets),
        Cmd::Miri => {
            let status = std::process::Command::new(root().join("scripts/miri")).status();
            status
                .map(|s| s.code().unwrap_or(1))
                .map_err(anyhow::Error::from)
        }
    };
    match r {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::exit(1);
        }
    }
}
