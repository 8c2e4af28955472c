//! # hvmm-bootinfo — boot information from the device tree
//!
//! Xen's `boot_fdt_info`, done carefully: from the DTB the boot loader hands
//! over, collect the RAM banks, the reserved ranges, the command lines and the
//! boot modules, and refuse anything inconsistent with a named error instead
//! of a silent drop or a panic. `no_std`, no allocation: every list has a
//! fixed capacity ([`MAX_RAM_BANKS`], [`MAX_RESERVED`], [`MAX_MODULES`],
//! [`MAX_FREE_RANGES`]) and exceeding one is an error.
//!
//! RAM and reserved memory are read as Xen 4.22 reads them ([`MemoryMap`]):
//! a RAM bank comes from a top-level node named `memory` or `memory@...`
//! whose `device_type` is `"memory"` and whose `status` says it is
//! available; banks of size zero are skipped (loaders such as U-Boot fill
//! such placeholders at boot). Reserved ranges are the `/memreserve/`
//! entries and the `reg` ranges of available `/reserved-memory` children
//! (whatever their names: a `memory@...` child is reserved, not RAM). A
//! child overlapping an earlier reserved range is refused unless it lies
//! wholly inside a `/memreserve/` entry. Nothing the loader placed (the
//! image, the DTB, a module) may overlap reserved memory, except by lying
//! wholly inside a `/memreserve/` entry (U-Boot lists the initrd and the
//! DTB there): Xen 4.18 and later refuse such placements too.
//!
//! Module kinds follow Xen 4.22's rule (unchanged for untyped modules since
//! Xen 4.7). A `/chosen` child is a boot module when its compatible holds
//! `multiboot,module` or `xen,multiboot-module`. A kind compatible decides
//! its kind, in Xen's order of precedence: kernel (`xen,linux-zimage`,
//! `multiboot,kernel`), ramdisk (`xen,linux-initrd`, `multiboot,ramdisk`),
//! XSM policy (`xen,xsm-policy`), guest device tree
//! (`multiboot,device-tree`), microcode (`multiboot,microcode`). Modules
//! without one (what GRUB's `xen_module` writes) are guessed by their order
//! among the untyped ones: the first is the kernel; the second is an XSM
//! policy if it starts with [`XSM_MAGIC`], else the ramdisk; each later one
//! is an XSM policy if it starts with the magic, else
//! [`ModuleKind::Unknown`], which nothing uses. So a policy in second place
//! leaves domain 0 without a ramdisk, as in Xen. The guess needs the
//! module's first bytes, which this crate does not read itself: the caller
//! passes a [`ModuleReader`] (in the hypervisor, `copy_from_paddr` through
//! the fixmap in early boot — the very path that killed Xen 4.13-rc under
//! GRUB). One difference: a module shorter than 4 bytes is not read (it
//! cannot hold the magic; Xen reads 4 bytes anyway).
//!
//! [`BootInfo::free_ranges`] then gives what the boot allocator may be seeded
//! with: RAM minus the image, the DTB, the modules, the reserved ranges and
//! any firmware-reserved ranges, page aligned and sorted.
//!
//! With the `std` feature, `builder::VirtBoard` writes QEMU-virt-like DTBs
//! for tests and tools.
//!
//! # The path, for a hypervisor
//!
//! At boot, with the DTB the loader handed over mapped somewhere readable:
//! parse it with where the image and the DTB lie ([`ParseParams`]) and a
//! [`ModuleReader`] for the module guess, check the kernel is there, then
//! seed your frame allocator with [`BootInfo::free_ranges`] — RAM minus
//! everything the boot placed or the tree reserves. (`hvmm-boot` does this
//! in its `boot_fdt_info` and `setup_mm` steps, seeding `hvmm-xen`'s boot
//! allocator.)
//!
//! ```
//! use hvmm::Paddr;
//! use hvmm_bootinfo::builder::VirtBoard;
//! use hvmm_bootinfo::{BootInfo, ModuleKind, NoReader, ParseParams};
//!
//! // What QEMU's `virt` hands over: 1 GiB of RAM, a typed kernel module.
//! let dtb = VirtBoard::qemu_default()
//!     .typed_module(0x4800_0000, 0x20_0000, "multiboot,kernel")
//!     .memreserve(0x4f00_0000, 0x10_0000)
//!     .build();
//! let params = ParseParams {
//!     pa_bits: 48,
//!     image: (Paddr(0x4020_0000), 0x20_0000),
//!     dtb: (Paddr(0x4000_0000), dtb.len() as u64),
//! };
//! // Typed modules need no reading; untyped ones would (GRUB's).
//! let info = BootInfo::parse(&dtb, &params, &mut NoReader).unwrap();
//! assert_eq!(info.ram_banks().len(), 1);
//! let kernel = info.modules().iter().find(|m| m.kind == ModuleKind::Kernel).unwrap();
//! assert_eq!(kernel.range.base(), Paddr(0x4800_0000));
//!
//! // Seed the frame allocator: the image, the DTB, the kernel and the
//! // reserved range are left out.
//! let free = info.free_ranges(&[]).unwrap();
//! let mut pages = 0;
//! for r in free.iter() {
//!     assert!(!r.overlaps(&kernel.range));
//!     pages += r.size() / 4096; // my_allocator.add(r.base(), r.end())
//! }
//! let dtb_pages = (dtb.len() as u64).div_ceil(4096);
//! assert_eq!(pages, (0x4000_0000 - 0x20_0000 - 0x20_0000 - 0x10_0000) / 4096 - dtb_pages);
//! ```
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]
#![deny(unsafe_code)]

