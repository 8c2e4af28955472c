//! The boot sequence (SPEC §5), one code path for hardware and the model.
//!
//! It starts where the head leaves off: MMU on, running at the link address on
//! the boot tables, the fixmap L3 linked, BSS zeroed. Every step logs what it
//! did; a failure names the step and the state and leaves the summary of what
//! happened up to there.

use crate::image::{ImageLayout, Section};
use crate::mm::{AccessPolicy, Mm, MAX_CPUS};
use crate::platform::Platform;
use crate::report::heapless_list::Text;
use crate::report::{
    BootError, BootStep, BootSummary, InjectionPoints, ModuleFact, RegionFact, ReservedFact,
};
use core::fmt::{self, Write};
use hvmm::format::Pte;
use hvmm::phase::{DirectMap, ImageRange};
use hvmm::{
    Attrs, Error, LinearRange, MapFlags, MemFault, Op, Paddr, Perm, SystemState, Vaddr, PAGE_SIZE,
};
use hvmm_bootinfo::{BootInfo, ModuleKind, ModuleReader, ParseParams};
use hvmm_xen::layout::{HasLayout, BOOT_FDT_VIRT_START, MAX_FDT_SIZE, XEN_VIRT_START};

const MIB2: u64 = 2 << 20;
const GIB: u64 = 1 << 30;
/// Bytes of frametable per frame (Xen's `struct page_info`).
pub const PAGE_INFO_SIZE: u64 = 32;

/// How physical addresses of image pages are derived in `setup_pagetables`.
/// Anything but `Translate` reproduces a historical bug, for tests.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum PaPolicy {
    /// From the image range found by hardware translation.
    #[default]
    Translate,
    /// Xen 4.13 arm32: `phys_offset = PA - VA` computed in 32 bits and stored
    /// zero-extended in a 64-bit physical address.
    Xen2019ZeroExtendedOffset,
}

/// A fault to inject: the `n`-th (0-based) request of one kind fails
/// (feature `test-hooks`).
#[cfg(feature = "test-hooks")]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FailPoint {
    /// A boot-allocator (or page-allocator) request: allocation or reservation.
    Alloc(u64),
    /// A PMAP slot acquisition.
    Pmap(u64),
    /// A fixmap slot acquisition (`set_fixmap`).
    Fixmap(u64),
}

/// What the caller chooses about a boot.
#[derive(Copy, Clone, Debug)]
pub struct BootConfig {
    /// CPUs to bring up (1..=[`MAX_CPUS`]).
    pub cpus: usize,
    /// Table-access behaviour.
    pub access: AccessPolicy,
    /// Physical-address derivation.
    pub pa: PaPolicy,
    /// Physical-address size of the machine.
    pub pa_bits: u32,
    /// VAs whose walk to print at the end (Xen's `dump_hyp_walk`).
    pub dumps: [Option<Vaddr>; 4],
    /// Ranges the firmware reserved (UEFI memory map), kept out of the allocator.
    pub firmware_reserved: [Option<(Paddr, u64)>; 8],
    /// Fault injection (tests; feature `test-hooks`).
    #[cfg(feature = "test-hooks")]
    pub inject: Option<FailPoint>,
    /// Take page-table pages only from below this address (a workaround for
    /// emulators whose arm32 walker cannot reach tables above 4 GiB).
    pub table_limit: Option<Paddr>,
    /// Build domain 0 from the boot modules once Active.
    pub dom0: Option<crate::domain::Dom0Config>,
    /// arm64: map all RAM in the direct map (the default). `false` is the
    /// secret-free mode (`hvmm boot --no-directmap`, `hvmm.directmap=off`):
    /// no RAM mapped but the image, the frametable, the DTB and what a step
    /// holds in its CPU's mapcache slots; each CPU on its own root. arm32
    /// has no direct map: `false` is refused there.
    pub directmap: bool,
    /// What the end-of-boot audit enforces beyond its fixed rules, and a
    /// violation to plant before it (tests, `hvmm.audit-plant=`).
    pub audit: AuditConfig,
}

/// The audit's mode-dependent rules (see [`crate::audit`]).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditConfig {
    /// No page-table page may be writable through a permanent mapping
    /// (the secret-free mode's rule; the direct-map mode breaks it).
    pub tables_not_writable: bool,
    /// An allowed RAM set (start, size) given by the caller: no RAM may be
    /// mapped outside it (a mode may declare its own set as well).
    pub allowed_ram: [Option<(Paddr, u64)>; 4],
    /// Plant this violation before the audit, to see it caught.
    pub plant: Option<crate::audit::Plant>,
}

impl Default for BootConfig {
    fn default() -> Self {
        BootConfig {
            cpus: 1,
            access: AccessPolicy::Correct,
            pa: PaPolicy::Translate,
            pa_bits: 48,
            dumps: [None; 4],
            firmware_reserved: [None; 8],
            #[cfg(feature = "test-hooks")]
            inject: None,
            table_limit: None,
            dom0: None,
            directmap: true,
            audit: AuditConfig::default(),
        }
    }
}

/// Where the boot begins.
#[derive(Copy, Clone, Debug)]
pub struct BootParams {
    /// The DTB's physical address (x0 / r2 at entry).
    pub dtb: Paddr,
    /// The image's layout.
    pub image: ImageLayout,
    /// Devices the platform mapped before the boot sequence (the console
    /// in fixmap slot 0): the audit allows device memory for them only.
    pub devices: [Option<crate::audit::PlatformDevice>; 2],
}

/// A failed boot: the error and what was established before it.
#[derive(Debug)]
pub struct Failed {
    /// What went wrong.
    pub error: BootError,
    /// What was done until then.
    pub summary: BootSummary,
}

struct Ctx<'l, F: HasLayout> {
    step: BootStep,
    state: SystemState,
    log: &'l mut dyn Write,
    summary: BootSummary,
    _f: core::marker::PhantomData<F>,
}

impl<F: HasLayout> Ctx<'_, F> {
    fn fail(&self, msg: fmt::Arguments<'_>, fault: Option<MemFault>) -> BootError {
        BootError {
            step: self.step,
            state: self.state,
            message: Text::from_fmt(msg),
            fault,
        }
    }
    fn engine(&self, what: &str, e: Error) -> BootError {
        let fault = match e {
            Error::Fault(f) => Some(f),
            Error::TableAccess {
                err: hvmm::AccessError::Fault(f),
                ..
            } => Some(f),
            _ => None,
        };
        self.fail(format_args!("{what}: {e}"), fault)
    }
}

macro_rules! log {
    ($ctx:expr, $($t:tt)*) => {{ let _ = writeln!($ctx.log, $($t)*); }};
}

/// Boots: runs every step from `setup_pagetables` to Active and verifies the
/// result by hardware translation.
pub fn boot<F: HasLayout, P: Platform>(
    p: &mut P,
    params: &BootParams,
    cfg: &BootConfig,
    log: &mut dyn Write,
) -> Result<BootSummary, Failed> {
    boot_keep::<F, P>(p, params, cfg, log).map(|(summary, _)| summary)
}

/// [`boot`], also handing back the memory manager in
/// [`SystemState::Active`] for what runs after the boot.
pub fn boot_keep<F: HasLayout, P: Platform>(
    p: &mut P,
    params: &BootParams,
    cfg: &BootConfig,
    log: &mut dyn Write,
) -> Result<(BootSummary, Mm<F>), Failed> {
    let mut ctx = Ctx::<F> {
        step: BootStep::ImageDiscovery,
        state: SystemState::EarlyBoot,
        log,
        summary: BootSummary {
            arch: F::NAME,
            dtb_pa: params.dtb,
            ..Default::default()
        },
        _f: core::marker::PhantomData,
    };
    match run::<F, P>(p, params, cfg, &mut ctx) {
        Ok(mm) => Ok((ctx.summary, mm)),
        Err(error) => {
            log!(ctx, "(XEN) PANIC: {error}");
            if let Some(f) = error.fault {
                log!(ctx, "(XEN)   {f}");
                log!(
                    ctx,
                    "(XEN)   syndrome {:#010x}, faulting VA {}",
                    f.syndrome(),
                    f.va
                );
            }
            Err(Failed {
                error,
                summary: ctx.summary,
            })
        }
    }
}

fn record_phases<F: HasLayout>(ctx: &mut Ctx<'_, F>, mm: &mut Mm<F>) {
    ctx.summary.phases = mm.phases;
    ctx.summary.injection_points = InjectionPoints {
        alloc: mm.alloc.allocations(),
        pmap: mm.pmap_mut().acquisitions(),
        fixmap: mm.fixmap_sets,
    };
    ctx.summary.pmap_in_use = mm.pmap_in_use();
    ctx.summary.highest_table = mm.highest_table;
}

