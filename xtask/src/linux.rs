//! A real Linux guest's assets: Debian bookworm's kernel and a busybox
//! initramfs, and `linux-smoke`, which boots them directly on QEMU (no
//! hvmm) to prove the assets before a hypervisor runs them.
//!
//! The packages are fetched like GRUB's arm64 modules in [`crate::grub`]:
//! `apt-get download` with apt's architecture options (`arm64` or `armhf`)
//! and apt's state kept under the cache directory, then `dpkg-deb`. The
//! kernel is the regular package the metapackage (`linux-image-arm64`,
//! `linux-image-armmp-lpae`) depends on; on arm64 its `-unsigned` build
//! (the same kernel without the Secure Boot signature).
//!
//! Everything is cached under `target/guest/<arch>/` (see
//! [`crate::guest::out_root`]); a second run downloads nothing:
//!
//! | file | what |
//! |---|---|
//! | `vmlinuz` | the package's `/boot/vmlinuz-*`, as shipped |
//! | `Image` (arm64) | the uncompressed Image (QEMU and loaders take it) |
//! | `Image.gz` (arm64) | the same, gzip-compressed |
//! | `zImage` (arm32) | the self-decompressing zImage (= `vmlinuz`) |
//! | `initramfs.cpio.gz` | cpio "newc", gzip: busybox and `/init` |
//! | `linux-assets.txt` | packages, versions, which file is which, header fields |

use crate::guest::out_root;
use crate::qemu;
use crate::Arch;
use anyhow::{bail, ensure, Context, Result};
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The line `/init` prints.
pub const INIT_LINE: &str = "hvmm-guest-linux: init reached";
/// What the kernel prints when it powers off (PSCI SYSTEM_OFF follows).
pub const POWER_DOWN: &str = "reboot: Power down";

/// The `/init` of the initramfs.
pub fn init_script() -> String {
    format!(
        "#!/bin/busybox sh\n\
         # hvmm guest initramfs: prove userspace runs, then power off.\n\
         /bin/busybox mount -t proc proc /proc\n\
         /bin/busybox mount -t sysfs sysfs /sys\n\
         /bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null\n\
         echo '{INIT_LINE}'\n\
         /bin/busybox poweroff -f\n"
    )
}

/// Debian's name of the architecture.
fn deb_arch(arch: Arch) -> &'static str {
    match arch {
        Arch::Arm64 => "arm64",
        Arch::Arm32 => "armhf",
    }
}

/// The kernel metapackage.
fn kernel_meta(arch: Arch) -> &'static str {
    match arch {
        Arch::Arm64 => "linux-image-arm64",
        Arch::Arm32 => "linux-image-armmp-lpae",
    }
}

/// The assets of one architecture.
#[derive(Debug, Clone)]
pub struct Assets {
    /// What QEMU's `-kernel` takes: the arm64 `Image` or the arm32 `zImage`.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initramfs: PathBuf,
    /// The description file.
    pub manifest: PathBuf,
}

fn dir(arch: Arch) -> PathBuf {
    out_root().join(arch.name())
}

