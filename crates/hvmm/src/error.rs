//! The engine's errors: one variant per refusal, each carrying the offending
//! address, and each printing a sentence that names the problem.

use crate::access::AccessError;
use crate::addr::{Mfn, Paddr, Vaddr, Vmid};
use crate::arch::MemFault;
use crate::attr::MemType;
use core::fmt;

/// Why an update, a lookup or an attribute request was refused.
///
/// Each message names the cause once: [`Error::TableAccess`] names the frame
/// and its [`AccessError`] only the provider and why.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// An update of zero pages.
    EmptyRange,
    /// The virtual address is not page aligned.
    VaMisaligned(Vaddr),
    /// The physical address is not page aligned.
    PaMisaligned(Paddr),
    /// `va + pages * 4 KiB` does not fit in 64 bits.
    VaRangeOverflow {
        /// Start of the range.
        va: Vaddr,
        /// Number of pages.
        pages: u64,
    },
    /// The virtual range goes beyond the format's VA size.
    VaOutOfRange {
        /// Start of the range.
        va: Vaddr,
        /// Number of pages.
        pages: u64,
        /// The format's VA size in bits.
        va_bits: u32,
    },
    /// The physical range goes beyond the format's PA size (or overflows).
    PaOutOfRange {
        /// Start of the range.
        pa: Paddr,
        /// Number of pages.
        pages: u64,
        /// The format's PA size in bits.
        pa_bits: u32,
    },
    /// Read-write-execute was asked for.
    WritableAndExecutable,
    /// Executable device or write-combine memory was asked for.
    ExecutableDevice,
    /// Insert met a valid entry (no silent replacement).
    AlreadyMapped {
        /// First address found mapped.
        va: Vaddr,
        /// Level of the valid entry.
        level: u8,
    },
    /// Modify met an address with no mapping.
    NotMapped {
        /// First unmapped address.
        va: Vaddr,
    },
    /// Populate met a block mapping: the range is already mapped, there is
    /// no table to create below it.
    BlockInTheWay {
        /// Address inside the block.
        va: Vaddr,
        /// Level of the block.
        level: u8,
    },
    /// Modify would change the memory type (stage 1: AttrIndx; stage 2:
    /// MemAttr), which needs the mapping removed and inserted again.
    AttrIndexChange {
        /// Address of the entry.
        va: Vaddr,
        /// The entry's current AttrIndx / MemAttr.
        from: u8,
        /// The AttrIndx / MemAttr asked for.
        to: u8,
    },
    /// A stage-1 attribute names a memory type the table's MAIR map does
    /// not hold.
    MemTypeNotInMair(MemType),
    /// A MAIR map placed two types at one index, one type twice, or used an
    /// index past 7.
    BadMairMap {
        /// The offending index.
        index: u8,
    },
    /// A VMID wider than the format's VTTBR field.
    VmidTooWide {
        /// The VMID asked for.
        vmid: Vmid,
        /// The field's width.
        bits: u32,
    },
    /// Splitting or merging the stage-1 entry for `va` would, during its
    /// break, unmap a table page the engine itself reaches through that
    /// entry: the update could not finish. Map the tables elsewhere, or
    /// change the range.
    BreakUnmapsTable {
        /// Address of the entry that would be broken.
        va: Vaddr,
        /// Its level.
        level: u8,
        /// The table page's mapping that lies inside it.
        table_va: Vaddr,
    },
    /// Not enough frames for the tables the update needs.
    OutOfMemory {
        /// Tables needed.
        needed: usize,
        /// Frames available.
        available: usize,
    },
    /// A table page could not be mapped.
    TableAccess {
        /// The table frame.
        mfn: Mfn,
        /// Why.
        err: AccessError,
    },
    /// An access through a virtual address faulted (on the machine model; on
    /// hardware this is an exception instead).
    Fault(MemFault),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::EmptyRange => write!(f, "empty range: zero pages"),
            Error::VaMisaligned(va) => write!(f, "virtual address {va} is not 4 KiB aligned"),
            Error::PaMisaligned(pa) => write!(f, "physical address {pa} is not 4 KiB aligned"),
            Error::VaRangeOverflow { va, pages } => {
                write!(f, "range of {pages} pages at {va} overflows the address space")
            }
            Error::VaOutOfRange { va, pages, va_bits } => {
                write!(f, "range of {pages} pages at {va} goes beyond the {va_bits}-bit VA space")
            }
            Error::PaOutOfRange { pa, pages, pa_bits } => {
                write!(f, "range of {pages} pages at PA {pa} goes beyond the {pa_bits}-bit PA space")
            }
            Error::WritableAndExecutable => {
                write!(f, "writable and executable mappings are refused (W^X)")
            }
            Error::ExecutableDevice => {
                write!(f, "device and write-combine mappings cannot be executable")
            }
            Error::AlreadyMapped { va, level } => {
                write!(f, "{va} is already mapped (valid level-{level} entry); remove it first")
            }
            Error::NotMapped { va } => write!(f, "{va} is not mapped"),
            Error::BlockInTheWay { va, level } => write!(
                f,
                "{va} lies inside a level-{level} block mapping: there is no table to populate"
            ),
            Error::AttrIndexChange { va, from, to } => write!(
                f,
                "modifying {va} would change its memory type (attribute field {from} -> {to}); remove and insert it instead"
            ),
            Error::MemTypeNotInMair(mem) => {
                write!(f, "memory type {mem} has no index in the table's MAIR map")
            }
            Error::BadMairMap { index } => write!(
                f,
                "MAIR map: index {index} is past 7, used twice, or its type is placed twice"
            ),
            Error::VmidTooWide { vmid, bits } => {
                write!(f, "{vmid} does not fit the format's {bits}-bit VMID field")
            }
            Error::BreakUnmapsTable { va, level, table_va } => write!(
                f,
                "breaking the level-{level} entry for {va} would unmap the table page at {table_va} that the update writes through it"
            ),
            Error::OutOfMemory { needed, available } => write!(
                f,
                "out of memory: the update needs {needed} table pages, {available} available"
            ),
            Error::TableAccess { mfn, err } => {
                write!(f, "cannot map table frame {mfn}: {err}")
            }
            Error::Fault(fault) => write!(f, "{fault}"),
        }
    }
}

impl core::error::Error for Error {}

impl From<MemFault> for Error {
    fn from(f: MemFault) -> Self {
        Error::Fault(f)
    }
}
