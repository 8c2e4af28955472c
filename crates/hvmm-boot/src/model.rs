//! Whole boots on the host machine model: a loader that places the image, the
//! DTB and the modules the way QEMU, U-Boot or GRUB would; an emulation of
//! the head (the same boot tables the real head builds); the shared boot
//! sequence; and the model's own checks afterwards (stale TLB entries,
//! break-before-make violations).

use crate::image::{ImageLayout, StaticTables};
use crate::mm::AccessPolicy;
use crate::platform::Platform;
use crate::report::BootSummary;
use crate::seq::{BootConfig, BootParams, Failed, PaPolicy};
use hvmm::format::{table_index, Arm32, Arm64, Format};
use hvmm::{Arch, Attrs, CpuOps, MemFault, Paddr, Perm, Pte, Vaddr, PAGE_SIZE};
use hvmm_bootinfo::builder::VirtBoard;
use hvmm_bootinfo::{MemoryMap, ModuleKind, ReservedSource, XSM_MAGIC};
use hvmm_model::{BbmViolation, Machine, Regime, RootSwitchHazard, StaleEntry, TlbConflict};
use hvmm_xen::layout::{
    HasLayout, FIXMAP_ADDR, FIXMAP_CONSOLE, IMAGE_L3_TABLES, MAX_FDT_SIZE, XEN_VIRT_SIZE,
    XEN_VIRT_START,
};
use std::fmt;
use std::string::String;
use std::vec::Vec;

/// PA of the PL011 UART on QEMU's virt board.
pub const UART_PA: u64 = 0x0900_0000;
const MIB: u64 = 1 << 20;
const MIB2: u64 = 2 << 20;

impl Platform for Machine {
    type Bytes = Vec<u8>;
    fn switch_root(&mut self, root: Paddr) {
        let cpu = self.current_cpu();
        let _ = self.set_root(cpu, root);
        self.tlb_flush_all_local();
    }
    fn set_wxn(&mut self, on: bool) {
        let cpu = self.current_cpu();
        let _ = Machine::set_wxn(self, cpu, on);
    }
    fn map_bytes(&mut self, va: Vaddr, len: usize) -> Result<Vec<u8>, MemFault> {
        let mut v = vec![0u8; len];
        self.read_bytes(va, &mut v)?;
        Ok(v)
    }
    fn copy(&mut self, dst: Vaddr, src: Vaddr, len: usize) -> Result<(), MemFault> {
        let mut buf = vec![0u8; len];
        self.read_bytes(src, &mut buf)?;
        Machine::write_bytes(self, dst, &buf)
    }
    fn write_bytes(&mut self, dst: Vaddr, data: &[u8]) -> Result<(), MemFault> {
        Machine::write_bytes(self, dst, data)
    }
    fn zero_range(&mut self, va: Vaddr, len: u64) -> Result<(), MemFault> {
        Machine::zero_range(self, va, len)
    }
    fn start_cpu(&mut self, cpu: usize, root: Paddr, t: &StaticTables) -> Result<(), &'static str> {
        if cpu >= self.ncpus() {
            return Err("no such CPU in the model");
        }
        start_secondary(self, cpu, root, t, SecondaryStart::BreakBeforeMake)
    }
}

/// Architecture of a scenario.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ArchKind {
    /// arm64 at EL2.
    Arm64,
    /// arm32 in HYP mode with LPAE.
    Arm32,
}

impl ArchKind {
    /// Name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ArchKind::Arm64 => "arm64",
            ArchKind::Arm32 => "arm32",
        }
    }
}

/// How the image got into memory.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Loader {
    /// QEMU `-kernel`: no modules.
    Direct,
    /// U-Boot style: typed `/chosen/module@..` nodes.
    Uboot,
    /// GRUB `xen_hypervisor` / `xen_module`: untyped `multiboot,module`
    /// nodes, everything near the top of RAM.
    Grub,
}

/// A module to load.
#[derive(Clone, Debug)]
pub struct ModuleFile {
    /// Its bytes.
    pub data: Vec<u8>,
    /// Its kind, for typed loaders (GRUB ignores it).
    pub kind: ModuleKind,
    /// Where it came from (for logs).
    pub name: String,
    /// Where to load it (default: where the loader would).
    pub addr: Option<u64>,
}

/// A whole boot scenario on the model.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Architecture.
    pub arch: ArchKind,
    /// RAM banks (base, size).
    pub ram: Vec<(u64, u64)>,
    /// Reserved ranges to put in the DTB.
    pub reserved: Vec<ReservedRegion>,
    /// What the loader did to the board's device tree (e.g. `--ram`
    /// replacing its `/memory`), printed first in the log as `loader:`
    /// lines.
    pub notes: Vec<String>,
    /// Where the image is loaded (default: as the loader would).
    pub load_addr: Option<u64>,
    /// Where the DTB is loaded (default: as the loader would).
    pub dtb_addr: Option<u64>,
    /// The loader.
    pub loader: Loader,
    /// Modules (ignored by the direct loader).
    pub modules: Vec<ModuleFile>,
    /// CPUs.
    pub cpus: usize,
    /// Hypervisor command line.
    pub bootargs: String,
    /// Table-access behaviour (bug reproductions for tests).
    pub access: AccessPolicy,
    /// PA derivation (bug reproductions for tests).
    pub pa: PaPolicy,
    /// VAs to dump at the end.
    pub dumps: Vec<u64>,
    /// Load these bytes as the DTB instead of the one built from the
    /// scenario (malformed-DTB tests, `--dtb` boots of a given file).
    pub dtb_override: Option<Vec<u8>>,
    /// Fault injection: make one request fail.
    pub inject: Option<crate::seq::FailPoint>,
    /// After the boot, run this many SMP stress iterations per CPU (0: none).
    pub stress_iterations: u64,
    /// Take page-table pages only from below this address
    /// ([`BootConfig::table_limit`], `hvmm.tables-below-4g` on the image).
    pub table_limit: Option<u64>,
    /// The image's layout (default: [`ImageLayout::model`]); a real image's
    /// layout makes the model boot comparable line for line with QEMU.
    pub image: Option<ImageLayout>,
    /// Let modules overlap the image or each other (the loader normally
    /// refuses; the hypervisor must then refuse too).
    pub allow_overlaps: bool,
    /// Build domain 0 after Active (`None`: stop at Active).
    pub dom0: Option<crate::domain::Dom0Config>,
    /// arm64: the direct map (default `true`); `false` is the secret-free
    /// mode ([`BootConfig::directmap`]). arm32 has no direct map: `false`
    /// is refused there.
    pub directmap: bool,
    /// The audit's mode-dependent rules and a violation to plant.
    pub audit: crate::seq::AuditConfig,
}

