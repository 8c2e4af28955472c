//! The translation table walker, written from the Arm architecture (ARM DDI
//! 0487, "The AArch64 Virtual Memory System Architecture" for VMSAv8-64 stage
//! 1 at EL2, and "The AArch32 Virtual Memory System Architecture", long
//! descriptor format, for PL2/Hyp mode) — deliberately not from hvmm's own
//! descriptor code, so that the two can disagree.

use crate::mem::PhysMem;
use hvmm::FaultKind;

/// Descriptor bit 0: valid.
pub(crate) const VALID: u64 = 1 << 0;
/// Descriptor bit 1: table (levels 0-2) or page (level 3).
pub(crate) const TABLE_OR_PAGE: u64 = 1 << 1;
/// AttrIndx, bits `[4:2]`.
pub(crate) const ATTR_SHIFT: u32 = 2;
/// `AP[2]`: read-only (bit 7).
pub(crate) const AP_RO: u64 = 1 << 7;
/// Access flag (bit 10).
pub(crate) const AF: u64 = 1 << 10;
/// Contiguous hint (bit 52).
pub(crate) const CONTIGUOUS: u64 = 1 << 52;
/// XN (bit 54); PXN (bit 53) is RES0 in these single-privilege regimes.
pub(crate) const XN: u64 = 1 << 54;
/// XNTable (bit 60) in table descriptors.
pub(crate) const XN_TABLE: u64 = 1 << 60;
/// `APTable[1]` (bit 62) in table descriptors: no writes below.
pub(crate) const AP_TABLE_RO: u64 = 1 << 62;
/// Output / next-level address field, bits `[47:12]`.
pub(crate) const OA_MASK: u64 = 0x0000_ffff_ffff_f000;
/// Entries in a contiguous run (4 KiB granule).
pub(crate) const CONTIG_RUN: u64 = 16;

/// The bit position of the lowest VA bit resolved at `level` (4 KiB granule).
pub(crate) const fn level_shift(level: u8) -> u32 {
    39 - 9 * level as u32
}

/// Bytes mapped by one entry at `level`.
pub(crate) const fn level_size(level: u8) -> u64 {
    1u64 << level_shift(level)
}

/// What a walk needs to know about the translation regime and the CPU.
#[derive(Copy, Clone, Debug)]
pub(crate) struct WalkCfg {
    /// VMSAv8-64 (`true`) or AArch32 LPAE Hyp (`false`).
    pub arm64: bool,
    /// Configured output (physical) address size.
    pub pa_bits: u8,
    /// TTBR0_EL2 / HTTBR.
    pub root: u64,
}

impl WalkCfg {
    /// The initial lookup level: 0 with T0SZ = 16, 1 with T0SZ = 0 (LPAE).
    pub(crate) fn start_level(&self) -> u8 {
        if self.arm64 {
            0
        } else {
            1
        }
    }

    /// Input address size: 48 (T0SZ = 16) or 32 (T0SZ = 0).
    pub(crate) fn va_bits(&self) -> u32 {
        if self.arm64 {
            48
        } else {
            32
        }
    }

    /// Whether `addr` fits the configured output address size.
    fn oa_fits(&self, addr: u64) -> bool {
        addr >> self.pa_bits == 0
    }
}

/// Where a walk begins when a walk-cache entry lets it skip levels.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Resume {
    /// Level of the table to read next.
    pub level: u8,
    /// Physical address of that table.
    pub table: u64,
    /// `APTable[1]` accumulated so far.
    pub ro: bool,
    /// XNTable accumulated so far.
    pub xn: bool,
}

/// A valid table descriptor met during a walk (what a walk cache may keep).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct TableStep {
    /// Level of the table descriptor itself.
    pub level: u8,
    /// `va >> level_shift(level)`: the part of the VA that selected it.
    pub key: u64,
    /// Physical address of the descriptor.
    pub desc_pa: u64,
    /// Where the walk continues, with the hierarchical bits including this
    /// descriptor's.
    pub next: Resume,
}

