//! The guest side of the machine: the stage-2 registers (VTTBR, VTCR,
//! HCR.VM) and the guest's own stage-1 registers (TTBR0_EL1, SCTLR_EL1.M),
//! two-stage translation of EL1&0 accesses through the VMID-tagged TLB,
//! `AT S12E1R/W`, and guest aborts reported to EL2.

use crate::fault::{AbortKind, GuestFault};
use crate::machine::{
    entry_from_leaf, entry_wide, walk_cache_agrees, walk_err, Cpu, FillPhys, FreshPhys,
    GuestTranslation, Machine, ModelError, StaleEntry,
};
use crate::mem::{PhysMem, FRAME};
use crate::stage2::{pa_max, Stage2, VTCR_VS};
use crate::tlb::{Resumed, Tlb, TlbEntry, TlbTag};
use crate::walk::{level_shift, walk, Flavor, TableStep, WalkCfg, WalkEnv, WalkErr};
use hvmm::{AccessKind, Ipa, Paddr, Stage, Vaddr, Vmid};

/// The registers a guest translation depends on.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct GuestCtx {
    /// VTTBR_EL2 / VTTBR.
    pub(crate) vttbr: u64,
    /// VTCR_EL2 / VTCR.
    pub(crate) vtcr: u64,
    /// HCR_EL2.VM / HCR.VM.
    pub(crate) vm: bool,
    /// TTBR0_EL1 / TTBR0.
    pub(crate) ttbr0: u64,
    /// SCTLR_EL1.M / SCTLR.M.
    pub(crate) el1_mmu: bool,
}

impl GuestCtx {
    fn of(c: &Cpu) -> GuestCtx {
        GuestCtx {
            vttbr: c.vttbr,
            vtcr: c.vtcr,
            vm: c.vm,
            ttbr0: c.ttbr0,
            el1_mmu: c.el1_mmu,
        }
    }

    /// The VMID in VTTBR: arm64 bits `[63:48]` with VTCR_EL2.VS, else
    /// `[55:48]`; arm32 bits `[55:48]`.
    fn vmid(&self, arm64: bool) -> Vmid {
        let v = (self.vttbr >> 48) as u16;
        if arm64 && self.vtcr & VTCR_VS != 0 {
            Vmid(v)
        } else {
            Vmid(v & 0xff)
        }
    }
}

/// Descriptor reads of a guest's stage-1 walk that fills the TLB: each table
/// address is an IPA, translated through stage 2 (and its TLB) with a read
/// permission check; a fault there is a stage-2 fault with S1PTW.
struct S1Fill<'a> {
    m: &'a mut Machine,
    cpu: usize,
    ctx: GuestCtx,
    va: u64,
    access: AccessKind,
    steps: Vec<TableStep>,
}

impl WalkEnv for S1Fill<'_> {
    fn read(&mut self, addr: u64, level: u8) -> Result<u64, WalkErr> {
        let pa = if self.ctx.vm {
            let e = self
                .m
                .s2_lookup(self.cpu, self.ctx, addr, self.va, self.access, true)
                .map_err(WalkErr::S2)?;
            self.m
                .s1ptw_check(&e, self.ctx, addr, self.va, self.access)?;
            e.pa_of(Vaddr(addr)).0
        } else {
            addr
        };
        let v = self
            .m
            .mem
            .read_u64(pa)
            .ok_or(WalkErr::Fault(AbortKind::ExternalOnWalk, level))?;
        self.m.mem.watch(pa);
        Ok(v)
    }
    fn on_table(&mut self, step: TableStep) {
        self.steps.push(step);
    }
}

/// Descriptor reads of a guest's stage-1 walk that changes nothing (stage 2
/// walked afresh too).
struct S1Fresh<'a> {
    m: &'a Machine,
    ctx: GuestCtx,
    va: u64,
    access: AccessKind,
    steps: Vec<TableStep>,
}

impl WalkEnv for S1Fresh<'_> {
    fn read(&mut self, addr: u64, level: u8) -> Result<u64, WalkErr> {
        let pa = if self.ctx.vm {
            let e = self
                .m
                .s2_fresh(self.ctx, addr, self.va, self.access, true)
                .map_err(WalkErr::S2)?;
            self.m
                .s1ptw_check(&e, self.ctx, addr, self.va, self.access)?;
            e.pa_of(Vaddr(addr)).0
        } else {
            addr
        };
        self.m
            .mem
            .read_u64(pa)
            .ok_or(WalkErr::Fault(AbortKind::ExternalOnWalk, level))
    }
    fn on_table(&mut self, step: TableStep) {
        self.steps.push(step);
    }
}