fn enter<F: HasLayout, P: Platform>(p: &mut P, ctx: &mut Ctx<'_, F>, s: SystemState) {
    p.entered(s);
    ctx.state = s;
    log!(ctx, "(XEN) ---- system state: {s} ----");
}

fn run<F: HasLayout, P: Platform>(
    p: &mut P,
    params: &BootParams,
    cfg: &BootConfig,
    ctx: &mut Ctx<'_, F>,
) -> Result<Mm<F>, BootError> {
    let img = &params.image;
    log!(ctx, "(XEN) hvmm {} starting on CPU {}", F::NAME, p.cpu());
    enter(p, ctx, SystemState::EarlyBoot);

    // 1. Where are we? Hardware translation of the first and last byte.
    let image = ImageRange::discover(p, img.start, img.end)
        .map_err(|e| ctx.fail(format_args!("{e}"), None))?;
    ctx.summary.image_pa = Some(image.0.pa);
    ctx.summary.image_size = img.size();
    log!(
        ctx,
        "(XEN) image linked at {} loaded at {} ({} KiB), found by address translation; PA - VA = {}{:#x}",
        img.start,
        image.0.pa,
        img.size() / 1024,
        if image.0.phys_minus_virt() < 0 { "-" } else { "" },
        image.0.phys_minus_virt().unsigned_abs()
    );

    log_layout::<F>(ctx, cfg.directmap);

    // 2. Runtime page tables.
    ctx.step = BootStep::SetupPagetables;
    let mut mm = setup_pagetables::<F, P>(p, img, image, cfg, ctx)?;
    let result = run_with_mm(p, params, cfg, image, &mut mm, ctx);
    // Whatever happened, the summary shows the counts up to here.
    record_phases(ctx, &mut mm);
    result.map(|()| mm)
}

fn run_with_mm<F: HasLayout, P: Platform>(
    p: &mut P,
    params: &BootParams,
    cfg: &BootConfig,
    image: ImageRange,
    mm: &mut Mm<F>,
    ctx: &mut Ctx<'_, F>,
) -> Result<(), BootError> {
    let img = &params.image;
    record_phases(ctx, mm);

    // 3. Early FDT mapping.
    ctx.step = BootStep::EarlyFdtMap;
    let (fdt_bytes, fdt_size) = early_fdt_map(p, mm, params.dtb, ctx)?;

    // 4. Boot information.
    ctx.step = BootStep::BootFdtInfo;
    let mut copies = Copies::new();
    let info = {
        let mut reader = Reader {
            mm,
            p,
            fault: None,
            err: None,
            copies: &mut copies,
        };
        let pp = ParseParams {
            pa_bits: cfg.pa_bits,
            image: (image.0.pa, img.size()),
            dtb: (params.dtb, fdt_size),
        };
        match BootInfo::parse(fdt_bytes.as_ref(), &pp, &mut reader) {
            Ok(info) => info,
            Err(e) => {
                let fault = reader.fault;
                let detail = reader.err;
                return Err(match detail {
                    Some(err) => ctx.engine("reading a module through the fixmap", err),
                    None => ctx.fail(format_args!("{e}"), fault),
                });
            }
        }
    };
    record_phases(ctx, mm);
    log_boot_info(ctx, &info, &copies);

    // 5. Memory.
    ctx.step = BootStep::SetupMm;
    let t = params.image.tables;
    let image_tables = (
        image.0.pa_of(t.first).unwrap_or(Paddr(0)).0,
        image.0.pa_of(Vaddr(t.last.0 - 1)).map_or(0, |pa| pa.0 + 1),
    );
    setup_mm::<F, P>(p, mm, &info, cfg, (params.dtb, fdt_size), image_tables, ctx)?;
    record_phases(ctx, mm);

    ctx.step = BootStep::Frametable;
    setup_frametable::<F, P>(p, mm, &info, ctx)?;
    record_phases(ctx, mm);

    ctx.step = BootStep::EndBootAllocator;
    mm.end_boot_allocator();
    log!(
        ctx,
        "(XEN) boot allocator ended: {} free pages handed to the page allocator",
        mm.alloc.free_pages()
    );

    ctx.step = BootStep::Vmap;
    let vmap = F::LAYOUT.vmap;
    mm.update(
        p,
        vmap.start,
        MIB2 / PAGE_SIZE,
        Op::Populate,
        MapFlags::PAGES,
    )
    .map_err(|e| ctx.engine("populating the vmap area", e))?;
    log!(
        ctx,
        "(XEN) vmap: {}..{:#x}, first 2 MiB of tables populated",
        vmap.start,
        vmap.end()
    );
    record_phases(ctx, mm);

    // 6. Secondary CPUs.
    ctx.step = BootStep::SmpBringUp;
    mm.enter_smp_boot();
    enter(p, ctx, SystemState::SmpBoot);
    bring_up_cpus::<F, P>(p, mm, img, cfg, ctx)?;
    record_phases(ctx, mm);

    // 7. Init memory.
    ctx.step = BootStep::FreeInitMem;
    free_init_memory::<F, P>(p, mm, img, image, ctx)?;
    if mm.tables_in_slots() {
        seal_image_tables(p, mm, img, ctx)?;
    }
    mm.enter_active();
    enter(p, ctx, SystemState::Active);
    record_phases(ctx, mm);

    // 8. Proof: sampled regions by address translation, then every leaf
    // of every root against what the boot declared.
    let mapped = ctx.summary.regions.clone();
    ctx.step = BootStep::Verify;
    verify::<F, P>(p, mm, img, ctx)?;
    for va in cfg.dumps.iter().flatten() {
        let mut out = DumpSink {
            out: &mut *ctx.log,
            line_start: true,
        };
        if let Err(e) = mm.dump_hyp_walk(p, *va, &mut out) {
            log!(ctx, "(XEN) dump of {va} failed: {e}");
        }
    }
    ctx.summary.state = Some(SystemState::Active);
    if let Some(dcfg) = cfg.dom0 {
        ctx.step = BootStep::Dom0;
        construct_dom0::<F, P>(p, mm, &info, fdt_bytes.as_ref(), &dcfg, ctx)?;
    }
    // Last, once the guest exists: its stage-2 pool is held to the table
    // rule too.
    ctx.step = BootStep::Audit;
    audit::<F, P>(p, mm, params, cfg, image, &info, &mapped, ctx)?;
    ctx.summary.free_pages = mm.alloc.free_pages();
    record_phases(ctx, mm);
    log_phase_table(ctx);
    log!(
        ctx,
        "(XEN) hvmm: reached Active with {} CPU(s)",
        ctx.summary.cpus
    );
    Ok(())
}

/// The whole-address-space audit ([`crate::audit`]): declares what the
/// boot mapped (from the layout and the boot's facts), plants a violation
/// when asked to, walks every root and logs the verdict.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn audit<F: HasLayout, P: Platform>(
    p: &mut P,
    mm: &mut Mm<F>,
    params: &BootParams,
    cfg: &BootConfig,
    image: ImageRange,
    info: &BootInfo<'_>,
    mapped: &crate::report::heapless_list::List<RegionFact, { crate::report::MAX_REGIONS }>,
    ctx: &mut Ctx<'_, F>,
) -> Result<(), BootError> {
    use crate::audit::{self, Declared};
    let mut banks = [(Paddr(0), 0u64); hvmm_bootinfo::MAX_RAM_BANKS];
    let mut n = 0;
    for (slot, b) in banks.iter_mut().zip(info.ram_banks().iter()) {
        *slot = (b.base(), b.size());
        n += 1;
    }
    let mut regions = [RegionFact {
        name: "",
        va: Vaddr(0),
        pa: Paddr(0),
        size: 0,
        writable: false,
        mair_attr: 0,
    }; crate::report::MAX_REGIONS];
    let mut nr = 0;
    for (slot, r) in regions.iter_mut().zip(mapped.iter()) {
        *slot = *r;
        nr += 1;
    }
    let mut d = Declared::for_boot::<F>(
        &params.image,
        image,
        params.dtb,
        &params.devices,
        &regions[..nr],
        &banks[..n],
        mm,
    );
    d.tables_not_writable = cfg.audit.tables_not_writable;
    if let Some(d0) = &mm.dom0 {
        d.table_pool(d0.pool_base, d0.pool_pages);
    }
    if mm.secret_free() {
        let dtb = info.dtb();
        declare_secret_free::<F>(&mut d, image, (dtb.base(), dtb.size()), &regions[..nr]);
    } else if mm.tables_in_slots() {
        declare_table_pool::<F>(&mut d);
    }
    for &(pa, size) in cfg.audit.allowed_ram.iter().flatten() {
        d.allow_ram(pa, size);
    }
    if let Some(plant) = cfg.audit.plant {
        audit::plant::<F, P>(p, mm, &params.image, &mut d, plant)
            .map_err(|e| ctx.engine("planting an audit violation", e))?;
        log!(
            ctx,
            "(XEN) audit: planted a violation ({}) to be caught",
            plant.rule()
        );
    }
    match audit::run::<F, P>(p, mm, &d) {
        Ok(r) => {
            ctx.summary.audit = Some(r);
            log!(ctx, "(XEN) {}", r.rules_line());
            log!(
                ctx,
                "(XEN) audit: {} regions declared, {} table maps; {} writable, {} executable, {} device, {} transient-slot pages; {} stack guards; {} table pages ({} of them guests' stage-2 pools), {} of them writable through a permanent mapping{}",
                r.regions,
                r.table_maps,
                r.writable_pages,
                r.exec_pages,
                r.device_pages,
                r.slot_pages,
                r.guards,
                r.table_pages,
                r.pool_pages,
                r.tables_writable,
                if r.tables_rule { "" } else { " (not a rule in this mode)" }
            );
            Ok(())
        }
        Err((e, r)) => {
            ctx.summary.audit = Some(r);
            Err(ctx.fail(format_args!("{e}"), None))
        }
    }
}