#[cfg(any(test, feature = "std"))]
extern crate std;

#[cfg(feature = "std")]
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
pub mod builder;
pub mod dtb;
mod error;
pub mod guest;
mod range;
pub mod writer;

pub use dtb::{Dtb, DtbError};
pub use error::{BootInfoError, Placed};
pub use range::{FixedVec, MemRange};

use hvmm::Paddr;

/// Most RAM banks recorded.
pub const MAX_RAM_BANKS: usize = 64;
/// Most reserved ranges recorded (memory reservation block and
/// `/reserved-memory` together).
pub const MAX_RESERVED: usize = 64;
/// Most boot modules recorded.
pub const MAX_MODULES: usize = 32;
/// Most free ranges [`BootInfo::free_ranges`] returns.
pub const MAX_FREE_RANGES: usize = 128;
/// First word (little-endian) of an XSM (FLASK) policy.
pub const XSM_MAGIC: u32 = 0xf97c_ff8c;

/// What a boot module is.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ModuleKind {
    /// The first domain's kernel.
    Kernel,
    /// Its initial ramdisk.
    Ramdisk,
    /// An XSM (FLASK) security policy.
    XsmPolicy,
    /// A partial device tree for a guest (`multiboot,device-tree`, used by
    /// Xen's dom0less guests; not by domain 0).
    GuestDtb,
    /// CPU microcode (`multiboot,microcode`, typed since Xen 4.22; not used
    /// on Arm).
    Microcode,
    /// Something else: an untyped module after the second that is not a
    /// policy. Nothing uses it.
    Unknown,
}

/// How a module's kind was decided.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum KindSource {
    /// From a typed compatible string.
    Typed,
    /// Guessed for an untyped `multiboot,module`.
    Guessed {
        /// Whether the module's first bytes were read (through the
        /// [`ModuleReader`]) to look for [`XSM_MAGIC`].
        read: bool,
    },
}

/// One boot module from `/chosen`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Module<'a> {
    /// Where it is.
    pub range: MemRange,
    /// What it is.
    pub kind: ModuleKind,
    /// How that was decided.
    pub source: KindSource,
    /// Its own `bootargs`, if any.
    pub bootargs: Option<&'a str>,
    /// Its node name (`module@...`).
    pub name: &'a str,
}

