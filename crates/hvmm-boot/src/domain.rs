//! Domain 0, built from the boot information once the hypervisor is Active:
//! the same steps on the model and on hardware.
//!
//! * **Memory**: one bank of `mem` bytes taken from the hypervisor's page
//!   allocator, 2 MiB aligned, mapped IPA == PA (as Xen maps dom0 on Arm
//!   without an IOMMU). Everything else the hypervisor keeps — its image,
//!   tables, heap, the boot modules, the DTB — is simply not in the guest's
//!   stage 2: an access there is a stage-2 fault.
//! * **Stage-2 tables**: the architecture's guest format
//!   ([`hvmm_xen::layout::HasLayout::Guest`]), VMID `vmid`, table pages from a
//!   per-domain pool of `pool_pages` pages, reached through the same
//!   phase-aware path as the hypervisor's own tables (the direct map on
//!   arm64, domain-page slots on arm32). A pool that runs dry is
//!   [`DomainError::PoolExhausted`].
//! * **Devices**: the console UART and the interrupt controller's
//!   distributor and CPU interface (GICv2) / redistributors (GICv3), mapped
//!   as device memory; interrupts and the timer stay the guest's
//!   (passthrough).
//! * **Kernel** where the boot protocol wants it: an arm64 `Image` at a
//!   2 MiB-aligned base plus its `text_offset`, an arm32 `zImage` 32 KiB into
//!   RAM. A gzip-compressed arm64 kernel is refused with
//!   [`DomainError::NotAKernel`] naming it (decompression is not done yet).
//! * **Initrd** at the top of the bank, the **device tree** just below it
//!   ([`hvmm_bootinfo::guest::write_guest_dt`]).

use crate::mm::Mm;
use crate::platform::Platform;
use core::fmt;
use hvmm::{
    Env, Error, Ipa, MapFlags, Mfn, Op, Paddr, PageTable, S2Attrs, Stage2Format, UpdateReport,
    Vaddr, Vmid, PAGE_SIZE,
};
use hvmm_bootinfo::dtb::{reg_entries, Dtb};
use hvmm_bootinfo::guest::{write_guest_dt, GuestDt, GuestDtError};
use hvmm_bootinfo::{BootInfo, ModuleKind};
use hvmm_xen::boot_alloc::FrameRanges;
use hvmm_xen::layout::HasLayout;

const MIB2: u64 = 2 << 20;
/// arm64 `Image` magic ("ARM\x64") at offset 0x38.
const IMAGE_MAGIC: u32 = 0x644d_5241;
/// arm32 `zImage` magic at offset 0x24.
const ZIMAGE_MAGIC: u32 = 0x016f_2818;
/// Where an arm32 zImage goes in the guest's RAM.
const ZIMAGE_OFFSET: u64 = 0x8000;
/// Devices a guest may be given.
pub const MAX_DEVICES: usize = 4;

/// How domain 0 is built.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Dom0Config {
    /// Bytes of RAM (a multiple of 2 MiB).
    pub mem: u64,
    /// Pages in the stage-2 table pool.
    pub pool_pages: u64,
    /// The guest's VMID.
    pub vmid: u16,
    /// Tell the guest, on its command line, what hvmm's test guest checks:
    /// `hvmm.probe=` (an address of the hypervisor's, not the guest's) and
    /// `hvmm.wp=` (a page of its RAM, inside a 2 MiB block, that the
    /// write-protect service makes read-only while it runs).
    pub test_args: bool,
}

impl Default for Dom0Config {
    fn default() -> Self {
        Dom0Config {
            mem: 128 << 20,
            pool_pages: 64,
            vmid: 1,
            test_args: false,
        }
    }
}