/// What the secret-free mode adds to the audit: the mapcache as transient
/// slots; an allowed RAM set of the image, the frametable and the DTB's
/// own pages (nothing else may be mapped: no free page, no module, no
/// guest memory); and the rule that no page-table page is writable through
/// a permanent mapping (the slot tables are written through their slots,
/// which are not permanent).
///
/// `dtb` is the DTB's range (start, size), `mapped` the regions the boot
/// mapped before its verification (the frametable's parts among them).
pub fn declare_secret_free<F: HasLayout>(
    d: &mut crate::audit::Declared,
    image: ImageRange,
    dtb: (Paddr, u64),
    mapped: &[RegionFact],
) {
    use crate::audit::Expect;
    if let Some(mc) = F::LAYOUT.mapcache {
        d.region(mc.name, mc.start, mc.size, Expect::Slots);
    }
    d.allow_ram(image.0.pa, image.0.size);
    for r in mapped.iter().filter(|r| r.name == "frametable") {
        d.allow_ram(r.pa, r.size);
    }
    let first = dtb.0 .0 & !(PAGE_SIZE - 1);
    let end = (dtb.0 .0 + dtb.1).next_multiple_of(PAGE_SIZE);
    d.allow_ram(Paddr(first), end - first);
    d.tables_not_writable = true;
}

/// What the arm64 direct-map mode and arm32 add to the audit: the mapcache
/// as transient slots (arm32's domain-page slots are declared as such in
/// every mode), and the rule that no page-table page is writable through a
/// permanent mapping (table frames come from the pool that the direct map
/// or the xenheap leaves out, the image's tables are sealed).
pub fn declare_table_pool<F: HasLayout>(d: &mut crate::audit::Declared) {
    use crate::audit::Expect;
    if let Some(mc) = F::LAYOUT.mapcache {
        d.region(mc.name, mc.start, mc.size, Expect::Slots);
    }
    d.tables_not_writable = true;
}

/// Builds domain 0, logs what it is, and checks every guest region
/// through its stage-2 table (IPA == PA, the attributes it was given).
fn construct_dom0<F: HasLayout, P: Platform>(
    p: &mut P,
    mm: &mut Mm<F>,
    info: &hvmm_bootinfo::BootInfo<'_>,
    dtb: &[u8],
    dcfg: &crate::domain::Dom0Config,
    ctx: &mut Ctx<'_, F>,
) -> Result<(), BootError> {
    use crate::domain::Placement;
    use hvmm::{Ipa, S2Attrs};
    log!(ctx, "(XEN) *** LOADING DOMAIN 0 ***");
    let d = crate::domain::build_dom0::<F, P>(p, mm, info, dtb, dcfg)
        .map_err(|e| ctx.fail(format_args!("{e}"), None))?;
    let guest = <F::Guest as hvmm::Format>::NAME;
    log!(
        ctx,
        "(XEN) dom0: RAM {}..{:#x} ({} MiB, IPA == PA), {}, stage 2 {guest} root {}",
        Paddr(d.ram.ipa),
        d.ram.ipa + d.ram.size,
        d.ram.size >> 20,
        d.vmid,
        d.p2m.root().paddr()
    );
    log!(
        ctx,
        "(XEN) dom0: kernel at {} ({} bytes), entry {}; device tree at {} ({} bytes)",
        Paddr(d.kernel.ipa),
        d.kernel.size,
        Paddr(d.entry),
        Paddr(d.dtb.ipa),
        d.dtb.size
    );
    if let Some(i) = d.initrd {
        log!(
            ctx,
            "(XEN) dom0: initrd at {} ({} bytes)",
            Paddr(i.ipa),
            i.size
        );
    }
    for dev in d.devices() {
        log!(
            ctx,
            "(XEN) dom0: device {}..{:#x} (Device-nGnRE)",
            Paddr(dev.ipa),
            dev.ipa + dev.size
        );
    }
    let used = d.pool_pages - d.pool_free();
    // The stage 2's shape: blocks and pages over the RAM bank.
    let (mut blocks, mut pages) = (0u64, 0u64);
    let p2m = &d.p2m;
    mm.with_access(p, |p, mut acc| {
        p2m.for_each_leaf_with(
            p,
            &mut acc,
            Ipa(d.ram.ipa),
            d.ram.size / PAGE_SIZE,
            |_, _, l| {
                if l.level < 3 {
                    blocks += 1;
                } else {
                    pages += 1;
                }
            },
        )
    })
    .map_err(|e| ctx.engine("walking dom0's stage 2", e))?;
    log!(
        ctx,
        "(XEN) dom0: stage-2 pool {used}/{} pages, {} leaves written ({blocks} blocks and {pages} pages over its RAM), {} table maps",
        d.pool_pages,
        d.report.leaves,
        d.report.table_maps
    );
    // The proof: every 2 MiB of RAM, each end of the kernel, the tree, the
    // initrd and the devices translate IPA == PA with their attributes.
    let mut checks: [(u64, S2Attrs); 64] = [(0, S2Attrs::RAM); 64];
    let mut n = 0;
    let mut add = |ipa: u64, a: S2Attrs| {
        if n < checks.len() {
            checks[n] = (ipa, a);
            n += 1;
        }
    };
    let step = (d.ram.size / 48).next_multiple_of(PAGE_SIZE).max(PAGE_SIZE);
    let mut at = d.ram.ipa;
    while at < d.ram.ipa + d.ram.size {
        add(at, S2Attrs::RAM);
        at += step;
    }
    let last = |pl: Placement| (pl.ipa + pl.size.max(1) - 1) & !(PAGE_SIZE - 1);
    for pl in [d.kernel, d.dtb].into_iter().chain(d.initrd) {
        add(pl.ipa, S2Attrs::RAM);
        add(last(pl), S2Attrs::RAM);
    }
    for dev in d.devices() {
        add(dev.ipa, S2Attrs::DEVICE);
    }
    let p2m = &d.p2m;
    for &(ipa, want) in &checks[..n] {
        let leaf = mm
            .with_access(p, |p, mut acc| p2m.lookup(p, &mut acc, Ipa(ipa)))
            .map_err(|e| ctx.engine("checking dom0's stage 2", e))?;
        match leaf {
            Some(l) if l.pa == Paddr(ipa) && l.attrs == Some(want) => {}
            other => {
                return Err(ctx.fail(
                    format_args!("dom0 IPA {ipa:#x} translates to {other:?}, not itself as {want}"),
                    None,
                ))
            }
        }
    }
    log!(
        ctx,
        "(XEN) dom0: {n} guest pages checked through its stage 2"
    );
    ctx.summary.dom0 = Some(crate::report::Dom0Fact {
        ram: (Paddr(d.ram.ipa), d.ram.size),
        kernel: (Paddr(d.kernel.ipa), d.kernel.size),
        entry: Paddr(d.entry),
        dtb: (Paddr(d.dtb.ipa), d.dtb.size),
        initrd: d.initrd.map_or((Paddr(0), 0), |i| (Paddr(i.ipa), i.size)),
        devices: d.devices_len,
        p2m_root: d.p2m.root().paddr(),
        vmid: d.vmid.0,
        pool_used: used,
        pool_pages: d.pool_pages,
        leaves: d.report.leaves,
        checked_pages: n as u64,
    });
    mm.dom0 = Some(d);
    Ok(())
}

