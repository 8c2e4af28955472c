//! The whole-address-space audit at the end of every boot.
//!
//! Once the boot reached [`hvmm::SystemState::Active`] and verified its
//! regions by address translation, the audit walks every leaf of every root
//! table a CPU runs on (arm32: each CPU's own root; arm64: the shared root,
//! or the per-CPU roots a mode records) and checks each one against what the
//! boot *declared* — a list of regions built from the layout and the boot's
//! own facts ([`Declared`]), never from the tables themselves:
//!
//! * no leaf both writable and executable ([`Rule::WriteExec`]);
//! * executable only inside the image's text section ([`Rule::ExecOutsideText`]);
//! * device memory only for the devices the boot declared ([`Rule::DeviceOutsideDevices`]);
//! * nothing outside the declared regions ([`Rule::OutsideRegions`]), and
//!   inside one only what it declares: its physical address, permission
//!   and memory type, or for transient slots RAM as normal memory
//!   ([`Rule::NotAsDeclared`]);
//! * the stacks' guard pages unmapped ([`Rule::StackGuardMapped`]);
//! * when a mode declares an allowed RAM set, no RAM outside it
//!   ([`Rule::RamOutsideAllowed`]);
//! * when a mode asks for it, no page-table page writable through a
//!   permanent mapping ([`Rule::TableWritable`]); the table pages are
//!   collected by the walk, and how many are writable that way is reported
//!   in every mode.
//!
//! Tables are read through the table-access path of the current state
//! (direct map, domain-page slots, ...) with plain descriptor reads: no frame
//! allocator, nothing written. The walk visits each table once per place it
//! is linked, so a subtree that several roots share (arm32's) is read once,
//! and a direct map made of 1 GiB blocks costs one visit per block. Effective
//! permissions include the table descriptors' APTable / XNTable bits.
//! Hardware's WXN is not relied on: a writable and executable descriptor is a
//! violation even though WXN would make it execute-never.
//!
//! A mode feeds it in `seq.rs`'s audit step, after [`Declared::for_boot`]:
//! the roots come from [`Mm::set_cpu_root`] (every root a CPU was started
//! on is recorded there), transient per-CPU slots are declared with
//! [`Declared::region`] and [`Expect::Slots`], the allowed RAM set with
//! [`Declared::allow_ram`], and [`Declared::tables_not_writable`] turns the
//! page-table rule on ([`crate::AuditConfig`] carries both from the boot's
//! configuration).

use crate::image::{ImageLayout, Stacks};
use crate::mm::{Mm, MAX_CPUS};
use crate::report::heapless_list::List;
use crate::report::RegionFact;
use core::fmt;
use hvmm::format::{level_shift, level_size, Format, Pte, ENTRIES};
use hvmm::phase::ImageRange;
use hvmm::{
    Arch, Attrs, CpuOps, Error, LeafAttrs, MairMap, MapFlags, MemType, Mfn, Op, Paddr, Perm,
    TableAccess, Vaddr, PAGE_SIZE,
};
use hvmm_xen::layout::{fixmap_va, HasLayout, BOOT_FDT_VIRT_SIZE, BOOT_FDT_VIRT_START};

/// Most regions a boot declares.
pub const MAX_DECLARED: usize = 48;
/// Most device ranges a boot declares.
pub const MAX_DEVICES: usize = 8;
/// Most ranges in an allowed RAM set.
pub const MAX_ALLOWED: usize = 32;
/// Most guard ranges.
pub const MAX_GUARDS: usize = 16;
/// Most table pools (a guest's stage-2 pool each).
pub const MAX_TABLE_POOLS: usize = 4;
/// Most page-table pages the audit holds (16 bytes each, on the stack: the
/// image's boot stack holds this). A machine with 64 TiB of RAM in four
/// banks has 264, mostly level-1 tables of 1 GiB blocks. A boot with more
/// fails the audit by name rather than skip a check.
pub const MAX_TABLE_PAGES: usize = 1024;

/// A rule of the audit.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    /// A leaf both writable and executable.
    WriteExec,
    /// An executable leaf outside the image's text section.
    ExecOutsideText,
    /// Device memory at a physical address no declared device has.
    DeviceOutsideDevices,
    /// A leaf outside every declared region.
    OutsideRegions,
    /// A leaf inside a declared region that maps something else than the
    /// region declares (physical address, permission, memory type).
    NotAsDeclared,
    /// RAM mapped outside the allowed set the mode declared.
    RamOutsideAllowed,
    /// A stack's guard page mapped.
    StackGuardMapped,
    /// A page-table page writable through a permanent mapping.
    TableWritable,
}

impl Rule {
    /// Every rule, in the order a leaf is checked.
    pub const ALL: [Rule; 8] = [
        Rule::StackGuardMapped,
        Rule::WriteExec,
        Rule::ExecOutsideText,
        Rule::DeviceOutsideDevices,
        Rule::OutsideRegions,
        Rule::NotAsDeclared,
        Rule::RamOutsideAllowed,
        Rule::TableWritable,
    ];

    /// The rule as a sentence fragment, for logs and errors.
    pub const fn name(self) -> &'static str {
        match self {
            Rule::WriteExec => "W+X page",
            Rule::ExecOutsideText => "executable outside .text",
            Rule::DeviceOutsideDevices => "device memory outside the declared devices",
            Rule::OutsideRegions => "mapping outside the declared regions",
            Rule::NotAsDeclared => "mapping not as its region declares",
            Rule::RamOutsideAllowed => "RAM outside the allowed set",
            Rule::StackGuardMapped => "stack guard page mapped",
            Rule::TableWritable => "page-table page writable through a permanent mapping",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a declared region may hold.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The region maps `[pa, pa + size)` linearly, with this permission and
    /// memory type (image sections, direct map, xenheap, frametable, early
    /// FDT, a device).
    Linear {
        /// Where the region's first byte maps.
        pa: Paddr,
        /// Its permission.
        perm: Perm,
        /// Its memory type.
        mem: MemType,
    },
    /// Transient mapping slots (arm32's domain-page slots, per-CPU slots):
    /// normal memory over RAM (a 2 MiB slot may run past the end of a
    /// bank), never executable. Not a permanent mapping.
    Slots,
}

/// A region of the virtual address space the boot declared.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Region {
    /// Name shown in errors.
    pub name: &'static str,
    /// First VA.
    pub va: Vaddr,
    /// Size in bytes.
    pub size: u64,
    /// What may be mapped there.
    pub expect: Expect,
}