/// Where a reserved range came from.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ReservedSource {
    /// The FDT header's memory reservation block (`/memreserve/`).
    MemReserve,
    /// A `/reserved-memory` child with `reg`.
    ReservedMemory,
}

/// A range of memory the hypervisor must not allocate from.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Reserved {
    /// The range.
    pub range: MemRange,
    /// Where it came from.
    pub source: ReservedSource,
    /// Whether the `/reserved-memory` child says `no-map` (the OS must not
    /// even map it); always `false` for `/memreserve/` entries.
    pub no_map: bool,
}

/// Facts the DTB cannot tell: the machine's physical-address size and where
/// the hypervisor image and the DTB itself are.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ParseParams {
    /// Physical-address size in bits (40 on arm32 LPAE, 48 typical on arm64);
    /// 32..=52 accepted.
    pub pa_bits: u32,
    /// The hypervisor image: (start, size in bytes).
    pub image: (Paddr, u64),
    /// The DTB: (start, size in bytes).
    pub dtb: (Paddr, u64),
}

/// Reads physical memory for the module-kind guess. In the hypervisor this is
/// `copy_from_paddr` through the fixmap (early boot: no direct map yet).
pub trait ModuleReader {
    /// The reader's failure. It is not carried in [`BootInfoError`]: the
    /// reader keeps (and logs) its own detail; the error names the module.
    type Error;
    /// Fills `buf` with the bytes at `pa`.
    fn read(&mut self, pa: Paddr, buf: &mut [u8]) -> Result<(), Self::Error>;
}

/// A [`ModuleReader`] for when no module can be read: every read fails, so a
/// DTB that needs a guess by reading is refused with
/// [`BootInfoError::ModuleRead`].
#[derive(Copy, Clone, Debug, Default)]
pub struct NoReader;

impl ModuleReader for NoReader {
    type Error = ();
    fn read(&mut self, _pa: Paddr, _buf: &mut [u8]) -> Result<(), ()> {
        Err(())
    }
}

/// Free memory for the boot allocator: sorted, page-aligned, disjoint.
pub type FreeRanges = FixedVec<MemRange, MAX_FREE_RANGES>;

/// Everything the boot sequence needs from the device tree.
#[derive(Clone, Debug)]
pub struct BootInfo<'a> {
    memory: MemoryMap,
    modules: FixedVec<Module<'a>, MAX_MODULES>,
    bootargs: Option<&'a str>,
    xen_bootargs: Option<&'a str>,
    image: MemRange,
    dtb: MemRange,
}

/// Compatible strings that fix a module's kind, in Xen's order of
/// precedence (a node with two of them takes the first here).
const TYPED: [(&str, ModuleKind); 7] = [
    ("xen,linux-zimage", ModuleKind::Kernel),
    ("multiboot,kernel", ModuleKind::Kernel),
    ("xen,linux-initrd", ModuleKind::Ramdisk),
    ("multiboot,ramdisk", ModuleKind::Ramdisk),
    ("xen,xsm-policy", ModuleKind::XsmPolicy),
    ("multiboot,device-tree", ModuleKind::GuestDtb),
    ("multiboot,microcode", ModuleKind::Microcode),
];
/// Compatible strings that make a `/chosen` child a boot module (one of them
/// is needed; without a kind compatible too, the kind is guessed).
const MULTIBOOT: [&str; 2] = ["multiboot,module", "xen,multiboot-module"];

/// A module found in `/chosen` before validation and classification.
#[derive(Copy, Clone)]
struct RawModule<'a> {
    base: Paddr,
    size: u64,
    typed: Option<ModuleKind>,
    bootargs: Option<&'a str>,
    name: &'a str,
}

fn string_prop<'a>(
    node: &dtb::Node<'a>,
    prop: &'static str,
    path: &'static str,
) -> Result<Option<&'a str>, BootInfoError> {
    match node.property(prop) {
        None => Ok(None),
        Some(p) => p.as_str().map(Some).ok_or(BootInfoError::BadString {
            node: path,
            property: prop,
        }),
    }
}

