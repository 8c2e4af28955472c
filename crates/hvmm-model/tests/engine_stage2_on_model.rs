//! Guests' stage-2 tables on the machine model, both architectures: the
//! engine updates a live stage-2 table (its pages reached through the
//! hypervisor's own direct-map window, as on hardware) while two CPUs
//! translate guest accesses through it with their TLBs.
//!
//! * Random sequences (inserts with blocks and contiguous runs, permission
//!   changes that split blocks and break runs, removes, collapses that
//!   merge) against a reference, checked after every step by fresh stage-2
//!   walks and TLB-using guest accesses from two CPUs, for stale TLB entries,
//!   break-before-make violations, TLB conflicts and leaked pool pages. At
//!   least 10 000 operations per architecture (`PROPTEST_CASES` overrides
//!   the case count).
//! * The concurrency property: while CPU 0 splits or merges, CPU 1
//!   translating addresses whose mapping does not change sees the old or the
//!   new translation, or — during the break window only — a stage-2
//!   translation fault; never a wrong PA, never a conflict.

use hvmm::{
    AccessKind, Arch, Arm32, Arm32Stage2, Arm64, Arm64Stage2, Env, Error, Format, Ipa, MapFlags,
    MemFault, Op, Paddr, PageTable, S2Access, S2Attrs, S2MemType, Stage2Format, UpdateReport,
    Vaddr, Vmid,
};
use hvmm_model::{AbortKind, Machine};
use hvmm_testkit::engine::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

const VMID: Vmid = Vmid(5);

/// A stage-1 rig (the hypervisor's window over the pool) with a guest's
/// stage-2 table on top, live on both CPUs.
struct S2Rig<F: ModelFormat, S: Stage2Format> {
    rig: Rig<F>,
    p2m: PageTable<S>,
    /// Pool pages before the root was allocated.
    pool_full: u64,
}

impl<F: ModelFormat, S: Stage2Format> S2Rig<F, S> {
    fn new(pool_frames: u64, counted: bool) -> Self {
        let mut rig = Rig::<F>::with_counts(pool_frames.max(S::ROOT_TABLES as u64 * 2), counted);
        let pool_full = rig.free();
        let p2m = PageTable::<S>::create_stage2(
            &mut Env::new(&mut rig.m, &mut rig.access, &mut rig.alloc),
            VMID,
        )
        .expect("stage-2 root");
        for cpu in 0..CPUS {
            rig.m.set_vtcr(cpu, S::vtcr()).expect("the engine's VTCR");
            rig.m.set_vttbr(cpu, p2m.root().paddr(), VMID).unwrap();
            rig.m.set_stage2(cpu, true).unwrap();
        }
        S2Rig {
            rig,
            p2m,
            pool_full,
        }
    }

    fn update(
        &mut self,
        ipa: u64,
        pages: u64,
        op: Op<S2Attrs>,
        flags: MapFlags,
    ) -> Result<UpdateReport, Error> {
        let r = &mut self.rig;
        let env = &mut Env::new(&mut r.m, &mut r.access, &mut r.alloc);
        let res = self.p2m.update(env, Ipa(ipa), pages, op, flags);
        assert_eq!(r.access.held, 0, "a table mapping was not given back");
        res
    }

    /// The root pages of the guest's table.
    fn roots(&self) -> Vec<u64> {
        (0..S::ROOT_TABLES as u64)
            .map(|k| self.p2m.root().paddr().0 + k * PAGE)
            .collect()
    }

    /// The engine's counts against the stage-2 tables' bytes
    /// ([`check_counts`]); the number of tables checked.
    fn check_counts(&mut self, what: &str) -> u64 {
        let roots = self.roots();
        let r = &mut self.rig;
        check_counts(
            &r.m,
            &mut r.alloc,
            F::OA,
            &roots,
            S::ROOT_LEVEL,
            (F::RAM_BASE, F::RAM_BASE + RAM_SIZE),
            what,
        )
    }