/// The leaf descriptor a successful walk ends on.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Leaf {
    /// Lookup level of the block / page.
    pub level: u8,
    /// The descriptor.
    pub desc: u64,
    /// Physical address of the descriptor.
    pub desc_pa: u64,
    /// Output address of the block / page base.
    pub oa: u64,
    /// Writes forbidden (`AP[2]` or an `APTable[1]` above).
    pub ro: bool,
    /// Execution forbidden by XN or an XNTable above (WXN not included).
    pub xn: bool,
    /// AttrIndx.
    pub attr_idx: u8,
    /// Contiguous hint.
    pub contiguous: bool,
}

/// A walk that ended in a fault: the fault kind and the level it was found at.
pub(crate) type WalkFault = (FaultKind, u8);

/// Walks the tables in `mem` for `va`, from the root register or from
/// `resume`. `on_table` sees every valid table descriptor followed.
pub(crate) fn walk(
    cfg: &WalkCfg,
    mem: &PhysMem,
    va: u64,
    resume: Option<Resume>,
    on_table: &mut dyn FnMut(TableStep),
) -> Result<Leaf, WalkFault> {
    let first = cfg.start_level();
    // Input address beyond T0SZ's range: translation fault at the initial
    // lookup level (level 0 on arm64).
    if va >> cfg.va_bits() != 0 {
        return Err((FaultKind::Translation, first));
    }
    let mut at = match resume {
        Some(r) => r,
        None => {
            // TTBR0_EL2.BADDR is [47:12] for a full 4 KiB level-0 table;
            // HTTBR.BADDR is [39:5] for LPAE's 4-entry level-1 table (bits
            // [47:40] must be zero: they are checked as output address bits).
            let base = if cfg.arm64 {
                cfg.root & OA_MASK
            } else {
                cfg.root & 0x0000_ffff_ffff_ffe0
            };
            if !cfg.oa_fits(base) {
                return Err((FaultKind::AddressSize, first));
            }
            Resume {
                level: first,
                table: base,
                ro: false,
                xn: false,
            }
        }
    };
    loop {
        let level = at.level;
        let index = (va >> level_shift(level)) & 0x1ff;
        let desc_pa = at.table + index * 8;
        let desc = mem.read_u64(desc_pa).ok_or((FaultKind::External, level))?;
        if desc & VALID == 0 {
            return Err((FaultKind::Translation, level));
        }
        let bit1 = desc & TABLE_OR_PAGE != 0;
        if level < 3 && bit1 {
            let next = desc & OA_MASK;
            if !cfg.oa_fits(next) {
                return Err((FaultKind::AddressSize, level));
            }
            let step = TableStep {
                level,
                key: va >> level_shift(level),
                desc_pa,
                next: Resume {
                    level: level + 1,
                    table: next,
                    ro: at.ro || desc & AP_TABLE_RO != 0,
                    xn: at.xn || desc & XN_TABLE != 0,
                },
            };
            on_table(step);
            at = step.next;
            continue;
        }
        // A block at level 0 (4 KiB granule, no LPA2) and the reserved
        // encoding 0b01 at level 3 are invalid descriptors.
        if level == 0 || (level == 3 && !bit1) {
            return Err((FaultKind::Translation, level));
        }
        let field = desc & OA_MASK;
        if !cfg.oa_fits(field) {
            return Err((FaultKind::AddressSize, level));
        }
        if desc & AF == 0 {
            return Err((FaultKind::AccessFlag, level));
        }
        return Ok(Leaf {
            level,
            desc,
            desc_pa,
            oa: field & !(level_size(level) - 1),
            ro: at.ro || desc & AP_RO != 0,
            xn: at.xn || desc & XN != 0,
            attr_idx: ((desc >> ATTR_SHIFT) & 7) as u8,
            contiguous: desc & CONTIGUOUS != 0,
        });
    }
}
