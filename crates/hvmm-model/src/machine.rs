//! The machine: physical memory, CPUs with their MMU registers, TLBs and fault
//! registers, the counters, and the [`Arch`] implementation. The guest
//! (EL1&0, stage 2) side is in `guest.rs`.

use crate::bbm::{Bbm, BbmViolation};
use crate::fault::{el2_syndrome, AbortKind, GuestFault};
use crate::guest::GuestCtx;
use crate::mem::{IntMap, PhysMem, FRAME, FRAME_SHIFT};
use crate::stage2::VtcrError;
use crate::tlb::{Resumed, StageLeaf, TlbEntry, TlbTag, Tlbs};
use crate::walk::{
    level_shift, level_size, walk, Flavor, Leaf, TableStep, WalkCfg, WalkEnv, WalkErr, CONTIGUOUS,
    CONTIG_RUN,
};
use hvmm::{AccessKind, Arch, AtResult, CpuOps, FaultKind, Ipa, MemFault, Mfn, Paddr, Vaddr, Vmid};
use std::fmt;

/// The translation regime the machine's CPUs run the hypervisor in.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Regime {
    /// arm64: VMSAv8-64 stage 1 at EL2, 4 KiB granule, T0SZ = 16 (48-bit VA,
    /// walk from level 0), TTBR0_EL2.
    Arm64El2 {
        /// Output address size (TCR_EL2.PS), clamped to 32..=48.
        pa_bits: u8,
    },
    /// arm32: LPAE long descriptors in Hyp mode, T0SZ = 0 (32-bit VA, walk
    /// from a 4-entry level-1 table), HTTBR, 40-bit output addresses.
    Arm32Hyp,
}

impl Regime {
    /// The architecture's physical address limit: 48 (arm64) or 40 (arm32).
    pub const fn pa_limit_bits(self) -> u8 {
        match self {
            Regime::Arm64El2 { .. } => 48,
            Regime::Arm32Hyp => 40,
        }
    }

    /// Virtual address size: 48 or 32.
    pub const fn va_bits(self) -> u32 {
        match self {
            Regime::Arm64El2 { .. } => 48,
            Regime::Arm32Hyp => 32,
        }
    }

    /// Whether this is the arm64 regime.
    pub const fn is_arm64(self) -> bool {
        matches!(self, Regime::Arm64El2 { .. })
    }
}

/// Errors of the model's set-up and physical-access API (not faults of
/// accesses through the MMU, which are [`MemFault`]s).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModelError {
    /// There is no CPU with this index.
    NoSuchCpu(usize),
    /// A RAM region that is empty, not page aligned, or beyond the
    /// architecture's physical address limit.
    BadRamRegion {
        /// Requested base.
        base: Paddr,
        /// Requested size.
        size: u64,
    },
    /// A physical access touched an address that is not RAM.
    NotRam(Paddr),
    /// An output address size outside 32..=limit.
    BadPaBits(u8),
    /// A translation through the MMU faulted.
    Fault(MemFault),
    /// A CPU's VTCR does not decode to a stage-2 configuration.
    Vtcr(VtcrError),
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::NoSuchCpu(n) => write!(f, "no CPU {n}"),
            ModelError::BadRamRegion { base, size } => {
                write!(f, "bad RAM region at {base}, size {size:#x}")
            }
            ModelError::NotRam(pa) => write!(f, "physical address {pa} is not RAM"),
            ModelError::BadPaBits(b) => write!(f, "unsupported physical address size {b}"),
            ModelError::Fault(m) => write!(f, "{m}"),
            ModelError::Vtcr(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ModelError {}

/// Event counters. [`Machine::reset_counters`] zeroes them.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// `Arch::read_pte` calls.
    pub pte_reads: u64,
    /// `Arch::write_pte` calls (descriptor writes).
    pub pte_writes: u64,
    /// `Arch::zero_page` calls.
    pub pages_zeroed: u64,
    /// Broadcast invalidations by VA (`TLBI VAE2IS` / `TLBIMVAHIS`).
    pub tlbi_va: u64,
    /// Local invalidations by VA (`TLBI VAE2` / `TLBIMVAH`).
    pub tlbi_va_local: u64,
    /// Broadcast invalidate-all (`TLBI ALLE2IS` / `TLBIALLHIS`).
    pub tlbi_all: u64,
    /// Local invalidate-all (`TLBI ALLE2` / `TLBIALLH`).
    pub tlbi_all_local: u64,
    /// `Arch::tlb_flush_ipa` calls (`TLBI IPAS2E1IS`; arm32
    /// `TLBIALLNSNHIS`).
    pub tlbi_ipa: u64,
    /// `Arch::tlb_flush_guest_s1` calls (`TLBI VMALLE1IS`; arm32
    /// `TLBIALLNSNHIS`).
    pub tlbi_guest_s1: u64,
    /// `Arch::tlb_flush_vmid` calls (`TLBI VMALLS12E1IS`; arm32
    /// `TLBIALLNSNHIS`).
    pub tlbi_vmid: u64,
    /// `Arch::tlb_sync` calls.
    pub tlb_syncs: u64,
    /// DSBs: 2 per `write_pte`, 1 per `zero_page`, `tlb_sync`,
    /// `tlb_flush_va_local` and [`Machine::dsb`].
    pub dsb: u64,
    /// ISBs: `Arch::isb`, and 1 per `tlb_sync` and `tlb_flush_va_local`.
    pub isb: u64,
    /// Address translation operations (`CpuOps::hw_translate`, [`Machine::at`],
    /// [`Machine::at_s12e1`]).
    pub at: u64,
    /// EL2 translations through the MMU answered by the TLB.
    pub tlb_hits: u64,
    /// EL2 translations through the MMU that missed the TLB.
    pub tlb_misses: u64,
    /// EL2 table walks made to fill the TLB (one per miss).
    pub walks: u64,
    /// Guest translations (stage 1+2 or stage 2 alone) answered by the TLB.
    pub guest_tlb_hits: u64,
    /// Guest translations that missed the TLB.
    pub guest_tlb_misses: u64,
    /// Fresh walks made on TLB hits after the tables or the translation
    /// registers changed, to find TLB conflicts.
    pub conflict_checks: u64,
    /// TLB conflict aborts (EL2 and guest accesses, and prefetches).
    pub tlb_conflict_aborts: u64,
    /// Aborts recorded in the CPUs' EL2 fault registers (the hypervisor's
    /// own, and guest aborts taken to EL2).
    pub faults: u64,
    /// Guest accesses that faulted (at either stage).
    pub guest_faults: u64,
}

/// A leaf translation as a fresh walk gives it, or as a TLB entry gives it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The virtual address translated.
    pub va: Vaddr,
    /// Its physical address.
    pub pa: Paddr,
    /// Lookup level of the leaf descriptor.
    pub level: u8,
    /// Writes allowed.
    pub writable: bool,
    /// Instruction fetches allowed (after XN, XNTable and WXN).
    pub executable: bool,
    /// AttrIndx.
    pub attr_idx: u8,
    /// Contiguous hint of the leaf.
    pub contiguous: bool,
    /// The leaf descriptor.
    pub descriptor: u64,
    /// Physical address of the leaf descriptor.
    pub descriptor_pa: Paddr,
}

impl Translation {
    /// Whether two translations behave the same for an access (same PA,
    /// permissions and memory type).
    pub fn same_effect(&self, other: &Translation) -> bool {
        self.pa == other.pa
            && self.writable == other.writable
            && self.executable == other.executable
            && self.attr_idx == other.attr_idx
    }
}

/// A guest translation (stage 1 and 2, or stage 2 alone) as a fresh walk or
/// a TLB entry gives it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct GuestTranslation {
    /// The input address: the guest VA, or the IPA for a translation of
    /// stage 2 alone.
    pub va: Vaddr,
    /// The IPA (equal to `va` with the guest's stage 1 off).
    pub ipa: Ipa,
    /// The physical address.
    pub pa: Paddr,
    /// Bytes a TLB entry for it covers (the smaller stage's block, page or
    /// contiguous run).
    pub size: u64,
    /// The guest's stage-1 leaf, if its stage 1 is on.
    pub stage1: Option<StageLeaf>,
    /// The stage-2 leaf, if stage 2 is on.
    pub stage2: Option<StageLeaf>,
}