fn assets_in(arch: Arch) -> Assets {
    let d = dir(arch);
    Assets {
        kernel: d.join(match arch {
            Arch::Arm64 => "Image",
            Arch::Arm32 => "zImage",
        }),
        initramfs: d.join("initramfs.cpio.gz"),
        manifest: d.join("linux-assets.txt"),
    }
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

/// apt-get / apt-cache options for another architecture, apt's state under
/// `apt` (the system's lists and cache are not touched).
fn apt_opts(arch: Arch, apt: &Path) -> Vec<String> {
    let a = deb_arch(arch);
    vec![
        "-o".into(),
        format!("APT::Architecture={a}"),
        "-o".into(),
        format!("APT::Architectures::={a}"),
        "-o".into(),
        format!("Dir::State::Lists={}", apt.join("lists").display()),
        "-o".into(),
        format!("Dir::Cache={}", apt.join("cache").display()),
        "-o".into(),
        "APT::Sandbox::User=root".into(),
    ]
}

/// The versioned kernel package the metapackage depends on (arm64: its
/// `-unsigned` build when apt knows it).
fn resolve_kernel(arch: Arch, opts: &[String]) -> Result<String> {
    let meta = kernel_meta(arch);
    let deps = run_checked(
        Command::new("apt-cache").args(opts).args(["depends", meta]),
        &format!("apt-cache depends {meta}"),
    )?;
    let dep = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .map(str::trim)
        .find(|d| d.starts_with("linux-image-"))
        .with_context(|| format!("{meta} depends on no linux-image-* package:\n{deps}"))?
        .to_string();
    if arch == Arch::Arm64 {
        let unsigned = format!("{dep}-unsigned");
        let known = Command::new("apt-cache")
            .args(opts)
            .args(["show", &unsigned])
            .output()
            .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
        if known {
            return Ok(unsigned);
        }
    }
    Ok(dep)
}

/// Downloads `pkgs` (apt's lists refreshed first) into `debs`; returns the
/// .deb of each.
fn download(arch: Arch, cache: &Path, pkgs: &[&str]) -> Result<Vec<PathBuf>> {
    let apt = cache.join("apt");
    for d in [
        apt.join("lists/partial"),
        apt.join("cache/archives/partial"),
    ] {
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    }
    let opts = apt_opts(arch, &apt);
    eprintln!(
        "xtask: apt-get update ({} package lists) into {}",
        deb_arch(arch),
        apt.display()
    );
    // A list that fails (a mirror mid-sync) is not fatal if the packages
    // still resolve: the download below says so if they do not.
    if let Err(e) = run_checked(
        Command::new("apt-get").args(&opts).args(["-q", "update"]),
        "apt-get update",
    ) {
        eprintln!("xtask: warning: {e:#}");
    }
    let mut names: Vec<String> = pkgs.iter().map(|p| p.to_string()).collect();
    names.insert(0, resolve_kernel(arch, &opts)?);
    let debs = cache.join("debs");
    let _ = std::fs::remove_dir_all(&debs);
    std::fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    eprintln!("xtask: apt-get download {}", names.join(" "));
    run_checked(
        Command::new("apt-get")
            .args(&opts)
            .args(["-q", "download"])
            .args(&names)
            .current_dir(&debs),
        &format!("apt-get download {}", names.join(" ")),
    )?;
    let files: Vec<PathBuf> = std::fs::read_dir(&debs)
        .with_context(|| format!("reading {}", debs.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names
        .iter()
        .map(|n| {
            files
                .iter()
                .find(|p| {
                    p.file_name()
                        .and_then(|f| f.to_str())
                        .is_some_and(|f| f.starts_with(&format!("{n}_")) && f.ends_with(".deb"))
                })
                .cloned()
                .with_context(|| format!("apt-get download left no {n} .deb in {}", debs.display()))
        })
        .collect()
}

/// `Package`, `Version` and `Architecture` of a .deb.
fn deb_fields(deb: &Path) -> Result<(String, String, String)> {
    let out = run_checked(
        Command::new("dpkg-deb")
            .args(["-f"])
            .arg(deb)
            .args(["Package", "Version", "Architecture"]),
        "dpkg-deb -f",
    )?;
    let get = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}: ")))
            .map(|s| s.trim().to_string())
            .with_context(|| format!("{} has no {k} field", deb.display()))
    };
    Ok((get("Package")?, get("Version")?, get("Architecture")?))
}

/// One member of a .deb's data archive (a `tar` wildcard), read whole.
fn deb_member(deb: &Path, pattern: &str) -> Result<Vec<u8>> {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("running dpkg-deb --fsys-tarfile")?;
    let pipe = dpkg.stdout.take().context("dpkg-deb's output")?;
    let out = Command::new("tar")
        .args(["-xO", "--wildcards", pattern])
        .stdin(pipe)
        .output()
        .context("running tar")?;
    let _ = dpkg.wait();
    ensure!(
        out.status.success() && !out.stdout.is_empty(),
        "{} holds no {pattern}: {}",
        deb.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(out.stdout)
}

/// A cpio "newc" archive, written entry by entry.
pub struct Cpio {
    data: Vec<u8>,
    ino: u32,
}

impl Default for Cpio {
    fn default() -> Self {
        Self::new()
    }
}

impl Cpio {
    /// An empty archive.
    pub fn new() -> Self {
        Cpio {
            data: Vec::new(),
            ino: 1,
        }
    }

    fn pad4(&mut self) {
        while !self.data.len().is_multiple_of(4) {
            self.data.push(0);
        }
    }

    /// One entry: `mode` holds the file type bits; `rdev` is (major, minor)
    /// for device nodes.
    pub fn entry(&mut self, name: &str, mode: u32, body: &[u8], rdev: (u32, u32)) {
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            if mode & 0o170000 == 0o040000 { 2 } else { 1 },
            0, // mtime
            body.len() as u32,
            0, // dev major
            0, // dev minor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        self.ino += 1;
        self.data.extend_from_slice(b"070701");
        for f in fields {
            self.data.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.data.extend_from_slice(name.as_bytes());
        self.data.push(0);
        self.pad4();
        self.data.extend_from_slice(body);
        self.pad4();
    }

    /// A directory.
    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[], (0, 0));
    }

    /// A regular file.
    pub fn file(&mut self, name: &str, perm: u32, body: &[u8]) {
        self.entry(name, 0o100000 | perm, body, (0, 0));
    }

    /// A symbolic link.
    pub fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120777, target.as_bytes(), (0, 0));
    }

    /// A character device.
    pub fn chardev(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, 0o020000 | perm, &[], (major, minor));
    }

    /// The archive, with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[], (0, 0));
        // The kernel reads whole 512-byte blocks happily; pad like cpio(1).
        while !self.data.len().is_multiple_of(512) {
            self.data.push(0);
        }
        self.data
    }
}