impl Scenario {
    /// The default: QEMU-virt-like board with 1 GiB of RAM at 1 GiB, GRUB-style
    /// untyped modules (kernel, initrd, XSM policy), 4 CPUs.
    pub fn default_for(arch: ArchKind) -> Self {
        Scenario {
            arch,
            ram: vec![(0x4000_0000, 1 << 30)],
            reserved: Vec::new(),
            notes: Vec::new(),
            load_addr: None,
            dtb_addr: None,
            loader: Loader::Grub,
            modules: default_modules(),
            cpus: 4,
            bootargs: String::from("console=dtuart"),
            access: AccessPolicy::Correct,
            pa: PaPolicy::Translate,
            dumps: Vec::new(),
            dtb_override: None,
            inject: None,
            stress_iterations: 0,
            table_limit: None,
            image: None,
            allow_overlaps: false,
            dom0: None,
            directmap: true,
            audit: crate::seq::AuditConfig::default(),
        }
    }
}

/// A reserved range for the scenario's device tree.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ReservedRegion {
    /// Start.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
    /// A `/memreserve/` entry or a `/reserved-memory` child.
    pub source: ReservedSource,
    /// For a `/reserved-memory` child: whether it says `no-map`.
    pub no_map: bool,
}

impl ReservedRegion {
    /// A `/reserved-memory` child with `no-map`.
    pub fn no_map(base: u64, size: u64) -> Self {
        ReservedRegion {
            base,
            size,
            source: ReservedSource::ReservedMemory,
            no_map: true,
        }
    }

    /// A `/memreserve/` entry.
    pub fn memreserve(base: u64, size: u64) -> Self {
        ReservedRegion {
            base,
            size,
            source: ReservedSource::MemReserve,
            no_map: false,
        }
    }

    fn describe(&self) -> String {
        let end = self.base.saturating_add(self.size);
        let what = match (self.source, self.no_map) {
            (ReservedSource::MemReserve, _) => "/memreserve/ entry",
            (_, true) => "no-map /reserved-memory range",
            (_, false) => "/reserved-memory range",
        };
        format!("{what} [{:#x}, {end:#x})", self.base)
    }
}

/// A kernel, an initrd and an XSM policy, synthesised.
pub fn default_modules() -> Vec<ModuleFile> {
    // Both architectures' kernel magics: an arm64 Image's at 0x38, an arm32
    // zImage's at 0x24 (inside the Image header's reserved words).
    let mut kernel = vec![0u8; 64 * 1024];
    kernel[0x38..0x3c].copy_from_slice(b"ARMd");
    kernel[0x24..0x28].copy_from_slice(&0x016f_2818u32.to_le_bytes());
    let initrd: Vec<u8> = (0..128 * 1024u32).map(|i| (i * 7) as u8).collect();
    let mut xsm = vec![0u8; 8 * 1024];
    xsm[..4].copy_from_slice(&XSM_MAGIC.to_le_bytes());
    vec![
        ModuleFile {
            data: kernel,
            kind: ModuleKind::Kernel,
            name: "kernel (synthesised)".into(),
            addr: None,
        },
        ModuleFile {
            data: initrd,
            kind: ModuleKind::Ramdisk,
            name: "initrd (synthesised)".into(),
            addr: None,
        },
        ModuleFile {
            data: xsm,
            kind: ModuleKind::XsmPolicy,
            name: "xsm policy (synthesised)".into(),
            addr: None,
        },
    ]
}

/// A scenario that cannot even be set up (before the hypervisor runs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioError(pub String);

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScenarioError {}

/// What a model boot produced.
pub struct Outcome {
    /// The boot log.
    pub log: String,
    /// The summary, or the failure.
    pub result: Result<BootSummary, Failed>,
    /// The machine afterwards.
    pub machine: Machine,
    /// Where things were placed.
    pub placement: Placement,
    /// TLB entries that disagree with the tables at the end.
    pub stale: Vec<StaleEntry>,
    /// Break-before-make violations seen.
    pub bbm: Vec<BbmViolation>,
    /// Root switches made with the MMU on while a CPU's TLB held an entry
    /// the new tables map otherwise.
    pub root_switches: Vec<RootSwitchHazard>,
    /// TLB conflict aborts taken.
    pub conflicts: Vec<TlbConflict>,
    /// The SMP stress after the boot, if the scenario asked for one.
    pub stress: Option<Result<StressReport, crate::stress::StressError>>,
    /// Domain 0 checked by two-stage translation on the model (AT S12E1R
    /// with its stage 2 live on CPU 0): the pages checked, or what was wrong.
    pub dom0_two_stage: Option<Result<u64, String>>,
    /// Secret-free mode: the CPUs whose mapcache still held slots once the
    /// boot was over (CPU, slots held, or `usize::MAX` when its slot table
    /// could not be read). Empty when every step gave its slots back.
    pub mapcache_held: Vec<(usize, usize)>,
}

/// What an SMP stress run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StressReport {
    /// CPUs that took part.
    pub cpus: usize,
    /// Iterations per CPU.
    pub iterations: u64,
    /// Engine updates in all.
    pub updates: u64,
    /// Translations checked in all.
    pub checks: u64,
    /// Domain-page maps in all (arm32).
    pub domain_maps: u64,
}

impl Outcome {
    /// Whether the boot reached Active (and the stress, if any, passed) and
    /// the model saw nothing wrong.
    pub fn ok(&self) -> bool {
        self.result.is_ok()
            && self.stale.is_empty()
            && self.bbm.is_empty()
            && self.root_switches.is_empty()
            && self.conflicts.is_empty()
            && !matches!(self.stress, Some(Err(_)))
            && !matches!(self.dom0_two_stage, Some(Err(_)))
            && self.mapcache_held.is_empty()
    }

    /// The end-of-boot audit's report when it ran and passed: at least one
    /// root per CPU up walked (one shared on arm64, one each on arm32),
    /// leaves and pages seen, every stack guard checked, no violation, and
    /// its line in the log. What is missing otherwise.
    pub fn audited(&self) -> Result<crate::audit::AuditReport, String> {
        let s = match &self.result {
            Ok(s) => s,
            Err(f) => return Err(format!("the boot failed: {}", f.error)),
        };
        let a = s.audit.ok_or("no audit report in the summary")?;
        let problem = if a.violations != 0 || a.first.is_some() {
            Some(format!("{} violations, first {:?}", a.violations, a.first))
        } else if a.roots == 0 || a.cpus != s.cpus || a.leaves == 0 || a.pages < a.leaves {
            Some(format!("counts do not add up: {a:?} with {} CPUs", s.cpus))
        } else if a.guards == 0 {
            Some("no stack guard checked".into())
        } else if !self.log.contains(crate::audit::RULES) {
            Some("no audit line in the log".into())
        } else {
            None
        };
        match problem {
            Some(p) => Err(format!("{p}\n{}", self.log)),
            None => Ok(a),
        }
    }
}