fn cells(node: &dtb::Node<'_>, path: &'static str) -> Result<(u32, u32), BootInfoError> {
    match node.child_cells() {
        // More than 2 cells is accepted when the high cells are zero;
        // reg_entries checks that per value.
        Some((a, s)) if (1..=4).contains(&a) && s <= 4 => Ok((a, s)),
        _ => Err(BootInfoError::BadCells { node: path }),
    }
}

/// The RAM banks and reserved ranges a device tree describes, read as Xen
/// 4.22 reads them (see the crate's documentation). Unlike
/// [`BootInfo::parse`], finding no RAM is not an error here: a loader may
/// still supply it (U-Boot's memory fix-up fills `/memory` at boot).
#[derive(Clone, Debug)]
pub struct MemoryMap {
    banks: FixedVec<MemRange, MAX_RAM_BANKS>,
    reserved: FixedVec<Reserved, MAX_RESERVED>,
    empty_banks: usize,
}

impl MemoryMap {
    /// Reads the RAM banks and reserved ranges of `dtb` on a machine with a
    /// `pa_bits`-bit physical address space (32..=52).
    pub fn parse(dtb: &[u8], pa_bits: u32) -> Result<MemoryMap, BootInfoError> {
        if !(32..=52).contains(&pa_bits) {
            return Err(BootInfoError::BadPaBits { pa_bits });
        }
        let mut map = MemoryMap::empty();
        map.fill(&Dtb::new(dtb)?, pa_bits)?;
        Ok(map)
    }

    const fn empty() -> MemoryMap {
        MemoryMap {
            banks: FixedVec::new(),
            reserved: FixedVec::new(),
            empty_banks: 0,
        }
    }

    /// Reads `tree` into `self` (in place: the lists are large for an
    /// early-boot stack).
    fn fill(&mut self, tree: &Dtb<'_>, pa_bits: u32) -> Result<(), BootInfoError> {
        let root = tree.root();
        self.collect_banks(&root, pa_bits)?;
        self.collect_reserved(tree, &root)
    }

    fn collect_banks(&mut self, root: &dtb::Node<'_>, pa_bits: u32) -> Result<(), BootInfoError> {
        let (ac, sc) = cells(root, "/")?;
        let limit = 1u128 << pa_bits;
        // Xen 4.20 and later: a top-level node named memory[@...] whose
        // device_type is "memory" (not every node with one of the two).
        let memory_nodes = root.children().filter(|n| {
            n.name_matches("memory")
                && n.property("device_type").and_then(|p| p.as_str()) == Some("memory")
                && n.is_available()
        });
        for (index, node) in memory_nodes.enumerate() {
            let reg = node.property("reg").ok_or(BootInfoError::BadReg {
                node: "memory",
                index,
            })?;
            for entry in dtb::reg_entries(reg.value, ac, sc) {
                let (base, size) = entry.map_err(|()| BootInfoError::BadReg {
                    node: "memory",
                    index,
                })?;
                let base = Paddr(base);
                if size == 0 {
                    // A placeholder the loader fills at boot: skipped, as
                    // Xen does.
                    self.empty_banks += 1;
                    continue;
                }
                let bank =
                    MemRange::new(base, size).ok_or(BootInfoError::BankOverflow { base, size })?;
                if u128::from(bank.end().0) > limit {
                    return Err(BootInfoError::BankBeyondPaSize { bank, pa_bits });
                }
                if let Some(other) = self.banks.iter().find(|b| b.overlaps(&bank)) {
                    return Err(BootInfoError::BanksOverlap {
                        first: *other,
                        second: bank,
                    });
                }
                self.banks
                    .push(bank)
                    .map_err(|_| BootInfoError::TooManyBanks { max: MAX_RAM_BANKS })?;
            }
        }
        Ok(())
    }