impl Machine {
    // ----------------------------------------------------------------------
    // Stage-2 and guest registers
    // ----------------------------------------------------------------------

    /// Writes VTCR_EL2 / VTCR of `cpu`. Any value is accepted, as by the
    /// register; if it does not decode ([`Stage2::from_vtcr`]) every stage-2
    /// walk is a translation fault (level 0 on arm64, 1 on arm32).
    pub fn set_vtcr(&mut self, cpu: usize, vtcr: u64) -> Result<(), ModelError> {
        self.cpu_mut(cpu)?.vtcr = vtcr;
        self.reg_changed();
        Ok(())
    }

    /// VTCR_EL2 / VTCR of `cpu`.
    pub fn vtcr(&self, cpu: usize) -> Result<u64, ModelError> {
        Ok(self.cpu_ref(cpu)?.vtcr)
    }

    /// Writes VTCR of `cpu` for the configuration `s` ([`Stage2::vtcr`]).
    pub fn set_stage2_config(&mut self, cpu: usize, s: Stage2) -> Result<(), ModelError> {
        let v = s.vtcr(self.regime).map_err(ModelError::Vtcr)?;
        self.set_vtcr(cpu, v)
    }

    /// The stage-2 configuration `cpu`'s VTCR gives.
    pub fn stage2(&self, cpu: usize) -> Result<Stage2, ModelError> {
        Stage2::from_vtcr(self.regime, self.cpu_ref(cpu)?.vtcr).map_err(ModelError::Vtcr)
    }

    /// Writes VTTBR_EL2 / VTTBR of `cpu`: the root table's base `root` (its
    /// bits below the root's alignment are ignored by walks) and the VMID in
    /// bits `[63:48]` (arm64; only `[55:48]` count unless VTCR_EL2.VS is set)
    /// or `[55:48]` (arm32, 8 bits). Like the hardware register write, it
    /// does not touch the TLB.
    pub fn set_vttbr(&mut self, cpu: usize, root: Paddr, vmid: Vmid) -> Result<(), ModelError> {
        let vmid = if self.regime.is_arm64() {
            u64::from(vmid.0)
        } else {
            u64::from(vmid.0 & 0xff)
        };
        self.set_vttbr_raw(cpu, (root.0 & 0x0000_ffff_ffff_ffff) | (vmid << 48))
    }

    /// Writes the raw VTTBR_EL2 / VTTBR value of `cpu`.
    pub fn set_vttbr_raw(&mut self, cpu: usize, vttbr: u64) -> Result<(), ModelError> {
        self.cpu_mut(cpu)?.vttbr = vttbr;
        self.reg_changed();
        Ok(())
    }

    /// VTTBR_EL2 / VTTBR of `cpu`.
    pub fn vttbr(&self, cpu: usize) -> Result<u64, ModelError> {
        Ok(self.cpu_ref(cpu)?.vttbr)
    }

    /// The VMID `cpu`'s guest translations are tagged with now (VTTBR, sized
    /// by VTCR_EL2.VS on arm64).
    pub fn vmid(&self, cpu: usize) -> Result<Vmid, ModelError> {
        Ok(GuestCtx::of(self.cpu_ref(cpu)?).vmid(self.regime.is_arm64()))
    }

    /// Sets HCR_EL2.VM / HCR.VM of `cpu`: stage 2 on or off for guest
    /// accesses.
    pub fn set_stage2(&mut self, cpu: usize, on: bool) -> Result<(), ModelError> {
        self.cpu_mut(cpu)?.vm = on;
        self.reg_changed();
        Ok(())
    }

    /// Whether stage 2 is on for `cpu`'s guest accesses.
    pub fn stage2_enabled(&self, cpu: usize) -> Result<bool, ModelError> {
        Ok(self.cpu_ref(cpu)?.vm)
    }

    /// Writes the guest's TTBR0_EL1 (arm32: the LPAE TTBR0) on `cpu`: the
    /// IPA of its stage-1 root (arm64: 48-bit VA from level 0; arm32: 32-bit
    /// VA from a 4-entry level-1 table).
    pub fn set_guest_ttbr0(&mut self, cpu: usize, root: Ipa) -> Result<(), ModelError> {
        self.cpu_mut(cpu)?.ttbr0 = root.0;
        self.reg_changed();
        Ok(())
    }