/// Makes domain 0's stage 2 live on CPU 0 of the model (VTCR, VTTBR,
/// HCR.VM) and checks every guest region by two-stage translation of a
/// guest access with its own stage 1 off (the model's AT S12E1R): RAM and
/// its contents IPA == PA, normal write-back and writable; devices IPA ==
/// PA as Device-nGnRE; the hypervisor's image a stage-2 fault.
fn check_dom0_two_stage<F: HasLayout>(
    m: &mut Machine,
    mm: &crate::Mm<F>,
) -> Option<Result<u64, String>> {
    use hvmm::{Format, Stage2Format};
    let d = mm.dom0.as_ref()?;
    let run = |m: &mut Machine| -> Result<u64, String> {
        m.set_vtcr(0, <F::Guest as Stage2Format>::vtcr())
            .map_err(|e| format!("the model refuses dom0's VTCR: {e}"))?;
        m.set_vttbr(0, d.p2m.root().paddr(), d.vmid)
            .map_err(|e| format!("{e}"))?;
        m.set_stage2(0, true).map_err(|e| format!("{e}"))?;
        let mut n = 0u64;
        let mut check = |m: &mut Machine, ipa: u64, write: bool| -> Result<(), String> {
            let t = m
                .at_s12e1(0, Vaddr(ipa), write)
                .map_err(|f| format!("IPA {ipa:#x} faults: {f:?}"))?;
            if t.pa != Paddr(ipa) {
                return Err(format!("IPA {ipa:#x} translates to {}", t.pa));
            }
            n += 1;
            Ok(())
        };
        let step = (d.ram.size / 64).max(4096) & !4095;
        let mut at = d.ram.ipa;
        while at < d.ram.ipa + d.ram.size {
            check(m, at, true)?;
            at += step;
        }
        for pl in [d.kernel, d.dtb].into_iter().chain(d.initrd) {
            check(m, pl.ipa & !4095, true)?;
            check(m, (pl.ipa + pl.size - 1) & !4095, true)?;
        }
        for dev in d.devices() {
            check(m, dev.ipa, true)?;
        }
        if let Some(probe) = d.probe.or(Some(0)) {
            if probe != 0 && m.at_s12e1(0, Vaddr(probe), false).is_ok() {
                return Err(format!(
                    "the hypervisor's {probe:#x} translates for the guest"
                ));
            }
        }
        let _ = <F::Guest as Format>::NAME;
        m.set_stage2(0, false).map_err(|e| format!("{e}"))?;
        Ok(n)
    };
    Some(run(m))
}

/// Runs the SMP stress on the model: the CPUs take turns, one [`step`]
/// each, `iterations` times.
///
/// [`step`]: crate::stress::step
fn run_stress<F: HasLayout>(
    m: &mut Machine,
    mm: crate::Mm<F>,
    cpus: usize,
    iterations: u64,
) -> Result<StressReport, crate::stress::StressError> {
    use crate::stress::{finish, step, CpuStress, Shared, SpinLock};
    let shared = SpinLock::new(Shared::new(mm));
    let mut states: Vec<CpuStress> = (0..cpus).map(CpuStress::new).collect();
    let base = crate::stress::shared_base::<F>();
    for _ in 0..iterations {
        for st in states.iter_mut() {
            let _ = m.set_current_cpu(st.cpu);
            step(m, &shared, st)?;
            // Let every CPU cache the shared pages, so that a missing
            // invalidation in the next step leaves a stale entry behind.
            for cpu in 0..cpus {
                for i in 0..crate::stress::SHARED_PAGES as u64 {
                    let _ = m.touch(cpu, Vaddr(base + i * PAGE_SIZE));
                }
            }
            if let Some(stale) = m.all_stale_tlb_entries().first() {
                return Err(crate::stress::StressError::StaleTlb { va: stale.va() });
            }
        }
    }
    let _ = m.set_current_cpu(0);
    finish(m, &shared).map_err(|err| crate::stress::StressError::Update { cpu: 0, err })?;
    let updates = shared.lock().updates;
    Ok(StressReport {
        cpus,
        iterations,
        updates,
        checks: states.iter().map(|s| s.checks).sum(),
        domain_maps: states.iter().map(|s| s.domain_maps).sum(),
    })
}

/// Where the loader put things.
#[derive(Clone, Debug, Default)]
pub struct Placement {
    /// Image load address.
    pub image: u64,
    /// DTB address and size.
    pub dtb: (u64, u64),
    /// Modules (address, size, kind).
    pub modules: Vec<(u64, u64, ModuleKind)>,
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.0.saturating_add(b.1) && b.0 < a.0.saturating_add(a.1)
}

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

/// Where the model's loader may still put things: the RAM banks minus what
/// it placed and what it keeps clear of. Every search is in checked
/// arithmetic: a bank too small gives no place, never a wrapped address.
struct Placer {
    ram: Vec<(u64, u64)>,
    /// (base, size, what, placed by the loader).
    taken: Vec<(u64, u64, String, bool)>,
}

impl Placer {
    fn new(ram: &[(u64, u64)]) -> Self {
        Placer {
            ram: ram.to_vec(),
            taken: Vec::new(),
        }
    }

    /// Keeps `[base, base + size)` clear (reserved memory).
    fn reserve(&mut self, base: u64, size: u64, what: &str) {
        let end = base.saturating_add(size);
        self.taken
            .push((base, size, format!("{what} [{base:#x}, {end:#x})"), false));
    }

    /// Records a placement.
    fn take(&mut self, base: u64, size: u64, what: &str) {
        self.taken.push((base, size, what.to_string(), true));
    }

    /// Forgets the placement at `base`.
    fn give_back(&mut self, base: u64) {
        self.taken.retain(|t| !(t.3 && t.0 == base));
    }

    /// Whether `[a, a + len)` lies in one RAM bank.
    fn in_ram(&self, a: u64, len: u64) -> bool {
        a.checked_add(len).is_some_and(|end| {
            self.ram
                .iter()
                .any(|&(b, sz)| a >= b && b.checked_add(sz).is_some_and(|e| end <= e))
        })
    }

    /// The first taken range `[a, a + len)` overlaps.
    fn conflict(&self, a: u64, len: u64) -> Option<(u64, u64)> {
        self.taken
            .iter()
            .find(|t| overlaps((a, len), (t.0, t.1)))
            .map(|t| (t.0, t.1))
    }