    fn push_reserved(
        &mut self,
        base: u64,
        size: u64,
        source: ReservedSource,
        no_map: bool,
    ) -> Result<(), BootInfoError> {
        let base = Paddr(base);
        if size == 0 {
            // Reserves nothing.
            return Ok(());
        }
        let range =
            MemRange::new(base, size).ok_or(BootInfoError::ReservedOverflow { base, size })?;
        let new = Reserved {
            range,
            source,
            no_map,
        };
        // /memreserve/ entries are taken as they are; a /reserved-memory
        // child must not overlap what came before it, except by lying
        // wholly inside a /memreserve/ entry (trees that list a range in
        // both places).
        if source == ReservedSource::ReservedMemory {
            if let Some(first) = self.clash(&range) {
                return Err(BootInfoError::ReservedOverlap { first, second: new });
            }
        }
        self.reserved
            .push(new)
            .map_err(|_| BootInfoError::TooManyReserved { max: MAX_RESERVED })
    }

    fn collect_reserved(
        &mut self,
        tree: &Dtb<'_>,
        root: &dtb::Node<'_>,
    ) -> Result<(), BootInfoError> {
        for (a, s) in tree.reservations() {
            self.push_reserved(a, s, ReservedSource::MemReserve, false)?;
        }
        let Some(rmem) = tree.find("/reserved-memory") else {
            return Ok(());
        };
        let (ac, sc) = if rmem.property("#address-cells").is_some()
            || rmem.property("#size-cells").is_some()
        {
            cells(&rmem, "/reserved-memory")?
        } else {
            cells(root, "/")?
        };
        for (index, child) in rmem.children().filter(|c| c.is_available()).enumerate() {
            // Children without reg are dynamic allocations (size/alloc-ranges)
            // made by the OS later: nothing is reserved yet.
            let Some(reg) = child.property("reg") else {
                continue;
            };
            let no_map = child.property("no-map").is_some();
            for entry in dtb::reg_entries(reg.value, ac, sc) {
                let (base, size) = entry.map_err(|()| BootInfoError::BadReg {
                    node: "reserved-memory",
                    index,
                })?;
                self.push_reserved(base, size, ReservedSource::ReservedMemory, no_map)?;
            }
        }
        Ok(())
    }

    /// The first reserved range `r` may not overlap: any range it overlaps,
    /// except a `/memreserve/` entry that holds it wholly.
    pub fn clash(&self, r: &MemRange) -> Option<Reserved> {
        self.reserved
            .iter()
            .find(|x| {
                x.range.overlaps(r)
                    && !(x.source == ReservedSource::MemReserve && x.range.contains_range(r))
            })
            .copied()
    }

    /// Whether the union of the RAM banks covers `r` (a range may span
    /// adjacent banks).
    pub fn ram_covers(&self, r: &MemRange) -> bool {
        let mut at = r.base();
        // Each step moves `at` to the end of a distinct bank, so this ends.
        for _ in 0..=self.banks.len() {
            if at >= r.end() {
                return true;
            }
            match self.banks.iter().find(|b| b.contains(at)) {
                Some(b) => at = b.end(),
                None => return false,
            }
        }
        at >= r.end()
    }

    /// Whether any RAM bank shares a byte with `r`.
    pub fn ram_overlaps(&self, r: &MemRange) -> bool {
        self.banks.iter().any(|b| b.overlaps(r))
    }

    /// The RAM banks, in DTB order (empty banks left out).
    pub fn ram_banks(&self) -> &FixedVec<MemRange, MAX_RAM_BANKS> {
        &self.banks
    }

    /// How many banks of size zero were skipped.
    pub fn empty_banks(&self) -> usize {
        self.empty_banks
    }

    /// The reserved ranges: memory reservation block entries first, then
    /// `/reserved-memory` children, each in DTB order. Zero-sized entries
    /// reserve nothing and are left out.
    pub fn reserved(&self) -> &FixedVec<Reserved, MAX_RESERVED> {
        &self.reserved
    }
}