/// Why domain 0 could not be built.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DomainError {
    /// No boot module is a kernel.
    NoKernel,
    /// The kernel module is not a kernel this architecture boots.
    NotAKernel {
        /// What it looks like.
        what: &'static str,
    },
    /// The requested RAM size is zero or not a multiple of 2 MiB.
    BadMemSize {
        /// The size asked for.
        mem: u64,
    },
    /// The hypervisor's allocator has no such bank of RAM to give.
    NoMemory {
        /// Bytes asked for.
        mem: u64,
        /// Pages the allocator had free.
        free_pages: u64,
    },
    /// The guest's RAM would lie beyond its IPA space (IPA == PA).
    BeyondIpa {
        /// End of the bank.
        end: Paddr,
        /// The IPA size.
        ipa_bits: u32,
    },
    /// The kernel, the initrd and the device tree do not fit in the RAM.
    DoesNotFit {
        /// What does not fit.
        what: &'static str,
        /// Bytes it needs.
        need: u64,
        /// Bytes of RAM.
        ram: u64,
    },
    /// The stage-2 table pool ran dry.
    PoolExhausted {
        /// The pool's size in pages.
        pages: u64,
        /// Table pages the failed update needed.
        needed: usize,
    },
    /// A stage-2 update or a mapping failed otherwise.
    Engine {
        /// What was being done.
        what: &'static str,
        /// The engine's error.
        err: Error,
    },
    /// The guest's device tree could not be written.
    DeviceTree(GuestDtError),
}

impl fmt::Display for DomainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainError::NoKernel => write!(f, "no boot module is a kernel"),
            DomainError::NotAKernel { what } => write!(f, "the kernel module is {what}"),
            DomainError::BadMemSize { mem } => {
                write!(
                    f,
                    "dom0 memory of {mem:#x} bytes is not a non-zero multiple of 2 MiB"
                )
            }
            DomainError::NoMemory { mem, free_pages } => write!(
                f,
                "no 2 MiB-aligned bank of {} MiB for dom0 ({free_pages} pages free)",
                mem >> 20
            ),
            DomainError::BeyondIpa { end, ipa_bits } => write!(
                f,
                "dom0's RAM ends at {end}, beyond its {ipa_bits}-bit IPA space"
            ),
            DomainError::DoesNotFit { what, need, ram } => write!(
                f,
                "{what} needs {need:#x} bytes of dom0's {ram:#x}-byte RAM: it does not fit"
            ),
            DomainError::PoolExhausted { pages, needed } => write!(
                f,
                "dom0's stage-2 pool of {pages} pages ran dry ({needed} more table pages needed)"
            ),
            DomainError::Engine { what, err } => write!(f, "{what}: {err}"),
            DomainError::DeviceTree(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for DomainError {}

/// Where something was put in the guest.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct Placement {
    /// Its first IPA (== PA).
    pub ipa: u64,
    /// Its size in bytes.
    pub size: u64,
}

impl Placement {
    fn end(&self) -> u64 {
        self.ipa + self.size
    }
}

/// A built domain 0.
pub struct Dom0<S: Stage2Format> {
    /// Its stage-2 table.
    pub p2m: PageTable<S>,
    /// The pool its table pages come from.
    pub pool: FrameRanges,
    /// Pages the pool started with.
    pub pool_pages: u64,
    /// The pool's first frame (its frames are contiguous, and no permanent
    /// mapping reaches them: [`crate::Mm::alloc_unmapped`]).
    pub pool_base: Paddr,
    /// Its RAM bank (IPA == PA).
    pub ram: Placement,
    /// The kernel.
    pub kernel: Placement,
    /// Where the guest starts (the kernel's entry point).
    pub entry: u64,
    /// The device tree.
    pub dtb: Placement,
    /// The initrd, if there was one.
    pub initrd: Option<Placement>,
    /// Device ranges mapped (IPA == PA), `devices_len` of them.
    pub devices: [Placement; MAX_DEVICES],
    /// How many of `devices` are used.
    pub devices_len: usize,
    /// The stage-2 updates that built it.
    pub report: UpdateReport,
    /// Its VMID.
    pub vmid: Vmid,
    /// The page the test guest's write-protect check uses (with
    /// [`Dom0Config::test_args`]).
    pub wp: Option<u64>,
    /// The address of the hypervisor's the test guest must not reach.
    pub probe: Option<u64>,
}