    /// What the loader placed that `[a, a + len)` overlaps.
    fn clash_placed(&self, a: u64, len: u64) -> Option<&str> {
        self.taken
            .iter()
            .find(|t| t.3 && overlaps((a, len), (t.0, t.1)))
            .map(|t| t.2.as_str())
    }

    /// The highest `align`-aligned address `a` with `a + len <= limit`,
    /// `[a, a + len)` in one bank and clear of everything taken.
    fn highest_below(&self, limit: u64, len: u64, align: u64) -> Option<u64> {
        let mut best = None;
        for &(base, size) in &self.ram {
            let mut top = base.saturating_add(size).min(limit);
            while let Some(a) = top.checked_sub(len).map(|a| a & !(align - 1)) {
                if a < base {
                    break;
                }
                match self.conflict(a, len) {
                    None => {
                        best = best.max(Some(a));
                        break;
                    }
                    // Below what is in the way (it starts under `top`).
                    Some((start, _)) => top = start,
                }
            }
        }
        best
    }

    /// The lowest `align`-aligned address `a >= from` with `[a, a + len)`
    /// in one bank and clear of everything taken.
    fn lowest_from(&self, from: u64, len: u64, align: u64) -> Option<u64> {
        let mut best: Option<u64> = None;
        for &(base, size) in &self.ram {
            let end = base.saturating_add(size);
            let mut at = from.max(base);
            while let Some(a) = at.checked_next_multiple_of(align) {
                if a.checked_add(len).is_none_or(|e| e > end) {
                    break;
                }
                match self.conflict(a, len) {
                    None => {
                        best = Some(best.map_or(a, |b| b.min(a)));
                        break;
                    }
                    // Above what is in the way (it ends past `a`).
                    Some((start, sz)) => at = start.saturating_add(sz),
                }
            }
        }
        best
    }

    /// Why `what` of `len` bytes has no place, with the sizes involved.
    fn no_room(&self, what: &str, len: u64) -> String {
        let banks: Vec<String> = self
            .ram
            .iter()
            .map(|&(b, sz)| format!("{} KiB at {b:#x}", sz >> 10))
            .collect();
        let taken: Vec<String> = self
            .taken
            .iter()
            .map(|t| format!("{} ({} KiB)", t.2, t.1 >> 10))
            .collect();
        format!(
            "RAM is too small: no room for {what} ({len:#x} bytes, {} KiB) in RAM of {} (taken: {})",
            len.div_ceil(1024),
            banks.join(", "),
            if taken.is_empty() {
                "nothing".to_string()
            } else {
                taken.join(", ")
            }
        )
    }
}

/// Runs a scenario: places everything, emulates the head, boots.
pub fn run(s: &Scenario) -> Result<Outcome, ScenarioError> {
    match s.arch {
        ArchKind::Arm64 => run_arch::<Arm64>(s, Regime::Arm64El2 { pa_bits: 48 }).map(|(o, _)| o),
        ArchKind::Arm32 => run_arch::<Arm32>(s, Regime::Arm32Hyp).map(|(o, _)| o),
    }
}

/// Runs an arm64 scenario ([`run`]) and hands back the memory manager in
/// Active too, for tests of what runs after the boot (`None` when the boot
/// failed or the scenario ran the SMP stress, which consumes it).
pub fn run_arm64_keep(s: &Scenario) -> Result<(Outcome, Option<crate::Mm<Arm64>>), ScenarioError> {
    if s.arch != ArchKind::Arm64 {
        return Err(ScenarioError("run_arm64_keep runs arm64 scenarios".into()));
    }
    run_arch::<Arm64>(s, Regime::Arm64El2 { pa_bits: 48 })
}