impl GuestTranslation {
    pub(crate) fn from_entry(e: &TlbEntry, va: u64) -> GuestTranslation {
        let pa = e.pa_of(Vaddr(va));
        let ipa = match e.tag {
            TlbTag::Stage2 { .. } => Ipa(va),
            _ => e.ipa_of(Vaddr(va)).unwrap_or(Ipa(pa.0)),
        };
        GuestTranslation {
            va: Vaddr(va),
            ipa,
            pa,
            size: e.size,
            stage1: e.stage1,
            stage2: e.stage2,
        }
    }

    fn allows(&self, access: AccessKind) -> bool {
        self.stage1.is_none_or(|p| p.allows(access)) && self.stage2.is_none_or(|p| p.allows(access))
    }

    /// Reads allowed by both stages.
    pub fn readable(&self) -> bool {
        self.allows(AccessKind::Read)
    }

    /// Writes allowed by both stages.
    pub fn writable(&self) -> bool {
        self.allows(AccessKind::Write)
    }

    /// Instruction fetches allowed by both stages.
    pub fn executable(&self) -> bool {
        self.allows(AccessKind::Exec)
    }

    /// Whether two translations behave the same for an access (same IPA and
    /// PA, permissions and memory attributes of each stage).
    pub fn same_effect(&self, other: &GuestTranslation) -> bool {
        let attrs = |t: &GuestTranslation| {
            (
                t.stage1.map(|p| p.attr),
                t.stage2.map(|p| p.attr),
                t.readable(),
                t.writable(),
                t.executable(),
            )
        };
        self.ipa == other.ipa && self.pa == other.pa && attrs(self) == attrs(other)
    }
}

/// A cached translation that no longer matches the tables in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StaleEntry {
    /// An EL2 TLB entry translates `va` differently from a fresh walk.
    Leaf {
        /// The CPU whose TLB holds it.
        cpu: usize,
        /// An address it translates wrongly (the first one found).
        va: Vaddr,
        /// The whole TLB entry.
        entry: TlbEntry,
        /// What the entry gives for `va`.
        cached: Translation,
        /// What a walk gives now.
        fresh: Result<Translation, MemFault>,
    },
    /// A guest TLB entry (stage 2 alone, or stage 1+2) translates its input
    /// address `va` differently from a fresh walk with the registers of its
    /// VMID (the current ones if the VMID is the CPU's current one, else
    /// those of the last fill under that VMID).
    GuestLeaf {
        /// The CPU whose TLB holds it.
        cpu: usize,
        /// An input address (VA, or IPA for stage 2 alone) it translates
        /// wrongly (the first one found).
        va: Vaddr,
        /// The whole TLB entry.
        entry: TlbEntry,
        /// What the entry gives for `va`.
        cached: GuestTranslation,
        /// What a walk gives now.
        fresh: Result<GuestTranslation, GuestFault>,
    },
    /// A walk-cache entry holds a table descriptor that memory no longer has.
    Table {
        /// The CPU whose walk cache holds it.
        cpu: usize,
        /// The regime (and VMID) of the walk cache.
        tag: TlbTag,
        /// The first input address under the descriptor.
        va: Vaddr,
        /// Level of the table descriptor.
        level: u8,
        /// The next-level table it points to (an IPA for a guest's stage 1).
        cached_table: Paddr,
        /// The next-level table a fresh walk finds there, if any.
        fresh_table: Option<Paddr>,
    },
}

impl StaleEntry {
    /// The input address the stale entry is about.
    pub fn va(&self) -> Vaddr {
        match self {
            StaleEntry::Leaf { va, .. }
            | StaleEntry::GuestLeaf { va, .. }
            | StaleEntry::Table { va, .. } => *va,
        }
    }
}

/// A TLB fill that would have left two entries of different sizes covering
/// one address in one CPU's TLB under one tag. The access took a TLB conflict
/// abort instead (fault status 0b110000) and the new entry was not made.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TlbConflict {
    /// The CPU.
    pub cpu: usize,
    /// The input address accessed (VA, or IPA for a stage-2 lookup).
    pub va: Vaddr,
    /// The entry already cached (for a fill through a walk-cache entry
    /// older than the last change: the entry that fill would have made).
    pub existing: TlbEntry,
    /// The entry the fill would have made (for a hit or a walk-cache fill:
    /// what a walk from the root gives now).
    pub new: TlbEntry,
}

/// A TLB maintenance operation.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Tlbi {
    /// `TLBI VAE2(IS)` / `TLBIMVAH(IS)`: EL2 entries of a VA.
    Va(Vaddr),
    /// `TLBI ALLE2(IS)` / `TLBIALLH(IS)`: all EL2 entries.
    All,
    /// `TLBI IPAS2E1IS`: the stage-2 entries (every level, walk cache too)
    /// of one IPA of one VMID; combined entries stay.
    Ipa {
        /// The VMID.
        vmid: Vmid,
        /// The IPA.
        ipa: Ipa,
    },
    /// `TLBI VMALLE1IS`: the stage-1 and combined entries of one VMID.
    GuestS1 {
        /// The VMID.
        vmid: Vmid,
    },
    /// `TLBI VMALLS12E1IS`: every entry of one VMID.
    Vmid {
        /// The VMID.
        vmid: Vmid,
    },
    /// `TLBIALLNSNHIS` (arm32): every non-secure non-Hyp entry, of every
    /// VMID, stage 1 and 2.
    AllNonHyp,
}

/// A copy of some frames' bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct FrameSnapshot {
    frames: Vec<(Mfn, Vec<u8>)>,
}

impl FrameSnapshot {
    /// The frames captured.
    pub fn frames(&self) -> Vec<Mfn> {
        self.frames.iter().map(|(m, _)| *m).collect()
    }

    /// The captured bytes of `mfn`.
    pub fn bytes(&self, mfn: Mfn) -> Option<&[u8]> {
        self.frames
            .iter()
            .find(|(m, _)| *m == mfn)
            .map(|(_, b)| b.as_slice())
    }
}

impl fmt::Debug for FrameSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameSnapshot")
            .field("frames", &self.frames())
            .finish()
    }
}

/// One CPU's registers and caches.
#[derive(Clone, Debug, Default)]
pub(crate) struct Cpu {
    /// TTBR0_EL2 / HTTBR.
    pub(crate) root: u64,
    /// SCTLR_EL2.M / HSCTLR.M.
    pub(crate) mmu: bool,
    /// SCTLR_EL2.WXN / HSCTLR.WXN.
    pub(crate) wxn: bool,
    pub(crate) tlb: Tlbs,
    /// Last abort taken (EL2's own).
    pub(crate) last_fault: Option<MemFault>,
    /// ESR_EL2 / HSR.
    pub(crate) esr: u32,
    /// FAR_EL2.
    pub(crate) far: u64,
    /// HDFAR.
    pub(crate) hdfar: u32,
    /// HIFAR.
    pub(crate) hifar: u32,
    /// HPFAR_EL2 / HPFAR.
    pub(crate) hpfar: u64,
    /// VTTBR_EL2 / VTTBR.
    pub(crate) vttbr: u64,
    /// VTCR_EL2 / VTCR.
    pub(crate) vtcr: u64,
    /// HCR_EL2.VM / HCR.VM.
    pub(crate) vm: bool,
    /// TTBR0_EL1 / TTBR0 (an IPA).
    pub(crate) ttbr0: u64,
    /// SCTLR_EL1.M / SCTLR.M.
    pub(crate) el1_mmu: bool,
    /// Last guest abort (either stage).
    pub(crate) last_guest_fault: Option<GuestFault>,
    /// The registers of the last guest fill under each VMID.
    pub(crate) vmid_ctx: IntMap<u16, GuestCtx>,
}

/// The machine model. See the crate documentation.
#[derive(Clone)]
pub struct Machine {
    pub(crate) regime: Regime,
    pa_bits: u8,
    mair: u64,
    pub(crate) mem: PhysMem,
    pub(crate) cpus: Vec<Cpu>,
    current: usize,
    pub(crate) walk_cache: bool,
    pending: Vec<(usize, Tlbi)>,
    /// TLB invalidations completed so far (for the BBM checker).
    tlbi_epoch: u64,
    /// Writes of translation registers so far.
    reg_gen: u64,
    bbm: Bbm,
    pub(crate) conflicts: Vec<TlbConflict>,
    root_switch_hazards: Vec<RootSwitchHazard>,
    pub(crate) counters: Counters,
}

/// Why a root switch with the MMU on is a hazard for a cached entry.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RootSwitchReason {
    /// The new tables map the address with a block, page or contiguous run
    /// of another size: the TLB may hold both, a TLB conflict.
    Size,
    /// Same size, but another output address or memory type: two valid
    /// translations of one address, which break-before-make exists to
    /// prevent.
    Translation,
}

