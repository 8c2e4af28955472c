//! The engine's errors: one variant per refusal, each carrying the offending
//! address, and each printing a sentence that names the problem.

use crate::access::AccessError;
use crate::addr::{Mfn, Paddr, Vaddr};
use crate::arch::MemFault;
use core::fmt;

/// Why an update, a lookup or an attribute request was refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
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
    /// Modify or Remove targeted an entry that is a table (it would orphan a
    /// subtree).
    TableInTheWay {
        /// Address of the entry.
        va: Vaddr,
        /// Its level.
        level: u8,
    },
    /// A block mapping covers part of the range at a level above the target
    /// (it would have to be split).
    BlockInTheWay {
        /// Address inside the block.
        va: Vaddr,
        /// Level of the block.
        level: u8,
    },
    /// Modify or Remove met an entry with the contiguous hint (immutable).
    ContiguousEntry {
        /// Address of the entry.
        va: Vaddr,
        /// Its level.
        level: u8,
    },
    /// Modify would change the memory type (AttrIndx).
    AttrIndexChange {
        /// Address of the entry.
        va: Vaddr,
        /// The entry's current AttrIndx.
        from: u8,
        /// The AttrIndx asked for.
        to: u8,
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
            Error::TableInTheWay { va, level } => write!(
                f,
                "the level-{level} entry for {va} is a table: changing it would orphan its subtree"
            ),
            Error::BlockInTheWay { va, level } => write!(
                f,
                "{va} lies inside a level-{level} block mapping that the request does not cover whole"
            ),
            Error::ContiguousEntry { va, level } => {
                write!(f, "the level-{level} entry for {va} has the contiguous hint and is immutable")
            }
            Error::AttrIndexChange { va, from, to } => write!(
                f,
                "modifying {va} would change its memory type (AttrIndx {from} -> {to})"
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

impl From<MemFault> for Error {
    fn from(f: MemFault) -> Self {
        Error::Fault(f)
    }
}