    /// The model's checks: nothing stale, no BBM violation, no conflict.
    fn check_model(&self, what: &dyn std::fmt::Debug) {
        let m = &self.rig.m;
        let stale = m.all_stale_tlb_entries();
        assert!(stale.is_empty(), "{what:x?}: stale TLB entries {stale:#x?}");
        assert!(
            m.bbm_violations().is_empty(),
            "{what:x?}: {:#x?}",
            m.bbm_violations()
        );
        assert!(
            m.tlb_conflicts().is_empty(),
            "{what:x?}: {:#x?}",
            m.tlb_conflicts()
        );
    }
}

/// What the reference says an IPA maps to.
#[derive(Default, Clone)]
struct Ref {
    pages: BTreeMap<u64, (u64, S2Attrs)>,
}

impl Ref {
    fn get(&self, ipa: u64) -> Option<(u64, S2Attrs)> {
        self.pages.get(&(ipa & !(PAGE - 1))).copied()
    }
}

/// An IPA arena per format: across the boundary between the two
/// concatenated root pages (512 GiB), so both are used.
trait Arena: Stage2Format {
    const BASE: u64;
    const SIZE: u64 = 4 * GIB;
}
impl Arena for Arm64Stage2<40> {
    const BASE: u64 = (512 * GIB) - 2 * GIB;
}
impl Arena for Arm32Stage2 {
    const BASE: u64 = (512 * GIB) - 2 * GIB;
}

fn attrs_of(n: u8) -> S2Attrs {
    let access = [S2Access::Rw, S2Access::Ro, S2Access::Wo, S2Access::None][usize::from(n % 4)];
    match n / 4 % 3 {
        0 => S2Attrs::new(S2MemType::NormalWb, access, n & 16 == 0).unwrap(),
        1 => S2Attrs::new(S2MemType::DeviceNgnre, access, false).unwrap(),
        _ => S2Attrs::new(S2MemType::NormalNc, access, false).unwrap(),
    }
}

#[derive(Clone, Debug)]
struct RawOp {
    kind: u8,
    size: u64,
    at: u64,
    pa: u64,
    attr: u8,
    flags: u8,
}

fn raw_op() -> impl Strategy<Value = RawOp> {
    (
        any::<u8>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u8>(),
        any::<u8>(),
    )
        .prop_map(|(kind, size, at, pa, attr, flags)| RawOp {
            kind,
            size,
            at,
            pa,
            attr,
            flags,
        })
}

/// Sample IPAs to check after a step: both ends and the middle of the range
/// touched, its neighbours, and a few fixed points of the arena.
fn samples<S: Arena>(ipa: u64, pages: u64) -> Vec<u64> {
    let end = ipa + pages * PAGE;
    let mut v = vec![ipa, end - PAGE, ipa + (pages / 2) * PAGE];
    if ipa >= S::BASE + PAGE {
        v.push(ipa - PAGE);
    }
    if end < S::BASE + S::SIZE {
        v.push(end);
    }
    for k in 0..8 {
        v.push(S::BASE + k * (S::SIZE / 8) + 5 * PAGE);
    }
    v
}

