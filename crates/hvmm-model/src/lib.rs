//! # hvmm-model — a host model of an Arm MMU and TLB
//!
//! A [`Machine`] has sparse physical memory, N CPUs each with an MMU, a TLB
//! and a walk cache, and implements [`hvmm::Arch`] so that the page-table
//! engine runs on it unchanged. It exists to catch the engine's mistakes:
//! wrong descriptors (its walker is written from the Arm architecture, not
//! from hvmm's descriptor code), missing TLB maintenance (stale entries stay
//! until invalidated), break-before-make violations, and accesses to table
//! pages that are not mapped (a Data Abort, as on hardware).
//!
//! ```
//! use hvmm::{Arch, Paddr, Vaddr};
//! use hvmm_model::{Machine, Regime};
//!
//! let mut m = Machine::new(Regime::Arm64El2 { pa_bits: 48 }, 1);
//! m.add_ram(Paddr(0x4000_0000), 0x100_0000).unwrap();
//! // L0 table at 0x4000_0000, L1 table at 0x4000_1000: VA 1 GiB -> PA 1 GiB
//! // as a 1 GiB block (AF, AttrIndx 7).
//! m.phys_write_u64(Paddr(0x4000_0000), 0x4000_1000 | 0b11).unwrap();
//! m.phys_write_u64(Paddr(0x4000_1008), 0x4000_0000 | 1 << 10 | 7 << 2 | 0b01).unwrap();
//! m.set_root(0, Paddr(0x4000_0000)).unwrap();
//! m.enable_mmu(0, true).unwrap();
//! assert_eq!(m.read_pte(Vaddr(0x4000_1008)).unwrap() & 0xffff_f000, 0x4000_0000);
//! assert_eq!(m.translate(Vaddr(0x4000_1234), false).unwrap().pa, Paddr(0x4000_1234));
//! ```
//!
//! ## Faithful to the architecture
//!
//! * **Walks** — arm64: VMSAv8-64 stage 1 at EL2, 4 KiB granule, T0SZ = 16:
//!   48-bit VA from level 0 (a VA ≥ 2^48 is a translation fault at level 0),
//!   a level-0 block is a translation fault, 1 GiB / 2 MiB blocks, level-3
//!   `0b01` is invalid. arm32: LPAE long descriptors in Hyp mode, T0SZ = 0:
//!   32-bit VA, a 4-entry level-1 table (HTTBR may be 32-byte aligned),
//!   levels 1 → 2 → 3, 40-bit output addresses. Output addresses (of tables
//!   and leaves, and the root) beyond the configured PA size are address
//!   size faults at the level of the descriptor; AF = 0 is an access flag
//!   fault; `AP[2]` read-only and XN give permission faults; `APTable[1]`
//!   (bit 62) and XNTable (bit 60) apply to everything below; WXN makes
//!   writable mappings XN. Fault priority: translation, address size, access
//!   flag, permission. Walk reads outside RAM are synchronous external
//!   aborts at the level being read; data accesses outside RAM are external
//!   aborts reported at level 0.
//! * **TLB** — every translation through the MMU (data access, descriptor
//!   read/write, page zeroing, fetch, [`Machine::touch`]) looks up the TLB
//!   first and fills it on a miss; permission checks are made against the
//!   cached entry, so a stale read-only entry still faults after the table
//!   was made writable. Faulting walks are not cached (translation, address
//!   size and access flag faults never are). A leaf with the contiguous hint
//!   makes one entry covering the aligned run of 16, with the OA taken from
//!   the walked entry minus its offset in the run, so an inconsistent run
//!   translates wrongly, as it may on hardware. WXN is cached in entries.
//! * **Walk cache** — valid table descriptors met by TLB-filling walks are
//!   cached per CPU and later walks start below them, so unlinking or
//!   replacing a table without invalidating is caught (switch it off with
//!   [`Machine::set_walk_cache`]).
//! * **Invalidation** — by VA (removes every leaf entry covering the VA and
//!   the table descriptors on its path) or all; local forms act on the
//!   current CPU at once; broadcast forms act on every CPU when the issuing
//!   CPU next executes a DSB (`tlb_sync`, either barrier of `write_pte`, the
//!   barrier of `zero_page`, [`Machine::dsb`]), so a TLBI without its DSB is
//!   not yet complete. `TLBIMVAH` truncates the VA to 32 bits.
//! * **Faults** are [`hvmm::MemFault`]s, recorded per CPU as ESR_EL2/HSR
//!   ([`Machine::esr`]), FAR_EL2 ([`Machine::far`]) and HDFAR/HIFAR.
//! * **MMU off**: VA = PA (a VA beyond the PA size is an address size fault
//!   at level 0); the TLB is neither used nor filled.
//!
//! ## Simplified
//!
//! * The TLB and walk cache never evict; no ASIDs/VMIDs (EL2 has none); a
//!   root register change does not flush them (as on hardware: software must).
//! * AT ([`Machine::at`], `Arch::translate`) always walks memory afresh and
//!   never uses or fills the TLB (hardware may answer from the TLB). It
//!   checks read / write permission only. PAR is not modelled beyond the
//!   returned [`hvmm::AtResult`].
//! * No caches, no memory ordering between CPUs: physical memory is
//!   coherent and every store is visible at once to every walker; the only
//!   ordering modelled is "broadcast TLBI completes at the issuer's DSB".
//!   ISB is counted only.
//! * No alignment faults; a misaligned descriptor write is performed byte by
//!   byte and reported to the BBM checker as [`BbmReason::Misaligned`].
//! * Memory attributes other than AttrIndx (shareability, NS, nG) are
//!   ignored; descriptor bits `[51:48]` and RES0 bits below a block's OA are
//!   ignored. PXN is RES0 in these regimes and ignored. The hint at LPAE
//!   level 1 (where a run of 16 cannot exist) is ignored.
//! * TLB conflicts (two entries covering one VA, from an inconsistent
//!   contiguous run or a missing break-before-make) are recorded
//!   ([`Machine::tlb_conflicts`]) instead of raising a TLB conflict abort;
//!   the most recently filled entry is used.
//! * The BBM checker sees only `Arch::write_pte` (not `write_u64` or physical
//!   writes) and knows descriptors by PA only: it cannot tell a level-3 page
//!   from a table descriptor. "Any TLB invalidation completed" counts as the
//!   invalidation between a break and a make.
//! * [`Machine::stale_tlb_entries`] samples entries larger than 2 MiB every
//!   2 MiB (and at the VA that filled them) rather than every page.
#![deny(unsafe_op_in_unsafe_fn)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bbm;
mod fault;
mod guest;
mod machine;
mod mem;
mod stage2;
mod tlb;
mod walk;