/// The initramfs: busybox, a shell link, the console node and `/init`.
pub fn initramfs(busybox: &[u8]) -> Result<Vec<u8>> {
    let mut c = Cpio::new();
    for d in [
        "bin", "sbin", "dev", "proc", "sys", "tmp", "usr", "usr/bin", "usr/sbin",
    ] {
        c.dir(d);
    }
    c.file("bin/busybox", 0o755, busybox);
    c.symlink("bin/sh", "busybox");
    c.chardev("dev/console", 0o600, 5, 1);
    c.chardev("dev/null", 0o666, 1, 3);
    c.file("init", 0o755, init_script().as_bytes());
    gzip(&c.finish())
}

fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::best());
    enc.write_all(data).context("gzip")?;
    enc.finish().context("gzip")
}

fn gunzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    GzDecoder::new(data)
        .read_to_end(&mut out)
        .context("decompressing the gzip kernel")?;
    Ok(out)
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn le64(b: &[u8], off: usize) -> u64 {
    u64::from(le32(b, off)) | (u64::from(le32(b, off + 4)) << 32)
}

fn write(path: &Path, data: &[u8]) -> Result<()> {
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}

/// The kernel files of `arch` from `vmlinuz`; lines for the manifest.
fn kernel_files(arch: Arch, d: &Path, vmlinuz: &[u8]) -> Result<Vec<String>> {
    let mut m = Vec::new();
    write(&d.join("vmlinuz"), vmlinuz)?;
    match arch {
        Arch::Arm64 => {
            let (image, gz, what) = if vmlinuz.starts_with(&[0x1f, 0x8b]) {
                (gunzip(vmlinuz)?, vmlinuz.to_vec(), "gzip-compressed Image")
            } else if vmlinuz.len() > 8 && &vmlinuz[4..8] == b"zimg" {
                bail!("vmlinuz is an EFI zboot image: its payload needs the zboot header's codec (not handled)");
            } else {
                (
                    vmlinuz.to_vec(),
                    gzip(vmlinuz)?,
                    "plain (uncompressed) Image",
                )
            };
            ensure!(
                image.len() > 64 && &image[0x38..0x3c] == b"ARM\x64",
                "the kernel is not an arm64 Image"
            );
            write(&d.join("Image"), &image)?;
            write(&d.join("Image.gz"), &gz)?;
            m.push(format!(
                "vmlinuz = as shipped in the package: {what}, {} bytes",
                vmlinuz.len()
            ));
            m.push(format!(
                "Image = uncompressed arm64 Image, {} bytes",
                image.len()
            ));
            m.push(format!(
                "Image.gz = gzip of Image, {} bytes ({})",
                gz.len(),
                if vmlinuz.starts_with(&[0x1f, 0x8b]) {
                    "the package's file"
                } else {
                    "made by xtask"
                }
            ));
            m.push(format!(
                "Image header: text_offset {:#x}, image_size {:#x}, flags {:#x}",
                le64(&image, 8),
                le64(&image, 16),
                le64(&image, 24)
            ));
        }
        Arch::Arm32 => {
            ensure!(
                vmlinuz.len() > 0x30 && le32(vmlinuz, 0x24) == 0x016f_2818,
                "the kernel is not a zImage"
            );
            write(&d.join("zImage"), vmlinuz)?;
            m.push(format!(
                "vmlinuz = zImage = as shipped (self-decompressing), {} bytes",
                vmlinuz.len()
            ));
            m.push(format!(
                "zImage header: start {:#x}, end {:#x}",
                le32(vmlinuz, 0x28),
                le32(vmlinuz, 0x2c)
            ));
        }
    }
    Ok(m)
}