impl<S: Stage2Format> Dom0<S> {
    /// The device ranges mapped.
    pub fn devices(&self) -> &[Placement] {
        &self.devices[..self.devices_len]
    }
    /// Pool pages still free.
    pub fn pool_free(&self) -> u64 {
        self.pool.free_pages()
    }
}

/// Largest guest device tree (written on the stack: the hypervisor has no
/// heap; QEMU's `virt` boards give about 4 KiB).
pub const MAX_GUEST_DT: usize = 16 * 1024;

fn engine(what: &'static str, pool_pages: u64) -> impl Fn(Error) -> DomainError {
    move |err| match err {
        Error::OutOfMemory { needed, .. } => DomainError::PoolExhausted {
            pages: pool_pages,
            needed,
        },
        err => DomainError::Engine { what, err },
    }
}

/// Reads `buf.len()` bytes at `pa` through the access path (any frame of
/// RAM, the way table pages are reached).
fn read_phys<F: HasLayout, P: Platform>(
    p: &mut P,
    mm: &mut Mm<F>,
    pa: u64,
    buf: &mut [u8],
) -> Result<(), Error> {
    let mut done = 0usize;
    while done < buf.len() {
        let at = pa + done as u64;
        let n = ((PAGE_SIZE - at % PAGE_SIZE) as usize).min(buf.len() - done);
        mm.with_access(p, |p, acc| {
            let mfn = Mfn(at / PAGE_SIZE);
            let va = acc
                .map_table(p, mfn)
                .map_err(|err| Error::TableAccess { mfn, err })?;
            let r = p.read_bytes(Vaddr(va.0 + at % PAGE_SIZE), &mut buf[done..done + n]);
            acc.unmap_table(p, mfn, va);
            Ok(r?)
        })?;
        done += n;
    }
    Ok(())
}

/// Copies `len` bytes from PA `src` to PA `dst`, page by page through the
/// access path.
fn copy_phys<F: HasLayout, P: Platform>(
    p: &mut P,
    mm: &mut Mm<F>,
    dst: u64,
    src: u64,
    len: u64,
) -> Result<(), Error> {
    let mut done = 0u64;
    while done < len {
        let (d, s) = (dst + done, src + done);
        let n = (PAGE_SIZE - d % PAGE_SIZE)
            .min(PAGE_SIZE - s % PAGE_SIZE)
            .min(len - done);
        mm.with_access(p, |p, acc| {
            let (dm, sm) = (Mfn(d / PAGE_SIZE), Mfn(s / PAGE_SIZE));
            let dva = acc
                .map_table(p, dm)
                .map_err(|err| Error::TableAccess { mfn: dm, err })?;
            let sva = match acc.map_table(p, sm) {
                Ok(v) => v,
                Err(err) => {
                    acc.unmap_table(p, dm, dva);
                    return Err(Error::TableAccess { mfn: sm, err });
                }
            };
            let r = p.copy(
                Vaddr(dva.0 + d % PAGE_SIZE),
                Vaddr(sva.0 + s % PAGE_SIZE),
                n as usize,
            );
            acc.unmap_table(p, sm, sva);
            acc.unmap_table(p, dm, dva);
            Ok(r?)
        })?;
        done += n;
    }
    Ok(())
}

/// Writes `data` at PA `dst` through the access path.
fn write_phys<F: HasLayout, P: Platform>(
    p: &mut P,
    mm: &mut Mm<F>,
    dst: u64,
    data: &[u8],
) -> Result<(), Error> {
    let mut done = 0usize;
    while done < data.len() {
        let d = dst + done as u64;
        let n = ((PAGE_SIZE - d % PAGE_SIZE) as usize).min(data.len() - done);
        mm.with_access(p, |p, acc| {
            let mfn = Mfn(d / PAGE_SIZE);
            let va = acc
                .map_table(p, mfn)
                .map_err(|err| Error::TableAccess { mfn, err })?;
            let r = p.write_bytes(Vaddr(va.0 + d % PAGE_SIZE), &data[done..done + n]);
            acc.unmap_table(p, mfn, va);
            Ok(r?)
        })?;
        done += n;
    }
    Ok(())
}