impl Region {
    /// Whether `[va, va + len)` lies inside.
    fn holds(&self, va: u64, len: u64) -> bool {
        va >= self.va.0 && va - self.va.0 < self.size && len <= self.size - (va - self.va.0)
    }
    /// Whether the region's mappings are permanent (not transient slots).
    pub const fn permanent(&self) -> bool {
        matches!(self.expect, Expect::Linear { .. })
    }
}

/// A device the platform mapped itself before the boot sequence (the
/// console in fixmap slot 0).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PlatformDevice {
    /// Name shown in errors.
    pub name: &'static str,
    /// Where it is mapped.
    pub va: Vaddr,
    /// Its registers' physical address (page aligned).
    pub pa: Paddr,
    /// Bytes mapped (whole pages).
    pub size: u64,
}

/// Everything the audit checks against: the boot's declarations.
#[derive(Clone, Debug, Default)]
pub struct Declared {
    /// The regions; a leaf must lie wholly inside one.
    pub regions: List<Region, MAX_DECLARED>,
    /// Physical ranges of devices (start, size): device memory only there.
    pub devices: List<(Paddr, u64), MAX_DEVICES>,
    /// RAM banks (start, size).
    pub ram: List<(Paddr, u64), { hvmm_bootinfo::MAX_RAM_BANKS }>,
    /// The allowed RAM set, when the mode declares one: no RAM mapped
    /// outside it, but for page-table pages in transient slots.
    pub allowed_ram: Option<List<(Paddr, u64), MAX_ALLOWED>>,
    /// The image's text section: executable only there.
    pub text: (Vaddr, Vaddr),
    /// Guard ranges (VA, size): never mapped.
    pub guards: List<(Vaddr, u64), MAX_GUARDS>,
    /// The root tables to walk: (CPU, root).
    pub roots: List<(usize, Mfn), MAX_CPUS>,
    /// Whether a page-table page writable through a permanent mapping is a
    /// violation (on in every mode of hvmm's boot; a boot that keeps tables
    /// in a permanent mapping leaves it off, and the count says how many).
    pub tables_not_writable: bool,
    /// Frames set aside for page tables that no hypervisor root links (a
    /// guest's stage-2 pool), as (start, pages): held to the same rule as
    /// the hypervisor's table pages, every frame of them, used or not.
    pub table_pools: List<(Paddr, u64), MAX_TABLE_POOLS>,
}

impl Declared {
    /// Declares a region.
    pub fn region(&mut self, name: &'static str, va: Vaddr, size: u64, expect: Expect) {
        if size > 0 {
            self.regions.push(Region {
                name,
                va,
                size,
                expect,
            });
        }
    }

    /// Declares a device mapped at `va`: a region and a device range.
    pub fn device(&mut self, d: PlatformDevice) {
        let mem = Attrs::DEVICE.mem();
        self.region(
            d.name,
            d.va,
            d.size,
            Expect::Linear {
                pa: d.pa,
                perm: Attrs::DEVICE.perm(),
                mem,
            },
        );
        self.devices.push((d.pa, d.size));
    }

    /// Declares a pool of `pages` frames from `pa` that page tables the
    /// roots do not link come from (a guest's stage-2 pool).
    pub fn table_pool(&mut self, pa: Paddr, pages: u64) {
        if pages > 0 {
            self.table_pools.push((pa, pages * PAGE_SIZE));
        }
    }

    /// Adds `[pa, pa + size)` to the allowed RAM set (creating the set:
    /// from then on no RAM may be mapped outside it).
    pub fn allow_ram(&mut self, pa: Paddr, size: u64) {
        self.allowed_ram
            .get_or_insert_with(List::default)
            .push((pa, size));
    }

    /// What the boot declared, from the layout of `F`, the image's layout
    /// and physical range, the DTB's address, the devices the platform
    /// mapped, the regions the boot mapped and verified (`mapped`: direct
    /// map, xenheap, frametable; image sections in it are skipped, they are
    /// declared from `img` with their permissions) and the memory manager's
    /// CPU roots. The stacks' guard pages are guards; the freed init
    /// section is declared nowhere.
    pub fn for_boot<F: HasLayout>(
        img: &ImageLayout,
        image: ImageRange,
        dtb: Paddr,
        devices: &[Option<PlatformDevice>],
        mapped: &[RegionFact],
        banks: &[(Paddr, u64)],
        mm: &Mm<F>,
    ) -> Declared {
        let mut d = Declared::default();
        // The secret-free mode made the image's tables read-only: the
        // section holding them is declared around them.
        let t = img.tables;
        let sealed = (!mm.image_tables_writable()).then_some((t.first, t.last));
        for (i, s) in img.sections.iter().enumerate() {
            if i == img.init || s.end <= s.start {
                continue;
            }
            let mut declare = |name: &'static str, start: Vaddr, end: Vaddr, perm: Perm| {
                if let Some(pa) = image.0.pa_of(start).filter(|_| end > start) {
                    let mem = MemType::Normal;
                    d.region(
                        name,
                        start,
                        end.0 - start.0,
                        Expect::Linear { pa, perm, mem },
                    );
                }
            };
            match sealed {
                Some((first, last)) if first >= s.start && last <= s.end => {
                    declare(s.name, s.start, first, s.perm);
                    declare("pgtables", first, last, Perm::Ro);
                    declare(s.name, last, s.end, s.perm);
                }
                _ => declare(s.name, s.start, s.end, s.perm),
            }
        }
        let text = img.sections[0];
        d.text = (text.start, text.end);
        add_guards(&mut d, &img.stacks);
        // The early FDT mapping: the 2 MiB blocks around the DTB, read-only.
        let fdt_base = Paddr(dtb.0 & !((2 << 20) - 1));
        d.region(
            "early-fdt",
            BOOT_FDT_VIRT_START,
            BOOT_FDT_VIRT_SIZE,
            Expect::Linear {
                pa: fdt_base,
                perm: Perm::Ro,
                mem: MemType::Normal,
            },
        );
        for dev in devices.iter().flatten() {
            d.device(*dev);
        }
        for r in mapped {
            let image_section = img
                .sections
                .iter()
                .any(|s| s.name == r.name && s.start == r.va);
            if image_section {
                continue;
            }
            let Some(mem) = mem_of_mair_byte(r.mair_attr) else {
                // Declared with a type hvmm never maps: nothing may match it.
                continue;
            };
            let perm = if r.writable { Perm::Rw } else { Perm::Ro };
            d.region(
                r.name,
                r.va,
                r.size,
                Expect::Linear {
                    pa: r.pa,
                    perm,
                    mem,
                },
            );
        }
        if let Some(dh) = F::LAYOUT.domheap {
            d.region(dh.name, dh.start, dh.size, Expect::Slots);
        }
        for &(pa, size) in banks {
            d.ram.push((pa, size));
        }
        for (cpu, root) in mm.cpu_roots() {
            d.roots.push((cpu, root));
        }
        d
    }
}