/// Checks `ipa` on both CPUs: a fresh stage-2 walk and a TLB-using guest
/// read, against the reference.
fn check_ipa<F: ModelFormat, S: Stage2Format>(r: &mut S2Rig<F, S>, reference: &Ref, ipa: u64) {
    for cpu in 0..CPUS {
        let fresh = r.rig.m.s2_walk(cpu, Ipa(ipa));
        let access = r.rig.m.guest_access(cpu, Vaddr(ipa), AccessKind::Read);
        match reference.get(ipa) {
            Some((pa, attrs)) => {
                let want = Paddr(pa + ipa % PAGE);
                let t = fresh.unwrap_or_else(|f| panic!("{ipa:#x}: walk faults {f:?}"));
                assert_eq!(t.pa, want, "{ipa:#x}: walk");
                assert_eq!(
                    (t.readable(), t.writable(), t.executable()),
                    (
                        attrs.access().readable(),
                        attrs.access().writable(),
                        attrs.executable()
                    ),
                    "{ipa:#x}: permissions of {attrs}"
                );
                match access {
                    Ok(got) => {
                        assert!(
                            attrs.access().readable(),
                            "{ipa:#x}: read allowed by {attrs}"
                        );
                        assert_eq!(got, want, "{ipa:#x}: CPU {cpu} through its TLB");
                    }
                    Err(f) => {
                        assert!(!attrs.access().readable(), "{ipa:#x}: {f:?} for {attrs}");
                        assert_eq!(f.kind, AbortKind::Permission, "{ipa:#x}");
                    }
                }
            }
            None => {
                assert!(fresh.is_err(), "{ipa:#x}: unmapped, walk gives {fresh:?}");
                let f = access.expect_err("an unmapped IPA translates");
                assert_eq!(f.kind, AbortKind::Translation, "{ipa:#x} on CPU {cpu}");
                assert!(f.to_el2(), "a stage-2 fault is the hypervisor's");
            }
        }
    }
}

#[derive(Default)]
struct Counts {
    ops: AtomicU64,
    splits: AtomicU64,
    merges: AtomicU64,
    breaks: AtomicU64,
    /// Tables whose counts were checked against their bytes.
    counted_tables: AtomicU64,
}