/// The kernel's load offset in RAM and its size there, from its header.
fn kernel_layout(
    arm64: bool,
    head: &[u8; 64],
    module_size: u64,
) -> Result<(u64, u64), DomainError> {
    let u32_at = |o: usize| u32::from_le_bytes([head[o], head[o + 1], head[o + 2], head[o + 3]]);
    let u64_at = |o: usize| u64::from(u32_at(o)) | (u64::from(u32_at(o + 4)) << 32);
    if head[0] == 0x1f && head[1] == 0x8b {
        return Err(DomainError::NotAKernel {
            what: "a gzip-compressed kernel (not decompressed yet: pass the uncompressed Image)",
        });
    }
    if arm64 {
        if u32_at(0x38) != IMAGE_MAGIC {
            return Err(DomainError::NotAKernel {
                what: "not an arm64 Image (no \"ARM\\x64\" magic at 0x38)",
            });
        }
        // An image_size of 0 is a kernel older than 3.17: text_offset is
        // then 0x80000 and the size unknown beyond the file.
        let (text_offset, size) = match u64_at(0x10) {
            0 => (0x8_0000, module_size),
            s => (u64_at(0x08), s.max(module_size)),
        };
        Ok((text_offset, size))
    } else {
        if u32_at(0x24) != ZIMAGE_MAGIC {
            return Err(DomainError::NotAKernel {
                what: "not an arm32 zImage (no magic 0x016f2818 at 0x24)",
            });
        }
        Ok((ZIMAGE_OFFSET, module_size))
    }
}

/// The device ranges the guest is given: the console UART and the
/// interrupt controller's first two `reg` ranges (GICv2 distributor and CPU
/// interface; GICv3 distributor and redistributors), page-rounded.
fn guest_devices(host: &Dtb<'_>, out: &mut [Placement; MAX_DEVICES]) -> usize {
    let mut n = 0;
    let mut add = |a: u64, s: u64| {
        if n < MAX_DEVICES {
            let ipa = a & !(PAGE_SIZE - 1);
            let end = (a + s).div_ceil(PAGE_SIZE) * PAGE_SIZE;
            out[n] = Placement {
                ipa,
                size: end - ipa,
            };
            n += 1;
        }
    };
    let mut console = false;
    for node in host.root().children() {
        let uart = node
            .property("compatible")
            .is_some_and(|p| p.strings().any(|s| s == "arm,pl011"));
        let take = if uart && !console {
            console = true;
            1
        } else if node.property("interrupt-controller").is_some() {
            2
        } else {
            continue;
        };
        if let Some(reg) = node.property("reg") {
            for e in reg_entries(reg.value, 2, 2).take(take).flatten() {
                add(e.0, e.1);
            }
        }
    }
    n
}

