//! # hvmm-model — a host model of an Arm MMU and TLB
//!
//! A [`Machine`] has sparse physical memory, N CPUs each with an MMU, TLBs
//! and walk caches, and implements [`hvmm::Arch`] so that the page-table
//! engine runs on it unchanged. Each CPU runs the hypervisor (arm64 EL2 /
//! arm32 Hyp mode) and can make accesses on behalf of a guest (EL1&0: the
//! guest's own stage 1, then stage 2). The model exists to catch the
//! engine's mistakes: wrong descriptors (its walker is written from the Arm
//! architecture, not from hvmm's descriptor code), missing TLB maintenance
//! (stale entries stay until invalidated), break-before-make violations (and
//! the TLB conflict aborts they can cause), and accesses to table pages that
//! are not mapped (a Data Abort, as on hardware).
//!
//! Tables written by hand, walked by the model's MMU, and a guest's access
//! through a stage 2:
//!
//! ```
//! use hvmm::{Arch, CpuOps, Ipa, Paddr, Vaddr, Vmid};
//! use hvmm_model::{desc, Machine, Regime, Stage2};
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
//! assert_eq!(m.hw_translate(Vaddr(0x4000_1234), false).unwrap().pa, Paddr(0x4000_1234));
//!
//! // A guest with a 40-bit IPA space: level 1, two concatenated root pages
//! // at 0x4010_0000; IPA 0 -> PA 0x4080_0000 as a 2 MiB block.
//! let s2 = Stage2::arm64(40);
//! assert_eq!((s2.start_level, s2.root_tables()), (1, 2));
//! m.phys_write_u64(Paddr(0x4010_0000), desc::table(0x4010_2000)).unwrap();
//! m.phys_write_u64(Paddr(0x4010_2000), desc::s2_block(0x4080_0000)).unwrap();
//! m.set_stage2_config(0, s2).unwrap();
//! m.set_vttbr(0, Paddr(0x4010_0000), Vmid(1)).unwrap();
//! m.set_stage2(0, true).unwrap();
//! // The guest's own stage 1 is off: VA = IPA.
//! assert_eq!(m.guest_read_u64(0, Vaddr(0x10)).unwrap(), 0);
//! assert_eq!(m.s2_walk(0, Ipa(0x1234)).unwrap().pa, Paddr(0x4080_1234));
//! let f = m.guest_read_u64(0, Vaddr(0x20_0000)).unwrap_err();
//! assert_eq!(f.esr() >> 26, 0x24); // a data abort from a lower EL, to EL2
//! assert_eq!(m.hpfar(0), 0x20_0000 >> 12 << 4);
//! ```
//!
//! ## The path: check your use of hvmm on the model
//!
//! A [`Machine`] is an [`hvmm::Arch`] (and [`hvmm::CpuOps`]): build your
//! tables with it exactly as on hardware, switch its MMU to them, access
//! memory through them, and ask the model what hardware would not tell you
//! — stale TLB entries, break-before-make violations, TLB conflicts:
//!
//! ```
//! use hvmm::{AccessError, AccessPath, Arch, Arm64, Attrs, Mfn, Paddr, Table, TableAccess, Vaddr};
//! use hvmm_model::{Machine, Regime};
//! use hvmm_xen::boot_alloc::FrameRanges;
//!
//! /// RAM is identity-mapped (VA = PA), before and after the MMU is on.
//! struct Identity;
//! impl AccessPath for Identity {
//!     fn name(&self) -> &'static str {
//!         "identity"
//!     }
//! }
//! impl<A: Arch> TableAccess<A> for Identity {
//!     fn map_table(&mut self, _: &mut A, mfn: Mfn) -> Result<Vaddr, AccessError> {
//!         Ok(Vaddr(mfn.paddr().0))
//!     }
//!     fn unmap_table(&mut self, _: &mut A, _: Mfn, _: Vaddr) {}
//! }
//!
//! let mut m = Machine::new(Regime::Arm64El2 { pa_bits: 48 }, 1);
//! m.add_ram(Paddr(0x4000_0000), 0x100_0000).unwrap();
//! let mut frames = FrameRanges::new();
//! frames.add(Paddr(0x4000_0000), Paddr(0x4010_0000)).unwrap();
//!
//! let mut t = Table::new(Arm64, &mut m, Identity, &mut frames)?;
//! t.map(Vaddr(0x4000_0000), Paddr(0x4000_0000), 4096, Attrs::RW)?; // RAM, identity
//! t.map(Vaddr(0x8000_0000), Paddr(0x4080_0000), 1, Attrs::RW)?;
//! let root = Paddr(t.ttbr());
//! let m = t.arch_mut();
//! m.set_root(0, root).unwrap();
//! m.enable_mmu(0, true).unwrap();
//! m.write_u64(Vaddr(0x8000_0000), 7).unwrap();
//! assert_eq!(m.read_u64(Vaddr(0x4080_0000)).unwrap(), 7);
//!
//! // Unmapped (the engine invalidates the TLB entry): the next access faults.
//! t.unmap(Vaddr(0x8000_0000), 1)?;
//! let m = t.arch_mut();
//! assert!(m.read_u64(Vaddr(0x8000_0000)).is_err());
//! assert!(m.all_stale_tlb_entries().is_empty() && m.bbm_violations().is_empty());
//! # Ok::<(), hvmm::Error>(())
//! ```
//!
//! ## Faithful to the architecture
//!
//! Sources: ARM DDI 0487 (the VMSAv8-64 chapter and the
//! `AArch64.TranslationTableWalk` / `AArch64.SecondStageTranslate` /
//! `AArch64.CheckS2Permission` pseudocode; the AArch32 long-descriptor
//! chapter; ESR_EL2, HPFAR_EL2, VTCR_EL2, VTTBR_EL2, HSR, HPFAR, VTCR).
//!
//! * **EL2 walks** — arm64: VMSAv8-64 stage 1 at EL2, 4 KiB granule,
//!   T0SZ = 16: 48-bit VA from level 0 (a VA ≥ 2^48 is a translation fault at
//!   level 0), a level-0 block is a translation fault, 1 GiB / 2 MiB
//!   blocks, level-3 `0b01` is invalid. arm32: LPAE long descriptors in Hyp
//!   mode, T0SZ = 0: 32-bit VA, a 4-entry level-1 table (HTTBR may be
//!   32-byte aligned), levels 1 → 2 → 3, 40-bit output addresses. Output
//!   addresses (of tables and leaves, and the root) beyond the configured PA
//!   size are address size faults at the level of the descriptor; AF = 0 is
//!   an access flag fault; `AP[2]` read-only and XN give permission faults;
//!   `APTable[1]` (bit 62) and XNTable (bit 60) apply to everything below;
//!   WXN makes writable mappings XN. Fault priority: translation, address
//!   size, access flag, permission. Walk reads outside RAM are synchronous
//!   external aborts on a table walk at the level being read (status
//!   `0b0101LL` in ESR); data accesses outside RAM are external aborts
//!   (`0b010000`), reported at level 0.
//! * **Stage 2** — per CPU: VTTBR (root and VMID: arm64 bits `[63:48]`, of
//!   which only `[55:48]` count unless VTCR_EL2.VS gives 16-bit VMIDs; arm32
//!   bits `[55:48]`), VTCR ([`Stage2`]: arm64 T0SZ, SL0, PS, VS, TG0 = 4 KiB;
//!   arm32 T0SZ as a signed 4-bit field with S = bit 4, SL0) and HCR.VM.
//!   The walk starts at the level SL0 gives; the root may be up to 16
//!   concatenated pages (the index at the start level takes all the
//!   remaining IPA bits) and VTTBR bits below the root's size are ignored.
//!   A VTCR whose SL0 and T0SZ disagree (fewer than 2 entries or more than
//!   16 pages at the start level), or with reserved values, makes every
//!   walk a translation fault; so does an IPA beyond the configured size —
//!   both at **level 0 on arm64 and level 1 on arm32** ("AArch32 reports
//!   this as a level 1 fault"), not at the start level, and never folded
//!   onto a lower IPA. Output (and table, and root) addresses beyond PS are
//!   address size faults; AF = 0 an access flag fault; `S2AP[7:6]` (00 none,
//!   01 read, 10 write, 11 read/write) and XN (bit 54, arm32 too) permission
//!   faults (a fetch needs only XN clear, a write only `S2AP[1]`); MemAttr
//!   `[5:2]` is kept in the TLB entry's stage-2 part. Stage-2 table
//!   descriptors have no attribute bits.
//! * **Guest (EL1&0) accesses** ([`Machine::guest_access`],
//!   [`Machine::guest_read_u64`] and friends): the guest's stage 1 off
//!   (VA = IPA; beyond the PA size a stage-1 address size fault) or on
//!   (TTBR0_EL1, 4 KiB granule, arm64 48-bit VA from level 0, arm32 LPAE
//!   32-bit VA from a 4-entry level 1; `AP[2]`, `APTable[1]`, PXN and
//!   PXNTable for EL1, and on arm64 no EL1 execution from EL0-writable
//!   pages); every stage-1 table read is translated by stage 2 with a read
//!   permission check, and a stage-2 fault there has S1PTW set, its IPA
//!   being the descriptor's. Then stage 2 of the output IPA (HCR.VM), then
//!   the permission checks, stage 1 first. `AT S12E1R/W`
//!   ([`Machine::at_s12e1`]) is a fresh walk of both stages with the
//!   permission check.
//! * **Faults** — the hypervisor's own are [`hvmm::MemFault`]s, recorded
//!   per CPU as ESR_EL2/HSR ([`Machine::esr`]; EC 0x25 / 0x21), FAR_EL2
//!   ([`Machine::far`]) and HDFAR/HIFAR. A guest's are [`GuestFault`]s:
//!   stage-2 faults (and TLB conflict aborts) are taken to EL2 and recorded
//!   in the same registers — ESR with EC 0x24 (data abort from a lower EL) or
//!   0x20 (instruction abort), IL, the DFSC/IFSC with the level, WnR (writes
//!   not on a stage-1 walk), S1PTW — plus HPFAR ([`Machine::hpfar`]: arm64
//!   IPA `[47:12]` in bits `[43:4]`, arm32 IPA `[39:12]` in `[31:4]`) and
//!   FAR = the guest VA; the guest's own stage-1 faults are taken to its EL1
//!   and only returned ([`Machine::last_guest_fault`]).
//! * **TLBs** — every translation through the MMU (data access, descriptor
//!   read/write, page zeroing, fetch, [`Machine::touch`], guest accesses)
//!   looks up the TLB first and fills it on a miss; permission checks are
//!   made against the cached entry, so a stale read-only entry still faults
//!   after the table was made writable. Entries are tagged ([`TlbTag`]):
//!   EL2; a guest's stage 2 alone (IPA → PA, filled by its stage-1 table
//!   reads and by the final IPA of each access), by VMID; a guest's stage 1
//!   or stage 1+2 combined (VA → PA, the smaller of the two stages' sizes),
//!   by VMID. Lookups and invalidations see one tag only. Faulting walks are
//!   not cached (translation, address size and access flag faults never
//!   are). A leaf with the contiguous hint makes one entry covering the
//!   aligned run of 16, with the OA taken from the walked entry minus its
//!   offset in the run, so an inconsistent run translates wrongly, as it may
//!   on hardware; the hint is ignored at level 1 when the input is narrower
//!   than 34 bits (LPAE's 4-entry level 1, where no run of 16 can exist).
//!   WXN is cached in entries.
//! * **Walk caches** — valid table descriptors met by TLB-filling walks are
//!   cached per CPU and tag (EL2, a guest's stage 2, a guest's stage 1) and
//!   later walks start below them, so unlinking or replacing a table
//!   without invalidating is caught (switch them off with
//!   [`Machine::set_walk_cache`]).
//! * **TLB conflict aborts** — the TLB may at any time hold what a walk
//!   gives now (speculative walks), besides what it cached. When a fill
//!   would leave, in one CPU's TLB under one tag, two entries of different
//!   sizes covering one address — the new one next to a cached one; a
//!   cached one hit after a table or register change next to what a fresh
//!   walk gives now; or a fill through a walk-cache entry older than the
//!   last change next to what a walk from the root gives — the access takes
//!   a TLB conflict abort (status `0b110000`) instead of using either entry,
//!   no entry is made, and it is recorded in [`Machine::tlb_conflicts`].
//!   This is what a block split or merge without break-before-make, a
//!   contiguous run made inconsistent, or a root switch without invalidation
//!   produce. Same-size changes (permissions, output address) are not
//!   conflicts: the old entry is used until invalidated (and reported by
//!   [`Machine::stale_tlb_entries`]).
//! * **Root switches** — a TTBR0_EL2 / HTTBR write with the MMU on is
//!   checked against the CPU's cached EL2 entries: where the new tables map
//!   an address with another size (a TLB conflict waiting for an access) or
//!   another output address or memory type, it is recorded in
//!   [`Machine::root_switch_hazards`], whether or not the address is touched
//!   before the invalidation that follows.
//!   `hvmm::FaultKind` (in the core crate) has no TLB conflict, so such an
//!   abort reaches [`hvmm::Arch`] callers as a [`hvmm::MemFault`] of kind
//!   `External` at level 0 — the nearest kind, an abort that no mapping
//!   change explains — while the CPU's ESR holds the real status and
//!   [`Machine::tlb_conflicts`] the two entries; the model's own
//!   [`AbortKind`] (in [`GuestFault`]) has `TlbConflict`.
//! * **Invalidation** — EL2: by VA (removes every EL2 leaf entry covering
//!   the VA and the EL2 table descriptors on its path) or all. Guests, arm64:
//!   `TLBI IPAS2E1IS` ([`hvmm::Arch::tlb_flush_ipa`]) removes the stage-2
//!   entries of one VMID covering the IPA and the stage-2 table descriptors
//!   on its path, but no combined entry; `TLBI VMALLE1IS`
//!   ([`hvmm::Arch::tlb_flush_guest_s1`]) the stage-1 and combined entries
//!   (and stage-1 walk cache) of one VMID; `TLBI VMALLS12E1IS`
//!   ([`hvmm::Arch::tlb_flush_vmid`]) everything of one VMID. The VMID of a
//!   guest TLBI is sized by the issuing CPU's VTCR_EL2.VS, like the entries'.
//!   arm32 (ARMv7 has nothing finer): all three are `TLBIALLNSNHIS`, which
//!   removes every guest entry of every VMID. Local forms act on the
//!   current CPU at once; broadcast forms act on every CPU when the issuing
//!   CPU next executes a DSB (`tlb_sync`, either barrier of `write_pte`,
//!   the barrier of `zero_page`, [`Machine::dsb`]), so a TLBI without its
//!   DSB is not yet complete ([`Machine::pending_tlbis`]). `TLBIMVAH`
//!   truncates the VA to 32 bits; `TLBI IPAS2E1IS` takes IPA `[47:12]`.
//! * **MMU off**: VA = PA (a VA beyond the PA size is an address size fault
//!   at level 0); the TLB is neither used nor filled. Likewise a guest with
//!   both stages off.
//!
//! ## Simplified
//!
//! * The TLBs and walk caches never evict. A root register change (TTBR,
//!   VTTBR, TTBR0_EL1) does not flush them (as on hardware: software must);
//!   EL2 has no ASIDs, and the guest's stage 1 is not tagged by ASID (one
//!   address space per VMID).
//! * A TLB conflict is raised whenever the architecture *allows* one (the
//!   strictest hardware); real CPUs may instead use either entry, and CPUs
//!   with FEAT_BBM level 2 promise no abort for a size change alone. It is
//!   found on a fill, and on a hit or a walk-cache resumption only after a
//!   write to a frame that a TLB-filling walk read descriptors from, or a
//!   translation register write (cached entries checked since are not
//!   checked again); [`Machine::touch`] (a prefetch) returns it without
//!   recording it in the fault registers.
//! * AT ([`Machine::at`], `CpuOps::hw_translate`, [`Machine::at_s12e1`]) always
//!   walks memory afresh and never uses or fills the TLB (hardware may
//!   answer from the TLB). It checks read / write permission only. PAR is
//!   not modelled beyond the returned [`hvmm::AtResult`] /
//!   [`GuestTranslation`] or fault.
//! * No caches, no memory ordering between CPUs: physical memory is
//!   coherent and every store is visible at once to every walker; the only
//!   ordering modelled is "broadcast TLBI completes at the issuer's DSB".
//!   ISB is counted only.
//! * No alignment faults; a misaligned descriptor write is performed byte by
//!   byte and reported to the BBM checker as [`BbmReason::Misaligned`].
//! * Memory attributes are recorded, not applied: AttrIndx (EL2, MAIR for
//!   AT) and the guest's stage-1 AttrIndx, stage-2 MemAttr; shareability,
//!   NS and nG are ignored, stage-1 and stage-2 attributes are not
//!   combined, and a fetch from Device memory is not refused. Descriptor
//!   bits `[51:48]` and RES0 bits below a block's OA are ignored. PXN is
//!   RES0 at EL2 and ignored there. Stage-2 XN is bit 54 alone (no
//!   FEAT_XNX), no FEAT_S2FWB, no hardware access flag or dirty-state
//!   updates, no FEAT_TTST (SL0 = 3), no LPA/LPA2: the implemented PA size is
//!   48 bits (arm64) or 40 (arm32), whatever the EL2 `pa_bits`.
//! * The guest's stage 1: TTBR0 only (arm64: a VA with bits above 47 is a
//!   translation fault at level 0; no TTBR1 region), fixed T0SZ (48-bit VA on
//!   arm64, 32-bit on arm32) and output size (48 / 40 bits), accesses from
//!   EL1 only (AP\[1\] / EL0 permissions and `APTable[0]` are ignored, no
//!   PAN, no WXN). Its faults are not written into any EL1 register.
//!   HPFAR is written for every stage-2 abort with an IPA (the architecture
//!   guarantees it only for translation, access flag, address size and
//!   S1PTW faults). Synchronous external aborts on guest data accesses and
//!   on the guest's stage-1 table reads are reported as stage-1 (taken to
//!   the guest), on stage-2 table reads as stage 2.
//! * The BBM checker sees only `Arch::write_pte` (not `write_u64` or physical
//!   writes) and knows descriptors by PA only: it cannot tell a level-3 page
//!   from a table descriptor, nor a stage-1 descriptor from a stage-2 one. It
//!   compares the type, output address, contiguous hint and bits `[5:2]`
//!   (AttrIndx and NS at stage 1, MemAttr at stage 2; reported as
//!   [`BbmReason::AttrIndx`]). "Any TLB invalidation completed" (of any
//!   kind, EL2 or guest) counts as the invalidation between a break and a
//!   make.
//! * [`Machine::stale_tlb_entries`] samples entries larger than 2 MiB every
//!   2 MiB (and at the address that filled them) rather than every page.
//!   Guest entries of a VMID that is not the CPU's current one are compared
//!   with walks under the registers of that VMID's last fill.
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
    Counters, FrameSnapshot, GuestTranslation, Machine, ModelError, Regime, RootSwitchHazard,
    RootSwitchReason, StaleEntry, TlbConflict, Tlbi, Translation,
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
