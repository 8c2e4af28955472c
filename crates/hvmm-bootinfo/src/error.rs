//! What can be wrong with the boot information.

use crate::dtb::DtbError;
use crate::range::MemRange;
use crate::{ModuleKind, Reserved, ReservedSource};
use core::fmt;
use hvmm::Paddr;

/// What was placed in memory by the loader: the hypervisor image, the
/// device tree blob, or a boot module.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Placed {
    /// The hypervisor image.
    Image,
    /// The device tree blob.
    Dtb,
    /// Boot module number `n` (in DTB order).
    Module(usize),
}

impl fmt::Display for Placed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placed::Image => f.write_str("the hypervisor image"),
            Placed::Dtb => f.write_str("the device tree blob"),
            Placed::Module(n) => write!(f, "module #{n}"),
        }
    }
}

impl fmt::Display for Reserved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.source, self.no_map) {
            (ReservedSource::MemReserve, _) => write!(f, "/memreserve/ entry {}", self.range),
            (ReservedSource::ReservedMemory, true) => {
                write!(f, "no-map /reserved-memory range {}", self.range)
            }
            (ReservedSource::ReservedMemory, false) => {
                write!(f, "/reserved-memory range {}", self.range)
            }
        }
    }
}

/// Why the boot information was refused. Each variant carries the offending
/// values; its `Display` is one sentence naming the problem.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BootInfoError {
    /// The device tree blob is malformed or truncated.
    Dtb(DtbError),
    /// The physical-address size parameter is not one this crate handles.
    BadPaBits {
        /// The value given.
        pa_bits: u32,
    },
    /// A parameter range (the image or the DTB) is empty or wraps around.
    BadParam {
        /// Which parameter (`"image"` or `"dtb"`).
        what: &'static str,
        /// Its start.
        base: Paddr,
        /// Its size.
        size: u64,
    },
    /// A node's `#address-cells` / `#size-cells` is not a single cell, or is
    /// too large to describe a 64-bit address.
    BadCells {
        /// Path of the node whose cells are wrong.
        node: &'static str,
    },
    /// A `reg` property is missing, not a whole number of entries, or has a
    /// value that does not fit in 64 bits.
    BadReg {
        /// What the node is (`"memory"`, `"reserved-memory"`, `"module"`).
        node: &'static str,
        /// Index of the node among those of its kind.
        index: usize,
    },
    /// A string property is not NUL-terminated UTF-8.
    BadString {
        /// Path of the node.
        node: &'static str,
        /// Name of the property.
        property: &'static str,
    },
    /// No available `/memory` node with a bank of non-zero size (boards
    /// whose loader fills `/memory` at boot ship trees like that).
    NoMemory,
    /// A RAM bank whose end does not fit in 64 bits.
    BankOverflow {
        /// Its base.
        base: Paddr,
        /// Its size.
        size: u64,
    },
    /// A RAM bank that ends beyond the physical-address size.
    BankBeyondPaSize {
        /// The bank.
        bank: MemRange,
        /// The physical-address size in bits.
        pa_bits: u32,
    },
    /// Two RAM banks overlap.
    BanksOverlap {
        /// One bank.
        first: MemRange,
        /// The other.
        second: MemRange,
    },
    /// A reserved range whose end does not fit in 64 bits.
    ReservedOverflow {
        /// Its base.
        base: Paddr,
        /// Its size.
        size: u64,
    },
    /// A module of size zero.
    ZeroSizedModule {
        /// Index of the module (in DTB order).
        index: usize,
        /// Its base.
        base: Paddr,
    },
    /// A module whose end does not fit in 64 bits.
    ModuleOverflow {
        /// Index of the module.
        index: usize,
        /// Its base.
        base: Paddr,
        /// Its size.
        size: u64,
    },
    /// Two modules overlap.
    ModulesOverlap {
        /// Index of the earlier module.
        first: usize,
        /// Index of the later module.
        second: usize,
        /// The earlier module's range.
        first_range: MemRange,
        /// The later module's range.
        second_range: MemRange,
    },
    /// A module overlaps the hypervisor image.
    ModuleOverlapsImage {
        /// Index of the module.
        index: usize,
        /// The module's range.
        module: MemRange,
        /// The image's range.
        image: MemRange,
    },
    /// A module is not wholly inside RAM.
    ModuleOutsideRam {
        /// Index of the module.
        index: usize,
        /// The module's range.
        module: MemRange,
    },
    /// The DTB itself overlaps a module.
    DtbOverlapsModule {
        /// Index of the module.
        index: usize,
        /// The module's range.
        module: MemRange,
        /// The DTB's range.
        dtb: MemRange,
    },
    /// More RAM banks than [`crate::MAX_RAM_BANKS`].
    TooManyBanks {
        /// The capacity.
        max: usize,
    },
    /// More reserved ranges than [`crate::MAX_RESERVED`].
    TooManyReserved {
        /// The capacity.
        max: usize,
    },
    /// More modules than [`crate::MAX_MODULES`].
    TooManyModules {
        /// The capacity.
        max: usize,
    },
    /// The free ranges do not fit in [`crate::MAX_FREE_RANGES`].
    TooManyFreeRanges {
        /// The capacity.
        max: usize,
    },
    /// A `/reserved-memory` child overlaps a reserved range recorded before
    /// it (a `/memreserve/` entry it does not lie wholly inside, or another
    /// child), as Xen 4.20 and later refuse.
    ReservedOverlap {
        /// The range recorded first.
        first: Reserved,
        /// The child's range.
        second: Reserved,
    },
    /// The hypervisor image, the DTB or a module lies in reserved memory:
    /// it overlaps a `/reserved-memory` child (`no-map` or not), or a
    /// `/memreserve/` entry it is not wholly inside (a loader may list what
    /// it placed there, as U-Boot does for the initrd and the DTB).
    InReserved {
        /// What was placed there.
        item: Placed,
        /// Where it is.
        range: MemRange,
        /// The reserved range it overlaps.
        reserved: Reserved,
    },
    /// A `/chosen` child with a module-kind compatible (`multiboot,kernel`,
    /// ...) but neither `multiboot,module` nor `xen,multiboot-module`, which
    /// every boot module needs (Xen skips such a node without a word).
    NotAMultibootModule {
        /// Its index among the `/chosen` children with a module compatible.
        index: usize,
        /// The kind its compatible names.
        kind: ModuleKind,
    },
    /// The caller's [`crate::ModuleReader`] failed to read the first bytes
    /// of a module (the reader keeps its own error's detail).
    ModuleRead {
        /// Index of the module.
        index: usize,
        /// The address it was asked to read.
        addr: Paddr,
    },
}