    /// Sets the guest's SCTLR_EL1.M (arm32 SCTLR.M) on `cpu`: its stage 1 on
    /// or off (off: VA = IPA).
    pub fn enable_guest_mmu(&mut self, cpu: usize, on: bool) -> Result<(), ModelError> {
        self.cpu_mut(cpu)?.el1_mmu = on;
        self.reg_changed();
        Ok(())
    }

    // ----------------------------------------------------------------------
    // Walks
    // ----------------------------------------------------------------------

    fn arm64(&self) -> bool {
        self.regime.is_arm64()
    }

    fn ctx(&self, cpu: usize) -> Option<GuestCtx> {
        self.cpus.get(cpu).map(GuestCtx::of)
    }

    fn s2_cfg(&self, ctx: GuestCtx) -> WalkCfg {
        let arm64 = self.arm64();
        let (valid, start_level, ia_bits, oa_bits) = match Stage2::from_vtcr(self.regime, ctx.vtcr)
        {
            Ok(s) => (true, s.start_level, u32::from(s.ipa_bits), s.oa_bits),
            Err(_) => (false, 1, 40, pa_max(arm64)),
        };
        WalkCfg {
            flavor: Flavor::Stage2,
            arm64,
            start_level,
            ia_bits,
            oa_bits,
            root: ctx.vttbr,
            valid,
        }
    }

    fn s1_cfg(&self, ctx: GuestCtx) -> WalkCfg {
        let arm64 = self.arm64();
        WalkCfg {
            flavor: Flavor::El1,
            arm64,
            start_level: if arm64 { 0 } else { 1 },
            ia_bits: if arm64 { 48 } else { 32 },
            oa_bits: pa_max(arm64),
            root: ctx.ttbr0,
            valid: true,
        }
    }

    fn s2_fault(
        &self,
        e: WalkErr,
        ipa: u64,
        va: u64,
        access: AccessKind,
        s1ptw: bool,
    ) -> GuestFault {
        if let WalkErr::S2(g) = e {
            return g;
        }
        let (kind, level) = walk_err(e);
        GuestFault {
            va: Vaddr(va),
            ipa: Some(Ipa(ipa)),
            access,
            kind,
            level,
            stage: Stage::Two,
            s1ptw,
            arm64: self.arm64(),
        }
    }

    fn s1_fault(&self, e: WalkErr, va: u64, access: AccessKind) -> GuestFault {
        match e {
            WalkErr::S2(g) => g,
            WalkErr::Fault(kind, level) => GuestFault {
                va: Vaddr(va),
                ipa: None,
                access,
                kind,
                level,
                stage: Stage::One,
                s1ptw: false,
                arm64: self.arm64(),
            },
        }
    }

    fn conflict_fault(&self, va: u64, ipa: Option<Ipa>, access: AccessKind) -> GuestFault {
        GuestFault {
            va: Vaddr(va),
            ipa,
            access,
            kind: AbortKind::TlbConflict,
            level: 0,
            stage: Stage::Two,
            s1ptw: false,
            arm64: self.arm64(),
        }
    }

    /// A stage-1 table read needs stage-2 read permission: a stage-2
    /// permission fault with S1PTW otherwise.
    fn s1ptw_check(
        &self,
        e: &TlbEntry,
        _ctx: GuestCtx,
        ipa: u64,
        va: u64,
        access: AccessKind,
    ) -> Result<(), WalkErr> {
        match e.stage2 {
            Some(p) if !p.readable => Err(WalkErr::S2(GuestFault {
                va: Vaddr(va),
                ipa: Some(Ipa(ipa)),
                access,
                kind: AbortKind::Permission,
                level: p.level,
                stage: Stage::Two,
                s1ptw: true,
                arm64: self.arm64(),
            })),
            _ => Ok(()),
        }
    }

