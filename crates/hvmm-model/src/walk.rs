//! The translation table walker, written from the Arm architecture (ARM DDI
//! 0487, "The AArch64 Virtual Memory System Architecture" and its
//! `AArch64.TranslationTableWalk` pseudocode for VMSAv8-64 stage 1 at EL2 and
//! EL1 and for stage 2; "The AArch32 Virtual Memory System Architecture",
//! long-descriptor format, for PL2/Hyp mode, PL1 and stage 2) — deliberately
//! not from hvmm's own descriptor code, so that the two can disagree.
//!
//! One walker serves every regime: a [`WalkCfg`] says which descriptor
//! semantics apply ([`Flavor`]), where the walk starts and how wide the
//! input and output addresses are; a [`WalkEnv`] reads the descriptors (from
//! physical memory, or through stage 2 for a guest's stage-1 tables).

use crate::fault::{AbortKind, GuestFault};

/// Descriptor bit 0: valid.
pub(crate) const VALID: u64 = 1 << 0;
/// Descriptor bit 1: table (levels 0-2) or page (level 3).
pub(crate) const TABLE_OR_PAGE: u64 = 1 << 1;
/// AttrIndx `[4:2]` (stage 1) / MemAttr `[5:2]` (stage 2) start here.
pub(crate) const ATTR_SHIFT: u32 = 2;
/// Stage 1 `AP[1]` (bit 6): EL0 / PL0 access. Stage 2 `S2AP[0]`: reads.
pub(crate) const AP_EL0: u64 = 1 << 6;
/// Stage 1 `AP[2]` (bit 7): read-only. Stage 2 `S2AP[1]`: writes.
pub(crate) const AP_RO: u64 = 1 << 7;
/// Stage 2 `S2AP[0]` (bit 6): reads allowed.
pub(crate) const S2AP_READ: u64 = 1 << 6;
/// Stage 2 `S2AP[1]` (bit 7): writes allowed.
pub(crate) const S2AP_WRITE: u64 = 1 << 7;
/// Access flag (bit 10).
pub(crate) const AF: u64 = 1 << 10;
/// Contiguous hint (bit 52).
pub(crate) const CONTIGUOUS: u64 = 1 << 52;
/// PXN (bit 53): privileged execute-never, in the EL1&0 stage 1 only (RES0
/// in the single-privilege EL2 / Hyp regime; stage 2 XN is bit 54 alone
/// without FEAT_XNX).
pub(crate) const PXN: u64 = 1 << 53;
/// XN (bit 54): execute-never (UXN for the EL1&0 stage 1, where it applies
/// to EL0 only).
pub(crate) const XN: u64 = 1 << 54;
/// PXNTable (bit 59) in EL1&0 stage-1 table descriptors.
pub(crate) const PXN_TABLE: u64 = 1 << 59;
/// XNTable (bit 60) in stage-1 table descriptors.
pub(crate) const XN_TABLE: u64 = 1 << 60;
/// `APTable[1]` (bit 62) in stage-1 table descriptors: no writes below.
pub(crate) const AP_TABLE_RO: u64 = 1 << 62;
/// Output / next-level address field, bits `[47:12]`.
pub(crate) const OA_MASK: u64 = 0x0000_ffff_ffff_f000;
/// Entries in a contiguous run (4 KiB granule).
pub(crate) const CONTIG_RUN: u64 = 16;

/// The bit position of the lowest input-address bit resolved at `level`
/// (4 KiB granule).
pub(crate) const fn level_shift(level: u8) -> u32 {
    39 - 9 * level as u32
}

/// Bytes mapped by one entry at `level`.
pub(crate) const fn level_size(level: u8) -> u64 {
    1u64 << level_shift(level)
}

/// Which descriptor semantics a walk uses.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// Stage 1 of the EL2 / Hyp regime: `AP[2]`, XN, `APTable[1]`, XNTable.
    El2,
    /// Stage 1 of the EL1&0 regime, for an access from EL1 / PL1: `AP[2]`,
    /// PXN, `APTable[1]`, PXNTable; on arm64 a page EL0 can write is never
    /// executable at EL1.
    El1,
    /// Stage 2: `S2AP[1:0]`, XN, MemAttr; table descriptors carry no
    /// attributes.
    Stage2,
}

