//! The update engine running on the machine model, as on hardware: the
//! tables the engine updates are the live tables of the model's MMU, and
//! table pages are reached through a direct-map window built by hand. The
//! rig of the model's engine tests (`crates/hvmm-model/tests/engine_*`) and
//! of the `engine_ops` fuzz target.
//!
//! Layout (both formats: 4 MiB of RAM mapped by the window with two 2 MiB
//! blocks; the hand-built tables at the start of the upper 2 MiB, the rest
//! of it the frame pool, so that the engine's table accesses use one block):
//!
//! | | arm64 | arm32 |
//! |---|---|---|
//! | RAM | 0x40_0000_0000 (256 GiB) | 0x10_8000_0000 (above 4 GiB, 40-bit) |
//! | hand tables | L0 root, L1, L2 | 4-entry L1 root, L2 |
//! | window VA | 0x8000_c000_0000 (`L0[256]`, `L1[3]`) | 0xc000_0000 (`L1[3]`) |
//! | engine VAs | 0x7fff_0000_0000 .. window: `L0[255]` (tables the engine makes) and `L1[0..3]` of the hand L1 (shared, pinned) | 0 .. 0xc000_0000 (below the root) |
//!
//! Descriptors are read back here with bit positions from the Arm ARM, not
//! through hvmm's descriptor code.

use hvmm::access::{AccessError, AccessPath, TableAccess};
use hvmm::{
    AccessKind, Arch, Arm32, Arm64, Attrs, Env, Error, FaultKind, FrameAlloc, MapFlags, MemType,
    Mfn, Op, OutOfFrames, Paddr, PageTable, Perm, TableMeta, UpdateReport, Vaddr, WithTableMeta,
};
use hvmm_model::{desc, Counters, FrameSnapshot, Machine, ModelError, Regime};
use hvmm_xen::boot_alloc::FrameRanges;
use std::collections::{BTreeMap, BTreeSet};

pub const PAGE: u64 = 4096;
pub const MIB2: u64 = 2 << 20;
pub const GIB: u64 = 1 << 30;
pub const RAM_SIZE: u64 = 4 << 20;

/// A translation format together with where the rig puts things for it.
pub trait ModelFormat: hvmm::Stage1Format {
    const REGIME: Regime;
    /// Physical base of the RAM (hand tables first, then the pool).
    const RAM_BASE: u64;
    /// Where the hand-built tables (root first) and then the pool are: the
    /// upper 2 MiB of the RAM (so the engine uses one window block).
    const TABLES: u64 = Self::RAM_BASE + MIB2;
    /// VA at which the window maps `RAM_BASE`.
    const WINDOW: u64;
    /// The VAs the tests give the engine: `[start, end)`, disjoint from the window.
    const ARENA: (u64, u64);
    /// Output-address field of a descriptor (Arm ARM: `[47:12]` / `[39:12]`).
    const OA: u64;
    /// Number of hand-built table frames at the start of RAM (root first).
    const HAND_TABLES: u64;
    /// Writes the hand-built tables (physical writes, MMU still off).
    fn build_window(m: &mut Machine);
}

fn set(m: &mut Machine, table: u64, idx: u64, d: u64) {
    m.phys_write_u64(Paddr(table + idx * 8), d).unwrap();
}

impl ModelFormat for Arm64 {
    const REGIME: Regime = Regime::Arm64El2 { pa_bits: 48 };
    const RAM_BASE: u64 = 0x40_0000_0000;
    const WINDOW: u64 = 0x8000_c000_0000;
    const ARENA: (u64, u64) = (0x7fff_0000_0000, 0x8000_c000_0000);
    const OA: u64 = 0x0000_ffff_ffff_f000;
    const HAND_TABLES: u64 = 3;
    fn build_window(m: &mut Machine) {
        let (l0, l1, l2) = (Self::TABLES, Self::TABLES + PAGE, Self::TABLES + 2 * PAGE);
        set(m, l0, idx(Self::WINDOW, 0), desc::table(l1));
        set(m, l1, idx(Self::WINDOW, 1), desc::table(l2));
        for i in 0..RAM_SIZE / MIB2 {
            set(
                m,
                l2,
                idx(Self::WINDOW, 2) + i,
                desc::block(Self::RAM_BASE + i * MIB2) | desc::XN,
            );
        }
    }
}

impl ModelFormat for Arm32 {
    const REGIME: Regime = Regime::Arm32Hyp;
    const RAM_BASE: u64 = 0x10_8000_0000;
    const WINDOW: u64 = 0xc000_0000;
    const ARENA: (u64, u64) = (0, 0xc000_0000);
    const OA: u64 = 0x0000_00ff_ffff_f000;
    const HAND_TABLES: u64 = 2;
    fn build_window(m: &mut Machine) {
        let (l1, l2) = (Self::TABLES, Self::TABLES + PAGE);
        set(m, l1, idx(Self::WINDOW, 1), desc::table(l2));
        for i in 0..RAM_SIZE / MIB2 {
            set(
                m,
                l2,
                idx(Self::WINDOW, 2) + i,
                desc::block(Self::RAM_BASE + i * MIB2) | desc::XN,
            );
        }
    }
}

pub const fn shift(level: u8) -> u32 {
    12 + 9 * (3 - level as u32)
}
pub const fn size(level: u8) -> u64 {
    1 << shift(level)
}
pub const fn idx(va: u64, level: u8) -> u64 {
    (va >> shift(level)) & 511
}

// ---------------------------------------------------------------------------
// Table access: the direct-map window, and a wrapper that fails on demand.
// ---------------------------------------------------------------------------

/// Reaches a RAM frame at `window + (pa - ram_base)`; anything else is
/// unreachable. Counts mappings held, to catch a mapping not given back.
#[derive(Clone, Debug)]
pub struct DirectMap {
    pub ram: (u64, u64),
    pub window: u64,
    pub held: i64,
    pub maps: u64,
}