    /// A fresh stage-2 walk of `ipa` under `ctx` (no TLB, no walk cache),
    /// as the TLB entry it would make. `va` and `access` are for the fault.
    pub(crate) fn s2_fresh(
        &self,
        ctx: GuestCtx,
        ipa: u64,
        va: u64,
        access: AccessKind,
        s1ptw: bool,
    ) -> Result<TlbEntry, GuestFault> {
        let cfg = self.s2_cfg(ctx);
        let tag = TlbTag::Stage2 {
            vmid: ctx.vmid(self.arm64()),
        };
        let mut env = FreshPhys {
            mem: &self.mem,
            record: false,
            steps: Vec::new(),
        };
        walk(&cfg, &mut env, ipa, None)
            .map(|leaf| entry_from_leaf(tag, false, ipa, &leaf))
            .map_err(|e| self.s2_fault(e, ipa, va, access, s1ptw))
    }

    /// The stage-2 translation of `ipa` on `cpu` through its TLB (filling
    /// it on a miss), without the permission check. A hit made stale in
    /// size by later table or register changes is a TLB conflict abort.
    pub(crate) fn s2_lookup(
        &mut self,
        cpu: usize,
        ctx: GuestCtx,
        ipa: u64,
        va: u64,
        access: AccessKind,
        s1ptw: bool,
    ) -> Result<TlbEntry, GuestFault> {
        let vmid = ctx.vmid(self.arm64());
        let tag = TlbTag::Stage2 { vmid };
        let gen = self.gen();
        let conflict = |m: &Machine| GuestFault {
            s1ptw,
            ..m.conflict_fault(va, Some(Ipa(ipa)), access)
        };
        let hit = self
            .cpus
            .get(cpu)
            .and_then(|c| c.tlb.get(tag))
            .and_then(|t| t.lookup(ipa))
            .map(|(e, g)| (*e, g));
        if let Some((e, checked)) = hit {
            self.counters.guest_tlb_hits += 1;
            if checked != gen {
                self.counters.conflict_checks += 1;
                let fresh = self
                    .s2_fresh(ctx, ipa, va, access, s1ptw)
                    .map_err(|f| f.level);
                if let Ok(f) = fresh {
                    if f.size != e.size {
                        self.hit_conflict(cpu, ipa, e, f);
                        return Err(conflict(self));
                    }
                }
                if entry_wide(&e, &fresh) {
                    self.mark_checked(cpu, &e, gen);
                }
            }
            return Ok(e);
        }
        self.counters.guest_tlb_misses += 1;
        let cfg = self.s2_cfg(ctx);
        let use_wc = self.walk_cache && cfg.valid && ipa >> cfg.ia_bits == 0;
        let resumed = if use_wc {
            self.cpus
                .get(cpu)
                .and_then(|c| c.tlb.get(tag))
                .and_then(|t| t.walk_lookup(ipa, cfg.start_level))
        } else {
            None
        };
        let mut env = FillPhys {
            mem: &mut self.mem,
            steps: Vec::new(),
        };
        let r = walk(&cfg, &mut env, ipa, resumed.map(|w| w.next));
        let steps = env.steps;
        if let Some(c) = self.cpus.get_mut(cpu) {
            c.vmid_ctx.insert(vmid.0, ctx);
            if use_wc && !steps.is_empty() {
                let t = c.tlb.get_mut(tag);
                for s in steps {
                    t.walk_insert(s, gen);
                }
            }
        }
        let leaf = r.map_err(|e| self.s2_fault(e, ipa, va, access, s1ptw))?;
        let e = entry_from_leaf(tag, false, ipa, &leaf);
        if let Some(w) = resumed.filter(|w| w.gen != gen) {
            // The walk cache may be stale: the TLB may as well hold what a
            // walk from VTTBR gives.
            self.counters.conflict_checks += 1;
            let mut env = FreshPhys {
                mem: &self.mem,
                record: true,
                steps: Vec::new(),
            };
            let fresh = walk(&cfg, &mut env, ipa, None);
            if walk_cache_agrees(&env.steps, w) {
                if let Some(c) = self.cpus.get_mut(cpu) {
                    c.tlb.get_mut(tag).walk_refresh(ipa, w.level, gen);
                }
            } else if let Ok(fl) = fresh {
                let f = entry_from_leaf(tag, false, ipa, &fl);
                if f.size != e.size {
                    self.hit_conflict(cpu, ipa, e, f);
                    return Err(conflict(self));
                }
            }
        }
        if self.insert_or_conflict(cpu, ipa, e, gen).is_err() {
            return Err(conflict(self));
        }
        Ok(e)
    }

