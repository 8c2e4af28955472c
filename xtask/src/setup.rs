//! `cargo xtask setup`: install what building and running the image needs,
//! and fail loudly when it cannot be had.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

/// Rust targets the image is built for.
pub const TARGETS: [&str; 2] = ["aarch64-unknown-none", "armv7a-none-eabi"];
/// Binaries the QEMU runs need, and the Debian packages providing them.
pub const TOOLS: [(&str, &str); 12] = [
    ("qemu-system-aarch64", "qemu-system-arm"),
    ("qemu-system-arm", "qemu-system-arm"),
    ("dtc", "device-tree-compiler"),
    ("mcopy", "mtools"),
    ("mkfs.vfat", "dosfstools"),
    // GRUB + UEFI boots: the host's grub-mkimage builds the arm64 GRUB
    // (its modules are fetched by crate::grub), the firmware is a file.
    ("grub-mkimage", "grub-common"),
    (crate::grub::FIRMWARE, "qemu-efi-aarch64"),
    ("dpkg-deb", "dpkg"),
    // Real U-Boot boots (crate::uboot): Debian's U-Boot builds for QEMU's
    // virt (an `all` package), mkimage and mkenvimage.
    (crate::uboot::FIRMWARE_ARM64, "u-boot-qemu"),
    (crate::uboot::FIRMWARE_ARM32, "u-boot-qemu"),
    ("mkimage", "u-boot-tools"),
    // Guest Linux assets: members of .deb data archives (crate::linux).
    ("tar", "tar"),
];

/// Whether `bin` is on PATH (or in the sbin directories apt installs to);
/// an absolute path is checked as it is.
pub fn have(bin: &str) -> bool {
    if bin.starts_with('/') {
        return Path::new(bin).is_file();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].iter().map(Into::into))
        .any(|d| Path::new(&d).join(bin).is_file())
}

fn missing_targets() -> Result<Vec<&'static str>> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("running rustup (needed to add the bare-metal targets)")?;
    if !out.status.success() {
        bail!(
            "rustup target list failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let installed = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok(TARGETS
        .iter()
        .copied()
        .filter(|t| !installed.lines().any(|l| l.trim() == *t))
        .collect())
}

fn missing_tools() -> Vec<(&'static str, &'static str)> {
    TOOLS.iter().copied().filter(|(b, _)| !have(b)).collect()
}

/// Installs what is missing.
pub fn setup() -> Result<()> {
    let targets = missing_targets()?;
    if !targets.is_empty() {
        eprintln!("xtask setup: rustup target add {}", targets.join(" "));
        let st = Command::new("rustup")
            .args(["target", "add"])
            .args(&targets)
            .status()
            .context("running rustup")?;
        if !st.success() {
            bail!("rustup target add {} failed ({st})", targets.join(" "));
        }
        let still = missing_targets()?;
        if !still.is_empty() {
            bail!(
                "Rust targets still missing after rustup: {}",
                still.join(" ")
            );
        }
    }

    let tools = missing_tools();
    if !tools.is_empty() {
        let mut pkgs: Vec<&str> = tools.iter().map(|(_, p)| *p).collect();
        pkgs.sort_unstable();
        pkgs.dedup();
        let names: Vec<&str> = tools.iter().map(|(b, _)| *b).collect();
        eprintln!(
            "xtask setup: missing {}; apt-get install -y {}",
            names.join(", "),
            pkgs.join(" ")
        );
        let st = Command::new("apt-get")
            .arg("update")
            .status()
            .context("running apt-get update")?;
        if !st.success() {
            bail!(
                "apt-get update failed ({st}); install {} by hand",
                pkgs.join(" ")
            );
        }
        let st = Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&pkgs)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get install")?;
        if !st.success() {
            bail!("apt-get install {} failed ({st})", pkgs.join(" "));
        }
        let still: Vec<&str> = missing_tools().iter().map(|(b, _)| *b).collect();
        if !still.is_empty() {
            bail!("still missing after apt-get: {}", still.join(", "));
        }
    }
    eprintln!(
        "xtask setup: Rust targets {} and {} present",
        TARGETS.join(", "),
        TOOLS.map(|t| t.0).join(", ")
    );
    Ok(())
}