impl<'a> BootInfo<'a> {
    /// Reads and validates the boot information in `dtb`. `reader` is asked
    /// for the first 4 bytes of the second and later untyped modules, and for
    /// nothing else.
    pub fn parse<R: ModuleReader>(
        dtb: &'a [u8],
        ctx: &ParseParams,
        reader: &mut R,
    ) -> Result<BootInfo<'a>, BootInfoError> {
        if !(32..=52).contains(&ctx.pa_bits) {
            return Err(BootInfoError::BadPaBits {
                pa_bits: ctx.pa_bits,
            });
        }
        let image = MemRange::new(ctx.image.0, ctx.image.1).ok_or(BootInfoError::BadParam {
            what: "image",
            base: ctx.image.0,
            size: ctx.image.1,
        })?;
        let dtb_range = MemRange::new(ctx.dtb.0, ctx.dtb.1).ok_or(BootInfoError::BadParam {
            what: "dtb",
            base: ctx.dtb.0,
            size: ctx.dtb.1,
        })?;
        let tree = Dtb::new(dtb)?;
        let mut info = BootInfo {
            memory: MemoryMap::empty(),
            modules: FixedVec::new(),
            bootargs: None,
            xen_bootargs: None,
            image,
            dtb: dtb_range,
        };
        info.memory.fill(&tree, ctx.pa_bits)?;
        if info.memory.banks.is_empty() {
            return Err(BootInfoError::NoMemory);
        }
        for (item, range) in [(Placed::Image, image), (Placed::Dtb, dtb_range)] {
            info.refuse_reserved(item, range)?;
        }
        let mut raw: FixedVec<RawModule<'a>, MAX_MODULES> = FixedVec::new();
        if let Some(chosen) = tree.find("/chosen") {
            info.bootargs = string_prop(&chosen, "bootargs", "/chosen")?;
            info.xen_bootargs = string_prop(&chosen, "xen,xen-bootargs", "/chosen")?;
            collect_modules(&chosen, &mut raw)?;
        }
        info.validate_modules(&raw)?;
        info.classify(&raw, reader)?;
        Ok(info)
    }

    /// Refuses `range` (what the loader placed) when it lies in reserved
    /// memory (see [`MemoryMap::clash`]).
    fn refuse_reserved(&self, item: Placed, range: MemRange) -> Result<(), BootInfoError> {
        match self.memory.clash(&range) {
            Some(reserved) => Err(BootInfoError::InReserved {
                item,
                range,
                reserved,
            }),
            None => Ok(()),
        }
    }

    fn validate_modules(
        &self,
        raw: &FixedVec<RawModule<'a>, MAX_MODULES>,
    ) -> Result<(), BootInfoError> {
        for (index, m) in raw.iter().enumerate() {
            let module = module_range(index, m)?;
            for (first, earlier) in raw.iter().enumerate().take(index) {
                let earlier = module_range(first, earlier)?;
                if earlier.overlaps(&module) {
                    return Err(BootInfoError::ModulesOverlap {
                        first,
                        second: index,
                        first_range: earlier,
                        second_range: module,
                    });
                }
            }
            if module.overlaps(&self.image) {
                return Err(BootInfoError::ModuleOverlapsImage {
                    index,
                    module,
                    image: self.image,
                });
            }
            if module.overlaps(&self.dtb) {
                return Err(BootInfoError::DtbOverlapsModule {
                    index,
                    module,
                    dtb: self.dtb,
                });
            }
            if !self.memory.ram_covers(&module) {
                return Err(BootInfoError::ModuleOutsideRam { index, module });
            }
            self.refuse_reserved(Placed::Module(index), module)?;
        }
        Ok(())
    }

    fn classify<R: ModuleReader>(
        &mut self,
        raw: &FixedVec<RawModule<'a>, MAX_MODULES>,
        reader: &mut R,
    ) -> Result<(), BootInfoError> {
        // Xen's guess, by the position among the untyped modules: kernel,
        // then ramdisk, then nothing; from the second on, a module that
        // starts with the XSM magic is a policy whatever its position.
        let mut untyped_seen = 0usize;
        for (index, m) in raw.iter().enumerate() {
            let range = module_range(index, m)?;
            let (kind, source) = match m.typed {
                Some(kind) => (kind, KindSource::Typed),
                None => {
                    let position = untyped_seen;
                    untyped_seen += 1;
                    let by_position = match position {
                        0 => ModuleKind::Kernel,
                        1 => ModuleKind::Ramdisk,
                        _ => ModuleKind::Unknown,
                    };
                    if position == 0 || range.size() < 4 {
                        // The first is never read; a module too small to
                        // hold the magic is not a policy (and reading 4
                        // bytes would run past it).
                        (by_position, KindSource::Guessed { read: false })
                    } else {
                        let mut word = [0u8; 4];
                        reader.read(range.base(), &mut word).map_err(|_| {
                            BootInfoError::ModuleRead {
                                index,
                                addr: range.base(),
                            }
                        })?;
                        let kind = if u32::from_le_bytes(word) == XSM_MAGIC {
                            ModuleKind::XsmPolicy
                        } else {
                            by_position
                        };
                        (kind, KindSource::Guessed { read: true })
                    }
                }
            };
            self.modules
                .push(Module {
                    range,
                    kind,
                    source,
                    bootargs: m.bootargs,
                    name: m.name,
                })
                .map_err(|_| BootInfoError::TooManyModules { max: MAX_MODULES })?;
        }
        Ok(())
    }

    /// The RAM banks and reserved ranges.
    pub fn memory(&self) -> &MemoryMap {
        &self.memory
    }

    /// The RAM banks, in DTB order.
    pub fn ram_banks(&self) -> &FixedVec<MemRange, MAX_RAM_BANKS> {
        self.memory.ram_banks()
    }

    /// Total bytes of RAM.
    pub fn total_ram(&self) -> u64 {
        self.memory
            .banks
            .iter()
            .fold(0u64, |acc, b| acc.saturating_add(b.size()))
    }

    /// The reserved ranges: memory reservation block entries first, then
    /// `/reserved-memory` children, each in DTB order. Zero-sized entries
    /// reserve nothing and are left out.
    pub fn reserved(&self) -> &FixedVec<Reserved, MAX_RESERVED> {
        self.memory.reserved()
    }

    /// The boot modules, in DTB order.
    pub fn modules(&self) -> &FixedVec<Module<'a>, MAX_MODULES> {
        &self.modules
    }

    /// The first module of `kind`.
    pub fn module(&self, kind: ModuleKind) -> Option<&Module<'a>> {
        self.modules.iter().find(|m| m.kind == kind)
    }

    /// `/chosen/bootargs`.
    pub fn bootargs(&self) -> Option<&'a str> {
        self.bootargs
    }

    /// `/chosen/xen,xen-bootargs` (the hypervisor's own command line when the
    /// loader also passes a kernel command line in `bootargs`).
    pub fn xen_bootargs(&self) -> Option<&'a str> {
        self.xen_bootargs
    }

    /// The hypervisor's command line as Xen picks it: `xen,xen-bootargs` if
    /// present, else `bootargs`.
    pub fn hypervisor_cmdline(&self) -> Option<&'a str> {
        self.xen_bootargs.or(self.bootargs)
    }

    /// The hypervisor image range given to [`BootInfo::parse`].
    pub fn image(&self) -> MemRange {
        self.image
    }

    /// The DTB range given to [`BootInfo::parse`].
    pub fn dtb(&self) -> MemRange {
        self.dtb
    }

    /// Memory the boot allocator may be seeded with: RAM minus the image, the
    /// DTB, the modules, the reserved ranges and `firmware_reserved` (e.g.
    /// non-conventional ranges of a UEFI memory map), as sorted, disjoint,
    /// page-aligned ranges (partial pages at the edges are dropped).
    pub fn free_ranges(&self, firmware_reserved: &[MemRange]) -> Result<FreeRanges, BootInfoError> {
        let too_many = BootInfoError::TooManyFreeRanges {
            max: MAX_FREE_RANGES,
        };
        let mut free = FreeRanges::new();
        for bank in self.memory.banks.iter() {
            let at = free.iter().take_while(|f| f.base() < bank.base()).count();
            free.insert(at, *bank).map_err(|_| too_many)?;
        }
        let holes = [self.image, self.dtb]
            .into_iter()
            .chain(self.modules.iter().map(|m| m.range))
            .chain(self.memory.reserved.iter().map(|r| r.range))
            .chain(firmware_reserved.iter().copied());
        for hole in holes {
            subtract(&mut free, &hole)?;
        }
        let mut out = FreeRanges::new();
        for r in free.iter() {
            if let Some(p) = r.pages_inside() {
                out.push(p).map_err(|_| too_many)?;
            }
        }
        Ok(out)
    }
}