/// Declares the stacks' guard pages.
fn add_guards(d: &mut Declared, stacks: &Stacks) {
    for cpu in 0..stacks.cpus {
        d.guards.push((stacks.guard(cpu), PAGE_SIZE));
    }
}

/// The memory type whose MAIR byte is `b`.
fn mem_of_mair_byte(b: u8) -> Option<MemType> {
    [
        MemType::DeviceNgnrne,
        MemType::NormalNc,
        MemType::NormalWt,
        MemType::NormalWb,
        MemType::DeviceNgnre,
        MemType::Normal,
    ]
    .into_iter()
    .find(|m| m.mair_byte() == b)
}

/// One leaf that broke a rule.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The rule.
    pub rule: Rule,
    /// First VA of the leaf.
    pub va: Vaddr,
    /// Bytes it maps.
    pub size: u64,
    /// Where `va` maps.
    pub pa: Paddr,
    /// Its level.
    pub level: u8,
    /// The descriptor.
    pub pte: u64,
    /// Writable, with the tables above it.
    pub write: bool,
    /// Executable, with the tables above it.
    pub exec: bool,
    /// Its memory type (`None`: an index the MAIR map does not hold).
    pub mem: Option<MemType>,
    /// The CPU whose root it was found under.
    pub cpu: usize,
    /// The declared region it lies in, if any.
    pub region: Option<&'static str>,
}

/// A leaf's effective permission as hvmm names them ("RWX" for the one it
/// never maps).
pub const fn perm_name(write: bool, exec: bool) -> &'static str {
    match (write, exec) {
        (true, true) => "RWX",
        (true, false) => "RW",
        (false, true) => "RX",
        (false, false) => "RO",
    }
}

/// Sizes in logs: "4 KiB", "2 MiB", "1 GiB".
struct Size(u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n >= 1 << 30 && n.is_multiple_of(1 << 30) {
            write!(f, "{} GiB", n >> 30)
        } else if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
            write!(f, "{} MiB", n >> 20)
        } else {
            write!(f, "{} KiB", n >> 10)
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: VA {} ({} at level {}) -> PA {}, {}",
            self.rule,
            self.va,
            Size(self.size),
            self.level,
            self.pa,
            perm_name(self.write, self.exec),
        )?;
        match self.mem {
            Some(m) => write!(f, " {m}")?,
            None => write!(f, " AttrIndx {}", Pte(self.pte).attr_index())?,
        }
        write!(f, " (descriptor {:#x}, CPU {}'s root", self.pte, self.cpu)?;
        match self.region {
            Some(r) => write!(f, ", in {r})"),
            None => f.write_str(")"),
        }
    }
}

/// Why the audit failed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AuditError {
    /// A leaf broke a rule; `count` leaves did in all.
    Violation {
        /// The first leaf found.
        first: Violation,
        /// How many leaves broke a rule.
        count: u64,
    },
    /// More page-table pages than [`MAX_TABLE_PAGES`].
    TooManyTables,
    /// A declaration list overflowed (its name).
    TooManyDeclared(&'static str),
    /// A table appeared between the audit's two walks.
    TablesChanged(Mfn),
    /// Reading the tables failed.
    Walk(Error),
}

impl fmt::Display for AuditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditError::Violation { first, count } => {
                let (what, verb) = if *count == 1 {
                    ("leaf", "breaks")
                } else {
                    ("leaves", "break")
                };
                write!(f, "audit: {first}; {count} {what} {verb} a rule")
            }
            AuditError::TooManyTables => write!(
                f,
                "audit: more than {MAX_TABLE_PAGES} page-table pages, more than the audit holds"
            ),
            AuditError::TooManyDeclared(what) => {
                write!(f, "audit: more {what} declared than the audit holds")
            }
            AuditError::TablesChanged(m) => write!(
                f,
                "audit: table {} appeared between the audit's walks",
                m.paddr()
            ),
            AuditError::Walk(e) => write!(f, "audit: reading the tables: {e}"),
        }
    }
}

impl From<Error> for AuditError {
    fn from(e: Error) -> Self {
        AuditError::Walk(e)
    }
}

/// What the audit counted.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Distinct root tables walked.
    pub roots: usize,
    /// CPUs whose root was walked.
    pub cpus: usize,
    /// Page-table pages found (roots included).
    pub table_pages: u64,
    /// Leaves checked.
    pub leaves: u64,
    /// 4 KiB pages those leaves map.
    pub pages: u64,
    /// Regions declared.
    pub regions: usize,
    /// Writable pages.
    pub writable_pages: u64,
    /// Executable pages (all inside .text).
    pub exec_pages: u64,
    /// Device pages (all inside declared devices).
    pub device_pages: u64,
    /// Pages in transient slots.
    pub slot_pages: u64,
    /// Guard pages checked unmapped (by the walk and by address translation).
    pub guards: usize,
    /// Page-table pages writable through a permanent mapping (for a table
    /// pool: leaves mapping any of its frames so).
    pub tables_writable: u64,
    /// Of the table pages, frames of declared table pools (guests' stage-2
    /// pools).
    pub pool_pages: u64,
    /// Whether [`Rule::TableWritable`] was enforced.
    pub tables_rule: bool,
    /// Whether [`Rule::RamOutsideAllowed`] was enforced.
    pub allowed_ram_rule: bool,
    /// Table maps the audit's walks made through the access path (counted
    /// in the Active state's table maps too).
    pub table_maps: u64,
    /// Leaves that broke a rule.
    pub violations: u64,
    /// The first of them.
    pub first: Option<Violation>,
}

