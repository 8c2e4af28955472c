//! Building the image and turning its ELF into the raw binary loaders take
//! (the toolchain's `rust-objcopy` is broken here: the `object` crate does
//! it), with checks of the headers the loaders rely on.

use crate::{root, Arch};
use anyhow::{bail, ensure, Context, Result};
use object::{Object, ObjectSection, ObjectSymbol, SectionKind};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the image is linked (`XEN_VIRT_START`).
pub const LINK_ADDR: u64 = 0x20_0000;
/// The image must fit in 8 MiB (its VA range, `XEN_VIRT_SIZE`).
pub const MAX_IMAGE: u64 = 0x80_0000;

/// A built image.
#[derive(Debug, Clone)]
pub struct Image {
    /// The raw binary.
    pub bin: PathBuf,
    /// The ELF (symbols, for gdb).
    pub elf: PathBuf,
    /// Bytes the image occupies in memory, BSS included (`_end - _start`).
    pub mem_size: u64,
}

/// The directory images are built into: `$CARGO_TARGET_DIR/hvmm-image`, or
/// `target/hvmm-image` in the repository.
pub fn out_root() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("hvmm-image"),
        _ => root().join("target").join("hvmm-image"),
    }
}

/// Builds the image for `arch` in release mode and extracts the raw binary.
pub fn build(arch: Arch) -> Result<Image> {
    build_variant(arch, false)
}