fn log_layout<F: HasLayout>(ctx: &mut Ctx<'_, F>, directmap: bool) {
    log!(ctx, "(XEN) virtual layout ({}):", F::NAME);
    let l = F::LAYOUT;
    let arch_regions = [
        Some(l.frametable),
        Some(l.vmap),
        l.xenheap,
        l.domheap,
        l.directmap.filter(|_| directmap),
        l.mapcache.filter(|_| !directmap),
    ];
    for r in hvmm_xen::layout::Layout::COMMON
        .iter()
        .chain(arch_regions.iter().flatten())
    {
        log!(
            ctx,
            "(XEN)   {:<11} {:#018x} - {:#018x}",
            r.name,
            r.start.0,
            r.end() - 1
        );
    }
}

/// Prefixes every line written through it with "(XEN) ".
struct DumpSink<'a> {
    out: &'a mut dyn Write,
    line_start: bool,
}

impl Write for DumpSink<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for ch in s.chars() {
            if self.line_start && ch != '\n' {
                self.out.write_str("(XEN) ")?;
            }
            self.line_start = ch == '\n';
            self.out.write_char(ch)?;
        }
        Ok(())
    }
}

/// The image-relative PA of `va` under the chosen policy.
fn image_pa(image: ImageRange, policy: PaPolicy, va: Vaddr) -> Option<Paddr> {
    match policy {
        PaPolicy::Translate => image.0.pa_of(va),
        PaPolicy::Xen2019ZeroExtendedOffset => {
            // What Xen 4.13 arm32 did: a 32-bit subtraction stored in a
            // 64-bit paddr_t without sign extension.
            let off32 = (image.0.pa.0 as u32).wrapping_sub(image.0.va.0 as u32);
            Some(Paddr(va.0.wrapping_add(u64::from(off32))))
        }
    }
}

fn setup_pagetables<F: HasLayout, P: Platform>(
    p: &mut P,
    img: &ImageLayout,
    image: ImageRange,
    cfg: &BootConfig,
    ctx: &mut Ctx<'_, F>,
) -> Result<Mm<F>, BootError> {
    let t = img.tables;
    let pa_of = |va: Vaddr| image_pa(image, cfg.pa, va);
    let root_pa = pa_of(t.root)
        .ok_or_else(|| ctx.fail(format_args!("root table outside the image"), None))?;
    log!(ctx, "(XEN) runtime root table {} at {}", t.root, root_pa);
    // SAFETY: one boot, one memory manager over the image's runtime root.
    let mut mm = unsafe { Mm::<F>::new(root_pa.mfn(), image, t.fixmap_l3, cfg.access) };
    if let Some(limit) = cfg.table_limit {
        mm.alloc.table_limit = Some(limit.mfn());
        log!(
            ctx,
            "(XEN) page-table pages are taken from below {limit} only"
        );
    }
    #[cfg(feature = "test-hooks")]
    match cfg.inject {
        Some(FailPoint::Alloc(n)) => mm.alloc.set_fail_at(Some(n)),
        Some(FailPoint::Pmap(n)) => mm.pmap_mut().set_fail_at(Some(n)),
        Some(FailPoint::Fixmap(n)) => mm.set_fail_fixmap_at(Some(n)),
        None => {}
    }
    mm.alloc.pin(image.0.pa, Paddr(image.0.pa.0 + img.size()));

    // Static links: root -> (L1) -> L2 -> {image L3, fixmap L3}. These tables
    // live in the image and are fresh; nothing can have cached them.
    let link =
        |p: &mut P, table: Vaddr, va: Vaddr, level: u8, child: Vaddr| -> Result<(), BootError> {
            let child_pa = pa_of(child)
                .ok_or_else(|| ctx.fail(format_args!("static table outside the image"), None))?;
            let idx = hvmm::format::table_index(va.0, level) as u64;
            p.write_pte(Vaddr(table.0 + idx * 8), Pte::table::<F>(child_pa.mfn()).0)
                .map_err(|f| ctx.fail(format_args!("writing a static table link faulted"), Some(f)))
        };
    let l2_parent = match t.l1 {
        Some(l1) if F::ROOT_LEVEL == 0 => {
            link(p, t.root, XEN_VIRT_START, 0, l1)?;
            l1
        }
        _ => t.root,
    };
    link(p, l2_parent, XEN_VIRT_START, 1, t.l2)?;
    // One L3 per 2 MiB of the image, exactly the image (as the boot tables).
    for i in 0..img.size().div_ceil(MIB2) {
        let va = Vaddr(XEN_VIRT_START.0 + i * MIB2);
        link(p, t.l2, va, 2, Vaddr(t.image_l3.0 + i * PAGE_SIZE))?;
    }
    link(p, t.l2, hvmm_xen::layout::FIXMAP_ADDR, 2, t.fixmap_l3)?;

    // Per-section permissions, through the engine (every table is in the image).
    for s in img.sections.iter().filter(|s| s.end > s.start) {
        let pa = pa_of(s.start)
            .ok_or_else(|| ctx.fail(format_args!("section outside the image"), None))?;
        let attrs = Attrs::new(hvmm::MemType::Normal, s.perm).map_err(|e| ctx.engine(s.name, e))?;
        // The section in the runs between the stacks' guard pages, which
        // stay unmapped.
        let mut at = s.start.0;
        while at < s.end.0 {
            let guard = (0..img.stacks.cpus)
                .map(|c| img.stacks.guard(c).0)
                .filter(|&g| g >= at && g < s.end.0)
                .min()
                .unwrap_or(s.end.0);
            if guard > at {
                let run_pa = Paddr(pa.0 + (at - s.start.0));
                let op = Op::Insert { pa: run_pa, attrs };
                mm.update(p, Vaddr(at), (guard - at) / PAGE_SIZE, op, MapFlags::PAGES)
                    .map_err(|e| ctx.engine(s.name, e))?;
            }
            at = guard + PAGE_SIZE;
        }
        log!(
            ctx,
            "(XEN)   {:<6} {}..{:#x} -> {} {}",
            s.name,
            s.start,
            s.end.0,
            pa,
            s.perm
        );
    }
    log!(
        ctx,
        "(XEN)   guard  {} pages below the CPUs' stacks ({}..{:#x}) left unmapped",
        img.stacks.cpus,
        img.stacks.first,
        img.stacks.end().0
    );
    // The console's fixmap entry was written by the head in the shared L3.
    // Every mapping the boot tables hold (the image, the fixmap) is here with
    // the same sizes, addresses and attributes: nothing this CPU cached
    // conflicts with the new tables.
    p.switch_root(root_pa);
    p.set_wxn(true);
    // The boot tables now serve secondary CPUs only, which need the image
    // and the identity page alone: unlink the fixmap there (no CPU runs on
    // them, so there is nothing to invalidate), so that the identity entry
    // may use its slot.
    let boot_fixmap = Vaddr(
        t.boot_l2.0 + hvmm::format::table_index(hvmm_xen::layout::FIXMAP_ADDR.0, 2) as u64 * 8,
    );
    p.write_pte(boot_fixmap, 0).map_err(|f| {
        ctx.fail(
            format_args!("unlinking the fixmap from the boot tables faulted"),
            Some(f),
        )
    })?;
    log!(
        ctx,
        "(XEN) runtime page tables live: root {} ({} table maps, all through the image), WXN on",
        root_pa,
        mm.phases[0].access.total()
    );
    // From here every access to the image goes through the new tables: a
    // wrong PA shows up as a fault on the next table read.
    Ok(mm)
}