impl AuditReport {
    /// The rules checked, as the log line states them.
    pub fn rules_line(&self) -> RulesLine {
        RulesLine(*self)
    }
}

/// The audit's one-line verdict (see [`AuditReport::rules_line`]).
pub struct RulesLine(AuditReport);

/// The part of the audit line every boot prints (the QEMU matrix looks for
/// it).
pub const RULES: &str =
    "no W+X, X only in .text, device only for devices, nothing outside declared regions";

impl fmt::Display for RulesLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.0;
        write!(
            f,
            "audit: {} root{} ({} CPU{}), {} leaves ({} pages): {RULES}",
            r.roots,
            if r.roots == 1 { "" } else { "s" },
            r.cpus,
            if r.cpus == 1 { "" } else { "s" },
            r.leaves,
            r.pages,
        )?;
        if r.guards > 0 {
            f.write_str(", stack guards unmapped")?;
        }
        if r.allowed_ram_rule {
            f.write_str(", no RAM outside the allowed set")?;
        }
        if r.tables_rule {
            f.write_str(", no page table writable through a permanent mapping")?;
        }
        Ok(())
    }
}

/// Page-table pages, sorted by frame, each with the VA its table covers
/// (low bits: flags).
struct TableSet {
    items: [(u64, u64); MAX_TABLE_PAGES],
    len: usize,
    overflow: bool,
}

/// The table was walked by the checking pass.
const WALKED: u64 = 1;
/// The table is writable through a permanent mapping.
const WRITABLE: u64 = 2;
const FLAGS: u64 = WALKED | WRITABLE;

impl TableSet {
    fn new() -> Self {
        TableSet {
            items: [(0, 0); MAX_TABLE_PAGES],
            len: 0,
            overflow: false,
        }
    }
    fn find(&self, mfn: u64) -> Result<usize, usize> {
        self.items[..self.len].binary_search_by_key(&mfn, |e| e.0)
    }
    /// Inserts; whether the table is new (or linked at another VA, an alias
    /// whose leaves must be seen there too).
    fn insert(&mut self, mfn: u64, va: u64) -> bool {
        match self.find(mfn) {
            Ok(i) => self.items[i].1 & !FLAGS != va,
            Err(i) => {
                if self.len == MAX_TABLE_PAGES {
                    self.overflow = true;
                    return false;
                }
                self.items.copy_within(i..self.len, i + 1);
                self.items[i] = (mfn, va);
                self.len += 1;
                true
            }
        }
    }
    /// Table pages in `[first, first + n)` frames: marks them writable and
    /// returns how many there are.
    fn mark_writable(&mut self, first: u64, n: u64) -> u64 {
        let start = match self.find(first) {
            Ok(i) | Err(i) => i,
        };
        let mut hits = 0;
        for e in &mut self.items[start..self.len] {
            if e.0 >= first.saturating_add(n) {
                break;
            }
            e.1 |= WRITABLE;
            hits += 1;
        }
        hits
    }
    fn any_in(&self, first: u64, n: u64) -> bool {
        let i = match self.find(first) {
            Ok(i) | Err(i) => i,
        };
        i < self.len && self.items[i].0 < first.saturating_add(n)
    }
}

/// What a walk does at each table link and each leaf.
trait Visitor {
    /// Whether leaves are wanted (level-3 tables are skipped otherwise).
    const LEAVES: bool;
    /// A table descriptor at `va` linking `child`: whether to descend.
    fn table(&mut self, child: Mfn, va: u64) -> Result<bool, AuditError>;
    /// A leaf.
    fn leaf(&mut self, leaf: &Seen);
}

/// A leaf as the walk saw it.
struct Seen {
    va: u64,
    size: u64,
    level: u8,
    pte: u64,
    pa: Paddr,
    write: bool,
    exec: bool,
}

/// APTable\[1\] (no writes below) and XNTable in a table descriptor.
const AP_TABLE_RO: u64 = 1 << 62;
const XN_TABLE: u64 = 1 << 60;