/// The assets of `arch`, fetched and built on first use (cached).
pub fn assets(arch: Arch) -> Result<Assets> {
    let a = assets_in(arch);
    if a.kernel.is_file() && a.initramfs.is_file() && a.manifest.is_file() {
        return Ok(a);
    }
    let d = dir(arch);
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    let debs = download(arch, &d, &["busybox-static"])?;
    let (kdeb, bdeb) = (&debs[0], &debs[1]);
    let mut m = vec![format!(
        "# hvmm guest Linux assets ({}), Debian bookworm",
        arch.name()
    )];
    for deb in [kdeb, bdeb] {
        let (p, v, arc) = deb_fields(deb)?;
        m.push(format!(
            "package = {p} {v} {arc} ({})",
            deb.file_name().unwrap_or_default().to_string_lossy()
        ));
    }
    let vmlinuz = deb_member(kdeb, "./boot/vmlinuz-*")?;
    m.extend(kernel_files(arch, &d, &vmlinuz)?);
    let busybox = deb_member(bdeb, "./bin/busybox")?;
    let initrd = initramfs(&busybox)?;
    write(&a.initramfs, &initrd)?;
    m.push(format!(
        "initramfs.cpio.gz = cpio newc, gzip, {} bytes: /bin/busybox ({} bytes, static), /bin/sh, /dev/console, /dev/null, /init",
        initrd.len(),
        busybox.len()
    ));
    m.push(format!("init prints = {INIT_LINE}"));
    let mut text = m.join("\n");
    text.push('\n');
    // The manifest last: its presence says the cache is complete.
    write(&a.manifest, text.as_bytes())?;
    Ok(a)
}

/// A file of Debian's kernel package for `arch` (`pattern`: a `tar` wildcard
/// such as `./usr/lib/linux-image-*/xilinx/zynqmp-zcu102-rev1.0.dtb`),
/// extracted once into the assets directory as `name` (cached). The package
/// is the one the Linux assets come from; it is downloaded again if its
/// .deb is gone.
pub fn kernel_package_file(arch: Arch, pattern: &str, name: &str) -> Result<PathBuf> {
    let d = dir(arch);
    let out = d.join(name);
    if out.is_file() {
        return Ok(out);
    }
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    let cached = std::fs::read_dir(d.join("debs")).ok().and_then(|rd| {
        rd.filter_map(|e| e.ok().map(|e| e.path())).find(|p| {
            p.file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with("linux-image-") && f.ends_with(".deb"))
        })
    });
    let kdeb = match cached {
        Some(k) => k,
        None => download(arch, &d, &[])?.remove(0),
    };
    let bytes = deb_member(&kdeb, pattern)?;
    write(&out, &bytes)?;
    Ok(out)
}