fn early_fdt_map<F: HasLayout, P: Platform>(
    p: &mut P,
    mm: &mut Mm<F>,
    dtb: Paddr,
    ctx: &mut Ctx<'_, F>,
) -> Result<(P::Bytes, u64), BootError> {
    if dtb.0 == 0 || !dtb.is_aligned(8) {
        return Err(ctx.fail(
            format_args!("no usable DTB: address {dtb} is null or not 8-byte aligned"),
            None,
        ));
    }
    let base = Paddr(dtb.0 & !(MIB2 - 1));
    let off = dtb.0 - base.0;
    mm.update(
        p,
        BOOT_FDT_VIRT_START,
        2 * MIB2 / PAGE_SIZE,
        Op::Insert {
            pa: base,
            attrs: Attrs::RO,
        },
        MapFlags::BLOCKS,
    )
    .map_err(|e| ctx.engine("mapping the DTB", e))?;
    let va = Vaddr(BOOT_FDT_VIRT_START.0 + off);
    let header = p
        .map_bytes(va, 8)
        .map_err(|f| ctx.fail(format_args!("reading the DTB header"), Some(f)))?;
    let h = header.as_ref();
    let magic = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    let size = u64::from(u32::from_be_bytes([h[4], h[5], h[6], h[7]]));
    if magic != 0xd00d_feed {
        return Err(ctx.fail(
            format_args!("no DTB at {dtb}: bad magic {magic:#010x}"),
            None,
        ));
    }
    if !(40..=MAX_FDT_SIZE).contains(&size) {
        return Err(ctx.fail(
            format_args!("DTB at {dtb} has an impossible size of {size} bytes"),
            None,
        ));
    }
    let bytes = p
        .map_bytes(va, size as usize)
        .map_err(|f| ctx.fail(format_args!("reading the DTB"), Some(f)))?;
    log!(
        ctx,
        "(XEN) DTB at {dtb} ({size} bytes) mapped read-only at {va} with 2 MiB blocks"
    );
    Ok((bytes, size))
}

/// The module reads of `boot_fdt_info`, for the log and the summary.
type Copies = hvmm_bootinfo::FixedVec<crate::mm::CopyRecord, { crate::report::MAX_COPIES }>;

struct Reader<'a, F: HasLayout, P: Platform> {
    mm: &'a mut Mm<F>,
    p: &'a mut P,
    fault: Option<MemFault>,
    err: Option<Error>,
    copies: &'a mut Copies,
}

impl<F: HasLayout, P: Platform> ModuleReader for Reader<'_, F, P> {
    type Error = ();
    fn read(&mut self, pa: Paddr, buf: &mut [u8]) -> Result<(), ()> {
        self.mm.copy_from_paddr(self.p, buf, pa).map_err(|e| {
            if let Error::Fault(f) = e {
                self.fault = Some(f);
            }
            self.err = Some(e);
        })?;
        // At most one read per module: the list holds them all.
        if let Some(c) = self.mm.last_copy.take() {
            let _ = self.copies.push(c);
        }
        Ok(())
    }
}

fn kind_name(k: ModuleKind) -> &'static str {
    match k {
        ModuleKind::Kernel => "kernel",
        ModuleKind::Ramdisk => "ramdisk",
        ModuleKind::XsmPolicy => "XSM policy",
        ModuleKind::GuestDtb => "guest device tree",
        ModuleKind::Microcode => "microcode",
        ModuleKind::Unknown => "unknown (not used)",
    }
}

fn log_boot_info<F: HasLayout>(ctx: &mut Ctx<'_, F>, info: &BootInfo<'_>, copies: &Copies) {
    for b in info.ram_banks().iter() {
        ctx.summary.banks.push((b.base(), b.size()));
        log!(
            ctx,
            "(XEN) RAM: {} - {:#018x} ({} MiB)",
            b.base(),
            b.end().0 - 1,
            b.size() >> 20
        );
    }
    let empty = info.memory().empty_banks();
    ctx.summary.empty_banks = empty;
    if empty > 0 {
        log!(
            ctx,
            "(XEN) {empty} RAM bank(s) of size zero skipped (placeholders a loader fills)"
        );
    }
    for r in info.reserved().iter() {
        let in_ram = info.memory().ram_covers(&r.range);
        ctx.summary.reserved.push(ReservedFact {
            start: r.range.base(),
            size: r.range.size(),
            source: r.source,
            no_map: r.no_map,
            in_ram,
        });
        let source = match (r.source, r.no_map) {
            (hvmm_bootinfo::ReservedSource::MemReserve, _) => "/memreserve/",
            (_, true) => "/reserved-memory, no-map",
            (_, false) => "/reserved-memory",
        };
        let where_ = if in_ram {
            ""
        } else if info.memory().ram_overlaps(&r.range) {
            ", partly outside RAM"
        } else {
            ", outside RAM"
        };
        log!(
            ctx,
            "(XEN) reserved: {} - {:#018x} ({source}{where_})",
            r.range.base(),
            r.range.end().0 - 1
        );
    }
    if let Some(args) = info.hypervisor_cmdline() {
        log!(ctx, "(XEN) command line: {args}");
    }
    for (i, m) in info.modules().iter().enumerate() {
        ctx.summary.modules.push(ModuleFact {
            start: m.range.base(),
            size: m.range.size(),
            kind: m.kind,
            source: m.source,
        });
        let how = match m.source {
            hvmm_bootinfo::KindSource::Typed => "typed",
            hvmm_bootinfo::KindSource::Guessed { read: false } => "guessed: first untyped",
            hvmm_bootinfo::KindSource::Guessed { read: true } => {
                "guessed by reading its first bytes"
            }
        };
        log!(
            ctx,
            "(XEN) module {i}: {} - {:#018x} {} ({how})",
            m.range.base(),
            m.range.end().0 - 1,
            kind_name(m.kind)
        );
    }
    for c in copies.iter() {
        ctx.summary
            .early_copies
            .push((c.pa, c.state, c.access.image, c.access.pmap));
        log!(
            ctx,
            "(XEN)   copy_from_paddr({}, {} bytes) in {} via fixmap slot 1: table maps image {} pmap {} directmap {} domain-page {}",
            c.pa,
            c.len,
            c.state,
            c.access.image,
            c.access.pmap,
            c.access.directmap,
            c.access.domain_page
        );
    }
}