/// One sequence on a fresh rig, whose pool keeps table counts if `counted`.
fn run_sequence<F: ModelFormat, S: Arena>(
    ops: &[RawOp],
    pool: u64,
    counted: bool,
    counts: &Counts,
) {
    let mut r = S2Rig::<F, S>::new(pool, counted);
    let mut reference = Ref::default();
    let mut history: Vec<(u64, u64)> = Vec::new();
    for raw in ops {
        // Size, address, operation.
        let mut pages = match raw.size % 10 {
            0..=3 => 1 + raw.size / 16 % 16,
            4..=6 => 1 + raw.size / 16 % 600,
            7 | 8 => 512 * (1 + raw.size / 16 % 6),
            _ => 16 * (1 + raw.size / 16 % 40),
        };
        let len = pages * PAGE;
        let mut ipa = if raw.at % 3 == 0 && !history.is_empty() {
            let (h, hp) = history[(raw.at / 3) as usize % history.len()];
            h + (raw.at / 64 % hp.max(1)) * PAGE * (raw.at / 7 % 2)
        } else {
            let align = [PAGE, 16 * PAGE, MIB2][(raw.at / 3 % 3) as usize];
            S::BASE + (raw.at / 16 % (S::SIZE - len)) / align * align
        };
        ipa = ipa.clamp(S::BASE, S::BASE + S::SIZE - len);
        let mut flags = MapFlags {
            // Large inserts mostly make blocks (that later changes split).
            blocks: raw.flags & 1 != 0 || (pages >= 512 && raw.flags & 16 != 0),
            contiguous: raw.flags & 2 != 0,
            merge: raw.flags & 12 == 12,
            ..MapFlags::PAGES
        };
        let op = match raw.kind % 10 {
            0..=3 => {
                // Same offset in a 2 MiB frame as the IPA, mostly: blocks fit.
                let pa = if raw.pa % 4 != 0 {
                    (raw.pa / 4 % 4096) * MIB2 + ipa % MIB2
                } else {
                    (raw.pa / 4 % (1 << 26)) * PAGE
                };
                Op::Insert {
                    pa: Paddr(pa),
                    attrs: attrs_of(raw.attr),
                }
            }
            4..=6 => {
                // Keep the memory type of what is there.
                let base = reference.get(ipa).map_or(attrs_of(raw.attr), |(_, a)| a);
                let access = attrs_of(raw.attr).access();
                let exec = raw.attr & 32 != 0 && !base.mem().is_device();
                Op::Modify {
                    attrs: base.with_access(access, exec).unwrap(),
                }
            }
            7 if !history.is_empty() => {
                // A collapse of an earlier range: what is there, merged.
                (ipa, pages) = history[raw.at as usize % history.len()];
                flags = MapFlags::BLOCKS_MERGE;
                match reference.get(ipa) {
                    Some((_, a)) => Op::Modify { attrs: a },
                    None => Op::Remove,
                }
            }
            _ => Op::Remove,
        };
        let end = ipa + pages * PAGE;
        history.push((ipa, pages));
        let free_before = r.rig.free();
        let snap = r.rig.snapshot();
        let res = r.update(ipa, pages, op, flags);
        counts.ops.fetch_add(1, Ordering::Relaxed);
        match res {
            Ok(rep) => {
                counts.splits.fetch_add(rep.splits, Ordering::Relaxed);
                counts.merges.fetch_add(rep.merges, Ordering::Relaxed);
                counts
                    .breaks
                    .fetch_add(rep.contiguous_breaks, Ordering::Relaxed);
                assert_eq!(
                    free_before + rep.tables_freed - rep.tables_created,
                    r.rig.free(),
                    "{op:?} at {ipa:#x}: report vs pool"
                );
                let mut at = ipa;
                while at < end {
                    match op {
                        Op::Insert { pa, attrs } => {
                            assert!(reference.get(at).is_none(), "{op:?}: replaced {at:#x}");
                            reference.pages.insert(at, (pa.0 + (at - ipa), attrs));
                        }
                        Op::Modify { attrs } => {
                            let e = reference.pages.get_mut(&at).expect("modified a hole");
                            e.1 = attrs;
                        }
                        Op::Remove => {
                            reference.pages.remove(&at);
                        }
                        Op::Populate => {}
                    }
                    at += PAGE;
                }
            }
            Err(e) => {
                let changed = r.rig.m.changed_frames(&snap);
                assert!(
                    changed.is_empty(),
                    "{op:?} failed ({e}) but changed {changed:x?}"
                );
                assert_eq!(r.rig.free(), free_before, "{op:?} failed ({e}) and leaked");
                let justified = match e {
                    Error::AlreadyMapped { .. } => {
                        matches!(op, Op::Insert { .. })
                            && (ipa..end)
                                .step_by(PAGE as usize)
                                .any(|a| reference.get(a).is_some())
                    }
                    Error::NotMapped { va } => reference.get(va.0).is_none(),
                    Error::AttrIndexChange { .. } => matches!(op, Op::Modify { .. }),
                    Error::OutOfMemory { .. } => true,
                    _ => false,
                };
                assert!(
                    justified,
                    "unexpected {e:?} for {op:?} at {ipa:#x} + {pages}"
                );
            }
        }
        r.check_model(&(op, ipa, pages));
        let what = format!("{op:?} at {ipa:#x} + {pages}");
        if matches!((&res, op), (Ok(_), Op::Remove)) {
            let tables = table_tree(&r.rig.m, &r.roots(), S::ROOT_LEVEL, F::OA);
            check_none_emptied(&r.rig.m, &tables, ipa, end, &what);
        }
        let checked = r.check_counts(&what);
        counts.counted_tables.fetch_add(checked, Ordering::Relaxed);
        for s in samples::<S>(ipa, pages) {
            check_ipa(&mut r, &reference, s);
        }
    }
    // Everything out, then the table itself: every pool page comes back.
    r.update(S::BASE, S::SIZE / PAGE, Op::Remove, MapFlags::PAGES)
        .expect("remove everything");
    r.check_model(&"remove everything");
    let S2Rig {
        mut rig,
        p2m,
        pool_full,
    } = r;
    let env = &mut Env::new(&mut rig.m, &mut rig.access, &mut rig.alloc);
    p2m.destroy(env).expect("destroy");
    assert_eq!(rig.free(), pool_full, "pool pages leaked");
    // Every frame given back has its counts reset.
    check_counts(
        &rig.m,
        &mut rig.alloc,
        F::OA,
        &[],
        S::ROOT_LEVEL,
        (F::RAM_BASE, F::RAM_BASE + RAM_SIZE),
        "after destroy",
    );
}