/// Walks the table `root` (a root of format `F`), visiting table links and
/// leaves in address order.
fn walk<F: Format, A: Arch, V: Visitor>(
    arch: &mut A,
    acc: &mut dyn TableAccess<A>,
    root: Mfn,
    v: &mut V,
) -> Result<(), AuditError> {
    #[derive(Copy, Clone)]
    struct Frame {
        mfn: Mfn,
        tva: Vaddr,
        base: u64,
        next: usize,
        end: usize,
        no_write: bool,
        no_exec: bool,
    }
    let root_entries =
        (1u64 << (F::VA_BITS - level_shift(F::ROOT_LEVEL))).min(ENTRIES as u64) as usize;
    let tva = acc
        .map_table(arch, root)
        .map_err(|err| Error::TableAccess { mfn: root, err })?;
    let mut stack = [Frame {
        mfn: root,
        tva,
        base: 0,
        next: 0,
        end: root_entries,
        no_write: false,
        no_exec: false,
    }; 4];
    let mut depth = 0usize;
    let mut buf = [0u64; 64];
    let res = 'walk: loop {
        let fr = stack[depth];
        let level = F::ROOT_LEVEL + depth as u8;
        if fr.next >= fr.end || (level == 3 && !V::LEAVES) {
            acc.unmap_table(arch, fr.mfn, fr.tva);
            if depth == 0 {
                return Ok(());
            }
            depth -= 1;
            continue;
        }
        let k = (fr.end - fr.next).min(buf.len());
        let mut n = 0;
        let at = Vaddr(fr.tva.0 + 8 * fr.next as u64);
        if let Err(f) = arch.find_pte(at, k, |e| {
            buf[n] = e;
            n += 1;
            false
        }) {
            break Err(AuditError::Walk(Error::Fault(f)));
        }
        let size = level_size(level);
        let mut descend = None;
        let mut i = 0;
        while i < k {
            let e = buf[i];
            let pte = Pte(e);
            let va = fr.base + (fr.next + i) as u64 * size;
            i += 1;
            if pte.is_table(level) {
                let child = pte.table_mfn::<F>();
                match v.table(child, va) {
                    Ok(true) => {
                        descend = Some((child, va, e));
                        break;
                    }
                    Ok(false) => {}
                    Err(err) => break 'walk Err(err),
                }
            } else if pte.is_leaf(level) && V::LEAVES {
                v.leaf(&Seen {
                    va,
                    size,
                    level,
                    pte: e,
                    pa: pte.oa::<F>(),
                    write: e & Pte::AP_RO == 0 && !fr.no_write,
                    exec: e & Pte::XN == 0 && !fr.no_exec,
                });
            }
        }
        stack[depth].next = fr.next + i;
        if let Some((child, va, e)) = descend {
            match acc.map_table(arch, child) {
                Ok(ctva) => {
                    depth += 1;
                    stack[depth] = Frame {
                        mfn: child,
                        tva: ctva,
                        base: va,
                        next: 0,
                        end: ENTRIES,
                        no_write: fr.no_write || e & AP_TABLE_RO != 0,
                        no_exec: fr.no_exec || e & XN_TABLE != 0,
                    };
                }
                Err(err) => break Err(AuditError::Walk(Error::TableAccess { mfn: child, err })),
            }
        }
    };
    for f in stack[..=depth].iter().rev() {
        acc.unmap_table(arch, f.mfn, f.tva);
    }
    res
}

/// First pass: collects every table page.
struct Collect<'a> {
    set: &'a mut TableSet,
}

impl Visitor for Collect<'_> {
    const LEAVES: bool = false;
    fn table(&mut self, child: Mfn, va: u64) -> Result<bool, AuditError> {
        let new = self.set.insert(child.0, va);
        if self.set.overflow {
            return Err(AuditError::TooManyTables);
        }
        Ok(new)
    }
    fn leaf(&mut self, _: &Seen) {}
}

/// Second pass: checks every leaf.
struct Check<'a> {
    d: &'a Declared,
    set: &'a mut TableSet,
    mair: MairMap,
    cpu: usize,
    report: &'a mut AuditReport,
    /// Index of the region the last leaf was in.
    last: usize,
}

/// Whether `[start, start + len)` lies inside the union of `ranges`.
fn covered<'a, I>(ranges: I, start: u64, len: u64) -> bool
where
    I: Iterator<Item = &'a (Paddr, u64)> + Clone,
{
    let end = start.saturating_add(len);
    let mut cur = start;
    while cur < end {
        match ranges
            .clone()
            .find(|(b, s)| b.0 <= cur && cur - b.0 < *s)
            .map(|(b, s)| b.0.saturating_add(*s))
        {
            Some(next) => cur = next,
            None => return false,
        }
    }
    true
}

/// Whether `[start, start + len)` meets any of `ranges`.
fn overlaps<'a, I>(mut ranges: I, start: u64, len: u64) -> bool
where
    I: Iterator<Item = &'a (Paddr, u64)>,
{
    ranges.any(|(b, s)| b.0 < start.saturating_add(len) && start < b.0.saturating_add(*s))
}

impl Check<'_> {
    /// The declared region holding the whole leaf (the last one found is
    /// tried first: leaves come in address order).
    fn region_of(&mut self, l: &Seen) -> Option<Region> {
        let regions = &self.d.regions;
        if let Some(r) = regions.iter().nth(self.last) {
            if r.holds(l.va, l.size) {
                return Some(*r);
            }
        }
        let (i, r) = regions
            .iter()
            .enumerate()
            .find(|(_, r)| r.holds(l.va, l.size))?;
        self.last = i;
        Some(*r)
    }

    /// The first rule the leaf breaks, with the region it lies in.
    fn rule(&mut self, l: &Seen, mem: Option<MemType>) -> (Option<Rule>, Option<Region>) {
        let d = self.d;
        let end = l.va + l.size;
        if d.guards.iter().any(|&(g, n)| g.0 < end && l.va < g.0 + n) {
            return (Some(Rule::StackGuardMapped), None);
        }
        if l.write && l.exec {
            return (Some(Rule::WriteExec), None);
        }
        if l.exec && !(l.va >= d.text.0 .0 && end <= d.text.1 .0) {
            return (Some(Rule::ExecOutsideText), None);
        }
        if mem.is_none_or(|m| m.is_device()) && !covered(d.devices.iter(), l.pa.0, l.size) {
            return (Some(Rule::DeviceOutsideDevices), None);
        }
        let Some(region) = self.region_of(l) else {
            return (Some(Rule::OutsideRegions), None);
        };
        let broke = |rule| (Some(rule), Some(region));
        match region.expect {
            Expect::Linear {
                pa,
                perm,
                mem: want,
            } => {
                let expect_pa = pa.0 + (l.va - region.va.0);
                if l.pa.0 != expect_pa
                    || l.write != perm.writable()
                    || l.exec != perm.executable()
                    || mem != Some(want)
                {
                    return broke(Rule::NotAsDeclared);
                }
            }
            Expect::Slots => {
                // A domain-page slot maps the 2 MiB around a frame: RAM
                // that ends inside it leaves the rest of the block outside.
                // A slot may also hold a table of the image loaded outside
                // the RAM banks (the walk's own maps).
                let (first, n) = (l.pa.0 >> 12, l.size / PAGE_SIZE);
                let known = overlaps(d.ram.iter(), l.pa.0, l.size) || self.set.any_in(first, n);
                if l.exec || mem != Some(MemType::Normal) || !known {
                    return broke(Rule::NotAsDeclared);
                }
            }
        }
        let (first, n) = (l.pa.0 >> 12, l.size / PAGE_SIZE);
        if let Some(allowed) = &d.allowed_ram {
            // Transient slots may hold page tables (the walk's own maps).
            let exempt = !region.permanent() && self.set.any_in(first, n);
            if !exempt
                && overlaps(d.ram.iter(), l.pa.0, l.size)
                && !covered(allowed.iter(), l.pa.0, l.size)
            {
                return broke(Rule::RamOutsideAllowed);
            }
        }
        if l.write && region.permanent() {
            let hits = self.set.mark_writable(first, n);
            let pool = overlaps(d.table_pools.iter(), l.pa.0, l.size);
            if pool {
                self.report.tables_writable += 1;
            }
            if (hits > 0 || pool) && d.tables_not_writable {
                return broke(Rule::TableWritable);
            }
        }
        (None, Some(region))
    }
}