fn setup_mm<F: HasLayout, P: Platform>(
    p: &mut P,
    mm: &mut Mm<F>,
    info: &BootInfo<'_>,
    cfg: &BootConfig,
    dtb: (Paddr, u64),
    image_tables: (u64, u64),
    ctx: &mut Ctx<'_, F>,
) -> Result<(), BootError> {
    // Boot allocator: RAM minus image, DTB, modules, reserved, firmware.
    // A filler for the fixed array; evaluated at compile time.
    const FILLER: hvmm_bootinfo::MemRange = match hvmm_bootinfo::MemRange::new(Paddr(0), PAGE_SIZE)
    {
        Some(r) => r,
        None => panic!("a one-page range at 0 is valid"),
    };
    let mut fw = [FILLER; 8];
    let mut nfw = 0;
    for (base, size) in cfg.firmware_reserved.iter().flatten() {
        if let Some(r) = hvmm_bootinfo::MemRange::new(*base, *size) {
            fw[nfw] = r;
            nfw += 1;
        }
    }
    let free = info
        .free_ranges(&fw[..nfw])
        .map_err(|e| ctx.fail(format_args!("{e}"), None))?;
    for r in free.iter() {
        mm.alloc
            .add(r.base(), r.end())
            .map_err(|e| ctx.fail(format_args!("{e}"), None))?;
    }
    log!(
        ctx,
        "(XEN) boot allocator: {} free pages in {} ranges",
        mm.alloc.free_pages(),
        free.len()
    );

    let banks = info.ram_banks();
    if !cfg.directmap {
        if F::LAYOUT.mapcache.is_none() {
            return Err(ctx.fail(
                format_args!(
                    "the secret-free mode (no direct map) exists on arm64 only: {} keeps its xenheap mapped",
                    F::NAME
                ),
                None,
            ));
        }
        return setup_mm_secret_free(p, mm, banks.len(), dtb, ctx);
    }
    if let Some(dm_region) = F::LAYOUT.directmap {
        // arm64: the table pool first — a 2 MiB chunk the direct map
        // leaves out, every table frame from now on taken from it — so
        // that no table page is writable through the direct map.
        let chunk = mm
            .alloc
            .alloc(crate::mm::POOL_CHUNK_PAGES, crate::mm::POOL_CHUNK_PAGES)
            .map_err(|e| ctx.fail(format_args!("no 2 MiB chunk for the table pool: {e}"), None))?;
        if !mm.set_table_pool(chunk) {
            return Err(ctx.fail(format_args!("the table pool could not be set up"), None));
        }
        let hole = (chunk.paddr().0, chunk.paddr().0 + MIB2);
        log!(
            ctx,
            "(XEN) table pool: {}..{:#x}, left out of the direct map",
            chunk.paddr(),
            hole.1
        );
        // Holes in the direct map: the pool, and the image's own tables
        // (reached at their link address until sealed, then through slots).
        let mut holes = [image_tables, hole];
        holes.sort_unstable();
        // Direct map of every bank, with blocks, tables through PMAP.
        // Banks are packed in address order, each at the first VA past the
        // previous one that is congruent to its PA modulo 1 GiB (so 1 GiB
        // blocks stay possible): the holes between banks take no VA, and
        // banks anywhere in the PA space are reached.
        let mut ranges = [LinearRange {
            va: Vaddr(0),
            pa: Paddr(0),
            size: 0,
        }; 8];
        let mut n = 0;
        let mut cursor = dm_region.start.0;
        for b in banks.iter() {
            let va = cursor + ((b.base().0 & (GIB - 1)).wrapping_sub(cursor) & (GIB - 1));
            if va + b.size() > dm_region.end() {
                return Err(ctx.fail(
                    format_args!(
                        "RAM bank {} ({} MiB) is beyond the direct map's reach: its {} GiB are full",
                        b.base(),
                        b.size() >> 20,
                        dm_region.size >> 30
                    ),
                    None,
                ));
            }
            if n == ranges.len() {
                return Err(ctx.fail(
                    format_args!("more than {} RAM banks to direct-map", ranges.len()),
                    None,
                ));
            }
            cursor = va + b.size();
            let va = Vaddr(va);
            // The bank in up to three pieces around the holes.
            let (start, end) = (b.base().0, b.end().0);
            let mut pieces = [(0u64, 0u64); 3];
            let mut at = start;
            for (piece, (hs, he)) in pieces.iter_mut().zip(holes) {
                let (hs, he) = (hs.clamp(at, end), he.clamp(at, end));
                *piece = (at, hs);
                at = he;
            }
            pieces[2] = (at, end);
            for (ps, pe) in pieces.into_iter().filter(|(s, e)| e > s) {
                let pva = Vaddr(va.0 + (ps - start));
                let r = mm
                    .update(
                        p,
                        pva,
                        (pe - ps) / PAGE_SIZE,
                        Op::Insert {
                            pa: Paddr(ps),
                            attrs: Attrs::RW,
                        },
                        MapFlags::BLOCKS,
                    )
                    .map_err(|e| ctx.engine("direct-mapping RAM", e))?;
                log!(
                    ctx,
                    "(XEN) directmap: {pva} -> {:#x} ({} MiB, {} leaf entries, {} new tables)",
                    ps,
                    (pe - ps) >> 20,
                    r.leaves,
                    r.tables_created
                );
                ctx.summary.regions.push(RegionFact {
                    name: "directmap",
                    va: pva,
                    pa: Paddr(ps),
                    size: pe - ps,
                    writable: true,
                    mair_attr: 0xff,
                });
            }
            ranges[n] = LinearRange {
                va,
                pa: b.base(),
                size: b.size(),
            };
            n += 1;
        }
        let dm = DirectMap::new(&ranges[..n])
            .ok_or_else(|| ctx.fail(format_args!("too many RAM banks for the direct map"), None))?;
        // Tables are reached through per-CPU mapcache slots, as in the
        // secret-free mode: CPU 0's built through PMAP now.
        let l1 = mm
            .build_mapcache(p)
            .map_err(|e| ctx.engine("building CPU 0's mapcache", e))?;
        let mc = mm
            .link_cpu0_mapcache(p, l1)
            .map_err(|e| ctx.engine("linking CPU 0's mapcache", e))?;
        log!(
            ctx,
            "(XEN) CPU 0's mapcache: {} slots of 4 KiB at {}: table pages are reached through it, not through the direct map",
            hvmm_xen::layout::MAPCACHE_SLOTS,
            mc.base()
        );
        log!(
            ctx,
            "(XEN) early boot used {} PMAP table maps and {} image table maps",
            mm.phases[0].access.pmap,
            mm.phases[0].access.image
        );
        mm.enter_boot_mapcache(mc, Some(dm));
    } else {
        // arm32: the xenheap, with 2 MiB contiguous blocks, in free RAM
        // (never over the image, the DTB or a module), as high as possible
        // below 4 GiB (as Xen does), else as high as possible; Xen's size:
        // 1/32 of the RAM, rounded up to 32 MiB, at least 32 MiB and at
        // most the area (1 GiB).
        let xh_region = F::LAYOUT
            .xenheap
            .ok_or_else(|| ctx.fail(format_args!("layout has no xenheap"), None))?;
        let align = 32 << 20;
        let ram: u64 = banks.iter().map(|b| b.size()).sum();
        let want = (ram / 32)
            .next_multiple_of(align)
            .clamp(align, xh_region.size);
        let mut free = [(0u64, 0u64); hvmm_xen::boot_alloc::MAX_RANGES];
        let mut n = 0;
        for (slot, (s, e)) in free.iter_mut().zip(mm.alloc.ranges()) {
            *slot = (s.0, e.0);
            n += 1;
        }
        let (start, end) = place_xenheap(&free[..n], want).ok_or_else(|| {
            ctx.fail(
                format_args!(
                    "the free RAM ({} ranges) is too small for a xenheap (needs 8 MiB aligned to 32 MiB)",
                    n
                ),
                None,
            )
        })?;
        let base = start;
        let mut xenheap = LinearRange {
            va: xh_region.start,
            pa: Paddr(start),
            size: end - start,
        };
        // The table pool first — a 2 MiB chunk outside the xenheap, every
        // table frame from now on taken from it — so that no table page is
        // writable through the xenheap. With no such chunk (a small machine
        // whose RAM is all xenheap), the xenheap ends below the highest
        // free 2 MiB inside it, which the pool takes.
        let pool_chunk = crate::mm::POOL_CHUNK_PAGES;
        let chunk = match crate::mm::alloc_outside(&mut mm.alloc, pool_chunk, pool_chunk, xenheap) {
            Ok(c) => c,
            Err(_) => {
                let hi = mm.alloc.table_limit.map_or(end, |l| end.min(l.paddr().0));
                let c = mm
                    .alloc
                    .alloc_below(pool_chunk, pool_chunk, Paddr(start).mfn(), Paddr(hi).mfn())
                    .map_err(|e| {
                        ctx.fail(
                            format_args!("no free 2 MiB chunk for the table pool: {e}"),
                            None,
                        )
                    })?;
                if c.paddr().0 - start < 4 * MIB2 {
                    let _ = mm.alloc.free_pages_at(c, pool_chunk);
                    return Err(ctx.fail(
                        format_args!(
                            "the RAM at {base:#x} is too small for a xenheap (needs 8 MiB aligned to 32 MiB) and a 2 MiB table pool"
                        ),
                        None,
                    ));
                }
                xenheap.size = c.paddr().0 - start;
                c
            }
        };
        let size = xenheap.size;
        if !mm.set_table_pool(chunk) {
            return Err(ctx.fail(
                format_args!("the table pool at {} cannot be set up", chunk.paddr()),
                None,
            ));
        }
        mm.update(
            p,
            xh_region.start,
            size / PAGE_SIZE,
            Op::Insert {
                pa: Paddr(start),
                attrs: Attrs::RW,
            },
            MapFlags::BLOCKS_2M_CONTIG,
        )
        .map_err(|e| ctx.engine("mapping the xenheap", e))?;
        ctx.summary.regions.push(RegionFact {
            name: "xenheap",
            va: xh_region.start,
            pa: Paddr(start),
            size,
            writable: true,
            mair_attr: 0xff,
        });
        log!(
            ctx,
            "(XEN) xenheap: {} -> {:#x} ({} MiB, 2 MiB blocks, contiguous hint)",
            xh_region.start,
            start,
            size >> 20
        );
        let root = mm.page_table().root();
        let dp = mm
            .build_domain_page(p, root)
            .map_err(|e| ctx.engine("building CPU 0's domain-page slots", e))?;
        log!(
            ctx,
            "(XEN) table pool: 2 MiB at {} outside the xenheap; CPU 0's {} domain-page slots written through its window at {}",
            chunk.paddr(),
            hvmm_xen::layout::DOMHEAP_SLOTS,
            hvmm_xen::layout::domheap_window_va(F::LAYOUT.domheap.map_or(Vaddr(0), |d| d.start))
        );
        mm.enter_boot_domain_page(dp, xenheap);
    }
    enter(p, ctx, SystemState::Boot);
    log!(
        ctx,
        "(XEN) page tables are now reached through {}",
        mm.path_name()
    );
    Ok(())
}