/// What a walk needs to know about the translation regime and the CPU.
#[derive(Copy, Clone, Debug)]
pub(crate) struct WalkCfg {
    /// Descriptor semantics.
    pub flavor: Flavor,
    /// VMSAv8-64 (`true`) or AArch32 long descriptors (`false`): only the
    /// level a configuration fault is reported at depends on it.
    pub arm64: bool,
    /// Initial lookup level.
    pub start_level: u8,
    /// Input address size.
    pub ia_bits: u32,
    /// Output address size.
    pub oa_bits: u8,
    /// The base register as written (TTBR / HTTBR / VTTBR): its low bits
    /// below the root table's alignment and bits `[63:48]` are ignored.
    pub root: u64,
    /// Whether the control register's fields are consistent; a walk with an
    /// inconsistent configuration is a translation fault (level 0 on arm64,
    /// level 1 on arm32).
    pub valid: bool,
}

impl WalkCfg {
    /// The level faults found before the first lookup are reported at:
    /// "level 0; AArch32 reports this as a level 1 fault" (the pseudocode's
    /// `!basefound` and base-register address size cases).
    pub(crate) fn config_fault_level(&self) -> u8 {
        if self.arm64 {
            0
        } else {
            1
        }
    }

    /// log2 of the number of entries at the initial lookup level (over all
    /// concatenated tables).
    pub(crate) fn root_index_bits(&self) -> u32 {
        self.ia_bits.saturating_sub(level_shift(self.start_level))
    }

    /// The root table's physical address: the base register's bits
    /// `[47:x]`, where `2^x` is the size of the (possibly concatenated)
    /// root (at least 8 bytes).
    pub(crate) fn base(&self) -> u64 {
        let low = 3 + self.root_index_bits();
        self.root & 0x0000_ffff_ffff_ffff & !((1u64 << low) - 1)
    }

    /// Whether `addr` fits the configured output address size.
    pub(crate) fn oa_fits(&self, addr: u64) -> bool {
        addr >> self.oa_bits == 0
    }

    /// Whether a contiguous hint at `level` is honoured: a run of 16 entries
    /// must fit the input address space (the pseudocode's "misprogramming
    /// of the contiguous bit" case at level 1 with fewer than 34 input bits
    /// is IMPLEMENTATION DEFINED; the model ignores the hint there).
    fn contiguous_allowed(&self, level: u8) -> bool {
        !(level == 1 && self.ia_bits < 34)
    }
}

/// Where a walk begins when a walk-cache entry lets it skip levels.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Resume {
    /// Level of the table to read next.
    pub level: u8,
    /// Address of that table (an IPA for a guest's stage-1 tables).
    pub table: u64,
    /// `APTable[1]` accumulated so far.
    pub ro: bool,
    /// XNTable (EL2) / PXNTable (EL1) accumulated so far.
    pub xn: bool,
}

/// A valid table descriptor met during a walk (what a walk cache may keep).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct TableStep {
    /// Level of the table descriptor itself.
    pub level: u8,
    /// `ia >> level_shift(level)`: the part of the input that selected it.
    pub key: u64,
    /// Address of the descriptor (an IPA for a guest's stage-1 tables).
    pub desc_addr: u64,
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
    /// Address of the descriptor.
    pub desc_addr: u64,
    /// Output address of the block / page base.
    pub oa: u64,
    /// Reads allowed (stage 2 `S2AP[0]`; always at stage 1).
    pub r: bool,
    /// Writes allowed.
    pub w: bool,
    /// Execution allowed by the descriptor and the tables above (WXN not
    /// applied).
    pub x: bool,
    /// AttrIndx (stage 1) or MemAttr (stage 2).
    pub attr: u8,
    /// The contiguous hint, where it is honoured.
    pub contiguous: bool,
}

/// Why a walk stopped.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum WalkErr {
    /// A fault of this walk, found at a level.
    Fault(AbortKind, u8),
    /// A stage-2 fault on a read of one of a guest's stage-1 tables.
    S2(GuestFault),
}

/// How a walk reads descriptors and reports the tables it follows.
pub(crate) trait WalkEnv {
    /// Reads the descriptor at `addr` for a lookup at `level`.
    fn read(&mut self, addr: u64, level: u8) -> Result<u64, WalkErr>;
    /// Sees every valid table descriptor followed.
    fn on_table(&mut self, _step: TableStep) {}
}