fn run_arch<F: HasLayout>(
    s: &Scenario,
    regime: Regime,
) -> Result<(Outcome, Option<crate::Mm<F>>), ScenarioError> {
    let err = |m: String| ScenarioError(m);
    if s.cpus == 0 || s.cpus > crate::mm::MAX_CPUS {
        return Err(err(format!(
            "--smp must be 1..={}, not {}",
            crate::mm::MAX_CPUS,
            s.cpus
        )));
    }
    if s.ram.is_empty() {
        return Err(err("no RAM banks".into()));
    }
    if !s.directmap && F::LAYOUT.mapcache.is_none() {
        return Err(err(format!(
            "--no-directmap: the secret-free mode exists on arm64 only ({} has no direct map; its xenheap stays mapped)",
            F::NAME
        )));
    }
    let img = s.image.unwrap_or(ImageLayout::model());
    let mut m = Machine::new(regime, s.cpus);
    for &(base, size) in &s.ram {
        if base % PAGE_SIZE != 0 || size % PAGE_SIZE != 0 || size == 0 {
            return Err(err(format!(
                "RAM bank {base:#x}+{size:#x} is empty or not page aligned"
            )));
        }
        if base
            .checked_add(size)
            .is_none_or(|e| e > 1u64 << F::PA_BITS)
        {
            return Err(err(format!(
                "RAM bank {base:#x}+{size:#x} is beyond the {}-bit PA space",
                F::PA_BITS
            )));
        }
        m.add_ram(Paddr(base), size)
            .map_err(|e| err(format!("RAM bank {base:#x}+{size:#x}: {e}")))?;
    }
    let bank0 = s.ram[0];
    let top = s
        .ram
        .iter()
        .max_by_key(|b| b.0 + b.1)
        .copied()
        .unwrap_or(bank0);
    let top_end = top.0 + top.1;
    let mut placer = Placer::new(&s.ram);
    // Loaders keep clear of reserved memory (U-Boot's and UEFI's memory
    // maps hold it); a placement given by hand is left to the hypervisor
    // to refuse.
    for r in &s.reserved {
        placer.reserve(r.base, r.size, "reserved memory");
    }
    // A DTB at PA 0 reads as "no DTB" (a null x0 / r2): nothing goes there.
    placer.reserve(0, PAGE_SIZE, "page 0");

    // Image.
    let image_size = img.size();
    let load = match (s.load_addr, s.loader) {
        (Some(a), _) => a,
        // Near the top of RAM, below some headroom for the firmware: 64 MiB
        // of it, or half the top bank when that is smaller.
        (None, Loader::Grub) => {
            let headroom = (64 * MIB).min(top.1 / 2);
            placer
                .highest_below(top_end - headroom + image_size, image_size, PAGE_SIZE)
                .or_else(|| placer.highest_below(u64::MAX, image_size, PAGE_SIZE))
                .ok_or_else(|| err(placer.no_room("the image", image_size)))?
        }
        (None, _) => {
            let want = bank0.0
                + if s.arch == ArchKind::Arm32 {
                    0x1_0000
                } else {
                    2 * MIB
                };
            placer
                .lowest_from(want, image_size, PAGE_SIZE)
                .or_else(|| placer.lowest_from(0, image_size, PAGE_SIZE))
                .ok_or_else(|| err(placer.no_room("the image", image_size)))?
        }
    };
    if load % PAGE_SIZE != 0 {
        return Err(err(format!("load address {load:#x} is not 4 KiB aligned")));
    }
    if !placer.in_ram(load, image_size) {
        return Err(err(format!(
            "the image ({image_size:#x} bytes) does not fit in RAM at {load:#x}"
        )));
    }
    placer.take(load, image_size, "the image");

    // U-Boot style with modules: the DTB's slot is chosen first (its size
    // is known only once the module nodes are in it; Xen takes at most
    // MAX_FDT_SIZE), so that the modules keep clear of it. When RAM has no
    // such slot, the DTB goes wherever it fits after the modules.
    let dtb_slot_len = match &s.dtb_override {
        Some(d) => align_up((d.len() as u64).max(1), 2 * MIB).max(MAX_FDT_SIZE),
        None => MAX_FDT_SIZE,
    };
    let uboot_dtb = match (s.dtb_addr, s.loader) {
        (None, Loader::Uboot) if !s.modules.is_empty() => {
            let want = bank0.0 + 0x0800_0000.min(bank0.1 / 2);
            let slot = placer
                .lowest_from(want, dtb_slot_len, 2 * MIB)
                .or_else(|| placer.highest_below(u64::MAX, dtb_slot_len, 2 * MIB));
            if let Some(a) = slot {
                placer.take(a, dtb_slot_len, "the DTB");
            }
            slot
        }
        _ => None,
    };

    // Modules.
    let mut placement = Placement {
        image: load,
        ..Default::default()
    };
    let mods: &[ModuleFile] = if s.loader == Loader::Direct {
        &[]
    } else {
        &s.modules
    };
    // GRUB: each module right below the previous one (the first below the
    // image); U-Boot: upwards on 2 MiB boundaries from 144 MiB into the
    // first bank (or its middle).
    let mut next = match s.loader {
        Loader::Grub => load,
        _ => bank0.0 + 0x0900_0000.min(bank0.1 / 2),
    };
    for md in mods {
        let len = (md.data.len() as u64).max(1);
        let addr = match (md.addr, s.loader) {
            (Some(a), _) => a,
            (None, Loader::Grub) => {
                let a = placer
                    .highest_below(next, len, PAGE_SIZE)
                    .or_else(|| placer.highest_below(u64::MAX, len, PAGE_SIZE))
                    .ok_or_else(|| err(placer.no_room(&format!("module {}", md.name), len)))?;
                next = a;
                a
            }
            (None, _) => {
                let a = placer
                    .lowest_from(next, len, 2 * MIB)
                    .or_else(|| placer.lowest_from(0, len, 2 * MIB))
                    .or_else(|| placer.lowest_from(0, len, PAGE_SIZE))
                    .ok_or_else(|| err(placer.no_room(&format!("module {}", md.name), len)))?;
                next = a + len;
                a
            }
        };
        if !placer.in_ram(addr, len) && !s.allow_overlaps {
            return Err(err(format!(
                "module {} ({len} bytes) does not fit in RAM at {addr:#x}",
                md.name
            )));
        }
        if let Some(u) = placer.clash_placed(addr, len) {
            if !s.allow_overlaps {
                return Err(err(format!(
                    "module {} at {addr:#x} would overlap {u}",
                    md.name
                )));
            }
        }
        if placer.in_ram(addr, len) {
            m.phys_write(Paddr(addr), &md.data)
                .map_err(|e| err(format!("writing module {}: {e}", md.name)))?;
        }
        placer.take(addr, len, "a module");
        placement
            .modules
            .push((addr, md.data.len() as u64, md.kind));
    }

    // DTB.
    let mut board = VirtBoard::new();
    if s.arch == ArchKind::Arm32 {
        board = board.arm32();
    }
    for &(b, sz) in &s.ram {
        board = board.ram(b, sz);
    }
    for r in &s.reserved {
        board = match r.source {
            ReservedSource::MemReserve => board.memreserve(r.base, r.size),
            ReservedSource::ReservedMemory => board.reserved_memory_with(r.base, r.size, r.no_map),
        };
    }
    board = board.cpus(s.cpus as u32).xen_bootargs(&s.bootargs);
    for &(addr, len, kind) in placement.modules.iter() {
        let compat: &[&str] = match (s.loader, kind) {
            (Loader::Grub, _) | (_, ModuleKind::Unknown) => &["multiboot,module"],
            (_, ModuleKind::Kernel) => &["multiboot,kernel", "multiboot,module"],
            (_, ModuleKind::Ramdisk) => &["multiboot,ramdisk", "multiboot,module"],
            (_, ModuleKind::XsmPolicy) => &["xen,xsm-policy", "multiboot,module"],
            (_, ModuleKind::GuestDtb) => &["multiboot,device-tree", "multiboot,module"],
            (_, ModuleKind::Microcode) => &["multiboot,microcode", "multiboot,module"],
        };
        board = board.module_with(addr, len, compat, None);
    }
    let dtb = match &s.dtb_override {
        Some(d) => d.clone(),
        None => board
            .try_build()
            .map_err(|e| err(format!("building the DTB: {e}")))?,
    };
    let dtb_len = dtb.len() as u64;
    let dtb_addr = match (s.dtb_addr, uboot_dtb) {
        (Some(a), _) => a,
        (None, Some(slot)) => {
            if dtb_len > dtb_slot_len {
                return Err(err(format!(
                    "the DTB is {dtb_len} bytes, more than the {dtb_slot_len} set aside for it"
                )));
            }
            // The slot was taken for the DTB: free it for the check below.
            placer.give_back(slot);
            slot
        }
        // GRUB: below the modules, else above the image; the others: 128
        // MiB into the first bank, else at its top; else anywhere.
        (None, None) => match s.loader {
            Loader::Grub => placer
                .highest_below(next, dtb_len, PAGE_SIZE)
                .or_else(|| placer.lowest_from(load + image_size, dtb_len, 2 * MIB)),
            _ => placer
                .lowest_from(bank0.0 + 0x0800_0000, dtb_len, 2 * MIB)
                .or_else(|| placer.highest_below(bank0.0 + bank0.1, dtb_len, 2 * MIB)),
        }
        .or_else(|| placer.highest_below(u64::MAX, dtb_len, PAGE_SIZE))
        .ok_or_else(|| err(placer.no_room("the DTB", dtb_len)))?,
    };
    if !placer.in_ram(dtb_addr, dtb_len) {
        return Err(err(format!(
            "the DTB ({dtb_len} bytes) does not fit in RAM at {dtb_addr:#x}"
        )));
    }
    if let Some(u) = placer.clash_placed(dtb_addr, dtb_len) {
        return Err(err(format!("the DTB at {dtb_addr:#x} would overlap {u}")));
    }
    m.phys_write(Paddr(dtb_addr), &dtb)
        .map_err(|e| err(format!("writing the DTB: {e}")))?;
    placement.dtb = (dtb_addr, dtb_len);

    let mut log = String::new();
    for note in &s.notes {
        log.push_str(&format!("loader: {note}\n"));
    }
    // The head.
    if let Err(e) = head::<F>(&mut m, Paddr(load), &img) {
        log.push_str(&format!("hvmm head: {e}\n"));
        return Ok((
            Outcome {
                log,
                result: Err(Failed {
                    error: crate::report::BootError {
                        step: crate::report::BootStep::ImageDiscovery,
                        state: hvmm::SystemState::EarlyBoot,
                        message: crate::report::heapless_list::Text::from_fmt(format_args!(
                            "head: {e}"
                        )),
                        fault: None,
                    },
                    summary: BootSummary::default(),
                }),
                machine: m,
                placement,
                stale: Vec::new(),
                bbm: Vec::new(),
                root_switches: Vec::new(),
                conflicts: Vec::new(),
                dom0_two_stage: None,
                stress: None,
                mapcache_held: Vec::new(),
            },
            None,
        ));
    }

    let mut cfg = BootConfig {
        cpus: s.cpus,
        access: s.access,
        pa: s.pa,
        pa_bits: F::PA_BITS,
        inject: s.inject,
        table_limit: s.table_limit.map(Paddr),
        dom0: s.dom0,
        directmap: s.directmap,
        audit: s.audit,
        ..Default::default()
    };
    for (slot, va) in cfg.dumps.iter_mut().zip(&s.dumps) {
        *slot = Some(Vaddr(*va));
    }
    let params = BootParams {
        dtb: Paddr(dtb_addr),
        image: img,
        devices: [
            Some(crate::audit::PlatformDevice {
                name: "console",
                va: hvmm_xen::layout::fixmap_va(FIXMAP_CONSOLE),
                pa: Paddr(UART_PA),
                size: PAGE_SIZE,
            }),
            None,
        ],
    };
    let mut dom0_two_stage = None;
    let mut mapcache_held = Vec::new();
    let mut kept = None;
    let (result, stress) = match crate::seq::boot_keep::<F, Machine>(
        &mut m, &params, &cfg, &mut log,
    ) {
        Ok((summary, mm)) => {
            if mm.secret_free() {
                mapcache_held = slots_held(&mut m, &mm, s.cpus);
                // The model's own check (not a line the boot prints on
                // hardware, where the image reports CPU 0's slots).
                log.push_str(&if mapcache_held.is_empty() {
                    format!("model: secret-free: no mapcache slot held on any of the {} CPU(s) after the boot\n", s.cpus)
                } else {
                    format!("model: secret-free: mapcache slots still held (CPU, slots): {mapcache_held:?}\n")
                });
            }
            dom0_two_stage = check_dom0_two_stage(&mut m, &mm);
            match &dom0_two_stage {
                Some(Ok(n)) => log.push_str(&format!(
                    "(XEN) dom0: {n} guest pages checked by two-stage translation on the model (AT S12E1R, its stage 2 live on CPU 0)\n"
                )),
                Some(Err(e)) => log.push_str(&format!("(XEN) dom0 two-stage check FAILED: {e}\n")),
                None => {}
            }
            let stress = if s.stress_iterations > 0 {
                Some(run_stress::<F>(&mut m, mm, s.cpus, s.stress_iterations))
            } else {
                kept = Some(mm);
                None
            };
            match &stress {
                Some(Ok(r)) => log.push_str(&format!(
                    "(XEN) SMP stress: {} CPUs x {} iterations: {} updates, {} translations checked, {} domain-page maps, no inconsistency\n",
                    r.cpus, r.iterations, r.updates, r.checks, r.domain_maps
                )),
                Some(Err(e)) => log.push_str(&format!("(XEN) SMP stress FAILED: {e}\n")),
                None => {}
            }
            (Ok(summary), stress)
        }
        Err(f) => (Err(f), None),
    };
    let stale = m.all_stale_tlb_entries();
    let bbm = m.bbm_violations().to_vec();
    let root_switches = m.root_switch_hazards().to_vec();
    let conflicts = m.tlb_conflicts().to_vec();
    Ok((
        Outcome {
            log,
            result,
            machine: m,
            placement,
            stale,
            bbm,
            root_switches,
            conflicts,
            stress,
            dom0_two_stage,
            mapcache_held,
        },
        kept,
    ))
}