fn config(cases: u32) -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases),
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x7332_6d6d),
        max_shrink_iters: 2048,
        ..Config::default()
    }
}

fn random_sequences<F: ModelFormat, S: Arena>() {
    let counts = Counts::default();
    proptest!(config(420), |(ops in prop::collection::vec(raw_op(), 10..=40), small in any::<bool>())| {
        let pool = if small { 12 } else { 400 };
        // Half the sequences keep table counts (the engine's counted
        // paths), half not (it reads the tables).
        let counted = ops.len() % 2 == 1;
        run_sequence::<F, S>(&ops, pool, counted, &counts);
    });
    let n = counts.ops.into_inner();
    let (s, m, b, ct) = (
        counts.splits.into_inner(),
        counts.merges.into_inner(),
        counts.breaks.into_inner(),
        counts.counted_tables.into_inner(),
    );
    eprintln!(
        "{}: {n} operations, {s} splits, {m} merges, {b} contiguous breaks; {ct} table counts \
         checked against the tables",
        S::NAME
    );
    assert!(ct >= 5000, "only {ct} table counts checked");
    assert!(n >= 10_000, "only {n} operations");
    assert!(
        s >= 40 && m >= 5 && b >= 20,
        "too few live changes: {s} / {m} / {b}"
    );
}

#[test]
fn random_stage2_updates_match_the_reference_on_arm64() {
    random_sequences::<Arm64, Arm64Stage2<40>>();
}

#[test]
fn random_stage2_updates_match_the_reference_on_arm32() {
    random_sequences::<Arm32, Arm32Stage2>();
}

// ---------------------------------------------------------------------------
// The concurrency property
// ---------------------------------------------------------------------------

/// The machine as CPU 0 runs the engine on it, with CPU 1 translating the
/// probe IPAs after every descriptor write and every TLB operation, and
/// checking each translation.
struct Interleaved<'a> {
    m: &'a mut Machine,
    /// (IPA, the PA it must translate to whenever it translates).
    probes: &'a [(u64, u64)],
    /// Stage-2 translation faults CPU 1 saw (the break windows).
    faults: u64,
    /// Probe translations made.
    looks: u64,
}

impl Interleaved<'_> {
    fn probe(&mut self) {
        for &(ipa, pa) in self.probes {
            self.looks += 1;
            match self.m.guest_access(1, Vaddr(ipa), AccessKind::Read) {
                Ok(got) => assert_eq!(got, Paddr(pa), "CPU 1 saw a wrong PA for {ipa:#x}"),
                Err(f) => {
                    assert_eq!(
                        f.kind,
                        AbortKind::Translation,
                        "CPU 1: {f:?} for {ipa:#x} (only a break window's translation fault may happen)"
                    );
                    self.faults += 1;
                }
            }
        }
        assert!(
            self.m.tlb_conflicts().is_empty(),
            "{:#x?}",
            self.m.tlb_conflicts()
        );
    }
}

impl Arch for Interleaved<'_> {
    fn read_pte(&mut self, va: Vaddr) -> Result<u64, MemFault> {
        self.m.read_pte(va)
    }
    fn write_pte(&mut self, va: Vaddr, val: u64) -> Result<(), MemFault> {
        let r = self.m.write_pte(va, val);
        self.probe();
        r
    }
    fn zero_page(&mut self, va: Vaddr) -> Result<(), MemFault> {
        self.m.zero_page(va)
    }
    fn tlb_flush_va(&mut self, va: Vaddr) {
        self.m.tlb_flush_va(va);
        self.probe();
    }
    fn tlb_flush_all(&mut self) {
        self.m.tlb_flush_all();
        self.probe();
    }
    fn tlb_flush_ipa(&mut self, vmid: Vmid, ipa: u64) {
        self.m.tlb_flush_ipa(vmid, ipa);
        self.probe();
    }
    fn tlb_flush_guest_s1(&mut self, vmid: Vmid) {
        self.m.tlb_flush_guest_s1(vmid);
        self.probe();
    }
    fn tlb_flush_vmid(&mut self, vmid: Vmid) {
        self.m.tlb_flush_vmid(vmid);
        self.probe();
    }
    fn tlb_sync(&mut self) {
        self.m.tlb_sync();
        self.probe();
    }
    fn isb(&mut self) {
        self.m.isb();
    }
    fn root(&self) -> Paddr {
        self.m.root()
    }
}