    /// The combined (stage 1+2) entry for `va` from the stage-1 entry `e1`
    /// (IPA as its output; `None` with the guest's stage 1 off: VA = IPA)
    /// and the stage-2 entry `e2` (`None` with stage 2 off: IPA = PA). Its
    /// size is the smaller of the two.
    fn combine(tag: TlbTag, va: u64, e1: Option<TlbEntry>, e2: Option<TlbEntry>) -> TlbEntry {
        let (size, base, ipa_base) = match (&e1, &e2) {
            (Some(a), Some(b)) => {
                let size = a.size.min(b.size);
                let base = va & !(size - 1);
                (size, base, a.pa.0.wrapping_add(base - a.va.0))
            }
            (Some(a), None) => (a.size, a.va.0, a.pa.0),
            (None, Some(b)) => (b.size, b.va.0, b.va.0),
            (None, None) => {
                let base = va & !(FRAME as u64 - 1);
                (FRAME as u64, base, base)
            }
        };
        let pa = e2.map_or(ipa_base, |b| b.pa_of(Vaddr(ipa_base)).0);
        let s1 = e1.and_then(|a| a.stage1);
        let s2 = e2.and_then(|b| b.stage2);
        let allows =
            |a: AccessKind| s1.is_none_or(|p| p.allows(a)) && s2.is_none_or(|p| p.allows(a));
        let main = s1.or(s2);
        TlbEntry {
            tag,
            va: Vaddr(base),
            size,
            pa: Paddr(pa),
            level: main.map_or(3, |p| p.level),
            readable: allows(AccessKind::Read),
            writable: allows(AccessKind::Write),
            executable: allows(AccessKind::Exec),
            attr_idx: main.map_or(0, |p| p.attr),
            contiguous: s1.is_some_and(|p| p.contiguous) || s2.is_some_and(|p| p.contiguous),
            descriptor: main.map_or(0, |p| p.descriptor),
            descriptor_pa: Paddr(main.map_or(0, |p| p.descriptor_addr)),
            filled_from: Vaddr(va),
            ipa: Some(Ipa(ipa_base)),
            stage1: s1,
            stage2: s2,
        }
    }

    /// With the guest's stage 1 off the VA is the IPA: beyond the
    /// implemented PA size it is a stage-1 address size fault at level 0.
    fn s1_off_check(&self, va: u64, access: AccessKind) -> Result<(), GuestFault> {
        if va >> pa_max(self.arm64()) != 0 {
            return Err(self.s1_fault(WalkErr::Fault(AbortKind::AddressSize, 0), va, access));
        }
        Ok(())
    }

    /// A fresh two-stage walk of `va` under `ctx` (no TLB, no walk cache),
    /// as the combined entry it would make; no permission check.
    pub(crate) fn guest_fresh(
        &self,
        ctx: GuestCtx,
        va: u64,
        access: AccessKind,
    ) -> Result<TlbEntry, GuestFault> {
        let tag = TlbTag::Stage12 {
            vmid: ctx.vmid(self.arm64()),
        };
        let e1 = if ctx.el1_mmu {
            let cfg = self.s1_cfg(ctx);
            let mut env = S1Fresh {
                m: self,
                ctx,
                va,
                access,
                steps: Vec::new(),
            };
            let leaf = walk(&cfg, &mut env, va, None).map_err(|e| self.s1_fault(e, va, access))?;
            Some(entry_from_leaf(tag, false, va, &leaf))
        } else {
            self.s1_off_check(va, access)?;
            None
        };
        let ipa = e1.map_or(va, |e| e.pa_of(Vaddr(va)).0);
        let e2 = if ctx.vm {
            Some(self.s2_fresh(ctx, ipa, va, access, false)?)
        } else {
            None
        };
        Ok(Self::combine(tag, va, e1, e2))
    }

    /// The permission check of a guest access on a (combined) entry: stage 1
    /// first, then stage 2.
    fn guest_perm(&self, e: &TlbEntry, va: u64, access: AccessKind) -> Result<(), GuestFault> {
        if let Some(p) = e.stage1 {
            if !p.allows(access) {
                return Err(self.s1_fault(
                    WalkErr::Fault(AbortKind::Permission, p.level),
                    va,
                    access,
                ));
            }
        }
        if let Some(p) = e.stage2 {
            if !p.allows(access) {
                let ipa = e.ipa_of(Vaddr(va)).map_or(va, |i| i.0);
                return Err(self.s2_fault(
                    WalkErr::Fault(AbortKind::Permission, p.level),
                    ipa,
                    va,
                    access,
                    false,
                ));
            }
        }
        Ok(())
    }