/// Builds the image, or with `big` its `big-image` variant (6 MiB more of
/// BSS: the image then spans the four level-3 tables of its 8 MiB range),
/// in a build directory of its own.
pub fn build_variant(arch: Arch, big: bool) -> Result<Image> {
    let out = out_root();
    let cargo_target = out.join(if big { "cargo-big" } else { "cargo" });
    let manifest = root().join("crates/hvmm-image/Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--target",
        arch.target(),
        "--manifest-path",
    ])
    .arg(&manifest);
    if big {
        cmd.args(["--features", "big-image"]);
    }
    let status = cmd
        .env("CARGO_TARGET_DIR", &cargo_target)
        // The outer cargo's flags are for the host build of xtask.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .context("running cargo to build the image")?;
    ensure!(
        status.success(),
        "building the {} image failed ({status})",
        arch.name()
    );

    let elf_path = cargo_target
        .join(arch.target())
        .join("release")
        .join("hvmm");
    let elf =
        std::fs::read(&elf_path).with_context(|| format!("reading {}", elf_path.display()))?;
    let (raw, mem_size) = elf_to_raw(&elf)?;
    check_header(arch, &raw, mem_size)?;

    let dir = out.join(if big {
        format!("{}-big", arch.name())
    } else {
        arch.name().to_string()
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let bin = dir.join("hvmm.bin");
    write(&bin, &raw)?;
    let elf_copy = dir.join("hvmm.elf");
    write(&elf_copy, &elf)?;
    Ok(Image {
        bin,
        elf: elf_copy,
        mem_size,
    })
}

fn write(path: &Path, data: &[u8]) -> Result<()> {
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}

/// The file-backed allocated sections laid out from the link address, padded
/// to 4 KiB; and `_end - _start`.
pub fn elf_to_raw(elf: &[u8]) -> Result<(Vec<u8>, u64)> {
    let file = object::File::parse(elf).context("parsing the image ELF")?;
    let sym = |name: &str| -> Result<u64> {
        file.symbols()
            .find(|s| s.name() == Ok(name))
            .map(|s| s.address())
            .with_context(|| format!("symbol {name} missing from the image"))
    };
    let start = sym("_start")?;
    let end = sym("_end")?;
    ensure!(
        start == LINK_ADDR,
        "_start is at {start:#x}, expected {LINK_ADDR:#x}"
    );
    ensure!(
        end > start && end - start <= MAX_IMAGE,
        "image size {:#x} exceeds 2 MiB",
        end - start
    );

    let raw = sections_to_raw(&file, start, end, "image")?;
    Ok((raw, end - start))
}

/// The file-backed, allocated sections of `file` (everything but BSS,
/// debug, notes and the like) laid out from `start`, each checked to lie in
/// `[start, end)`, padded to 4 KiB. `what` names the binary in errors.
pub fn sections_to_raw(
    file: &object::File<'_>,
    start: u64,
    end: u64,
    what: &str,
) -> Result<Vec<u8>> {
    let mut raw: Vec<u8> = Vec::new();
    for s in file.sections() {
        if matches!(
            s.kind(),
            SectionKind::UninitializedData
                | SectionKind::UninitializedTls
                | SectionKind::Metadata
                | SectionKind::Debug
                | SectionKind::Other
                | SectionKind::Note
                | SectionKind::Linker
                | SectionKind::OtherString
        ) || s.address() == 0
            || s.size() == 0
            || s.file_range().is_none()
        {
            continue;
        }
        let data = s
            .data()
            .with_context(|| format!("reading section {:?}", s.name()))?;
        ensure!(
            s.address() >= start && s.address() + s.size() <= end,
            "section {:?} outside the {what}",
            s.name()
        );
        let off = (s.address() - start) as usize;
        if raw.len() < off + data.len() {
            raw.resize(off + data.len(), 0);
        }
        raw[off..off + data.len()].copy_from_slice(data);
    }
    ensure!(!raw.is_empty(), "no loadable section in the {what}");
    raw.resize(raw.len().div_ceil(0x1000) * 0x1000, 0);
    Ok(raw)
}

fn le32(b: &[u8], off: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(w)
}

fn le64(b: &[u8], off: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(w)
}

/// Checks the header loaders rely on: the arm64 Image / PE header or the
/// arm32 zImage header.
pub fn check_header(arch: Arch, raw: &[u8], mem_size: u64) -> Result<()> {
    ensure!(raw.len() >= 0x1000, "image shorter than its header page");
    match arch {
        Arch::Arm64 => {
            ensure!(
                &raw[0..2] == b"MZ",
                "arm64 image does not start with \"MZ\""
            );
            ensure!(&raw[0x38..0x3c] == b"ARM\x64", "arm64 Image magic missing");
            ensure!(le64(raw, 8) == 0, "text_offset is not 0");
            ensure!(
                le64(raw, 16) == mem_size,
                "image_size field {:#x} != {mem_size:#x}",
                le64(raw, 16)
            );
            ensure!(le32(raw, 0x3c) == 0x40, "PE header offset is not 0x40");
            let pe = object::read::pe::PeFile64::parse(raw)
                .context("the arm64 image is not a valid PE32+ file")?;
            let opt = &pe.nt_headers().optional_header;
            ensure!(
                opt.section_alignment.get(object::LittleEndian) == 0x1000,
                "PE SectionAlignment is not 0x1000"
            );
            ensure!(
                opt.subsystem.get(object::LittleEndian) == 10,
                "PE subsystem is not EFI application"
            );
            let entry = u64::from(opt.address_of_entry_point.get(object::LittleEndian));
            ensure!(
                entry > 0 && entry < mem_size,
                "PE entry point {entry:#x} outside the image"
            );
        }
        Arch::Arm32 => {
            ensure!(
                le32(raw, 0x24) == 0x016f_2818,
                "zImage magic missing at 0x24"
            );
            ensure!(
                le32(raw, 0x28) == 0,
                "zImage start is not 0 (position independent)"
            );
            ensure!(
                le32(raw, 0x2c) as usize == raw.len(),
                "zImage end {:#x} != file size {:#x}",
                le32(raw, 0x2c),
                raw.len()
            );
        }
    }
    if raw.len() as u64 > mem_size {
        bail!(
            "raw image {:#x} larger than its memory size {mem_size:#x}",
            raw.len()
        );
    }
    Ok(())
}