fn split_and_merge_under_a_running_guest<F: ModelFormat, S: Arena>() {
    let mut r = S2Rig::<F, S>::new(64, true);
    let base = S::BASE + 2 * GIB; // 1 GiB aligned, in the second root page
    r.update(
        base,
        (GIB / PAGE) * 2,
        Op::Insert {
            pa: Paddr(0x40_0000_0000 & ((1 << <S as Format>::PA_BITS) - 1)),
            attrs: S2Attrs::RAM,
        },
        MapFlags::BLOCKS,
    )
    .unwrap();
    let pa0 = 0x40_0000_0000 & ((1u64 << <S as Format>::PA_BITS) - 1);
    // Probes in the block being split (but not the page that changes), in
    // its neighbours, and far away: their mappings never change.
    let target = base + GIB + 3 * MIB2 + 7 * PAGE;
    let probes: Vec<(u64, u64)> = [
        target - PAGE,
        target + PAGE,
        target & !(MIB2 - 1),
        target + MIB2,
        base + 5 * PAGE,
        base + 2 * GIB - PAGE,
    ]
    .iter()
    .map(|&ipa| (ipa, pa0 + (ipa - base)))
    .collect();
    // CPU 1 has them all in its TLB (as 1 GiB entries) before anything
    // changes.
    for &(ipa, _) in &probes {
        r.rig
            .m
            .guest_access(1, Vaddr(ipa), AccessKind::Read)
            .unwrap();
    }
    let S2Rig { rig, p2m, .. } = &mut r;
    let mut steps = Vec::new();
    for (what, op, flags) in [
        (
            "split a 1 GiB block",
            Op::Modify {
                attrs: S2Attrs::RAM_RO,
            },
            MapFlags::PAGES,
        ),
        (
            "merge it back",
            Op::Modify {
                attrs: S2Attrs::RAM,
            },
            MapFlags::BLOCKS_MERGE,
        ),
    ] {
        let mut il = Interleaved {
            m: &mut rig.m,
            probes: &probes,
            faults: 0,
            looks: 0,
        };
        let env = &mut Env::new(&mut il, &mut rig.access, &mut rig.alloc);
        let rep = p2m.update(env, Ipa(target), 1, op, flags).unwrap();
        steps.push((what, rep, il.faults, il.looks));
    }
    let (_, split, split_faults, looks) = steps[0];
    assert_eq!(split.splits, 2, "1 GiB -> 2 MiB -> 4 KiB");
    assert!(looks > 50, "CPU 1 looked {looks} times");
    // The window exists (CPU 1 faulted in it) and closes: after the update
    // every probe translates again.
    assert!(split_faults > 0, "no break window was observed");
    let (_, merge, _, _) = steps[1];
    assert_eq!(merge.merges, 2, "4 KiB -> 2 MiB -> 1 GiB");
    for &(ipa, pa) in &probes {
        assert_eq!(
            rig.m.guest_access(1, Vaddr(ipa), AccessKind::Read),
            Ok(Paddr(pa))
        );
    }
    r.check_model(&"after the split and the merge");
}

#[test]
fn a_guest_cpu_sees_old_or_new_or_a_break_fault_while_another_splits_and_merges_on_arm64() {
    split_and_merge_under_a_running_guest::<Arm64, Arm64Stage2<40>>();
}

#[test]
fn a_guest_cpu_sees_old_or_new_or_a_break_fault_while_another_splits_and_merges_on_arm32() {
    split_and_merge_under_a_running_guest::<Arm32, Arm32Stage2>();
}