/// Builds domain 0 (see the module docs). `host_dtb` is the tree the
/// hypervisor booted with.
#[inline(never)]
pub fn build_dom0<F: HasLayout, P: Platform>(
    p: &mut P,
    mm: &mut Mm<F>,
    info: &BootInfo<'_>,
    host_dtb: &[u8],
    cfg: &Dom0Config,
) -> Result<Dom0<F::Guest>, DomainError> {
    let arm64 = F::NAME == "arm64";
    let kernel_mod = *info
        .module(ModuleKind::Kernel)
        .ok_or(DomainError::NoKernel)?;
    let mut head = [0u8; 64];
    let ksize = kernel_mod.range.size();
    if ksize < 64 {
        return Err(DomainError::NotAKernel {
            what: "shorter than a kernel header",
        });
    }
    read_phys(p, mm, kernel_mod.range.base().0, &mut head).map_err(|err| DomainError::Engine {
        what: "reading the kernel's header",
        err,
    })?;
    let (text_offset, kernel_mem) = kernel_layout(arm64, &head, ksize)?;
    if cfg.mem == 0 || !cfg.mem.is_multiple_of(MIB2) {
        return Err(DomainError::BadMemSize { mem: cfg.mem });
    }
    let initrd_mod = info.module(ModuleKind::Ramdisk).copied();
    let initrd_size = initrd_mod.map_or(0, |m| m.range.size());
    let dt_room = MIB2;
    let need = text_offset + kernel_mem.next_multiple_of(MIB2) + dt_room + initrd_size;
    if need > cfg.mem {
        let what = if text_offset + kernel_mem > cfg.mem {
            "the kernel"
        } else {
            "the kernel, the device tree and the initrd"
        };
        return Err(DomainError::DoesNotFit {
            what,
            need,
            ram: cfg.mem,
        });
    }

    // RAM: one 2 MiB-aligned bank, IPA == PA.
    let pages = cfg.mem / PAGE_SIZE;
    let free_pages = mm.alloc.free_pages();
    let base = mm
        .alloc
        .alloc(pages, MIB2 / PAGE_SIZE)
        .map_err(|_| DomainError::NoMemory {
            mem: cfg.mem,
            free_pages,
        })?
        .paddr()
        .0;
    let ram = Placement {
        ipa: base,
        size: cfg.mem,
    };
    let ipa_bits = <F::Guest as hvmm::Format>::VA_BITS;
    if ram.end() > 1u64 << ipa_bits {
        return Err(DomainError::BeyondIpa {
            end: Paddr(ram.end()),
            ipa_bits,
        });
    }

    // The stage-2 pool and table: frames no permanent mapping reaches (its
    // tables are written through the slots only, as the hypervisor's).
    let pool_start = match mm.alloc_unmapped(p, cfg.pool_pages.max(1)) {
        Ok(m) => m,
        Err(_) => {
            let _ = mm.alloc.free_pages_at(Paddr(base).mfn(), pages);
            return Err(DomainError::NoMemory {
                mem: cfg.pool_pages * PAGE_SIZE,
                free_pages: mm.alloc.free_pages(),
            });
        }
    };
    let mut pool = FrameRanges::new();
    let pool_end = Paddr(pool_start.paddr().0 + cfg.pool_pages.max(1) * PAGE_SIZE);
    pool.add(pool_start.paddr(), pool_end)
        .map_err(|_| DomainError::NoMemory {
            mem: cfg.pool_pages * PAGE_SIZE,
            free_pages: mm.alloc.free_pages(),
        })?;
    let pool_pages = cfg.pool_pages.max(1);
    let vmid = Vmid(cfg.vmid);
    let mut p2m = mm
        .with_access(p, |p, acc| {
            let mut acc = acc;
            PageTable::<F::Guest>::create_stage2(&mut Env::new(p, &mut acc, &mut pool), vmid)
        })
        .map_err(engine("creating dom0's stage-2 root", pool_pages))?;
    let mut report = UpdateReport::default();
    let mut map = |p: &mut P,
                   mm: &mut Mm<F>,
                   p2m: &mut PageTable<F::Guest>,
                   pool: &mut FrameRanges,
                   at: Placement,
                   attrs: S2Attrs,
                   what: &'static str|
     -> Result<(), DomainError> {
        let op = Op::Insert {
            pa: Paddr(at.ipa),
            attrs,
        };
        let r = mm
            .with_access(p, |p, acc| {
                let mut acc = acc;
                p2m.update(
                    &mut Env::new(p, &mut acc, pool),
                    Ipa(at.ipa),
                    at.size / PAGE_SIZE,
                    op,
                    MapFlags::BLOCKS,
                )
            })
            .map_err(engine(what, pool_pages))?;
        report += r;
        Ok(())
    };
    map(
        p,
        mm,
        &mut p2m,
        &mut pool,
        ram,
        S2Attrs::RAM,
        "mapping dom0's RAM",
    )?;
    let host = Dtb::new(host_dtb).map_err(|_| {
        DomainError::DeviceTree(GuestDtError::BadReg {
            node: "the host tree",
        })
    })?;
    let mut devices = [Placement::default(); MAX_DEVICES];
    let devices_len = guest_devices(&host, &mut devices);
    for d in &devices[..devices_len] {
        map(
            p,
            mm,
            &mut p2m,
            &mut pool,
            *d,
            S2Attrs::DEVICE,
            "mapping a device into dom0",
        )?;
    }

    // The kernel, the initrd at the top, the tree below it.
    let kernel = Placement {
        ipa: base + text_offset,
        size: ksize,
    };
    let load = |e| DomainError::Engine {
        what: "loading dom0",
        err: e,
    };
    copy_phys(p, mm, kernel.ipa, kernel_mod.range.base().0, ksize).map_err(load)?;
    let initrd = match initrd_mod {
        Some(m) => {
            let ipa = (ram.end() - m.range.size()) & !(PAGE_SIZE - 1);
            copy_phys(p, mm, ipa, m.range.base().0, m.range.size()).map_err(load)?;
            Some(Placement {
                ipa,
                size: m.range.size(),
            })
        }
        None => None,
    };
    let top = initrd.map_or(ram.end(), |i| i.ipa);
    let dtb_ipa = (top - dt_room) & !(MIB2 - 1);
    // The test guest's arguments: a page in the middle of its RAM (inside a
    // 2 MiB block) and the hypervisor image's first page.
    let (wp, probe) = if cfg.test_args {
        (
            Some(ram.ipa + ((ram.size / 2) & !(MIB2 - 1)) + 5 * PAGE_SIZE),
            Some(info.image().base().0),
        )
    } else {
        (None, None)
    };
    let mut args = ArgsBuf::default();
    if let Some(a) = kernel_mod.bootargs {
        let _ = fmt::Write::write_str(&mut args, a);
    }
    if let (Some(wp), Some(probe)) = (wp, probe) {
        let sep = if args.len == 0 { "" } else { " " };
        let _ = fmt::write(
            &mut args,
            format_args!("{sep}hvmm.probe={probe:#x} hvmm.wp={wp:#x}"),
        );
    }
    let bootargs = (args.len > 0).then(|| args.as_str());
    let mut dev_ranges = [(0u64, 0u64); MAX_DEVICES];
    for (r, d) in dev_ranges.iter_mut().zip(&devices[..devices_len]) {
        *r = (d.ipa, d.size);
    }
    let cfg_dt = GuestDt {
        ram: &[(ram.ipa, ram.size)],
        devices: &dev_ranges[..devices_len],
        bootargs,
        initrd: initrd.map(|i| (i.ipa, i.end())),
    };
    let mut tree = [0u8; MAX_GUEST_DT];
    let mut strings = [0u8; 1024];
    let dt_size =
        write_guest_dt(&host, &cfg_dt, &mut tree, &mut strings).map_err(DomainError::DeviceTree)?;
    write_phys(p, mm, dtb_ipa, &tree[..dt_size]).map_err(load)?;
    let entry = kernel.ipa;
    Ok(Dom0 {
        p2m,
        pool,
        pool_pages,
        pool_base: pool_start.paddr(),
        ram,
        kernel,
        entry,
        dtb: Placement {
            ipa: dtb_ipa,
            size: dt_size as u64,
        },
        initrd,
        devices,
        devices_len,
        report,
        vmid,
        wp,
        probe,
    })
}

/// A command line built without allocation.
struct ArgsBuf {
    buf: [u8; 512],
    len: usize,
}

impl Default for ArgsBuf {
    fn default() -> Self {
        ArgsBuf {
            buf: [0; 512],
            len: 0,
        }
    }
}

impl ArgsBuf {
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl fmt::Write for ArgsBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}