/// A TTBR0_EL2 / HTTBR write made with the MMU on while the CPU's TLB held
/// an EL2 entry that the new tables map otherwise (an entry the new tables
/// do not map at all is merely stale until the invalidation that follows).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RootSwitchHazard {
    /// The CPU whose root changed.
    pub cpu: usize,
    /// The new root.
    pub root: Paddr,
    /// An address where the two disagree.
    pub va: Vaddr,
    /// The cached entry.
    pub cached: TlbEntry,
    /// What the new tables give at `va`.
    pub fresh: Translation,
    /// How they disagree.
    pub reason: RootSwitchReason,
}

impl fmt::Debug for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Machine")
            .field("regime", &self.regime)
            .field("pa_bits", &self.pa_bits)
            .field("cpus", &self.cpus.len())
            .field("current", &self.current)
            .field("ram", &self.mem.ram())
            .field("materialised_frames", &self.mem.materialised())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// Instruction fetches are allowed unless XN (or XNTable) is set, or WXN is
/// on and the mapping is writable.
fn executable(xn: bool, writable: bool, wxn: bool) -> bool {
    !(xn || (wxn && writable))
}

fn fault(va: u64, access: AccessKind, (kind, level): (FaultKind, u8)) -> MemFault {
    MemFault {
        va: Vaddr(va),
        access,
        kind,
        level,
    }
}

/// An abort of an EL2 access: the [`MemFault`] the [`Arch`] methods return
/// and the real fault status.
#[derive(Copy, Clone, Debug)]
pub(crate) struct El2Abort {
    pub(crate) fault: MemFault,
    pub(crate) kind: AbortKind,
}

impl El2Abort {
    fn new(va: u64, access: AccessKind, kind: AbortKind, level: u8) -> El2Abort {
        let level = if kind == AbortKind::TlbConflict {
            0
        } else {
            level
        };
        El2Abort {
            fault: fault(va, access, (kind.fault_kind(), level)),
            kind,
        }
    }
}

/// Descriptor reads from physical memory, for walks that change nothing.
pub(crate) struct FreshPhys<'a> {
    pub(crate) mem: &'a PhysMem,
    /// Whether to keep the table descriptors followed in `steps`.
    pub(crate) record: bool,
    pub(crate) steps: Vec<TableStep>,
}

impl WalkEnv for FreshPhys<'_> {
    fn read(&mut self, addr: u64, level: u8) -> Result<u64, WalkErr> {
        self.mem
            .read_u64(addr)
            .ok_or(WalkErr::Fault(AbortKind::ExternalOnWalk, level))
    }
    fn on_table(&mut self, step: TableStep) {
        if self.record {
            self.steps.push(step);
        }
    }
}

/// Descriptor reads from physical memory for TLB-filling walks: the frames
/// read are watched for changes.
pub(crate) struct FillPhys<'a> {
    pub(crate) mem: &'a mut PhysMem,
    pub(crate) steps: Vec<TableStep>,
}

impl WalkEnv for FillPhys<'_> {
    fn read(&mut self, addr: u64, level: u8) -> Result<u64, WalkErr> {
        let v = self
            .mem
            .read_u64(addr)
            .ok_or(WalkErr::Fault(AbortKind::ExternalOnWalk, level))?;
        self.mem.watch(addr);
        Ok(v)
    }
    fn on_table(&mut self, step: TableStep) {
        self.steps.push(step);
    }
}

/// Whether a fresh walk that agrees in size with (or faults above) a cached
/// entry says so for every address the entry covers, so that the entry need
/// not be checked again until something changes.
pub(crate) fn entry_wide(e: &TlbEntry, fresh: &Result<TlbEntry, u8>) -> bool {
    match fresh {
        Ok(f) => f.size == e.size && !e.contiguous && !f.contiguous,
        Err(level) => *level < e.level || (*level == e.level && !e.contiguous),
    }
}

/// Whether a fresh walk from the root (its table steps) passed through the
/// same table descriptor as the walk-cache entry `w`: then what the walk
/// cache gives is what a walk gives now.
pub(crate) fn walk_cache_agrees(steps: &[TableStep], w: Resumed) -> bool {
    steps.iter().any(|s| s.level == w.level && s.next == w.next)
}

/// The TLB entry a leaf met by a walk of `ia` makes (for EL2 or stage 2
/// alone). `wxn` applies to EL2 entries.
pub(crate) fn entry_from_leaf(tag: TlbTag, wxn: bool, ia: u64, leaf: &Leaf) -> TlbEntry {
    let size = level_size(leaf.level);
    let (base, span, pa) = if leaf.contiguous {
        let span = size * CONTIG_RUN;
        let offset = ((ia >> level_shift(leaf.level)) & (CONTIG_RUN - 1)) * size;
        (ia & !(span - 1), span, leaf.oa.wrapping_sub(offset))
    } else {
        (ia & !(size - 1), size, leaf.oa)
    };
    let x = executable(!leaf.x, leaf.w, wxn);
    let part = StageLeaf {
        level: leaf.level,
        readable: leaf.r,
        writable: leaf.w,
        executable: x,
        attr: leaf.attr,
        contiguous: leaf.contiguous,
        descriptor: leaf.desc,
        descriptor_addr: leaf.desc_addr,
    };
    let stage2 = matches!(tag, TlbTag::Stage2 { .. });
    TlbEntry {
        tag,
        va: Vaddr(base),
        size: span,
        pa: Paddr(pa),
        level: leaf.level,
        readable: leaf.r,
        writable: leaf.w,
        executable: x,
        attr_idx: leaf.attr,
        contiguous: leaf.contiguous,
        descriptor: leaf.desc,
        descriptor_pa: Paddr(leaf.desc_addr),
        filled_from: Vaddr(ia),
        ipa: None,
        stage1: (!stage2).then_some(part),
        stage2: stage2.then_some(part),
    }
}

impl Machine {
    /// A machine with `ncpus` CPUs (at least one), no RAM, MMUs off, empty
    /// TLBs, MAIR = [`hvmm::attr::MAIR_VALUE`], CPU 0 current. An arm64
    /// `pa_bits` is clamped to 32..=48. Stage 2 is off, VTTBR and VTCR are 0.
    pub fn new(regime: Regime, ncpus: usize) -> Machine {
        let (regime, pa_bits) = match regime {
            Regime::Arm64El2 { pa_bits } => {
                let b = pa_bits.clamp(32, 48);
                (Regime::Arm64El2 { pa_bits: b }, b)
            }
            Regime::Arm32Hyp => (Regime::Arm32Hyp, 40),
        };
        Machine {
            regime,
            pa_bits,
            mair: hvmm::attr::MAIR_VALUE,
            mem: PhysMem::default(),
            cpus: vec![Cpu::default(); ncpus.max(1)],
            current: 0,
            walk_cache: true,
            pending: Vec::new(),
            tlbi_epoch: 0,
            reg_gen: 0,
            bbm: Bbm::default(),
            conflicts: Vec::new(),
            root_switch_hazards: Vec::new(),
            counters: Counters::default(),
        }
    }

    // ----------------------------------------------------------------------
    // Configuration
    // ----------------------------------------------------------------------

    /// The regime chosen at construction.
    pub fn regime(&self) -> Regime {
        self.regime
    }

    /// Number of CPUs.
    pub fn ncpus(&self) -> usize {
        self.cpus.len()
    }

    /// The configured output address size.
    pub fn pa_bits(&self) -> u8 {
        self.pa_bits
    }

    /// Sets the output address size (TCR_EL2.PS; 40 is the only size LPAE
    /// has, but smaller ones are accepted for experiments): 32..=limit.
    pub fn set_pa_bits(&mut self, bits: u8) -> Result<(), ModelError> {
        if !(32..=self.regime.pa_limit_bits()).contains(&bits) {
            return Err(ModelError::BadPaBits(bits));
        }
        self.pa_bits = bits;
        if let Regime::Arm64El2 { .. } = self.regime {
            self.regime = Regime::Arm64El2 { pa_bits: bits };
        }
        self.reg_gen += 1;
        Ok(())
    }

    /// MAIR_EL2 (HMAIR1:HMAIR0 on arm32).
    pub fn mair(&self) -> u64 {
        self.mair
    }

    /// Sets MAIR_EL2 (HMAIR1:HMAIR0).
    pub fn set_mair(&mut self, mair: u64) {
        self.mair = mair;
    }