/// The CPUs whose mapcache holds slots now, each read on its own CPU (a
/// CPU's slot table is mapped in its root only).
fn slots_held<F: HasLayout>(
    m: &mut Machine,
    mm: &crate::Mm<F>,
    cpus: usize,
) -> Vec<(usize, usize)> {
    let was = m.current_cpu();
    let mut held = Vec::new();
    for cpu in 0..cpus {
        let Some(mc) = mm.mapcache(cpu) else {
            held.push((cpu, usize::MAX));
            continue;
        };
        let _ = m.set_current_cpu(cpu);
        match mc.held(m) {
            Ok(0) => {}
            Ok(n) => held.push((cpu, n)),
            Err(_) => held.push((cpu, usize::MAX)),
        }
    }
    let _ = m.set_current_cpu(was);
    held
}

/// Why the head refused to start.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeadError {
    /// The image is larger than the 8 MiB it must fit in.
    TooLarge(u64),
    /// Not 4 KiB aligned.
    Misaligned(Paddr),
    /// Beyond the PA size of the architecture.
    BeyondPa(Paddr),
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::TooLarge(n) => write!(
                f,
                "image of {n} bytes does not fit in {XEN_VIRT_SIZE} bytes"
            ),
            HeadError::Misaligned(pa) => write!(f, "image load address {pa} is not 4 KiB aligned"),
            HeadError::BeyondPa(pa) => write!(
                f,
                "image load address {pa} is beyond the physical address size"
            ),
        }
    }
}

impl core::error::Error for HeadError {}

fn phys_write_pte(m: &mut Machine, table: Paddr, idx: usize, val: u64) {
    let _ = m.phys_write_u64(Paddr(table.0 + idx as u64 * 8), val);
}