impl Visitor for Check<'_> {
    const LEAVES: bool = true;
    fn table(&mut self, child: Mfn, va: u64) -> Result<bool, AuditError> {
        match self.set.find(child.0) {
            Ok(i) => {
                let (_, v) = &mut self.set.items[i];
                if *v & !FLAGS != va {
                    // Linked at another VA too: its leaves are seen here as well.
                    Ok(true)
                } else if *v & WALKED != 0 {
                    // A subtree another root shares: checked already.
                    Ok(false)
                } else {
                    *v |= WALKED;
                    Ok(true)
                }
            }
            Err(_) => Err(AuditError::TablesChanged(child)),
        }
    }
    fn leaf(&mut self, l: &Seen) {
        let mem = self.mair.mem_at(Pte(l.pte).attr_index());
        let pages = l.size / PAGE_SIZE;
        let (rule, region) = self.rule(l, mem);
        let r = &mut *self.report;
        r.leaves += 1;
        r.pages += pages;
        if l.write {
            r.writable_pages += pages;
        }
        if l.exec {
            r.exec_pages += pages;
        }
        if mem.is_none_or(|m| m.is_device()) {
            r.device_pages += pages;
        }
        if region.is_some_and(|g| !g.permanent()) {
            r.slot_pages += pages;
        }
        if let Some(rule) = rule {
            r.violations += 1;
            if r.first.is_none() {
                r.first = Some(Violation {
                    rule,
                    va: Vaddr(l.va),
                    size: l.size,
                    pa: l.pa,
                    level: l.level,
                    pte: l.pte,
                    write: l.write,
                    exec: l.exec,
                    mem,
                    cpu: self.cpu,
                    region: region.map(|g| g.name),
                });
            }
        }
    }
}

/// Runs the audit on the tables `mm` keeps, through the current state's
/// access path, against `d`. The report comes back either way: on success,
/// and inside [`AuditError::Violation`]'s count and first leaf otherwise.
pub fn run<F: HasLayout, A: CpuOps>(
    arch: &mut A,
    mm: &mut Mm<F>,
    d: &Declared,
) -> Result<AuditReport, (AuditError, AuditReport)> {
    let mut report = AuditReport {
        regions: d.regions.len(),
        guards: d.guards.len(),
        tables_rule: d.tables_not_writable,
        allowed_ram_rule: d.allowed_ram.is_some(),
        ..Default::default()
    };
    for (what, dropped) in [
        ("regions", d.regions.dropped),
        ("devices", d.devices.dropped),
        ("RAM banks", d.ram.dropped),
        ("guard ranges", d.guards.dropped),
        ("table pools", d.table_pools.dropped),
        ("roots", d.roots.dropped),
        (
            "allowed RAM ranges",
            d.allowed_ram.as_ref().map_or(0, |a| a.dropped),
        ),
    ] {
        if dropped > 0 {
            return Err((AuditError::TooManyDeclared(what), report));
        }
    }
    let mair = mm.page_table().mair();
    let maps_before = mm.phases[mm.state() as usize].access.total();
    let mut set = TableSet::new();
    let outcome = mm.with_access(arch, |arch, acc| {
        Ok(audit_tables::<F, A>(
            arch,
            acc,
            d,
            &mut set,
            mair,
            &mut report,
        ))
    });
    report.table_maps = mm.phases[mm.state() as usize].access.total() - maps_before;
    match outcome {
        Err(e) => return Err((AuditError::Walk(e), report)),
        Ok(Err(e)) => return Err((e, report)),
        Ok(Ok(())) => {}
    }
    if let Some(first) = report.first {
        let count = report.violations;
        return Err((AuditError::Violation { first, count }, report));
    }
    // The guard pages by address translation too: this CPU's view, TLB
    // included (a stale entry would still map a guard the tables do not).
    for &(g, n) in d.guards.iter() {
        let mut va = g.0;
        while va < g.0 + n {
            if let Ok(at) = arch.hw_translate(Vaddr(va), false) {
                let first = Violation {
                    rule: Rule::StackGuardMapped,
                    va: Vaddr(va),
                    size: PAGE_SIZE,
                    pa: Paddr(at.pa.0 & !(PAGE_SIZE - 1)),
                    level: 3,
                    pte: 0,
                    write: arch.hw_translate(Vaddr(va), true).is_ok(),
                    exec: false,
                    mem: mem_of_mair_byte(at.mair_attr),
                    cpu: arch.cpu(),
                    region: Some("found by address translation"),
                };
                report.violations = 1;
                report.first = Some(first);
                return Err((AuditError::Violation { first, count: 1 }, report));
            }
            va += PAGE_SIZE;
        }
    }
    Ok(report)
}