impl From<DtbError> for BootInfoError {
    fn from(e: DtbError) -> Self {
        BootInfoError::Dtb(e)
    }
}

impl fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use BootInfoError::*;
        match *self {
            Dtb(e) => write!(f, "malformed device tree: {e}"),
            BadPaBits { pa_bits } => {
                write!(f, "physical-address size of {pa_bits} bits is not supported (32..=52)")
            }
            BadParam { what, base, size } => {
                write!(f, "the {what} range at {base} of size {size:#x} is empty or wraps around")
            }
            BadCells { node } => write!(
                f,
                "{node} has #address-cells/#size-cells that are not single cells describing at most 64 bits"
            ),
            BadReg { node, index } => write!(
                f,
                "the reg property of {node} node #{index} is missing, ragged, or does not fit 64 bits"
            ),
            BadString { node, property } => {
                write!(f, "property {property} of {node} is not a NUL-terminated UTF-8 string")
            }
            NoMemory => write!(
                f,
                "the device tree describes no RAM (no available /memory node with a non-empty bank; boards whose loader fills /memory at boot ship trees like that)"
            ),
            BankOverflow { base, size } => {
                write!(f, "RAM bank at {base} of size {size:#x} wraps past the 64-bit address space")
            }
            BankBeyondPaSize { bank, pa_bits } => {
                write!(f, "RAM bank {bank} ends beyond the {pa_bits}-bit physical address space")
            }
            BanksOverlap { first, second } => write!(f, "RAM banks {first} and {second} overlap"),
            ReservedOverflow { base, size } => write!(
                f,
                "reserved range at {base} of size {size:#x} wraps past the 64-bit address space"
            ),
            ZeroSizedModule { index, base } => write!(f, "module #{index} at {base} has size zero"),
            ModuleOverflow { index, base, size } => write!(
                f,
                "module #{index} at {base} of size {size:#x} wraps past the 64-bit address space"
            ),
            ModulesOverlap { first, second, first_range, second_range } => write!(
                f,
                "module #{first} {first_range} overlaps module #{second} {second_range}"
            ),
            ModuleOverlapsImage { index, module, image } => {
                write!(f, "module #{index} {module} overlaps the hypervisor image {image}")
            }
            ModuleOutsideRam { index, module } => {
                write!(f, "module #{index} {module} is not wholly inside RAM")
            }
            DtbOverlapsModule { index, module, dtb } => {
                write!(f, "the device tree blob {dtb} overlaps module #{index} {module}")
            }
            TooManyBanks { max } => write!(f, "more than {max} RAM banks"),
            TooManyReserved { max } => write!(f, "more than {max} reserved memory ranges"),
            TooManyModules { max } => write!(f, "more than {max} boot modules"),
            TooManyFreeRanges { max } => write!(f, "free memory splits into more than {max} ranges"),
            ReservedOverlap { first, second } => {
                write!(f, "reserved ranges overlap: the {second} overlaps the {first}")
            }
            InReserved { item, range, reserved } => {
                write!(f, "{item} {range} lies in reserved memory: it overlaps the {reserved}")?;
                if reserved.source == ReservedSource::MemReserve {
                    f.write_str(" without lying wholly inside it")?;
                }
                Ok(())
            }
            NotAMultibootModule { index, kind } => write!(
                f,
                "/chosen module node #{index} says it is a {kind:?} module but its compatible lacks \"multiboot,module\" (every boot module needs it; Xen ignores such a node)"
            ),
            ModuleRead { index, addr } => {
                write!(f, "reading the first bytes of module #{index} at {addr} failed")
            }
        }
    }
}

impl core::error::Error for BootInfoError {}