/// Offset in the image of the page the head turns the MMU on from (and
/// identity-maps for that): the first page, unless the image is loaded less
/// than its size above its link address, where the first page's identity
/// VA would be a page of the image itself; then the last page, whose
/// identity VA lies past the image's link range.
pub fn idmap_page_offset(load: Paddr, img: &ImageLayout) -> u64 {
    let d = load.0.wrapping_sub(img.start.0);
    if d != 0 && d < img.size() {
        img.size() - PAGE_SIZE
    } else {
        0
    }
}

/// Emulates the head with the MMU off, as the bare-metal heads do it: the
/// boot tables (the image at its link address with 4 KiB pages and the
/// runtime permissions, exactly the image), a one-page identity map of the
/// MMU-enable page (see [`idmap_page_offset`]) in tables of its own below the
/// first level where its walk leaves the image's tables, the record
/// secondary CPUs use (`StaticTables::idmap_record`), then MMU on, a fetch
/// through the identity map and one at the link address, the identity map
/// removed (with a local invalidation), the fixmap L3 linked and its console
/// slot set. Any 4 KiB-aligned load address inside the PA size works.
pub fn head<F: Format>(m: &mut Machine, load: Paddr, img: &ImageLayout) -> Result<(), HeadError> {
    if !load.is_aligned(PAGE_SIZE) {
        return Err(HeadError::Misaligned(load));
    }
    if img.size() > XEN_VIRT_SIZE {
        return Err(HeadError::TooLarge(img.size()));
    }
    if load
        .0
        .checked_add(img.size())
        .is_none_or(|e| e > 1u64 << F::PA_BITS)
    {
        return Err(HeadError::BeyondPa(load));
    }
    let link = img.start.0;
    let pa = |va: Vaddr| Paddr(load.0 + (va.0 - link));
    let t = img.tables;
    // Boot tables, as the heads lay them out: the root, (arm64) its L1 on
    // the next page, the L2, the image's L3s after it, then the identity
    // map's tables, one per level below the root.
    let root = pa(t.boot_root);
    let l2 = pa(t.boot_l2);
    let l3 = |i: u64| Paddr(l2.0 + (1 + i) * PAGE_SIZE);
    let id_table = |level: u8| {
        let n = 1 + IMAGE_L3_TABLES as u64 + u64::from(level - F::ROOT_LEVEL - 1);
        Paddr(l2.0 + n * PAGE_SIZE)
    };
    let page = |i: u64| Paddr(root.0 + i * PAGE_SIZE);
    let table = |p: Paddr| Pte::table::<F>(p.mfn()).0;
    if F::ROOT_LEVEL == 0 {
        phys_write_pte(m, root, table_index(link, 0), table(page(1)));
        phys_write_pte(m, page(1), table_index(link, 1), table(l2));
    } else {
        phys_write_pte(m, root, table_index(link, 1), table(l2));
    }
    for i in 0..img.size().div_ceil(MIB2) {
        phys_write_pte(m, l2, table_index(link + i * MIB2, 2), table(l3(i)));
    }
    for s in &img.sections {
        let attrs = match s.perm {
            Perm::Rx => Attrs::RX,
            Perm::Ro => Attrs::RO,
            Perm::Rw => Attrs::RW,
        };
        let mut va = s.start.0;
        while va < s.end.0 {
            let i = (va - link) / MIB2;
            let pte = Pte::leaf::<F>(3, pa(Vaddr(va)), attrs, false).0;
            phys_write_pte(m, l3(i), table_index(va, 3), pte);
            va += PAGE_SIZE;
        }
    }

    // The identity map of the MMU-enable page: follow the image's tables
    // while the walk shares them, then tables of its own. Its first entry
    // written is the one removed afterwards (and put back for secondaries).
    let id = load.0 + idmap_page_offset(load, img);
    let id_pte = Pte::leaf::<F>(3, Paddr(id), Attrs::RX, false).0;
    let mut slot: Option<(Paddr, u64)> = None;
    if id != link + idmap_page_offset(load, img) {
        let mut tbl = root;
        for level in F::ROOT_LEVEL..=3 {
            let idx = table_index(id, level);
            let at = Paddr(tbl.0 + idx as u64 * 8);
            let cur = m.phys_read_u64(at).unwrap_or(0);
            if level == 3 {
                // The chosen page's VA is never one the image maps.
                debug_assert_eq!(cur, 0, "identity page on an image page");
                slot.get_or_insert((at, id_pte));
                phys_write_pte(m, tbl, idx, id_pte);
            } else if cur & Pte::VALID != 0 {
                tbl = Paddr(cur & F::oa_mask());
            } else {
                let fresh = id_table(level + 1);
                slot.get_or_insert((at, table(fresh)));
                phys_write_pte(m, tbl, idx, table(fresh));
                tbl = fresh;
            }
        }
    }
    // The record: the entry's link VA (0: none), its value, the page's PA.
    let slot_va = |at: Paddr| Vaddr(link + (at.0 - load.0));
    let rec = pa(t.idmap_record);
    let (sv, val) = slot.map_or((0, 0), |(at, v)| (slot_va(at).0, v));
    let _ = m.phys_write_u64(rec, sv);
    let _ = m.phys_write_u64(Paddr(rec.0 + 8), val);
    let _ = m.phys_write_u64(Paddr(rec.0 + 16), id);

    let _ = m.set_root(0, root);
    m.tlb_flush_all_local();
    let _ = m.enable_mmu(0, true);
    // The instruction after the SCTLR write is fetched through the identity
    // map; the branch lands at the link address.
    let _ = m.fetch_u32(Vaddr(id));
    let _ = m.fetch_u32(img.start);
    if sv != 0 {
        let _ = m.write_pte(Vaddr(sv), 0);
        m.tlb_flush_all_local();
    }
    // Fixmap: its L3 is shared with the runtime tables; slot 0 is the UART.
    let fixmap_l3 = pa(t.fixmap_l3);
    phys_write_pte(
        m,
        fixmap_l3,
        FIXMAP_CONSOLE,
        Pte::leaf::<F>(3, Paddr(UART_PA), Attrs::DEVICE, false).0,
    );
    let fixmap_slot = Vaddr(t.boot_l2.0 + table_index(FIXMAP_ADDR.0, 2) as u64 * 8);
    let _ = m.write_pte(fixmap_slot, table(fixmap_l3));
    Ok(())
}

/// How a secondary CPU gets from reset (MMU off) to its runtime root.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SecondaryStart {
    /// hvmm's sequence: MMU on with the boot tables (identity entry put back
    /// by the starter), at the link address the CPU itself removes the
    /// identity entry and invalidates its TLB, so that it caches nothing
    /// the runtime tables map otherwise; then the root switch and a local
    /// invalidation.
    BreakBeforeMake,
    /// The sequence before it (kept as the negative case): the root is
    /// switched with the identity entry still live and cached, and the
    /// starter removes it afterwards.
    SwitchWithIdentity,
}