/// The two passes over every root: collect the table pages, then check
/// every leaf.
#[inline(never)]
fn audit_tables<F: HasLayout, A: CpuOps>(
    arch: &mut A,
    acc: &mut dyn TableAccess<A>,
    d: &Declared,
    set: &mut TableSet,
    mair: MairMap,
    report: &mut AuditReport,
) -> Result<(), AuditError> {
    for &(_, root) in d.roots.iter() {
        if set.insert(root.0, 0) {
            report.roots += 1;
            walk::<F, A, _>(arch, acc, root, &mut Collect { set })?;
        }
        if set.overflow {
            return Err(AuditError::TooManyTables);
        }
    }
    report.cpus = d.roots.len();
    report.table_pages = set.len as u64;
    for &(cpu, root) in d.roots.iter() {
        let i = set
            .find(root.0)
            .map_err(|_| AuditError::TablesChanged(root))?;
        if set.items[i].1 & WALKED != 0 {
            continue;
        }
        set.items[i].1 |= WALKED;
        let mut check = Check {
            d,
            set,
            mair,
            cpu,
            report,
            last: 0,
        };
        walk::<F, A, _>(arch, acc, root, &mut check)?;
    }
    report.tables_writable += set.items[..set.len]
        .iter()
        .filter(|e| e.1 & WRITABLE != 0)
        .count() as u64;
    report.pool_pages = d.table_pools.iter().map(|(_, size)| size / PAGE_SIZE).sum();
    report.table_pages += report.pool_pages;
    Ok(())
}

/// A violation planted on purpose before the audit, to show that it is
/// caught (tests, and `hvmm.audit-plant=` on hardware).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Plant {
    /// A writable and executable page in a free fixmap slot (written as a
    /// raw descriptor: the engine cannot express it).
    WriteExec,
    /// A read-execute page of RAM in a free fixmap slot.
    ExecOutsideText,
    /// A RAM page mapped as device memory in a free fixmap slot.
    DeviceOnRam,
    /// A read-only page mapped in the vmap area (declared nowhere).
    Stray,
    /// CPU 1's stack guard page mapped (to itself, read-write).
    StackGuard,
    /// The first page of rodata made writable (inside its region, unlike
    /// what the region declares).
    WritableRodata,
    /// The highest table page the engine made mapped writable at a
    /// permanent VA (see [`plant`]), the table rule on.
    WritableTable,
    /// Domain 0's stage-2 root mapped writable at the vmap area's first
    /// page (declared there), the table rule on: a guest's table pool is
    /// held to the rule (the boot fails if there is no domain 0).
    WritableGuestTable,
}

impl Plant {
    /// Every plant.
    pub const ALL: [Plant; 8] = [
        Plant::WriteExec,
        Plant::ExecOutsideText,
        Plant::DeviceOnRam,
        Plant::Stray,
        Plant::StackGuard,
        Plant::WritableRodata,
        Plant::WritableTable,
        Plant::WritableGuestTable,
    ];
    /// The rule it breaks.
    pub const fn rule(self) -> Rule {
        match self {
            Plant::WriteExec => Rule::WriteExec,
            Plant::ExecOutsideText => Rule::ExecOutsideText,
            Plant::DeviceOnRam => Rule::DeviceOutsideDevices,
            Plant::Stray => Rule::OutsideRegions,
            Plant::StackGuard => Rule::StackGuardMapped,
            Plant::WritableRodata => Rule::NotAsDeclared,
            Plant::WritableTable | Plant::WritableGuestTable => Rule::TableWritable,
        }
    }
    /// Its name on the command line (`hvmm.audit-plant=NAME`).
    pub const fn name(self) -> &'static str {
        match self {
            Plant::WriteExec => "wx",
            Plant::ExecOutsideText => "exec",
            Plant::DeviceOnRam => "device",
            Plant::Stray => "stray",
            Plant::StackGuard => "guard",
            Plant::WritableRodata => "rodata",
            Plant::WritableTable => "table",
            Plant::WritableGuestTable => "s2-table",
        }
    }
    /// The plant named `name`.
    pub fn from_name(name: &str) -> Option<Plant> {
        Plant::ALL.into_iter().find(|p| p.name() == name)
    }
    /// The VA it maps (none for [`Plant::WritableTable`]).
    pub fn va<F: HasLayout>(self, img: &ImageLayout) -> Option<Vaddr> {
        let free_slot = fixmap_va(hvmm_xen::layout::FIXMAP_SLOTS);
        match self {
            Plant::WriteExec | Plant::ExecOutsideText | Plant::DeviceOnRam => Some(free_slot),
            Plant::Stray => Some(Vaddr(F::LAYOUT.vmap.start.0 + (64 << 20))),
            Plant::StackGuard => (img.stacks.cpus > 1).then(|| img.stacks.guard(1)),
            Plant::WritableRodata => Some(img.sections[1].start),
            Plant::WritableGuestTable => Some(F::LAYOUT.vmap.start),
            Plant::WritableTable => None,
        }
    }
}

/// The names [`Plant::from_name`] takes, comma-separated (for errors).
pub struct PlantNames;

impl fmt::Display for PlantNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in Plant::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(p.name())?;
        }
        Ok(())
    }
}