fn module_range(index: usize, m: &RawModule<'_>) -> Result<MemRange, BootInfoError> {
    if m.size == 0 {
        return Err(BootInfoError::ZeroSizedModule {
            index,
            base: m.base,
        });
    }
    MemRange::new(m.base, m.size).ok_or(BootInfoError::ModuleOverflow {
        index,
        base: m.base,
        size: m.size,
    })
}

/// Removes `hole` from the sorted disjoint list `free`.
fn subtract(free: &mut FreeRanges, hole: &MemRange) -> Result<(), BootInfoError> {
    let mut i = 0;
    while let Some(r) = free.get(i).copied() {
        if !r.overlaps(hole) {
            i += 1;
            continue;
        }
        free.remove(i);
        let left = MemRange::from_bounds(r.base(), hole.base());
        let right = MemRange::from_bounds(hole.end(), r.end());
        for piece in [right, left].into_iter().flatten() {
            free.insert(i, piece)
                .map_err(|_| BootInfoError::TooManyFreeRanges {
                    max: MAX_FREE_RANGES,
                })?;
        }
        i += usize::from(left.is_some()) + usize::from(right.is_some());
    }
    Ok(())
}

fn collect_modules<'a>(
    chosen: &dtb::Node<'a>,
    out: &mut FixedVec<RawModule<'a>, MAX_MODULES>,
) -> Result<(), BootInfoError> {
    let (ac, sc) = cells(chosen, "/chosen")?;
    let mut index = 0usize;
    for node in chosen.children() {
        let Some(compat) = node.property("compatible") else {
            continue;
        };
        let typed = TYPED
            .iter()
            .find(|(name, _)| compat.strings().any(|c| c == *name))
            .map(|(_, k)| *k);
        let multiboot = compat.strings().any(|c| MULTIBOOT.contains(&c));
        match (typed, multiboot) {
            (None, false) => continue,
            (Some(kind), false) => {
                return Err(BootInfoError::NotAMultibootModule { index, kind });
            }
            _ => {}
        }
        let bad_reg = BootInfoError::BadReg {
            node: "module",
            index,
        };
        let reg = node.property("reg").ok_or(bad_reg)?;
        let mut entries = dtb::reg_entries(reg.value, ac, sc);
        // A module is one range: exactly one reg entry.
        let (base, size) = match (entries.next(), entries.next()) {
            (Some(Ok(e)), None) => e,
            _ => return Err(bad_reg),
        };
        let bootargs = string_prop(&node, "bootargs", "/chosen/module")?;
        out.push(RawModule {
            base: Paddr(base),
            size,
            typed,
            bootargs,
            name: node.name,
        })
        .map_err(|_| BootInfoError::TooManyModules { max: MAX_MODULES })?;
        index += 1;
    }
    Ok(())
}