/// Emulates a secondary CPU's start, as `start_one` and the head do it on
/// hardware, with `how` (see [`SecondaryStart`]): the boot tables' identity
/// entry is put back, the CPU turns its MMU on with the boot tables, runs
/// through the identity page to the link address, and switches to `root`.
/// Returns whether it then maps the image. The current CPU stays the
/// caller's.
pub fn start_secondary(
    m: &mut Machine,
    cpu: usize,
    root: Paddr,
    t: &StaticTables,
    how: SecondaryStart,
) -> Result<(), &'static str> {
    let me = m.current_cpu();
    // Once the image's tables are sealed (arm64) the boot-table entry is
    // written by physical address, as the image writes it through a
    // mapcache slot.
    let put = |m: &mut Machine, va: u64, val: u64| {
        if m.write_pte(Vaddr(va), val).is_err() {
            if let Ok(r) = m.hw_translate(Vaddr(va), false) {
                let _ = m.phys_write_u64(r.pa, val);
            }
        }
    };
    let rec = t.idmap_record;
    let word = |m: &mut Machine, off: u64| m.read_u64(Vaddr(rec.0 + off));
    let (slot, val, id) = match (word(m, 0), word(m, 8), word(m, 16)) {
        (Ok(s), Ok(v), Ok(i)) => (s, v, i),
        _ => return Err("the head's identity-map record does not read"),
    };
    let boot_root = m
        .hw_translate(t.boot_root, false)
        .map_err(|_| "the boot tables are not mapped")?
        .pa;
    if slot != 0 {
        match m.read_u64(Vaddr(slot)) {
            Ok(0) => {}
            Ok(v) if v == val => {}
            _ => return Err("the identity-map entry of the boot tables is in use"),
        }
        put(m, slot, val);
    }
    m.set_current_cpu(cpu)
        .map_err(|_| "no such CPU in the model")?;
    let _ = m.enable_mmu(cpu, false);
    let _ = m.set_root(cpu, boot_root);
    m.tlb_flush_all_local();
    let _ = m.enable_mmu(cpu, true);
    let _ = m.fetch_u32(Vaddr(id));
    let _ = m.fetch_u32(XEN_VIRT_START);
    if slot != 0 && how == SecondaryStart::BreakBeforeMake {
        put(m, slot, 0);
        m.tlb_flush_all_local();
    }
    let _ = m.set_root(cpu, root);
    m.tlb_flush_all_local();
    let _ = Machine::set_wxn(m, cpu, true);
    let ok = m.hw_translate(XEN_VIRT_START, false).is_ok();
    let _ = m.set_current_cpu(me);
    if slot != 0 && how == SecondaryStart::SwitchWithIdentity {
        put(m, slot, 0);
        m.tlb_flush_all_local();
    }
    if ok {
        Ok(())
    } else {
        Err("its MMU does not map the image")
    }
}

/// What a board's device tree says about memory, read as the hypervisor
/// reads it ([`MemoryMap`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Board {
    /// RAM banks (base, size), empty ones left out.
    pub banks: Vec<(u64, u64)>,
    /// How many banks of size zero the tree has (placeholders a loader
    /// fills at boot).
    pub empty_banks: usize,
    /// Reserved ranges.
    pub reserved: Vec<ReservedRegion>,
}

/// Reads a board's device tree (`--dtb`): its RAM and reserved memory. No
/// RAM is not an error here (see [`Scenario::use_board`]).
pub fn board_from_dtb(dtb: &[u8], pa_bits: u32) -> Result<Board, ScenarioError> {
    let map = MemoryMap::parse(dtb, pa_bits).map_err(|e| ScenarioError(e.to_string()))?;
    Ok(Board {
        banks: map
            .ram_banks()
            .iter()
            .map(|b| (b.base().0, b.size()))
            .collect(),
        empty_banks: map.empty_banks(),
        reserved: map
            .reserved()
            .iter()
            .map(|r| ReservedRegion {
                base: r.range.base().0,
                size: r.range.size(),
                source: r.source,
                no_map: r.no_map,
            })
            .collect(),
    })
}

fn ranges(banks: &[(u64, u64)]) -> String {
    let v: Vec<String> = banks
        .iter()
        .map(|&(b, sz)| format!("[{b:#x}, {:#x})", b.saturating_add(sz)))
        .collect();
    v.join(" ")
}

impl Scenario {
    /// Boots on `board`'s memory: its reserved ranges, and its RAM unless
    /// `ram` is given. Given RAM replaces the tree's `/memory` (or supplies
    /// it when the tree has none, or only empty banks) the way U-Boot's
    /// memory fix-up does before it starts a hypervisor; a note in the log
    /// says so. Without `ram`, a tree with no RAM is refused with a message
    /// that says how to give it. Reserved ranges not wholly inside RAM are
    /// kept (as U-Boot and Xen keep them: they reserve no RAM) and noted.
    pub fn use_board(
        &mut self,
        board: &Board,
        ram: Option<Vec<(u64, u64)>>,
    ) -> Result<(), ScenarioError> {
        let had = if board.banks.is_empty() {
            match board.empty_banks {
                0 => "no /memory node".to_string(),
                n => format!("only {n} empty RAM bank(s)"),
            }
        } else {
            format!("/memory {}", ranges(&board.banks))
        };
        match ram {
            Some(ram) => {
                self.notes.push(format!(
                    "the device tree has {had}; --ram {} {} it, as U-Boot's memory fix-up does",
                    ranges(&ram),
                    if board.banks.is_empty() {
                        "supplies"
                    } else {
                        "replaces"
                    }
                ));
                self.ram = ram;
            }
            None if board.banks.is_empty() => {
                return Err(ScenarioError(format!(
                    "the device tree has {had}: its loader fills /memory at boot; give the board's RAM with --ram SIZE@BASE (as U-Boot's memory fix-up would)"
                )));
            }
            None => self.ram = board.banks.clone(),
        }
        self.reserved = board.reserved.clone();
        for r in &self.reserved {
            let (start, end) = (r.base, r.base.saturating_add(r.size));
            let inside = self.ram.iter().any(|&(b, sz)| start >= b && end <= b + sz);
            let touches = self.ram.iter().any(|&b| overlaps(b, (r.base, r.size)));
            if !inside {
                self.notes.push(format!(
                    "{} lies {} RAM: kept as the tree has it (it reserves no RAM there)",
                    r.describe(),
                    if touches { "partly outside" } else { "outside" }
                ));
            }
        }
        Ok(())
    }
}