/// Plants `plant` (see [`Plant`]): maps the image's first page (RAM) at
/// [`Plant::va`], or for [`Plant::StackGuard`] the guard page itself,
/// makes rodata's first page writable for [`Plant::WritableRodata`], and
/// for [`Plant::WritableTable`] turns the rule on in `d` and maps the
/// highest table page the engine made writable at a permanent VA: back
/// into the direct map in arm64's direct-map mode, at the vmap area's
/// first page on arm32 (declared, so that only the table rule breaks).
pub fn plant<F: HasLayout, A: CpuOps>(
    arch: &mut A,
    mm: &mut Mm<F>,
    img: &ImageLayout,
    d: &mut Declared,
    plant: Plant,
) -> Result<(), Error> {
    let image = mm.image().0;
    let Some(va) = plant.va::<F>(img) else {
        d.tables_not_writable = true;
        let (perm, mem) = (Perm::Rw, MemType::Normal);
        let pa = mm.highest_table;
        if mm.xenheap().is_some() && !mm.image_tables_writable() {
            // arm32 keeps table frames out of the xenheap: alias one in
            // the vmap area, writable, declared as such.
            let va = F::LAYOUT.vmap.start;
            d.region("vmap", va, PAGE_SIZE, Expect::Linear { pa, perm, mem });
            let op = Op::Insert {
                pa,
                attrs: Attrs::RW,
            };
            return mm.update(arch, va, 1, op, MapFlags::PAGES).map(|_| ());
        }
        let (Some(dm), false) = (mm.directmap(), mm.image_tables_writable()) else {
            // The secret-free mode (nothing to alias): the rule alone.
            return Ok(());
        };
        // arm64's direct-map mode keeps table frames out of the direct map:
        // put the highest table page the engine made back in, writable,
        // declared as direct map (so that only the table rule breaks).
        let Some(va) = dm.va_of(pa) else {
            return Ok(());
        };
        d.region("directmap", va, PAGE_SIZE, Expect::Linear { pa, perm, mem });
        let op = Op::Insert {
            pa,
            attrs: Attrs::RW,
        };
        return mm.update(arch, va, 1, op, MapFlags::PAGES).map(|_| ());
    };
    let ram = image.pa;
    let insert = |pa: Paddr, attrs: Attrs| (Op::Insert { pa, attrs }, MapFlags::PAGES);
    let (op, flags) = match plant {
        Plant::WriteExec => {
            // A raw descriptor: RW without XN, in the fixmap's L3 (in the image).
            let bits = Attrs::RW.leaf_bits(&mm.page_table().mair())? & !Pte::XN;
            let pte = Pte::leaf_bits::<F>(3, ram, bits, false);
            let slot = ((va.0 - hvmm_xen::layout::FIXMAP_ADDR.0) / PAGE_SIZE) * 8;
            if mm.image_tables_writable() {
                arch.write_pte(Vaddr(img.tables.fixmap_l3.0 + slot), pte.0)?;
            } else {
                // The secret-free mode sealed the image's tables: through a slot.
                let l3 = image.pa_of(img.tables.fixmap_l3).unwrap_or(ram).mfn();
                mm.with_access(arch, |arch, acc| {
                    let at = acc
                        .map_table(arch, l3)
                        .map_err(|err| Error::TableAccess { mfn: l3, err })?;
                    let w = arch.write_pte(Vaddr(at.0 + slot), pte.0);
                    acc.unmap_table(arch, l3, at);
                    Ok(w?)
                })?;
            }
            arch.isb();
            return Ok(());
        }
        Plant::ExecOutsideText => insert(ram, Attrs::RX),
        Plant::DeviceOnRam => insert(ram, Attrs::DEVICE),
        Plant::Stray => insert(ram, Attrs::RO),
        Plant::StackGuard => {
            let pa = image.pa_of(va).unwrap_or(ram);
            insert(pa, Attrs::RW)
        }
        Plant::WritableRodata => (Op::Modify { attrs: Attrs::RW }, MapFlags::PAGES),
        Plant::WritableGuestTable => {
            let Some(pa) = mm.dom0.as_ref().map(|d0| d0.p2m.root().paddr()) else {
                return Err(Error::TableAccess {
                    mfn: Mfn(0),
                    err: hvmm::access::AccessError::WrongPhase {
                        provider: "the s2-table plant",
                        state: "Active without a domain 0",
                    },
                });
            };
            d.tables_not_writable = true;
            let (perm, mem) = (Perm::Rw, MemType::Normal);
            d.region("vmap", va, PAGE_SIZE, Expect::Linear { pa, perm, mem });
            if d.allowed_ram.is_some() {
                // Allowed as RAM too (secret-free mode): only the table
                // rule breaks.
                d.allow_ram(pa, PAGE_SIZE);
            }
            insert(pa, Attrs::RW)
        }
        Plant::WritableTable => return Ok(()),
    };
    mm.update(arch, va, 1, op, flags).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_set_fails_the_audit_by_name() {
        let mut set = TableSet::new();
        for i in 0..MAX_TABLE_PAGES as u64 {
            assert!(set.insert(MAX_TABLE_PAGES as u64 - i, 0));
        }
        let mut c = Collect { set: &mut set };
        assert_eq!(c.table(Mfn(1 << 30), 0), Err(AuditError::TooManyTables));
        assert!(AuditError::TooManyTables
            .to_string()
            .contains("more than 1024 page-table pages"));
    }

    #[test]
    fn the_table_set_stays_sorted_and_counts_tables_in_a_range_once() {
        let mut set = TableSet::new();
        for m in [40u64, 10, 30, 20] {
            assert!(set.insert(m, 0x20_0000 * m));
        }
        // Seen again at the same VA: not new; at another VA: an alias.
        assert!(!set.insert(30, 0x20_0000 * 30));
        assert!(set.insert(30, 0));
        let mfns: [u64; 4] = core::array::from_fn(|i| set.items[i].0);
        assert_eq!(mfns, [10, 20, 30, 40]);
        assert_eq!(set.mark_writable(15, 20), 2);
        assert_eq!(set.mark_writable(0, 100), 4);
        assert!(set.any_in(40, 1) && !set.any_in(41, 100));
        assert_eq!(
            set.items[..set.len]
                .iter()
                .filter(|e| e.1 & WRITABLE != 0)
                .count(),
            4
        );
    }

    #[test]
    fn a_range_is_covered_only_by_ranges_without_a_gap() {
        let r = [(Paddr(0x1000), 0x1000u64), (Paddr(0x2000), 0x2000)];
        assert!(covered(r.iter(), 0x1000, 0x3000));
        assert!(!covered(r.iter(), 0x1000, 0x4000));
        let gap = [(Paddr(0x1000), 0x1000u64), (Paddr(0x3000), 0x1000)];
        assert!(!covered(gap.iter(), 0x1000, 0x3000));
        assert!(overlaps(gap.iter(), 0x2000, 0x2000));
        assert!(!overlaps(gap.iter(), 0x2000, 0x1000));
    }

    #[test]
    fn violations_name_rule_addresses_and_attributes() {
        let v = Violation {
            rule: Rule::WriteExec,
            va: Vaddr(0xa0_e000),
            size: 2 << 20,
            pa: Paddr(0x4020_0000),
            level: 2,
            pte: 0x4020_0741,
            write: true,
            exec: true,
            mem: Some(MemType::Normal),
            cpu: 1,
            region: Some("fixmap"),
        };
        let s = std::format!("{v}");
        assert_eq!(
            s,
            "W+X page: VA 0x0000000000a0e000 (2 MiB at level 2) -> PA 0x0000000040200000, RWX Normal (descriptor 0x40200741, CPU 1's root, in fixmap)"
        );
    }
}