pub use bbm::{BbmKind, BbmReason, BbmViolation};
pub use fault::{AbortKind, GuestFault};
pub use machine::{
    Counters, FrameSnapshot, GuestTranslation, Machine, ModelError, Regime, StaleEntry,
    TlbConflict, Tlbi, Translation,
};
pub use stage2::{Stage2, VtcrError};
pub use tlb::{StageLeaf, TlbEntry, TlbTag};

/// Descriptor bits as the Arm architecture defines them (4 KiB granule,
/// VMSAv8-64 and LPAE long descriptors alike, stage 1 and stage 2), for
/// building tables by hand in tests — independent of hvmm's own descriptor
/// code.
pub mod desc {
    /// Valid (bit 0).
    pub const VALID: u64 = 1 << 0;
    /// Bits `[1:0]` of a table descriptor (levels 0-2).
    pub const TABLE: u64 = 0b11;
    /// Bits `[1:0]` of a block descriptor (levels 1-2).
    pub const BLOCK: u64 = 0b01;
    /// Bits `[1:0]` of a page descriptor (level 3).
    pub const PAGE: u64 = 0b11;
    /// `AP[2]`: read-only (bit 7).
    pub const AP_RO: u64 = 1 << 7;
    /// `AP[1]` (bit 6): RES1 at EL2 / PL2.
    pub const AP1: u64 = 1 << 6;
    /// Inner shareable (SH = 0b11, bits `[9:8]`).
    pub const SH_INNER: u64 = 0b11 << 8;
    /// Access flag (bit 10).
    pub const AF: u64 = 1 << 10;
    /// Contiguous hint (bit 52).
    pub const CONTIGUOUS: u64 = 1 << 52;
    /// Execute-never (bit 54).
    pub const XN: u64 = 1 << 54;
    /// XNTable (bit 60) of a table descriptor.
    pub const XN_TABLE: u64 = 1 << 60;
    /// `APTable[1]` (bit 62) of a table descriptor: read-only below.
    pub const AP_TABLE_RO: u64 = 1 << 62;
    /// Output address field, bits `[47:12]`.
    pub const OA_MASK: u64 = 0x0000_ffff_ffff_f000;
    /// PXN (bit 53): not executable at EL1 (the guest's stage 1; RES0 at
    /// EL2).
    pub const PXN: u64 = 1 << 53;
    /// Stage 2 `S2AP[0]` (bit 6): reads allowed.
    pub const S2AP_READ: u64 = 1 << 6;
    /// Stage 2 `S2AP[1]` (bit 7): writes allowed.
    pub const S2AP_WRITE: u64 = 1 << 7;
    /// Stage 2 MemAttr 0b1111: Normal, inner and outer write-back.
    pub const MEMATTR_NORMAL_WB: u8 = 0b1111;
    /// Stage 2 MemAttr 0b0001: Device-nGnRE.
    pub const MEMATTR_DEVICE_NGNRE: u8 = 0b0001;

    /// AttrIndx field (bits `[4:2]`) for MAIR index `i`.
    pub const fn attr(i: u8) -> u64 {
        ((i & 7) as u64) << 2
    }
    /// A table descriptor pointing at the table at `pa`.
    pub const fn table(pa: u64) -> u64 {
        (pa & OA_MASK) | TABLE
    }
    /// A block descriptor (level 1 or 2) for `pa`: AF set, inner shareable,
    /// normal memory (AttrIndx 7), read-write, XN clear.
    pub const fn block(pa: u64) -> u64 {
        (pa & OA_MASK) | BLOCK | AF | SH_INNER | attr(7)
    }
    /// A page descriptor (level 3) for `pa`, with the same attributes as
    /// [`block`].
    pub const fn page(pa: u64) -> u64 {
        (pa & OA_MASK) | PAGE | AF | SH_INNER | attr(7)
    }
    /// Stage 2 MemAttr field (bits `[5:2]`).
    pub const fn memattr(m: u8) -> u64 {
        ((m & 0xf) as u64) << 2
    }
    /// A stage-2 block descriptor (level 1 or 2) for `pa`: AF, inner
    /// shareable, Normal write-back, read-write (S2AP 0b11), executable.
    pub const fn s2_block(pa: u64) -> u64 {
        (pa & OA_MASK) | BLOCK | AF | SH_INNER | memattr(MEMATTR_NORMAL_WB) | S2AP_READ | S2AP_WRITE
    }
    /// A stage-2 page descriptor (level 3) for `pa`, with the same
    /// attributes as [`s2_block`].
    pub const fn s2_page(pa: u64) -> u64 {
        (pa & OA_MASK) | PAGE | AF | SH_INNER | memattr(MEMATTR_NORMAL_WB) | S2AP_READ | S2AP_WRITE
    }
}