/// arm64 without a direct map: the early FDT mapping trimmed to the DTB's
/// own pages, then CPU 0's mapcache slot tables, built through PMAP and
/// linked into its root; tables are reached through the slots from now
/// on, and RAM is mapped only while a step holds a slot.
fn setup_mm_secret_free<F: HasLayout, P: Platform>(
    p: &mut P,
    mm: &mut Mm<F>,
    banks: usize,
    dtb: (Paddr, u64),
    ctx: &mut Ctx<'_, F>,
) -> Result<(), BootError> {
    // The early FDT window mapped the 2 MiB blocks around the DTB (no
    // allocator then for a level-3 table): keep only the DTB's own pages.
    // Nothing reads the DTB meanwhile; its pages keep their VAs.
    let base = dtb.0 .0 & !(MIB2 - 1);
    let first = (dtb.0 .0 - base) & !(PAGE_SIZE - 1);
    let last = (dtb.0 .0 - base + dtb.1).next_multiple_of(PAGE_SIZE);
    for (from, to) in [(0, first), (last, 2 * MIB2)] {
        if to > from {
            mm.update(
                p,
                Vaddr(BOOT_FDT_VIRT_START.0 + from),
                (to - from) / PAGE_SIZE,
                Op::Remove,
                MapFlags::PAGES,
            )
            .map_err(|e| ctx.engine("trimming the DTB mapping to its own pages", e))?;
        }
    }
    log!(
        ctx,
        "(XEN) secret-free: DTB mapping trimmed to its {} pages",
        (last - first) / PAGE_SIZE
    );
    let l1 = mm
        .build_mapcache(p)
        .map_err(|e| ctx.engine("building CPU 0's mapcache", e))?;
    let mc = mm
        .link_cpu0_mapcache(p, l1)
        .map_err(|e| ctx.engine("linking CPU 0's mapcache", e))?;
    log!(
        ctx,
        "(XEN) secret-free: no direct map of the {banks} RAM bank(s); CPU 0's mapcache: {} slots of 4 KiB at {}, given back at once",
        hvmm_xen::layout::MAPCACHE_SLOTS,
        mc.base()
    );
    log!(
        ctx,
        "(XEN) early boot used {} PMAP table maps and {} image table maps",
        mm.phases[0].access.pmap,
        mm.phases[0].access.image
    );
    mm.enter_boot_mapcache(mc, None);
    ctx.summary.secret_free = true;
    enter(p, ctx, SystemState::Boot);
    log!(
        ctx,
        "(XEN) page tables are now reached through {}",
        mm.path_name()
    );
    Ok(())
}

/// Where arm32's xenheap goes, as `(start, end)`: inside one free range
/// (`free`, sorted), its start aligned to 32 MiB and its end to 2 MiB, at
/// least 8 MiB and at most `want`; the largest such place, below 4 GiB if
/// there is one, the highest among equals. `None` if no range can hold 8
/// MiB that way.
pub fn place_xenheap(free: &[(u64, u64)], want: u64) -> Option<(u64, u64)> {
    const ALIGN: u64 = 32 << 20;
    let best = |limit: u64| {
        free.iter()
            .filter_map(|&(s, e)| {
                let e = e.min(limit) & !(MIB2 - 1);
                let len = e.checked_sub(s)?;
                let start = (e - len.min(want)).div_ceil(ALIGN) * ALIGN;
                (start < e && e - start >= 4 * MIB2).then_some((start, e))
            })
            .max_by_key(|&(s, e)| (e - s, e))
    };
    best(1 << 32).or_else(|| best(u64::MAX))
}

/// End of boot: the image's own tables become read-only in the image
/// mapping (reached through the per-CPU slots from now on).
fn seal_image_tables<F: HasLayout, P: Platform>(
    p: &mut P,
    mm: &mut Mm<F>,
    img: &ImageLayout,
    ctx: &mut Ctx<'_, F>,
) -> Result<(), BootError> {
    let t = img.tables;
    let pages = (t.last.0 - t.first.0) / PAGE_SIZE;
    mm.seal_image_tables(p, t.first, pages)
        .map_err(|e| ctx.engine("making the image's tables read-only", e))?;
    log!(
        ctx,
        "(XEN) image tables {}..{:#x} read-only: every table page is written through a {} slot",
        t.first,
        t.last.0,
        if F::LAYOUT.domheap.is_some() {
            "domain-page"
        } else {
            "mapcache"
        }
    );
    Ok(())
}

/// The frametable, built per RAM bank: each bank's page-info structures
/// (32 bytes per frame, Xen's `struct page_info`) follow the previous
/// bank's in the frametable area, rounded to 2 MiB, so the holes between
/// banks take neither VA nor memory; each part is taken from its own bank
/// when it can be (else from anywhere) and mapped with blocks.
fn setup_frametable<F: HasLayout, P: Platform>(
    p: &mut P,
    mm: &mut Mm<F>,
    info: &BootInfo<'_>,
    ctx: &mut Ctx<'_, F>,
) -> Result<(), BootError> {
    let ft = F::LAYOUT.frametable;
    let mut va = ft.start.0;
    let mut frames_all = 0u64;
    let mut kib_all = 0u64;
    let mut first_pa = None;
    let banks = info.ram_banks();
    for b in banks.iter() {
        let frames = b.size() / PAGE_SIZE;
        let bytes = (frames * PAGE_INFO_SIZE).div_ceil(MIB2) * MIB2;
        if va + bytes > ft.end() {
            return Err(ctx.fail(
                format_args!(
                    "frametable of the bank at {} ({} MiB) does not fit its {} MiB area",
                    b.base(),
                    bytes >> 20,
                    ft.size >> 20
                ),
                None,
            ));
        }
        let pages = bytes / PAGE_SIZE;
        let (lo, hi) = (b.base().mfn(), b.end().mfn());
        let mfn = mm
            .alloc
            .alloc_below(pages, MIB2 / PAGE_SIZE, lo, hi)
            .or_else(|_| mm.alloc.alloc(pages, MIB2 / PAGE_SIZE))
            .or_else(|_| mm.alloc.alloc(pages, 1))
            .map_err(|e| ctx.fail(format_args!("frametable: {e}"), None))?;
        mm.update(
            p,
            Vaddr(va),
            pages,
            Op::Insert {
                pa: mfn.paddr(),
                attrs: Attrs::RW,
            },
            MapFlags::BLOCKS,
        )
        .map_err(|e| ctx.engine("mapping the frametable", e))?;
        p.zero_range(Vaddr(va), bytes)
            .map_err(|f| ctx.fail(format_args!("zeroing the frametable"), Some(f)))?;
        ctx.summary.regions.push(RegionFact {
            name: "frametable",
            va: Vaddr(va),
            pa: mfn.paddr(),
            size: bytes,
            writable: true,
            mair_attr: 0xff,
        });
        if banks.len() > 1 {
            log!(
                ctx,
                "(XEN) frametable: {} -> {} ({} KiB for the {frames} frames of the bank at {})",
                Vaddr(va),
                mfn.paddr(),
                bytes >> 10,
                b.base()
            );
        }
        first_pa.get_or_insert(mfn.paddr());
        va += bytes;
        frames_all += frames;
        kib_all += bytes >> 10;
    }
    log!(
        ctx,
        "(XEN) frametable: {} -> {} ({} KiB for {frames_all} frames)",
        ft.start,
        first_pa.unwrap_or(Paddr(0)),
        kib_all
    );
    Ok(())
}

fn bring_up_cpus<F: HasLayout, P: Platform>(
    p: &mut P,
    mm: &mut Mm<F>,
    img: &ImageLayout,
    cfg: &BootConfig,
    ctx: &mut Ctx<'_, F>,
) -> Result<(), BootError> {
    let n = cfg.cpus.clamp(1, MAX_CPUS);
    ctx.summary.cpus = 1;
    let root_pa = mm.page_table().root().paddr();
    for cpu in 1..n {
        let root = if mm.tables_in_slots() {
            mm.add_cpu_root(p, cpu)
                .map_err(|e| ctx.engine("building a secondary CPU's root and slots", e))?
        } else {
            root_pa
        };
        p.start_cpu(cpu, root, &img.tables)
            .map_err(|e| ctx.fail(format_args!("CPU {cpu} did not come up: {e}"), None))?;
        mm.set_cpu_root(cpu, root.mfn());
        ctx.summary.cpus += 1;
        log!(ctx, "(XEN) CPU {cpu} up on root {root}");
    }
    Ok(())
}