impl AccessPath for DirectMap {
    fn name(&self) -> &'static str {
        "directmap"
    }
    fn can_reach(&self, mfn: Mfn) -> bool {
        let pa = mfn.paddr().0;
        pa >= self.ram.0 && pa < self.ram.1
    }
}

impl<A: Arch> TableAccess<A> for DirectMap {
    fn map_table(&mut self, _arch: &mut A, mfn: Mfn) -> Result<Vaddr, AccessError> {
        let pa = mfn.paddr().0;
        if pa < self.ram.0 || pa >= self.ram.1 {
            return Err(AccessError::Unreachable {
                provider: "directmap",
            });
        }
        self.held += 1;
        self.maps += 1;
        Ok(Vaddr(self.window + (pa - self.ram.0)))
    }
    fn unmap_table(&mut self, _arch: &mut A, _mfn: Mfn, _va: Vaddr) {
        self.held -= 1;
    }
}

/// The direct map, except that its `fail_at`-th `map_table` call (1-based)
/// fails with `Unreachable`. Records how many calls were made when the
/// engine reserved (the end of its prepare pass). Like any provider it keeps
/// the reservation contract: a failure it knows is coming after the
/// reservation makes it refuse the reservation instead.
#[derive(Debug)]
pub struct FailingAccess<'a> {
    pub inner: &'a mut DirectMap,
    pub fail_at: u64,
    pub calls: u64,
    pub calls_at_reserve: Option<u64>,
}

impl AccessPath for FailingAccess<'_> {
    fn name(&self) -> &'static str {
        "failing-directmap"
    }
    fn can_reach(&self, mfn: Mfn) -> bool {
        self.inner.can_reach(mfn)
    }
}