    /// Turns the walk caches (cached table descriptors, of every regime) on
    /// or off for every CPU; they are on by default. Turning them off
    /// empties them.
    pub fn set_walk_cache(&mut self, on: bool) {
        self.walk_cache = on;
        if !on {
            for c in &mut self.cpus {
                c.tlb.clear_walk_caches();
            }
        }
    }

    pub(crate) fn cpu_ref(&self, cpu: usize) -> Result<&Cpu, ModelError> {
        self.cpus.get(cpu).ok_or(ModelError::NoSuchCpu(cpu))
    }

    pub(crate) fn cpu_mut(&mut self, cpu: usize) -> Result<&mut Cpu, ModelError> {
        self.cpus.get_mut(cpu).ok_or(ModelError::NoSuchCpu(cpu))
    }

    /// A translation register of `cpu` changed: cached entries must be
    /// checked against fresh walks again.
    pub(crate) fn reg_changed(&mut self) {
        self.reg_gen += 1;
    }

    /// The translation-state generation: moves on every write to a frame
    /// that holds translation tables and on every translation register
    /// write.
    pub(crate) fn gen(&self) -> u64 {
        self.mem.gen() + self.reg_gen
    }

    /// Chooses the CPU that [`Arch`] calls and the VA accessors act for.
    pub fn set_current_cpu(&mut self, cpu: usize) -> Result<(), ModelError> {
        self.cpu_ref(cpu)?;
        self.current = cpu;
        Ok(())
    }

    /// The CPU that [`Arch`] calls act for.
    pub fn current_cpu(&self) -> usize {
        self.current
    }

    /// Writes TTBR0_EL2 / HTTBR of `cpu`. Like the hardware register write,
    /// it does not touch the TLB. With the MMU on, every EL2 entry the CPU
    /// has cached is compared with what the new tables give: another size,
    /// output address or memory type is recorded in
    /// [`Machine::root_switch_hazards`].
    pub fn set_root(&mut self, cpu: usize, root: Paddr) -> Result<(), ModelError> {
        self.cpu_mut(cpu)?.root = root.0;
        self.reg_changed();
        if self.cpus[cpu].mmu {
            self.check_root_switch(cpu, root);
        }
        Ok(())
    }

    fn check_root_switch(&mut self, cpu: usize, root: Paddr) {
        let entries = self.cpus[cpu].tlb.el2.entries();
        for e in entries {
            for va in Self::samples(&e) {
                let Ok(fresh) = self.walk(cpu, Vaddr(va)) else {
                    continue;
                };
                let runs = if fresh.contiguous { 16 } else { 1 };
                let size = level_size(fresh.level) * runs;
                let cached = Self::entry_translation(va, &e);
                let reason = if size != e.size {
                    RootSwitchReason::Size
                } else if fresh.pa != cached.pa || fresh.attr_idx != cached.attr_idx {
                    RootSwitchReason::Translation
                } else {
                    continue;
                };
                self.root_switch_hazards.push(RootSwitchHazard {
                    cpu,
                    root,
                    va: Vaddr(va),
                    cached: e,
                    fresh,
                    reason,
                });
                break;
            }
        }
    }

    /// The hazardous root switches recorded so far (see
    /// [`Machine::set_root`]).
    pub fn root_switch_hazards(&self) -> &[RootSwitchHazard] {
        &self.root_switch_hazards
    }

    /// TTBR0_EL2 / HTTBR of `cpu`.
    pub fn root_of(&self, cpu: usize) -> Result<Paddr, ModelError> {
        Ok(Paddr(self.cpu_ref(cpu)?.root))
    }

    /// Sets SCTLR_EL2.M / HSCTLR.M of `cpu`. With the MMU off, VA = PA.
    pub fn enable_mmu(&mut self, cpu: usize, on: bool) -> Result<(), ModelError> {
        self.cpu_mut(cpu)?.mmu = on;
        self.reg_changed();
        Ok(())
    }

    /// Whether `cpu`'s MMU is on.
    pub fn mmu_enabled(&self, cpu: usize) -> Result<bool, ModelError> {
        Ok(self.cpu_ref(cpu)?.mmu)
    }

    /// Sets SCTLR_EL2.WXN / HSCTLR.WXN of `cpu`: writable mappings are then
    /// never executable. As on hardware, TLB entries made before keep the
    /// old behaviour until invalidated.
    pub fn set_wxn(&mut self, cpu: usize, on: bool) -> Result<(), ModelError> {
        self.cpu_mut(cpu)?.wxn = on;
        Ok(())
    }

    // ----------------------------------------------------------------------
    // Physical memory
    // ----------------------------------------------------------------------

    /// Declares `[base, base + size)` as RAM. Page aligned, non-empty, below
    /// the architecture's PA limit; overlapping earlier regions is allowed.
    pub fn add_ram(&mut self, base: Paddr, size: u64) -> Result<(), ModelError> {
        let bad = ModelError::BadRamRegion { base, size };
        let end = base.0.checked_add(size).ok_or(bad)?;
        let page = FRAME as u64 - 1;
        if size == 0
            || base.0 & page != 0
            || size & page != 0
            || end > 1u64 << self.regime.pa_limit_bits()
        {
            return Err(bad);
        }
        self.mem.add_ram(base.0, end);
        Ok(())
    }

    /// Declared RAM regions as `(base, size)`.
    pub fn ram_regions(&self) -> Vec<(Paddr, u64)> {
        self.mem
            .ram()
            .iter()
            .map(|&(b, e)| (Paddr(b), e - b))
            .collect()
    }

    /// Whether `pa` is RAM.
    pub fn is_ram(&self, pa: Paddr) -> bool {
        self.mem.is_ram(pa.0)
    }

    /// Frames that hold data (written and not all-zeroed since).
    pub fn materialised_frames(&self) -> usize {
        self.mem.materialised()
    }

    /// Reads physical memory directly (no MMU, no checks other than RAM).
    pub fn phys_read(&self, pa: Paddr, buf: &mut [u8]) -> Result<(), ModelError> {
        self.mem
            .read(pa.0, buf)
            .map_err(|a| ModelError::NotRam(Paddr(a)))
    }

    /// Writes physical memory directly (no MMU, not seen by the BBM checker).
    pub fn phys_write(&mut self, pa: Paddr, data: &[u8]) -> Result<(), ModelError> {
        self.mem
            .write(pa.0, data)
            .map_err(|a| ModelError::NotRam(Paddr(a)))
    }