fn free_init_memory<F: HasLayout, P: Platform>(
    p: &mut P,
    mm: &mut Mm<F>,
    img: &ImageLayout,
    image: ImageRange,
    ctx: &mut Ctx<'_, F>,
) -> Result<(), BootError> {
    let s: Section = img.sections[img.init];
    let pages = (s.end.0 - s.start.0) / PAGE_SIZE;
    if pages == 0 {
        log!(ctx, "(XEN) no init memory to free");
        return Ok(());
    }
    // Make it writable (to poison it), then unmap it and give it back.
    mm.update(
        p,
        s.start,
        pages,
        Op::Modify { attrs: Attrs::RW },
        MapFlags::PAGES,
    )
    .map_err(|e| ctx.engine("making init memory writable", e))?;
    mm.update(p, s.start, pages, Op::Remove, MapFlags::PAGES)
        .map_err(|e| ctx.engine("unmapping init memory", e))?;
    let pa = image
        .0
        .pa_of(s.start)
        .ok_or_else(|| ctx.fail(format_args!("init outside the image"), None))?;
    mm.alloc
        .free_pages_at(pa.mfn(), pages)
        .map_err(|e| ctx.fail(format_args!("{e}"), None))?;
    log!(
        ctx,
        "(XEN) freed {} KiB of init memory ({}..{:#x})",
        pages * 4,
        s.start,
        s.end.0
    );
    Ok(())
}

fn verify<F: HasLayout, P: Platform>(
    p: &mut P,
    mm: &mut Mm<F>,
    img: &ImageLayout,
    ctx: &mut Ctx<'_, F>,
) -> Result<(), BootError> {
    let image = mm.image();
    // Sealed image tables (secret-free mode) are a read-only part of the
    // data section.
    let t = img.tables;
    let sealed = (!mm.image_tables_writable()).then_some((t.first, t.last));
    for (i, s) in img.sections.iter().enumerate() {
        if i == img.init || s.end <= s.start {
            continue;
        }
        let mut push = |name: &'static str, start: Vaddr, end: Vaddr, writable: bool| {
            if end > start {
                ctx.summary.regions.push(RegionFact {
                    name,
                    va: start,
                    pa: image.0.pa_of(start).unwrap_or(Paddr(0)),
                    size: end.0 - start.0,
                    writable,
                    mair_attr: 0xff,
                });
            }
        };
        let writable = s.perm == Perm::Rw;
        match sealed {
            Some((first, last)) if first >= s.start && last <= s.end => {
                push(s.name, s.start, first, writable);
                push("pgtables", first, last, false);
                push(s.name, last, s.end, writable);
            }
            _ => push(s.name, s.start, s.end, writable),
        }
    }
    let mut pages = 0u64;
    if ctx.summary.regions.dropped > 0 {
        return Err(ctx.fail(
            format_args!(
                "{} regions to verify, more than the {} the summary holds",
                ctx.summary.regions.len() + ctx.summary.regions.dropped,
                crate::report::MAX_REGIONS
            ),
            None,
        ));
    }
    let regions = ctx.summary.regions.clone();
    for r in regions.iter() {
        let n = r.size / PAGE_SIZE;
        let step = (n / 512).max(1);
        let mut i = 0;
        while i < n {
            pages += check_page(p, r, i, &img.stacks, ctx)?;
            i += step;
        }
        if !(n - 1).is_multiple_of(step) {
            pages += check_page(p, r, n - 1, &img.stacks, ctx)?;
        }
    }
    // The freed init memory must be gone.
    let init = img.sections[img.init];
    if init.end <= init.start {
        // Nothing was mapped there.
    } else if let Ok(at) = p.hw_translate(init.start, false) {
        return Err(ctx.fail(
            format_args!(
                "freed init memory at {} still translates to {}",
                init.start, at.pa
            ),
            None,
        ));
    }
    ctx.summary.verified_pages = pages;
    log!(ctx, "(XEN) verified {} regions, {pages} pages by address translation (PA, write permission, memory type)", regions.len());
    Ok(())
}

fn check_page<F: HasLayout, P: Platform>(
    p: &mut P,
    r: &RegionFact,
    i: u64,
    guards: &crate::image::Stacks,
    ctx: &Ctx<'_, F>,
) -> Result<u64, BootError> {
    let va = Vaddr(r.va.0 + i * PAGE_SIZE);
    let want = Paddr(r.pa.0 + i * PAGE_SIZE);
    if guards.is_guard(va) {
        // A stack's guard page: unmapped on purpose (the audit checks it).
        return Ok(0);
    }
    let at = p.hw_translate(va, false).map_err(|f| {
        ctx.fail(
            format_args!("{} page {va} does not translate", r.name),
            Some(f),
        )
    })?;
    if at.pa != want {
        return Err(ctx.fail(
            format_args!(
                "{} page {va} translates to {} instead of {want}",
                r.name, at.pa
            ),
            None,
        ));
    }
    if at.mair_attr != r.mair_attr {
        return Err(ctx.fail(
            format_args!(
                "{} page {va} has memory attribute {:#04x}, not {:#04x}",
                r.name, at.mair_attr, r.mair_attr
            ),
            None,
        ));
    }
    let writable = p.hw_translate(va, true).is_ok();
    if writable != r.writable {
        return Err(ctx.fail(
            format_args!(
                "{} page {va} is {}writable",
                r.name,
                if writable { "" } else { "not " }
            ),
            None,
        ));
    }
    Ok(1)
}

fn log_phase_table<F: HasLayout>(ctx: &mut Ctx<'_, F>) {
    log!(
        ctx,
        "(XEN) table maps by access path and state (tlbi: the engine's invalidations; slot-tlbi: local ones for PMAP / domain-page / mapcache slots):"
    );
    log!(
        ctx,
        "(XEN)   {:<10} {:>6} {:>6} {:>9} {:>11} {:>7} {:>7} {:>6} {:>6} {:>9}",
        "state",
        "image",
        "pmap",
        "directmap",
        "domain-page",
        "leaves",
        "tables",
        "freed",
        "tlbi",
        "slot-tlbi"
    );
    let mut created = 0;
    let mut freed = 0;
    for (i, ph) in ctx.summary.phases.iter().enumerate() {
        let s = [
            SystemState::EarlyBoot,
            SystemState::Boot,
            SystemState::SmpBoot,
            SystemState::Active,
        ][i];
        created += ph.updates.tables_created;
        freed += ph.updates.tables_freed;
        let _ = writeln!(
            ctx.log,
            "(XEN)   {:<10} {:>6} {:>6} {:>9} {:>11} {:>7} {:>7} {:>6} {:>6} {:>9}",
            s.name(),
            ph.access.image,
            ph.access.pmap,
            ph.access.directmap,
            ph.access.domain_page,
            ph.updates.leaves,
            ph.updates.tables_created,
            ph.updates.tables_freed,
            ph.updates.tlb_invalidations,
            ph.access.slot_tlbi
        );
    }
    ctx.summary.table_pages = created - freed;
    log!(
        ctx,
        "(XEN) page-table pages allocated at run time: {} (plus the image's static tables)",
        created - freed
    );
}

#[cfg(test)]
mod tests {
    use super::place_xenheap;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_xenheap_takes_the_largest_free_place_below_4_gib_highest_first() {
        // 1 GiB at 1 GiB with the image and modules near the top: the 32
        // MiB above them, not the 30 MiB below.
        let free = [(0x4000_0000, 0x7bf0_0000), (0x7c10_0000, 0x8000_0000)];
        assert_eq!(
            place_xenheap(&free, 32 * MIB),
            Some((0x7e00_0000, 0x8000_0000))
        );
        // Below 4 GiB wins even when smaller.
        let free = [(0x4000_0000, 0x4100_0000), (0x1_0000_0000, 0x1_4000_0000)];
        assert_eq!(
            place_xenheap(&free, 32 * MIB),
            Some((0x4000_0000, 0x4100_0000))
        );
        // Only RAM above 4 GiB: its top.
        let free = [(0x1_0000_0000, 0x1_4000_0000)];
        assert_eq!(
            place_xenheap(&free, 64 * MIB),
            Some((0x1_3c00_0000, 0x1_4000_0000))
        );
    }

    #[test]
    fn the_xenheap_never_covers_the_image_and_needs_8_mib() {
        // 32 MiB at 0, the image at 16 MiB: the free 16 MiB below it (the
        // free RAM above it holds no 32 MiB-aligned start).
        let free = [(0, 0x100_0000), (0x108_0000, 0x200_0000)];
        assert_eq!(place_xenheap(&free, 32 * MIB), Some((0, 0x100_0000)));
        assert_eq!(place_xenheap(&[(0x4000_0000, 0x4060_0000)], 32 * MIB), None);
        assert_eq!(place_xenheap(&[], 32 * MIB), None);
    }
}