impl TableAccess<Machine> for FailingAccess<'_> {
    fn map_table(&mut self, arch: &mut Machine, mfn: Mfn) -> Result<Vaddr, AccessError> {
        self.calls += 1;
        if self.calls == self.fail_at {
            return Err(AccessError::Unreachable {
                provider: "failing-directmap",
            });
        }
        self.inner.map_table(arch, mfn)
    }
    fn unmap_table(&mut self, arch: &mut Machine, mfn: Mfn, va: Vaddr) {
        self.inner.unmap_table(arch, mfn, va)
    }
    fn reserve(&mut self, _arch: &mut Machine, _nested: usize) -> Result<(), AccessError> {
        self.calls_at_reserve = Some(self.calls);
        if self.fail_at > self.calls {
            return Err(AccessError::SlotsExhausted {
                provider: "failing-directmap",
                slots: 0,
            });
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The frame allocator: plain, or with the engine's table counts
// ---------------------------------------------------------------------------

/// The rig's frame pool (Xen's boot allocator over the pool), either as it
/// is — the engine then reads a table to see whether it is empty or
/// uniform — or wrapped in [`WithTableMeta`] with a slot per RAM frame (a
/// frametable), so that the engine keeps counts for the tables it makes and
/// takes its counted paths; the counted pool also remembers which free
/// frames the engine gave back all zero ([`FrameAlloc::free_zeroed`]) and
/// says so when it hands them out again, so that the engine does not zero
/// them (the checks of every step read every table: a frame said zero that
/// is not would show). Dereferences to the boot allocator.
#[derive(Clone, Debug)]
pub enum RigAlloc {
    Plain(FrameRanges),
    Counted(WithTableMeta<FrameRanges, Vec<TableMeta>>, BTreeSet<u64>),
}

impl RigAlloc {
    /// The slot of frame `mfn`, if the pool keeps counts.
    pub fn slot(&mut self, mfn: Mfn) -> Option<TableMeta> {
        match self {
            RigAlloc::Plain(_) => None,
            RigAlloc::Counted(w, _) => w.table_meta(mfn).copied(),
        }
    }
    pub fn counted(&self) -> bool {
        matches!(self, RigAlloc::Counted(..))
    }
    /// Free frames known to be all zero (the counted pool).
    pub fn zeroed_frames(&self) -> usize {
        match self {
            RigAlloc::Plain(_) => 0,
            RigAlloc::Counted(_, z) => z.len(),
        }
    }
}

impl std::ops::Deref for RigAlloc {
    type Target = FrameRanges;
    fn deref(&self) -> &FrameRanges {
        match self {
            RigAlloc::Plain(a) => a,
            RigAlloc::Counted(w, _) => &w.alloc,
        }
    }
}

impl std::ops::DerefMut for RigAlloc {
    fn deref_mut(&mut self) -> &mut FrameRanges {
        match self {
            RigAlloc::Plain(a) => a,
            RigAlloc::Counted(w, _) => &mut w.alloc,
        }
    }
}

macro_rules! each {
    ($self:ident, $a:ident => $e:expr) => {
        match $self {
            RigAlloc::Plain($a) => $e,
            RigAlloc::Counted($a, _) => $e,
        }
    };
}

impl FrameAlloc for RigAlloc {
    fn reserve(&mut self, n: usize) -> Result<(), OutOfFrames> {
        each!(self, a => a.reserve(n))
    }
    fn take(&mut self) -> Option<Mfn> {
        each!(self, a => a.take())
    }
    fn unreserve(&mut self) {
        each!(self, a => a.unreserve())
    }
    fn free(&mut self, mfn: Mfn) {
        if let RigAlloc::Counted(_, z) = self {
            z.remove(&mfn.0);
        }
        each!(self, a => a.free(mfn))
    }
    fn free_zeroed(&mut self, mfn: Mfn) {
        if let RigAlloc::Counted(_, z) = self {
            z.insert(mfn.0);
        }
        each!(self, a => a.free(mfn))
    }
    fn take_zeroed(&mut self) -> Option<(Mfn, bool)> {
        let mfn = self.take()?;
        let zeroed = match self {
            RigAlloc::Plain(_) => false,
            RigAlloc::Counted(_, z) => z.remove(&mfn.0),
        };
        Some((mfn, zeroed))
    }
    fn free_batch(&mut self, mfns: &[Mfn]) {
        if let RigAlloc::Counted(_, z) = self {
            for m in mfns {
                z.remove(&m.0);
            }
        }
        each!(self, a => a.free_batch(mfns))
    }
    fn reserved_frames(&self, f: &mut dyn FnMut(Mfn)) {
        each!(self, a => a.reserved_frames(f))
    }
    fn can_free(&self, mfn: Mfn) -> bool {
        each!(self, a => a.can_free(mfn))
    }
    fn table_meta(&mut self, mfn: Mfn) -> Option<&mut TableMeta> {
        each!(self, a => a.table_meta(mfn))
    }
    fn alloc_contiguous(&mut self, frames: usize) -> Result<Mfn, OutOfFrames> {
        each!(self, a => a.alloc_contiguous(frames))
    }
}

// ---------------------------------------------------------------------------
// The rig
// ---------------------------------------------------------------------------

/// A 2-CPU machine with the window built and the MMU on, the engine's page
/// table (the live root), the direct map and a frame pool.
pub struct Rig<F: ModelFormat> {
    pub m: Machine,
    pub pt: PageTable<F>,
    pub access: DirectMap,
    pub alloc: RigAlloc,
    /// Pool frames `[start, end)`.
    pub pool: (u64, u64),
    pub initial_free: u64,
}

impl<F: ModelFormat> Clone for Rig<F> {
    fn clone(&self) -> Self {
        Rig {
            m: self.m.clone(),
            // SAFETY: the clone's machine has its own memory: this handle is
            // the only one over the root in it.
            pt: unsafe { PageTable::from_root(self.pt.root()) },
            access: self.access.clone(),
            alloc: self.alloc.clone(),
            pool: self.pool,
            initial_free: self.initial_free,
        }
    }
}

pub const CPUS: usize = 2;

impl<F: ModelFormat> Rig<F> {
    /// The rig with `pool_frames` frames in the pool (at most what the RAM
    /// holds), without table counts.
    pub fn new(pool_frames: u64) -> Self {
        Self::with_counts(pool_frames, false)
    }

    /// The rig with `pool_frames` frames in the pool, with a table-count
    /// slot per RAM frame if `counted` ([`RigAlloc`]).
    pub fn with_counts(pool_frames: u64, counted: bool) -> Self {
        let mut m = Machine::new(F::REGIME, CPUS);
        m.add_ram(Paddr(F::RAM_BASE), RAM_SIZE).unwrap();
        F::build_window(&mut m);
        for cpu in 0..CPUS {
            m.set_root(cpu, Paddr(F::TABLES)).unwrap();
            m.enable_mmu(cpu, true).unwrap();
        }
        let first = F::TABLES / PAGE + F::HAND_TABLES;
        let end = (first + pool_frames).min((F::RAM_BASE + RAM_SIZE) / PAGE);
        let mut alloc = FrameRanges::new();
        alloc.pin(Paddr(F::TABLES), Paddr(F::TABLES + F::HAND_TABLES * PAGE));
        if end > first {
            alloc.add(Paddr(first * PAGE), Paddr(end * PAGE)).unwrap();
        }
        let initial_free = alloc.free_pages();
        let alloc = if counted {
            let slots = vec![TableMeta::UNKNOWN; (RAM_SIZE / PAGE) as usize];
            RigAlloc::Counted(
                WithTableMeta::new(alloc, Mfn(F::RAM_BASE / PAGE), slots),
                BTreeSet::new(),
            )
        } else {
            RigAlloc::Plain(alloc)
        };
        Rig {
            m,
            // SAFETY: the rig's one handle on its hand-built root.
            pt: unsafe { PageTable::from_root(Mfn(F::TABLES / PAGE)) },
            access: DirectMap {
                ram: (F::RAM_BASE, F::RAM_BASE + RAM_SIZE),
                window: F::WINDOW,
                held: 0,
                maps: 0,
            },
            alloc,
            pool: (first, end),
            initial_free,
        }
    }

    pub fn full() -> Self {
        Self::new(u64::MAX / 2)
    }

    pub fn update(
        &mut self,
        va: u64,
        pages: u64,
        op: Op,
        flags: MapFlags,
    ) -> Result<UpdateReport, Error> {
        let mut env = Env::new(&mut self.m, &mut self.access, &mut self.alloc);
        let r = self.pt.update(&mut env, Vaddr(va), pages, op, flags);
        assert_eq!(self.access.held, 0, "a table mapping was not given back");
        r
    }

    /// Runs the update with the `fail_at`-th table mapping failing. Returns
    /// the result and the number of map calls made by the prepare pass
    /// (`None` if the engine never reached its reservation).
    pub fn update_failing(
        &mut self,
        fail_at: u64,
        va: u64,
        pages: u64,
        op: Op,
        flags: MapFlags,
    ) -> (Result<UpdateReport, Error>, Option<u64>) {
        let mut acc = FailingAccess {
            inner: &mut self.access,
            fail_at,
            calls: 0,
            calls_at_reserve: None,
        };
        let mut env = Env::new(&mut self.m, &mut acc, &mut self.alloc);
        let r = self.pt.update(&mut env, Vaddr(va), pages, op, flags);
        let at = acc.calls_at_reserve;
        assert_eq!(self.access.held, 0, "a table mapping was not given back");
        (r, at)
    }

    pub fn lookup(&mut self, va: u64) -> Option<hvmm::Leaf> {
        let r = self
            .pt
            .lookup(&mut self.m, &mut self.access, Vaddr(va))
            .expect("lookup");
        assert_eq!(self.access.held, 0);
        r
    }

    /// The engine's view of `[va, va + pages)`, as runs.
    pub fn engine_runs(&mut self, va: u64, pages: u64) -> Vec<RunView> {
        let mut out = Vec::new();
        self.pt
            .for_each_leaf(
                &mut self.m,
                &mut self.access,
                Vaddr(va),
                pages,
                &mut |v, pages, leaf| {
                    out.push(RunView {
                        va: v.0,
                        end: v.0 + pages * hvmm::PAGE_SIZE,
                        pa: leaf.pa.0,
                        attrs: leaf
                            .attrs
                            .expect("a leaf with attributes hvmm cannot express"),
                    })
                },
            )
            .expect("for_each_leaf");
        assert_eq!(self.access.held, 0);
        merge_runs(out)
    }

    pub fn free(&self) -> u64 {
        self.alloc.free_pages()
    }

    /// Pool frames handed out (not free).
    pub fn allocated(&self) -> Vec<Mfn> {
        let free: Vec<(u64, u64)> = self
            .alloc
            .ranges()
            .map(|(s, e)| (s.0 / PAGE, e.0 / PAGE))
            .collect();
        let hand = F::TABLES / PAGE..F::TABLES / PAGE + F::HAND_TABLES;
        (self.pool.0..self.pool.1)
            .filter(|f| !hand.contains(f) && !free.iter().any(|&(s, e)| *f >= s && *f < e))
            .map(Mfn)
            .collect()
    }

    /// The hand-built tables and every allocated pool frame.
    pub fn snapshot(&self) -> FrameSnapshot {
        let mut frames: Vec<Mfn> = (0..F::HAND_TABLES)
            .map(|i| Mfn(F::TABLES / PAGE + i))
            .collect();
        frames.extend(self.allocated());
        self.m.snapshot_frames(&frames).unwrap()
    }

    /// Adds the lower 2 MiB of RAM (also reached through the window) to the
    /// pool, for updates that need more than 509 tables.
    pub fn grow_pool(&mut self) {
        self.alloc
            .add(Paddr(F::RAM_BASE), Paddr(F::RAM_BASE + MIB2))
            .unwrap();
        self.pool.0 = F::RAM_BASE / PAGE;
        self.initial_free = self.alloc.free_pages();
    }

    /// Takes frames out of the pool until `n` are left; returns them.
    pub fn drain_pool_to(&mut self, n: u64) -> Vec<Mfn> {
        let mut taken = Vec::new();
        while self.alloc.free_pages() > n {
            taken.push(self.alloc.alloc(1, 1).unwrap());
        }
        taken
    }

    /// Invalidates every TLB and walk cache (outside the engine).
    pub fn flush_tlbs(&mut self) {
        self.m.tlb_flush_all();
        self.m.tlb_sync();
    }

    /// Touches every page of `samples` on every CPU (filling TLBs and walk caches).
    pub fn prefetch(&mut self, samples: &[u64]) {
        for cpu in 0..CPUS {
            for &va in samples {
                let _ = self.m.touch(cpu, Vaddr(va));
            }
        }
    }

    // -----------------------------------------------------------------------
    // Physical view of the tables (independent of hvmm's descriptor code)
    // -----------------------------------------------------------------------

    fn read_table(&self, table: u64) -> Vec<u64> {
        let mut b = vec![0u8; PAGE as usize];
        self.m.phys_read(Paddr(table), &mut b).unwrap();
        b.chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn root_entries(level: u8) -> u64 {
        if level == F::ROOT_LEVEL && F::ROOT_LEVEL == 1 {
            4
        } else {
            512
        }
    }

    /// The descriptor at `level` on the walk of `va`, if every level above
    /// holds a table descriptor.
    pub fn entry_at(&self, va: u64, level: u8) -> Option<u64> {
        let mut table = F::TABLES;
        let mut l = F::ROOT_LEVEL;
        loop {
            let d = self.m.phys_read_u64(Paddr(table + idx(va, l) * 8)).unwrap();
            if l == level {
                return Some(d);
            }
            if l == 3 || d & 3 != 3 {
                return None;
            }
            table = d & F::OA;
            l += 1;
        }
    }

    /// Every table reachable from the root, except the root: (frame, level,
    /// first VA), visited once each; panics if a table is linked twice.
    pub fn tables(&self) -> Vec<TableInfo> {
        self.scan().0
    }

    /// Every leaf descriptor whose VA range intersects the arena.
    pub fn leaves(&self) -> Vec<PhysLeaf> {
        self.scan().1
    }

    /// The tables and the arena's leaves, in one walk of every table.
    pub fn scan(&self) -> (Vec<TableInfo>, Vec<PhysLeaf>) {
        let mut out = (Vec::new(), Vec::new());
        let mut seen = BTreeSet::new();
        self.scan_table(F::TABLES, F::ROOT_LEVEL, 0, &mut out, &mut seen);
        out
    }

    fn scan_table(
        &self,
        table: u64,
        level: u8,
        base: u64,
        out: &mut (Vec<TableInfo>, Vec<PhysLeaf>),
        seen: &mut BTreeSet<u64>,
    ) {
        let entries = self.read_table(table);
        for (i, &d) in entries
            .iter()
            .enumerate()
            .take(Self::root_entries(level) as usize)
        {
            let va = base + i as u64 * size(level);
            let in_arena = va < F::ARENA.1 && va + size(level) > F::ARENA.0;
            let leaf = if level == 3 { d & 3 == 3 } else { d & 3 == 1 };
            if level < 3 && d & 3 == 3 {
                let next = d & F::OA;
                assert!(seen.insert(next), "table {next:#x} linked twice");
                out.0.push(TableInfo {
                    mfn: Mfn(next / PAGE),
                    level: level + 1,
                    va,
                });
                self.scan_table(next, level + 1, va, out, seen);
            } else if leaf {
                assert!(level > 0, "a level-0 block at {va:#x}");
                if in_arena {
                    out.1.push(PhysLeaf {
                        va,
                        level,
                        desc: d,
                        pa: d & F::OA & !(size(level) - 1),
                    });
                }
            } else {
                assert_eq!(d & 1, 0, "reserved descriptor {d:#x} at L{level} {va:#x}");
            }
        }
    }

    /// The mappings of the arena as the table bytes say, as runs.
    pub fn physical_runs(&self) -> Vec<RunView> {
        runs_of(&self.leaves())
    }
}

/// Leaves as runs.
pub fn runs_of(leaves: &[PhysLeaf]) -> Vec<RunView> {
    let v = leaves
        .iter()
        .map(|l| RunView {
            va: l.va,
            end: l.va + size(l.level),
            pa: l.pa,
            attrs: l.attrs(),
        })
        .collect();
    merge_runs(v)
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TableInfo {
    pub mfn: Mfn,
    pub level: u8,
    pub va: u64,
}

#[derive(Copy, Clone, Debug)]
pub struct PhysLeaf {
    pub va: u64,
    pub level: u8,
    pub desc: u64,
    pub pa: u64,
}

impl PhysLeaf {
    pub fn contiguous(&self) -> bool {
        self.desc & desc::CONTIGUOUS != 0
    }
    /// Decodes AttrIndx, `AP[2]` and XN from the descriptor (Arm ARM bit
    /// positions) and checks the bits every hvmm leaf must have.
    pub fn attrs(&self) -> Attrs {
        let d = self.desc;
        assert!(d & desc::AF != 0, "leaf without AF: {d:#x}");
        assert!(
            d & desc::AP1 != 0,
            "leaf without AP[1] (RES1 at EL2): {d:#x}"
        );
        let ro = d & desc::AP_RO != 0;
        let xn = d & desc::XN != 0;
        let perm = match (ro, xn) {
            (true, true) => Perm::Ro,
            (true, false) => Perm::Rx,
            (false, true) => Perm::Rw,
            (false, false) => panic!("writable and executable leaf {d:#x} at {:#x}", self.va),
        };
        let mem = MemType::from_index(((d >> 2) & 7) as u8).expect("unknown AttrIndx");
        Attrs::new(mem, perm).expect("executable device leaf")
    }
}

/// `[va, end)` mapped linearly to `pa..` with `attrs`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RunView {
    pub va: u64,
    pub end: u64,
    pub pa: u64,
    pub attrs: Attrs,
}

/// Sorts and merges adjacent runs that continue each other.
pub fn merge_runs(mut v: Vec<RunView>) -> Vec<RunView> {
    v.sort_by_key(|r| r.va);
    let mut out: Vec<RunView> = Vec::new();
    for r in v {
        if let Some(last) = out.last_mut() {
            assert!(last.end <= r.va, "overlapping runs {last:x?} {r:x?}");
            if last.end == r.va && last.pa + (last.end - last.va) == r.pa && last.attrs == r.attrs {
                last.end = r.end;
                continue;
            }
        }
        out.push(r);
    }
    out
}

// ---------------------------------------------------------------------------
// The reference model
// ---------------------------------------------------------------------------

/// What should be mapped: disjoint runs keyed by their first VA. (Runs, not
/// pages, so that 1 GiB updates stay cheap; `pages_agree_with_runs` in
/// `engine_on_model.rs` checks it against a page-by-page map.)
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefMap {
    runs: BTreeMap<u64, (u64, u64, Attrs)>,
}

impl RefMap {
    /// The PA and attributes of the page at `va`.
    pub fn get(&self, va: u64) -> Option<(u64, Attrs)> {
        let (&s, &(e, pa, a)) = self.runs.range(..=va).next_back()?;
        (va < e).then_some((pa + (va - s), a))
    }

    fn split(&mut self, at: u64) {
        if let Some((&s, &(e, pa, a))) = self.runs.range(..at).next_back() {
            if e > at {
                self.runs.insert(s, (at, pa, a));
                self.runs.insert(at, (e, pa + (at - s), a));
            }
        }
    }

    pub fn remove(&mut self, s: u64, e: u64) {
        self.split(s);
        self.split(e);
        let keys: Vec<u64> = self.runs.range(s..e).map(|(&k, _)| k).collect();
        for k in keys {
            self.runs.remove(&k);
        }
    }

    pub fn insert(&mut self, s: u64, e: u64, pa: u64, attrs: Attrs) {
        self.remove(s, e);
        self.runs.insert(s, (e, pa, attrs));
    }

    pub fn set_perm(&mut self, s: u64, e: u64, perm: Perm) {
        self.split(s);
        self.split(e);
        for (_, (_, _, a)) in self.runs.range_mut(s..e) {
            *a = a.with_perm(perm).unwrap();
        }
    }

    pub fn any_mapped(&self, s: u64, e: u64) -> bool {
        self.get(s).is_some() || self.runs.range(s..e).next().is_some()
    }

    pub fn all_mapped(&self, s: u64, e: u64) -> bool {
        let mut at = s;
        while at < e {
            match self.runs.range(..=at).next_back() {
                Some((_, &(end, _, _))) if end > at => at = end,
                _ => return false,
            }
        }
        true
    }

    pub fn runs(&self) -> Vec<RunView> {
        merge_runs(
            self.runs
                .iter()
                .map(|(&va, &(end, pa, attrs))| RunView { va, end, pa, attrs })
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

/// Pages worth checking for `[va, va + pages)`: all of them up to 64; else
/// the first and last 16, both sides of every 2 MiB boundary (at most 32 of
/// them, spread out) and 32 pages spread over the range; plus the page on
/// either side of the range (inside the arena).
pub fn samples<F: ModelFormat>(va: u64, pages: u64) -> Vec<u64> {
    samples_spread::<F>(va, pages, 32)
}

/// [`samples`] with `spread` instead of 32: at most `spread` 2 MiB
/// boundaries and `spread` pages over the range (fewer checks, faster).
pub fn samples_spread<F: ModelFormat>(va: u64, pages: u64, spread: u64) -> Vec<u64> {
    let end = va + pages * PAGE;
    let mut v = BTreeSet::new();
    if pages <= 64 {
        v.extend((0..pages).map(|i| va + i * PAGE));
    } else {
        v.extend((0..16).map(|i| va + i * PAGE));
        v.extend((1..=16).map(|i| end - i * PAGE));
        let first = (va & !(MIB2 - 1)) + MIB2;
        let boundaries = end.saturating_sub(first).div_ceil(MIB2);
        let step = boundaries.div_ceil(spread).max(1);
        let mut b = first;
        while b < end {
            v.insert(b);
            v.insert(b - PAGE);
            b += step * MIB2;
        }
        // An odd stride, so that the samples fall at varied offsets.
        let stride = (pages / spread) | 1;
        v.extend((0..spread).map(|i| va + ((i * stride + 7) % pages) * PAGE));
    }
    if va > F::ARENA.0 {
        v.insert(va - PAGE);
    }
    if end < F::ARENA.1 {
        v.insert(end);
    }
    v.into_iter().collect()
}

/// The model's MMU (a fresh walk on CPU 0; the TLB of CPU 1 through
/// `touch`; CPU 0's TLB through write and fetch accesses) and the engine's
/// `lookup` all translate each sample as the reference says.
pub fn check_translations<F: ModelFormat>(rig: &mut Rig<F>, r: &RefMap, samples: &[u64]) {
    for &va in samples {
        let want = r.get(va);
        let walk = rig.m.walk(0, Vaddr(va));
        let looked = rig.lookup(va);
        let touched = rig.m.touch(1, Vaddr(va));
        match want {
            Some((pa, attrs)) => {
                let t = walk.unwrap_or_else(|f| panic!("{va:#x}: walk faults ({f}), want {pa:#x}"));
                assert_eq!(t.pa, Paddr(pa), "{va:#x}: walk PA");
                assert_eq!(t.writable, attrs.perm().writable(), "{va:#x}: writable");
                assert_eq!(t.executable, attrs.perm().executable(), "{va:#x}: exec");
                assert_eq!(t.attr_idx, attrs.mem().index(), "{va:#x}: AttrIndx");
                let l = looked.unwrap_or_else(|| panic!("{va:#x}: lookup finds nothing"));
                assert_eq!(
                    (l.pa, l.level, l.attrs),
                    (Paddr(pa), t.level, Some(attrs)),
                    "{va:#x}: lookup disagrees with the walk"
                );
                assert_eq!(touched, Ok(Paddr(pa)), "{va:#x}: CPU 1 TLB");
                let e = rig.m.tlb_lookup(1, Vaddr(va)).expect("filled by touch");
                assert_eq!(
                    (e.writable, e.executable, e.attr_idx),
                    (
                        attrs.perm().writable(),
                        attrs.perm().executable(),
                        attrs.mem().index()
                    ),
                    "{va:#x}: CPU 1 TLB entry {e:x?}"
                );
                let w = rig.m.access(Vaddr(va), AccessKind::Write);
                assert_eq!(w.is_ok(), attrs.perm().writable(), "{va:#x}: write {w:?}");
                if let Err(f) = w {
                    assert_eq!(f.kind, FaultKind::Permission);
                }
                let x = rig.m.access(Vaddr(va), AccessKind::Exec);
                assert_eq!(x.is_ok(), attrs.perm().executable(), "{va:#x}: exec {x:?}");
                if let Ok(p) = w.and(x) {
                    assert_eq!(p, Paddr(pa));
                }
            }
            None => {
                let f = walk.expect_err(&format!("{va:#x} should be unmapped"));
                assert_eq!(f.kind, FaultKind::Translation, "{va:#x}: {f}");
                assert!(looked.is_none(), "{va:#x}: lookup finds {looked:x?}");
                assert!(
                    matches!(touched, Err(ModelError::Fault(f)) if f.kind == FaultKind::Translation),
                    "{va:#x}: CPU 1 translates it: {touched:?}"
                );
                let w = rig.m.access(Vaddr(va), AccessKind::Write);
                assert!(
                    matches!(w, Err(f) if f.kind == FaultKind::Translation),
                    "{va:#x}: CPU 0 writes it: {w:?}"
                );
            }
        }
    }
}

/// No stale TLB or walk-cache entry on any CPU, no BBM violation, no TLB
/// conflict.
pub fn check_tlbs<F: ModelFormat>(rig: &Rig<F>, what: &str) {
    let stale = rig.m.all_stale_tlb_entries();
    assert!(stale.is_empty(), "{what}: stale TLB entries: {stale:#x?}");
    let bbm = rig.m.bbm_violations();
    assert!(bbm.is_empty(), "{what}: BBM violations: {bbm:#x?}");
    let c = rig.m.tlb_conflicts();
    assert!(c.is_empty(), "{what}: TLB conflicts: {c:#x?}");
}

/// Every pool frame handed out is a table reachable from the root, and
/// every reachable table other than the hand-built ones is such a frame.
pub fn check_no_leak<F: ModelFormat>(rig: &Rig<F>) {
    check_no_leak_in(rig, &rig.tables());
}

fn check_no_leak_in<F: ModelFormat>(rig: &Rig<F>, tables: &[TableInfo]) {
    let hand: BTreeSet<u64> = (1..F::HAND_TABLES).map(|i| F::TABLES / PAGE + i).collect();
    let reachable: BTreeSet<u64> = tables
        .iter()
        .map(|t| t.mfn.0)
        .filter(|m| !hand.contains(m))
        .collect();
    let allocated: BTreeSet<u64> = rig.allocated().iter().map(|m| m.0).collect();
    assert_eq!(
        reachable, allocated,
        "reachable tables vs frames taken from the pool"
    );
    for &h in &hand {
        assert!(
            tables.iter().any(|t| t.mfn.0 == h),
            "hand table {h:#x} unlinked"
        );
    }
}

/// The tables' bytes (read independently) say exactly what the reference says.
pub fn check_physical_matches_reference<F: ModelFormat>(rig: &Rig<F>, r: &RefMap) {
    check_runs_match(&rig.physical_runs(), r);
}

/// [`check_no_leak`] and [`check_physical_matches_reference`] from one scan.
pub fn check_tables<F: ModelFormat>(rig: &Rig<F>, r: &RefMap) {
    let (tables, leaves) = rig.scan();
    check_no_leak_in(rig, &tables);
    check_runs_match(&runs_of(&leaves), r);
}

fn check_runs_match(phys: &[RunView], r: &RefMap) {
    let want = r.runs();
    if phys != want.as_slice() {
        panic!("tables and reference differ\n tables:    {phys:x?}\n reference: {want:x?}");
    }
}

/// The engine's table counts agree with the tables: for every table below
/// `roots` (at `root_level`, `root_pages` root frames of 512 entries) whose
/// slot is known, its live entries and (if it is tracked against a block
/// mapping) the entries equal to that mapping's, recounted from the bytes;
/// every other frame's slot — the roots, the hand-built tables, the free
/// pool frames — is unknown (a freed table's slot is reset). Returns the
/// number of tables whose counts were checked.
pub fn check_counts(
    m: &Machine,
    alloc: &mut RigAlloc,
    oa: u64,
    roots: &[u64],
    root_level: u8,
    ram: (u64, u64),
    what: &str,
) -> u64 {
    if !alloc.counted() {
        return 0;
    }
    let read = |table: u64| -> Vec<u64> {
        let mut b = vec![0u8; PAGE as usize];
        m.phys_read(Paddr(table), &mut b).unwrap();
        b.chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let mut tables = BTreeSet::new();
    let mut stack: Vec<(u64, u8)> = roots.iter().map(|&r| (r, root_level)).collect();
    let mut checked = 0;
    while let Some((table, level)) = stack.pop() {
        let entries = read(table);
        let is_root = roots.contains(&table);
        if !is_root {
            tables.insert(table / PAGE);
        }
        let slot = alloc.slot(Mfn(table / PAGE));
        if is_root {
            assert!(
                slot.is_none_or(|s| !s.is_known()),
                "{what}: root {table:#x} has counts"
            );
        } else if let Some(live) = slot.and_then(|s| s.live_entries()) {
            // Live: any valid entry at the block levels, type 0b11 at 0 and 3.
            let want = entries
                .iter()
                .filter(|&&d| {
                    if level == 1 || level == 2 {
                        d & 1 != 0
                    } else {
                        d & 3 == 3
                    }
                })
                .count();
            assert_eq!(
                usize::from(live),
                want,
                "{what}: L{level} table {table:#x}: counted live entries vs the table"
            );
            if let Some((pattern, matching)) = slot.and_then(|s| s.uniform_entries()) {
                let want = entries
                    .iter()
                    .enumerate()
                    .filter(|&(i, &d)| d & !desc::CONTIGUOUS == pattern + i as u64 * size(level))
                    .count();
                assert_eq!(
                    usize::from(matching),
                    want,
                    "{what}: L{level} table {table:#x}: entries matching {pattern:#x}"
                );
            }
            checked += 1;
        }
        if level < 3 {
            for &d in &entries {
                if d & 3 == 3 {
                    stack.push((d & oa, level + 1));
                }
            }
        }
    }
    // Every RAM frame that is not a table in use has no counts.
    for f in ram.0 / PAGE..ram.1 / PAGE {
        if !tables.contains(&f) {
            let s = alloc.slot(Mfn(f));
            assert!(
                s.is_none_or(|s| !s.is_known()),
                "{what}: frame {f:#x} is no table in use but has counts {s:?}"
            );
        }
    }
    checked
}

/// Every table below the root pages `roots` (at `root_level`; root page `k`
/// maps from `k` × 512 entries of that level on), with its level and first
/// VA, read from the bytes.
pub fn table_tree(m: &Machine, roots: &[u64], root_level: u8, oa: u64) -> Vec<TableInfo> {
    let mut out = Vec::new();
    let mut stack: Vec<(u64, u8, u64)> = roots
        .iter()
        .enumerate()
        .map(|(k, &r)| (r, root_level, k as u64 * 512 * size(root_level)))
        .collect();
    while let Some((table, level, base)) = stack.pop() {
        if level == 3 {
            continue;
        }
        let mut b = vec![0u8; PAGE as usize];
        m.phys_read(Paddr(table), &mut b).unwrap();
        for (i, c) in b.chunks_exact(8).enumerate() {
            let d = u64::from_le_bytes(c.try_into().unwrap());
            if d & 3 == 3 {
                let va = base + i as u64 * size(level);
                out.push(TableInfo {
                    mfn: Mfn((d & oa) / PAGE),
                    level: level + 1,
                    va,
                });
                stack.push((d & oa, level + 1, va));
            }
        }
    }
    out
}

/// After a Remove of `[va, end)`: no table (but a root) that maps any of
/// it is left without a live entry — emptied tables are freed. `tables`
/// lists the tables below the root with the level and first VA they map.
pub fn check_none_emptied(m: &Machine, tables: &[TableInfo], va: u64, end: u64, what: &str) {
    for t in tables {
        let span = size(t.level) * 512;
        if t.va >= end || t.va + span <= va {
            continue;
        }
        let mut b = vec![0u8; PAGE as usize];
        m.phys_read(t.mfn.paddr(), &mut b).unwrap();
        let any = b
            .chunks_exact(8)
            .any(|c| u64::from_le_bytes(c.try_into().unwrap()) & 1 != 0);
        assert!(any, "{what}: {t:x?} emptied by the remove and left linked");
    }
}

pub fn tlbi(c: &Counters) -> u64 {
    c.tlbi_va + c.tlbi_all + c.tlbi_va_local + c.tlbi_all_local
}

// ---------------------------------------------------------------------------
// Removing everything
// ---------------------------------------------------------------------------

/// Removes every mapping the rules allow (all but contiguous entries) and
/// every table that does not hold one, checking each step; returns the
/// contiguous leaves left. Afterwards: each table the engine made holds a
/// valid entry, and the pool is back to its initial size if nothing is left.
pub fn remove_everything<F: ModelFormat>(rig: &mut Rig<F>, r: &mut RefMap) -> Vec<PhysLeaf> {
    // Blocks that are not contiguous: one remove each, at their level.
    for l in rig.leaves() {
        if l.level < 3 && !l.contiguous() {
            rig.update(l.va, size(l.level) / PAGE, Op::Remove, MapFlags::BLOCKS)
                .unwrap_or_else(|e| panic!("removing block {l:x?}: {e}"));
            r.remove(l.va, l.va + size(l.level));
        }
    }
    // Level-3 tables: the whole 2 MiB if nothing in it is contiguous (this
    // also frees tables left empty by Populate), else the other pages one
    // run at a time.
    let mut by_slot: BTreeMap<u64, Vec<PhysLeaf>> = BTreeMap::new();
    for l in rig.leaves().into_iter().filter(|l| l.level == 3) {
        by_slot.entry(l.va & !(MIB2 - 1)).or_default().push(l);
    }
    for t in rig.tables() {
        if t.level != 3 || t.va < F::ARENA.0 || t.va >= F::ARENA.1 {
            continue;
        }
        let leaves = by_slot.remove(&t.va).unwrap_or_default();
        if !leaves.iter().any(|l| l.contiguous()) {
            rig.update(t.va, 512, Op::Remove, MapFlags::PAGES)
                .unwrap_or_else(|e| panic!("removing the 2 MiB at {:#x}: {e}", t.va));
            r.remove(t.va, t.va + MIB2);
        } else {
            for l in leaves.iter().filter(|l| !l.contiguous()) {
                rig.update(l.va, 1, Op::Remove, MapFlags::PAGES)
                    .unwrap_or_else(|e| panic!("removing page {:#x}: {e}", l.va));
                r.remove(l.va, l.va + PAGE);
            }
        }
        check_tlbs(rig, "remove everything");
    }
    check_no_leak(rig);
    check_physical_matches_reference(rig, r);
    let left = rig.leaves();
    assert!(left.iter().all(|l| l.contiguous()), "{left:x?}");
    // Each table in the arena that the engine made must hold something.
    for t in rig.tables() {
        if t.mfn.0 < rig.pool.0 {
            continue;
        }
        let entries = rig.read_table(t.mfn.0 * PAGE);
        assert!(
            entries.iter().any(|d| d & 1 != 0),
            "empty table {t:x?} left behind"
        );
    }
    if left.is_empty() {
        assert_eq!(
            rig.free(),
            rig.initial_free,
            "every table frame is back in the pool"
        );
    }
    left
}

/// Attributes by number (RO, RX, RW, DEVICE, WC).
pub fn attrs_of(n: u8) -> Attrs {
    [Attrs::RO, Attrs::RX, Attrs::RW, Attrs::DEVICE, Attrs::WC][usize::from(n % 5)]
}

// ---------------------------------------------------------------------------
// Steps and the errors the rules allow
// ---------------------------------------------------------------------------

/// One concrete update: `op` over `[va, va + pages * 4 KiB)` with `flags`.
#[derive(Copy, Clone, Debug)]
pub struct Step {
    /// First VA.
    pub va: u64,
    /// Number of 4 KiB pages.
    pub pages: u64,
    /// The operation.
    pub op: Op,
    /// Block / contiguous / merge flags.
    pub flags: MapFlags,
}

/// Panics unless `err` is an error the engine's rules give for `st`, given
/// the tables as they are (unchanged by the failed update), the reference
/// `r` and the frames that were free before it.
pub fn justify<F: ModelFormat>(rig: &Rig<F>, r: &RefMap, st: &Step, free_before: u64, err: &Error) {
    let end = st.va + st.pages * PAGE;
    let inside = |va: u64| va >= st.va && va < end;
    let d_at = |va: u64, level: u8| {
        rig.entry_at(va, level)
            .unwrap_or_else(|| panic!("{err}: no descriptor at L{level} for {va:#x}"))
    };
    let is_table = |d: u64, level: u8| level < 3 && d & 3 == 3;
    let is_leaf = |d: u64, level: u8| if level == 3 { d & 3 == 3 } else { d & 3 == 1 };
    match (*err, st.op) {
        (Error::AlreadyMapped { va, level }, Op::Insert { .. }) => {
            assert!(inside(va.0), "{err} outside {st:x?}");
            let d = d_at(va.0, level);
            if is_table(d, level) {
                assert!(
                    st.flags.blocks && level >= 1,
                    "{err}: table met without blocks"
                );
            } else {
                assert!(is_leaf(d, level), "{err}: {d:#x}");
                let slot = va.0 & !(size(level) - 1);
                assert!(
                    r.any_mapped(slot.max(st.va), (slot + size(level)).min(end)),
                    "{err}: reference has nothing there"
                );
            }
        }
        (Error::NotMapped { va }, Op::Modify { .. }) => {
            assert!(inside(va.0), "{err} outside {st:x?}");
            assert!(r.get(va.0).is_none(), "{err}: the reference maps it");
        }
        (Error::BlockInTheWay { va, level }, Op::Populate) => {
            assert!(inside(va.0) && level < 3, "{err} for {st:x?}");
            let d = d_at(va.0, level);
            assert!(is_leaf(d, level), "{err}: {d:#x}");
        }
        (Error::AttrIndexChange { va, from, to }, Op::Modify { attrs }) => {
            assert!(
                inside(va.0) && from != to && to == attrs.mem().index(),
                "{err}"
            );
            let (_, cur) = r.get(va.0).expect("mapped");
            assert_eq!(cur.mem().index(), from, "{err}");
        }
        // Insert and Populate create tables; Modify and Remove split blocks.
        (Error::OutOfMemory { needed, available }, _) => {
            assert_eq!(available as u64, free_before, "{err}");
            assert!(needed > available, "{err}");
        }
        (Error::PaOutOfRange { pa, .. }, Op::Insert { pa: want, .. }) => {
            assert_eq!(pa, want, "{err}");
            assert!(
                !F::pa_end_fits(pa.0.saturating_add(st.pages * PAGE)),
                "{err}: the range fits"
            );
        }
        _ => panic!("unexpected error {err:?} for {st:x?}"),
    }
}
