//! # hvmm-bootinfo — boot information from the device tree
//!
//! Xen's `boot_fdt_info`, done carefully: from the DTB the boot loader hands
//! over, collect the RAM banks, the reserved ranges, the command lines and the
//! boot modules, and refuse anything inconsistent with a named error instead
//! of a silent drop or a panic. `no_std`, no allocation: every list has a
//! fixed capacity ([`MAX_RAM_BANKS`], [`MAX_RESERVED`], [`MAX_MODULES`],
//! [`MAX_FREE_RANGES`]) and exceeding one is an error.
//!
//! Module kinds follow Xen: typed compatibles are taken as given, untyped
//! `multiboot,module` nodes (what GRUB's `xen_module` produces) are guessed —
//! the first is the kernel, each later one is an XSM policy if it starts with
//! [`XSM_MAGIC`], else the ramdisk (one only; further ones are
//! [`ModuleKind::Unknown`]; unlike Xen, which makes only the *second*
//! untyped module a ramdisk, a policy placed before the ramdisk does not
//! demote it). The guess needs the module's first bytes, which
//! this crate does not read itself: the caller passes a [`ModuleReader`]
//! (in the hypervisor, `copy_from_paddr` through the fixmap in early boot —
//! the very path that killed Xen 4.13-rc under GRUB).
//!
//! [`BootInfo::free_ranges`] then gives what the boot allocator may be seeded
//! with: RAM minus the image, the DTB, the modules, the reserved ranges and
//! any firmware-reserved ranges, page aligned and sorted.
//!
//! With the `std` feature, [`builder::VirtBoard`] writes QEMU-virt-like DTBs
//! for tests and tools.
#![no_std]
#![warn(missing_docs)]
#![deny(unsafe_code)]

#[cfg(any(test, feature = "std"))]
extern crate std;

#[cfg(feature = "std")]
pub mod builder;
pub mod dtb;
mod error;
pub mod guest;
mod range;
pub mod writer;

pub use dtb::{Dtb, DtbError};
pub use error::BootInfoError;
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
    /// Something else (an untyped module after the ramdisk that is not a policy).
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
    banks: FixedVec<MemRange, MAX_RAM_BANKS>,
    reserved: FixedVec<Reserved, MAX_RESERVED>,
    modules: FixedVec<Module<'a>, MAX_MODULES>,
    bootargs: Option<&'a str>,
    xen_bootargs: Option<&'a str>,
    image: MemRange,
    dtb: MemRange,
}