    /// Reads a little-endian 64-bit word of physical memory.
    pub fn phys_read_u64(&self, pa: Paddr) -> Result<u64, ModelError> {
        let mut b = [0u8; 8];
        self.phys_read(pa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes a little-endian 64-bit word of physical memory.
    pub fn phys_write_u64(&mut self, pa: Paddr, val: u64) -> Result<(), ModelError> {
        self.phys_write(pa, &val.to_le_bytes())
    }

    /// Whether the frame containing `pa` is all zeroes.
    pub fn phys_page_is_zero(&self, pa: Paddr) -> Result<bool, ModelError> {
        if !self.mem.is_ram(pa.0) {
            return Err(ModelError::NotRam(pa));
        }
        Ok(self.mem.frame_is_zero(pa.0 >> FRAME_SHIFT))
    }

    /// Copies the bytes of `frames` (all must be RAM).
    pub fn snapshot_frames(&self, frames: &[Mfn]) -> Result<FrameSnapshot, ModelError> {
        let mut v = Vec::with_capacity(frames.len());
        for &m in frames {
            let pa =
                m.0.checked_shl(FRAME_SHIFT)
                    .filter(|p| p >> FRAME_SHIFT == m.0);
            match pa {
                Some(p) if self.mem.is_ram(p) => v.push((m, self.mem.frame_bytes(m.0))),
                _ => return Err(ModelError::NotRam(Paddr(m.0 << FRAME_SHIFT))),
            }
        }
        Ok(FrameSnapshot { frames: v })
    }

    /// The frames of `snap` whose bytes differ now.
    pub fn changed_frames(&self, snap: &FrameSnapshot) -> Vec<Mfn> {
        snap.frames
            .iter()
            .filter(|(m, b)| self.mem.frame_bytes(m.0) != *b)
            .map(|(m, _)| *m)
            .collect()
    }

    // ----------------------------------------------------------------------
    // The MMU (EL2 / Hyp)
    // ----------------------------------------------------------------------

    fn cfg(&self, cpu: usize) -> WalkCfg {
        let arm64 = self.regime.is_arm64();
        let root = self.cpus.get(cpu).map_or(0, |c| c.root);
        WalkCfg {
            flavor: Flavor::El2,
            arm64,
            // T0SZ = 16 (48-bit VA from level 0) / T0SZ = 0 (32-bit VA from
            // a 4-entry level-1 table).
            start_level: if arm64 { 0 } else { 1 },
            ia_bits: self.regime.va_bits(),
            oa_bits: self.pa_bits,
            root,
            valid: true,
        }
    }

    fn wxn(&self, cpu: usize) -> bool {
        self.cpus.get(cpu).is_some_and(|c| c.wxn)
    }

    fn leaf_translation(&self, cpu: usize, va: u64, leaf: &Leaf) -> Translation {
        let size = level_size(leaf.level);
        Translation {
            va: Vaddr(va),
            pa: Paddr(leaf.oa | (va & (size - 1))),
            level: leaf.level,
            writable: leaf.w,
            executable: executable(!leaf.x, leaf.w, self.wxn(cpu)),
            attr_idx: leaf.attr,
            contiguous: leaf.desc & CONTIGUOUS != 0,
            descriptor: leaf.desc,
            descriptor_pa: Paddr(leaf.desc_addr),
        }
    }

    fn entry_translation(va: u64, e: &TlbEntry) -> Translation {
        Translation {
            va: Vaddr(va),
            pa: e.pa_of(Vaddr(va)),
            level: e.level,
            writable: e.writable,
            executable: e.executable,
            attr_idx: e.attr_idx,
            contiguous: e.contiguous,
            descriptor: e.descriptor,
            descriptor_pa: e.descriptor_pa,
        }
    }

    fn fresh_walk_el2(&self, cpu: usize, va: u64) -> Result<Leaf, (AbortKind, u8)> {
        let cfg = self.cfg(cpu);
        let mut env = FreshPhys {
            mem: &self.mem,
            record: false,
            steps: Vec::new(),
        };
        walk(&cfg, &mut env, va, None).map_err(walk_err)
    }

    /// A walk of the tables in memory, as they are now, for `va` on `cpu`
    /// (its root register and WXN): no TLB, no walk cache, no counters,
    /// whether or not the MMU is on (a CPU that does not exist has root 0).
    pub fn walk(&self, cpu: usize, va: Vaddr) -> Result<Translation, MemFault> {
        self.fresh_walk_el2(cpu, va.0)
            .map(|leaf| self.leaf_translation(cpu, va.0, &leaf))
            .map_err(|(k, l)| fault(va.0, AccessKind::Read, (k.fault_kind(), l)))
    }

    /// Caches `e` in `cpu`'s TLB under `e.tag`, unless an entry of another
    /// size covers an address `e` covers: then the conflicts are recorded
    /// and `Err` returned (a TLB conflict abort).
    pub(crate) fn insert_or_conflict(
        &mut self,
        cpu: usize,
        ia: u64,
        e: TlbEntry,
        gen: u64,
    ) -> Result<(), ()> {
        let Some(c) = self.cpus.get_mut(cpu) else {
            return Ok(());
        };
        let tlb = c.tlb.get_mut(e.tag);
        let over = tlb.overlaps(&e);
        if over.is_empty() {
            tlb.insert(e, gen);
            return Ok(());
        }
        self.counters.tlb_conflict_aborts += 1;
        self.conflicts
            .extend(over.into_iter().map(|existing| TlbConflict {
                cpu,
                va: Vaddr(ia),
                existing,
                new: e,
            }));
        Err(())
    }

    /// Records a conflict between a cached entry and the entry a walk would
    /// make now for `ia` (found on a TLB hit).
    pub(crate) fn hit_conflict(&mut self, cpu: usize, ia: u64, existing: TlbEntry, new: TlbEntry) {
        self.counters.tlb_conflict_aborts += 1;
        self.conflicts.push(TlbConflict {
            cpu,
            va: Vaddr(ia),
            existing,
            new,
        });
    }

    /// Marks `e` as agreeing with the tables at `gen`.
    pub(crate) fn mark_checked(&mut self, cpu: usize, e: &TlbEntry, gen: u64) {
        if let Some(c) = self.cpus.get_mut(cpu) {
            c.tlb.get_mut(e.tag).set_checked(e, gen);
        }
    }

    /// Translates `va` for `access` on `cpu` as a load, store or fetch
    /// would: through the TLB (filling it on a miss), then the permission
    /// check. Returns the PA; does not record the fault.
    ///
    /// A hit on an entry made before the tables or the root register last
    /// changed is checked against a fresh walk: the TLB may at any time also
    /// hold what a walk gives now (speculative walks), so if that has
    /// another size the access takes a TLB conflict abort.
    pub(crate) fn mmu(&mut self, cpu: usize, va: u64, access: AccessKind) -> Result<u64, El2Abort> {
        let Some(c) = self.cpus.get(cpu) else {
            return Err(El2Abort::new(va, access, AbortKind::Translation, 0));
        };
        if !c.mmu {
            if va >> self.pa_bits != 0 {
                return Err(El2Abort::new(va, access, AbortKind::AddressSize, 0));
            }
            return Ok(va);
        }
        let gen = self.gen();
        let entry = match c.tlb.el2.lookup(va).map(|(e, g)| (*e, g)) {
            Some((e, checked)) => {
                self.counters.tlb_hits += 1;
                if checked != gen {
                    self.counters.conflict_checks += 1;
                    let fresh = self
                        .fresh_walk_el2(cpu, va)
                        .map(|leaf| entry_from_leaf(TlbTag::El2, self.wxn(cpu), va, &leaf))
                        .map_err(|(_, l)| l);
                    if let Ok(f) = fresh {
                        if f.size != e.size {
                            self.hit_conflict(cpu, va, e, f);
                            return Err(El2Abort::new(va, access, AbortKind::TlbConflict, 0));
                        }
                    }
                    if entry_wide(&e, &fresh) {
                        self.mark_checked(cpu, &e, gen);
                    }
                }
                e
            }
            None => {
                self.counters.tlb_misses += 1;
                self.counters.walks += 1;
                let (r, resumed) = self.walk_for_fill(cpu, va, gen);
                let leaf = r.map_err(|(k, l)| El2Abort::new(va, access, k, l))?;
                let e = entry_from_leaf(TlbTag::El2, self.wxn(cpu), va, &leaf);
                let stale_resume = resumed.filter(|w| w.gen != gen);
                if let Some(w) = stale_resume {
                    // The walk cache may be stale: the TLB may as well hold
                    // what a walk from the root gives.
                    self.counters.conflict_checks += 1;
                    let mut env = FreshPhys {
                        mem: &self.mem,
                        record: true,
                        steps: Vec::new(),
                    };
                    let fresh = walk(&self.cfg(cpu), &mut env, va, None);
                    if walk_cache_agrees(&env.steps, w) {
                        if let Some(c) = self.cpus.get_mut(cpu) {
                            c.tlb.el2.walk_refresh(va, w.level, gen);
                        }
                    } else if let Ok(fl) = fresh {
                        let f = entry_from_leaf(TlbTag::El2, self.wxn(cpu), va, &fl);
                        if f.size != e.size {
                            self.hit_conflict(cpu, va, e, f);
                            return Err(El2Abort::new(va, access, AbortKind::TlbConflict, 0));
                        }
                    }
                }
                if self.insert_or_conflict(cpu, va, e, gen).is_err() {
                    return Err(El2Abort::new(va, access, AbortKind::TlbConflict, 0));
                }
                e
            }
        };
        if let Some(p) = entry.stage1 {
            if !p.allows(access) {
                return Err(El2Abort::new(va, access, AbortKind::Permission, p.level));
            }
        }
        Ok(entry.pa_of(Vaddr(va)).0)
    }

    /// A TLB-filling walk: may start from, and adds to, the walk cache.
    /// Also returns the walk-cache entry it resumed from.
    #[allow(clippy::type_complexity)]
    fn walk_for_fill(
        &mut self,
        cpu: usize,
        va: u64,
        gen: u64,
    ) -> (Result<Leaf, (AbortKind, u8)>, Option<Resumed>) {
        let cfg = self.cfg(cpu);
        let use_wc = self.walk_cache && va >> cfg.ia_bits == 0;
        let resumed = match self.cpus.get(cpu) {
            Some(c) if use_wc => c.tlb.el2.walk_lookup(va, cfg.start_level),
            _ => None,
        };
        let mut env = FillPhys {
            mem: &mut self.mem,
            steps: Vec::new(),
        };
        let r = walk(&cfg, &mut env, va, resumed.map(|w| w.next));
        let steps = env.steps;
        if use_wc {
            if let Some(c) = self.cpus.get_mut(cpu) {
                for s in steps {
                    c.tlb.el2.walk_insert(s, gen);
                }
            }
        }
        (r.map_err(walk_err), resumed)
    }

    fn record_fault(&mut self, cpu: usize, a: El2Abort) {
        self.counters.faults += 1;
        let f = a.fault;
        if let Some(c) = self.cpus.get_mut(cpu) {
            c.last_fault = Some(f);
            c.esr = el2_syndrome(&f, a.kind);
            c.far = f.va.0;
            if f.access == AccessKind::Exec {
                c.hifar = f.va.0 as u32;
            } else {
                c.hdfar = f.va.0 as u32;
            }
        }
    }

    /// Records a guest abort: in the EL2 fault registers if it is taken to
    /// EL2, and as the CPU's last guest fault.
    pub(crate) fn record_guest_fault(&mut self, cpu: usize, f: GuestFault) {
        self.counters.guest_faults += 1;
        if f.to_el2() {
            self.counters.faults += 1;
        }
        if let Some(c) = self.cpus.get_mut(cpu) {
            c.last_guest_fault = Some(f);
            if f.to_el2() {
                c.esr = f.esr();
                c.far = f.va.0;
                if f.access == AccessKind::Exec {
                    c.hifar = f.va.0 as u32;
                } else {
                    c.hdfar = f.va.0 as u32;
                }
                if f.ipa.is_some() {
                    c.hpfar = f.hpfar();
                }
            }
        }
    }

    /// Runs `f` over each page-bounded piece of `[va, va + len)`: the VA of
    /// the piece, its offset in the access and its PA (translated for
    /// `access`); a fault is recorded on the current CPU and returned.
    fn for_each_piece(
        &mut self,
        va: u64,
        len: usize,
        access: AccessKind,
        mut f: impl FnMut(&mut PhysMem, u64, usize, usize) -> Result<(), u64>,
    ) -> Result<(), MemFault> {
        let cpu = self.current;
        let mut done = 0usize;
        while done < len {
            let r = (|| {
                let at = va
                    .checked_add(done as u64)
                    .ok_or_else(|| El2Abort::new(va, access, AbortKind::Translation, 0))?;
                let n = (FRAME - (at as usize & (FRAME - 1))).min(len - done);
                let pa = self.mmu(cpu, at, access)?;
                f(&mut self.mem, pa, done, n)
                    .map_err(|_| El2Abort::new(at, access, AbortKind::External, 0))?;
                Ok(n)
            })();
            match r {
                Ok(n) => done += n,
                Err(e) => {
                    self.record_fault(cpu, e);
                    return Err(e.fault);
                }
            }
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at `va` through the current CPU's MMU.
    pub fn read_bytes(&mut self, va: Vaddr, buf: &mut [u8]) -> Result<(), MemFault> {
        let len = buf.len();
        self.for_each_piece(va.0, len, AccessKind::Read, |mem, pa, off, n| {
            mem.read(pa, &mut buf[off..off + n])
        })
    }

    /// Writes `data` at `va` through the current CPU's MMU.
    pub fn write_bytes(&mut self, va: Vaddr, data: &[u8]) -> Result<(), MemFault> {
        self.for_each_piece(va.0, data.len(), AccessKind::Write, |mem, pa, off, n| {
            mem.write(pa, &data[off..off + n])
        })
    }

    /// Reads a little-endian 64-bit word at `va` through the current CPU's MMU.
    pub fn read_u64(&mut self, va: Vaddr) -> Result<u64, MemFault> {
        let mut b = [0u8; 8];
        self.read_bytes(va, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes a little-endian 64-bit word at `va` through the current CPU's MMU.
    pub fn write_u64(&mut self, va: Vaddr, val: u64) -> Result<(), MemFault> {
        self.write_bytes(va, &val.to_le_bytes())
    }

    /// Fetches a 32-bit instruction at `va` through the current CPU's MMU
    /// (an instruction fetch: XN applies, a fault is a Prefetch Abort).
    pub fn fetch_u32(&mut self, va: Vaddr) -> Result<u32, MemFault> {
        let mut b = [0u8; 4];
        self.for_each_piece(va.0, 4, AccessKind::Exec, |mem, pa, off, n| {
            mem.read(pa, &mut b[off..off + n])
        })?;
        Ok(u32::from_le_bytes(b))
    }

    /// Translates `va` for `access` through the current CPU's MMU and TLB as
    /// an access would (recording a fault), without accessing memory.
    pub fn access(&mut self, va: Vaddr, access: AccessKind) -> Result<Paddr, MemFault> {
        let cpu = self.current;
        match self.mmu(cpu, va.0, access) {
            Ok(pa) => Ok(Paddr(pa)),
            Err(e) => {
                self.record_fault(cpu, e);
                Err(e.fault)
            }
        }
    }

    /// Zeroes `len` bytes of whole pages at `va` as the current CPU's writes
    /// would (each leaf translated once, for writing, through the TLB; a
    /// fault stops it), at a cost that follows the leaves and the frames
    /// holding data, not the bytes.
    pub fn zero_range(&mut self, va: Vaddr, len: u64) -> Result<(), MemFault> {
        let frame = FRAME as u64;
        debug_assert!(va.0.is_multiple_of(frame) && len.is_multiple_of(frame));
        let mut off = 0;
        while off < len {
            let at = va.0 + off;
            let pa = self.access(Vaddr(at), AccessKind::Write)?;
            let leaf = self
                .tlb_lookup(self.current, Vaddr(at))
                .map_or(frame, |e| e.size - (at - e.va.0));
            let n = leaf.min(len - off);
            self.counters.pages_zeroed += n / frame;
            if self.mem.zero_frames(pa.0, n).is_err() {
                // Part of it is not RAM: store page by page, which takes the
                // abort where RAM ends.
                let mut p = 0;
                while p < n {
                    self.write_bytes(Vaddr(at + p), &[0u8; FRAME])?;
                    p += frame;
                }
            }
            off += n;
        }
        self.dsb();
        Ok(())
    }

    /// Prefetches the translation of `va` into `cpu`'s TLB (a read
    /// translation, like `PRFM`: faults, TLB conflicts included, are
    /// returned, not recorded in the fault registers).
    pub fn touch(&mut self, cpu: usize, va: Vaddr) -> Result<Paddr, ModelError> {
        self.cpu_ref(cpu)?;
        self.mmu(cpu, va.0, AccessKind::Read)
            .map(Paddr)
            .map_err(|e| ModelError::Fault(e.fault))
    }

    /// [`Machine::touch`]es every page of `[va, va + len)` on `cpu`; returns
    /// how many pages translated.
    pub fn touch_range(&mut self, cpu: usize, va: Vaddr, len: u64) -> Result<usize, ModelError> {
        self.cpu_ref(cpu)?;
        let mut ok = 0;
        let mut at = va.0 & !(FRAME as u64 - 1);
        let end = va.0.saturating_add(len);
        while at < end {
            if self.mmu(cpu, at, AccessKind::Read).is_ok() {
                ok += 1;
            }
            match at.checked_add(FRAME as u64) {
                Some(n) => at = n,
                None => break,
            }
        }
        Ok(ok)
    }

    /// Address translation (`AT S1E2R/W`, `ATS1HR/W`) on `cpu`: a fresh walk
    /// that neither reads nor fills the TLB, with the read or write
    /// permission check; the attribute byte comes from MAIR. With the MMU
    /// off (or for a CPU that does not exist), PA = VA and the attribute is
    /// Device-nGnRnE (0x00).
    pub fn at(&mut self, cpu: usize, va: Vaddr, write: bool) -> Result<AtResult, MemFault> {
        self.counters.at += 1;
        let access = if write {
            AccessKind::Write
        } else {
            AccessKind::Read
        };
        let mmu_on = self.cpus.get(cpu).is_some_and(|c| c.mmu);
        if !mmu_on {
            if va.0 >> self.pa_bits != 0 {
                return Err(fault(va.0, access, (FaultKind::AddressSize, 0)));
            }
            return Ok(AtResult {
                pa: Paddr(va.0),
                mair_attr: 0,
            });
        }
        let t = self.walk(cpu, va).map_err(|f| MemFault { access, ..f })?;
        if write && !t.writable {
            return Err(fault(va.0, access, (FaultKind::Permission, t.level)));
        }
        Ok(AtResult {
            pa: t.pa,
            mair_attr: (self.mair >> (8 * u32::from(t.attr_idx))) as u8,
        })
    }

    // ----------------------------------------------------------------------
    // TLB maintenance and inspection
    // ----------------------------------------------------------------------

    fn apply(&mut self, target: Option<usize>, op: Tlbi) {
        let arm32 = !self.regime.is_arm64();
        for (i, c) in self.cpus.iter_mut().enumerate() {
            if target.is_some_and(|t| t != i) {
                continue;
            }
            match op {
                // TLBIMVAH takes a 32-bit MVA: wider addresses are truncated.
                Tlbi::Va(va) => {
                    c.tlb
                        .el2
                        .invalidate_addr(if arm32 { va.0 & 0xffff_ffff } else { va.0 })
                }
                Tlbi::All => c.tlb.el2.invalidate_all(),
                Tlbi::Ipa { vmid, ipa } => {
                    if let Some(t) = c.tlb.guest.get_mut(&TlbTag::Stage2 { vmid }) {
                        t.invalidate_addr(ipa.0);
                    }
                }
                Tlbi::GuestS1 { vmid } => c.tlb.remove(TlbTag::Stage12 { vmid }),
                Tlbi::Vmid { vmid } => {
                    c.tlb.remove(TlbTag::Stage2 { vmid });
                    c.tlb.remove(TlbTag::Stage12 { vmid });
                }
                Tlbi::AllNonHyp => c.tlb.guest.clear(),
            }
            c.tlb.tidy();
        }
        self.tlbi_epoch += 1;
    }

    /// A `DSB` on the current CPU: completes the broadcast TLB invalidations
    /// it issued.
    pub fn dsb(&mut self) {
        self.counters.dsb += 1;
        let cpu = self.current;
        if self.pending.is_empty() {
            return;
        }
        let (mine, rest): (Vec<_>, Vec<_>) = self.pending.drain(..).partition(|&(c, _)| c == cpu);
        self.pending = rest;
        for (_, op) in mine {
            self.apply(None, op);
        }
    }

    /// `TLBI ALLE2` / `TLBIALLH`: empties the current CPU's EL2 TLB at once.
    pub fn tlb_flush_all_local(&mut self) {
        self.counters.tlbi_all_local += 1;
        self.apply(Some(self.current), Tlbi::All);
    }

    /// Broadcast EL2 invalidations issued but not yet completed by a DSB, as
    /// (issuing CPU, VA or `None` for all). [`Machine::pending_tlbis`] lists
    /// every kind.
    pub fn pending_invalidations(&self) -> Vec<(usize, Option<Vaddr>)> {
        self.pending
            .iter()
            .filter_map(|&(c, op)| match op {
                Tlbi::Va(va) => Some((c, Some(va))),
                Tlbi::All => Some((c, None)),
                _ => None,
            })
            .collect()
    }

    /// Every broadcast invalidation issued but not yet completed by a DSB of
    /// its issuing CPU, as (issuing CPU, operation).
    pub fn pending_tlbis(&self) -> Vec<(usize, Tlbi)> {
        self.pending.clone()
    }

    /// The leaf entries in `cpu`'s TLB, of every tag, EL2 first (empty for a
    /// CPU that does not exist).
    pub fn tlb_entries(&self, cpu: usize) -> Vec<TlbEntry> {
        self.cpus
            .get(cpu)
            .map(|c| c.tlb.all().flat_map(|(_, t)| t.entries()).collect())
            .unwrap_or_default()
    }

    /// The EL2 entry of `cpu`'s TLB that would translate `va`.
    pub fn tlb_lookup(&self, cpu: usize, va: Vaddr) -> Option<TlbEntry> {
        self.tlb_lookup_tagged(cpu, TlbTag::El2, va.0)
    }

    /// The entry of `cpu`'s TLB under `tag` that would translate the input
    /// address `ia` (a VA, or an IPA for [`TlbTag::Stage2`]).
    pub fn tlb_lookup_tagged(&self, cpu: usize, tag: TlbTag, ia: u64) -> Option<TlbEntry> {
        self.cpus
            .get(cpu)
            .and_then(|c| c.tlb.get(tag))
            .and_then(|t| t.lookup(ia))
            .map(|(e, _)| *e)
    }

    /// Sample addresses of an entry: page by page up to 2 MiB, else every
    /// 2 MiB, and the address that filled it.
    pub(crate) fn samples(e: &TlbEntry) -> impl Iterator<Item = u64> {
        let step = if e.size <= level_size(2) {
            FRAME as u64
        } else {
            level_size(2)
        };
        let base = e.va.0;
        (0..e.size / step)
            .map(move |i| base + i * step)
            .chain([e.filled_from.0])
    }

    /// Every entry of `cpu`'s TLBs and walk caches (EL2 and guests) that
    /// differs from what a fresh walk of memory gives now: a different PA
    /// (and IPA), permissions or memory attributes, or a fault. Entries up
    /// to 2 MiB are checked page by page; larger ones every 2 MiB and at the
    /// address that filled them. One report per entry. A CPU that does not
    /// exist has none.
    pub fn stale_tlb_entries(&self, cpu: usize) -> Vec<StaleEntry> {
        let Some(c) = self.cpus.get(cpu) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in c.tlb.el2.entries() {
            for va in Self::samples(&e) {
                let cached = Self::entry_translation(va, &e);
                let fresh = self.walk(cpu, Vaddr(va));
                let same = matches!(&fresh, Ok(t) if t.same_effect(&cached));
                if !same {
                    out.push(StaleEntry::Leaf {
                        cpu,
                        va: Vaddr(va),
                        entry: e,
                        cached,
                        fresh,
                    });
                    break;
                }
            }
        }
        let cfg = self.cfg(cpu);
        for ((level, key), w) in c.tlb.el2.walk_entries() {
            let va = key << level_shift(level);
            let mut env = FreshPhys {
                mem: &self.mem,
                record: true,
                steps: Vec::new(),
            };
            let _ = walk(&cfg, &mut env, va, None);
            let found = env.steps.into_iter().find(|s| s.level == level);
            if found.is_none_or(|s| s.next != w.next) {
                out.push(StaleEntry::Table {
                    cpu,
                    tag: TlbTag::El2,
                    va: Vaddr(va),
                    level,
                    cached_table: Paddr(w.next.table),
                    fresh_table: found.map(|s| Paddr(s.next.table)),
                });
            }
        }
        for (&tag, t) in &c.tlb.guest {
            self.stale_guest_entries(cpu, tag, t, &mut out);
        }
        out
    }

    /// [`Machine::stale_tlb_entries`] of every CPU.
    pub fn all_stale_tlb_entries(&self) -> Vec<StaleEntry> {
        (0..self.cpus.len())
            .flat_map(|c| self.stale_tlb_entries(c))
            .collect()
    }

    /// The TLB conflict aborts taken so far: fills that would have left two
    /// entries of different sizes covering one address.
    pub fn tlb_conflicts(&self) -> &[TlbConflict] {
        &self.conflicts
    }

    // ----------------------------------------------------------------------
    // Checkers, counters, fault registers
    // ----------------------------------------------------------------------

    /// Break-before-make violations recorded so far.
    pub fn bbm_violations(&self) -> &[BbmViolation] {
        &self.bbm.violations
    }

    /// Returns and forgets the recorded break-before-make violations.
    pub fn take_bbm_violations(&mut self) -> Vec<BbmViolation> {
        std::mem::take(&mut self.bbm.violations)
    }

    /// The counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Zeroes the counters.
    pub fn reset_counters(&mut self) {
        self.counters = Counters::default();
    }

    /// The last abort `cpu` took through its own (EL2) MMU, if any. A TLB
    /// conflict abort is given as [`FaultKind::External`] at level 0; the
    /// syndrome register ([`Machine::esr`]) has its real status, 0b110000.
    pub fn last_fault(&self, cpu: usize) -> Option<MemFault> {
        self.cpus.get(cpu).and_then(|c| c.last_fault)
    }

    /// ESR_EL2 / HSR of `cpu` (0 before any abort): the syndrome of the last
    /// abort taken to EL2, the hypervisor's own or a guest's.
    pub fn esr(&self, cpu: usize) -> u32 {
        self.cpus.get(cpu).map_or(0, |c| c.esr)
    }

    /// FAR_EL2 of `cpu`: the VA of the last abort taken to EL2.
    pub fn far(&self, cpu: usize) -> Vaddr {
        Vaddr(self.cpus.get(cpu).map_or(0, |c| c.far))
    }

    /// HDFAR of `cpu`: the VA of the last Data Abort (arm32).
    pub fn hdfar(&self, cpu: usize) -> u32 {
        self.cpus.get(cpu).map_or(0, |c| c.hdfar)
    }

    /// HIFAR of `cpu`: the VA of the last Prefetch Abort (arm32).
    pub fn hifar(&self, cpu: usize) -> u32 {
        self.cpus.get(cpu).map_or(0, |c| c.hifar)
    }

    /// HPFAR_EL2 / HPFAR of `cpu`: the IPA of the last stage-2 abort
    /// ([`GuestFault::hpfar`] format).
    pub fn hpfar(&self, cpu: usize) -> u64 {
        self.cpus.get(cpu).map_or(0, |c| c.hpfar)
    }

    /// The last guest abort on `cpu` (either stage), if any.
    pub fn last_guest_fault(&self, cpu: usize) -> Option<GuestFault> {
        self.cpus.get(cpu).and_then(|c| c.last_guest_fault)
    }

    /// Clears `cpu`'s record of the last abort (EL2's and the guest's).
    pub fn clear_fault(&mut self, cpu: usize) {
        if let Some(c) = self.cpus.get_mut(cpu) {
            c.last_fault = None;
            c.last_guest_fault = None;
            c.esr = 0;
            c.hpfar = 0;
        }
    }

    /// The VMID a guest TLBI for `vmid` issued on the current CPU acts on:
    /// 8 bits unless VTCR_EL2.VS gives 16 (arm64).
    fn tlbi_vmid(&self, vmid: Vmid) -> Vmid {
        let vs16 = self.regime.is_arm64()
            && self
                .cpus
                .get(self.current)
                .is_some_and(|c| c.vtcr & crate::stage2::VTCR_VS != 0);
        if vs16 {
            vmid
        } else {
            Vmid(vmid.0 & 0xff)
        }
    }

    /// Queues a guest TLBI on the current CPU: arm64 `op`, arm32
    /// `TLBIALLNSNHIS` whatever was asked.
    fn guest_tlbi(&mut self, op: Tlbi) {
        let op = if self.regime.is_arm64() {
            op
        } else {
            Tlbi::AllNonHyp
        };
        self.pending.push((self.current, op));
    }
}

/// A walk's fault as (kind, level); a stage-2 fault of a guest's stage-1
/// walk keeps its own kind and level.
pub(crate) fn walk_err(e: WalkErr) -> (AbortKind, u8) {
    match e {
        WalkErr::Fault(k, l) => (k, l),
        WalkErr::S2(g) => (g.kind, g.level),
    }
}

/// The model acting as the current CPU ([`Machine::set_current_cpu`]).
/// Descriptor reads, writes and page zeroing go through that CPU's MMU and
/// TLB, so an unmapped or read-only table page gives the Data Abort hardware
/// would, returned as `Err` and recorded in the fault registers.
impl Arch for Machine {
    fn read_pte(&mut self, va: Vaddr) -> Result<u64, MemFault> {
        self.counters.pte_reads += 1;
        self.read_u64(va)
    }

    /// As the default (each descriptor read through the MMU, counted, `pred`
    /// called in order), with one translation for the descriptors of a run
    /// that share a page: the TLB entry the first load fills serves the
    /// rest, as on hardware, and within a page they fault all or none.
    fn find_pte<P: FnMut(u64) -> bool>(
        &mut self,
        va: Vaddr,
        n: usize,
        mut pred: P,
    ) -> Result<Option<usize>, MemFault> {
        if !va.0.is_multiple_of(8) {
            // Misaligned: word by word, as the default.
            for i in 0..n {
                if pred(self.read_pte(Vaddr(va.0 + 8 * i as u64))?) {
                    return Ok(Some(i));
                }
            }
            return Ok(None);
        }
        let mut buf = [0u8; 512];
        let mut i = 0;
        while i < n {
            let at = va.0 + 8 * i as u64;
            let in_page = ((FRAME as u64 - (at % FRAME as u64)) / 8) as usize;
            let k = (n - i).min(in_page).min(buf.len() / 8);
            self.read_bytes(Vaddr(at), &mut buf[..8 * k])?;
            for (j, w) in buf[..8 * k].chunks_exact(8).enumerate() {
                self.counters.pte_reads += 1;
                let mut b = [0u8; 8];
                b.copy_from_slice(w);
                if pred(u64::from_le_bytes(b)) {
                    return Ok(Some(i + j));
                }
            }
            i += k;
        }
        Ok(None)
    }

    fn write_pte(&mut self, va: Vaddr, val: u64) -> Result<(), MemFault> {
        self.counters.pte_writes += 1;
        // dsb: earlier stores and TLB maintenance complete first.
        self.dsb();
        let cpu = self.current;
        let pa = self.access(va, AccessKind::Write)?;
        let old = if va.0 & 7 == 0 {
            // One translation, one single-copy-atomic store.
            let old = self.mem.read_u64(pa.0);
            match old {
                Some(old) if self.mem.write(pa.0, &val.to_le_bytes()).is_ok() => old,
                _ => {
                    let f = El2Abort::new(va.0, AccessKind::Write, AbortKind::External, 0);
                    self.record_fault(cpu, f);
                    return Err(f.fault);
                }
            }
        } else {
            // A misaligned store may straddle two pages: byte by byte.
            let mut old = [0u8; 8];
            self.read_bytes(va, &mut old)?;
            self.write_bytes(va, &val.to_le_bytes())?;
            u64::from_le_bytes(old)
        };
        self.bbm
            .on_write(pa.0, va.0, cpu, old, val, self.tlbi_epoch);
        self.dsb();
        Ok(())
    }

    fn zero_page(&mut self, va: Vaddr) -> Result<(), MemFault> {
        self.counters.pages_zeroed += 1;
        self.write_bytes(va, &[0u8; FRAME])?;
        self.dsb();
        Ok(())
    }

    fn tlb_flush_va(&mut self, va: Vaddr) {
        self.counters.tlbi_va += 1;
        self.pending.push((self.current, Tlbi::Va(va)));
    }

    fn tlb_flush_all(&mut self) {
        self.counters.tlbi_all += 1;
        self.pending.push((self.current, Tlbi::All));
    }

    /// `TLBI IPAS2E1IS` (the IPA's bits `[47:12]`, under the VMID as the
    /// current CPU's VTCR_EL2.VS sizes it); arm32 `TLBIALLNSNHIS`.
    fn tlb_flush_ipa(&mut self, vmid: Vmid, ipa: u64) {
        self.counters.tlbi_ipa += 1;
        let op = Tlbi::Ipa {
            vmid: self.tlbi_vmid(vmid),
            ipa: Ipa(ipa & 0x0000_ffff_ffff_f000),
        };
        self.guest_tlbi(op);
    }

    /// `TLBI VMALLE1IS`; arm32 `TLBIALLNSNHIS`.
    fn tlb_flush_guest_s1(&mut self, vmid: Vmid) {
        self.counters.tlbi_guest_s1 += 1;
        let op = Tlbi::GuestS1 {
            vmid: self.tlbi_vmid(vmid),
        };
        self.guest_tlbi(op);
    }

    /// `TLBI VMALLS12E1IS`; arm32 `TLBIALLNSNHIS`.
    fn tlb_flush_vmid(&mut self, vmid: Vmid) {
        self.counters.tlbi_vmid += 1;
        let op = Tlbi::Vmid {
            vmid: self.tlbi_vmid(vmid),
        };
        self.guest_tlbi(op);
    }

    fn tlb_sync(&mut self) {
        self.counters.tlb_syncs += 1;
        self.dsb();
        self.counters.isb += 1;
    }

    fn isb(&mut self) {
        self.counters.isb += 1;
    }

    fn root(&self) -> Paddr {
        Paddr(self.cpus.get(self.current).map_or(0, |c| c.root))
    }
}

/// The model's current CPU beyond what the engine needs: its index, local
/// TLB invalidation, `AT`, reads through its MMU.
impl CpuOps for Machine {
    fn tlb_flush_va_local(&mut self, va: Vaddr) {
        self.counters.tlbi_va_local += 1;
        self.apply(Some(self.current), Tlbi::Va(va));
        self.counters.dsb += 1;
        self.counters.isb += 1;
    }

    fn hw_translate(&mut self, va: Vaddr, write: bool) -> Result<AtResult, MemFault> {
        self.at(self.current, va, write)
    }

    fn cpu(&self) -> usize {
        self.current
    }

    fn read_bytes(&mut self, va: Vaddr, buf: &mut [u8]) -> Result<(), MemFault> {
        Machine::read_bytes(self, va, buf)
    }
}
