//! The machine: physical memory, CPUs with their MMU registers, TLBs and fault
//! registers, the counters, and the [`Arch`] implementation.

use crate::bbm::{Bbm, BbmViolation};
use crate::mem::{PhysMem, FRAME, FRAME_SHIFT};
use crate::tlb::{Tlb, TlbEntry};
use crate::walk::{level_shift, level_size, walk, Leaf, TableStep, WalkCfg, CONTIG_RUN};
use hvmm::{AccessKind, Arch, AtResult, FaultKind, MemFault, Mfn, Paddr, Vaddr};
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
    /// `Arch::tlb_sync` calls.
    pub tlb_syncs: u64,
    /// DSBs: 2 per `write_pte`, 1 per `zero_page`, `tlb_sync`,
    /// `tlb_flush_va_local` and [`Machine::dsb`].
    pub dsb: u64,
    /// ISBs: `Arch::isb`, and 1 per `tlb_sync` and `tlb_flush_va_local`.
    pub isb: u64,
    /// Address translation operations (`Arch::translate`, [`Machine::at`]).
    pub at: u64,
    /// Translations through the MMU answered by the TLB.
    pub tlb_hits: u64,
    /// Translations through the MMU that missed the TLB.
    pub tlb_misses: u64,
    /// Table walks made to fill the TLB (one per miss).
    pub walks: u64,
    /// Aborts recorded in the CPUs' fault registers.
    pub faults: u64,
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

/// A cached translation that no longer matches the tables in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StaleEntry {
    /// A TLB entry translates `va` differently from a fresh walk.
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
    /// A walk-cache entry holds a table descriptor that memory no longer has.
    Table {
        /// The CPU whose walk cache holds it.
        cpu: usize,
        /// The first VA under the descriptor.
        va: Vaddr,
        /// Level of the table descriptor.
        level: u8,
        /// The next-level table it points to.
        cached_table: Paddr,
        /// The next-level table a fresh walk finds there, if any.
        fresh_table: Option<Paddr>,
    },
}

impl StaleEntry {
    /// The VA the stale entry is about.
    pub fn va(&self) -> Vaddr {
        match self {
            StaleEntry::Leaf { va, .. } | StaleEntry::Table { va, .. } => *va,
        }
    }
}

/// Two TLB entries that cover a common VA were held at once: hardware may
/// take a TLB conflict abort or use either. Recorded, never raised.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TlbConflict {
    /// The CPU.
    pub cpu: usize,
    /// The entry already cached.
    pub existing: TlbEntry,
    /// The entry just filled.
    pub new: TlbEntry,
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
struct Cpu {
    /// TTBR0_EL2 / HTTBR.
    root: u64,
    /// SCTLR_EL2.M / HSCTLR.M.
    mmu: bool,
    /// SCTLR_EL2.WXN / HSCTLR.WXN.
    wxn: bool,
    tlb: Tlb,
    /// Last abort taken.
    last_fault: Option<MemFault>,
    /// ESR_EL2 / HSR.
    esr: u32,
    /// FAR_EL2.
    far: u64,
    /// HDFAR.
    hdfar: u32,
    /// HIFAR.
    hifar: u32,
}

/// A broadcast TLB invalidation waiting for a DSB of the CPU that issued it.
#[derive(Copy, Clone, Debug)]
enum Pending {
    Va(u64),
    All,
}

/// The machine model. See the crate documentation.
#[derive(Clone)]
pub struct Machine {
    regime: Regime,
    pa_bits: u8,
    mair: u64,
    mem: PhysMem,
    cpus: Vec<Cpu>,
    current: usize,
    walk_cache: bool,
    pending: Vec<(usize, Pending)>,
    /// TLB invalidations completed so far (for the BBM checker).
    tlbi_epoch: u64,
    fill_seq: u64,
    bbm: Bbm,
    conflicts: Vec<TlbConflict>,
    counters: Counters,
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

impl Machine {
    /// A machine with `ncpus` CPUs (at least one), no RAM, MMUs off, empty
    /// TLBs, MAIR = [`hvmm::attr::MAIR_VALUE`], CPU 0 current. An arm64
    /// `pa_bits` is clamped to 32..=48.
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
            fill_seq: 0,
            bbm: Bbm::default(),
            conflicts: Vec::new(),
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

    /// Turns the walk cache (cached table descriptors) on or off for every
    /// CPU; it is on by default. Turning it off empties it.
    pub fn set_walk_cache(&mut self, on: bool) {
        self.walk_cache = on;
        if !on {
            for c in &mut self.cpus {
                c.tlb.clear_walk_cache();
            }
        }
    }

    fn cpu_ref(&self, cpu: usize) -> Result<&Cpu, ModelError> {
        self.cpus.get(cpu).ok_or(ModelError::NoSuchCpu(cpu))
    }