    /// Translates a guest access to `va` on `cpu` as the hardware would:
    /// through the combined (VMID-tagged) TLB, filling it on a miss with a
    /// stage-1 walk whose table reads go through stage 2 (and its TLB), then
    /// stage 2 of the output IPA; then the permission checks. Does not record
    /// the fault.
    fn guest_translate(
        &mut self,
        cpu: usize,
        va: u64,
        access: AccessKind,
    ) -> Result<TlbEntry, GuestFault> {
        let Some(ctx) = self.ctx(cpu) else {
            return Err(self.s1_fault(WalkErr::Fault(AbortKind::Translation, 0), va, access));
        };
        let vmid = ctx.vmid(self.arm64());
        let tag = TlbTag::Stage12 { vmid };
        if !ctx.vm && !ctx.el1_mmu {
            // Both stages off: VA = PA, nothing cached.
            self.s1_off_check(va, access)?;
            return Ok(Self::combine(tag, va, None, None));
        }
        let gen = self.gen();
        let hit = self
            .cpus
            .get(cpu)
            .and_then(|c| c.tlb.get(tag))
            .and_then(|t| t.lookup(va))
            .map(|(e, g)| (*e, g));
        let entry = if let Some((e, checked)) = hit {
            self.counters.guest_tlb_hits += 1;
            if checked != gen {
                self.counters.conflict_checks += 1;
                let fresh = self.guest_fresh(ctx, va, access);
                if let Ok(f) = fresh {
                    if f.size != e.size {
                        self.hit_conflict(cpu, va, e, f);
                        return Err(self.conflict_fault(va, f.ipa_of(Vaddr(va)), access));
                    }
                    if entry_wide(&e, &Ok(f)) {
                        self.mark_checked(cpu, &e, gen);
                    }
                }
            }
            e
        } else {
            self.counters.guest_tlb_misses += 1;
            if let Some(c) = self.cpus.get_mut(cpu) {
                c.vmid_ctx.insert(vmid.0, ctx);
            }
            let mut resumed = None;
            let e1 = if ctx.el1_mmu {
                let cfg = self.s1_cfg(ctx);
                let use_wc = self.walk_cache && va >> cfg.ia_bits == 0;
                resumed = if use_wc {
                    self.cpus
                        .get(cpu)
                        .and_then(|c| c.tlb.get(tag))
                        .and_then(|t| t.walk_lookup(va, cfg.start_level))
                } else {
                    None
                };
                let mut env = S1Fill {
                    m: self,
                    cpu,
                    ctx,
                    va,
                    access,
                    steps: Vec::new(),
                };
                let r = walk(&cfg, &mut env, va, resumed.map(|w| w.next));
                let steps = env.steps;
                if use_wc && !steps.is_empty() {
                    if let Some(c) = self.cpus.get_mut(cpu) {
                        let t = c.tlb.get_mut(tag);
                        for s in steps {
                            t.walk_insert(s, gen);
                        }
                    }
                }
                let leaf = r.map_err(|e| self.s1_fault(e, va, access))?;
                Some(entry_from_leaf(tag, false, va, &leaf))
            } else {
                self.s1_off_check(va, access)?;
                None
            };
            let ipa = e1.map_or(va, |e| e.pa_of(Vaddr(va)).0);
            let e2 = if ctx.vm {
                Some(self.s2_lookup(cpu, ctx, ipa, va, access, false)?)
            } else {
                None
            };
            let e = Self::combine(tag, va, e1, e2);
            if let Some(w) = resumed.filter(|w: &Resumed| w.gen != gen) {
                // The guest's stage-1 walk cache may be stale: the TLB may
                // as well hold what a walk from TTBR0 gives.
                self.counters.conflict_checks += 1;
                let mut env = S1Fresh {
                    m: self,
                    ctx,
                    va,
                    access,
                    steps: Vec::new(),
                };
                let _ = walk(&self.s1_cfg(ctx), &mut env, va, None);
                if walk_cache_agrees(&env.steps, w) {
                    if let Some(c) = self.cpus.get_mut(cpu) {
                        c.tlb.get_mut(tag).walk_refresh(va, w.level, gen);
                    }
                } else if let Ok(f) = self.guest_fresh(ctx, va, access) {
                    if f.size != e.size {
                        self.hit_conflict(cpu, va, e, f);
                        return Err(self.conflict_fault(va, f.ipa_of(Vaddr(va)), access));
                    }
                }
            }
            if self.insert_or_conflict(cpu, va, e, gen).is_err() {
                return Err(self.conflict_fault(va, Some(Ipa(ipa)), access));
            }
            e
        };
        self.guest_perm(&entry, va, access)?;
        Ok(entry)
    }