/// Walks the tables for `ia`, from the base register or from `resume`.
pub(crate) fn walk(
    cfg: &WalkCfg,
    env: &mut dyn WalkEnv,
    ia: u64,
    resume: Option<Resume>,
) -> Result<Leaf, WalkErr> {
    let cfg_level = cfg.config_fault_level();
    // Inconsistent control fields, or an input address beyond the input
    // size (TxSZ): translation fault, reported at level 0 (AArch64) / level
    // 1 (AArch32) — not at the initial lookup level.
    if !cfg.valid || ia >> cfg.ia_bits != 0 {
        return Err(WalkErr::Fault(AbortKind::Translation, cfg_level));
    }
    let mut at = match resume {
        Some(r) => r,
        None => {
            let base = cfg.base();
            if !cfg.oa_fits(base) {
                return Err(WalkErr::Fault(AbortKind::AddressSize, cfg_level));
            }
            Resume {
                level: cfg.start_level,
                table: base,
                ro: false,
                xn: false,
            }
        }
    };
    loop {
        let level = at.level;
        let index_mask = if level == cfg.start_level {
            (1u64 << cfg.root_index_bits()) - 1
        } else {
            0x1ff
        };
        let index = (ia >> level_shift(level)) & index_mask;
        let desc_addr = at.table + index * 8;
        let desc = env.read(desc_addr, level)?;
        if desc & VALID == 0 {
            return Err(WalkErr::Fault(AbortKind::Translation, level));
        }
        let bit1 = desc & TABLE_OR_PAGE != 0;
        if level < 3 && bit1 {
            let next = desc & OA_MASK;
            if !cfg.oa_fits(next) {
                return Err(WalkErr::Fault(AbortKind::AddressSize, level));
            }
            let (ro, xn) = match cfg.flavor {
                Flavor::El2 => (desc & AP_TABLE_RO != 0, desc & XN_TABLE != 0),
                Flavor::El1 => (desc & AP_TABLE_RO != 0, desc & PXN_TABLE != 0),
                // Stage-2 table descriptors have no attribute fields.
                Flavor::Stage2 => (false, false),
            };
            let step = TableStep {
                level,
                key: ia >> level_shift(level),
                desc_addr,
                next: Resume {
                    level: level + 1,
                    table: next,
                    ro: at.ro || ro,
                    xn: at.xn || xn,
                },
            };
            env.on_table(step);
            at = step.next;
            continue;
        }
        // A block at level 0 (4 KiB granule, no LPA2) and the reserved
        // encoding 0b01 at level 3 are invalid descriptors.
        if level == 0 || (level == 3 && !bit1) {
            return Err(WalkErr::Fault(AbortKind::Translation, level));
        }
        let field = desc & OA_MASK;
        if !cfg.oa_fits(field) {
            return Err(WalkErr::Fault(AbortKind::AddressSize, level));
        }
        if desc & AF == 0 {
            return Err(WalkErr::Fault(AbortKind::AccessFlag, level));
        }
        let (r, w, x, attr) = match cfg.flavor {
            Flavor::El2 => (
                true,
                !(at.ro || desc & AP_RO != 0),
                !(at.xn || desc & XN != 0),
                ((desc >> ATTR_SHIFT) & 7) as u8,
            ),
            Flavor::El1 => {
                let w = !(at.ro || desc & AP_RO != 0);
                // AArch64: a page that EL0 can write (AP[2:1] = 0b01) is
                // never executable at EL1.
                let el0_writable = desc & (AP_RO | AP_EL0) == AP_EL0 && !at.ro;
                let pxn = at.xn || desc & PXN != 0 || (cfg.arm64 && el0_writable);
                (true, w, !pxn, ((desc >> ATTR_SHIFT) & 7) as u8)
            }
            Flavor::Stage2 => (
                desc & S2AP_READ != 0,
                desc & S2AP_WRITE != 0,
                desc & XN == 0,
                ((desc >> ATTR_SHIFT) & 0xf) as u8,
            ),
        };
        return Ok(Leaf {
            level,
            desc,
            desc_addr,
            oa: field & !(level_size(level) - 1),
            r,
            w,
            x,
            attr,
            contiguous: desc & CONTIGUOUS != 0 && cfg.contiguous_allowed(level),
        });
    }
}