    fn cpu_mut(&mut self, cpu: usize) -> Result<&mut Cpu, ModelError> {
        self.cpus.get_mut(cpu).ok_or(ModelError::NoSuchCpu(cpu))
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
    /// it does not touch the TLB.
    pub fn set_root(&mut self, cpu: usize, root: Paddr) -> Result<(), ModelError> {
        self.cpu_mut(cpu)?.root = root.0;
        Ok(())
    }

    /// TTBR0_EL2 / HTTBR of `cpu`.
    pub fn root_of(&self, cpu: usize) -> Result<Paddr, ModelError> {
        Ok(Paddr(self.cpu_ref(cpu)?.root))
    }

    /// Sets SCTLR_EL2.M / HSCTLR.M of `cpu`. With the MMU off, VA = PA.
    pub fn enable_mmu(&mut self, cpu: usize, on: bool) -> Result<(), ModelError> {
        self.cpu_mut(cpu)?.mmu = on;
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
    // The MMU
    // ----------------------------------------------------------------------

    fn cfg(&self, cpu: usize) -> WalkCfg {
        let root = self.cpus.get(cpu).map_or(0, |c| c.root);
        WalkCfg {
            arm64: self.regime.is_arm64(),
            pa_bits: self.pa_bits,
            root,
        }
    }

    /// Turns a leaf met by a walk of `va` into a TLB entry.
    fn entry_from_leaf(&self, cpu: usize, va: u64, leaf: &Leaf) -> TlbEntry {
        let size = level_size(leaf.level);
        // LPAE's level-1 table has 4 entries: a run of 16 cannot exist there,
        // so the hint is ignored at that level.
        let contiguous = leaf.contiguous && (self.regime.is_arm64() || leaf.level > 1);
        let (base, span, pa) = if contiguous {
            let span = size * CONTIG_RUN;
            let offset = ((va >> level_shift(leaf.level)) & (CONTIG_RUN - 1)) * size;
            (va & !(span - 1), span, leaf.oa.wrapping_sub(offset))
        } else {
            (va & !(size - 1), size, leaf.oa)
        };
        let wxn = self.cpus.get(cpu).is_some_and(|c| c.wxn);
        let writable = !leaf.ro;
        TlbEntry {
            va: Vaddr(base),
            size: span,
            pa: Paddr(pa),
            level: leaf.level,
            writable,
            executable: executable(leaf.xn, writable, wxn),
            attr_idx: leaf.attr_idx,
            contiguous,
            descriptor: leaf.desc,
            descriptor_pa: Paddr(leaf.desc_pa),
            filled_from: Vaddr(va),
        }
    }

    fn leaf_translation(&self, cpu: usize, va: u64, leaf: &Leaf) -> Translation {
        let wxn = self.cpus.get(cpu).is_some_and(|c| c.wxn);
        let size = level_size(leaf.level);
        Translation {
            va: Vaddr(va),
            pa: Paddr(leaf.oa | (va & (size - 1))),
            level: leaf.level,
            writable: !leaf.ro,
            executable: executable(leaf.xn, !leaf.ro, wxn),
            attr_idx: leaf.attr_idx,
            contiguous: leaf.contiguous,
            descriptor: leaf.desc,
            descriptor_pa: Paddr(leaf.desc_pa),
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

    /// A walk of the tables in memory, as they are now, for `va` on `cpu`
    /// (its root register and WXN): no TLB, no walk cache, no counters,
    /// whether or not the MMU is on (a CPU that does not exist has root 0).
    pub fn walk(&self, cpu: usize, va: Vaddr) -> Result<Translation, MemFault> {
        let cfg = self.cfg(cpu);
        walk(&cfg, &self.mem, va.0, None, &mut |_| {})
            .map(|leaf| self.leaf_translation(cpu, va.0, &leaf))
            .map_err(|f| fault(va.0, AccessKind::Read, f))
    }

    /// Translates `va` for `access` on `cpu` as a load, store or fetch
    /// would: through the TLB (filling it on a miss), then the permission
    /// check. Returns the PA; does not record the fault.
    fn mmu(&mut self, cpu: usize, va: u64, access: AccessKind) -> Result<u64, MemFault> {
        let Some(c) = self.cpus.get(cpu) else {
            return Err(fault(va, access, (FaultKind::Translation, 0)));
        };
        if !c.mmu {
            if va >> self.pa_bits != 0 {
                return Err(fault(va, access, (FaultKind::AddressSize, 0)));
            }
            return Ok(va);
        }
        let entry = match c.tlb.lookup(va) {
            Some(e) => {
                self.counters.tlb_hits += 1;
                e
            }
            None => {
                self.counters.tlb_misses += 1;
                self.counters.walks += 1;
                let leaf = self
                    .walk_for_fill(cpu, va)
                    .map_err(|f| fault(va, access, f))?;
                let e = self.entry_from_leaf(cpu, va, &leaf);
                self.fill_seq += 1;
                let seq = self.fill_seq;
                if let Some(c) = self.cpus.get_mut(cpu) {
                    let overlaps = c.tlb.insert(seq, e);
                    self.conflicts
                        .extend(overlaps.into_iter().map(|existing| TlbConflict {
                            cpu,
                            existing,
                            new: e,
                        }));
                }
                e
            }
        };
        let denied = match access {
            AccessKind::Read => false,
            AccessKind::Write => !entry.writable,
            AccessKind::Exec => !entry.executable,
        };
        if denied {
            return Err(fault(va, access, (FaultKind::Permission, entry.level)));
        }
        Ok(entry.pa_of(Vaddr(va)).0)
    }

    /// A TLB-filling walk: may start from, and adds to, the walk cache.
    fn walk_for_fill(&mut self, cpu: usize, va: u64) -> Result<Leaf, (FaultKind, u8)> {
        let cfg = self.cfg(cpu);
        let use_wc = self.walk_cache && va >> cfg.va_bits() == 0;
        let resume = match self.cpus.get(cpu) {
            Some(c) if use_wc => c.tlb.walk_lookup(va, cfg.start_level()),
            _ => None,
        };
        let mut steps: Vec<TableStep> = Vec::new();
        let r = walk(&cfg, &self.mem, va, resume, &mut |s| steps.push(s));
        if use_wc {
            if let Some(c) = self.cpus.get_mut(cpu) {
                for s in steps {
                    c.tlb.walk_insert(s);
                }
            }
        }
        r
    }

    fn record_fault(&mut self, cpu: usize, f: MemFault) {
        self.counters.faults += 1;
        if let Some(c) = self.cpus.get_mut(cpu) {
            c.last_fault = Some(f);
            c.esr = f.syndrome();
            c.far = f.va.0;
            if f.access == AccessKind::Exec {
                c.hifar = f.va.0 as u32;
            } else {
                c.hdfar = f.va.0 as u32;
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
                    .ok_or_else(|| fault(va, access, (FaultKind::Translation, 0)))?;
                let n = (FRAME - (at as usize & (FRAME - 1))).min(len - done);
                let pa = self.mmu(cpu, at, access)?;
                f(&mut self.mem, pa, done, n)
                    .map_err(|_| fault(at, access, (FaultKind::External, 0)))?;
                Ok(n)
            })();
            match r {
                Ok(n) => done += n,
                Err(e) => {
                    self.record_fault(cpu, e);
                    return Err(e);
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
        self.mmu(cpu, va.0, access)
            .map(Paddr)
            .inspect_err(|&e| self.record_fault(cpu, e))
    }

    /// Prefetches the translation of `va` into `cpu`'s TLB (a read
    /// translation, like `PRFM`: faults are returned, not recorded).
    pub fn touch(&mut self, cpu: usize, va: Vaddr) -> Result<Paddr, ModelError> {
        self.cpu_ref(cpu)?;
        self.mmu(cpu, va.0, AccessKind::Read)
            .map(Paddr)
            .map_err(ModelError::Fault)
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

    fn apply(&mut self, target: Option<usize>, op: Pending) {
        let arm32 = !self.regime.is_arm64();
        for (i, c) in self.cpus.iter_mut().enumerate() {
            if target.is_some_and(|t| t != i) {
                continue;
            }
            match op {
                // TLBIMVAH takes a 32-bit MVA: wider addresses are truncated.
                Pending::Va(va) => c
                    .tlb
                    .invalidate_va(if arm32 { va & 0xffff_ffff } else { va }),
                Pending::All => c.tlb.invalidate_all(),
            }
        }
        self.tlbi_epoch += 1;
    }

    /// A `DSB` on the current CPU: completes the broadcast TLB invalidations
    /// it issued.
    pub fn dsb(&mut self) {
        self.counters.dsb += 1;
        let cpu = self.current;
        let (mine, rest): (Vec<_>, Vec<_>) = self.pending.drain(..).partition(|&(c, _)| c == cpu);
        self.pending = rest;
        for (_, op) in mine {
            self.apply(None, op);
        }
    }

    /// `TLBI ALLE2` / `TLBIALLH`: empties the current CPU's TLB at once.
    pub fn tlb_flush_all_local(&mut self) {
        self.counters.tlbi_all_local += 1;
        self.apply(Some(self.current), Pending::All);
    }

    /// Broadcast invalidations issued but not yet completed by a DSB, as
    /// (issuing CPU, VA or `None` for all).
    pub fn pending_invalidations(&self) -> Vec<(usize, Option<Vaddr>)> {
        self.pending
            .iter()
            .map(|&(c, op)| match op {
                Pending::Va(va) => (c, Some(Vaddr(va))),
                Pending::All => (c, None),
            })
            .collect()
    }

    /// The leaf entries in `cpu`'s TLB (empty for a CPU that does not exist).
    pub fn tlb_entries(&self, cpu: usize) -> Vec<TlbEntry> {
        self.cpus
            .get(cpu)
            .map(|c| c.tlb.entries())
            .unwrap_or_default()
    }

    /// The entry of `cpu`'s TLB that would translate `va`.
    pub fn tlb_lookup(&self, cpu: usize, va: Vaddr) -> Option<TlbEntry> {
        self.cpus.get(cpu).and_then(|c| c.tlb.lookup(va.0))
    }

    /// Every entry of `cpu`'s TLB and walk cache that differs from what a
    /// fresh walk of memory gives now: a different PA, permissions or memory
    /// type, or a fault. Entries up to 2 MiB are checked page by page; larger
    /// ones every 2 MiB and at the VA that filled them. One report per entry.
    /// A CPU that does not exist has none.
    pub fn stale_tlb_entries(&self, cpu: usize) -> Vec<StaleEntry> {
        let Some(c) = self.cpus.get(cpu) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in c.tlb.entries() {
            let step = if e.size <= level_size(2) {
                FRAME as u64
            } else {
                level_size(2)
            };
            let samples = (0..e.size / step)
                .map(|i| e.va.0 + i * step)
                .chain([e.filled_from.0]);
            for va in samples {
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
        for ((level, key), w) in c.tlb.walk_entries() {
            let va = key << level_shift(level);
            let mut found = None;
            let _ = walk(&cfg, &self.mem, va, None, &mut |s| {
                if s.level == level {
                    found = Some(s);
                }
            });
            let ok = found.is_some_and(|s| s.next == w.next);
            if !ok {
                out.push(StaleEntry::Table {
                    cpu,
                    va: Vaddr(va),
                    level,
                    cached_table: Paddr(w.next.table),
                    fresh_table: found.map(|s| Paddr(s.next.table)),
                });
            }
        }
        out
    }

    /// [`Machine::stale_tlb_entries`] of every CPU.
    pub fn all_stale_tlb_entries(&self) -> Vec<StaleEntry> {
        (0..self.cpus.len())
            .flat_map(|c| self.stale_tlb_entries(c))
            .collect()
    }

    /// Pairs of overlapping TLB entries met so far.
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

    /// The last abort `cpu` took through the MMU, if any.
    pub fn last_fault(&self, cpu: usize) -> Option<MemFault> {
        self.cpus.get(cpu).and_then(|c| c.last_fault)
    }

    /// ESR_EL2 / HSR of `cpu` (0 before any abort).
    pub fn esr(&self, cpu: usize) -> u32 {
        self.cpus.get(cpu).map_or(0, |c| c.esr)
    }

    /// FAR_EL2 of `cpu`: the VA of the last abort.
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

    /// Clears `cpu`'s record of the last abort.
    pub fn clear_fault(&mut self, cpu: usize) {
        if let Some(c) = self.cpus.get_mut(cpu) {
            c.last_fault = None;
            c.esr = 0;
        }
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
                    let f = fault(va.0, AccessKind::Write, (FaultKind::External, 0));
                    self.record_fault(cpu, f);
                    return Err(f);
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
        self.pending.push((self.current, Pending::Va(va.0)));
    }

    fn tlb_flush_va_local(&mut self, va: Vaddr) {
        self.counters.tlbi_va_local += 1;
        self.apply(Some(self.current), Pending::Va(va.0));
        self.counters.dsb += 1;
        self.counters.isb += 1;
    }

    fn tlb_flush_all(&mut self) {
        self.counters.tlbi_all += 1;
        self.pending.push((self.current, Pending::All));
    }

    // The model has no stage-2 translation yet: nothing of a guest's is
    // ever cached, so these complete at once.
    fn tlb_flush_ipa(&mut self, _vmid: hvmm::Vmid, _ipa: u64) {}

    fn tlb_flush_guest_s1(&mut self, _vmid: hvmm::Vmid) {}

    fn tlb_flush_vmid(&mut self, _vmid: hvmm::Vmid) {}

    fn tlb_sync(&mut self) {
        self.counters.tlb_syncs += 1;
        self.dsb();
        self.counters.isb += 1;
    }

    fn isb(&mut self) {
        self.counters.isb += 1;
    }

    fn translate(&mut self, va: Vaddr, write: bool) -> Result<AtResult, MemFault> {
        self.at(self.current, va, write)
    }

    fn root(&self) -> Paddr {
        Paddr(self.cpus.get(self.current).map_or(0, |c| c.root))
    }

    fn cpu(&self) -> usize {
        self.current
    }
}