    // ----------------------------------------------------------------------
    // Guest accesses
    // ----------------------------------------------------------------------

    /// Translates a guest (EL1) access to `va` on `cpu` as the access would
    /// (through the TLB, recording a fault: in the EL2 fault registers if it
    /// is taken to EL2), without accessing memory. With both of the guest's
    /// stages off, PA = VA.
    pub fn guest_access(
        &mut self,
        cpu: usize,
        va: Vaddr,
        access: AccessKind,
    ) -> Result<Paddr, GuestFault> {
        match self.guest_translate(cpu, va.0, access) {
            Ok(e) => Ok(e.pa_of(va)),
            Err(f) => {
                self.record_guest_fault(cpu, f);
                Err(f)
            }
        }
    }

    fn guest_pieces(
        &mut self,
        cpu: usize,
        va: u64,
        len: usize,
        access: AccessKind,
        mut f: impl FnMut(&mut PhysMem, u64, usize, usize) -> Result<(), u64>,
    ) -> Result<(), GuestFault> {
        let mut done = 0usize;
        while done < len {
            let at = va.wrapping_add(done as u64);
            let n = (FRAME - (at as usize & (FRAME - 1))).min(len - done);
            let r = self.guest_translate(cpu, at, access).and_then(|e| {
                let pa = e.pa_of(Vaddr(at)).0;
                f(&mut self.mem, pa, done, n)
                    .map_err(|_| self.s1_fault(WalkErr::Fault(AbortKind::External, 0), at, access))
            });
            if let Err(e) = r {
                self.record_guest_fault(cpu, e);
                return Err(e);
            }
            done += n;
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at the guest VA `va` on `cpu`. A PA that is
    /// not RAM is a synchronous external abort (taken to the guest's EL1).
    pub fn guest_read_bytes(
        &mut self,
        cpu: usize,
        va: Vaddr,
        buf: &mut [u8],
    ) -> Result<(), GuestFault> {
        let len = buf.len();
        self.guest_pieces(cpu, va.0, len, AccessKind::Read, |mem, pa, off, n| {
            mem.read(pa, &mut buf[off..off + n])
        })
    }

    /// Writes `data` at the guest VA `va` on `cpu`.
    pub fn guest_write_bytes(
        &mut self,
        cpu: usize,
        va: Vaddr,
        data: &[u8],
    ) -> Result<(), GuestFault> {
        self.guest_pieces(
            cpu,
            va.0,
            data.len(),
            AccessKind::Write,
            |mem, pa, off, n| mem.write(pa, &data[off..off + n]),
        )
    }

    /// Reads a little-endian 64-bit word at the guest VA `va` on `cpu`.
    pub fn guest_read_u64(&mut self, cpu: usize, va: Vaddr) -> Result<u64, GuestFault> {
        let mut b = [0u8; 8];
        self.guest_read_bytes(cpu, va, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes a little-endian 64-bit word at the guest VA `va` on `cpu`.
    pub fn guest_write_u64(&mut self, cpu: usize, va: Vaddr, val: u64) -> Result<(), GuestFault> {
        self.guest_write_bytes(cpu, va, &val.to_le_bytes())
    }

    /// Fetches a 32-bit instruction at the guest VA `va` on `cpu` (an
    /// instruction fetch: stage-1 PXN and stage-2 XN apply; a stage-2 fault
    /// is an Instruction Abort, EC 0x20).
    pub fn guest_fetch_u32(&mut self, cpu: usize, va: Vaddr) -> Result<u32, GuestFault> {
        let mut b = [0u8; 4];
        self.guest_pieces(cpu, va.0, 4, AccessKind::Exec, |mem, pa, off, n| {
            mem.read(pa, &mut b[off..off + n])
        })?;
        Ok(u32::from_le_bytes(b))
    }

    /// `AT S12E1R` / `AT S12E1W` (arm32 `ATS12NSOPR/W`) on `cpu`: a fresh
    /// two-stage walk of `va` that neither uses nor fills the TLB, with the
    /// read or write permission check of both stages. A fault is returned
    /// (as PAR would report it), not taken.
    pub fn at_s12e1(
        &mut self,
        cpu: usize,
        va: Vaddr,
        write: bool,
    ) -> Result<GuestTranslation, GuestFault> {
        self.counters.at += 1;
        let access = if write {
            AccessKind::Write
        } else {
            AccessKind::Read
        };
        let Some(ctx) = self.ctx(cpu) else {
            return Err(self.s1_fault(WalkErr::Fault(AbortKind::Translation, 0), va.0, access));
        };
        let e = self.guest_fresh(ctx, va.0, access)?;
        self.guest_perm(&e, va.0, access)?;
        Ok(GuestTranslation::from_entry(&e, va.0))
    }

    /// A fresh two-stage walk of the guest VA `va` with `cpu`'s registers as
    /// they are now: no TLB, no walk cache, no counters, no permission check
    /// (faults are reported as for a read).
    pub fn guest_walk(&self, cpu: usize, va: Vaddr) -> Result<GuestTranslation, GuestFault> {
        let ctx = self.ctx(cpu).unwrap_or_default();
        self.guest_fresh(ctx, va.0, AccessKind::Read)
            .map(|e| GuestTranslation::from_entry(&e, va.0))
    }

    /// A fresh stage-2 walk of `ipa` with `cpu`'s VTTBR and VTCR, whether or
    /// not stage 2 is on: no TLB, no walk cache, no counters, no permission
    /// check.
    pub fn s2_walk(&self, cpu: usize, ipa: Ipa) -> Result<GuestTranslation, GuestFault> {
        let ctx = self.ctx(cpu).unwrap_or_default();
        self.s2_fresh(ctx, ipa.0, ipa.0, AccessKind::Read, false)
            .map(|e| GuestTranslation::from_entry(&e, ipa.0))
    }

    /// Adds the stale entries of `cpu`'s guest caches under `tag` to `out`.
    pub(crate) fn stale_guest_entries(
        &self,
        cpu: usize,
        tag: TlbTag,
        t: &Tlb,
        out: &mut Vec<StaleEntry>,
    ) {
        let Some(c) = self.cpus.get(cpu) else { return };
        let Some(vmid) = tag.vmid() else { return };
        let cur = GuestCtx::of(c);
        let ctx = if cur.vmid(self.arm64()) == vmid {
            cur
        } else {
            c.vmid_ctx.get(&vmid.0).copied().unwrap_or(cur)
        };
        let stage2 = matches!(tag, TlbTag::Stage2 { .. });
        let fresh_entry = |a: u64| {
            if stage2 {
                self.s2_fresh(ctx, a, a, AccessKind::Read, false)
            } else {
                self.guest_fresh(ctx, a, AccessKind::Read)
            }
        };
        for e in t.entries() {
            for a in Self::samples(&e) {
                let cached = GuestTranslation::from_entry(&e, a);
                let fresh = fresh_entry(a).map(|f| GuestTranslation::from_entry(&f, a));
                if !matches!(&fresh, Ok(f) if f.same_effect(&cached)) {
                    out.push(StaleEntry::GuestLeaf {
                        cpu,
                        va: Vaddr(a),
                        entry: e,
                        cached,
                        fresh,
                    });
                    break;
                }
            }
        }
        for ((level, key), w) in t.walk_entries() {
            let ia = key << level_shift(level);
            let steps = if stage2 {
                let mut env = FreshPhys {
                    mem: &self.mem,
                    record: true,
                    steps: Vec::new(),
                };
                let _ = walk(&self.s2_cfg(ctx), &mut env, ia, None);
                env.steps
            } else {
                let mut env = S1Fresh {
                    m: self,
                    ctx,
                    va: ia,
                    access: AccessKind::Read,
                    steps: Vec::new(),
                };
                let _ = walk(&self.s1_cfg(ctx), &mut env, ia, None);
                env.steps
            };
            let found = steps.into_iter().find(|s| s.level == level);
            if found.is_none_or(|s| s.next != w.next) {
                out.push(StaleEntry::Table {
                    cpu,
                    tag,
                    va: Vaddr(ia),
                    level,
                    cached_table: Paddr(w.next.table),
                    fresh_table: found.map(|s| Paddr(s.next.table)),
                });
            }
        }
    }
}