/// Compatible strings that fix a module's kind.
const TYPED: [(&str, ModuleKind); 5] = [
    ("multiboot,kernel", ModuleKind::Kernel),
    ("xen,linux-zimage", ModuleKind::Kernel),
    ("multiboot,ramdisk", ModuleKind::Ramdisk),
    ("xen,linux-initrd", ModuleKind::Ramdisk),
    ("xen,xsm-policy", ModuleKind::XsmPolicy),
];
/// Compatible strings of a module whose kind must be guessed.
const UNTYPED: [&str; 2] = ["multiboot,module", "xen,multiboot-module"];

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
        let root = tree.root();
        let mut info = BootInfo {
            banks: FixedVec::new(),
            reserved: FixedVec::new(),
            modules: FixedVec::new(),
            bootargs: None,
            xen_bootargs: None,
            image,
            dtb: dtb_range,
        };
        info.collect_banks(&root, ctx.pa_bits)?;
        info.collect_reserved(&tree, &root)?;
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

    fn collect_banks(&mut self, root: &dtb::Node<'a>, pa_bits: u32) -> Result<(), BootInfoError> {
        let (ac, sc) = cells(root, "/")?;
        let limit = 1u128 << pa_bits;
        let memory_nodes = root.children().filter(|n| {
            let typed = n.property("device_type").and_then(|p| p.as_str()) == Some("memory");
            (typed || n.name_matches("memory")) && n.is_available()
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
                    return Err(BootInfoError::ZeroSizedBank { base });
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
        if self.banks.is_empty() {
            return Err(BootInfoError::NoMemory);
        }
        Ok(())
    }

    fn push_reserved(
        &mut self,
        base: u64,
        size: u64,
        source: ReservedSource,
    ) -> Result<(), BootInfoError> {
        let base = Paddr(base);
        if size == 0 {
            // Reserves nothing.
            return Ok(());
        }
        let range =
            MemRange::new(base, size).ok_or(BootInfoError::ReservedOverflow { base, size })?;
        self.reserved
            .push(Reserved { range, source })
            .map_err(|_| BootInfoError::TooManyReserved { max: MAX_RESERVED })
    }

    fn collect_reserved(
        &mut self,
        tree: &Dtb<'a>,
        root: &dtb::Node<'a>,
    ) -> Result<(), BootInfoError> {
        for (a, s) in tree.reservations() {
            self.push_reserved(a, s, ReservedSource::MemReserve)?;
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
            for entry in dtb::reg_entries(reg.value, ac, sc) {
                let (base, size) = entry.map_err(|()| BootInfoError::BadReg {
                    node: "reserved-memory",
                    index,
                })?;
                self.push_reserved(base, size, ReservedSource::ReservedMemory)?;
            }
        }
        Ok(())
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
            if !self.ram_covers(&module) {
                return Err(BootInfoError::ModuleOutsideRam { index, module });
            }
        }
        Ok(())
    }

    fn classify<R: ModuleReader>(
        &mut self,
        raw: &FixedVec<RawModule<'a>, MAX_MODULES>,
        reader: &mut R,
    ) -> Result<(), BootInfoError> {
        let mut untyped_seen = 0usize;
        let mut ramdisk_guessed = false;
        for (index, m) in raw.iter().enumerate() {
            let range = module_range(index, m)?;
            let (kind, source) = match m.typed {
                Some(kind) => (kind, KindSource::Typed),
                None => {
                    untyped_seen += 1;
                    if untyped_seen == 1 {
                        (ModuleKind::Kernel, KindSource::Guessed { read: false })
                    } else if range.size() < 4 {
                        // Too small to hold the magic: not a policy, and
                        // reading 4 bytes would run past the module.
                        let kind = if ramdisk_guessed {
                            ModuleKind::Unknown
                        } else {
                            ModuleKind::Ramdisk
                        };
                        ramdisk_guessed = true;
                        (kind, KindSource::Guessed { read: false })
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
                        } else if ramdisk_guessed {
                            ModuleKind::Unknown
                        } else {
                            ramdisk_guessed = true;
                            ModuleKind::Ramdisk
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

    /// Whether the union of the RAM banks covers `r` (a range may span
    /// adjacent banks).
    fn ram_covers(&self, r: &MemRange) -> bool {
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

    /// The RAM banks, in DTB order.
    pub fn ram_banks(&self) -> &FixedVec<MemRange, MAX_RAM_BANKS> {
        &self.banks
    }

    /// Total bytes of RAM.
    pub fn total_ram(&self) -> u64 {
        self.banks
            .iter()
            .fold(0u64, |acc, b| acc.saturating_add(b.size()))
    }

    /// The reserved ranges: memory reservation block entries first, then
    /// `/reserved-memory` children, each in DTB order. Zero-sized entries
    /// reserve nothing and are left out.
    pub fn reserved(&self) -> &FixedVec<Reserved, MAX_RESERVED> {
        &self.reserved
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
        for bank in self.banks.iter() {
            let at = free.iter().take_while(|f| f.base() < bank.base()).count();
            free.insert(at, *bank).map_err(|_| too_many)?;
        }
        let holes = [self.image, self.dtb]
            .into_iter()
            .chain(self.modules.iter().map(|m| m.range))
            .chain(self.reserved.iter().map(|r| r.range))
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
        let typed = compat
            .strings()
            .find_map(|c| TYPED.iter().find(|(name, _)| *name == c).map(|(_, k)| *k));
        let untyped = compat.strings().any(|c| UNTYPED.contains(&c));
        if typed.is_none() && !untyped {
            continue;
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