/// `cargo xtask linux-assets`.
pub fn assets_command(arch: Arch) -> Result<i32> {
    let a = assets(arch)?;
    print!(
        "{}",
        std::fs::read_to_string(&a.manifest)
            .with_context(|| format!("reading {}", a.manifest.display()))?
    );
    println!(
        "kernel: {}\ninitramfs: {}",
        a.kernel.display(),
        a.initramfs.display()
    );
    Ok(0)
}

/// `cargo xtask linux-smoke` options.
#[derive(clap::Args, Debug, Clone)]
pub struct SmokeArgs {
    /// Architecture.
    #[arg(long, value_enum, default_value = "arm64")]
    pub arch: Arch,
    /// RAM.
    #[arg(long, default_value = "256M")]
    pub ram: String,
    /// Number of CPUs.
    #[arg(long, default_value_t = 1)]
    pub smp: u32,
    /// Print the console.
    #[arg(long)]
    pub verbose: bool,
    /// Kill QEMU and fail after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

/// `cargo xtask linux-smoke`: the kernel and initramfs on QEMU directly;
/// passes when `/init` printed its line and the kernel powered the machine
/// off (QEMU exits by itself with 0).
pub fn smoke(s: &SmokeArgs) -> Result<i32> {
    let a = assets(s.arch)?;
    let (bin, machine, cpu) = match s.arch {
        Arch::Arm64 => ("qemu-system-aarch64", "virt", "cortex-a57"),
        Arch::Arm32 => ("qemu-system-arm", "virt,highmem=off", "cortex-a15"),
    };
    let mut cmd = Command::new(bin);
    cmd.args(["-M", machine, "-cpu", cpu, "-m", &s.ram, "-smp"])
        .arg(s.smp.to_string())
        .args(["-nographic", "-no-reboot", "-kernel"])
        .arg(&a.kernel)
        .arg("-initrd")
        .arg(&a.initramfs)
        .args(["-append", "console=ttyAMA0 quiet panic=-1 rdinit=/init"]);
    let o = qemu::run(&mut cmd, Some(Duration::from_secs(s.timeout)), s.verbose)?;
    let mut bad = Vec::new();
    if o.timed_out {
        bad.push(format!(
            "QEMU did not exit by itself within {} s",
            s.timeout
        ));
    } else if o.code != Some(0) {
        bad.push(format!("QEMU exited with {:?}", o.code));
    }
    let lines: Vec<&str> = o.output.lines().map(str::trim_end).collect();
    if !lines.contains(&INIT_LINE) {
        bad.push(format!("no {INIT_LINE:?} line"));
    }
    if !o.output.contains(POWER_DOWN) {
        bad.push(format!("the kernel did not power off (no {POWER_DOWN:?})"));
    }
    if o.output.contains("Kernel panic") {
        bad.push("the kernel panicked".into());
    }
    println!(
        "linux-smoke {}: {} in {:.2} s",
        s.arch.name(),
        if bad.is_empty() { "pass" } else { "FAIL" },
        o.elapsed.as_secs_f64()
    );
    if !bad.is_empty() {
        if !s.verbose {
            println!("  $ {}", o.command);
            for l in &lines {
                println!("  | {l}");
            }
        }
        for b in &bad {
            println!("  - {b}");
        }
        bail!("linux-smoke {} failed", s.arch.name());
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_newc_and_aligned() {
        let mut c = Cpio::new();
        c.file("init", 0o755, b"#!/bin/sh\n");
        let data = c.finish();
        assert!(data.starts_with(b"070701"));
        // Header (110) + "init\0" (5) padded to 4 = 116; body at 116.
        assert_eq!(&data[116..126], b"#!/bin/sh\n");
        assert_eq!(data.len() % 512, 0);
        let trailer = data.windows(10).position(|w| w == b"TRAILER!!!");
        assert!(trailer.is_some());
    }

    #[test]
    fn init_prints_the_line_and_powers_off() {
        let s = init_script();
        assert!(s.starts_with("#!/bin/busybox sh\n"));
        assert!(s.contains(INIT_LINE));
        assert!(s.contains("poweroff -f"));
    }
}
